/* server: one worker's event loop, its listeners and its connections.
 *
 * The master binds the listening sockets (mg_listen_bind) and every worker serves them from
 * its own loop (mg_server_start). The server counts connections against max_connections,
 * keeps the list of open connections so a drain can close the idle ones, and runs the
 * configuration's init_worker hooks and timers. */
#ifndef MG_SERVER_H
#define MG_SERVER_H

#include <uv.h>

#include "config.h"
#include "stream.h"

typedef struct mg_conn_s mg_conn_t;

typedef struct mg_listener_s {
  mg_stream_t h;
  struct mg_server_s *server;
  int unix_socket;
  int port;      /* local port */
  char addr[48]; /* local address when bound to one; "" for a wildcard or unix socket */
} mg_listener_t;

typedef struct mg_server_s {
  uv_loop_t *loop;
  mg_config_t *cfg;
  mg_listener_t *listeners;
  int nlisteners;
  uint64_t nconns;
  uint64_t nreqs;     /* requests started: request ids */
  uint64_t nfinished; /* requests finished */
  int draining; /* no new connections; each connection closes after its next response */
  int stopping; /* TERM/INT: idle connections close at once, and busy ones after their response */
  uv_signal_t sig_term, sig_quit, sig_hup, sig_int;
  uv_timer_t shutdown_timer;
  /* Connection timeouts (http.c): one FIFO queue per kind, one timer for all. */
#define MG_TIMEOUT_QUEUES 4
  mg_conn_t *tq_head[MG_TIMEOUT_QUEUES], *tq_tail[MG_TIMEOUT_QUEUES];
  uv_timer_t conn_timer;
  uint64_t conn_timer_due;
  int conn_timer_inited;
} mg_server_t;

/* Binds a listener: TCP with SO_REUSEADDR (and SO_REUSEPORT when reuseport), or a unix
 * socket (a stale socket file is replaced). Returns the listening fd or -errno, with a
 * message in err. */
int mg_listen_bind(const mg_listen_t *l, int reuseport, char *err, size_t err_len);

/* Serves the given listening fds (one per cfg->listens entry) until stopped. Runs
 * init_worker hooks first. Returns 0 on a clean stop. */
int mg_server_run(mg_config_t *cfg, const int *fds, int slot);

/* Connection bookkeeping, called by http.c. */
void mg_server_conn_opened(mg_server_t *s);
void mg_server_conn_closed(mg_server_t *s);

#endif
