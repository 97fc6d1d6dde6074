/* http2: see http2.h; the plan is docs/design-http2.md.
 *
 * Reading: the connection hands over plaintext; nghttp2_session_mem_recv takes all of it at
 * once (an HTTP/2 connection never holds unparsed bytes). Streams whose header block
 * completed during that call start only after it returns: a HEADERS and its RST_STREAM that
 * arrive together never reach the engine (the cheap half of the rapid-reset defence), and no
 * engine code runs inside an nghttp2 callback.
 *
 * Writing: sink calls (a backend's bytes, a Lua resume, a timer) only queue frames and wake
 * the session; every session woken in a loop turn is flushed once from the worker's idle
 * handle, so all the streams of a connection leave in one write per turn. Frames are packed
 * into pooled 64 KiB blocks (DATA with NGHTTP2_DATA_FLAG_NO_COPY, copied once from the
 * stream's pieces), which conn.c writes (and encrypts, on TLS) as it writes HTTP/1.1.
 *
 * Lifetime: a stream is freed only by the collection pass at the end of a read or a flush;
 * the session itself only when no read, write or flush of it is running (busy). */
#include "http2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "buf.h"
#include "http2_stream.h"
#include "log.h"

/* The flood bucket (nghttp2 1.64's "glitch" limit, which Debian's 1.52 lacks): frames that
 * cost us work and carry no request (PRIORITY, SETTINGS, PING, empty DATA) take a token. */
#define GLITCH_BURST 1000.0
#define GLITCH_PER_SEC 100.0
/* A header block may have this many CONTINUATION frames (CVE-2024-27316). */
#define MAX_CONTINUATIONS 8

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *option;
static uint64_t option_streams;
static mg_h2_session_t *flush_list;
static uv_idle_t flush_idle;
static int flush_idle_inited;
static uv_timer_t goaway_timer;
static int goaway_timer_inited;

static void session_send(mg_h2_session_t *h);

static mg_h2_stream_t *stream_of(mg_h2_session_t *h, int32_t id) {
  return nghttp2_session_get_stream_user_data(h->ng, id);
}

static void log_client(const mg_h2_session_t *h, mg_log_level_t level, const char *what) {
  char addr[MG_ADDR_TEXT];
  mg_conn_remote_text(h->c, addr, sizeof addr);
  mg_log(level, "HTTP/2 client %s: %s", addr, what);
}

/* ---- the session's life -------------------------------------------------------------------- */

/* Frees what the session holds: its streams (their requests finished as cut, unless complete),
 * nghttp2's state, its output block. Only when nothing of it runs. */
static void session_teardown(mg_h2_session_t *h) {
  mg_server_t *s = h->c->server;
  h->starting = NULL;
  while (h->streams) {
    h->streams->closed = 1;
    mg_h2_stream_free(h->streams);
  }
  if (h->on_flush_list) {
    mg_h2_session_t **pp = &flush_list;
    while (*pp != h) pp = &(*pp)->flush_next;
    *pp = h->flush_next;
  }
  if (h->prev) h->prev->next = h->next;
  else s->h2_sessions = h->next;
  if (h->next) h->next->prev = h->prev;
  nghttp2_session_del(h->ng);
  mg_block_put(h->ob);
  h->c->ps = NULL;
  free(h);
}

/* The end of a read, a write or a flush: what closed is collected, and a session released
 * meanwhile (its connection closed) is torn down. Returns 1 when it was. */
static int session_leave(mg_h2_session_t *h) {
  if (--h->busy > 0) return 0;
  if (h->released) {
    session_teardown(h);
    return 1;
  }
  if (h->any_dead) {
    h->any_dead = 0;
    for (mg_h2_stream_t *st = h->streams, *n; st; st = n) {
      n = st->next;
      if (st->closed) mg_h2_stream_free(st);
    }
    if (h->released) {
      session_teardown(h);
      return 1;
    }
    if (h->nopen == 0 && !h->hdr_open && !h->c->closing)
      mg_conn_timer_set(h->c, MG_CONN_T_KEEPALIVE, h->c->server->cfg->set.keepalive_timeout);
  }
  return 0;
}

