/* worker: the master process, its workers, reload and stop (SPEC 10, 11).
 *
 * The master loads the configuration, binds the listeners and forks the workers; it holds no
 * request and runs no libuv loop, only a poll() on a self-pipe fed by its signal handlers.
 * With more than one worker, each worker slot gets its own SO_REUSEPORT socket per TCP
 * listener, so the kernel spreads connections evenly; the master keeps every socket open for
 * its whole life, so a worker that stops or dies never takes a socket, or the connections
 * waiting in its backlog, with it.
 *
 * Reload (HUP, `-s reload`, or `watch`) loads the scripts in a fresh Lua state; if that fails
 * the old configuration stays and the error is logged with file:line. Otherwise a new
 * generation of workers starts on the same sockets and the old one is told to QUIT: it stops
 * accepting, finishes its requests under the configuration they started with, and exits.
 * A worker that dies unexpectedly is replaced in its slot. */
#include "worker.h"

#include <grp.h>
#include <pwd.h>
#ifdef MG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "server.h"
#include "status.h"

#define MAX_WORKERS 256

typedef struct {
  pid_t pid;
  int slot;
  int generation;
  uint64_t started_ms;
} child_t;

static int sigpipe_fds[2] = {-1, -1};

static void on_master_signal(int sig) {
  int saved = errno;
  unsigned char c = (unsigned char)sig;
  ssize_t w = write(sigpipe_fds[1], &c, 1);
  (void)w;
  errno = saved;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct {
  mg_config_t *cfg;
  int nworkers;
  int *fds; /* [slot * nlistens + listener] */
  int nlistens;
  child_t children[MAX_WORKERS * 2];
  int nchildren;
  int generation;
  int stopping;
  time_t *mtimes;
  const char *pid_file;
} master_t;

static int resolve_workers(int n) {
  if (n > 0) return n;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? (int)(cores > MAX_WORKERS ? MAX_WORKERS : cores) : 1;
}

static int bind_all(master_t *m, char *err, size_t err_len) {
  mg_config_t *cfg = m->cfg;
  m->nlistens = cfg->nlistens;
  m->fds = mg_calloc((size_t)(m->nworkers * m->nlistens), sizeof(int));
  for (int i = 0; i < m->nlistens; i++) {
    const mg_listen_t *l = &cfg->listens[i];
    int shared = -1;
    for (int s = 0; s < m->nworkers; s++) {
      int fd;
      if (l->unix_socket || m->nworkers == 1) {
        if (shared < 0) shared = mg_listen_bind(l, m->nworkers > 1, err, err_len);
        fd = shared;
      } else {
        fd = mg_listen_bind(l, 1, err, err_len);
      }
      if (fd < 0) return -1;
      m->fds[s * m->nlistens + i] = fd;
    }
  }
  return 0;
}

/* Tells systemd (Type=notify) where the master is: "READY=1", "RELOADING=1", "STOPPING=1". */
static void notify(const char *state) {
#ifdef MG_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

/* Log files the master creates belong to the workers' user, so a USR1 can reopen them. */
void mg_master_set_log_owner(const mg_config_t *cfg) {
  struct passwd *pw = cfg->set.user ? getpwnam(cfg->set.user) : NULL;
  struct group *gr = cfg->set.group ? getgrnam(cfg->set.group) : NULL;
  if (!pw && !gr) {
    mg_log_set_owner(-1, -1);
    return;
  }
  mg_log_set_owner(pw ? (int)pw->pw_uid : 0, gr ? (int)gr->gr_gid : (int)pw->pw_gid);
}

/* A worker gives up root before it serves: the master has bound every socket (ports below
 * 1024 too) and opened the logs. Returns -1 after logging why (the worker then exits). */
static int drop_privileges(const mg_config_t *cfg) {
  const char *user = cfg->set.user, *group = cfg->set.group;
  if (!user && !group) return 0;
  if (geteuid() != 0) {
    static int warned;
    if (!warned++) mg_log(MG_LOG_WARN, "user/group are set but moongate is not run as root: workers keep uid %d", (int)geteuid());
    return 0;
  }
  struct passwd *pw = user ? getpwnam(user) : NULL;
  struct group *gr = group ? getgrnam(group) : NULL;
  if ((user && !pw) || (group && !gr)) {
    mg_log(MG_LOG_ERROR, "user %s or group %s no longer exists", user ? user : "-", group ? group : "-");
    return -1;
  }
  gid_t gid = gr ? gr->gr_gid : pw->pw_gid;
  if ((pw ? initgroups(user, gid) : setgroups(0, NULL)) < 0 || setgid(gid) < 0 || (pw && setuid(pw->pw_uid) < 0)) {
    mg_log(MG_LOG_ERROR, "cannot drop privileges to %s:%s: %s", user ? user : "-", group ? group : "-", strerror(errno));
    return -1;
  }
  return 0;
}

static pid_t spawn(master_t *m, int slot) {
  pid_t pid = fork();
  if (pid < 0) {
    mg_log(MG_LOG_ERROR, "fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    close(sigpipe_fds[0]);
    close(sigpipe_fds[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGUSR1};
    for (int i = 0; i < 6; i++) sigaction(sigs[i], &sa, NULL);
    /* Until the worker's loop handles USR1, one that arrives is ignored, not fatal. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Only this slot's sockets stay open in the worker. */
    for (int s = 0; s < m->nworkers; s++)
      for (int i = 0; i < m->nlistens; i++) {
        int fd = m->fds[s * m->nlistens + i];
        int mine = m->fds[slot * m->nlistens + i] == fd;
        if (!mine) close(fd);
      }
    if (drop_privileges(m->cfg) < 0) _exit(1);
    int rc = mg_server_run(m->cfg, m->fds + slot * m->nlistens, slot);
    _exit(rc);
  }
  child_t *c = &m->children[m->nchildren++];
  c->pid = pid, c->slot = slot, c->generation = m->generation, c->started_ms = now_ms();
  return pid;
}

static void signal_generation(master_t *m, int generation, int sig, int older) {
  for (int i = 0; i < m->nchildren; i++) {
    child_t *c = &m->children[i];
    if (older ? c->generation < generation : c->generation == generation) kill(c->pid, sig);
  }
}

static void record_mtimes(master_t *m) {
  free(m->mtimes);
  m->mtimes = mg_calloc((size_t)m->cfg->nwatched, sizeof(time_t));
  for (int i = 0; i < m->cfg->nwatched; i++) {
    struct stat st;
    m->mtimes[i] = stat(m->cfg->watched[i], &st) == 0 ? st.st_mtime ^ (time_t)st.st_size ^ (time_t)st.st_ino : 0;
  }
}

static int files_changed(master_t *m) {
  for (int i = 0; i < m->cfg->nwatched; i++) {
    struct stat st;
    time_t t = stat(m->cfg->watched[i], &st) == 0 ? st.st_mtime ^ (time_t)st.st_size ^ (time_t)st.st_ino : 0;
    if (t != m->mtimes[i]) return 1;
  }
  return 0;
}

static int same_listens(const mg_config_t *a, const mg_config_t *b) {
  if (a->nlistens != b->nlistens) return 0;
  for (int i = 0; i < a->nlistens; i++)
    if (strcmp(a->listens[i].text, b->listens[i].text) != 0) return 0;
  return 1;
}

static void reload_now(master_t *m);

static void reload(master_t *m) {
  notify("RELOADING=1");
  reload_now(m);
  notify("READY=1");
}

static void reload_now(master_t *m) {
  char err[2048];
  mg_config_t *cfg = mg_config_load(m->cfg->file, err, sizeof err);
  if (!cfg) {
    mg_log(MG_LOG_ERROR, "reload failed, the running configuration stays in force: %s", err);
    record_mtimes(m); /* do not retry the same broken file every second */
    return;
  }
  if (!same_listens(cfg, m->cfg)) {
    mg_log(MG_LOG_WARN, "reload: listeners changed; the new listen addresses take effect on restart");
    mg_listen_t *t = cfg->listens;
    int n = cfg->nlistens;
    cfg->listens = m->cfg->listens, cfg->nlistens = m->cfg->nlistens;
    m->cfg->listens = t, m->cfg->nlistens = n;
  }
  if (resolve_workers(cfg->workers) != m->nworkers)
    mg_log(MG_LOG_WARN, "reload: the worker count changes on restart; keeping %d", m->nworkers);
  mg_master_set_log_owner(cfg);
  int rc = mg_log_open(cfg->set.error_log, cfg->set.access_log, cfg->set.log_level);
  mg_log_access_format(cfg->set.access_log_json);
  if (rc < 0) mg_log(MG_LOG_ERROR, "reload: cannot open logs: %s", strerror(-rc));
  mg_status_bind(cfg);
  mg_config_t *old = m->cfg;
  m->cfg = cfg;
  m->generation++;
  for (int s = 0; s < m->nworkers; s++) spawn(m, s);
  signal_generation(m, m->generation, SIGQUIT, 1);
  mg_config_free(old);
  record_mtimes(m);
  mg_log(MG_LOG_NOTICE, "reloaded %s (generation %d)", cfg->file, m->generation);
}

static void reap(master_t *m) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < m->nchildren; i++) {
      child_t *c = &m->children[i];
      if (c->pid != pid) continue;
      child_t dead = *c;
      m->children[i] = m->children[--m->nchildren];
      int current = dead.generation == m->generation;
      if (current && !m->stopping) {
        if (WIFSIGNALED(status))
          mg_log(MG_LOG_ERROR, "worker %d (slot %d) killed by signal %d; starting a new one", (int)pid, dead.slot, WTERMSIG(status));
        else
          mg_log(MG_LOG_ERROR, "worker %d (slot %d) exited with status %d; starting a new one", (int)pid, dead.slot, WEXITSTATUS(status));
        /* A worker that dies at once would be restarted in a tight loop: pace it. */
        if (now_ms() - dead.started_ms < 1000) usleep(200000);
        spawn(m, dead.slot);
      }
      break;
    }
  }
}

static int write_pid(const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return -errno;
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  return 0;
}

int mg_master_run(mg_config_t *cfg, const char *pid_file) {
  master_t *m = mg_calloc(1, sizeof *m);
  m->cfg = cfg;
  m->nworkers = resolve_workers(cfg->workers);
  m->pid_file = pid_file;
  char err[512];
  if (bind_all(m, err, sizeof err) < 0) {
    mg_log(MG_LOG_ERROR, "%s", err);
    return 1;
  }
  if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_master_signal;
  sa.sa_flags = SA_RESTART;
  int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGUSR1};
  for (int i = 0; i < 6; i++) sigaction(sigs[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (pid_file && write_pid(pid_file) < 0) mg_log(MG_LOG_WARN, "cannot write pid file %s: %s", pid_file, strerror(errno));
  if (mg_status_bind(cfg) < 0) mg_log(MG_LOG_WARN, "no shared memory for balancer counters");
  for (int s = 0; s < m->nworkers; s++) spawn(m, s);
  record_mtimes(m);
  notify("READY=1");
  mg_log(MG_LOG_NOTICE, "moongate/%s started: %d worker(s), listening on %s%s", MG_VERSION, m->nworkers,
         cfg->listens[0].text, cfg->nlistens > 1 ? " and more" : "");
  int stop_sig = 0;
  for (;;) {
    struct pollfd p = {sigpipe_fds[0], POLLIN, 0};
    int n = poll(&p, 1, 1000);
    if (n == 0) {
      if (m->cfg->set.watch && !m->stopping && files_changed(m)) reload(m);
      continue;
    }
    unsigned char sigs_in[64];
    ssize_t got = read(sigpipe_fds[0], sigs_in, sizeof sigs_in);
    for (ssize_t i = 0; i < got; i++) {
      int sig = sigs_in[i];
      if (sig == SIGCHLD) reap(m);
      else if (sig == SIGHUP && !m->stopping) reload(m);
      else if (sig == SIGUSR1) {
        /* logrotate: the master reopens its logs, then each worker its own. */
        int rc = mg_log_reopen();
        if (rc < 0) mg_log(MG_LOG_ERROR, "reopening the log files failed: %s", strerror(-rc));
        else mg_log(MG_LOG_NOTICE, "USR1: log files reopened");
        for (int k = 0; k < m->nchildren; k++) kill(m->children[k].pid, SIGUSR1);
      }
      else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
        if (!m->stopping) mg_log(MG_LOG_NOTICE, "%s: stopping", sig == SIGQUIT ? "QUIT" : "TERM"), notify("STOPPING=1");
        m->stopping = 1;
        stop_sig = sig == SIGINT ? SIGTERM : sig;
        for (int k = 0; k < m->nchildren; k++) kill(m->children[k].pid, stop_sig);
      }
    }
    if (m->stopping && m->nchildren == 0) break;
  }
  if (pid_file) unlink(pid_file);
  for (int i = 0; i < m->cfg->nlistens; i++)
    if (m->cfg->listens[i].unix_socket) unlink(m->cfg->listens[i].host);
  mg_config_free(m->cfg);
  free(m->fds);
  free(m->mtimes);
  free(m);
  return 0;
}
