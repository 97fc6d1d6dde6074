/* master: the master process, its workers, reload and stop (docs/deploying.md, "3. Start,
 * reload, stop").
 *
 * The master loads the configuration, binds the listeners and forks the workers; it holds no
 * request and runs no libuv loop, only a poll() on a self-pipe fed by its signal handlers and
 * on a pipe where each worker reports once that it is ready (its init_worker hooks have run or
 * are waiting, and it accepts). Every delay is a deadline on the monotonic clock, checked when
 * poll() returns for any reason, so no signal can cut one short.
 * With more than one worker, each worker slot gets its own SO_REUSEPORT socket per TCP
 * listener, so the kernel spreads connections evenly; the master keeps every socket open for
 * its whole life, so a worker that stops or dies never takes a socket, or the connections
 * waiting in its backlog, with it.
 *
 * Reload (HUP, `-s reload`, or `watch`) loads the scripts in a fresh Lua state; if that fails
 * the old configuration stays and the error is logged with file:line. Otherwise a new
 * generation of workers starts on the same sockets, and only when every one of them has
 * reported ready is the old one told to QUIT: it stops accepting, finishes its requests under
 * the configuration they started with, and exits. A new worker that dies before it is ready
 * fails the reload: the old generation goes on serving. A HUP during a reload is run after it.
 *
 * A worker that dies unexpectedly is replaced in its slot. One that dies within LIVED_MS of its
 * start waits before it is replaced, 100 ms doubling up to 5 s for each such death in a row,
 * so a configuration whose workers die at once costs a few forks a second, not thousands.
 *
 * Stop: TERM/INT tell every worker to stop (each gives its requests up to shutdown_timeout,
 * then exits by itself), QUIT to drain without a deadline. The master kills a worker still
 * alive STOP_GRACE_MS after its shutdown_timeout past a TERM, or past the QUIT that retired it
 * in a reload: such a worker no longer runs its loop (a hook spinning in Lua, say). A QUIT of
 * the master itself has no deadline. */
#include "master.h"

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
#include "control.h"
#include "resolve.h"
#include "log.h"
#include "listen.h"
#include "caps.h"
#include "pids.h"
#include "worker.h"
#include "status.h"

#define MAX_WORKERS MG_PIDS_MAX

/* Respawn pacing: the first delay, its cap, and how long a worker must have lived for its
 * death not to count as one more start-up failure. */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define LIVED_MS 10000
/* How long a reload's workers may take to report ready before the reload is given up. */
#define READY_TIMEOUT_MS 60000
/* A worker exits by itself at its shutdown_timeout after TERM; the master's SIGKILL comes
 * this much later, for a worker that can no longer run its loop. */
#define STOP_GRACE_MS 1000

typedef struct {
  pid_t pid;
  int slot;
  int generation;
  uint64_t started_ms;
  uint64_t shutdown_ms; /* its configuration's shutdown_timeout */
  uint64_t told_ms;     /* when it was told to stop (for its deadline: when that was set) */
  uint64_t kill_at;     /* SIGKILL if still alive then (0: no deadline) */
  const char *kill_why; /* what it was told, for the log line of the kill */
  unsigned ready : 1;   /* it reported that it accepts */
  unsigned told : 1;    /* told to stop: its exit is expected, it is not replaced */
  unsigned killed : 1;
} child_t;

typedef struct {
  int fails;           /* workers of this slot that died soon after their start, in a row */
  uint64_t not_before; /* no worker of any generation starts in this slot before */
  unsigned want_current : 1, want_pending : 1; /* a worker of that generation is to start */
} slot_t;

static int sigpipe_fds[2] = {-1, -1};
static int ready_fds[2] = {-1, -1};

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
  mg_config_t *cfg; /* the serving generation's */
  int nworkers;
  int *fds; /* [slot * nlistens + listener] */
  int nlistens;
  child_t children[MAX_WORKERS * 4]; /* serving, starting and retired workers */
  int nchildren;
  slot_t slots[MAX_WORKERS];
  int generation;           /* the serving generation */
  int last_generation;      /* generation numbers are never reused */
  int pending;              /* a reload's generation, not yet ready in every slot; 0: none */
  mg_config_t *pending_cfg;
  time_t *pending_mtimes;
  int pending_swapped;      /* pending_cfg and cfg traded listeners (see reload_now) */
  int reload_again;         /* a HUP came during the pending reload */
  int ready_told;           /* systemd heard READY=1 for the first generation */
  int stopping;
  uint64_t last_watch_ms;
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