/* ---- writing ------------------------------------------------------------------------------- */

static void ob_flush(mg_h2_session_t *h) {
  if (!h->ob) return;
  uv_buf_t b = uv_buf_init(h->ob, (unsigned)h->ob_len);
  char *blk = h->ob;
  h->ob = NULL, h->ob_len = 0;
  mg_conn_write(h->c, &b, 1, blk, NULL);
}

static uint8_t *ob_room(mg_h2_session_t *h, size_t n) {
  if (h->ob && h->ob_len + n > MG_BLOCK_SIZE) ob_flush(h);
  if (!h->ob) h->ob = mg_block_get(), h->ob_len = 0;
  uint8_t *p = (uint8_t *)h->ob + h->ob_len;
  h->ob_len += n;
  return p;
}

static void ob_append(mg_h2_session_t *h, const uint8_t *data, size_t len) {
  while (len && !h->c->closing) {
    size_t k = len < MG_BLOCK_SIZE ? len : MG_BLOCK_SIZE;
    memcpy(ob_room(h, k), data, k);
    data += k, len -= k;
  }
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user) {
  (void)ng;
  mg_h2_session_t *h = user;
  size_t pad = frame->data.padlen;
  uint8_t *p = ob_room(h, 9 + length + pad);
  memcpy(p, framehd, 9);
  p += 9;
  if (pad) *p++ = (uint8_t)(pad - 1);
  mg_h2_stream_take(source->ptr, p, length);
  if (pad > 1) memset(p + length, 0, pad - 1);
  return 0;
}

/* Frames leave while the socket takes them; producers that waited for room go on, and what
 * they made leaves in the same pass. */
static void session_send(mg_h2_session_t *h) {
  mg_conn_t *c = h->c;
  if (h->in_send) {
    h->flush_queued = 1; /* the pass running sends it */
    return;
  }
  h->in_send = 1;
  h->busy++;
again:
  for (int rounds = 0; rounds < 64; rounds++) {
    h->flush_queued = 0;
    while (!c->closing && !h->released && mg_conn_queued(c) < MG_WRITE_HIGH) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(h->ng, &data);
      if (n < 0) {
        log_client(h, MG_LOG_ERROR, nghttp2_strerror((int)n));
        mg_conn_close(c);
        break;
      }
      if (n == 0) break;
      ob_append(h, data, (size_t)n);
    }
    if (c->closing || h->released) break;
    if (mg_conn_queued(c) < MG_WRITE_HIGH) h->written_at = mg_now_ms(); /* the socket takes bytes */
    ob_flush(h);
    if (c->closing || h->released) break;
    /* Producers waiting for room (upstream.c, static.c, ngx.flush(true)) go on. */
    int woke = 0;
    for (mg_h2_stream_t *st = h->streams; st; st = st->next) {
      mg_req_t *req = st->req;
      if (!req || st->closed || !req->on_drain || mg_h2_stream_queued(st) >= MG_WRITE_LOW) continue;
      void (*cb)(mg_req_t *) = req->on_drain;
      req->on_drain = NULL;
      cb(req);
      woke = 1;
      if (c->closing || h->released) break;
    }
    if (c->closing || h->released) break;
    if (!(woke || h->flush_queued) || !nghttp2_session_want_write(h->ng)) break;
  }
  h->flush_queued = 0;
  h->in_send = 0;
  if (!c->closing && !h->released) {
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng) && h->notice_sent &&
        !h->goaway_sent) {
      /* Draining, and the last stream is done: the final GOAWAY names the last stream served
       * before the connection closes, so a request sent meanwhile is known to be unserved. */
      h->goaway_sent = 1;
      nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ng),
                            NGHTTP2_NO_ERROR, NULL, 0);
      goto again;
    }
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng)) {
      /* GOAWAY sent (or received) and no stream left: the connection's work is done. */
      mg_conn_linger(c);
    } else if (mg_conn_queued(c) >= MG_WRITE_HIGH && !c->throttled) {
      /* The client does not read: nor do we, so it cannot make us queue acknowledgements. */
      mg_conn_pause_read(c);
    }
  }
  session_leave(h);
}

