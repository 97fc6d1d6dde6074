/* http1: see http1.h.
 *
 * Reading: the connection reads into a pooled 64 KiB block and feeds it to llhttp. The parser
 * is paused (HPE_PAUSED) at two points: when a request head is complete, so the request can be
 * routed and its handler started before any body byte is delivered, and when a message is
 * complete, so a pipelined request waits in the block until the response before it is done.
 * Unparsed bytes stay in c->rbuf; the socket is read only when c->rbuf is empty and the
 * parser may go on.
 *
 * Writing: the connection is the request's sink (core/request.h): it frames the head and the
 * body pieces the response API hands it. Every write owns what it sends (a pooled block or a
 * heap buffer) until its callback. The response is complete when the handler has called
 * mg_req_send_end() and the last write has completed; then the request is logged and freed, and the connection either
 * goes on with the next request or closes. A connection that closes after a response shuts
 * down its write side and drains what the client still sends for a short while (lingering
 * close), so an unread request body cannot turn the response into a reset. */
#include "http1.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "http1_parse.h"
#include "path.h"
#include "timeq.h"
#include "phase.h"
#include "loop.h"
#include "stream.h"
#include "tls.h"

#define LINGER_MS 2000

enum { T_NONE, T_HEADER, T_BODY, T_KEEPALIVE, T_LINGER };

struct mg_conn_s {
  mg_h1_parser_t hp; /* hp.req: the request being read or served, one at a time */
  mg_server_t *server;
  mg_timeq_entry_t tq; /* its place in the server's timeout queues (queue: T_*) */
  char *rbuf; /* block holding unparsed bytes, or NULL */
  uint32_t rbuf_off, rbuf_len;
  uint32_t nrequests;
  uint16_t writes_pending;
  uint16_t remote_port;
  uint8_t remote_family; /* AF_INET, AF_INET6, or 0 for a unix socket */
  uint8_t listener;      /* index in server->listeners, NO_LISTENER when none */
  uint8_t handles_open;
  uint8_t reading : 1, closing : 1, throttled : 1, lingering : 1, peer_eof : 1;
  mg_tls_t *tls; /* NULL on a plain connection */
  char *head;    /* the response head, held back to go out with the first body bytes */
  uint32_t head_len;
  uint8_t remote[16]; /* the peer's address, formatted per request */
  /* Last: a TCP connection's struct is allocated without the extra bytes of uv_pipe_t. */
  mg_stream_t h;
};

#define NO_LISTENER 255

typedef struct {
  uv_write_t w;
  mg_conn_t *conn;
  char *block;
  char *heap;
  char *head; /* a response head sent in the same write */
  char chunk[24];
} mg_write_t;

static void conn_process(mg_conn_t *c);
static void conn_close(mg_conn_t *c);
static void conn_update_reading(mg_conn_t *c);
static void req_complete(mg_req_t *req);
static const mg_sink_t h1_sink;
static void timer_set(mg_conn_t *c, int kind, uint64_t ms);

/* ---- writing ------------------------------------------------------------------------- */

/* Response heads: built on the stack, then held in a block from a per-worker free list (one
 * byte before the head says whether it came from there) until the write that sends them is
 * done -- no malloc for the head of a common response. */
#define HEAD_BLOCK 1024
static mg_freelist_t head_list = MG_FREELIST(char[HEAD_BLOCK], 64);

static char *head_alloc(size_t n) {
  int pooled = n + 8 <= HEAD_BLOCK;
  char *p = pooled ? mg_free_get(&head_list) : mg_malloc(n + 8);
  p[0] = (char)pooled;
  return p + 8;
}

static void head_free(char *head) {
  if (!head) return;
  char *p = head - 8;
  if (p[0]) mg_free_put(&head_list, p);
  else free(p);
}

static void on_write(uv_write_t *w, int status) {
  mg_write_t *wr = (mg_write_t *)w;
  mg_conn_t *c = wr->conn;
  mg_block_put(wr->block);
  free(wr->heap);
  head_free(wr->head);
  free(wr);
  c->writes_pending--;
  if (status < 0) {
    if (c->hp.req && !c->hp.req->finished) c->hp.req->aborted = 1;
    conn_close(c);
    return;
  }
  if (c->closing) return;
  mg_req_t *req = c->hp.req;
  if (req && req->resp_ended && c->writes_pending == 0) {
    req_complete(req);
    return;
  }
  if (req && req->on_drain && uv_stream_get_write_queue_size(&c->h.stream) < MG_WRITE_LOW) {
    void (*cb)(mg_req_t *) = req->on_drain;
    req->on_drain = NULL;
    cb(req);
  }
}

