/* http: see http.h.
 *
 * Reading: the connection reads into a pooled 64 KiB block and feeds it to llhttp. The parser
 * is paused (HPE_PAUSED) at two points: when a request head is complete, so the request can be
 * routed and its handler started before any body byte is delivered, and when a message is
 * complete, so a pipelined request waits in the block until the response before it is done.
 * Unparsed bytes stay in c->rbuf; the socket is read only when c->rbuf is empty and the
 * parser may go on.
 *
 * Writing: every write owns what it sends (a pooled block or a heap buffer) until its
 * callback. The response is complete when the handler has called mg_req_send_end() and the
 * last write has completed; then the request is logged and freed, and the connection either
 * goes on with the next request or closes. A connection that closes after a response shuts
 * down its write side and drains what the client still sends for a short while (lingering
 * close), so an unread request body cannot turn the response into a reset. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "lua_request.h"
#include "path.h"
#include "phase.h"
#include "loop.h"
#include "stream.h"
#include "tls.h"

#define LINGER_MS 2000

enum { EV_NONE, EV_HEADERS, EV_MESSAGE };
enum { T_NONE, T_HEADER, T_BODY, T_KEEPALIVE, T_LINGER };

struct mg_conn_s {
  llhttp_t parser;
  mg_server_t *server;
  mg_conn_t *tnext, *tprev; /* the server's timeout queue this connection waits in */
  mg_req_t *req;
  char *rbuf; /* block holding unparsed bytes, or NULL */
  uint32_t rbuf_off, rbuf_len;
  uint32_t nrequests;
  uint32_t deadline; /* loop time (ms, modulo 2^32) at which its timeout fires */
  uint16_t writes_pending;
  uint16_t error_status; /* set by a parser callback that refuses the request */
  const char *error_reason; /* and why (llhttp keeps its own reason for *_complete callbacks) */
  uint16_t remote_port;
  uint8_t remote_family; /* AF_INET, AF_INET6, or 0 for a unix socket */
  uint8_t listener;      /* index in server->listeners, NO_LISTENER when none */
  uint8_t event, timer_kind, handles_open;
  uint8_t reading : 1, closing : 1, throttled : 1, lingering : 1, peer_eof : 1;
  uint8_t in_length_value : 1; /* the parser is inside a request's Content-Length value */
  /* The last byte other than SP/HT that the parser consumed before the buffer it is
   * executing now (exec_start): how an obs-fold is told from a value split across reads. */
  char last_nonws;
  char tail[8]; /* the last 8 bytes consumed before exec_start, in order: [7] is the last */
  const char *exec_start;
  mg_tls_t *tls; /* NULL on a plain connection */
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
static void req_cancel_handler(mg_req_t *req);
static void timer_set(mg_conn_t *c, int kind, uint64_t ms);

/* ---- small helpers ------------------------------------------------------------------- */

uint64_t mg_now_ms(void) { return uv_hrtime() / 1000000; }

const char *mg_http_date(char *out, size_t n, int64_t t) {
  struct tm tm;
  time_t tt = (time_t)t;
  gmtime_r(&tt, &tm);
  strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return out;
}

/* The Date header changes once a second; format it only then. */
static const char *date_now(void) {
  static char buf[40];
  static time_t last;
  time_t now = time(NULL);
  if (now != last) mg_http_date(buf, sizeof buf, now), last = now;
  return buf;
}

const char *mg_fields_get(const mg_fields_t *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) return f->v[i].value;
  return NULL;
}

const char *mg_fields_join(mg_pool_t *p, const mg_fields_t *f, const char *name, const char *sep) {
  const char *first = NULL;
  size_t total = 0, count = 0, sl = strlen(sep);
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) {
      if (!first) first = f->v[i].value;
      total += strlen(f->v[i].value) + sl, count++;
    }
  if (count <= 1) return first;
  char *out = mg_pool_alloc(p, total + 1), *o = out;
  size_t joined = 0;
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) {
      /* Counted, not inferred from the output so far: empty values keep their separators. */
      if (joined++) memcpy(o, sep, sl), o += sl;
      size_t l = strlen(f->v[i].value);
      memcpy(o, f->v[i].value, l), o += l;
    }
  *o = 0;
  return out;
}

void mg_fields_add(mg_pool_t *p, mg_fields_t *f, const char *name, size_t nl, const char *value, size_t vl) {
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 16;
    mg_field_t *v = mg_pool_alloc(p, sizeof(mg_field_t) * (size_t)cap);
    if (f->n) memcpy(v, f->v, sizeof(mg_field_t) * (size_t)f->n);
    f->v = v, f->cap = cap;
  }
  f->v[f->n].name = mg_pool_strndup(p, name, nl);
  f->v[f->n].value = mg_pool_strndup(p, value, vl);
  f->n++;
}

void mg_fields_set(mg_pool_t *p, mg_fields_t *f, const char *name, const char *value) {
  int k = 0;
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) != 0) f->v[k++] = f->v[i];
  f->n = k;
  if (value) mg_fields_add(p, f, name, strlen(name), value, strlen(value));
}

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
    if (c->req && !c->req->finished) c->req->aborted = 1;
    conn_close(c);
    return;
  }
  if (c->closing) return;
  mg_req_t *req = c->req;
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
    mg_req_t *req = c->req;
    int bad = 0;
    if (req && req->head) {
      bad |= mg_tls_write(c->tls, req->head, req->head_len) < 0;
      head_free(req->head);
      req->head = NULL;
    }
    for (unsigned i = 0; i < n; i++) {
      if (chunk && i == 0) bad |= mg_tls_write(c->tls, chunk, chunk_len) < 0;
      else bad |= mg_tls_write(c->tls, bufs[i].base, bufs[i].len) < 0;
    }
    mg_block_put(block);
    free(heap);
    if (bad) {
      if (c->req) c->req->aborted = 1;
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
  mg_req_t *req = c->req;
  if (req && req->head) {
    head = req->head;
    all[k++] = uv_buf_init(req->head, req->head_len);
    req->head = NULL;
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
    if (c->req) c->req->aborted = 1;
    conn_close(c);
  }
}

