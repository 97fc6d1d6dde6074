/* upstream: see upstream.h.
 *
 * Lifecycle: an upstream belongs to its request until it is detached (up_close), then lives
 * on only until its handles' close callbacks have run. up_close is idempotent and is the only
 * way an upstream ends; after it the request is never touched through the upstream again.
 *
 * Request body: bytes that arrive before the connection is up wait in `pending`; after that
 * they are written as they come. When more than MG_WRITE_HIGH bytes wait for the backend the
 * client is no longer read. A chunked request body cannot be framed by SCGI, so it is spooled
 * into req->body (memory up to 64 KiB, then an unlinked temporary file) and the backend is
 * connected when its exact length is known. A body held whole (spooled, read by
 * req:read_body(), replaced by req:set_body(), a subrequest's) is sent with its exact length:
 * from memory, or from the file a block at a time as the backend takes it. */
#include "upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "balancer.h"
#include "cgi_env.h"
#include "handler.h"
#include "log.h"
#include "lua_request.h"
#include "phase.h"
#include "sendfile.h"
#include "stream.h"
#include "loop.h"

enum { S_WAIT_BODY, S_CONNECTING, S_HEAD, S_BODY, S_DONE };

typedef struct chunk_s {
  struct chunk_s *next;
  size_t len;
  char data[];
} chunk_t;

struct mg_upstream_s {
  mg_stream_t h;
  uv_connect_t connect;
  uv_timer_t timer;
  mg_req_t *req; /* NULL once closed */
  const mg_addr_t *addr;
  mg_balancer_t *balancer;
  mg_member_t *member;
  unsigned char *tried;
  int attempts;
  int state;
  char name[80];
  mg_buf_t head;         /* a response head that arrived in several reads */
  mg_cgi_head_t parsed;  /* the response head, once complete */
  chunk_t *pending, **pending_tail;
  size_t pending_bytes;
  int spool_fd; /* a duplicate of req->body.fd being sent */
  uint64_t spool_off;
  uint64_t bytes_in;
  uint64_t timeout_ms;
  int handles_open;
  unsigned handle_inited : 1, closing : 1, reading : 1, client_paused : 1;
};

static void up_connect(mg_upstream_t *up);
static void up_close(mg_upstream_t *up);
static void spool_pump(mg_upstream_t *up);

/* ---- lifecycle --------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  mg_upstream_t *up = h->data;
  if (--up->handles_open > 0) return;
  mg_buf_free(&up->head);
  free(up->tried);
  free(up);
}

static void free_pending(mg_upstream_t *up) {
  while (up->pending) {
    chunk_t *c = up->pending;
    up->pending = c->next;
    free(c);
  }
  up->pending_tail = &up->pending;
  up->pending_bytes = 0;
}

static void up_close(mg_upstream_t *up) {
  if (up->closing) return;
  up->closing = 1;
  mg_req_t *req = up->req;
  if (req) {
    if (req->upstream_start_ns) req->upstream_usec = (uv_hrtime() - req->upstream_start_ns) / 1000;
    req->up = NULL;
    req->on_body = NULL;
    req->on_body_end = NULL;
    req->handler_cancel = NULL;
    /* A client paused for this upstream's sake stays paused: resuming here would parse in the
     * middle of the caller's work. Its unread body makes the connection close after the
     * response (lingering close reads and drops it). */
    up->req = NULL;
  }
  if (up->member && up->state >= S_HEAD) mg_member_done(up->member, up->bytes_in);
  free_pending(up);
  if (up->spool_fd >= 0) close(up->spool_fd);
  up->spool_fd = -1;
  uv_close((uv_handle_t *)&up->timer, on_handle_closed);
  if (up->handle_inited) uv_close(&up->h.handle, on_handle_closed);
}

static void on_cancel(mg_req_t *req) { up_close(req->up); }

