/* control: see control.h. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "balancer.h"
#include "buf.h"
#include "log.h"

#define MAX_WAITERS 32

typedef struct {
  int fd;
  char *balancer, *url;
} waiter_t;

static int listen_fd = -1;
static char *sock_path;
static waiter_t waiters[MAX_WAITERS];
static int nwaiters;

static int sock_addr(const char *pid_file, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s.ctl", pid_file);
  return n > 0 && (size_t)n < sizeof sa->sun_path ? 0 : -1;
}

int mg_control_open(const char *pid_file) {
  struct sockaddr_un sa;
  if (!pid_file || sock_addr(pid_file, &sa) < 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  unlink(sa.sun_path);
  mode_t old = umask(077); /* the socket is born 0600 */
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc < 0 || listen(fd, 8) < 0) {
    mg_log(MG_LOG_WARN, "control socket %s: %s (moongate member is off)", sa.sun_path, strerror(errno));
    close(fd);
    return -1;
  }
  chmod(sa.sun_path, 0600);
  listen_fd = fd;
  sock_path = mg_strdup(sa.sun_path);
  return fd;
}

static void answer(int fd, const char *text) {
  ssize_t w = write(fd, text, strlen(text));
  (void)w;
  close(fd);
}

static void handle(mg_config_t *cfg, int fd) {
  char line[1024];
  ssize_t got = 0;
  /* One short line, sent at once by the command: read it with a bound on the time. */
  while (got < (ssize_t)sizeof line - 1) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) break;
    ssize_t r = read(fd, line + got, sizeof line - 1 - (size_t)got);
    if (r <= 0) break;
    got += r;
    if (memchr(line, '\n', (size_t)got)) break;
  }
  line[got] = 0;
  char *nl = strchr(line, '\n');
  if (!nl) return answer(fd, "error: expected one line: ACTION BALANCER URL [wait]\n");
  *nl = 0;
  char *save = NULL, *action = strtok_r(line, " ", &save), *bname = strtok_r(NULL, " ", &save);
  char *url = strtok_r(NULL, " ", &save), *flag = strtok_r(NULL, " ", &save);
  const char *status = !action                   ? NULL
                       : strcmp(action, "drain") == 0   ? "+N"
                       : strcmp(action, "disable") == 0 ? "+D"
                       : strcmp(action, "enable") == 0  ? "-D-S-N"
                                                        : NULL;
  if (!status || !bname || !url || (flag && strcmp(flag, "wait") != 0))
    return answer(fd, "error: expected drain, enable or disable, then BALANCER URL [wait]\n");
  char err[200];
  mg_member_t *m = mg_balancer_find_member(cfg, bname, url, err, sizeof err);
  if (!m || mg_member_live_apply(m, status, 0, -1, err, sizeof err) < 0) {
    char out[256];
    snprintf(out, sizeof out, "error: %s\n", err);
    return answer(fd, out);
  }
  mg_log(MG_LOG_NOTICE, "moongate member %s: balancer %s member %s (status %s)", action, bname, url, status);
  if (!flag) return answer(fd, "ok\n");
  if (nwaiters == MAX_WAITERS) return answer(fd, "error: too many commands waiting\n");
  waiters[nwaiters++] = (waiter_t){fd, mg_strdup(bname), mg_strdup(url)};
}

void mg_control_accept(mg_config_t *cfg) {
  if (listen_fd < 0) return;
  int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return;
  handle(cfg, fd);
}

int mg_control_tick(mg_config_t *cfg) {
  for (int i = 0; i < nwaiters;) {
    waiter_t *w = &waiters[i];
    char err[200];
    mg_member_t *m = mg_balancer_find_member(cfg, w->balancer, w->url, err, sizeof err);
    int64_t inflight = 0;
    int n = 0;
    mg_member_t *first = m ? mg_member_siblings(m, &n) : NULL; /* a name: all its addresses */
    for (int k = 0; k < n; k++)
      if (first[k].shared) inflight += __atomic_load_n(&first[k].shared->inflight, __ATOMIC_RELAXED);
    char peek;
    int gone = recv(w->fd, &peek, 1, MSG_DONTWAIT) == 0; /* the command was interrupted */
    if (inflight <= 0 || gone) {
      if (!gone) answer(w->fd, m ? "ok, nothing in flight\n" : "ok, the member is gone\n");
      else close(w->fd);
      free(w->balancer), free(w->url);
      waiters[i] = waiters[--nwaiters];
      continue;
    }
    i++;
  }
  return nwaiters ? 50 : -1;
}

void mg_control_forget(void) {
  if (listen_fd >= 0) close(listen_fd);
  listen_fd = -1;
  for (int i = 0; i < nwaiters; i++) close(waiters[i].fd);
}

void mg_control_close(void) {
  for (int i = 0; i < nwaiters; i++) close(waiters[i].fd), free(waiters[i].balancer), free(waiters[i].url);
  nwaiters = 0;
  if (listen_fd >= 0) close(listen_fd);
  listen_fd = -1;
  if (sock_path) unlink(sock_path);
  free(sock_path);
  sock_path = NULL;
}

int mg_control_request(const char *pid_file, const char *line) {
  struct sockaddr_un sa;
  if (sock_addr(pid_file, &sa) < 0) {
    fprintf(stderr, "moongate: the pid file path %s is too long for a control socket\n", pid_file);
    return 1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    fprintf(stderr, "moongate: cannot reach the running moongate at %s: %s (is it running with this pid file?)\n",
            sa.sun_path, strerror(errno));
    if (fd >= 0) close(fd);
    return 1;
  }
  size_t len = strlen(line);
  if (write(fd, line, len) != (ssize_t)len) {
    fprintf(stderr, "moongate: writing to %s: %s\n", sa.sun_path, strerror(errno));
    close(fd);
    return 1;
  }
  char out[512];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof out - 1 && (r = read(fd, out + got, sizeof out - 1 - got)) > 0) got += (size_t)r;
  close(fd);
  out[got] = 0;
  if (strncmp(out, "ok", 2) == 0) {
    fputs(out, stdout);
    return 0;
  }
  fprintf(stderr, "moongate: %s", got ? out : "no answer from the running moongate\n");
  return 1;
}