static void conn_write(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap) {
  conn_write_chunk(c, bufs, n, block, heap, NULL, 0);
}

/* Sends the held-back head now (before sendfile, or when there is no body). */
void mg_req_flush(mg_req_t *req) {
  if (req->head && !req->sink) conn_write(req->conn, NULL, 0, NULL, NULL);
}

size_t mg_req_write_queue(mg_req_t *req) {
  return req->sink ? 0 : uv_stream_get_write_queue_size(&req->conn->h.stream);
}

void mg_req_on_drain(mg_req_t *req, void (*cb)(mg_req_t *req)) { req->on_drain = cb; }

static int status_has_body(int status) { return !(status < 200 || status == 204 || status == 304); }

void mg_req_send_head(mg_req_t *req) {
  mg_conn_t *c = req->conn;
  if (req->head_sent) return;
  if (mg_lua_has_phase(req, MG_PHASE_HEADER_FILTER)) mg_lua_header_filter(req);
  static const char failed[] = "500 Internal Server Error\n";
  if (!req->filter_failed && (req->status < 200 || req->status > 999)) {
    /* The last guard, whoever set the status: a 1xx sent as the final answer would make the
     * client read the next response on the connection as this one's body. */
    mg_log_error(MG_LOG_ERROR, req->id, "response status %d is not a final status: answered 500 instead",
                 req->status);
    req->filter_failed = 1;
  }
  if (req->filter_failed) {
    /* The response becomes a 500 page; whatever body the handler still produces is dropped
     * because the page's Content-Length is already reached. */
    req->status = 500;
    req->resp_headers.n = 0;
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Type", "text/plain");
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", "26");
    req->keepalive = 0;
  }
  req->head_sent = 1;
  if (!req->filter_failed && !req->body_filter_off && !req->is_head && status_has_body(req->status) &&
      mg_lua_has_phase(req, MG_PHASE_BODY_FILTER)) {
    /* The filters may change the body's length: the response is chunked (or close-delimited). */
    req->body_filtered = 1;
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
  }
  const mg_settings_t *s = &req->cfg->set;
  if (c->nrequests + 1 >= s->keepalive_requests || req->server->draining) req->keepalive = 0;
  int body = status_has_body(req->status);
  const char *cl = mg_fields_get(&req->resp_headers, "Content-Length");
  req->resp_length = -1;
  if (cl) req->resp_length = strtoll(cl, NULL, 10);
  if (req->sink) {
    /* A captured response (subrequest) has no framing of its own. */
    if (!body) req->resp_length = 0;
    req->sink->head(req);
    if (req->filter_failed && !req->is_head) {
      req->bytes_sent = sizeof failed - 1;
      req->sink->body(req, NULL, failed, sizeof failed - 1);
    }
    return;
  }
  if (!body) {
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
    req->resp_length = 0;
  } else if (!cl) {
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
    mg_buf_puts(&b, date_now());
    mg_buf_append(&b, "\r\n", 2);
  }
  if (req->resp_chunked) mg_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
  if (!req->keepalive) mg_buf_puts(&b, "Connection: close\r\n");
  else if (req->http_minor == 0) mg_buf_puts(&b, "Connection: keep-alive\r\n");
  mg_buf_append(&b, "\r\n", 2);
  if (req->filter_failed && !req->is_head) {
    mg_buf_append(&b, failed, sizeof failed - 1);
    req->bytes_sent = sizeof failed - 1;
  }
  req->head_len = (uint32_t)b.len;
  req->head = head_alloc(b.len);
  memcpy(req->head, b.data, b.len);
  mg_buf_free(&b);
}

/* Sends len bytes at data, owned by `block` (a pooled block) or `heap` (malloc'd), either
 * released when the write is done. */
static void body_out(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  if (req->resp_length >= 0 && req->bytes_sent + len > (uint64_t)req->resp_length) {
    /* More than the Content-Length promised: the excess cannot be framed; drop it. */
    len = (size_t)((uint64_t)req->resp_length - req->bytes_sent);
    if (len == 0) {
      mg_block_put(block);
      free(heap);
      return;
    }
  }
  req->bytes_sent += len;
  if (req->sink) {
    req->sink->body(req, block, data, len);
    free(heap);
    return;
  }
  if (req->resp_chunked) {
    uv_buf_t bufs[3];
    char hdr[24];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    bufs[0] = uv_buf_init(NULL, 0); /* replaced by the write's own copy of hdr */
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    bufs[2] = uv_buf_init("\r\n", 2);
    conn_write_chunk(req->conn, bufs, 3, block, heap, hdr, (size_t)hl);
    return;
  }
  uv_buf_t ub = uv_buf_init((char *)data, (unsigned)len);
  conn_write(req->conn, &ub, 1, block, heap);
}

/* A body piece through the body_filter hooks (eof on the last call). Returns -1 when a hook
 * failed: the response is cut (its head is out). */