/* Queues bufs (at most 4), preceded by the held-back response head if there is one, in one
 * write: a small response leaves in one syscall. `block` and `heap` are released when the
 * write completes; `chunk`, when not NULL, is copied into the write and replaces bufs[0]. */
static void conn_write_raw(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap);
static void conn_write_raw_chunk(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap, char *head,
                                 const char *chunk_hdr, size_t chunk_len);

static void conn_write_chunk(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap, const char *chunk,
                             size_t chunk_len) {
  if (c->closing) {
    mg_block_put(block);
    free(heap);
    return;
  }
  if (c->tls) {
    /* TLS: the plaintext pieces are encrypted now (memory BIOs take all of it), released at
     * once, and the ciphertext leaves in one write that owns it. */
    int bad = 0;
    if (c->head) {
      bad |= mg_tls_write(c->tls, c->head, c->head_len) < 0;
      head_free(c->head);
      c->head = NULL;
    }
    for (unsigned i = 0; i < n; i++) {
      if (chunk && i == 0) bad |= mg_tls_write(c->tls, chunk, chunk_len) < 0;
      else bad |= mg_tls_write(c->tls, bufs[i].base, bufs[i].len) < 0;
    }
    mg_block_put(block);
    free(heap);
    if (bad) {
      if (c->hp.req) c->hp.req->aborted = 1;
      conn_close(c);
      return;
    }
    size_t len;
    char *out = mg_tls_take(c->tls, &len);
    if (!out) return;
    uv_buf_t b = uv_buf_init(out, (unsigned)len);
    conn_write_raw(c, &b, 1, NULL, out);
    return;
  }
  uv_buf_t all[5];
  unsigned k = 0;
  char *head = NULL, chunk_hdr[24];
  if (c->head) {
    head = c->head;
    all[k++] = uv_buf_init(c->head, c->head_len);
    c->head = NULL;
  }
  for (unsigned i = 0; i < n; i++) all[k++] = bufs[i];
  if (chunk) {
    memcpy(chunk_hdr, chunk, chunk_len);
    all[k - n] = uv_buf_init(chunk_hdr, (unsigned)chunk_len);
  }
  if (k == 0) return;
  conn_write_raw_chunk(c, all, k, block, heap, head, chunk ? chunk_hdr : NULL, chunk_len);
}

static void conn_write_raw(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap) {
  conn_write_raw_chunk(c, all, k, block, heap, NULL, NULL, 0);
}

/* Writes all[0..k) to the socket: what the socket takes at once leaves now, the rest in one
 * uv_write that owns block, heap and head (and a copy of the chunk header at chunk_hdr). */
static void conn_write_raw_chunk(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap, char *head,
                                 const char *chunk_hdr, size_t chunk_len) {
  if (c->writes_pending == 0) {
    /* Nothing queued: try to write it all now. What leaves in this call needs no write
     * request, so nothing is allocated for it and libuv does not re-arm the socket (a
     * uv_write that completes at once still costs an EPOLL_CTL_MOD when it drains). An error
     * falls through to uv_write, which reports it from its callback, never inline. */
    int w = uv_try_write(&c->h.stream, all, k);
    if (w > 0) {
      size_t done = (size_t)w;
      unsigned i = 0;
      while (i < k && done >= all[i].len) done -= all[i].len, i++;
      if (i == k) {
        mg_block_put(block);
        free(heap);
        head_free(head);
        return;
      }
      all[i].base += done, all[i].len -= (unsigned)done;
      memmove(all, all + i, (k - i) * sizeof *all);
      k -= i;
    }
  }
  mg_write_t *wr = mg_malloc(sizeof *wr);
  wr->conn = c, wr->block = block, wr->heap = heap, wr->head = head;
  if (chunk_hdr) {
    /* The chunk header, if still unsent, must live as long as the write. */
    memcpy(wr->chunk, chunk_hdr, chunk_len);
    for (unsigned i = 0; i < k; i++)
      if (all[i].base >= chunk_hdr && all[i].base < chunk_hdr + chunk_len) all[i].base = wr->chunk + (all[i].base - chunk_hdr);
  }
  c->writes_pending++;
  int rc = uv_write(&wr->w, &c->h.stream, all, k, on_write);
  if (rc < 0) {
    /* A failed call fires no callback: undo here. */
    c->writes_pending--;
    mg_block_put(block);
    free(heap);
    head_free(wr->head);
    free(wr);
    if (c->hp.req) c->hp.req->aborted = 1;
    conn_close(c);
  }
}