static time_t file_stamp(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_mtime ^ (time_t)st.st_size ^ (time_t)st.st_ino : 0;
}

/* What the watched files of cfg look like now, for `watch`. */
static time_t *file_stamps(const mg_config_t *cfg) {
  time_t *t = mg_calloc((size_t)cfg->nwatched + 1, sizeof(time_t));
  for (int i = 0; i < cfg->nwatched; i++) t[i] = file_stamp(cfg->watched[i]);
  return t;
}

static void record_mtimes(master_t *m) {
  free(m->mtimes);
  m->mtimes = file_stamps(m->cfg);
}

static int files_changed(master_t *m) {
  for (int i = 0; i < m->cfg->nwatched; i++)
    if (file_stamp(m->cfg->watched[i]) != m->mtimes[i]) return 1;
  return 0;
}

static int same_listens(const mg_config_t *a, const mg_config_t *b) {
  if (a->nlistens != b->nlistens) return 0;
  for (int i = 0; i < a->nlistens; i++)
    if (strcmp(a->listens[i].text, b->listens[i].text) != 0) return 0;
  return 1;
}

/* How a worker ended, for the log: "exited with status 3" or "killed by signal 9". */
static void describe_exit(int status, char *out, size_t len) {
  if (WIFSIGNALED(status)) snprintf(out, len, "killed by signal %d", WTERMSIG(status));
  else snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
}

static int find_child(const master_t *m, pid_t pid) {
  for (int i = 0; i < m->nchildren; i++)
    if (m->children[i].pid == pid) return i;
  return -1;
}

/* Records a start that failed in slot s: a worker that died lived_ms after its start without
 * being told to stop, or a fork that failed (lived_ms 0). Returns how long the slot now waits
 * before its next start: BACKOFF_FIRST_MS doubling with each failure in a row up to
 * BACKOFF_MAX_MS, or nothing for a worker that had lived LIVED_MS (the count starts over). */
static uint64_t slot_failed(master_t *m, int s, uint64_t lived_ms) {
  slot_t *sl = &m->slots[s];
  uint64_t delay = 0;
  if (lived_ms < LIVED_MS) {
    sl->fails++;
    delay = (uint64_t)BACKOFF_FIRST_MS << (sl->fails > 7 ? 6 : sl->fails - 1);
    if (delay > BACKOFF_MAX_MS) delay = BACKOFF_MAX_MS;
  } else {
    sl->fails = 0;
  }
  sl->not_before = now_ms() + delay;
  return delay;
}

/* Forks a worker of `generation` serving `cfg` in `slot`. Returns 0, or -1 after logging why
 * (the slot then waits as after a start that failed). */
static int spawn(master_t *m, int slot, mg_config_t *cfg, int generation) {
  if (m->nchildren == (int)(sizeof m->children / sizeof m->children[0])) {
    mg_log(MG_LOG_ERROR, "cannot start a worker in slot %d: %d older workers are still stopping", slot, m->nchildren);
    slot_failed(m, slot, 0);
    return -1;
  }
  /* Signals wait until the child has put its own handlers in place: with the master's, a
   * TERM meant for the new worker would be written into the master's self-pipe. */
  sigset_t all, before;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &before);
  pid_t pid = fork();
  if (pid != 0) sigprocmask(SIG_SETMASK, &before, NULL);
  if (pid < 0) {
    mg_log(MG_LOG_ERROR, "fork: %s", strerror(errno));
    slot_failed(m, slot, 0);
    return -1;
  }
  if (pid == 0) {
    close(sigpipe_fds[0]);
    close(sigpipe_fds[1]);
    close(ready_fds[0]);
    mg_control_forget();
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
    if (drop_privileges(cfg) < 0) _exit(1);
    int rc = mg_server_run(cfg, m->fds + slot * m->nlistens, slot, m->nworkers, ready_fds[1]);
    _exit(rc);
  }
  child_t *c = &m->children[m->nchildren++];
  memset(c, 0, sizeof *c);
  c->pid = pid, c->slot = slot, c->generation = generation, c->started_ms = now_ms();
  c->shutdown_ms = cfg->set.shutdown_timeout;
  return 0;
}