static int filtered_out(mg_req_t *req, const char *data, size_t len, int eof) {
  char *out;
  size_t ol;
  if (mg_lua_body_filter(req, data, len, eof, &out, &ol) < 0) {
    if (req->head && req->bytes_sent == 0 && !req->sink) {
      /* Nothing is on the wire yet (the head waits for the first bytes): the handler stops
       * and the client gets a clean 500, as for any Lua error before the head is sent. */
      head_free(req->head);
      req->head = NULL;
      req->head_sent = 0, req->body_filtered = 0, req->body_filter_off = 1;
      req_cancel_handler(req);
      req->keepalive = 0;
      mg_req_error(req, 500, NULL);
      return -1;
    }
    mg_req_abort(req, "body_filter hook failed");
    return -1;
  }
  if (ol) body_out(req, NULL, out, out, ol);
  else free(out);
  return 0;
}

void mg_req_send_body(mg_req_t *req, char *block, const char *data, size_t len) {
  if (!req->head_sent) mg_req_send_head(req);
  if (req->is_head || !status_has_body(req->status) || len == 0 || req->aborted) {
    mg_block_put(block);
    return;
  }
  if (req->body_filtered) {
    filtered_out(req, data, len, 0);
    mg_block_put(block);
    return;
  }
  body_out(req, block, NULL, data, len);
}

void mg_req_send_end(mg_req_t *req) {
  mg_conn_t *c = req->conn;
  if (!req->head_sent) mg_req_send_head(req);
  if (req->body_filtered) {
    /* The last call, with eof: a filter may still add its tail. */
    req->body_filtered = 0;
    if (filtered_out(req, "", 0, 1) < 0) return;
  }
  if (req->resp_length >= 0 && !req->is_head && status_has_body(req->status) &&
      req->bytes_sent < (uint64_t)req->resp_length) {
    mg_req_abort(req, "response shorter than its Content-Length");
    return;
  }
  if (req->sink) {
    req->resp_ended = 1;
    req->sink->end(req);
    return;
  }
  if (req->resp_chunked && !req->is_head) {
    uv_buf_t ub = uv_buf_init("0\r\n\r\n", 5);
    conn_write(c, &ub, 1, NULL, NULL);
  }
  mg_req_flush(req);
  req->resp_ended = 1;
  /* Complete now, unless the request's own message is still being parsed (a response that
   * left at once, before the parser reached the end of the request that asked for it): then
   * the end of the message completes it (conn_process), and keep-alive holds. */
  if (c->writes_pending == 0 && !c->closing && (req->msg_done || !req->keepalive)) req_complete(req);
}

void mg_req_abort(mg_req_t *req, const char *why) {
  if (why) mg_log_error(MG_LOG_ERROR, req->id, "response aborted: %s, client %s", why, req->remote);
  req->aborted = 1;
  if (req->sink) {
    req->sink->abort(req);
    return;
  }
  conn_close(req->conn);
}

void mg_req_respond(mg_req_t *req, int status, const char *content_type, const char *body, size_t len) {
  req->status = status;
  char lenstr[24];
  lenstr[mg_fmt_u64(lenstr, len)] = 0;
  if (content_type) mg_fields_set(&req->pool, &req->resp_headers, "Content-Type", content_type);
  mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", lenstr);
  mg_req_send_head(req);
  if (req->body_filtered) {
    if (len && filtered_out(req, body, len, 0) < 0) return;
    mg_req_send_end(req);
    return;
  }
  if (req->sink) {
    if (len && !req->is_head && !req->filter_failed && status_has_body(req->status)) {
      req->bytes_sent += len;
      req->sink->body(req, NULL, body, len);
    }
    mg_req_send_end(req);
    return;
  }
  if (len && !req->is_head && !req->filter_failed && status_has_body(req->status)) {
    char *copy = mg_malloc(len);
    memcpy(copy, body, len);
    req->bytes_sent += len;
    uv_buf_t ub = uv_buf_init(copy, (unsigned)len);
    conn_write(req->conn, &ub, 1, NULL, copy);
  }
  mg_req_send_end(req);
}

void mg_req_error(mg_req_t *req, int status, const char *fmt, ...) {
  if (fmt) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mg_log_error(status >= 500 ? MG_LOG_ERROR : MG_LOG_INFO, req->id, "%s, client %s, request \"%s %s\"", msg,
                 req->remote, req->orig_method ? req->orig_method : "-", req->target ? req->target : "-");
  }
  if (req->head_sent) {
    mg_req_abort(req, NULL);
    return;
  }
  /* An error response replaces whatever the handler had prepared. */
  req->resp_headers.n = 0;
  char body[128];
  int n = snprintf(body, sizeof body, "%d %s\n", status, mg_http_reason(status));
  /* A request whose body was not read cannot be followed by another on this connection. */
  if (!req->msg_done) req->keepalive = 0;
  mg_req_respond(req, status, "text/plain", body, (size_t)n);
}

/* ---- the request lifecycle -------------------------------------------------------------- */

/* Requests come from a per-worker free list; only the fields before the parser's scratch
 * buffer are zeroed: the buffer stays with a reused struct, and the pool's inline storage
 * (2 KiB of the struct's 2.6) needs no clearing. */
static mg_freelist_t req_free_list = MG_FREELIST(mg_req_t, 64);
/* A scratch buffer larger than this (a long URL or header) is not kept past the head. */
#define SCRATCH_KEEP 4096

