/* conn: a client connection's bytes, whatever protocol it speaks.
 *
 * A connection owns its libuv stream (TCP or a unix socket), its TLS state (tls.h, memory
 * BIOs), the pooled block that holds plaintext not yet taken (rbuf), its place in the server's
 * timeout queues, and its writes: every write owns what it sends (a pooled block or a heap
 * buffer) until its callback. It knows no protocol. The protocol that serves it is the table
 * given to mg_conn_start (mg_conn_proto_t, HTTP/1.1's is http1.h's mg_h1_proto), and this unit
 * calls it only through that pointer, never by name, so a protocol may call this unit and no
 * cycle results.
 *
 * The listeners (listen.c), --explain and the fuzz harness make connections with mg_conn_new
 * and start them with mg_conn_start; the protocols use the rest. */
#ifndef MG_CONN_H
#define MG_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http1_parse.h"
#include "loop.h"
#include "proxy.h"
#include "stream.h"
#include "timeq.h"
#include "tls.h"

typedef struct mg_conn_s mg_conn_t;

/* The timeout kinds, each a queue of the server's timeouts (base/timeq.h). HTTP/2 uses
 * _HEADER until its first request, _BODY for a connection whose writes make no progress
 * (send_timeout), and _KEEPALIVE while it has no stream. */
enum { MG_CONN_T_NONE, MG_CONN_T_HEADER, MG_CONN_T_BODY, MG_CONN_T_KEEPALIVE, MG_CONN_T_LINGER };

/* The protocol that serves a connection. Every entry is called by this unit only. */
typedef struct mg_conn_proto_s {
  const char *name; /* "http/1.1", "h2" */
  /* The connection starts serving: 0, or a negative errno and the connection is closed. */
  int (*start)(mg_conn_t *c);
  /* Plaintext waits in c->rbuf (from c->rbuf_off to c->rbuf_len): take what may be taken now,
   * and give the block back (mg_block_put, rbuf NULL) once it is all taken. Returns 1 when the
   * connection or its request moved on and the caller must return at once, else 0. */
  int (*process)(mg_conn_t *c);
  /* Whether the protocol would take more plaintext now (the TLS layer decrypts only then). */
  int (*ready)(const mg_conn_t *c);
  /* A write's callback ran, with success, on a connection that is not closing. */
  void (*written)(mg_conn_t *c);
  /* The client ended its side: a FIN, or a TLS close_notify. */
  void (*peer_closed)(mg_conn_t *c);
  /* The client is gone (a reset, a read error, a broken TLS record): cut everything. */
  void (*gone)(mg_conn_t *c);
  /* A timeout of kind MG_CONN_T_HEADER, _BODY or _KEEPALIVE expired (a linger is this unit's). */
  void (*timeout)(mg_conn_t *c, int kind);
  /* The connection closes (once, from mg_conn_close): what the protocol holds is released.
   * c->broken says whether a write failed, so that what was in flight never reached the client. */
  void (*release)(mg_conn_t *c);
} mg_conn_proto_t;

struct mg_conn_s {
  /* HTTP/1.1's parser, embedded first so that http1.c finds its connection from the parser;
   * hp.req is the request being read or served, one at a time. */
  mg_h1_parser_t hp;
  mg_server_t *server;
  mg_timeq_entry_t tq; /* its place in the server's timeout queues (queue: MG_CONN_T_*) */
  char *rbuf;          /* block holding plaintext not yet taken, or NULL */
  uint32_t rbuf_off, rbuf_len;
  uint32_t nrequests; /* requests served so far (keepalive_requests) */
  uint16_t writes_pending;
  uint16_t remote_port;
  uint8_t remote_family; /* AF_INET, AF_INET6, or 0 for a unix socket */
  uint8_t listener;      /* index in server->listeners, MG_CONN_NO_LISTENER when none */
  uint8_t handles_open;
  /* throttled: reading paused by the protocol (mg_conn_pause_read); peer_eof: the client
   * half-closed and the protocol keeps serving; broken: a write failed. */
  uint8_t reading : 1, closing : 1, throttled : 1, lingering : 1, peer_eof : 1, broken : 1;
  /* choosing: the protocol is chosen on the first plaintext (ALPN, or the h2c preface). */
  uint8_t choosing : 1;
  uint32_t held_len;
  mg_tls_t *tls; /* NULL on a plain connection */
  uint8_t metrics_proto; /* SPEC 20: 1 + the protocol slot it is counted in (shm/metrics.h), 0: none */
  char *held;    /* bytes that leave with the next write (mg_conn_hold), or NULL */
  /* The peer's address, formatted on demand (mg_conn_remote_text): the socket's, replaced by
   * the PROXY header's source once that is read. */
  uint8_t remote[16];
  /* SPEC 19: the PROXY header still being read (a proxy_protocol listener), or NULL. No byte
   * reaches TLS or a protocol before it is complete. */
  mg_proxy_parser_t *pp;
  const mg_conn_proto_t *proto; /* NULL until mg_conn_start */
  const mg_conn_proto_t *alt;   /* HTTP/2, when the listener allows it; NULL otherwise */
  void *ps;                     /* the state of a protocol that is not embedded (HTTP/2's session) */
  /* Last: a TCP connection's struct is allocated without the extra bytes of uv_pipe_t. */
  mg_stream_t h;
};

