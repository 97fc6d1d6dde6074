/* http2_stream: see http2_stream.h. */
#include "http2_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "buf.h"
#include "log.h"
#include "phase.h"

static mg_freelist_t piece_list = MG_FREELIST(mg_h2_piece_t, 1024);

static mg_h2_piece_t *piece_new(char *block, char *heap, const char *data, size_t len) {
  mg_h2_piece_t *p = mg_free_get(&piece_list);
  p->next = NULL, p->block = block, p->heap = heap, p->data = data, p->len = len;
  return p;
}

static void piece_free(mg_h2_piece_t *p) {
  mg_block_put(p->block);
  free(p->heap);
  mg_free_put(&piece_list, p);
}

/* The client can no longer get anything on this stream. */
static int gone(const mg_h2_stream_t *st) { return st->closed || st->h->released || st->h->c->closing; }

static void timer_set(mg_h2_stream_t *st, int kind, uint64_t ms) {
  mg_server_t *s = st->h->c->server;
  mg_timeq_set(&s->h2_timeouts, &st->tq, kind, ms);
}

static void rst(mg_h2_stream_t *st, uint32_t code) {
  if (gone(st)) return;
  nghttp2_submit_rst_stream(st->h->ng, NGHTTP2_FLAG_NONE, st->id, code);
  st->h->wake(st->h);
}

/* ---- the sink: the response as frames ---------------------------------------------------- */

/* The data provider: how many bytes the next DATA frame may take (NGHTTP2_DATA_FLAG_NO_COPY),
 * or NGHTTP2_ERR_DEFERRED while nothing waits; EOF in *flags at the end. */
static ssize_t stream_read(mg_h2_stream_t *st, size_t length, uint32_t *flags) {
  if (!st->out) {
    if (st->end_queued) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    st->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t left = st->out->len - st->out_off;
  size_t n = length < left ? length : left;
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == st->out_bytes && st->end_queued) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static ssize_t on_read_data(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *source, void *user) {
  (void)ng, (void)id, (void)buf, (void)user;
  return stream_read(source->ptr, length, flags);
}

/* The head leaves now: HEADERS, with END_STREAM when no body follows. */
static void submit_head(mg_h2_stream_t *st, int with_data) {
  if (st->head_submitted || !st->nva) return;
  st->head_submitted = 1;
  nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = on_read_data};
  int rv = nghttp2_submit_response(st->h->ng, st->id, st->nva, st->nnv, with_data ? &prd : NULL);
  if (rv != 0) {
    mg_log_error(MG_LOG_ERROR, st->req ? st->req->id : NULL, "HTTP/2 response head refused by nghttp2: %s",
                 nghttp2_strerror(rv));
    rst(st, NGHTTP2_INTERNAL_ERROR);
  }
}

static void resume(mg_h2_stream_t *st) {
  if (!st->deferred) return;
  st->deferred = 0;
  nghttp2_session_resume_data(st->h->ng, st->id);
}

static int status_has_body(int status) { return !(status < 200 || status == 204 || status == 304); }

static void h2_head(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  if (!status_has_body(req->status)) {
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
    req->resp_length = 0;
  }
  const char *date = mg_pool_strdup(&req->pool, mg_http_date_now());
  st->nnv = mg_h2f_response(&req->pool, req->status, &req->resp_headers, "moongate/" MG_VERSION, date, &st->nva);
}

static void h2_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  mg_h2_stream_t *st = req->transport;
  if (gone(st) || len == 0) {
    mg_block_put(block);
    free(heap);
    return;
  }
  mg_h2_piece_t *p = piece_new(block, heap, data, len);
  if (!st->out) timer_set(st, MG_H2_T_SEND, req->cfg->set.send_timeout);
  *st->out_tail = p;
  st->out_tail = &p->next;
  st->out_bytes += len;
  st->h->out_bytes += len;
  if (!st->head_submitted) submit_head(st, 1);
  else resume(st);
  st->h->wake(st->h);
}

static void h2_end(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  st->end_queued = 1;
  if (gone(st)) return;
  if (!st->head_submitted) submit_head(st, st->out != NULL);
  else resume(st);
  st->h->wake(st->h);
}