static void conn_write(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap) {
  conn_write_chunk(c, bufs, n, block, heap, NULL, 0);
}

/* ---- the sink: the response on the wire ------------------------------------------------- */

static int status_has_body(int status) { return !(status < 200 || status == 204 || status == 304); }

/* The head as HTTP/1.1 frames it: Content-Length, chunked, or (HTTP/1.0) close-delimited;
 * Server, Date and Connection added. Built on the stack, held for the first body bytes. */
static void h1_head(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  const mg_settings_t *s = &req->cfg->set;
  if (c->nrequests + 1 >= s->keepalive_requests || req->server->draining) req->keepalive = 0;
  int body = status_has_body(req->status);
  if (!body) {
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
    req->resp_length = 0;
  } else if (req->resp_length < 0) { /* no Content-Length (the core read it) */
    if (req->is_head) {
      /* A HEAD response carries no body, so it needs no framing: nothing to add. */
    } else if (req->http_minor >= 1) {
      req->resp_chunked = 1;
    } else {
      req->resp_close = 1;
      req->keepalive = 0;
    }
  }
  char tmp[HEAD_BLOCK];
  mg_buf_t b;
  mg_buf_init_in(&b, tmp, sizeof tmp);
  char num[24];
  mg_buf_append(&b, "HTTP/1.1 ", 9);
  mg_buf_append(&b, num, mg_fmt_u64(num, (uint64_t)req->status));
  mg_buf_append(&b, " ", 1);
  mg_buf_puts(&b, mg_http_reason(req->status));
  mg_buf_append(&b, "\r\n", 2);
  int has_server = 0, has_date = 0;
  for (int i = 0; i < req->resp_headers.n; i++) {
    const mg_field_t *f = &req->resp_headers.v[i];
    has_server |= strcasecmp(f->name, "Server") == 0;
    has_date |= strcasecmp(f->name, "Date") == 0;
    mg_buf_puts(&b, f->name);
    mg_buf_append(&b, ": ", 2);
    mg_buf_puts(&b, f->value);
    mg_buf_append(&b, "\r\n", 2);
  }
  if (!has_server) mg_buf_puts(&b, "Server: moongate/" MG_VERSION "\r\n");
  if (!has_date) {
    mg_buf_append(&b, "Date: ", 6);
    mg_buf_puts(&b, mg_http_date_now());
    mg_buf_append(&b, "\r\n", 2);
  }
  if (req->resp_chunked) mg_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
  if (!req->keepalive) mg_buf_puts(&b, "Connection: close\r\n");
  else if (req->http_minor == 0) mg_buf_puts(&b, "Connection: keep-alive\r\n");
  mg_buf_append(&b, "\r\n", 2);
  c->head_len = (uint32_t)b.len;
  c->head = head_alloc(b.len);
  memcpy(c->head, b.data, b.len);
  mg_buf_free(&b);
}

static void h1_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  mg_conn_t *c = req->transport;
  if (req->resp_chunked) {
    uv_buf_t bufs[3];
    char hdr[24];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    bufs[0] = uv_buf_init(NULL, 0); /* replaced by the write's own copy of hdr */
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    bufs[2] = uv_buf_init("\r\n", 2);
    conn_write_chunk(c, bufs, 3, block, heap, hdr, (size_t)hl);
    return;
  }
  uv_buf_t ub = uv_buf_init((char *)data, (unsigned)len);
  conn_write(c, &ub, 1, block, heap);
}

static void h1_flush(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (c->head) conn_write(c, NULL, 0, NULL, NULL);
}