/* Ends the request with an error response (or cuts it if the head is out) and closes. */
static void up_fail(mg_upstream_t *up, int status, const char *fmt, const char *detail) {
  mg_req_t *req = up->req;
  up_close(up);
  if (!req) return;
  if (req->head_sent) mg_req_abort(req, detail);
  else mg_req_error(req, status, fmt, detail);
}

/* ---- request body --------------------------------------------------------------------------- */

typedef struct {
  uv_write_t w;
  mg_upstream_t *up;
  void *mem;
} up_write_t;

static void check_client_flow(mg_upstream_t *up) {
  if (!up->req) return;
  size_t queued = up->pending_bytes + (up->handle_inited ? uv_stream_get_write_queue_size(&up->h.stream) : 0);
  if (!up->client_paused && queued > MG_WRITE_HIGH) {
    up->client_paused = 1;
    mg_req_pause_body(up->req);
  } else if (up->client_paused && queued < MG_WRITE_LOW) {
    up->client_paused = 0;
    mg_req_resume_body(up->req);
  }
}

static void on_write(uv_write_t *w, int status) {
  up_write_t *uw = (up_write_t *)w;
  mg_upstream_t *up = uw->up;
  free(uw->mem);
  free(uw);
  if (up->closing) return;
  if (status < 0) {
    /* The backend stopped reading; it may still answer, so keep reading the response. */
    mg_log_error(MG_LOG_WARN, up->req ? up->req->id : NULL, "writing to backend %s failed: %s", up->name,
                 uv_strerror(status));
    return;
  }
  if (up->timeout_ms) uv_timer_again(&up->timer);
  if (up->spool_fd >= 0 && up->state >= S_HEAD) spool_pump(up);
  check_client_flow(up);
}

/* Writes `mem` (len bytes, owned by the write from here on). */
static void up_write(mg_upstream_t *up, void *mem, const char *data, size_t len) {
  up_write_t *uw = mg_malloc(sizeof *uw);
  uw->up = up, uw->mem = mem;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  if (uv_write(&uw->w, &up->h.stream, &b, 1, on_write) < 0) {
    free(mem);
    free(uw);
  }
}

static void on_body(mg_req_t *req, const char *data, size_t len) {
  mg_upstream_t *up = req->up;
  if (req->chunked) {
    int rc = mg_body_add(&req->body, data, len);
    if (rc < 0) up_fail(up, 500, "spooling the chunked request body failed: %s", strerror(-rc));
    return;
  }
  if (up->state >= S_HEAD) {
    char *copy = mg_malloc(len);
    memcpy(copy, data, len);
    up_write(up, copy, copy, len);
  } else {
    chunk_t *c = mg_malloc(sizeof *c + len);
    c->next = NULL, c->len = len;
    memcpy(c->data, data, len);
    *up->pending_tail = c;
    up->pending_tail = &c->next;
    up->pending_bytes += len;
  }
  check_client_flow(up);
}

static void on_body_end(mg_req_t *req) {
  mg_upstream_t *up = req->up;
  if (!req->chunked) return;
  req->body_ready = 1;
  if (up->state == S_WAIT_BODY) up_connect(up);
}

/* Sends the spooled body file a block at a time: a block is read only when the backend has
 * taken the previous ones (fewer than MG_WRITE_LOW bytes queued), so a large chunked upload
 * never sits in memory whole. */
static void spool_pump(mg_upstream_t *up) {
  while (up->spool_fd >= 0 && uv_stream_get_write_queue_size(&up->h.stream) < MG_WRITE_LOW) {
    char *blk = mg_malloc(MG_BLOCK_SIZE);
    ssize_t n = pread(up->spool_fd, blk, MG_BLOCK_SIZE, (off_t)up->spool_off);
    if (n <= 0) {
      free(blk);
      close(up->spool_fd);
      up->spool_fd = -1;
      return;
    }
    up->spool_off += (uint64_t)n;
    up_write(up, blk, blk, (size_t)n);
  }
}