#define MG_CONN_NO_LISTENER 255
/* At most this many bytes may be copied into a write (mg_conn_write_copy). */
#define MG_CONN_COPY_MAX 24

/* A new connection with its stream handle initialized (TCP, or a unix socket). */
mg_conn_t *mg_conn_new(mg_server_t *server, int unix_socket);
uv_stream_t *mg_conn_stream(mg_conn_t *c);
/* Starts serving the accepted stream with `proto` (TLS when its listener has it). With `alt`
 * (HTTP/2), the first plaintext decides: a TLS connection whose ALPN chose h2, or a plain one
 * that begins with the HTTP/2 preface, is served by `alt` instead. */
void mg_conn_start(mg_conn_t *c, const mg_conn_proto_t *proto, const mg_conn_proto_t *alt);
/* Answers 503 (max_connections reached) and closes the connection; it never starts. */
void mg_conn_reject(mg_conn_t *c);
/* The index of the listener the connection came from, in server->listeners. */
void mg_conn_set_listener(mg_conn_t *c, int index);
/* The client's address for a connection that is not a TCP socket (--explain's socketpair). */
void mg_conn_set_peer(mg_conn_t *c, const char *ip, int port);
/* Closes the connection: the protocol's release, then the handle. Safe to call twice; the
 * struct is freed in the handle's close callback. */
void mg_conn_close(mg_conn_t *c);
/* Closes every connection that is between requests (stop). */
void mg_server_close_idle(mg_server_t *s);

/* Feeds the plaintext the connection holds to its protocol for as long as the protocol is
 * ready, decrypting one block at a time on TLS, then reads the socket again if it should. */
void mg_conn_process(mg_conn_t *c);
/* Reading follows the connection's state: on unless rbuf holds bytes, reading is paused, the
 * peer half-closed, or the TLS layer holds a block's worth; always on while lingering. */
void mg_conn_update_reading(mg_conn_t *c);
/* Stops reading the socket; resuming processes what the connection holds first. */
void mg_conn_pause_read(mg_conn_t *c);
void mg_conn_resume_read(mg_conn_t *c);

/* Queues bufs[0..n) (n <= 4), preceded by the held bytes if there are any, in one write: what
 * the socket takes at once leaves now, the rest in one uv_write. `block` (a pooled block) and
 * `heap` (malloc'd) are released when the write completes (at once when the connection is
 * closing). On TLS the plaintext is encrypted now and the ciphertext leaves in one write. A
 * failed write sets c->broken and closes the connection. */
void mg_conn_write(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap);
/* The same, with copy[0..copy_len) (at most MG_CONN_COPY_MAX bytes, such as a chunk header
 * made on the caller's stack) copied into the write in place of bufs[0]. */
void mg_conn_write_copy(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap, const char *copy,
                        size_t copy_len);
/* Bytes (a response head) held back to leave with the next write; copied, from a free list
 * when small. There must be none held already. */
void mg_conn_hold(mg_conn_t *c, const char *data, size_t len);
/* Drops the held bytes: 1 when there were some, 0 when there were none. */
int mg_conn_drop_held(mg_conn_t *c);
/* Bytes accepted by the socket's write queue and not yet sent (backpressure). */
size_t mg_conn_queued(const mg_conn_t *c);

/* Lingering close: stops sending, reads and drops what the client still sends for a moment,
 * then closes. Closing at once with unread bytes would make the kernel answer with a reset,
 * which can destroy the response before the client has read it. */
void mg_conn_linger(mg_conn_t *c);
/* Moves the connection to the timeout queue of `kind`, due in ms (MG_CONN_T_NONE or ms 0:
 * out of every queue). A closing connection is never queued. */
void mg_conn_timer_set(mg_conn_t *c, int kind, uint64_t ms);

/* What a new request of the connection knows of its client: remote and peer (the same, until
 * realip runs), their ports, is_tls, and the listener's realip configuration. */
void mg_conn_req_client(const mg_conn_t *c, struct mg_req_s *req);
/* The client's address as text ("unix:" for a unix socket without a peer set). */
void mg_conn_remote_text(const mg_conn_t *c, char *out, size_t n);
/* The local address and port: 0, or -1 with addr "" and port 0 when it cannot be known. */
int mg_conn_local(const mg_conn_t *c, char *addr, size_t n, int *port);
/* The socket's descriptor for sendfile(2), or -1 (TLS, or no descriptor). */
int mg_conn_fd(const mg_conn_t *c);

#endif
