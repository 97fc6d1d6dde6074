/* request: see request.h.
 *
 * The request's life: mg_req_new (the transport has a request head coming), the phase engine,
 * the handler's response through the API below, mg_req_finish (log hooks, access log) when the
 * sink has sent the last byte or the client has gone, mg_req_free. The response API applies
 * the rules that hold for every transport: the header_filter and body_filter hooks, the last
 * guard on the status, the 500 page that replaces a response whose filters failed, a body
 * never longer than its Content-Length and never shorter without the response being cut. */
#include "request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "compress.h"
#include "hooks.h"
#include "log.h"
#include "loop.h"
#include "path.h"
#include "trace.h"

const mg_explain_t *mg_explain;
const mg_hooks_table_t *mg_hooks;
void (*mg_req_observer)(const mg_req_t *req);

/* ---- the request's life ----------------------------------------------------------------- */

/* Requests come from a per-worker free list; only the fields before the parser's scratch
 * buffer are zeroed: the buffer stays with a reused struct, and the pool's inline storage
 * (2 KiB of the struct's 2.6) needs no clearing. */
static mg_freelist_t req_free_list = MG_FREELIST(mg_req_t, 64);

mg_req_t *mg_req_new(mg_server_t *server, const mg_sink_t *sink, void *transport) {
  mg_req_t *req = mg_free_take(&req_free_list);
  if (req) {
    req->scratch.len = 0;
  } else {
    req = mg_malloc(sizeof *req);
    mg_buf_init(&req->scratch);
  }
  memset(req, 0, offsetof(mg_req_t, scratch));
  mg_pool_init(&req->pool);
  req->sink = sink;
  req->transport = transport;
  req->server = server;
  req->cfg = server->cfg;
  req->start_ns = uv_hrtime();
  /* Request ids are 32 hex digits, as nginx's $request_id: 16 of a random number drawn once
   * per worker process, then 16 of the worker's request counter. Unique within a worker by
   * the counter, across workers and restarts by the random half. */
  /* Drawn at a worker's first request (the master never makes one): no system call after. */
  static int drawn;
  static char prefix[17];
  if (!drawn) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint64_t)getpid() * 0x9e3779b97f4a7c15u ^ uv_hrtime();
    mg_fmt_hex_fixed(prefix, r, 16);
    drawn = 1;
  }
  memcpy(req->id, prefix, 16);
  mg_fmt_hex_fixed(req->id + 16, ++server->nreqs, 16);
  req->id[32] = 0;
  req->content_length = -1;
  req->status = 200;
  req->resp_length = -1;
  mg_body_init(&req->body);
  return req;
}

void mg_req_free(mg_req_t *req) {
  if (req->holds) {
    /* The transport lets go of it now (a keep-alive connection serves its next request). */
    req->free_deferred = 1;
    req->transport = NULL;
    return;
  }
  mg_body_reset(&req->body);
  /* The scratch buffer goes back with the struct, unless it grew past a typical head piece. */
  if (mg_free_full(&req_free_list) || req->scratch.cap > MG_SCRATCH_KEEP) mg_buf_free(&req->scratch);
  mg_pool_free(&req->pool); /* runs the cleanups of the layers above (the Lua binding's) */
  mg_free_put(&req_free_list, req);
}

void mg_req_hold(mg_req_t *req) { req->holds++; }

void mg_req_unhold(mg_req_t *req) {
  if (--req->holds == 0 && req->free_deferred) mg_req_free(req);
}

void mg_req_stop(mg_req_t *req) {
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
      .status = mg_req_logged_status(req),
      .bytes_sent = req->bytes_sent,
      .referer = mg_fields_get(&req->headers, "Referer"),
      .user_agent = mg_fields_get(&req->headers, "User-Agent"),
      .usec = (uv_hrtime() - req->start_ns) / 1000,
      .upstream = req->upstream_name,
      .request_id = req->id,
      .route = req->route ? req->route->match : NULL,
      .upstream_status = req->upstream_status,
      .upstream_usec = req->upstream_usec,
      .trace_id = req->traced ? req->trace_id : NULL,
      .span_id = req->traced ? req->span_id : NULL,
  };
  mg_log_access(&e);
}

/* The request ends while a hook or handler waits for something: that wait is abandoned. */
static void abandon_wait(mg_req_t *req) {
  if (!req->thread) return;
  if (mg_hooks) mg_hooks->abandon(req);
  req->thread = NULL;
}