static void on_flush(uv_idle_t *idle) {
  mg_h2_session_t *list = flush_list;
  flush_list = NULL;
  uv_idle_stop(idle);
  while (list) {
    mg_h2_session_t *h = list;
    list = h->flush_next;
    h->on_flush_list = 0;
    h->flush_next = NULL;
    session_send(h);
  }
}

static void session_wake(mg_h2_session_t *h) {
  if (h->released) return;
  if (h->busy) {
    h->flush_queued = 1;
    return;
  }
  if (h->on_flush_list) return;
  h->on_flush_list = 1;
  h->flush_next = flush_list;
  flush_list = h;
  if (!flush_idle_inited) {
    uv_idle_init(h->c->server->loop, &flush_idle);
    uv_unref((uv_handle_t *)&flush_idle);
    flush_idle_inited = 1;
  }
  uv_idle_start(&flush_idle, on_flush);
}

/* ---- nghttp2's callbacks --------------------------------------------------------------------- */

/* A flood: one log line, then GOAWAY ENHANCE_YOUR_CALM and the close. */
static void calm(mg_h2_session_t *h, const char *what) {
  if (!h->goaway_sent) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s: connection closed (GOAWAY ENHANCE_YOUR_CALM)", what);
    log_client(h, MG_LOG_WARN, msg);
  }
  h->goaway_sent = 1;
  nghttp2_session_terminate_session(h->ng, NGHTTP2_ENHANCE_YOUR_CALM);
}

static void glitch(mg_h2_session_t *h) {
  uint64_t now = mg_now_ms();
  h->glitch_tokens += (double)(now - h->glitch_at) * GLITCH_PER_SEC / 1000.0;
  if (h->glitch_tokens > GLITCH_BURST) h->glitch_tokens = GLITCH_BURST;
  h->glitch_at = now;
  if (--h->glitch_tokens >= 0) return;
  calm(h, "flood of control or empty frames");
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user) {
  (void)ng;
  mg_h2_session_t *h = user;
  switch (hd->type) {
    case NGHTTP2_HEADERS:
      h->cont_frames = 0;
      h->cont_bytes = hd->length;
      break;
    case NGHTTP2_CONTINUATION:
      h->cont_bytes += hd->length;
      if (++h->cont_frames > MAX_CONTINUATIONS ||
          h->cont_bytes > 2 * h->c->server->cfg->set.http2_max_header_list_size) {
        calm(h, "CONTINUATION flood");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      break;
    case NGHTTP2_DATA:
      if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) glitch(h);
      break;
    case NGHTTP2_PRIORITY:
      glitch(h);
      break;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
      if (!(hd->flags & NGHTTP2_FLAG_ACK)) glitch(h);
      break;
    default:
      break;
  }
  return 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user) {
  mg_h2_session_t *h = user;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  mg_h2_stream_t *st = mg_h2_stream_new(h, frame->hd.stream_id);
  nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
  h->hdr_open = 1;
  mg_conn_timer_set(h->c, MG_CONN_T_HEADER, h->c->server->cfg->set.client_header_timeout);
  if (++h->nrequests >= h->c->server->cfg->set.keepalive_requests && !h->goaway_sent) {
    /* keepalive_requests counts streams: this one is the last, the client opens another
     * connection for the next. */
    h->goaway_sent = 1;
    nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR, NULL, 0);
  }
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *user) {
  (void)flags;
  mg_h2_session_t *h = user;
  mg_h2_stream_t *st = stream_of(h, frame->hd.stream_id);
  if (!st || st->refused || !st->req) return 0;
  mg_req_t *req = st->req;
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    /* Trailers: counted against max_headers, dropped (what the last access hook saw is what
     * the backend gets). */
    if (++req->ntrailers > req->cfg->set.max_headers) {
      nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
      st->refused = 1;
    }
    return 0;
  }
  req->request_length += nl + vl + 4; /* as the field's HTTP/1.1 line would be: "name: value\r\n" */
  /* Over a limit already (the answer is 431): the rest of the block is not looked at. Past
   * four times the limit it is an HPACK bomb (references to a large table entry, each checked
   * by nghttp2 byte by byte): the stream is reset, and nghttp2 decodes the rest of the block
   * for the table's sake only, without checking or handing out the fields. */
  if (st->f.too_large) {
    const mg_settings_t *s = &req->cfg->set;
    uint64_t bound = 4 * (uint64_t)(s->http2_max_header_list_size > 16384 ? s->http2_max_header_list_size : 16384);
    st->over += nl + vl + 32;
    if (st->over <= bound) return 0;
    char msg[160];
    snprintf(msg, sizeof msg, "HPACK bomb on stream %d: header block decodes to over %llu bytes (RST_STREAM ENHANCE_YOUR_CALM)",
             st->id, (unsigned long long)bound);
    log_client(h, MG_LOG_INFO, msg);
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_ENHANCE_YOUR_CALM);
    st->refused = 1;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  const mg_settings_t *s = &req->cfg->set;
  mg_h2f_limits_t lim = {s->http2_max_header_list_size, s->max_header_size, s->max_headers};
  if (mg_h2f_add(&st->f, &req->pool, &req->headers, &lim, (const char *)name, nl, (const char *)value, vl) ==
      MG_H2F_MALFORMED)
    st->refused = 1;
  return 0;
}