/* Sends the SCGI head, then the body that is already here. */
static void send_request(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  int held = req->body_ready && !req->redirects;
  uint64_t clen = req->redirects ? 0 : held ? req->body.len : req->content_length > 0 ? (uint64_t)req->content_length : 0;
  mg_vars_t vars;
  mg_vars_init(&vars);
  if (req->env_ref != LUA_NOREF) mg_lua_env_export(req);
  mg_cgi_env_build(req, clen, &vars);
  mg_buf_t b;
  mg_buf_init(&b);
  size_t inline_body = up->pending_bytes <= 16384 ? up->pending_bytes : 0;
  if (held) inline_body = req->body.fd < 0 && req->body.mem.len <= 16384 ? req->body.mem.len : 0;
  mg_buf_reserve(&b, 1024 + inline_body);
  mg_scgi_encode(&vars, &b);
  mg_vars_free(&vars);
  /* A small body goes out in the same write as the head: one syscall for the common POST. */
  if (inline_body && held) {
    mg_buf_append(&b, req->body.mem.data, req->body.mem.len);
  } else if (inline_body) {
    for (chunk_t *c = up->pending; c; c = c->next) mg_buf_append(&b, c->data, c->len);
    free_pending(up);
  }
  size_t len = b.len;
  char *mem = mg_buf_steal(&b);
  up_write(up, mem, mem, len);
  while (up->pending) {
    chunk_t *c = up->pending;
    up->pending = c->next;
    up_write(up, c, c->data, c->len);
  }
  up->pending_tail = &up->pending;
  up->pending_bytes = 0;
  if (held && !inline_body && req->body.len) {
    if (req->body.fd < 0) {
      char *copy = mg_malloc(req->body.mem.len);
      memcpy(copy, req->body.mem.data, req->body.mem.len);
      up_write(up, copy, copy, req->body.mem.len);
    } else {
      up->spool_fd = dup(req->body.fd);
      up->spool_off = 0;
      if (up->spool_fd < 0) {
        up_fail(up, 500, "sending the request body failed: %s", strerror(errno));
        return;
      }
      spool_pump(up);
    }
  }
  check_client_flow(up);
}

/* ---- response ------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  buf->base = mg_block_get();
  buf->len = MG_BLOCK_SIZE;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_client_drained(mg_req_t *req) {
  mg_upstream_t *up = req->up;
  if (!up || up->closing || up->reading) return;
  if (uv_read_start(&up->h.stream, on_alloc, on_read) == 0) up->reading = 1;
}

static void forward_body(mg_upstream_t *up, char *block, const char *data, size_t len) {
  mg_req_t *req = up->req;
  up->bytes_in += len;
  mg_req_send_body(req, block, data, len);
  if (!up->req) return; /* the client went away during the write: the request is gone */
  if (req->resp_length >= 0 && up->bytes_in >= (uint64_t)req->resp_length) {
    /* The whole promised body is here: no need to wait for the backend to close. */
    up_close(up);
    mg_req_send_end(req);
    return;
  }
  if (up->req && mg_req_write_queue(req) > MG_WRITE_HIGH && up->reading) {
    /* The client is slower than the backend: stop reading until it catches up. */
    uv_read_stop(&up->h.stream);
    up->reading = 0;
    mg_req_on_drain(req, on_client_drained);
  }
}

/* The response head is complete: redirect, sendfile, or pass it on. */
/* `data` holds the head and possibly the first body bytes; `block`, when not NULL, is the read
 * block data lives in, owned from here on. */