/* Only this stream is cut; the connection and its other streams go on. */
static void h2_abort(mg_req_t *req) { rst(req->transport, NGHTTP2_INTERNAL_ERROR); }

static int h2_retract(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  if (st->head_submitted || !st->nva) return 0;
  st->nva = NULL, st->nnv = 0;
  return 1;
}

static void h2_flush(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  if (gone(st)) return;
  submit_head(st, 1);
  st->h->wake(st->h);
}

static size_t h2_queued(const mg_req_t *req) { return mg_h2_stream_queued(req->transport); }

/* The stream's bytes wait on the client when the socket refused a write, a window is shut or
 * the connection holds more than its share (other streams that do not drain); otherwise they
 * wait only for their turn among the connection's streams. */
static int h2_client_blocked(const mg_req_t *req) {
  const mg_h2_stream_t *st = req->transport;
  if (gone(st)) return 1;
  return mg_conn_queued(st->h->c) > 0 || st->h->out_bytes > MG_H2_CONN_OUT_HIGH ||
         nghttp2_session_get_stream_remote_window_size(st->h->ng, st->id) <= 0 ||
         nghttp2_session_get_remote_window_size(st->h->ng) <= 0;
}

static void h2_pause_body(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  st->paused = 1;
}

static void h2_resume_body(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  if (!st->paused) return;
  st->paused = 0;
  mg_h2_stream_deliver(st);
}