/* Tells a worker to stop: TERM (it stops; its requests get its shutdown_timeout) or QUIT (it
 * drains). A worker that has not reported ready gets TERM either way: it holds no connection
 * yet, and before its loop handles QUIT that signal would end it with a core dump. With a
 * reason (what it was told, for the log), the master kills the worker if it is still alive
 * STOP_GRACE_MS after its shutdown_timeout; an earlier deadline stays. */
static void tell_stop(child_t *c, int sig, const char *why) {
  if (!c->ready) sig = SIGTERM;
  kill(c->pid, sig);
  uint64_t now = now_ms();
  if (!c->told) c->told = 1, c->told_ms = now;
  uint64_t at = now + c->shutdown_ms + STOP_GRACE_MS;
  /* shutdown_timeout = 0 is no deadline for the worker, and so none here either. */
  if (why && c->shutdown_ms && (!c->kill_at || at < c->kill_at)) c->kill_at = at, c->told_ms = now, c->kill_why = why;
}

/* The master's own logs follow the configuration that serves. */
static void open_logs(const mg_config_t *cfg) {
  mg_master_set_log_owner(cfg);
  int rc = mg_log_open(cfg->set.error_log, cfg->set.access_log, cfg->set.log_level);
  mg_log_access_format(cfg->set.access_log_json);
  if (rc < 0) mg_log(MG_LOG_ERROR, "reload: cannot open logs: %s", strerror(-rc));
}

/* Drops the pending reload's configuration; its workers are the caller's to stop. */
static void discard_pending(master_t *m) {
  if (!m->pending) return;
  if (m->pending_swapped) {
    mg_listen_t *t = m->cfg->listens;
    int n = m->cfg->nlistens;
    m->cfg->listens = m->pending_cfg->listens, m->cfg->nlistens = m->pending_cfg->nlistens;
    m->pending_cfg->listens = t, m->pending_cfg->nlistens = n;
  }
  mg_config_free(m->pending_cfg);
  free(m->pending_mtimes);
  m->pending_cfg = NULL, m->pending_mtimes = NULL, m->pending = 0, m->pending_swapped = 0;
  for (int s = 0; s < m->nworkers; s++) m->slots[s].want_pending = 0;
}

/* Reads the workers' reports: each is one pid, written at once when the worker accepts. */
static void read_ready(master_t *m) {
  int32_t pids[64];
  ssize_t got;
  while ((got = read(ready_fds[0], pids, sizeof pids)) > 0)
    for (ssize_t i = 0; i < got / (ssize_t)sizeof pids[0]; i++) {
      int k = find_child(m, (pid_t)pids[i]);
      if (k >= 0) m->children[k].ready = 1;
    }
}

/* Gives up the pending reload: the serving generation stays in force and the new workers go.
 * Those that reported ready drain; with kill_unready, the others are killed (they did not get
 * ready in time: their loop does not run), else they get TERM. */
static void abort_reload(master_t *m, const char *why, int kill_unready) {
  read_ready(m); /* a report still in the pipe: that worker accepts already */
  open_logs(m->cfg);
  mg_log(MG_LOG_ERROR, "reload failed, the running configuration stays in force: %s", why);
  for (int i = 0; i < m->nchildren; i++) {
    child_t *c = &m->children[i];
    if (c->generation != m->pending || c->told) continue;
    if (kill_unready && !c->ready) {
      mg_log(MG_LOG_ERROR, "worker %d (slot %d) not ready %.1f s after its start; killing it (SIGKILL)", (int)c->pid,
             c->slot, (double)(now_ms() - c->started_ms) / 1000);
      kill(c->pid, SIGKILL);
      c->told = 1, c->killed = 1;
    } else {
      tell_stop(c, SIGQUIT, "its reload failed and it was told to stop");
    }
  }
  discard_pending(m);
  record_mtimes(m); /* do not retry the same file every second */
  notify("READY=1");
}

/* Every worker of the pending reload is ready: the old generations are told to drain, and the
 * new configuration is the one that serves. */