static void observe(mg_req_t *req) {
  if (req->observed) return;
  req->observed = 1;
  if (mg_req_observer) mg_req_observer(req);
}

void mg_req_finish(mg_req_t *req) {
  if (req->finished) return;
  req->finished = 1;
  req->server->nfinished++;
  abandon_wait(req);
  mg_req_stop(req);
  if (mg_hooks && mg_req_hook_count(req, MG_PHASE_LOG)) mg_hooks->log(req);
  if (req->target) access_log(req);
  observe(req);
}

void mg_req_discard(mg_req_t *req) {
  req->finished = 1;
  req->server->nfinished++;
  abandon_wait(req);
  mg_req_stop(req);
  mg_req_free(req);
}

mg_req_t *mg_req_new_child(mg_req_t *parent, const mg_sink_t *sink, void *transport) {
  mg_req_t *req = mg_req_new(parent->server, sink, transport);
  req->is_subrequest = 1;
  req->parent = parent;
  memcpy(req->id, parent->id, sizeof req->id); /* as nginx's: one $request_id per client request */
  req->depth = parent->depth + 1;
  req->http_major = parent->http_major, req->http_minor = parent->http_minor;
  req->host = parent->host ? mg_pool_strdup(&req->pool, parent->host) : NULL;
  req->remote = mg_pool_strdup(&req->pool, parent->remote);
  req->remote_port = parent->remote_port;
  req->remote_no_port = parent->remote_no_port;
  req->peer = parent->peer ? mg_pool_strdup(&req->pool, parent->peer) : req->remote;
  req->peer_port = parent->peer_port;
  req->realip = parent->realip;
  req->is_tls = parent->is_tls;
  mg_trace_child(req, parent);
  req->head_done = 1, req->msg_done = 1;
  mg_buf_free(&req->scratch);
  return req;
}

void mg_req_release(mg_req_t *req) {
  mg_req_stop(req);
  abandon_wait(req);
  mg_req_free(req);
}

int mg_req_set_target(mg_req_t *req, const char *target) {
  char *path, *query;
  size_t path_len;
  int n = mg_target_parse(&req->pool, target, strlen(target), req->cfg->set.allow_encoded_slashes, &path, &path_len,
                          &query);
  if (n == MG_PATH_ENCODED_SLASH) {
    mg_req_error(req, 404, "encoded slash in path (allow_encoded_slashes is off)");
    return -1;
  }
  if (n < 0) {
    mg_req_error(req, 400, n == MG_PATH_BAD_TARGET ? "bad request target" : "bad path");
    return -1;
  }
  req->path = path, req->path_len = path_len, req->query = query;
  return 0;
}

int mg_req_set_host(mg_req_t *req, const char *host) {
  size_t hl = strlen(host);
  if (!mg_host_valid(host, hl)) return -1;
  const char *colon = host[0] == '[' ? strchr(host, ']') : strchr(host, ':');
  if (host[0] == '[' && colon) hl = (size_t)(colon - host + 1);
  else if (colon) hl = (size_t)(colon - host);
  req->host = mg_pool_strndup(&req->pool, host, hl);
  for (char *h = req->host; *h; h++) *h = (char)(*h >= 'A' && *h <= 'Z' ? *h + 32 : *h);
  return 0;
}

int mg_req_hook_count(const mg_req_t *req, int phase) {
  /* Global hooks (mg.on) are for client requests; a subrequest runs its route's hooks only. */
  int n = req->is_subrequest ? 0 : req->cfg->hooks[phase].n;
  return n + (req->route ? req->route->hooks[phase].n : 0);
}

int mg_req_hook_at(const mg_req_t *req, int phase, int i) {
  int ng = req->is_subrequest ? 0 : req->cfg->hooks[phase].n;
  return i < ng ? req->cfg->hooks[phase].refs[i] : req->route->hooks[phase].refs[i - ng];
}

/* ---- the transport's side ----------------------------------------------------------------- */

int mg_req_local(const mg_req_t *req, char *addr, size_t n, int *port) {
  if (req->sink->local) return req->sink->local(req, addr, n, port);
  if (req->parent) return mg_req_local(req->parent, addr, n, port);
  snprintf(addr, n, "%s", "");
  *port = 0;
  return -1;
}

int mg_req_socket_fd(const mg_req_t *req) {
  return req->body_filtered || req->compress || !req->sink->socket_fd ? -1 : req->sink->socket_fd(req);
}