static void h1_end(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (req->resp_chunked && !req->is_head) {
    uv_buf_t ub = uv_buf_init("0\r\n\r\n", 5);
    conn_write(c, &ub, 1, NULL, NULL);
  }
  h1_flush(req);
  /* Complete now, unless the request's own message is still being parsed (a response that
   * left at once, before the parser reached the end of the request that asked for it): then
   * the end of the message completes it (conn_process), and keep-alive holds. */
  if (c->writes_pending == 0 && !c->closing && (req->msg_done || !req->keepalive)) req_complete(req);
}
static void h1_abort(mg_req_t *req) { conn_close(req->transport); }

/* The head has not left (it waits for the first body bytes): dropped. */
static int h1_retract(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (!c->head) return 0;
  head_free(c->head);
  c->head = NULL;
  return 1;
}

static size_t h1_queued(const mg_req_t *req) {
  mg_conn_t *c = req->transport;
  return uv_stream_get_write_queue_size(&c->h.stream);
}
/* ---- the request lifecycle -------------------------------------------------------------- */

/* A request on this connection: the client's address formatted once per request (nothing
 * is kept per connection). */
static mg_req_t *conn_req_new(mg_conn_t *c) {
  mg_req_t *req = mg_req_new(c->server, &h1_sink, c);
  char addr[MG_ADDR_TEXT] = "unix:";
  if (c->remote_family) mg_addr_ntop(c->remote_family, c->remote, addr, sizeof addr);
  req->remote = mg_pool_strdup(&req->pool, addr);
  req->remote_port = c->remote_port;
  req->is_tls = c->tls != NULL;
  return req;
}

/* The connection's request is done with: finished (logged) and freed, with a head it held. */
static void conn_req_end(mg_conn_t *c, mg_req_t *req) {
  mg_req_finish(req);
  if (c->hp.req == req) c->hp.req = NULL;
  head_free(c->head);
  c->head = NULL;
  mg_req_free(req);
}

/* The head is read: checked, then run. */
static void req_begin(mg_conn_t *c, mg_req_t *req) {
  if (mg_h1_check_head(&c->hp, req) < 0) return;
  const mg_settings_t *s = &req->cfg->set;
  if (s->client_body_timeout && (req->chunked || req->content_length > 0)) timer_set(c, T_BODY, s->client_body_timeout);
  else timer_set(c, T_NONE, 0);
  mg_phase_start(req);
}

static mg_req_t *on_message_begin(mg_h1_parser_t *hp) {
  mg_conn_t *c = (mg_conn_t *)hp;
  timer_set(c, T_HEADER, c->server->cfg->set.client_header_timeout);
  return conn_req_new(c);
}

static void on_body_seen(mg_h1_parser_t *hp) {
  mg_conn_t *c = (mg_conn_t *)hp;
  if (c->tq.queue == T_BODY) timer_set(c, T_BODY, c->server->cfg->set.client_body_timeout);
}

static void on_shutdown(uv_shutdown_t *sd, int status) {
  (void)status;
  free(sd);
}

/* Lingering close: stop sending, read and drop what the client still sends for a moment,
 * then close. Closing at once with unread bytes would make the kernel answer with a reset,
 * which can destroy the response before the client has read it. */
static void conn_linger(mg_conn_t *c) {
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  c->lingering = 1;
  uv_shutdown_t *sd = mg_malloc(sizeof *sd);
  if (uv_shutdown(sd, &c->h.stream, on_shutdown) < 0) {
    free(sd);
    conn_close(c);
    return;
  }
  timer_set(c, T_LINGER, LINGER_MS);
  conn_update_reading(c);
}

void mg_conn_reject(mg_conn_t *c) {
  static char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
      "Connection: close\r\n\r\n503 Service Unavailable\n";
  uv_buf_t b = uv_buf_init(busy, sizeof busy - 1);
  conn_write(c, &b, 1, NULL, NULL);
  conn_linger(c);
}

static void req_complete(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  int keep = req->keepalive && req->msg_done && !req->aborted;
  conn_req_end(c, req);
  c->nrequests++;
  /* The head already told the client whether the connection stays open; a drain that began
   * since then is honoured on the next response, except when stopping. */
  if (!keep || c->server->stopping) {
    conn_linger(c);
    return;
  }
  llhttp_resume(&c->hp.llhttp);
  timer_set(c, T_KEEPALIVE, c->server->cfg->set.keepalive_timeout);
  conn_process(c);
}