static void commit_reload(master_t *m) {
  for (int i = 0; i < m->nchildren; i++) {
    child_t *c = &m->children[i];
    if (c->generation != m->pending && !c->told) tell_stop(c, SIGQUIT, "a reload told it to QUIT");
  }
  mg_config_free(m->cfg);
  free(m->mtimes);
  m->cfg = m->pending_cfg, m->mtimes = m->pending_mtimes, m->generation = m->pending;
  m->pending_cfg = NULL, m->pending_mtimes = NULL, m->pending = 0, m->pending_swapped = 0;
  for (int s = 0; s < m->nworkers; s++) m->slots[s].want_current = 0;
  m->ready_told = 1;
  mg_log(MG_LOG_NOTICE, "reloaded %s (generation %d)", m->cfg->file, m->generation);
  notify("READY=1");
}

/* Loads the scripts again and starts a generation of workers on them (tick() forks them as
 * their slots allow). A reload requested while one is pending runs after it. */
static void reload_now(master_t *m) {
  if (m->pending) {
    if (!m->reload_again)
      mg_log(MG_LOG_NOTICE, "reload: generation %d is still starting; the next reload follows when it is ready or has failed", m->pending);
    m->reload_again = 1;
    return;
  }
  notify("RELOADING=1");
  char err[2048];
  mg_config_t *cfg = mg_config_load(m->cfg->file, err, sizeof err);
  if (!cfg) {
    mg_log(MG_LOG_ERROR, "reload failed, the running configuration stays in force: %s", err);
    record_mtimes(m); /* do not retry the same broken file every second */
    notify("READY=1");
    return;
  }
  if (!same_listens(cfg, m->cfg)) {
    mg_log(MG_LOG_WARN, "reload: listeners changed; the new listen addresses take effect on restart");
    mg_listen_t *t = cfg->listens;
    int n = cfg->nlistens;
    cfg->listens = m->cfg->listens, cfg->nlistens = m->cfg->nlistens;
    m->cfg->listens = t, m->cfg->nlistens = n;
    m->pending_swapped = 1;
  }
  if (resolve_workers(cfg->workers) != m->nworkers)
    mg_log(MG_LOG_WARN, "reload: the worker count changes on restart; keeping %d", m->nworkers);
  open_logs(cfg); /* the new workers inherit them */
  mg_status_bind(cfg);
  mg_resolve_bind(cfg);
  m->pending_cfg = cfg;
  m->pending_mtimes = file_stamps(cfg);
  m->pending = ++m->last_generation;
  for (int s = 0; s < m->nworkers; s++) m->slots[s].want_pending = 1;
}

static void reap(master_t *m) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    int i = find_child(m, pid);
    if (i < 0) continue;
    child_t dead = m->children[i];
    m->children[i] = m->children[--m->nchildren];
    mg_caps_reap((int)pid); /* SPEC 20: its member slots and queued requests are given back */
    char how[64];
    describe_exit(status, how, sizeof how);
    if (dead.told) {
      /* Expected; a kill was logged when it was made, a crash while stopping is logged now. */
      if (WIFSIGNALED(status) && !dead.killed && WTERMSIG(status) != SIGTERM)
        mg_log(MG_LOG_WARN, "worker %d (slot %d) %s while stopping", (int)pid, dead.slot, how);
      continue;
    }
    uint64_t lived = now_ms() - dead.started_ms;
    uint64_t delay = slot_failed(m, dead.slot, lived);
    if (m->pending && dead.generation == m->pending) {
      char why[192];
      snprintf(why, sizeof why, "new worker %d (slot %d) %s %s it was ready (it ran %.1f s)", (int)pid, dead.slot, how,
               dead.ready ? "after" : "before", (double)lived / 1000);
      abort_reload(m, why, 0);
    } else if (dead.generation == m->generation) {
      m->slots[dead.slot].want_current = 1;
      if (delay)
        mg_log(MG_LOG_ERROR, "worker %d (slot %d) %s; starting a new one in %.1f s (it ran %.1f s; quick exits in a row: %d)",
               (int)pid, dead.slot, how, (double)delay / 1000, (double)lived / 1000, m->slots[dead.slot].fails);
      else
        mg_log(MG_LOG_ERROR, "worker %d (slot %d) %s; starting a new one", (int)pid, dead.slot, how);
    }
  }
}

/* What is due now: kills past their deadline, a reload that failed to get ready in time or
 * is complete, a queued reload, and the workers whose slot may start one. */