int mg_req_peer_gone(const mg_req_t *req) {
  if (req->aborted) return 1;
  return req->sink->peer_gone ? req->sink->peer_gone(req) : 0;
}

void mg_req_pause_body(mg_req_t *req) {
  if (req->sink->pause_body) req->sink->pause_body(req);
}

void mg_req_resume_body(mg_req_t *req) {
  if (req->sink->resume_body) req->sink->resume_body(req);
}

void mg_req_continue(mg_req_t *req) {
  if (!req->expect_continue || req->continue_sent || req->msg_done || !req->sink->send_continue) return;
  req->continue_sent = 1;
  req->sink->send_continue(req);
}

void mg_req_read_body(mg_req_t *req) {
  req->hold_body = 0;
  mg_req_continue(req);
  if (req->sink->kick) req->sink->kick(req->transport);
}

/* ---- the response --------------------------------------------------------------------------- */

void mg_req_flush(mg_req_t *req) {
  if (req->sink->flush) req->sink->flush(req);
}

size_t mg_req_write_queue(const mg_req_t *req) { return req->sink->queued ? req->sink->queued(req) : 0; }

int mg_req_client_blocked(const mg_req_t *req) { return req->sink->client_blocked ? req->sink->client_blocked(req) : 1; }

void mg_req_on_drain(mg_req_t *req, void (*cb)(mg_req_t *req)) { req->on_drain = cb; }

static int status_has_body(int status) { return !(status < 200 || status == 204 || status == 304); }

static const char failed_page[] = "500 Internal Server Error\n";

void mg_req_send_head(mg_req_t *req) {
  if (req->head_sent || req->aborted) return; /* a cut response sends nothing more */
  /* SPEC 19: a URI error page answers with the status it stands for. */
  if (req->errpage_uri && req->status >= 200 && req->status < 300) req->status = req->errpage_status;
  if (req->errpage_retry_after && req->status == req->errpage_status && !mg_fields_get(&req->resp_headers, "Retry-After"))
    mg_fields_set(&req->pool, &req->resp_headers, "Retry-After", req->errpage_retry_after);
  if (mg_hooks && mg_req_hook_count(req, MG_PHASE_HEADER_FILTER)) mg_hooks->header_filter(req);
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
  if (!req->filter_failed) mg_compress_head(req); /* SPEC 19 */
  req->head_sent = 1;
  if (!req->filter_failed && !req->body_filter_off && !req->is_head && status_has_body(req->status) && mg_hooks &&
      mg_req_hook_count(req, MG_PHASE_BODY_FILTER)) {
    /* The filters may change the body's length: the response is chunked (or close-delimited). */
    req->body_filtered = 1;
    mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
  }
  const char *cl = mg_fields_get(&req->resp_headers, "Content-Length");
  req->resp_length = cl ? strtoll(cl, NULL, 10) : -1;
  if (!status_has_body(req->status)) req->resp_length = 0; /* the sink drops a Content-Length */
  req->sink->head(req);
  if (req->filter_failed && !req->is_head) {
    req->bytes_sent = sizeof failed_page - 1;
    req->sink->body(req, NULL, NULL, failed_page, sizeof failed_page - 1);
  }
}

/* Sends len bytes at data, owned by `block` (a pooled block) or `heap` (malloc'd), either
 * released when the sink is done with them. */
static void sink_out(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  req->bytes_sent += len;
  req->sink->body(req, block, heap, data, len);
}

static void body_out(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  if (req->compress) {
    /* SPEC 19: through the compressor, which sends its own blocks on. */
    mg_compress_body(req, data, len, sink_out);
    mg_block_put(block);
    free(heap);
    return;
  }
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
  if (req->resp_length >= 0 && req->bytes_sent == (uint64_t)req->resp_length) observe(req); /* the last bytes */
  req->sink->body(req, block, heap, data, len);
}

/* A body piece through the body_filter hooks (eof on the last call). Returns -1 when a hook
 * failed: the response is cut (its head is out) or replaced by a 500 (it is not). */
