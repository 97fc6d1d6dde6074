/* server: see server.h.
 *
 * Stopping: TERM/INT close the listeners, close idle connections, let busy ones finish their
 * response, and exit at the latest after shutdown_timeout; QUIT does the same without a
 * deadline. The listening sockets themselves stay open in the master, so a stopping worker
 * never refuses a connection another worker could take. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdio.h"
#include "health.h"
#include "http1.h"
#include "log.h"
#include "hooks.h"

int mg_listen_bind(const mg_listen_t *l, int reuseport, char *err, size_t err_len) {
  int fd;
  if (l->unix_socket) {
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    if (strlen(l->host) >= sizeof un.sun_path) {
      snprintf(err, err_len, "listen %s: socket path too long", l->text);
      return -ENAMETOOLONG;
    }
    strcpy(un.sun_path, l->host);
    struct stat st;
    /* A socket file left by a previous run would make bind fail; replace it, but never
     * another kind of file. */
    if (stat(l->host, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(l->host);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof un) < 0 || listen(fd, 511) < 0) {
      int e = errno;
      snprintf(err, err_len, "listen %s: %s", l->text, strerror(e));
      if (fd >= 0) close(fd);
      return -e;
    }
    chmod(l->host, 0666);
    return fd;
  }
  struct addrinfo hints = {0}, *res;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[8];
  snprintf(port, sizeof port, "%d", l->port);
  int rc = getaddrinfo(l->host, port, &hints, &res);
  if (rc != 0) {
    snprintf(err, err_len, "listen %s: %s", l->text, gai_strerror(rc));
    return -EINVAL;
  }
  fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (res->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 511) < 0) {
    int e = errno;
    snprintf(err, err_len, "listen %s: %s", l->text, strerror(e));
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return -e;
  }
  freeaddrinfo(res);
  return fd;
}

static void server_maybe_done(mg_server_t *s);

static void on_conn_closed(mg_server_t *s) {
  if (s->draining) server_maybe_done(s);
}

/* Descriptors ran out (or the kernel's memory for sockets): said in the log once a second at
 * most, and the listeners are left alone for ACCEPT_PAUSE_MS, as nginx does, so that new
 * clients wait in the listen queue (or are taken by another worker) instead of being reset. */
#define ACCEPT_PAUSE_MS 100

static void log_accept_error(const mg_listener_t *l, int err) {
  static uint64_t last;
  uint64_t now = mg_now_ms();
  if (now - last < 1000) return;
  last = now;
  char where[64];
  if (l->unix_socket) snprintf(where, sizeof where, "a unix socket");
  else snprintf(where, sizeof where, "port %d", l->port);
  if (err == EMFILE || err == ENFILE) {
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    mg_log(MG_LOG_ERROR,
           "cannot accept connections on %s: %s (this worker's limit is %llu descriptors; raise it "
           "with ulimit -n or LimitNOFILE=, or lower max_connections): new connections wait in the "
           "listen queue until descriptors are freed",
           where, err == EMFILE ? "too many open files" : "the system's file table is full",
           (unsigned long long)rl.rlim_cur);
  } else {
    mg_log(MG_LOG_ERROR, "cannot accept a connection on %s: %s", where, strerror(err));
  }
}

static void on_listener_readable(uv_poll_t *p, int status, int events);

static void on_accept_resume(uv_timer_t *t) {
  mg_server_t *s = t->data;
  s->accept_paused = 0;
  if (s->draining) return;
  for (int i = 0; i < s->nlisteners; i++) uv_poll_start(&s->listeners[i].poll, UV_READABLE, on_listener_readable);
}

static void accept_pause(mg_server_t *s) {
  if (s->accept_paused || s->draining) return;
  s->accept_paused = 1;
  for (int i = 0; i < s->nlisteners; i++) uv_poll_stop(&s->listeners[i].poll);
  uv_timer_start(&s->accept_timer, on_accept_resume, ACCEPT_PAUSE_MS, 0);
}