static void h1_continue(mg_req_t *req) {
  static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  uv_buf_t ub = uv_buf_init(cont, sizeof cont - 1);
  conn_write(req->transport, &ub, 1, NULL, NULL);
}

static void h1_pause_body(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  c->throttled = 1;
  conn_update_reading(c);
}

static void h1_resume_body(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (!c->throttled) return;
  c->throttled = 0;
  conn_process(c);
}

/* Parses what the connection holds for its request (after the engine held the body). Safe
 * to call when the request has already ended: the connection outlives this call. */
static void h1_kick(void *transport) {
  mg_conn_t *c = transport;
  if (c->closing) return;
  mg_req_t *req = c->hp.req;
  if (!c->rbuf && req && req->head_done && !req->msg_done && !req->hold_body) {
    /* A message without a body completes without another byte: run the parser on nothing. */
    c->rbuf = mg_block_get();
    c->rbuf_off = c->rbuf_len = 0;
  }
  conn_process(c);
}

/* ---- the connection ---------------------------------------------------------------------- */

/* Timeouts: the server's timeout queues (base/timeq.h), one per kind. */
static mg_conn_t *conn_of(mg_timeq_entry_t *e) { return (mg_conn_t *)((char *)e - offsetof(mg_conn_t, tq)); }

static void on_conn_timeout(mg_timeq_t *q, mg_timeq_entry_t *e, int kind) {
  (void)q;
  mg_conn_t *c = conn_of(e);
  mg_req_t *req = c->hp.req;
  if (kind == T_HEADER && req && !req->head_sent) {
    req->keepalive = 0;
    if (!req->target) req->target = mg_pool_strdup(&req->pool, "-");
    mg_req_error(req, 408, "client_header_timeout: request head not received in time");
  } else if (kind == T_BODY && req && !req->head_sent) {
    req->keepalive = 0;
    mg_req_error(req, 408, "client_body_timeout: request body not received in time");
  } else {
    conn_close(c);
  }
}

static void timer_set(mg_conn_t *c, int kind, uint64_t ms) {
  mg_server_t *s = c->server;
  if (!s->timeouts.loop) mg_timeq_init(&s->timeouts, s->loop, on_conn_timeout);
  mg_timeq_set(&s->timeouts, &c->tq, c->closing ? T_NONE : kind, ms);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  buf->base = mg_block_get();
  buf->len = MG_BLOCK_SIZE;
}

/* The client went away: a request still in progress is cut off. */
static void conn_gone(mg_conn_t *c) {
  mg_req_t *req = c->hp.req;
  if (req && !req->finished) {
    req->aborted = 1;
    if (!req->msg_done)
      mg_log_error(MG_LOG_INFO, req->id, "client %s closed the connection before the request was complete",
                   req->remote);
    else if (req->thread)
      mg_log_error(MG_LOG_INFO, req->id, "client %s closed the connection while Lua code waited: abandoned",
                   req->remote);
  }
  conn_close(c);
}

/* The client ended its side (a FIN, or a TLS close_notify). After a complete request that is a
 * half-close, which HTTP/1.0 clients may do: the response still goes out and the connection
 * closes after it. But Lua code waiting for that request is abandoned as for a client that
 * went away (nginx with lua_check_client_abort), so that a client that leaves does not hold
 * a descriptor and a coroutine for the whole wait. */