static mg_req_t *req_new(mg_conn_t *c) {
  mg_req_t *req = mg_free_take(&req_free_list);
  if (req) {
    req->scratch.len = 0;
  } else {
    req = mg_malloc(sizeof *req);
    mg_buf_init(&req->scratch);
  }
  memset(req, 0, offsetof(mg_req_t, scratch));
  mg_pool_init(&req->pool);
  req->conn = c;
  req->server = c->server;
  req->cfg = c->server->cfg;
  req->start_ns = uv_hrtime();
  /* Request ids are "<worker pid>-<counter>"; the pid is read once per worker. */
  static pid_t pid;
  if (!pid) pid = getpid();
  static char prefix[12];
  static size_t prefix_len;
  if (!prefix_len) {
    prefix_len = mg_fmt_hex(prefix, (uint64_t)pid);
    prefix[prefix_len++] = '-';
  }
  memcpy(req->id, prefix, prefix_len);
  req->id[prefix_len + mg_fmt_hex(req->id + prefix_len, ++c->server->nreqs)] = 0;
  req->content_length = -1;
  req->status = 200;
  req->env_ref = req->ctx_ref = req->self_ref = req->res_ref = req->hdr_ref[0] = req->hdr_ref[1] = LUA_NOREF;
  req->resp_length = -1;
  mg_body_init(&req->body);
  char addr[INET6_ADDRSTRLEN] = "unix:";
  if (c->remote_family == AF_INET) {
    /* Four numbers: cheaper than inet_ntop's sprintf, and nothing kept per connection. */
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
      if (i) addr[n++] = '.';
      n += mg_fmt_u64(addr + n, c->remote[i]);
    }
    addr[n] = 0;
  } else if (c->remote_family) {
    inet_ntop(c->remote_family, c->remote, addr, sizeof addr);
  }
  req->remote = mg_pool_strdup(&req->pool, addr);
  return req;
}

static void req_free(mg_req_t *req) {
  mg_lua_req_release(req);
  mg_body_reset(&req->body);
  /* The scratch buffer goes back with the struct, unless it grew past a typical head piece. */
  if (mg_free_full(&req_free_list) || req->scratch.cap > SCRATCH_KEEP) mg_buf_free(&req->scratch);
  head_free(req->head);
  mg_pool_free(&req->pool);
  mg_free_put(&req_free_list, req);
}

/* Stops whatever is still producing or consuming for the request (the client went away). */
static void req_cancel_handler(mg_req_t *req) {
  if (req->handler_cancel) {
    void (*cancel)(mg_req_t *) = req->handler_cancel;
    req->handler_cancel = NULL;
    cancel(req);
  }
}

static void access_log(mg_req_t *req) {
  if (!mg_log_access_enabled()) return;
  char version[16];
  snprintf(version, sizeof version, "HTTP/%d.%d", req->http_major, req->http_minor);
  mg_access_entry_t e = {
      .remote_addr = req->remote,
      .request_line_method = req->orig_method,
      .request_line_uri = req->target,
      .http_version = version,
      .status = req->aborted && !req->head_sent ? 499 : req->status,
      .bytes_sent = req->bytes_sent,
      .referer = mg_fields_get(&req->headers, "Referer"),
      .user_agent = mg_fields_get(&req->headers, "User-Agent"),
      .usec = (uv_hrtime() - req->start_ns) / 1000,
      .upstream = req->upstream_name,
      .request_id = req->id,
      .route = req->route ? req->route->match : NULL,
      .upstream_status = req->upstream_status,
      .upstream_usec = req->upstream_usec,
  };
  mg_log_access(&e);
}

/* The response is complete (or the connection is gone): log and release the request. */
static void req_finish(mg_req_t *req) {
  if (req->finished) return;
  req->finished = 1;
  req->server->nfinished++;
  mg_phase_abort(req);
  req_cancel_handler(req);
  if (mg_lua_has_phase(req, MG_PHASE_LOG)) mg_lua_log_phase(req);
  if (req->target) access_log(req);
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
  mg_conn_t *c = req->conn;
  req_finish(req);
  int keep = req->keepalive && req->msg_done && !req->aborted;
  c->req = NULL;
  c->nrequests++;
  req_free(req);
  /* The head already told the client whether the connection stays open; a drain that began
   * since then is honoured on the next response, except when stopping. */
  if (!keep || c->server->stopping) {
    conn_linger(c);
    return;
  }
  llhttp_resume(&c->parser);
  timer_set(c, T_KEEPALIVE, c->server->cfg->set.keepalive_timeout);
  conn_process(c);
}

