/* http1: the client connection, HTTP/1.1 (its limits and timeouts: docs/reference.md,
 * "Settings"; what it refuses: "Framing moongate refuses").
 *
 * A connection owns its libuv stream, its llhttp parser and its place in the timeout queues;
 * it carries one request at a time. Pipelined requests wait in the read block: the parser is
 * paused at the end of each message and resumed when the response is complete. It is the
 * sink of its requests (core/request.h: framing, backpressure, lingering close) and hands each
 * parsed head to the engine (phase.h). The listeners (listen.c) and --explain use this header. */
#ifndef MG_HTTP1_H
#define MG_HTTP1_H

#include <llhttp.h>
#include <uv.h>

#include "loop.h"
#include "request.h"

typedef struct mg_conn_s mg_conn_t;

/* A new connection with its stream handle initialized (TCP, or a unix socket). */
mg_conn_t *mg_conn_new(mg_server_t *server, int unix_socket);
uv_stream_t *mg_conn_stream(mg_conn_t *c);
/* Starts serving the accepted stream. */
void mg_conn_start(mg_conn_t *c);
/* Answers 503 (max_connections reached) and closes the connection. */
void mg_conn_reject(mg_conn_t *c);
/* The index of the listener the connection came from, in server->listeners. */
void mg_conn_set_listener(mg_conn_t *c, int index);
/* The client's address for a connection that is not a TCP socket (--explain's socketpair). */
void mg_conn_set_peer(mg_conn_t *c, const char *ip, int port);
void mg_conn_close(mg_conn_t *c);
/* Closes every connection that is between requests (stop). */
void mg_server_close_idle(mg_server_t *s);

#endif
