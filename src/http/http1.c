/* http1: see http1.h.
 *
 * Reading: the connection (conn.c) hands this protocol the plaintext it read, in c->rbuf, and
 * this unit feeds it to llhttp. The parser is paused (HPE_PAUSED) at two points: when a
 * request head is complete, so the request can be routed and its handler started before any
 * body byte is delivered, and when a message is complete, so a pipelined request waits in the
 * block until the response before it is done. Unparsed bytes stay in c->rbuf; the connection
 * reads the socket only when c->rbuf is empty and this protocol is ready (h1_ready).
 *
 * Writing: the connection is the request's sink (core/request.h): it frames the head and the
 * body pieces the response API hands it, and writes them through conn.c, which owns each
 * buffer until its write completes. The response is complete when the handler has called
 * mg_req_send_end() and the last write has completed; then the request is logged and freed,
 * and the connection either goes on with the next request or closes with a lingering close
 * (mg_conn_linger), so an unread request body cannot turn the response into a reset. */
#include "http1.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "log.h"
#include "http1_parse.h"
#include "phase.h"

/* A response head is built on the stack in this many bytes (more goes to the heap), then
 * held by the connection until the first body bytes (mg_conn_hold). */
#define HEAD_STACK 1024

static void req_complete(mg_req_t *req);

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
  char tmp[HEAD_STACK];
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
    has_server |= mg_name_eq(f->name, "Server");
    has_date |= mg_name_eq(f->name, "Date");
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
  mg_conn_hold(c, b.data, b.len);
  mg_buf_free(&b);
}

static void h1_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  mg_conn_t *c = req->transport;
  if (req->resp_chunked) {
    uv_buf_t bufs[3];
    char hdr[MG_CONN_COPY_MAX];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
    bufs[0] = uv_buf_init(NULL, 0); /* replaced by the write's own copy of hdr */
    bufs[1] = uv_buf_init((char *)data, (unsigned)len);
    bufs[2] = uv_buf_init("\r\n", 2);
    mg_conn_write_copy(c, bufs, 3, block, heap, hdr, (size_t)hl);
    return;
  }
  uv_buf_t ub = uv_buf_init((char *)data, (unsigned)len);
  mg_conn_write(c, &ub, 1, block, heap);
}

static void h1_flush(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (c->held) mg_conn_write(c, NULL, 0, NULL, NULL);
}

static void h1_end(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  if (req->resp_chunked && !req->is_head) {
    uv_buf_t ub = uv_buf_init("0\r\n\r\n", 5);
    mg_conn_write(c, &ub, 1, NULL, NULL);
  }
  h1_flush(req);
  /* Complete now, unless the request's own message is still being parsed (a response that
   * left at once, before the parser reached the end of the request that asked for it): then
   * the end of the message completes it (h1_process), and keep-alive holds. */
  if (c->writes_pending == 0 && !c->closing && (req->msg_done || !req->keepalive)) req_complete(req);
}
static void h1_abort(mg_req_t *req) { mg_conn_close(req->transport); }

/* The head has not left (it waits for the first body bytes): dropped. */
static int h1_retract(mg_req_t *req) { return mg_conn_drop_held(req->transport); }

static size_t h1_queued(const mg_req_t *req) { return mg_conn_queued(req->transport); }

/* libuv queues a write only when the socket refused it. */
static int h1_client_blocked(const mg_req_t *req) { return mg_conn_queued(req->transport) > 0; }

static void h1_continue(mg_req_t *req) {
  static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  uv_buf_t ub = uv_buf_init(cont, sizeof cont - 1);
  mg_conn_write(req->transport, &ub, 1, NULL, NULL);
}

static void h1_pause_body(mg_req_t *req) { mg_conn_pause_read(req->transport); }

static void h1_resume_body(mg_req_t *req) { mg_conn_resume_read(req->transport); }

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
  mg_conn_process(c);
}

/* A client that only half-closed (peer_eof) still reads the response: not gone. */
static int h1_peer_gone(const mg_req_t *req) {
  const mg_conn_t *c = req->transport;
  return c->closing;
}

static int h1_socket_fd(const mg_req_t *req) { return mg_conn_fd(req->transport); }

