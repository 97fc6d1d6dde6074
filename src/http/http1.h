/* http1: HTTP/1.1 on a client connection (its limits and timeouts: docs/reference.md,
 * "Settings"; what it refuses: "Framing moongate refuses").
 *
 * The protocol a connection (conn.h) is started with: it carries one request at a time, in the
 * parser embedded in the connection. Pipelined requests wait in the read block: the parser is
 * paused at the end of each message and resumed when the response is complete. It is the sink
 * of its requests (core/request.h: framing, backpressure, keep-alive) and hands each parsed
 * head to the engine (phase.h). The listeners (listen.c), --explain and the fuzz harness start
 * connections with it: mg_conn_start(c, &mg_h1_proto, alt). */
#ifndef MG_HTTP1_H
#define MG_HTTP1_H

#include "conn.h"

extern const mg_conn_proto_t mg_h1_proto;

#endif