static int filtered_out(mg_req_t *req, const char *data, size_t len, int eof) {
  char *out;
  size_t ol;
  if (mg_hooks->body_filter(req, data, len, eof, &out, &ol) < 0) {
    if (req->bytes_sent == 0 && req->sink->retract && req->sink->retract(req)) {
      /* Nothing is on the wire yet (the head waits for the first bytes): the handler stops
       * and the client gets a clean 500, as for any Lua error before the head is sent. */
      req->head_sent = 0, req->body_filtered = 0, req->body_filter_off = 1;
      mg_req_stop(req);
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

void mg_req_send_heap(mg_req_t *req, char *heap, size_t len) {
  if (!req->head_sent) mg_req_send_head(req);
  if (req->is_head || !status_has_body(req->status) || len == 0 || req->aborted || req->resp_ended) {
    free(heap);
    return;
  }
  if (req->body_filtered) {
    filtered_out(req, heap, len, 0);
    free(heap);
    return;
  }
  body_out(req, NULL, heap, heap, len);
}

char *mg_req_body_space(mg_req_t *req, size_t *room) {
  if (!req->head_sent || !req->compress || req->body_filtered || req->aborted || req->resp_ended) return NULL;
  return mg_compress_space(req, room);
}

void mg_req_commit_body(mg_req_t *req, size_t n) { mg_compress_commit(req, n); }

void mg_req_send_end(mg_req_t *req) {
  /* A response already cut stays cut: the sink saw its abort, and an end now would pass
   * what it got off as whole. */
  if (req->aborted) return;
  if (!req->head_sent) mg_req_send_head(req);
  if (req->body_filtered) {
    /* The last call, with eof: a filter may still add its tail. */
    req->body_filtered = 0;
    if (filtered_out(req, "", 0, 1) < 0) return;
  }
  if (req->compress && mg_compress_end(req, sink_out) < 0) {
    mg_req_abort(req, "compression failed");
    return;
  }
  if (req->resp_length >= 0 && !req->is_head && status_has_body(req->status) &&
      req->bytes_sent < (uint64_t)req->resp_length) {
    mg_req_abort(req, "response shorter than its Content-Length");
    return;
  }
  req->resp_ended = 1;
  observe(req);
  req->sink->end(req);
}

void mg_req_abort(mg_req_t *req, const char *why) {
  if (why) mg_log_error(MG_LOG_ERROR, req->id, "response aborted: %s, client %s", why, req->remote);
  req->aborted = 1;
  req->sink->abort(req);
}

int mg_status_answers_nothing(int status) { return status == 444 || status == 408 || status == 499; }

void mg_req_drop(mg_req_t *req, int status) {
  if (req->aborted || req->resp_ended) return;
  req->dropped = (uint16_t)status;
  if (!req->head_sent) req->status = status; /* else logged with the status sent, cut */
  req->keepalive = 0;
  mg_req_abort(req, NULL);
}

int mg_req_logged_status(const mg_req_t *req) {
  /* The drop's own field: a late mg_req_respond may still set req->status (it sends nothing). */
  if (req->dropped && !req->head_sent) return req->dropped;
  return req->aborted && !req->head_sent ? 499 : req->status;
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
  if (len && !req->is_head && !req->filter_failed && status_has_body(req->status)) {
    char *copy = mg_malloc(len);
    memcpy(copy, body, len);
    body_out(req, NULL, copy, copy, len);
  }
  mg_req_send_end(req);
}

int (*mg_req_errpage)(mg_req_t *req, int status);

void mg_req_unread_body_closes(mg_req_t *req) {
  /* One without a body can go on: its head is all of it; a body held for a hook that waited
   * (hold_body) has not reached the parser's end either. */
  if (!req->msg_done && (req->content_length > 0 || req->chunked || req->hold_body)) req->keepalive = 0;
}

void mg_req_error_closes(mg_req_t *req, int status) {
  mg_req_unread_body_closes(req);
  /* nginx's list (ngx_http_special_response_handler), checked against it: a request refused
   * as malformed or too large, or one the server failed, ends its connection; what follows it
   * on the stream cannot be trusted to be the next request. 408 and 431 from the parser close
   * on their own path. */
  if (status == 400 || status == 413 || status == 414 || status == 500 || status == 501) req->keepalive = 0;
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
  mg_req_error_closes(req, status);
  if (mg_req_errpage && mg_req_errpage(req, status)) return; /* SPEC 19: error_pages */
  /* An error response replaces whatever the handler had prepared. */
  req->resp_headers.n = 0;
  char body[128];
  int n = snprintf(body, sizeof body, "%d %s\n", status, mg_http_reason(status));
  mg_req_respond(req, status, "text/plain", body, (size_t)n);
}
