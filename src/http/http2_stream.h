/* http2_stream: an HTTP/2 stream as a request (docs/design-http2.md, sections 5-7).
 *
 * A stream that carries a request owns the request (core/request.h) and is its sink: the
 * response head becomes a HEADERS frame (held back until the first body bytes, as HTTP/1.1's
 * is), body pieces wait in the stream until the session's data provider takes them for DATA
 * frames the windows allow, and a cut response is a RST_STREAM of this stream only. The
 * request body arrives as DATA and is given to the engine only while the request takes it;
 * the window is given back (nghttp2_session_consume) only as the bytes leave the stream, so
 * the client's window is the backpressure and a stream holds at most its window.
 *
 * The session (http2.c) makes streams, feeds them and frees them; a stream calls its session
 * only through h->wake, so that the two files have no cycle. A stream is freed only by the
 * session's collection pass (mg_h2_stream_free), never inside a sink call or an nghttp2
 * callback. */
#ifndef MG_HTTP2_STREAM_H
#define MG_HTTP2_STREAM_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conn.h"
#include "h2_fields.h"
#include "request.h"

typedef struct mg_h2_piece_s {
  struct mg_h2_piece_s *next;
  char *block, *heap; /* what owns the bytes: released with the piece */
  const char *data;
  size_t len;
} mg_h2_piece_t;

typedef struct mg_h2_session_s mg_h2_session_t;
typedef struct mg_h2_stream_s mg_h2_stream_t;

struct mg_h2_session_s {
  mg_conn_t *c;
  nghttp2_session *ng;
  void (*wake)(mg_h2_session_t *h); /* a stream has output: the session flushes this turn */
  mg_h2_stream_t *streams;          /* every stream not yet freed */
  mg_h2_stream_t *starting, **starting_tail; /* header blocks complete in this read */
  size_t out_bytes;                 /* response bytes waiting in all streams */
  uint32_t nopen;                   /* streams not yet freed */
  uint32_t nrequests;               /* requests begun (keepalive_requests) */
  uint32_t cont_frames;             /* frames of the header block being received */
  uint64_t cont_bytes;
  double glitch_tokens;             /* the flood bucket */
  uint64_t glitch_at;
  char *ob;                         /* the output block being filled */
  size_t ob_len;
  mg_h2_session_t *prev, *next;     /* the worker's sessions (drain) */
  mg_h2_session_t *flush_next;      /* the worker's flush list */
  unsigned busy;                    /* inside mem_recv, mem_send or a flush: teardown waits */
  uint64_t written_at;              /* the last time the socket took our bytes (send_timeout) */
  unsigned in_send : 1, flush_queued : 1, on_flush_list : 1, released : 1, notice_sent : 1, goaway_sent : 1, any_dead : 1,
      hdr_open : 1;
};

struct mg_h2_stream_s {
  mg_h2_session_t *h;
  mg_req_t *req; /* NULL once given back */
  int32_t id;
  mg_timeq_entry_t tq; /* client_body_timeout or send_timeout */
  mg_h2f_t f;          /* the header block as decoded */
  uint64_t over;       /* bytes decoded past the limits (an HPACK bomb) */
  /* request side */
  mg_h2_piece_t *in, **in_tail;
  size_t in_bytes;
  /* response side */
  nghttp2_nv *nva;
  size_t nnv;
  mg_h2_piece_t *out, **out_tail;
  size_t out_bytes, out_off;
  uint32_t close_error;
  unsigned end_seen : 1, paused : 1, refused : 1, head_submitted : 1, end_queued : 1, deferred : 1, started : 1,
      closed : 1, end_sent : 1, reset_by_peer : 1, send_timed_out : 1;
  mg_h2_stream_t *prev, *next, *start_next;
};

/* Stream timeouts: kinds of the server's HTTP/2 timeout queue. */
enum { MG_H2_T_NONE, MG_H2_T_BODY, MG_H2_T_SEND };

/* A stream for a request HEADERS: its request made (remote address, TLS, HTTP/2.0). */
mg_h2_stream_t *mg_h2_stream_new(mg_h2_session_t *h, int32_t id);
/* The header block is complete and well-formed: the request is checked and run. */
void mg_h2_stream_start(mg_h2_stream_t *st);
/* DATA for the request: kept until the request takes it. */
void mg_h2_stream_data(mg_h2_stream_t *st, const uint8_t *data, size_t len);
/* Gives the request what it may take now; the end of the body once all of it went. */
void mg_h2_stream_deliver(mg_h2_stream_t *st);
/* Copies the next len bytes of the response into dst, and lets them go. */
void mg_h2_stream_take(mg_h2_stream_t *st, uint8_t *dst, size_t len);
/* The bytes of the response waiting, as the request's producers see them (backpressure). */
size_t mg_h2_stream_queued(const mg_h2_stream_t *st);
/* A stream timeout expired. */
void mg_h2_stream_timeout(mg_h2_stream_t *st, int kind);
/* The stream is closed: its request finished (or discarded, when it never started) and its
 * memory freed. Called by the session's collection pass only. */
void mg_h2_stream_free(mg_h2_stream_t *st);

/* Above this many response bytes waiting in a connection's streams, every stream reports
 * itself full, so that all producers of the connection pause. */
#define MG_H2_CONN_OUT_HIGH (1024 * 1024)

#endif