static void on_head(mg_upstream_t *up, const mg_cgi_head_t *h, char *block, const char *data, size_t len) {
  mg_req_t *req = up->req;
  const mg_route_t *r = req->route;
  if (r->internal_redirect && h->status == 200) {
    for (int i = 0; i < h->nheaders; i++) {
      const mg_header_t *f = &h->headers[i];
      if (strlen(r->internal_redirect) == f->name_len && strncasecmp(f->name, r->internal_redirect, f->name_len) == 0 &&
          f->value_len > 0 && f->value[0] == '/') {
        char *location = mg_pool_strndup(&req->pool, f->value, f->value_len);
        mg_block_put(block);
        up_close(up);
        mg_phase_restart(req, location);
        return;
      }
    }
  }
  req->status = h->status;
  req->upstream_status = h->status;
  req->resp_headers.n = 0;
  const char *sendfile = NULL;
  for (int i = 0; i < h->nheaders; i++) {
    const mg_header_t *f = &h->headers[i];
    if (r->sendfile && strlen(r->sendfile) == f->name_len && strncasecmp(f->name, r->sendfile, f->name_len) == 0) {
      sendfile = mg_pool_strndup(&req->pool, f->value, f->value_len);
      continue;
    }
    mg_fields_add(&req->pool, &req->resp_headers, f->name, f->name_len, f->value, f->value_len);
  }
  if (sendfile) {
    mg_block_put(block);
    up_close(up);
    mg_sendfile_start(req, sendfile);
    return;
  }
  up->state = S_BODY;
  mg_req_send_head(req);
  if (req->is_head || h->status == 204 || h->status == 304) {
    /* No body will be sent: the backend's is not wanted. */
    mg_block_put(block);
    up_close(up);
    if (!req->finished) mg_req_send_end(req);
    return;
  }
  size_t rest = len - h->head_len;
  const char *body = data + h->head_len;
  if (rest && !block) {
    /* The head came in several reads and was assembled in up->head: copy the body bytes out. */
    block = mg_block_get();
    memcpy(block, body, rest);
    body = block;
  }
  if (rest) {
    forward_body(up, block, body, rest);
  } else {
    mg_block_put(block);
    if (req->resp_length == 0) {
      up_close(up);
      mg_req_send_end(req);
    }
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  mg_upstream_t *up = s->data;
  if (nread == 0 || up->closing) {
    mg_block_put(buf->base);
    return;
  }
  mg_req_t *req = up->req;
  if (nread < 0) {
    mg_block_put(buf->base);
    if (up->state == S_HEAD) {
      char why[160];
      snprintf(why, sizeof why, "%s: %s", up->name,
               nread == UV_EOF ? "closed the connection before a complete response header" : uv_strerror((int)nread));
      up_fail(up, 502, "backend %s", why);
      return;
    }
    if (nread != UV_EOF) {
      char why[160];
      snprintf(why, sizeof why, "backend %s: %s", up->name, uv_strerror((int)nread));
      up_close(up);
      mg_req_abort(req, why);
      return;
    }
    /* EOF is the end of a CGI-style body; a short Content-Length is caught by send_end. */
    up_close(up);
    mg_req_send_end(req);
    return;
  }
  if (up->timeout_ms) uv_timer_again(&up->timer);
  if (up->state == S_BODY) {
    forward_body(up, buf->base, buf->base, (size_t)nread);
    return;
  }
  /* Usually the whole head arrives in the first read: parse it in the read block, whose body
   * bytes are then forwarded without a copy. Otherwise the pieces are assembled in up->head. */
  char *block = buf->base;
  const char *data = block;
  size_t len = (size_t)nread;
  if (up->head.len) {
    mg_buf_append(&up->head, block, len);
    mg_block_put(block);
    block = NULL;
    data = up->head.data, len = up->head.len;
  }
  mg_cgi_head_t *h = &up->parsed;
  int rc = mg_cgi_parse(data, len, h);
  size_t limit = req->cfg->set.max_backend_header_size;
  if (rc == MG_CGI_ERROR) {
    char why[160];
    snprintf(why, sizeof why, "%s: %s", up->name, h->error);
    mg_block_put(block);
    up_fail(up, 502, "malformed response from backend %s", why);
    return;
  }
  if ((rc == MG_CGI_DONE && h->head_len > limit) || (rc == MG_CGI_MORE && len > limit)) {
    mg_block_put(block);
    up_fail(up, 502, "response header from backend %s is over max_backend_header_size", up->name);
    return;
  }
  if (rc == MG_CGI_DONE) {
    on_head(up, h, block, data, len);
    return;
  }
  if (block) {
    mg_buf_append(&up->head, block, len);
    mg_block_put(block);
  }
}

/* ---- connecting ------------------------------------------------------------------------------ */

static void on_timeout(uv_timer_t *t) {
  mg_upstream_t *up = t->data;
  if (up->state == S_CONNECTING) {
    if (up->member) mg_member_failed(up->member, mg_now_ms(), "connect timeout");
    up_fail(up, 503, "connecting to backend %s timed out", up->name);
  } else {
    up_fail(up, 504, "backend %s timed out (no data within `timeout`)", up->name);
  }
}

static int pick_member(mg_upstream_t *up);

static void on_retry_closed(uv_handle_t *h) {
  mg_upstream_t *up = h->data;
  up->handles_open--;
  up->handle_inited = 0;
  if (up->closing) {
    if (up->handles_open == 0) on_handle_closed(h);
    return;
  }
  if (pick_member(up) == 0) up_connect(up);
}

static void on_connect(uv_connect_t *cr, int status) {
  mg_upstream_t *up = cr->data;
  if (up->closing) return;
  if (status < 0) {
    char why[160];
    snprintf(why, sizeof why, "connect() to %s failed: %s", up->name, uv_strerror(status));
    if (up->member) {
      mg_member_failed(up->member, mg_now_ms(), uv_strerror(status));
      mg_log_error(MG_LOG_WARN, up->req->id, "%s; trying another member of balancer %s", why, up->balancer->name);
      up->tried[up->member->index - 1] = 1;
      up->member = NULL;
      if (up->attempts < up->balancer->maxattempts) {
        uv_timer_stop(&up->timer);
        uv_close(&up->h.handle, on_retry_closed);
        return;
      }
    }
    up_fail(up, 503, "%s", why);
    return;
  }
  up->state = S_HEAD;
  if (up->member) mg_member_start(up->member);
  /* The request outlives its upstream: the access log needs its own copy of the name. */
  up->req->upstream_name = mg_pool_strdup(&up->req->pool, up->name);
  if (up->timeout_ms) uv_timer_start(&up->timer, on_timeout, up->timeout_ms, up->timeout_ms);
  else uv_timer_stop(&up->timer);
  send_request(up);
  if (up->closing) return;
  if (!up->reading && uv_read_start(&up->h.stream, on_alloc, on_read) == 0) up->reading = 1;
}

static void up_connect(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  /* Only the JSON access log reports the upstream's time: no clock read otherwise. */
  if (!req->upstream_start_ns && req->cfg->set.access_log_json) req->upstream_start_ns = uv_hrtime();
  up->state = S_CONNECTING;
  up->attempts++;
  mg_addr_format(up->addr, up->name, sizeof up->name);
  int rc;
  up->connect.data = up;
  if (up->addr->sa.ss_family == AF_UNIX) {
    uv_pipe_init(req->server->loop, &up->h.pipe, 0);
    up->handle_inited = 1, up->handles_open++;
    up->h.handle.data = up;
    uv_pipe_connect(&up->connect, &up->h.pipe, ((const struct sockaddr_un *)&up->addr->sa)->sun_path, on_connect);
    rc = 0;
  } else {
    uv_tcp_init(req->server->loop, &up->h.tcp);
    up->handle_inited = 1, up->handles_open++;
    up->h.handle.data = up;
    /* No TCP_NODELAY: the head and a small body leave in one write, so Nagle delays nothing,
     * and it saves a setsockopt per request (nginx does not set it on these either). */
    rc = uv_tcp_connect(&up->connect, &up->h.tcp, (const struct sockaddr *)&up->addr->sa, on_connect);
    /* Reading is asked for with the connect: libuv registers the socket once for both
     * directions, where starting it after the connect costs a failing EPOLL_CTL_ADD and a MOD. */
    if (rc == 0 && uv_read_start(&up->h.stream, on_alloc, on_read) == 0) up->reading = 1;
  }
  if (rc < 0) {
    /* No callback comes for a failed call: report it the same way. */
    on_connect(&up->connect, rc);
    return;
  }
  uint64_t ct = up->member && up->member->connect_timeout_ms ? up->member->connect_timeout_ms : req->route->connect_timeout;
  if (ct) uv_timer_start(&up->timer, on_timeout, ct, 0);
}

/* Chooses the member for the next attempt. Returns 0, or -1 after answering 503. */
static int pick_member(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  if (!up->balancer) return 0;
  mg_balancer_t *b = up->balancer;
  mg_member_t *m = NULL;
  int idx = mg_lua_has_phase(req, MG_PHASE_BALANCER) || b->method == MG_LB_LUA ? mg_lua_balancer(req, b, 1) : 0;
  if (idx < 0) {
    up_close(up);
    return -1;
  }
  if (idx > 0 && !up->tried[idx - 1] && mg_member_usable(&b->members[idx - 1], mg_now_ms())) m = &b->members[idx - 1];
  if (!m) {
    const char *route = NULL;
    size_t rl = 0;
    if (b->stickysession)
      rl = mg_balancer_sticky_route(b, mg_fields_join(&req->pool, &req->headers, "Cookie", "; "), req->query, &route);
    char sticky[64] = "";
    if (rl && rl < sizeof sticky) memcpy(sticky, route, rl), sticky[rl] = 0;
    m = mg_balancer_pick(b, rl ? sticky : NULL, mg_now_ms(), up->tried);
  }
  if (!m) {
    up_fail(up, 503, "no usable member in balancer %s", b->name);
    return -1;
  }
  up->member = m;
  up->addr = &m->addr;
  up->timeout_ms = m->timeout_ms ? m->timeout_ms : req->route->timeout;
  return 0;
}

/* --explain: what the backend would receive, reported instead of sent; the request then ends
 * with an empty 204 that explain does not show. */
static void explain_backend(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  mg_vars_t vars;
  mg_vars_init(&vars);
  if (req->env_ref != LUA_NOREF) mg_lua_env_export(req);
  uint64_t clen = req->redirects ? 0 : req->body_ready ? req->body.len : req->content_length > 0 ? (uint64_t)req->content_length : 0;
  mg_cgi_env_build(req, clen, &vars);
  mg_explain->backend(req, up->member, &vars);
  mg_vars_free(&vars);
  up_close(up);
  req->keepalive = 0;
  mg_req_respond(req, 204, NULL, "", 0);
}

void mg_upstream_start(mg_req_t *req) {
  mg_upstream_t *up = mg_calloc(1, sizeof *up);
  up->req = req;
  up->spool_fd = -1;
  up->pending_tail = &up->pending;
  mg_buf_init(&up->head);
  uv_timer_init(req->server->loop, &up->timer);
  up->timer.data = up;
  up->handles_open = 1;
  up->timeout_ms = req->route->timeout;
  req->up = up;
  req->handler_cancel = on_cancel;
  if (!req->redirects && !req->msg_done && !req->body_ready) {
    req->on_body = on_body;
    req->on_body_end = on_body_end;
  }
  if (req->route->kind == MG_TARGET_BALANCER) {
    up->balancer = req->route->balancer;
    up->tried = mg_calloc((size_t)up->balancer->nmembers, 1);
    if (pick_member(up) < 0) return;
  } else {
    up->addr = &req->route->addr;
  }
  if (mg_explain) {
    explain_backend(up);
    return;
  }
  if (!req->redirects) mg_req_continue(req);
  if (req->chunked && !req->redirects && !req->msg_done && !req->body_ready) {
    up->state = S_WAIT_BODY;
    return;
  }
  up_connect(up);
}

const mg_handler_t mg_handler_scgi = {"scgi", mg_upstream_start};