/* A field nghttp2 itself finds invalid: without this callback it would drop the field and
 * serve the request, whose fields a hook then never saw. */
static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t nl,
                             const uint8_t *value, size_t vl, uint8_t flags, void *user) {
  (void)ng, (void)name, (void)nl, (void)value, (void)vl, (void)flags;
  mg_h2_stream_t *st = stream_of(user, frame->hd.stream_id);
  if (st && !st->refused) {
    st->refused = 1;
    st->f.why = "field name not a lowercase token";
  }
  return 0;
}

static void refuse(mg_h2_session_t *h, mg_h2_stream_t *st) {
  char msg[160];
  snprintf(msg, sizeof msg, "malformed request on stream %d: %s (RST_STREAM PROTOCOL_ERROR)", st->id,
           st->f.why ? st->f.why : "refused");
  log_client(h, MG_LOG_INFO, msg);
  nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user) {
  (void)ng;
  mg_h2_session_t *h = user;
  mg_h2_stream_t *st = frame->hd.stream_id ? stream_of(h, frame->hd.stream_id) : NULL;
  int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      if (!st) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        h->hdr_open = 0;
        if (h->nopen > 0) mg_conn_timer_set(h->c, MG_CONN_T_NONE, 0);
        if (!st->refused && mg_h2f_finish(&st->f, &st->req->pool, &st->req->headers) != MG_H2F_OK) st->refused = 1;
        if (st->refused) {
          refuse(h, st);
          return 0;
        }
        st->end_seen = end;
        *h->starting_tail = st;
        h->starting_tail = &st->start_next;
        return 0;
      }
      if (end) st->end_seen = 1, mg_h2_stream_deliver(st);
      return 0;
    case NGHTTP2_DATA:
      if (st && end) st->end_seen = 1, mg_h2_stream_deliver(st);
      return 0;
    case NGHTTP2_RST_STREAM:
      if (st) st->reset_by_peer = 1;
      return 0;
    default:
      return 0;
  }
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                              void *user) {
  (void)flags;
  mg_h2_stream_t *st = stream_of(user, id);
  if (!st || !st->req || st->refused || st->req->finished || st->req->resp_ended) {
    /* Nobody takes these bytes: the windows are given back at once, or the connection would
     * stall. */
    nghttp2_session_consume_connection(ng, len);
    nghttp2_session_consume_stream(ng, id, len);
    return 0;
  }
  mg_h2_stream_data(st, data, len);
  mg_h2_stream_deliver(st);
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *user) {
  mg_h2_session_t *h = user;
  mg_h2_stream_t *st = stream_of(h, id);
  if (!st) return 0;
  nghttp2_session_set_stream_user_data(ng, id, NULL);
  st->closed = 1;
  st->close_error = code;
  h->any_dead = 1;
  return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user) {
  mg_h2_session_t *h = user;
  if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  mg_h2_stream_t *st = stream_of(h, frame->hd.stream_id);
  if (st) st->end_sent = 1;
  /* The response is complete before the request body (RFC 9113 8.1). An error answer (413,
   * a refused upload) refuses the rest at once with RST_STREAM(NO_ERROR), instead of
   * HTTP/1.1's lingering close; otherwise the rest is read and dropped, as nginx does,
   * since clients (curl 7.88) lose a response whose stream is reset before their DATA. */
  if (st && st->req && st->req->status >= 400 && nghttp2_session_get_stream_remote_close(ng, frame->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

/* libnghttp2's memory. Each session holds a 16 KiB frame buffer for as long as it lives,
 * mostly unwritten on an idle connection; from the heap it would take pages that other
 * connections freed dirty (a TLS handshake's buffers), so that every idle connection kept
 * 16 KiB of resident memory. Blocks of MG_H2_MAP_MIN bytes and more are mapped on their own
 * instead: only the pages written are resident. Every block carries a header with its size
 * and origin, so that free and realloc know which it is. */
enum { MG_H2_MAP_MIN = 16384, MG_H2_HDR = 16 };

typedef struct {
  size_t size;
  size_t mapped;
} mem_hdr_t;

static void *mem_put(mem_hdr_t *h, size_t n, int mapped) {
  h->size = n, h->mapped = (size_t)mapped;
  return (char *)h + MG_H2_HDR;
}

static mem_hdr_t *mem_hdr(void *p) { return (mem_hdr_t *)((char *)p - MG_H2_HDR); }

static void *mem_alloc(size_t n, int zero) {
  if (n >= MG_H2_MAP_MIN) {
    /* Mapped pages are zero already. */
    void *m = mmap(NULL, n + MG_H2_HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) return mem_put(m, n, 1);
    /* Out of mappings (vm.max_map_count): the heap still serves. */
  }
  mem_hdr_t *h = zero ? calloc(1, n + MG_H2_HDR) : malloc(n + MG_H2_HDR);
  return h ? mem_put(h, n, 0) : NULL;
}

static void *mem_malloc(size_t n, void *u) {
  (void)u;
  return mem_alloc(n, 0);
}

static void mem_free(void *p, void *u) {
  (void)u;
  if (!p) return;
  mem_hdr_t *h = mem_hdr(p);
  if (h->mapped) munmap(h, h->size + MG_H2_HDR);
  else free(h);
}

static void *mem_calloc(size_t k, size_t n, void *u) {
  (void)u;
  if (n && k > (SIZE_MAX - MG_H2_HDR) / n) return NULL;
  return mem_alloc(k * n, 1);
}

static void *mem_realloc(void *p, size_t n, void *u) {
  if (!p) return mem_alloc(n, 0);
  mem_hdr_t *h = mem_hdr(p);
  if (!h->mapped && n < MG_H2_MAP_MIN) {
    mem_hdr_t *g = realloc(h, n + MG_H2_HDR);
    return g ? mem_put(g, n, 0) : NULL;
  }
  void *q = mem_alloc(n, 0);
  if (!q) return NULL;
  memcpy(q, p, h->size < n ? h->size : n);
  mem_free(p, u);
  return q;
}
static nghttp2_mem mg_h2_mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

static void setup_once(const mg_settings_t *s) {
  if (!callbacks) {
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_begin_frame_callback(callbacks, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(callbacks, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(callbacks, on_send_data);
  }
  if (option && option_streams == s->http2_max_concurrent_streams) return;
  if (option) nghttp2_option_del(option);
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_max_continuations(option, 16);
  nghttp2_option_set_stream_reset_rate_limit(option, 2 * s->http2_max_concurrent_streams, 32);
  nghttp2_option_set_max_outbound_ack(option, 1000);
  nghttp2_option_set_max_settings(option, 32);
  nghttp2_option_set_max_deflate_dynamic_table_size(option, 4096);
  option_streams = s->http2_max_concurrent_streams;
}

/* ---- the protocol: what the connection calls ---------------------------------------------- */

static void on_stream_timeout(mg_timeq_t *q, mg_timeq_entry_t *e, int kind) {
  (void)q;
  mg_h2_stream_t *st = (mg_h2_stream_t *)((char *)e - offsetof(mg_h2_stream_t, tq));
  mg_h2_session_t *h = st->h;
  mg_conn_t *c = h->c;
  h->busy++;
  mg_h2_stream_timeout(st, kind);
  /* What the timeout queued (RST_STREAM CANCEL, a 408) leaves now: a wake while busy only
   * marks the session, and no read or flush may come to send it (a zero window). */
  if (!h->released && !c->closing) session_send(h);
  if (kind == MG_H2_T_SEND && st->req && !h->released && !c->closing && mg_conn_queued(c) >= MG_WRITE_HIGH &&
      mg_now_ms() - h->written_at >= st->req->cfg->set.send_timeout) {
    /* The socket has taken nothing for send_timeout and our queue is full: the client reads
     * nothing, so no RST_STREAM or GOAWAY can reach it. */
    log_client(h, MG_LOG_INFO, "send_timeout: the client read nothing in time: connection closed");
    mg_conn_close(c);
  }
  session_leave(h);
}

static int h2_start(mg_conn_t *c) {
  mg_server_t *s = c->server;
  const mg_settings_t *set = &s->cfg->set;
  setup_once(set);
  if (!s->h2_timeouts.loop) mg_timeq_init(&s->h2_timeouts, s->loop, on_stream_timeout);
  mg_h2_session_t *h = mg_calloc(1, sizeof *h);
  h->c = c;
  h->wake = session_wake;
  h->starting_tail = &h->starting;
  h->glitch_tokens = GLITCH_BURST;
  h->glitch_at = mg_now_ms();
  h->written_at = h->glitch_at;
  if (nghttp2_session_server_new3(&h->ng, callbacks, h, option, &mg_h2_mem) != 0) {
    free(h);
    return -1;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)set->http2_max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)set->http2_initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)set->http2_max_header_list_size},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
  };
  nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
  /* The connection's window is 16 streams' worth, so parallel uploads each get theirs. */
  uint64_t conn_window = 16 * set->http2_initial_window_size;
  if (conn_window > 0x7fffffff) conn_window = 0x7fffffff;
  nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
  c->ps = h;
  h->next = s->h2_sessions;
  if (h->next) h->next->prev = h;
  s->h2_sessions = h;
  if (s->draining) {
    h->notice_sent = 1;
    nghttp2_submit_shutdown_notice(h->ng);
  }
  return 0;
}

static void start_streams(mg_h2_session_t *h) {
  while (h->starting && !h->released && !h->c->closing) {
    mg_h2_stream_t *st = h->starting;
    h->starting = st->start_next;
    if (!h->starting) h->starting_tail = &h->starting;
    st->start_next = NULL;
    if (!st->closed && st->req) mg_h2_stream_start(st);
  }
}

static int h2_process(mg_conn_t *c) {
  mg_h2_session_t *h = c->ps;
  if (!c->rbuf) return 0;
  h->busy++;
  ssize_t rv = nghttp2_session_mem_recv(h->ng, (const uint8_t *)c->rbuf + c->rbuf_off, c->rbuf_len - c->rbuf_off);
  mg_block_put(c->rbuf);
  c->rbuf = NULL;
  if (rv < 0) {
    if (rv != NGHTTP2_ERR_CALLBACK_FAILURE || !h->goaway_sent) log_client(h, MG_LOG_INFO, nghttp2_strerror((int)rv));
    /* Our own limit ended the session: its GOAWAY leaves before the close. */
    if (rv == NGHTTP2_ERR_CALLBACK_FAILURE) session_send(h);
    if (!c->closing) mg_conn_close(c);
    session_leave(h);
    return 1;
  }
  start_streams(h);
  session_send(h);
  return session_leave(h) || c->closing;
}

static int h2_ready(const mg_conn_t *c) { (void)c; return 1; }

static void h2_written(mg_conn_t *c) {
  mg_h2_session_t *h = c->ps;
  if (!h || h->released) return;
  h->written_at = mg_now_ms();
  if (c->throttled && mg_conn_queued(c) < MG_WRITE_LOW) mg_conn_resume_read(c);
  if (c->closing || !c->ps) return;
  session_send(h);
}

static void h2_gone(mg_conn_t *c) { mg_conn_close(c); }

static void h2_timeout(mg_conn_t *c, int kind) {
  mg_h2_session_t *h = c->ps;
  if (kind == MG_CONN_T_HEADER && !h->hdr_open && h->nopen > 0) return;
  /* No request in time, a header block left open, or idle: GOAWAY, then the close. */
  if (h->goaway_sent && kind != MG_CONN_T_HEADER) {
    /* The GOAWAY of the last time could not leave: the client reads nothing. */
    log_client(h, MG_LOG_INFO, "the client read nothing in time: connection closed");
    mg_conn_close(c);
    return;
  }
  if (kind == MG_CONN_T_HEADER) log_client(h, MG_LOG_INFO, "client_header_timeout: no complete HTTP/2 request head in time");
  h->goaway_sent = 1;
  nghttp2_session_terminate_session(h->ng, NGHTTP2_NO_ERROR);
  session_send(h); /* the GOAWAY leaves, then the connection lingers and closes */
  /* Unless the socket takes nothing: then the next timeout closes it. */
  if (!c->closing && !c->lingering) mg_conn_timer_set(c, MG_CONN_T_KEEPALIVE, c->server->cfg->set.send_timeout);
}

static void h2_release(mg_conn_t *c) {
  mg_h2_session_t *h = c->ps;
  if (!h) return;
  h->released = 1;
  if (h->busy == 0) session_teardown(h);
}

const mg_conn_proto_t mg_h2_proto = {
    .name = "h2",
    .start = h2_start,
    .process = h2_process,
    .ready = h2_ready,
    .written = h2_written,
    .peer_closed = h2_gone,
    .gone = h2_gone,
    .timeout = h2_timeout,
    .release = h2_release,
};

/* ---- drain: GOAWAY ------------------------------------------------------------------------- */

static void on_goaway_timer(uv_timer_t *t) {
  mg_server_t *s = t->data;
  for (mg_h2_session_t *h = s->h2_sessions; h; h = h->next) {
    if (h->goaway_sent || h->released) continue;
    h->goaway_sent = 1;
    nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    session_wake(h);
  }
}

void mg_h2_server_drain(mg_server_t *s) {
  /* First a GOAWAY with the largest id (nothing refused yet), then, a round trip later, the
   * final one: a request the client sent meanwhile is still served (RFC 9113 6.8). */
  for (mg_h2_session_t *h = s->h2_sessions; h; h = h->next) {
    if (h->notice_sent || h->goaway_sent || h->released) continue;
    h->notice_sent = 1;
    nghttp2_submit_shutdown_notice(h->ng);
    session_wake(h);
  }
  if (!goaway_timer_inited) {
    uv_timer_init(s->loop, &goaway_timer);
    uv_unref((uv_handle_t *)&goaway_timer);
    goaway_timer_inited = 1;
  }
  goaway_timer.data = s;
  uv_timer_start(&goaway_timer, on_goaway_timer, 1000, 0);
}