static void tick(master_t *m) {
  uint64_t now = now_ms();
  for (int i = 0; i < m->nchildren; i++) {
    child_t *c = &m->children[i];
    if (!c->kill_at || c->killed || now < c->kill_at) continue;
    mg_log(MG_LOG_ERROR, "worker %d (slot %d) still running %.1f s after %s (shutdown_timeout %.1f s); killing it (SIGKILL)",
           (int)c->pid, c->slot, (double)(now - c->told_ms) / 1000, c->kill_why, (double)c->shutdown_ms / 1000);
    kill(c->pid, SIGKILL);
    c->killed = 1;
  }
  if (m->pending) {
    int ready = 0;
    for (int i = 0; i < m->nchildren && m->pending; i++) {
      child_t *c = &m->children[i];
      if (c->generation != m->pending || c->told) continue;
      if (c->ready) ready++;
      else if (now - c->started_ms >= READY_TIMEOUT_MS) {
        char why[160];
        snprintf(why, sizeof why, "new worker %d (slot %d) did not report ready within %d s", (int)c->pid, c->slot,
                 READY_TIMEOUT_MS / 1000);
        abort_reload(m, why, 1);
      }
    }
    if (m->pending && ready == m->nworkers) commit_reload(m);
  }
  if (!m->pending && m->reload_again && !m->stopping) {
    m->reload_again = 0;
    reload_now(m);
  }
  if (m->stopping) return;
  /* A slot starts the pending generation's worker first: while a reload is under way the
   * serving generation's dead workers wait for its outcome (if it succeeds they are not
   * needed; if it fails, the failure has set how long the slot waits). */
  for (int s = 0; s < m->nworkers; s++) {
    slot_t *sl = &m->slots[s];
    if (now < sl->not_before) continue;
    if (m->pending && sl->want_pending) {
      if (spawn(m, s, m->pending_cfg, m->pending) == 0) sl->want_pending = 0;
    } else if (!m->pending && sl->want_current) {
      if (spawn(m, s, m->cfg, m->generation) == 0) sl->want_current = 0;
    }
  }
  if (!m->ready_told) {
    int ready = 0;
    for (int i = 0; i < m->nchildren; i++) ready += m->children[i].generation == m->generation && m->children[i].ready;
    if (ready == m->nworkers) m->ready_told = 1, notify("READY=1");
  }
}

/* mg.worker.pids: each slot shows its newest worker not told to stop, 0 when it has none. */
static void publish_pids(const master_t *m) {
  for (int s = 0; s < m->nworkers; s++) {
    pid_t pid = 0;
    uint64_t started = 0;
    for (int i = 0; i < m->nchildren; i++) {
      const child_t *c = &m->children[i];
      if (c->slot == s && !c->told && (!pid || c->started_ms >= started)) pid = c->pid, started = c->started_ms;
    }
    if (mg_pids_get(s) != (int)pid) mg_pids_set(s, (int)pid);
  }
}