static int h1_local(const mg_req_t *req, char *addr, size_t n, int *port) {
  return mg_conn_local(req->transport, addr, n, port);
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
    .client_blocked = h1_client_blocked,
    .pause_body = h1_pause_body,
    .resume_body = h1_resume_body,
    .send_continue = h1_continue,
    .kick = h1_kick,
    .peer_gone = h1_peer_gone,
    .socket_fd = h1_socket_fd,
    .local = h1_local,
};

/* ---- the request lifecycle -------------------------------------------------------------- */

/* A request on this connection: the client's address formatted once per request (nothing
 * is kept per connection). */
static mg_req_t *h1_req_new(mg_conn_t *c) {
  mg_req_t *req = mg_req_new(c->server, &h1_sink, c);
  mg_conn_req_client(c, req);
  return req;
}

/* The connection's request is done with: finished (logged) and freed, with a head it held. */
static void h1_req_end(mg_conn_t *c, mg_req_t *req) {
  mg_req_finish(req);
  if (c->hp.req == req) c->hp.req = NULL;
  mg_conn_drop_held(c);
  mg_req_free(req);
}

/* The head is read: checked, then run. */
static void req_begin(mg_conn_t *c, mg_req_t *req) {
  if (mg_h1_check_head(&c->hp, req) < 0) return;
  const mg_settings_t *s = &req->cfg->set;
  if (s->client_body_timeout && (req->chunked || req->content_length > 0))
    mg_conn_timer_set(c, MG_CONN_T_BODY, s->client_body_timeout);
  else mg_conn_timer_set(c, MG_CONN_T_NONE, 0);
  mg_phase_start(req);
}

static mg_req_t *on_message_begin(mg_h1_parser_t *hp) {
  mg_conn_t *c = (mg_conn_t *)hp;
  mg_conn_timer_set(c, MG_CONN_T_HEADER, c->server->cfg->set.client_header_timeout);
  return h1_req_new(c);
}

static void on_body_seen(mg_h1_parser_t *hp) {
  mg_conn_t *c = (mg_conn_t *)hp;
  if (c->tq.queue == MG_CONN_T_BODY)
    mg_conn_timer_set(c, MG_CONN_T_BODY, c->server->cfg->set.client_body_timeout);
}

static void req_complete(mg_req_t *req) {
  mg_conn_t *c = req->transport;
  int keep = req->keepalive && req->msg_done && !req->aborted;
  h1_req_end(c, req);
  c->nrequests++;
  /* The head already told the client whether the connection stays open; a drain that began
   * since then is honoured on the next response, except when stopping. */
  if (!keep || c->server->stopping) {
    mg_conn_linger(c);
    return;
  }
  llhttp_resume(&c->hp.llhttp);
  mg_conn_timer_set(c, MG_CONN_T_KEEPALIVE, c->server->cfg->set.keepalive_timeout);
  mg_conn_process(c);
}

/* ---- the protocol: what the connection calls --------------------------------------------- */

static int h1_start(mg_conn_t *c) {
  mg_h1_init(&c->hp, &c->server->cfg->set);
  c->hp.begin = on_message_begin;
  c->hp.body_seen = on_body_seen;
  return 0;
}

/* A write completed: the response may be complete, or its handler may go on (on_drain). */
static void h1_written(mg_conn_t *c) {
  mg_req_t *req = c->hp.req;
  if (req && req->resp_ended && c->writes_pending == 0) {
    req_complete(req);
    return;
  }
  if (req && req->on_drain && mg_conn_queued(c) < MG_WRITE_LOW) {
    void (*cb)(mg_req_t *) = req->on_drain;
    req->on_drain = NULL;
    cb(req);
  }
}

static void h1_timeout(mg_conn_t *c, int kind) {
  mg_req_t *req = c->hp.req;
  if (kind == MG_CONN_T_HEADER && req && !req->head_sent) {
    req->keepalive = 0;
    if (!req->target) req->target = mg_pool_strdup(&req->pool, "-");
    mg_req_error(req, 408, "client_header_timeout: request head not received in time");
  } else if (kind == MG_CONN_T_BODY && req && (req->hold_body || c->throttled)) {
    /* The gateway withholds reading (a hook or handler waits, the backend is slow): not the
     * client's delay. The timer measures the client again once reading resumes. */
    mg_conn_timer_set(c, MG_CONN_T_BODY, c->server->cfg->set.client_body_timeout);
  } else if (kind == MG_CONN_T_BODY && req && !req->head_sent) {
    req->keepalive = 0;
    mg_req_error(req, 408, "client_body_timeout: request body not received in time");
  } else {
    mg_conn_close(c);
  }
}