static void conn_peer_closed(mg_conn_t *c) {
  mg_req_t *req = c->hp.req;
  if (req && req->msg_done && !req->finished && !c->rbuf && !req->thread) {
    c->peer_eof = 1;
    req->keepalive = 0;
    conn_update_reading(c);
    return;
  }
  conn_gone(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  mg_conn_t *c = s->data;
  if (nread <= 0) {
    mg_block_put(buf->base);
    if (nread == 0) return;
    if (c->lingering) {
      conn_close(c);
      return;
    }
    if (nread == UV_EOF) conn_peer_closed(c);
    else conn_gone(c);
    return;
  }
  if (c->lingering) {
    mg_block_put(buf->base);
    return;
  }
  if (c->tls) {
    /* Ciphertext: into the TLS layer; conn_process decrypts what the parser may take. */
    mg_tls_feed(c->tls, buf->base, (size_t)nread);
    mg_block_put(buf->base);
    conn_process(c);
    return;
  }
  c->rbuf = buf->base;
  c->rbuf_off = 0;
  c->rbuf_len = (uint32_t)nread;
  conn_process(c);
}

static void conn_update_reading(mg_conn_t *c) {
  if (c->closing) return;
  /* The socket stays in the read set while a request is served (stopping and restarting
   * would cost two epoll_ctl calls per request); bytes that arrive meanwhile (a pipelined
   * request) wait in rbuf, and reading stops only then. */
  int want = c->lingering || (!c->rbuf && !c->throttled && !c->peer_eof &&
                               !(c->tls && mg_tls_buffered(c->tls) >= MG_BLOCK_SIZE));
  if (want && !c->reading) {
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0) c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop(&c->h.stream);
    c->reading = 0;
  }
}

static void parse_error(mg_conn_t *c) {
  int status;
  const char *why = mg_h1_error(&c->hp, &status);
  if (!c->hp.req) c->hp.req = conn_req_new(c);
  mg_req_t *req = c->hp.req;
  if (!req->target) req->target = mg_pool_strdup(&req->pool, "-");
  if (!req->orig_method) req->orig_method = "-";
  req->keepalive = 0;
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  if (req->head_sent) {
    mg_req_abort(req, why);
    return;
  }
  mg_req_stop(req);
  req->msg_done = 1;
  /* llhttp's reason says it in words; its error name (HPE_...) would mean nothing to a user. */
  mg_req_error(req, status, "bad request: %s", why);
}

/* Feeds buffered bytes to the parser for as long as the current request lets it. */
/* Ciphertext the TLS layer made (handshake, alerts) goes to the socket as it is. */
static void tls_flush(mg_conn_t *c) {
  size_t len;
  char *out = mg_tls_take(c->tls, &len);
  if (!out) return;
  uv_buf_t b = uv_buf_init(out, (unsigned)len);
  conn_write_raw(c, &b, 1, NULL, out);
}

/* Decrypts one block of plaintext into rbuf. Returns 1 when it did. A failed handshake or a
 * broken record (garbage from a client) closes the connection at once; a close_notify is the
 * client's end of stream. */
static int tls_fill(mg_conn_t *c) {
  char *blk = mg_block_get();
  int st;
  size_t n = mg_tls_read(c->tls, blk, MG_BLOCK_SIZE, &st);
  tls_flush(c);
  if (n > 0) {
    c->rbuf = blk, c->rbuf_off = 0, c->rbuf_len = (uint32_t)n;
    return 1;
  }
  mg_block_put(blk);
  if (st == MG_TLS_CLOSED) conn_peer_closed(c);
  else if (st == MG_TLS_ERROR) conn_gone(c);
  return 0;
}

static int parse_allowed(const mg_conn_t *c) {
  return !c->closing && !c->throttled && !(c->hp.req && (c->hp.req->msg_done || c->hp.req->hold_body));
}

/* Parses what rbuf holds for as long as the current request lets it. Returns 1 when the
 * connection or its request moved on and the caller must return at once. */