/* How long poll() may wait: until the next deadline of tick(), at most a second (the watch). */
static int next_timeout(const master_t *m) {
  uint64_t now = now_ms(), next = now + 1000;
  for (int s = 0; s < m->nworkers && !m->stopping; s++) {
    const slot_t *sl = &m->slots[s];
    int wants = m->pending ? sl->want_pending : sl->want_current;
    if (wants && sl->not_before < next) next = sl->not_before;
  }
  for (int i = 0; i < m->nchildren; i++) {
    const child_t *c = &m->children[i];
    if (c->kill_at && !c->killed && c->kill_at < next) next = c->kill_at;
    if (m->pending && c->generation == m->pending && !c->ready && !c->told && c->started_ms + READY_TIMEOUT_MS < next)
      next = c->started_ms + READY_TIMEOUT_MS;
  }
  if (m->reload_again && !m->pending) next = now;
  return next <= now ? 0 : (int)(next - now);
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
  m->generation = m->last_generation = 1;
  char err[512];
  if (bind_all(m, err, sizeof err) < 0) {
    mg_log(MG_LOG_ERROR, "%s", err);
    return 1;
  }
  if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(ready_fds, O_CLOEXEC) < 0 ||
      fcntl(ready_fds[0], F_SETFL, O_NONBLOCK) < 0) {
    mg_log(MG_LOG_ERROR, "pipe: %s", strerror(errno));
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_master_signal;
  sa.sa_flags = SA_RESTART;
  int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGUSR1};
  for (int i = 0; i < 6; i++) sigaction(sigs[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (pid_file && write_pid(pid_file) < 0) mg_log(MG_LOG_WARN, "cannot write pid file %s: %s", pid_file, strerror(errno));
  if (mg_status_bind(cfg) < 0) mg_log(MG_LOG_WARN, "no shared memory for balancer counters");
  mg_resolve_bind(cfg); /* SPEC 20: the load's addresses of names into the shared slots */
  int ctl_fd = mg_control_open(pid_file); /* SPEC 20: `moongate member` */
  if (mg_pids_map() < 0) mg_log(MG_LOG_WARN, "no shared memory for the workers' pids (mg.worker.pids): %s", strerror(errno));
  for (int s = 0; s < m->nworkers; s++) m->slots[s].want_current = 1;
  tick(m);
  publish_pids(m);
  record_mtimes(m);
  m->last_watch_ms = now_ms();
  mg_log(MG_LOG_NOTICE, "moongate/%s started: %d worker(s), listening on %s%s", MG_VERSION, m->nworkers,
         cfg->listens[0].text, cfg->nlistens > 1 ? " and more" : "");
  while (!m->stopping || m->nchildren > 0) {
    struct pollfd p[3 + 16] = {{sigpipe_fds[0], POLLIN, 0}, {ready_fds[0], POLLIN, 0}, {ctl_fd, POLLIN, 0}};
    int timeout = next_timeout(m), ctl_timeout = mg_control_tick(m->cfg);
    if (ctl_timeout >= 0 && (timeout < 0 || ctl_timeout < timeout)) timeout = ctl_timeout;
    /* SPEC 20: members given by host name, looked up again without blocking (handler/resolve.h) */
    mg_config_t *rcfg = m->cfg;
    int ndns = m->stopping ? 0 : mg_resolve_pollfds(rcfg, p + 3, 16, &timeout);
    int n = poll(p, ndns ? (nfds_t)(3 + ndns) : ctl_fd >= 0 ? 3 : 2, timeout);
    if (ndns || (rcfg->resolver && !m->stopping)) mg_resolve_process(rcfg, p + 3, n > 0 ? ndns : 0);
    if (n > 0 && ctl_fd >= 0 && (p[2].revents & POLLIN)) mg_control_accept(m->cfg);
    /* Reports first: how a worker is told to stop depends on whether it is ready. */
    if (n > 0 && (p[1].revents & POLLIN)) read_ready(m);
    unsigned char sigs_in[64];
    ssize_t got = n > 0 && (p[0].revents & POLLIN) ? read(sigpipe_fds[0], sigs_in, sizeof sigs_in) : 0;
    for (ssize_t i = 0; i < got; i++) {
      int sig = sigs_in[i];
      if (sig == SIGCHLD) reap(m);
      else if (sig == SIGHUP && !m->stopping) reload_now(m);
      else if (sig == SIGUSR1) {
        /* logrotate: the master reopens its logs, then each worker its own. */
        int rc = mg_log_reopen();
        if (rc < 0) mg_log(MG_LOG_ERROR, "reopening the log files failed: %s", strerror(-rc));
        else mg_log(MG_LOG_NOTICE, "USR1: log files reopened");
        for (int k = 0; k < m->nchildren; k++) kill(m->children[k].pid, SIGUSR1);
      } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
        if (!m->stopping) mg_log(MG_LOG_NOTICE, "%s: stopping", sig == SIGQUIT ? "QUIT" : "TERM"), notify("STOPPING=1");
        m->stopping = 1;
        /* TERM gives every worker a deadline; QUIT drains without one (docs/reference.md,
         * "Command line"). */
        for (int k = 0; k < m->nchildren; k++)
          tell_stop(&m->children[k], sig == SIGQUIT ? SIGQUIT : SIGTERM, sig == SIGQUIT ? NULL : "TERM");
        discard_pending(m);
      }
    }
    uint64_t now = now_ms();
    if (m->cfg->set.watch && !m->stopping && !m->pending && now - m->last_watch_ms >= 1000) {
      m->last_watch_ms = now;
      if (files_changed(m)) reload_now(m);
    }
    tick(m);
    publish_pids(m);
  }
  if (pid_file) unlink(pid_file);
  mg_control_close();
  for (int i = 0; i < m->cfg->nlistens; i++)
    if (m->cfg->listens[i].unix_socket) unlink(m->cfg->listens[i].host);
  mg_config_free(m->cfg);
  free(m->fds);
  free(m->mtimes);
  free(m);
  return 0;
}