/* The client went away: a request still in progress is cut off. */
static void h1_gone(mg_conn_t *c) {
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
  mg_conn_close(c);
}

/* The client ended its side (a FIN, or a TLS close_notify). After a complete request that is a
 * half-close, which HTTP/1.0 clients may do: the response still goes out and the connection
 * closes after it. But Lua code waiting for that request is abandoned as for a client that
 * went away (nginx with lua_check_client_abort), so that a client that leaves does not hold
 * a descriptor and a coroutine for the whole wait. A request waiting in a balancer's queue
 * (SPEC 20) is given up the same way: nginx takes a client's FIN while it waits for an upstream
 * as the client going away, and a queue place is worth more than a late answer nobody reads. */
static void h1_peer_closed(mg_conn_t *c) {
  mg_req_t *req = c->hp.req;
  if (req && req->msg_done && !req->finished && !c->rbuf && !req->thread && !req->queued) {
    c->peer_eof = 1;
    req->keepalive = 0;
    mg_conn_update_reading(c);
    return;
  }
  h1_gone(c);
}

/* The connection closes: the request it carries is finished (logged) and freed; it was cut
 * unless its response had ended and no write failed. */
static void h1_release(mg_conn_t *c) {
  mg_req_t *req = c->hp.req;
  if (!req) return;
  if (!req->resp_ended || c->broken) req->aborted = 1;
  h1_req_end(c, req);
}

/* 1 when a connection's first bytes are a PROXY protocol header (v1 or v2): what a load
 * balancer sends to a listener that lacks proxy_protocol = true, said so in the log. */
static int begins_with_proxy_header(const mg_conn_t *c) {
  if (c->nrequests || !c->rbuf) return 0;
  const char *p = c->rbuf + c->rbuf_off;
  size_t n = c->rbuf_len - c->rbuf_off;
  return (n >= 6 && memcmp(p, "PROXY ", 6) == 0) || (n >= 12 && memcmp(p, "\r\n\r\n\0\r\nQUIT\n", 12) == 0);
}

static void parse_error(mg_conn_t *c) {
  int status;
  const char *why = mg_h1_error(&c->hp, &status);
  if (begins_with_proxy_header(c)) why = "a PROXY protocol header on a listener without proxy_protocol = true";
  if (!c->hp.req) c->hp.req = h1_req_new(c);
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

/* The parser may go on unless the request it read is complete (its response pending) or
 * held (a hook waits). The connection checks closing and throttled itself. */
static int h1_ready(const mg_conn_t *c) {
  return !(c->hp.req && (c->hp.req->msg_done || c->hp.req->hold_body));
}

/* Parses what rbuf holds for as long as the current request lets it. Returns 1 when the
 * connection or its request moved on and the caller must return at once. */
static int h1_process(mg_conn_t *c) {
  while (c->rbuf && !c->closing && !c->throttled && h1_ready(c)) {
    char *start = c->rbuf + c->rbuf_off;
    size_t n;
    llhttp_errno_t err = mg_h1_execute(&c->hp, start, c->rbuf_len - c->rbuf_off, &n);
    /* $request_length: what the parser took for the request it is on (the first read of a
     * request also counts the empty lines llhttp skips before it). */
    if (c->hp.req && (err == HPE_OK || err == HPE_PAUSED))
      c->hp.req->request_length += err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&c->hp.llhttp) - start);
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
      if (c->tq.queue == MG_CONN_T_BODY || c->tq.queue == MG_CONN_T_HEADER)
        mg_conn_timer_set(c, MG_CONN_T_NONE, 0);
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

const mg_conn_proto_t mg_h1_proto = {
    .name = "http/1.1",
    .start = h1_start,
    .process = h1_process,
    .ready = h1_ready,
    .written = h1_written,
    .peer_closed = h1_peer_closed,
    .gone = h1_gone,
    .timeout = h1_timeout,
    .release = h1_release,
};