static void h2_continue(mg_req_t *req) {
  mg_h2_stream_t *st = req->transport;
  if (gone(st)) return;
  static const nghttp2_nv cont = {(uint8_t *)":status", (uint8_t *)"100", 7, 3,
                                  NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  nghttp2_submit_headers(st->h->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &cont, 1, NULL);
  st->h->wake(st->h);
}

/* The engine let go of a held body. The stream is valid memory until the session's
 * collection pass, which never runs inside this call. */
static void h2_kick(void *transport) {
  mg_h2_stream_t *st = transport;
  if (gone(st) || !st->req) return;
  mg_h2_stream_deliver(st);
}

static int h2_peer_gone(const mg_req_t *req) { return gone(req->transport); }

static int h2_local(const mg_req_t *req, char *addr, size_t n, int *port) {
  const mg_h2_stream_t *st = req->transport;
  return mg_conn_local(st->h->c, addr, n, port);
}

/* No socket_fd: static files and X-Sendfile are read and sent in DATA frames. */
static const mg_sink_t h2_sink = {
    .name = "h2",
    .head = h2_head,
    .body = h2_body,
    .end = h2_end,
    .abort = h2_abort,
    .retract = h2_retract,
    .flush = h2_flush,
    .queued = h2_queued,
    .client_blocked = h2_client_blocked,
    .pause_body = h2_pause_body,
    .resume_body = h2_resume_body,
    .send_continue = h2_continue,
    .kick = h2_kick,
    .peer_gone = h2_peer_gone,
    .local = h2_local,
};

void mg_h2_stream_take(mg_h2_stream_t *st, uint8_t *dst, size_t len) {
  st->out_bytes -= len;
  st->h->out_bytes -= len;
  while (len && st->out) {
    mg_h2_piece_t *p = st->out;
    size_t k = p->len - st->out_off;
    if (k > len) k = len;
    memcpy(dst, p->data + st->out_off, k);
    dst += k, len -= k;
    st->out_off += k;
    if (st->out_off == p->len) {
      st->out = p->next;
      if (!st->out) st->out_tail = &st->out;
      st->out_off = 0;
      piece_free(p);
    }
  }
  /* Progress: the send timeout starts again, or stops with nothing left. */
  if (st->req) timer_set(st, st->out ? MG_H2_T_SEND : MG_H2_T_NONE, st->req->cfg->set.send_timeout);
}

size_t mg_h2_stream_queued(const mg_h2_stream_t *st) {
  if (st->h->out_bytes > MG_H2_CONN_OUT_HIGH) return st->out_bytes + MG_WRITE_HIGH + 1;
  return st->out_bytes;
}

/* ---- the request side -------------------------------------------------------------------- */

mg_h2_stream_t *mg_h2_stream_new(mg_h2_session_t *h, int32_t id) {
  mg_h2_stream_t *st = mg_calloc(1, sizeof *st);
  st->h = h;
  st->id = id;
  st->in_tail = &st->in;
  st->out_tail = &st->out;
  mg_req_t *req = mg_req_new(h->c->server, &h2_sink, st);
  mg_conn_req_client(h->c, req);
  req->http_major = 2, req->http_minor = 0;
  req->keepalive = 1;
  st->req = req;
  st->next = h->streams;
  if (h->streams) h->streams->prev = st;
  h->streams = st;
  h->nopen++;
  return st;
}

/* Checks what HTTP/1.1's parser checks after a head (http1_parse.c, mg_h1_check_head) that
 * HTTP/2's framing has not already settled. 0, or -1 after answering. */
static int check_head(mg_h2_stream_t *st, mg_req_t *req) {
  if (st->f.too_large) {
    mg_req_error(req, 431, "request header fields too large (%s, HTTP/2)", st->f.why);
    return -1;
  }
  if (strcmp(req->method, "CONNECT") == 0) {
    mg_req_error(req, 405, "CONNECT refused: moongate is not a forward proxy");
    return -1;
  }
  const char *host = mg_fields_get(&req->headers, "host");
  if (!host) {
    mg_req_error(req, 400, "HTTP/2 request without :authority or host");
    return -1;
  }
  if (mg_req_set_host(req, host) < 0) {
    mg_req_error(req, 400, "invalid Host \"%.64s\"", host);
    return -1;
  }
  const char *expect = mg_fields_get(&req->headers, "expect");
  if (expect) {
    if (strcasecmp(expect, "100-continue") != 0) {
      mg_req_error(req, 417, "unsupported Expect: %s", expect);
      return -1;
    }
    req->expect_continue = 1;
  }
  return mg_req_set_target(req, req->target);
}

void mg_h2_stream_start(mg_h2_stream_t *st) {
  mg_req_t *req = st->req;
  st->started = 1;
  req->method = st->f.method ? st->f.method : "-";
  req->orig_method = (char *)req->method;
  req->is_head = strcmp(req->method, "HEAD") == 0;
  req->target = st->f.path ? st->f.path : st->f.authority ? st->f.authority : mg_pool_strdup(&req->pool, "-");
  req->head_done = 1;
  const char *cl = mg_fields_get(&req->headers, "content-length");
  if (cl) req->content_length = strtoll(cl, NULL, 10); /* nghttp2 checked its form and the DATA */
  if (st->end_seen && !st->in) req->msg_done = 1;
  else if (!cl) req->chunked = 1; /* the length is known at END_STREAM */
  if (check_head(st, req) < 0) return;
  const mg_settings_t *s = &req->cfg->set;
  if (!req->msg_done && s->client_body_timeout) timer_set(st, MG_H2_T_BODY, s->client_body_timeout);
  mg_phase_start(req);
  mg_h2_stream_deliver(st);
}

/* Bytes of the body to the request (unless it ended): 0, or -1 when the stream must stop
 * delivering (a 413, the stream gone). The window is given back either way. */
static int pass(mg_h2_stream_t *st, const char *data, size_t len) {
  mg_req_t *req = st->req;
  nghttp2_session_consume(st->h->ng, st->id, len);
  if (!req->finished && !req->resp_ended) {
    req->body_received += len;
    req->request_length += len;
    if (req->chunked && req->route && req->route->client_max_body_size && !req->redirects &&
        req->body_received > req->route->client_max_body_size && !req->head_sent) {
      mg_req_error(req, 413, "request body exceeds client_max_body_size");
      return -1;
    }
    if (req->on_body) req->on_body(req, data, len);
  }
  return gone(st) ? -1 : 0;
}

void mg_h2_stream_data(mg_h2_stream_t *st, const uint8_t *data, size_t len) {
  mg_req_t *req = st->req;
  if (req && st->tq.queue == MG_H2_T_BODY) timer_set(st, MG_H2_T_BODY, req->cfg->set.client_body_timeout);
  if (!st->in && req && st->started && !gone(st) && !req->hold_body && !st->paused) {
    /* Nothing queued and the request takes bytes: straight from nghttp2's buffer. */
    if (pass(st, (const char *)data, len) == 0) st->h->wake(st->h);
    return;
  }
  char *copy = mg_malloc(len);
  memcpy(copy, data, len);
  mg_h2_piece_t *p = piece_new(NULL, copy, copy, len);
  *st->in_tail = p;
  st->in_tail = &p->next;
  st->in_bytes += len;
}

void mg_h2_stream_deliver(mg_h2_stream_t *st) {
  mg_req_t *req = st->req;
  if (!req || !st->started || gone(st)) return;
  int consumed = 0;
  while (st->in && !req->hold_body && !st->paused) {
    mg_h2_piece_t *p = st->in;
    st->in = p->next;
    if (!st->in) st->in_tail = &st->in;
    st->in_bytes -= p->len;
    consumed = 1;
    int rc = pass(st, p->data, p->len);
    piece_free(p);
    if (rc < 0) return;
  }
  if (!st->in && st->end_seen && !req->msg_done && !req->hold_body) {
    req->msg_done = 1;
    if (st->tq.queue == MG_H2_T_BODY) timer_set(st, MG_H2_T_NONE, 0);
    if (req->on_body_end && !req->finished) req->on_body_end(req);
  }
  if (consumed && !gone(st)) st->h->wake(st->h);
}

void mg_h2_stream_timeout(mg_h2_stream_t *st, int kind) {
  mg_req_t *req = st->req;
  if (!req || gone(st)) return;
  if (kind == MG_H2_T_BODY) {
    /* The window is withheld by us (a waiting hook, a slow backend): not the client's delay. */
    if (st->in || st->paused || req->hold_body) {
      timer_set(st, MG_H2_T_BODY, req->cfg->set.client_body_timeout);
      return;
    }
    if (!req->head_sent) {
      mg_req_error(req, 408, "client_body_timeout: request body not received in time");
    } else {
      mg_log_error(MG_LOG_INFO, req->id, "client_body_timeout: client %s sent no body in time on stream %d",
                   req->remote, st->id);
      rst(st, NGHTTP2_CANCEL);
    }
    return;
  }
  if (!st->send_timed_out) {
    st->send_timed_out = 1;
    mg_log_error(MG_LOG_INFO, req->id, "send_timeout: client %s took no response bytes in time on stream %d",
                 req->remote, st->id);
    rst(st, NGHTTP2_CANCEL);
  }
  /* Until the RST_STREAM leaves: the session closes the connection if the client reads nothing. */
  timer_set(st, MG_H2_T_SEND, req->cfg->set.send_timeout);
}

void mg_h2_stream_free(mg_h2_stream_t *st) {
  mg_h2_session_t *h = st->h;
  mg_timeq_remove(&h->c->server->h2_timeouts, &st->tq);
  if (st->prev) st->prev->next = st->next;
  else h->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  h->nopen--;
  st->closed = 1;
  mg_req_t *req = st->req;
  st->req = NULL;
  if (req) {
    if (!st->started) {
      mg_req_discard(req);
    } else {
      if (!st->end_sent) {
        req->aborted = 1;
        /* Whether or not the handler is done (a buffered response may be whole in its
         * file), the client did not get the end. */
        if (st->reset_by_peer)
          mg_log_error(MG_LOG_INFO, req->id, "client %s reset stream %d (%s) before the response was complete",
                       req->remote, st->id, nghttp2_http2_strerror(st->close_error));
      }
      mg_req_finish(req);
      mg_req_free(req);
    }
  }
  for (mg_h2_piece_t *p = st->in, *n; p; p = n) n = p->next, piece_free(p);
  for (mg_h2_piece_t *p = st->out, *n; p; p = n) n = p->next, piece_free(p);
  h->out_bytes -= st->out_bytes;
  free(st);
}