/* Headers are complete: validate what llhttp leaves to us, then route. */
static void req_begin(mg_req_t *req) {
  mg_conn_t *c = req->conn;
  llhttp_t *p = &c->parser;
  const mg_settings_t *s = &req->cfg->set;
  req->http_major = llhttp_get_http_major(p);
  req->http_minor = llhttp_get_http_minor(p);
  req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
  req->orig_method = (char *)req->method;
  req->is_head = llhttp_get_method(p) == HTTP_HEAD;
  req->keepalive = llhttp_should_keep_alive(p);
  if (p->flags & F_CHUNKED) req->chunked = 1;
  else if (p->flags & F_CONTENT_LENGTH) req->content_length = (int64_t)p->content_length;
  if (req->http_major != 1) {
    req->keepalive = 0;
    mg_req_error(req, 505, "unsupported HTTP version %d.%d", req->http_major, req->http_minor);
    return;
  }
  if (llhttp_get_method(p) == HTTP_CONNECT) {
    req->keepalive = 0;
    mg_req_error(req, 405, "CONNECT refused: moongate is not a forward proxy");
    return;
  }
  if (req->http_minor == 0 && mg_fields_get(&req->headers, "Transfer-Encoding")) {
    /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the body's
     * length cannot be trusted, so the connection closes after the answer. */
    req->keepalive = 0;
    mg_req_error(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
    return;
  }
  int nhost = 0;
  for (int i = 0; i < req->headers.n; i++)
    if (strcasecmp(req->headers.v[i].name, "Host") == 0) nhost++;
  if (nhost > 1 || (nhost == 0 && req->http_minor >= 1)) {
    req->keepalive = 0;
    mg_req_error(req, 400, nhost ? "several Host fields" : "HTTP/1.1 request without Host");
    return;
  }
  const char *host = mg_fields_get(&req->headers, "Host");
  if (host && !mg_host_valid(host, strlen(host))) {
    /* RFC 9112 3.2: 400 for an invalid Host. Forwarded, it would reach the backend as
     * SERVER_NAME and HTTP_HOST, where "x@evil" or "a, b" builds links to another site. */
    req->keepalive = 0;
    mg_req_error(req, 400, "invalid Host \"%.64s\"", host);
    return;
  }
  if (host) {
    size_t hl = strlen(host);
    const char *colon = host[0] == '[' ? strchr(host, ']') : strchr(host, ':');
    if (host[0] == '[' && colon) hl = (size_t)(colon - host + 1);
    else if (colon) hl = (size_t)(colon - host);
    req->host = mg_pool_strndup(&req->pool, host, hl);
    for (char *h = req->host; *h; h++) *h = (char)(*h >= 'A' && *h <= 'Z' ? *h + 32 : *h);
  }
  const char *expect = mg_fields_get(&req->headers, "Expect");
  if (expect) {
    if (strcasecmp(expect, "100-continue") != 0) {
      req->keepalive = 0;
      mg_req_error(req, 417, "unsupported Expect: %s", expect);
      return;
    }
    if (req->http_minor >= 1) req->expect_continue = 1;
  }
  const char *path, *query;
  size_t path_len, query_len;
  if (mg_target_split(req->target, strlen(req->target), &path, &path_len, &query, &query_len) < 0) {
    mg_req_error(req, 400, "bad request target");
    return;
  }
  req->path = mg_pool_alloc(&req->pool, path_len + 2);
  int n = mg_path_normalize(path, path_len, req->path, s->allow_encoded_slashes);
  if (n == MG_PATH_ENCODED_SLASH) {
    mg_req_error(req, 404, "encoded slash in path (allow_encoded_slashes is off)");
    return;
  }
  if (n < 0) {
    mg_req_error(req, 400, "bad path");
    return;
  }
  req->path_len = (size_t)n;
  req->query = query ? mg_pool_strndup(&req->pool, query, query_len) : NULL;
  if (c->server->cfg->set.client_body_timeout && (req->chunked || req->content_length > 0))
    timer_set(c, T_BODY, s->client_body_timeout);
  else
    timer_set(c, T_NONE, 0);
  mg_phase_start(req);
}

mg_req_t *mg_req_new_child(mg_req_t *parent) {
  mg_req_t *req = req_new(parent->conn);
  req->is_subrequest = 1;
  req->parent = parent;
  req->depth = parent->depth + 1;
  req->http_major = parent->http_major, req->http_minor = parent->http_minor;
  req->host = parent->host ? mg_pool_strdup(&req->pool, parent->host) : NULL;
  req->head_done = 1, req->msg_done = 1;
  mg_buf_free(&req->scratch);
  return req;
}

void mg_req_stop(mg_req_t *req) { req_cancel_handler(req); }

void mg_req_release(mg_req_t *req) {
  req_cancel_handler(req);
  mg_phase_abort(req);
  req_free(req);
}

void mg_req_continue(mg_req_t *req) {
  if (req->sink || !req->expect_continue || req->continue_sent || req->msg_done) return;
  req->continue_sent = 1;
  static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  uv_buf_t ub = uv_buf_init(cont, sizeof cont - 1);
  conn_write(req->conn, &ub, 1, NULL, NULL);
}

void mg_req_pause_body(mg_req_t *req) {
  if (req->sink) return;
  req->conn->throttled = 1;
  conn_update_reading(req->conn);
}

void mg_req_resume_body(mg_req_t *req) {
  if (req->sink) return;
  mg_conn_t *c = req->conn;
  if (!c->throttled) return;
  c->throttled = 0;
  conn_process(c);
}

void mg_conn_kick(mg_conn_t *c) {
  if (c->closing) return;
  mg_req_t *req = c->req;
  if (!c->rbuf && req && req->head_done && !req->msg_done && !req->hold_body) {
    /* A message without a body completes without another byte: run the parser on nothing. */
    c->rbuf = mg_block_get();
    c->rbuf_off = c->rbuf_len = 0;
  }
  conn_process(c);
}

void mg_req_read_body(mg_req_t *req) {
  req->hold_body = 0;
  mg_req_continue(req);
  mg_conn_kick(req->conn);
}

/* ---- parser callbacks ------------------------------------------------------------------ */

static int refuse(mg_conn_t *c, int status, const char *why) {
  c->error_status = (uint16_t)status;
  c->error_reason = why;
  llhttp_set_error_reason(&c->parser, why);
  return HPE_USER;
}

static int on_message_begin(llhttp_t *p) {
  mg_conn_t *c = p->data;
  c->req = req_new(c);
  timer_set(c, T_HEADER, c->server->cfg->set.client_header_timeout);
  return 0;
}

static int scratch_add(mg_conn_t *c, int kind, const char *at, size_t len, uint64_t limit, int status,
                       const char *why) {
  mg_req_t *req = c->req;
  if (req->scratch_kind != kind) req->scratch.len = 0, req->scratch_kind = kind;
  if (req->scratch.len + len > limit) return refuse(c, status, why);
  mg_buf_append(&req->scratch, at, len);
  return 0;
}

/* The byte k (1 to 8) places before `at`, also when it was consumed in an earlier read. */
static char byte_before(const mg_conn_t *c, const char *at, int k) {
  ptrdiff_t in = at - c->exec_start;
  return in >= k ? at[-k] : c->tail[sizeof c->tail - (size_t)(k - in)];
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  mg_conn_t *c = p->data;
  /* RFC 9112 3: method SP request-target, one space. llhttp (also in strict mode) skips any
   * number of them, and a hop that splits the line differently reads another target. */
  if (c->req->scratch_kind != 1 && byte_before(c, at, 2) == ' ')
    return refuse(c, 400, "more than one space in the request line");
  return scratch_add(c, 1, at, len, c->server->cfg->set.max_request_line, 414, "request line too long");
}

/* The version's digits follow "HTTP/" (or "RTSP/", "ICE/"), which follows one space. */
static int on_version(llhttp_t *p, const char *at, size_t len) {
  mg_conn_t *c = p->data;
  (void)len;
  if (c->req->scratch_kind == 4) return 0;
  c->req->scratch_kind = 4;
  int k = 2;
  while (k < 7 && byte_before(c, at, k) != ' ') k++;
  if (byte_before(c, at, k) == ' ' && byte_before(c, at, k + 1) == ' ')
    return refuse(c, 400, "more than one space in the request line");
  return 0;
}

static int on_url_complete(llhttp_t *p) {
  mg_conn_t *c = p->data;
  mg_req_t *req = c->req;
  req->target = mg_pool_strndup(&req->pool, req->scratch.data ? req->scratch.data : "", req->scratch.len);
  req->scratch_kind = 0;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  mg_conn_t *c = p->data;
  return scratch_add(c, 2, at, len, c->server->cfg->set.max_header_size, 431, "header field too large");
}

static int on_header_field_complete(llhttp_t *p) {
  mg_conn_t *c = p->data;
  mg_req_t *req = c->req;
  if ((uint64_t)req->headers.n + req->ntrailers >= c->server->cfg->set.max_headers)
    return refuse(c, 431, req->head_done ? "too many header and trailer fields" : "too many header fields");
  /* A trailer field is counted against the limits, then dropped (on_header_value_complete). */
  if (req->head_done) req->ntrailers++;
  else c->in_length_value = req->scratch.len == 14 && strncasecmp(req->scratch.data, "Content-Length", 14) == 0;
  req->pending_field = mg_pool_strndup(&req->pool, req->scratch.data ? req->scratch.data : "", req->scratch.len);
  req->scratch_kind = 0;
  return 0;
}

/* True when the value piece at `at` follows a line break: an obs-fold continuation. llhttp
 * joins those into the value; whatever precedes a value piece is otherwise the colon, optional
 * white space, or (for a value split across reads) the value's own previous byte. */
static int follows_line_break(const mg_conn_t *c, const char *at) {
  const char *q = at;
  while (q > c->exec_start && (q[-1] == ' ' || q[-1] == '\t')) q--;
  return (q > c->exec_start ? q[-1] : c->last_nonws) == '\n';
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  mg_conn_t *c = p->data;
  mg_req_t *req = c->req;
  /* An empty value is reported as a zero-length piece after its line break: not a fold. */
  if (len > 0 && follows_line_break(c, at)) {
    /* A fold, read differently by different hops, is a smuggling vector (on
     * Transfer-Encoding above all): refused as nginx and Apache's strict mode do. */
    char why[128];
    snprintf(why, sizeof why, "obsolete line folding in header \"%.64s\"", req->pending_field ? req->pending_field : "-");
    return refuse(c, 400, mg_pool_strdup(&req->pool, why));
  }
  return scratch_add(c, 3, at, len, c->server->cfg->set.max_header_size, 431, "header field too large");
}

static int on_header_value_complete(llhttp_t *p) {
  mg_conn_t *c = p->data;
  mg_req_t *req = c->req;
  c->in_length_value = 0;
  const char *v = req->scratch_kind == 3 ? req->scratch.data : "";
  size_t vl = req->scratch_kind == 3 ? req->scratch.len : 0;
  /* llhttp passes an obs-fold continuation through inside the value; RFC 9112 lets a server
   * refuse it, and a gateway should: the next hop may read the fold differently. */
  for (size_t i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) return refuse(c, 400, "obsolete line folding or control character in a header value");
  if (req->head_done) {
    /* Trailer fields are never merged into the request's fields (RFC 9110 6.5.1): the hooks
     * have already decided on the head, and nothing sent after it may change what the backend
     * receives. nginx drops them too. */
    req->scratch_kind = 0;
    return 0;
  }
  while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
  if (req->headers.n == req->headers.cap) {
    int cap = req->headers.cap ? req->headers.cap * 2 : 16;
    mg_field_t *nv = mg_pool_alloc(&req->pool, sizeof(mg_field_t) * (size_t)cap);
    if (req->headers.n) memcpy(nv, req->headers.v, sizeof(mg_field_t) * (size_t)req->headers.n);
    req->headers.v = nv, req->headers.cap = cap;
  }
  req->headers.v[req->headers.n].name = req->pending_field;
  req->headers.v[req->headers.n].value = mg_pool_strndup(&req->pool, v, vl);
  req->headers.n++;
  req->scratch_kind = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  mg_conn_t *c = p->data;
  /* llhttp raises a Transfer-Encoding whose last coding is not chunked only after this
   * callback, when the request would already have been routed and forwarded: refused here,
   * before anything leaves for a backend (RFC 9112 6.3: the length cannot be determined). */
  if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED) && !c->req->head_done)
    return refuse(c, 400, "Transfer-Encoding whose last coding is not chunked");
  /* The head is frozen from here on: fields that follow the body (trailers) are dropped. The
   * scratch buffer is emptied (it stays with the request struct for the next one, unless a
   * large head made it grow). */
  if (c->req->scratch.cap > SCRATCH_KEEP && !(p->flags & F_CHUNKED)) mg_buf_free(&c->req->scratch);
  c->req->scratch.len = 0;
  c->req->scratch_kind = 0;
  c->req->head_done = 1;
  c->event = EV_HEADERS;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  mg_conn_t *c = p->data;
  mg_req_t *req = c->req;
  req->body_received += len;
  if (req->chunked && req->route && req->route->client_max_body_size &&
      req->body_received > req->route->client_max_body_size && !req->head_sent)
    return refuse(c, 413, "chunked request body exceeds client_max_body_size");
  if (c->timer_kind == T_BODY) timer_set(c, T_BODY, c->server->cfg->set.client_body_timeout);
  if (req->on_body && !req->finished) req->on_body(req, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  mg_conn_t *c = p->data;
  c->event = EV_MESSAGE;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection ---------------------------------------------------------------------- */

/* Timeouts: instead of a libuv timer per connection (152 bytes each), the server keeps one
 * FIFO queue per kind of timeout. Every entry of a queue has the same duration, so appending
 * keeps a queue sorted by deadline, and one timer per worker, set to the earliest head, serves
 * them all (the scheme of h2o's timeout lists). */
static void conn_timeout(mg_conn_t *c, int kind) {
  mg_req_t *req = c->req;
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

static void tq_unlink(mg_conn_t *c) {
  mg_server_t *s = c->server;
  int q = c->timer_kind - 1;
  if (c->tprev) c->tprev->tnext = c->tnext;
  else s->tq_head[q] = c->tnext;
  if (c->tnext) c->tnext->tprev = c->tprev;
  else s->tq_tail[q] = c->tprev;
  c->tnext = c->tprev = NULL;
  c->timer_kind = T_NONE;
}

static void tq_schedule(mg_server_t *s);

static void on_conn_timer(uv_timer_t *t) {
  mg_server_t *s = t->data;
  uint64_t now = uv_now(s->loop);
  for (int q = 0; q < MG_TIMEOUT_QUEUES; q++) {
    mg_conn_t *c;
    while ((c = s->tq_head[q]) && (int32_t)(c->deadline - (uint32_t)now) <= 0) {
      tq_unlink(c);
      conn_timeout(c, q + 1);
    }
  }
  tq_schedule(s);
}

static void tq_schedule(mg_server_t *s) {
  /* Deadlines are kept modulo 2^32 ms; timeouts are far shorter than 24 days, so the signed
   * difference orders them. */
  uint64_t now = uv_now(s->loop);
  int64_t wait = INT64_MAX;
  for (int q = 0; q < MG_TIMEOUT_QUEUES; q++)
    if (s->tq_head[q]) {
      int32_t d = (int32_t)(s->tq_head[q]->deadline - (uint32_t)now);
      if (d < wait) wait = d;
    }
  if (wait == INT64_MAX) {
    uv_timer_stop(&s->conn_timer);
    return;
  }
  uint64_t due = now + (uint64_t)(wait > 0 ? wait : 0);
  if (uv_is_active((uv_handle_t *)&s->conn_timer) && s->conn_timer_due <= due) return;
  s->conn_timer_due = due;
  uv_timer_start(&s->conn_timer, on_conn_timer, due - now, 0);
}

static void timer_set(mg_conn_t *c, int kind, uint64_t ms) {
  mg_server_t *s = c->server;
  if (c->timer_kind != T_NONE) tq_unlink(c);
  if (c->closing || kind == T_NONE || ms == 0) return;
  if (!s->conn_timer_inited) {
    uv_timer_init(s->loop, &s->conn_timer);
    s->conn_timer.data = s;
    uv_unref((uv_handle_t *)&s->conn_timer);
    s->conn_timer_inited = 1;
  }
  int q = kind - 1;
  c->timer_kind = (uint8_t)kind;
  c->deadline = (uint32_t)(uv_now(s->loop) + ms);
  c->tprev = s->tq_tail[q];
  c->tnext = NULL;
  if (s->tq_tail[q]) s->tq_tail[q]->tnext = c;
  else s->tq_head[q] = c;
  s->tq_tail[q] = c;
  tq_schedule(s);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  buf->base = mg_block_get();
  buf->len = MG_BLOCK_SIZE;
}

/* The client went away: a request still in progress is cut off. */
static void conn_gone(mg_conn_t *c) {
  mg_req_t *req = c->req;
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
  mg_req_t *req = c->req;
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
  int status = c->error_status ? c->error_status : 400;
  if (!c->req) c->req = req_new(c);
  mg_req_t *req = c->req;
  if (!req->target) req->target = mg_pool_strdup(&req->pool, "-");
  if (!req->orig_method) req->orig_method = "-";
  req->keepalive = 0;
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  const char *why = c->error_reason ? c->error_reason : llhttp_get_error_reason(&c->parser);
  if (req->head_sent) {
    mg_req_abort(req, why);
    return;
  }
  req_cancel_handler(req);
  req->msg_done = 1;
  /* llhttp's reason says it in words; its error name (HPE_...) would mean nothing to a user. */
  mg_req_error(req, status, "bad request: %s", why);
}

/* Remembers the last byte other than SP/HT that the parser consumed (see follows_line_break). */
static void note_last_byte(mg_conn_t *c, const char *start, const char *end) {
  if (!end || end < start) return;
  size_t m = (size_t)(end - start);
  if (m >= sizeof c->tail) {
    memcpy(c->tail, end - sizeof c->tail, sizeof c->tail);
  } else if (m) {
    memmove(c->tail, c->tail + m, sizeof c->tail - m);
    memcpy(c->tail + sizeof c->tail - m, end - m, m);
  }
  while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
  if (end > start) c->last_nonws = end[-1];
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
  return !c->closing && !c->throttled && !(c->req && (c->req->msg_done || c->req->hold_body));
}

/* How many of the n bytes at p the parser is given in one go. RFC 9110 5.5 lets a field value
 * end in spaces and tabs (OWS), but llhttp refuses a tab after a Content-Length's digits; so
 * within a request head the parser stops before each tab, and a tab that turns out to be part
 * of a Content-Length's trailing white space is made a space, which means the same. The tab's
 * line must end in this read (else it is refused as before). */
static size_t head_run(mg_conn_t *c, char *p, size_t n) {
  if (c->req && c->req->head_done) return n;
  if (n && p[0] == '\t' && c->in_length_value) {
    size_t k = 0;
    while (k < n && (p[k] == ' ' || p[k] == '\t')) k++;
    if (k < n && p[k] == '\r')
      for (size_t j = 0; j < k; j++) p[j] = ' ';
  }
  const char *tab = n > 1 ? memchr(p + 1, '\t', n - 1) : NULL;
  return tab ? (size_t)(tab - p) : n;
}

/* Parses what rbuf holds for as long as the current request lets it. Returns 1 when the
 * connection or its request moved on and the caller must return at once. */
static int conn_parse(mg_conn_t *c) {
  while (c->rbuf && !c->closing && !c->throttled && !(c->req && (c->req->msg_done || c->req->hold_body))) {
    char *start = c->rbuf + c->rbuf_off;
    size_t n = head_run(c, start, c->rbuf_len - c->rbuf_off);
    c->exec_start = start;
    llhttp_errno_t err = llhttp_execute(&c->parser, start, n);
    note_last_byte(c, start, err == HPE_OK ? start + n : llhttp_get_error_pos(&c->parser));
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
    c->rbuf_off = (uint32_t)(llhttp_get_error_pos(&c->parser) - c->rbuf);
    if (err == HPE_PAUSED_UPGRADE) {
      /* Upgrades are not supported: the request was served as a plain one; nothing after it
       * on this connection can be read as HTTP. */
      mg_block_put(c->rbuf);
      c->rbuf = NULL;
      if (c->req) c->req->keepalive = 0;
      break;
    }
    int ev = c->event;
    c->event = EV_NONE;
    mg_req_t *req = c->req;
    if (ev == EV_MESSAGE) {
      /* Stay paused: the next pipelined request waits until this response is complete. */
      req->msg_done = 1;
      if (c->timer_kind == T_BODY || c->timer_kind == T_HEADER) timer_set(c, T_NONE, 0);
      if (req->on_body_end && !req->finished) req->on_body_end(req);
      if (c->closing) return 1;
      if (req->resp_ended && c->writes_pending == 0 && c->req == req) {
        req_complete(req);
        return 1;
      }
      break;
    }
    llhttp_resume(&c->parser);
    if (ev == EV_HEADERS) {
      req_begin(req);
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
  if (c->timer_kind != T_NONE) tq_unlink(c);
  if (c->req) {
    mg_req_t *req = c->req;
    c->req = NULL;
    if (!req->resp_ended) req->aborted = 1;
    req_finish(req);
    req_free(req);
  }
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
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  return c;
}

uv_stream_t *mg_conn_stream(mg_conn_t *c) { return &c->h.stream; }

int mg_req_is_tls(const mg_req_t *req) { return req->conn->tls != NULL; }

int mg_req_socket_fd(mg_req_t *req) {
  uv_os_fd_t fd;
  if (req->sink || req->body_filtered || req->conn->tls || uv_fileno(&req->conn->h.handle, &fd) < 0) return -1;
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
  mg_conn_t *c;
  while ((c = s->tq_head[T_KEEPALIVE - 1])) conn_close(c);
}

void mg_conn_close(mg_conn_t *c) { conn_close(c); }

void mg_conn_set_listener(mg_conn_t *c, int index) { c->listener = (uint8_t)index; }

int mg_conn_local(mg_conn_t *c, char *addr, size_t n, int *port) {
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
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, (socklen_t)n);
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  } else {
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, (socklen_t)n);
    *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  return 0;
}

const mg_explain_t *mg_explain;

void mg_conn_set_peer(mg_conn_t *c, const char *ip, int port) {
  if (inet_pton(AF_INET, ip, c->remote) == 1) c->remote_family = AF_INET;
  else if (inet_pton(AF_INET6, ip, c->remote) == 1) c->remote_family = AF_INET6;
  c->remote_port = (uint16_t)port;
}

const char *mg_req_remote(mg_req_t *req, int *port) {
  *port = req->conn->remote_port;
  return req->remote;
}
