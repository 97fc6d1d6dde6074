/* http2: HTTP/2 on a client connection (SPEC 18; docs/reference.md, "HTTP/2"), on libnghttp2.
 *
 * The protocol a connection (conn.h) switches to when its TLS handshake chose h2 by ALPN, or
 * when a plain listener with `http2 = true` receives the preface. One session per connection
 * (libnghttp2 for framing, HPACK and flow control); each stream that carries a request is a
 * request of the engine (http2_stream.h), which never learns which protocol carries it.
 * This unit owns the session: its options and callbacks, reading and writing (one write per
 * connection per loop turn for all its streams), the limits and flood protections, the
 * connection's timeouts, and GOAWAY on reload, stop and idle. */
#ifndef MG_HTTP2_H
#define MG_HTTP2_H

#include "conn.h"

extern const mg_conn_proto_t mg_h2_proto;

/* The worker drains (reload or stop): every HTTP/2 session gets GOAWAY; streams in flight
 * finish, and each connection closes when its last stream has. */
void mg_h2_server_drain(mg_server_t *s);

#endif
