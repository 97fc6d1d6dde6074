/* loop: the state of one worker's event loop that its listeners and connections share.
 *
 * worker.c owns it (signals, drain), http/listen.c fills its listeners, http/conn.c reads it
 * (the loop, the configuration, the timeout queues, the drain flags). It is a header of its own
 * so that the connection code does not depend on the listener code that creates connections. */
#ifndef MG_LOOP_H
#define MG_LOOP_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "stream.h"
#include "timeq.h"

typedef struct mg_conn_s mg_conn_t;

typedef struct mg_listener_s {
  uv_poll_t poll; /* readable: connections wait to be accepted (listen.c accepts them itself) */
  int fd;
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
  uv_signal_t sig_term, sig_quit, sig_hup, sig_int, sig_usr1;
  uv_timer_t shutdown_timer;
  uv_timer_t accept_timer; /* accepting resumes when it fires, after descriptors ran out */
  int accept_paused;
  mg_timeq_t timeouts; /* the client connections' timeouts (http/conn.c) */
  mg_timeq_t h2_timeouts; /* HTTP/2 streams' timeouts (http/http2_stream.c) */
  struct mg_h2_session_s *h2_sessions; /* the HTTP/2 connections, for GOAWAY on drain (http/http2.c) */
  void (*on_conn_closed)(struct mg_server_s *s); /* worker.c: a drain ends with the last one */
} mg_server_t;

/* Connection bookkeeping, called by http/listen.c and http/conn.c. */
static inline void mg_server_conn_opened(mg_server_t *s) { s->nconns++; }
static inline void mg_server_conn_closed(mg_server_t *s) {
  s->nconns--;
  if (s->on_conn_closed) s->on_conn_closed(s);
}


#endif