/* A new client's socket, accepted: becomes a connection. */
static void conn_accepted(mg_listener_t *l, int fd) {
  mg_server_t *s = l->server;
  mg_conn_t *c = mg_conn_new(s, l->unix_socket);
  uv_stream_t *st = mg_conn_stream(c);
  mg_conn_set_listener(c, (int)(l - s->listeners));
  mg_server_conn_opened(s);
  int rc = l->unix_socket ? uv_pipe_open((uv_pipe_t *)st, fd) : uv_tcp_open((uv_tcp_t *)st, fd);
  if (rc != 0) {
    close(fd);
    mg_conn_close(c);
    return;
  }
  if (s->nconns > s->cfg->set.max_connections) {
    /* Over the limit: answered with a short 503 and closed; the connections already open
     * are not disturbed. */
    static uint64_t last;
    uint64_t now = mg_now_ms();
    if (now - last > 1000) {
      last = now;
      mg_log(MG_LOG_WARN, "max_connections (%llu) reached: new connections get 503",
             (unsigned long long)s->cfg->set.max_connections);
    }
    mg_conn_reject(c);
    return;
  }
  mg_conn_start(c);
}

/* The listener is accepted from here rather than by libuv's uv_listen, whose answer to
 * EMFILE is to accept and close (reset) every waiting connection without telling its user. A
 * turn takes at most ACCEPT_BATCH connections; the poll is level-triggered, so the rest come
 * on the next turn, after the loop has served what is ready. */
#define ACCEPT_BATCH 64

static void on_listener_readable(uv_poll_t *p, int status, int events) {
  mg_listener_t *l = p->data;
  mg_server_t *s = l->server;
  (void)events;
  if (status < 0) {
    log_accept_error(l, -status);
    return;
  }
  for (int n = 0; n < ACCEPT_BATCH && !s->draining; n++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      conn_accepted(l, fd);
      continue;
    }
    int e = errno;
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) return;
    log_accept_error(l, e);
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) accept_pause(s);
    return;
  }
}

static void on_signal_closed(uv_handle_t *h) { (void)h; }

static void server_maybe_done(mg_server_t *s) {
  /* Reached twice when closing the idle connections ends the last one (from its close, then
   * from the drain that closed it): the handles are closed once. */
  if (s->nconns > 0 || uv_is_closing((uv_handle_t *)&s->sig_term)) return;
  uv_close((uv_handle_t *)&s->sig_term, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_quit, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_hup, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_usr1, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_int, on_signal_closed);
  uv_close((uv_handle_t *)&s->shutdown_timer, on_signal_closed);
  uv_close((uv_handle_t *)&s->accept_timer, on_signal_closed);
  mg_timeq_close(&s->timeouts, on_signal_closed);
  uv_stop(s->loop);
}

static void on_shutdown_timeout(uv_timer_t *t) {
  mg_server_t *s = t->data;
  mg_log(MG_LOG_WARN, "shutdown_timeout: closing %llu connections still open", (unsigned long long)s->nconns);
  _exit(0);
}

static void server_drain(mg_server_t *s, uint64_t deadline_ms, int close_idle) {
  if (!s->draining) {
    s->draining = 1;
    for (int i = 0; i < s->nlisteners; i++) {
      /* Closed, not only stopped: the master keeps the slot's socket, whose queue the next
       * worker of this slot takes over. */
      uv_close((uv_handle_t *)&s->listeners[i].poll, NULL);
      close(s->listeners[i].fd);
    }
    uv_timer_stop(&s->accept_timer);
  }
  /* Busy connections see `draining` when their response head is made and close after it.
   * When stopping, idle keep-alive connections close now; on QUIT (a reload) they stay until
   * their next request, since closing them would race with a request the client is sending. */
  if (close_idle) {
    s->stopping = 1;
    mg_server_close_idle(s);
  }
  if (deadline_ms) uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, deadline_ms, 0);
  server_maybe_done(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  mg_server_t *s = h->data;
  if (signum == SIGHUP) return; /* the master reloads by replacing workers */
  if (signum == SIGUSR1) {
    int rc = mg_log_reopen();
    if (rc < 0) mg_log(MG_LOG_ERROR, "reopening the log files failed: %s", strerror(-rc));
    return;
  }
  /* QUIT (also how a reload retires old workers) keeps idle keep-alive connections until
   * their next request; TERM and INT close them at once. */
  server_drain(s, signum == SIGQUIT ? 0 : s->cfg->set.shutdown_timeout, signum != SIGQUIT);
}

/* After a burst of requests the allocator keeps the freed memory of every request that was in
 * flight at the peak; idle keep-alive connections would then look as if each held kilobytes.
 * Once a second, when requests have finished since the last look and none is in flight, the
 * free pages go back to the kernel. */
