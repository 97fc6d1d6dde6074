/* listen: the listening sockets: bound by the master, accepted from by each worker.
 *
 * The master binds every `listen` of the configuration once (mg_listen_bind) and its workers
 * inherit the descriptors. A worker polls them (level-triggered, ACCEPT_BATCH connections a
 * turn), counts connections against max_connections (a short 503 beyond it), and when
 * descriptors run out leaves the listeners alone for a moment instead of resetting the
 * clients that wait in the queue. Each accepted socket becomes an HTTP/1.1 connection. */
#ifndef MG_LISTEN_H
#define MG_LISTEN_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "loop.h"

/* Binds a listener: TCP with SO_REUSEADDR (and SO_REUSEPORT when reuseport), or a unix
 * socket (a stale socket file is replaced). Returns the listening fd or -errno, with a
 * message in err. */
int mg_listen_bind(const mg_listen_t *l, int reuseport, char *err, size_t err_len);

/* Starts accepting on fds (one per s->cfg->listens entry) in s->loop. 0, or -1 logged. */
int mg_listeners_start(mg_server_t *s, const int *fds);
/* No more connections (a drain): the listeners' polls and descriptors are closed. */
void mg_listeners_stop(mg_server_t *s);
/* The loop ends: the last handle is closed (cb), the listener array freed. */
void mg_listeners_close(mg_server_t *s, uv_close_cb cb);

#endif
