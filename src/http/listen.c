/* listen: see listen.h.
 *
 * The listeners are polled and accepted from here rather than by libuv's uv_listen, whose
 * answer to EMFILE is to accept and close (reset) every waiting connection without telling its
 * user. */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "conn.h"
#include "http1.h"
#include "http2.h"
#include "log.h"

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
  mg_conn_start(c, &mg_h1_proto, s->cfg->listens[l - s->listeners].http2 ? &mg_h2_proto : NULL);
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

int mg_listeners_start(mg_server_t *s, const int *fds) {
  uv_timer_init(s->loop, &s->accept_timer);
  s->accept_timer.data = s;
  s->nlisteners = s->cfg->nlistens;
  s->listeners = mg_calloc((size_t)s->nlisteners, sizeof(mg_listener_t));
  for (int i = 0; i < s->nlisteners; i++) {
    mg_listener_t *l = &s->listeners[i];
    l->server = s;
    l->unix_socket = s->cfg->listens[i].unix_socket;
    l->fd = fds[i];
    /* Workers share the socket: another may take the connection this poll announced, and
     * accept4 must then say EAGAIN rather than wait. */
    int rc = fcntl(l->fd, F_SETFL, fcntl(l->fd, F_GETFL) | O_NONBLOCK) < 0 ? -errno : 0;
    if (rc == 0) rc = uv_poll_init_socket(s->loop, &l->poll, l->fd);
    l->poll.data = l;
    if (rc == 0 && !l->unix_socket) {
      struct sockaddr_storage ss;
      socklen_t len = sizeof ss;
      if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0) {
        /* The local address once, for SERVER_ADDR; none for a wildcard listener (each
         * connection then asks its own socket). */
        l->port = mg_sockaddr_ip((struct sockaddr *)&ss, l->addr, sizeof l->addr);
        int wildcard = ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY)
                                               : IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr);
        if (wildcard) l->addr[0] = 0;
      }
    }
    if (rc == 0) rc = uv_poll_start(&l->poll, UV_READABLE, on_listener_readable);
    if (rc < 0) {
      mg_log(MG_LOG_ERROR, "cannot serve %s: %s", s->cfg->listens[i].text, uv_strerror(rc));
      return -1;
    }
  }
  return 0;
}

void mg_listeners_stop(mg_server_t *s) {
  for (int i = 0; i < s->nlisteners; i++) {
    /* Closed, not only stopped: the master keeps the slot's socket, whose queue the next
     * worker of this slot takes over. */
    uv_close((uv_handle_t *)&s->listeners[i].poll, NULL);
    close(s->listeners[i].fd);
  }
  uv_timer_stop(&s->accept_timer);
}

void mg_listeners_close(mg_server_t *s, uv_close_cb cb) {
  uv_close((uv_handle_t *)&s->accept_timer, cb);
  free(s->listeners);
  s->listeners = NULL;
}