static void on_trim(uv_timer_t *t) {
  mg_server_t *s = t->data;
  static uint64_t last_trimmed;
  if (s->nfinished == last_trimmed || s->nfinished != s->nreqs) return;
  last_trimmed = s->nfinished;
  malloc_trim(0);
}

/* Tells the master that this worker accepts (it retires an old generation only then): the
 * pid in one write, which a pipe keeps whole. */
static void server_report_ready(int fd) {
  if (fd < 0) return;
  int32_t pid = (int32_t)getpid();
  ssize_t w = write(fd, &pid, sizeof pid);
  (void)w;
  close(fd);
}

int mg_server_run(mg_config_t *cfg, const int *fds, int slot, int ready_fd) {
  mg_server_t s;
  memset(&s, 0, sizeof s);
  s.on_conn_closed = on_conn_closed;
  s.loop = uv_default_loop();
  s.cfg = cfg;
  signal(SIGPIPE, SIG_IGN);
  uv_signal_t *sigs[] = {&s.sig_term, &s.sig_quit, &s.sig_hup, &s.sig_int, &s.sig_usr1};
  int nums[] = {SIGTERM, SIGQUIT, SIGHUP, SIGINT, SIGUSR1};
  for (int i = 0; i < 5; i++) {
    uv_signal_init(s.loop, sigs[i]);
    sigs[i]->data = &s;
    uv_signal_start(sigs[i], on_signal, nums[i]);
  }
  uv_timer_init(s.loop, &s.shutdown_timer);
  s.shutdown_timer.data = &s;
  uv_timer_init(s.loop, &s.accept_timer);
  s.accept_timer.data = &s;
  uv_timer_t trim;
  uv_timer_init(s.loop, &trim);
  trim.data = &s;
  uv_timer_start(&trim, on_trim, 1000, 1000);
  uv_unref((uv_handle_t *)&trim);
  /* libuv keeps a spare descriptor (/dev/null) per loop, opened when the loop's first stream
   * is made. The listeners are polls, so that would be on the first connection; made now, a
   * worker holds the same descriptors before and after its first client. */
  static uv_pipe_t first_stream;
  uv_pipe_init(s.loop, &first_stream, 0);
  uv_close((uv_handle_t *)&first_stream, NULL);
  s.nlisteners = cfg->nlistens;
  s.listeners = mg_calloc((size_t)s.nlisteners, sizeof(mg_listener_t));
  for (int i = 0; i < s.nlisteners; i++) {
    mg_listener_t *l = &s.listeners[i];
    l->server = &s;
    l->unix_socket = cfg->listens[i].unix_socket;
    l->fd = fds[i];
    /* Workers share the socket: another may take the connection this poll announced, and
     * accept4 must then say EAGAIN rather than wait. */
    int rc = fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0 ? -errno : 0;
    if (rc == 0) rc = uv_poll_init_socket(s.loop, &l->poll, l->fd);
    l->poll.data = l;
    if (rc == 0 && !l->unix_socket) {
      struct sockaddr_storage ss;
      socklen_t len = sizeof ss;
      if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
          struct sockaddr_in *in = (struct sockaddr_in *)&ss;
          l->port = ntohs(in->sin_port);
          if (in->sin_addr.s_addr != htonl(INADDR_ANY)) inet_ntop(AF_INET, &in->sin_addr, l->addr, sizeof l->addr);
        } else if (ss.ss_family == AF_INET6) {
          struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
          l->port = ntohs(in6->sin6_port);
          if (!IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) inet_ntop(AF_INET6, &in6->sin6_addr, l->addr, sizeof l->addr);
        }
      }
    }
    if (rc == 0) rc = uv_poll_start(&l->poll, UV_READABLE, on_listener_readable);
    if (rc < 0) {
      mg_log(MG_LOG_ERROR, "cannot serve %s: %s", cfg->listens[i].text, uv_strerror(rc));
      return 1;
    }
  }
  if (mg_fdio_init(s.loop) < 0) {
    mg_log(MG_LOG_ERROR, "cannot create the upstream epoll set: %s", strerror(errno));
    return 1;
  }
  if (mg_hooks && mg_hooks->worker_start(cfg, s.loop) < 0) return 1;
  if (slot == 0) mg_health_start(cfg, s.loop);
  server_report_ready(ready_fd);
  uv_run(s.loop, UV_RUN_DEFAULT);
  free(s.listeners);
  return 0;
}