static int conn_parse(mg_conn_t *c) {
  while (c->rbuf && !c->closing && !c->throttled && !(c->hp.req && (c->hp.req->msg_done || c->hp.req->hold_body))) {
    char *start = c->rbuf + c->rbuf_off;
    size_t n;
    llhttp_errno_t err = mg_h1_execute(&c->hp, start, c->rbuf_len - c->rbuf_off, &n);
    if (err == HPE_OK && start + n < c->rbuf + c->rbuf_len) {
      c->rbuf_off += (uint32_t)n;
      continue;
    }
    if (err == HPE_OK) {
      mg_block_put(c->rbuf);
      c->rbuf = NULL;
      break;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      parse_error(c);
      return 1;
    }
    c->rbuf_off = (uint32_t)(llhttp_get_error_pos(&c->hp.llhttp) - c->rbuf);
    if (err == HPE_PAUSED_UPGRADE) {
      /* Upgrades are not supported: the request was served as a plain one; nothing after it
       * on this connection can be read as HTTP. */
      mg_block_put(c->rbuf);
      c->rbuf = NULL;
      if (c->hp.req) c->hp.req->keepalive = 0;
      break;
    }
    int ev = c->hp.event;
    c->hp.event = MG_H1_NONE;
    mg_req_t *req = c->hp.req;
    if (ev == MG_H1_MESSAGE) {
      /* Stay paused: the next pipelined request waits until this response is complete. */
      req->msg_done = 1;
      if (c->tq.queue == T_BODY || c->tq.queue == T_HEADER) timer_set(c, T_NONE, 0);
      if (req->on_body_end && !req->finished) req->on_body_end(req);
      if (c->closing) return 1;
      if (req->resp_ended && c->writes_pending == 0 && c->hp.req == req) {
        req_complete(req);
        return 1;
      }
      break;
    }
    llhttp_resume(&c->hp.llhttp);
    if (ev == MG_H1_HEAD) {
      req_begin(c, req);
      if (c->closing) return 1;
    }
  }
  if (c->rbuf && c->rbuf_off >= c->rbuf_len) {
    mg_block_put(c->rbuf);
    c->rbuf = NULL;
  }
  return 0;
}

/* Feeds buffered bytes to the parser for as long as the current request lets it. On a TLS
 * connection the plaintext is decrypted a block at a time, only while the parser may go on, so
 * a held or throttled request holds its ciphertext as a plain one holds its bytes. */
static void conn_process(mg_conn_t *c) {
  /* Until decrypting was tried once with rbuf empty: a call made while rbuf still held the
   * end of a request (a response finished inside the parse) must still look at what the TLS
   * layer holds, such as a close_notify, for no socket read will come to ask again. */
  int tried = 0;
  for (;;) {
    int filled = 0;
    if (c->tls && !c->rbuf && parse_allowed(c)) {
      filled = tls_fill(c);
      tried = 1;
      if (c->closing) return;
    }
    if (conn_parse(c)) return;
    if (c->rbuf || !parse_allowed(c) || (!filled && (tried || !c->tls))) break;
  }
  conn_update_reading(c);
}

/* Connections come from their own slab, not from malloc: long-lived connection structs
 * interleaved with short-lived request memory would pin the pages of every request that was in
 * flight at a peak, and idle connections would look kilobytes large. The slab only grows, to
 * the peak number of connections; freed structs are reused first. */
#define SLAB_CHUNK (64 * 1024)
static void *conn_free_list[2]; /* [0]: TCP, [1]: unix socket */

static size_t conn_size(int pipe) {
  size_t handle = pipe ? sizeof(uv_pipe_t) : sizeof(uv_tcp_t);
  return (offsetof(mg_conn_t, h) + handle + 15) & ~(size_t)15;
}

static mg_conn_t *conn_alloc(int pipe) {
#ifdef MG_NO_POOLS
  return mg_calloc(1, sizeof(mg_conn_t));
#endif
  size_t size = conn_size(pipe);
  if (!conn_free_list[pipe]) {
    char *chunk = mg_malloc(SLAB_CHUNK);
    for (size_t off = 0; off + size <= SLAB_CHUNK; off += size) {
      *(void **)(chunk + off) = conn_free_list[pipe];
      conn_free_list[pipe] = chunk + off;
    }
  }
  mg_conn_t *c = conn_free_list[pipe];
  conn_free_list[pipe] = *(void **)c;
  memset(c, 0, size);
  return c;
}

static void conn_release(mg_conn_t *c, int pipe) {
#ifdef MG_NO_POOLS
  (void)pipe;
  free(c);
  return;
#endif
  *(void **)c = conn_free_list[pipe];
  conn_free_list[pipe] = c;
}

static void on_close(uv_handle_t *h) {
  mg_conn_t *c = h->data;
  if (--c->handles_open > 0) return;
  conn_release(c, h->type == UV_NAMED_PIPE);
}

static void conn_close(mg_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  mg_timeq_remove(&c->server->timeouts, &c->tq);
  if (c->hp.req) {
    mg_req_t *req = c->hp.req;
    if (!req->resp_ended) req->aborted = 1;
    conn_req_end(c, req);
  }
  head_free(c->head);
  c->head = NULL;
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  mg_tls_free(c->tls);
  c->tls = NULL;
  mg_server_conn_closed(c->server);
  uv_close(&c->h.handle, on_close);
}

mg_conn_t *mg_conn_new(mg_server_t *server, int unix_socket) {
  mg_conn_t *c = conn_alloc(unix_socket);
  c->server = server;
  c->listener = NO_LISTENER;
  if (unix_socket) uv_pipe_init(server->loop, &c->h.pipe, 0);
  else uv_tcp_init(server->loop, &c->h.tcp);
  c->h.handle.data = c;
  c->handles_open = 1;
  mg_h1_init(&c->hp, &server->cfg->set);
  c->hp.begin = on_message_begin;
  c->hp.body_seen = on_body_seen;
  return c;
}

uv_stream_t *mg_conn_stream(mg_conn_t *c) { return &c->h.stream; }

static int h1_socket_fd(const mg_req_t *req) {
  mg_conn_t *c = req->transport;
  uv_os_fd_t fd;
  if (c->tls || uv_fileno(&c->h.handle, &fd) < 0) return -1;
  return fd;
}
void mg_conn_start(mg_conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (c->h.handle.type == UV_TCP && uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
    c->remote_family = (uint8_t)ss.ss_family;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)&ss;
      memcpy(c->remote, &in->sin_addr, 4);
      c->remote_port = ntohs(in->sin_port);
    } else {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
      memcpy(c->remote, &in6->sin6_addr, 16);
      c->remote_port = ntohs(in6->sin6_port);
    }
    uv_tcp_nodelay(&c->h.tcp, 1);
  }
  /* A TLS listener: the handshake runs under the same client_header_timeout as a request
   * head, so a stalled handshake costs no more than a slow plain client. */
  if (c->listener != NO_LISTENER && c->server->cfg->listens[c->listener].tls)
    c->tls = mg_tls_new(c->server->cfg->listens[c->listener].tls);
  timer_set(c, T_HEADER, c->server->cfg->set.client_header_timeout);
  conn_update_reading(c);
}

void mg_server_close_idle(mg_server_t *s) {
  /* Idle keep-alive connections are exactly the ones waiting in the keep-alive queue. */
  mg_timeq_entry_t *e;
  while ((e = mg_timeq_first(&s->timeouts, T_KEEPALIVE))) conn_close(conn_of(e));
}

void mg_conn_close(mg_conn_t *c) { conn_close(c); }

void mg_conn_set_listener(mg_conn_t *c, int index) { c->listener = (uint8_t)index; }

static int h1_local(const mg_req_t *req, char *addr, size_t n, int *port) {
  const mg_conn_t *c = req->transport;
  /* A listener bound to one address knows the answer without a syscall. */
  const mg_listener_t *l = c->listener == NO_LISTENER ? NULL : &c->server->listeners[c->listener];
  if (l && l->addr[0]) {
    size_t k = strnlen(l->addr, n - 1);
    memcpy(addr, l->addr, k);
    addr[k] = 0;
    *port = l->port;
    return 0;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  *port = 0;
  if (c->h.handle.type != UV_TCP || uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) != 0) {
    snprintf(addr, n, "%s", "");
    return -1;
  }
  *port = mg_sockaddr_ip((struct sockaddr *)&ss, addr, n);
  return 0;
}

void mg_conn_set_peer(mg_conn_t *c, const char *ip, int port) {
  if (inet_pton(AF_INET, ip, c->remote) == 1) c->remote_family = AF_INET;
  else if (inet_pton(AF_INET6, ip, c->remote) == 1) c->remote_family = AF_INET6;
  c->remote_port = (uint16_t)port;
}

/* A client that only half-closed (peer_eof) still reads the response: not gone. */
static int h1_peer_gone(const mg_req_t *req) {
  const mg_conn_t *c = req->transport;
  return c->closing;
}

static const mg_sink_t h1_sink = {
    .name = "http/1.1",
    .head = h1_head,
    .body = h1_body,
    .end = h1_end,
    .abort = h1_abort,
    .retract = h1_retract,
    .flush = h1_flush,
    .queued = h1_queued,
    .pause_body = h1_pause_body,
    .resume_body = h1_resume_body,
    .send_continue = h1_continue,
    .kick = h1_kick,
    .peer_gone = h1_peer_gone,
    .socket_fd = h1_socket_fd,
    .local = h1_local,
};
