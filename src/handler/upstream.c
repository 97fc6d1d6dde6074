/* upstream: see upstream.h.
 *
 * Lifecycle: an upstream belongs to its request until it is detached (up_close), then lives
 * on only until its handles' close callbacks have run. up_close is idempotent and is the only
 * way an upstream ends; after it the request is never touched through the upstream again.
 *
 * Request body: with request_buffering (the default, SPEC 19) it is spooled into req->body
 * (memory up to 64 KiB, then an unlinked temporary file) and the backend is connected only
 * when the last byte is in, so a slow upload never holds a pre-fork SCGI worker. A chunked
 * body is always spooled: SCGI cannot frame it before its exact length is known. Without
 * buffering, bytes that arrive before the connection is up wait in `pending`; after that they
 * are written as they come, and when more than MG_WRITE_HIGH bytes wait for the backend the
 * client is no longer read. A body held whole (spooled, read by
 * req:read_body(), replaced by req:set_body(), a subrequest's) is sent with its exact length:
 * from memory, or from the file a block at a time as the backend takes it.
 *
 * The backend socket is not a libuv stream: it is made and connected here and watched by
 * fdio (edge-triggered, registered once for its life, removed by its close), and the SCGI
 * request is written right after connect() -- on loopback the connection is usually up by
 * then; if not, the write waits for the socket to become writable. A write that succeeds is
 * what establishes the connection (no SO_ERROR query); a refused connect shows as the
 * connect(), the write or an error event failing. Writes go through a queue of owned buffers
 * (sendmsg, up to 16 at a time); reads take 64 KiB blocks until EAGAIN, or until a short read
 * after the peer's FIN, which is the end without one more read. */
#include "upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "balancer.h"
#include "cgi_env.h"
#include "errpage.h"
#include "handler.h"
#include "log.h"
#include "hooks.h"
#include "passive.h"
#include "phase.h"
#include "queue.h"
#include "resp_buffer.h"
#include "sendfile.h"
#include "fdio.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_page.h"

#include "upstream_int.h"

/* Upstreams come from a per-worker free list: one per proxied request. */
static mg_freelist_t up_free_list = MG_FREELIST(mg_upstream_t, 64);

static void up_connect(mg_upstream_t *up);
static void up_close(mg_upstream_t *up);

/* SPEC 20: gives back the member slot this request holds, and lets this worker's waiters
 * know. Every path that ends the request's use of a member comes here: the response read, a
 * failure, the client gone, an internal redirect, a retry on another member. */
static void release_slot(mg_upstream_t *up) {
  mg_member_t *m = up->slot;
  if (!m) return;
  up->slot = NULL;
  mg_cap_release(m->cap);
  mg_queue_kick(up->balancer, up->timer.loop);
}
static void spool_pump(mg_upstream_t *up);

/* ---- lifecycle --------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  mg_upstream_t *up = h->data;
  if (--up->handles_open > 0) return;
  mg_buf_free(&up->head);
  if (up->tried != up->tried_small) free(up->tried);
  mg_free_put(&up_free_list, up);
}

static void wq_free(mg_upstream_t *up, wq_t *w) {
  free(w->mem);
  if (w != &up->head_wq) free(w);
}

static void free_wq(mg_upstream_t *up) {
  while (up->wq) {
    wq_t *w = up->wq;
    up->wq = w->next;
    wq_free(up, w);
  }
  up->wq_tail = &up->wq;
  up->wq_bytes = 0;
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

/* The upstream's time ($upstream_response_time) ends once: when its whole answer is here
 * (before the client can have it all, and so before the request's own time ends and is
 * counted) or when the connection closes first. */
static void stop_clock(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  if (up->timed || !req || !req->upstream_start_ns) return;
  up->timed = 1;
  req->upstream_usec = (uv_hrtime() - req->upstream_start_ns) / 1000;
  /* SPEC 20: the route's histogram of this member (a plain scgi route has one). */
  mg_metrics_upstream(mg_metrics_route_of(req), up->member ? up->member->index - 1 : 0, req->upstream_usec);
}

static void up_close(mg_upstream_t *up) {
  if (up->closing) return;
  up->closing = 1;
  mg_req_t *req = up->req;
  if (req) {
    stop_clock(up);
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
  if (req) req->queued = 0;
  mg_queue_leave(&up->wait, MG_QLEAVE_GONE); /* a waiter whose client went away */
  release_slot(up);
  mg_rbuf_free(up->rbuf);
  up->rbuf = NULL;
  free_pending(up);
  free_wq(up);
  if (up->spool_fd >= 0) close(up->spool_fd);
  up->spool_fd = -1;
  mg_fdio_close(&up->io);
  /* The timer's close callback frees the upstream: after this loop turn's fdio events. */
  uv_close((uv_handle_t *)&up->timer, on_handle_closed);
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

static void check_client_flow(mg_upstream_t *up) {
  if (!up->req) return;
  size_t queued = up->pending_bytes + up->wq_bytes;
  if (!up->client_paused && queued > MG_WRITE_HIGH) {
    up->client_paused = 1;
    mg_req_pause_body(up->req);
  } else if (up->client_paused && queued < MG_WRITE_LOW) {
    up->client_paused = 0;
    mg_req_resume_body(up->req);
  }
}

/* Restarts the inactivity timer after traffic. uv_timer_again counts from the loop's cached
 * time, so a second re-arm within the same loop millisecond would set the very deadline the
 * timer already has: skipped (a 12-byte answer read right after its request was written no
 * longer costs a timer heap removal and insertion). */
static void timer_rearm(mg_upstream_t *up) {
  uint64_t now = uv_now(up->timer.loop);
  if (now == up->armed_ms && uv_is_active((uv_handle_t *)&up->timer)) return;
  up->armed_ms = now;
  uv_timer_again(&up->timer);
}

/* Writes what the queue holds until it is empty or the socket is full. Returns 0, or -errno
 * when the socket refused the bytes (while connecting: the connect failed). A write error on
 * an established connection is not fatal: the backend stopped reading but may still answer,
 * so the queue is dropped and the response is still read. */
static int up_flush(mg_upstream_t *up) {
  if (up->flushing || up->io.fd < 0 || up->write_failed) return 0;
  up->flushing = 1;
  int wrote = 0, rc = 0;
  for (;;) {
    while (up->wq) {
      struct iovec iov[16];
      int n = 0;
      for (wq_t *w = up->wq; w && n < 16; w = w->next) iov[n].iov_base = (void *)w->data, iov[n].iov_len = w->len, n++;
      /* sendmsg rather than writev: MSG_NOSIGNAL, so a backend that closed early is an EPIPE
       * here whatever the process does with SIGPIPE (the server ignores it; embedders such as
       * the fuzz harness need not). */
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
      ssize_t k = sendmsg(up->io.fd, &msg, MSG_NOSIGNAL);
      if (k < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) up->writable = 0;
        else rc = -errno;
        goto out;
      }
      wrote = 1;
      up->wq_bytes -= (size_t)k;
      while (k > 0) {
        wq_t *w = up->wq;
        if ((size_t)k < w->len) {
          w->data += k, w->len -= (size_t)k;
          break;
        }
        k -= (ssize_t)w->len;
        up->wq = w->next;
        wq_free(up, w);
      }
      if (!up->wq) up->wq_tail = &up->wq;
    }
    /* The queue is empty: the next blocks of a spooled body, if it is being sent. */
    if (up->spool_fd >= 0 && up->state >= S_HEAD) {
      spool_pump(up);
      if (up->wq) continue;
    }
    break;
  }
out:
  up->flushing = 0;
  if (rc < 0 && up->state >= S_HEAD) {
    mg_log_error(MG_LOG_WARN, up->req ? up->req->id : NULL, "writing to backend %s failed: %s", up->name, strerror(-rc));
    up->write_failed = 1;
    free_wq(up);
    if (up->spool_fd >= 0) close(up->spool_fd);
    up->spool_fd = -1;
    rc = 0;
  }
  if (wrote && up->timeout_ms && up->state >= S_HEAD) timer_rearm(up);
  if (wrote) check_client_flow(up);
  return rc;
}

/* Queues entry w (NULL: a new one) for `mem` (len bytes at data, owned from here on; NULL
 * when the bytes are the upstream's own) and writes at once when connected. */
static void up_write_entry(mg_upstream_t *up, wq_t *w, void *mem, const char *data, size_t len) {
  if (up->write_failed) {
    free(mem);
    return;
  }
  if (!w) w = mg_malloc(sizeof *w);
  w->next = NULL, w->mem = mem, w->data = data, w->len = len;
  *up->wq_tail = w;
  up->wq_tail = &w->next;
  up->wq_bytes += len;
  if (up->state >= S_HEAD) up_flush(up);
}

static void up_write(mg_upstream_t *up, void *mem, const char *data, size_t len) { up_write_entry(up, NULL, mem, data, len); }

static void on_body(mg_req_t *req, const char *data, size_t len) {
  mg_upstream_t *up = req->up;
  if (up->spool) {
    int rc = mg_body_add(&req->body, data, len);
    if (rc < 0) up_fail(up, 500, "spooling the request body to a temporary file failed: %s", strerror(-rc));
    return;
  }
  if (up->head_queued) {
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

static int pick_member(mg_upstream_t *up, int fresh);

static void on_body_end(mg_req_t *req) {
  mg_upstream_t *up = req->up;
  if (!up->spool) return;
  req->body_ready = 1;
  if (up->state != S_WAIT_BODY) return;
  /* A balancer's member is chosen (and its slot taken) once the body is in: a slow upload
   * holds no slot of a busy app. */
  if (up->balancer && !up->member && pick_member(up, 1) != 0) return;
  up_connect(up);
}

/* Sends the spooled body file a block at a time: a block is read only when the backend has
 * taken the previous ones (fewer than MG_WRITE_LOW bytes queued), so a large chunked upload
 * never sits in memory whole. */
static void spool_pump(mg_upstream_t *up) {
  while (up->spool_fd >= 0 && up->wq_bytes < MG_WRITE_LOW) {
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
  mg_var_t storage[48];
  mg_vars_t vars;
  mg_vars_init_in(&vars, storage, (int)(sizeof storage / sizeof *storage));
  if (req->lua) mg_hooks->env_export(req);
  mg_cgi_env_build(req, clen, &vars);
  size_t inline_body = up->pending_bytes <= 16384 ? up->pending_bytes : 0;
  if (held) inline_body = req->body.fd < 0 && req->body.mem.len <= 16384 ? req->body.mem.len : 0;
  size_t body_vars, head_len = mg_scgi_encoded_len(&vars, &body_vars), len = head_len + inline_body;
  /* Usually the head (and a small body) fits in the upstream's own buffer. */
  char *mem = len <= sizeof up->head_mem ? NULL : mg_malloc(len);
  char *p = mem ? mem : up->head_mem;
  mg_scgi_encode_to(&vars, body_vars, p);
  mg_vars_free(&vars);
  /* A small body goes out in the same write as the head: one syscall for the common POST. */
  if (inline_body && held) {
    memcpy(p + head_len, req->body.mem.data, req->body.mem.len);
  } else if (inline_body) {
    size_t at = head_len;
    for (chunk_t *c = up->pending; c; c = c->next) memcpy(p + at, c->data, c->len), at += c->len;
    free_pending(up);
  }
  up_write_entry(up, &up->head_wq, mem, p, len);
  while (up->pending) {
    chunk_t *c = up->pending;
    up->pending = c->next;
    up_write(up, c, c->data, c->len);
  }
  up->pending_tail = &up->pending;
  up->pending_bytes = 0;
  up->head_queued = 1;
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

/* ---- passive health and retries (SPEC 20, passive.c) ------------------------------------------ */

/* Whether a member other than the current one and those already tried could take the request. */
static int another_member(const mg_upstream_t *up, uint64_t now) {
  const mg_balancer_t *b = up->balancer;
  for (int i = 0; i < b->nmembers; i++) {
    const mg_member_t *m = &b->members[i];
    if (m != up->member && !up->tried[i] && !(m->flags & MG_MEMBER_DRAINING) && mg_member_usable(m, now)) return 1;
  }
  return 0;
}

/* The answer of this attempt is dropped and the request goes to another member as if it had
 * never been sent: a new connection, the SCGI head built again, a held body sent again. */
static void up_retry(mg_upstream_t *up, const char *why) {
  mg_req_t *req = up->req;
  mg_log_error(MG_LOG_NOTICE, req->id, "%s; retrying %s on another member of balancer %s", why, req->method, up->balancer->name);
  if (up->state >= S_HEAD) mg_member_done(up->member, up->bytes_in);
  up->tried[up->member->index - 1] = 1;
  up->member = NULL;
  release_slot(up); /* SPEC 20: the member's max_conns slot goes back before another is taken */
  mg_fdio_close(&up->io);
  uv_timer_stop(&up->timer);
  free_wq(up);
  free_pending(up);
  if (up->spool_fd >= 0) close(up->spool_fd);
  up->spool_fd = -1;
  up->head.len = 0;
  up->head_queued = up->write_failed = 0;
  up->bytes_in = 0;
  if (pick_member(up, 0) == 0) up_connect(up);
}

/* The attempt ended with `status` (timeout: no data within `timeout`, status 504), before
 * anything reached the client: passive health counts it, and retries may try another member.
 * `why` is the log line's reason; NULL for a response head, whose reason ("backend X answered
 * N") is only formatted when the request is retried, so a 200 costs no printf.
 * Returns 1 when the request was retried (the caller drops the answer), 0 to go on with it. */
static int attempt_ended(mg_upstream_t *up, int status, int timeout, const char *why) {
  mg_balancer_t *b = up->balancer;
  if (!b || !b->passive || !up->member) return 0;
  uint64_t now = mg_now_ms();
  mg_passive_report(b, up->member, status, timeout, now);
  mg_req_t *req = up->req;
  if (req->head_sent || !another_member(up, now)) return 0;
  if (!mg_passive_retry(b, req->method, up->resendable, status, timeout, up->attempts, now)) return 0;
  char answered[160];
  if (!why) {
    snprintf(answered, sizeof answered, "backend %s answered %d", up->name, status);
    why = answered;
  }
  up_retry(up, why);
  return 1;
}

/* A response head with `status` came from the backend. */
static int attempt_answered(mg_upstream_t *up, int status) {
  return attempt_ended(up, status, 0, NULL);
}

/* The attempt failed with a gateway error (502, or 504 for a timeout) and no head was sent: the
 * request is retried, or ends with the error. */
static void attempt_failed(mg_upstream_t *up, int status, int timeout, const char *why) {
  if (attempt_ended(up, status, timeout, why)) return;
  up_fail(up, status, "%s", why);
}

/* ---- response ------------------------------------------------------------------------------ */

static void on_client_drained(mg_req_t *req) {
  mg_upstream_t *up = req->up;
  if (!up || up->closing || up->reading) return;
  up->reading = 1;
  mg_fdio_again(&up->io); /* what is already readable is read on the next turn */
}

/* The backend's body is complete: the upstream closes (the backend is free) and the client
 * gets the end, after what the response buffer still holds. */
static void body_complete(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  mg_rbuf_t *rb = up->rbuf;
  up->rbuf = NULL;
  up_close(up);
  if (rb) mg_rbuf_end(rb);
  else mg_req_send_end(req);
}

static void on_buffer_space(void *arg) { on_client_drained(((mg_upstream_t *)arg)->req); }

static void forward_body(mg_upstream_t *up, char *block, const char *data, size_t len) {
  mg_req_t *req = up->req;
  up->bytes_in += len;
  int complete = req->resp_length >= 0 && up->bytes_in >= (uint64_t)req->resp_length;
  /* SPEC 20: the member is done once its whole answer is here, before the client can have
   * it all and send its next request to another worker. */
  if (complete) release_slot(up), stop_clock(up);
  const mg_route_t *r = req->route;
  if (!up->rbuf && r->response_buffering && mg_req_write_queue(req) + len > r->response_buffer_size)
    up->rbuf = mg_rbuf_new(req, on_buffer_space, up); /* the client falls behind: buffer from here on */
  if (up->rbuf) {
    int rc = mg_rbuf_put(up->rbuf, block, data, len);
    if (!up->req) return; /* the client went away during the write */
    if (rc < 0) {
      up_close(up);
      mg_req_abort(req, "response buffering failed");
    } else if (complete) {
      body_complete(up);
    } else if (rc == 1) {
      up->reading = 0; /* the buffer says wait (resp_buffer.h): on_buffer_space reads on */
    }
    return;
  }
  mg_req_send_body(req, block, data, len);
  if (!up->req) return; /* the client went away during the write: the request is gone */
  if (complete) {
    /* The whole promised body is here: no need to wait for the backend to close. */
    body_complete(up);
    return;
  }
  if (mg_req_write_queue(req) > MG_WRITE_HIGH && up->reading) {
    /* The client is slower than the backend: stop reading until it catches up. */
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
  if (up->balancer && up->balancer->passive && attempt_answered(up, h->status)) {
    mg_block_put(block); /* the answer retried away: nothing of it reaches the client */
    return;
  }
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
  req->upstream_status = h->status;
  if (mg_errpage_intercepts(req, h->status)) {
    /* SPEC 19: intercept_errors: the route's error page answers instead of the backend. */
    mg_block_put(block);
    up_close(up);
    if (!mg_errpage_try(req, h->status)) mg_req_error(req, h->status, NULL);
    return;
  }
  req->status = h->status;
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
  /* SPEC 20: an answer that is whole in this read frees the member's slot before the client
   * can see its end (the client's next request may go to another worker at once). */
  if (req->is_head || h->status == 204 || h->status == 304 || (h->content_length >= 0 && len - h->head_len >= (uint64_t)h->content_length))
    release_slot(up);
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
    if (req->resp_length == 0) body_complete(up);
  }
}

/* One read's outcome: nread bytes in `block` (owned from here on), UV_EOF, or -errno. */
static void on_read(mg_upstream_t *up, ssize_t nread, char *block_in) {
  uv_buf_t b = uv_buf_init(block_in, MG_BLOCK_SIZE), *buf = &b;
  if (nread == 0 || up->closing) {
    mg_block_put(buf->base);
    return;
  }
  mg_req_t *req = up->req;
  if (nread < 0) {
    mg_block_put(buf->base);
    if (up->state == S_HEAD) {
      char why[200];
      snprintf(why, sizeof why, "backend %s: %s", up->name,
               nread == UV_EOF ? "closed the connection before a complete response header" : uv_strerror((int)nread));
      attempt_failed(up, 502, 0, why);
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
    body_complete(up);
    return;
  }
  if (up->timeout_ms) timer_rearm(up);
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
    char why[200];
    snprintf(why, sizeof why, "malformed response from backend %s: %s", up->name, h->error);
    mg_block_put(block);
    attempt_failed(up, 502, 0, why);
    return;
  }
  if ((rc == MG_CGI_DONE && h->head_len > limit) || (rc == MG_CGI_MORE && len > limit)) {
    char why[200];
    snprintf(why, sizeof why, "response header from backend %s is over max_backend_header_size", up->name);
    mg_block_put(block);
    attempt_failed(up, 502, 0, why);
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

static void up_busy(mg_upstream_t *up, const char *why);
static void connect_failed(mg_upstream_t *up, int status);

static void on_timeout(uv_timer_t *t) {
  mg_upstream_t *up = t->data;
  if (up->wait.b) {
    mg_queue_leave(&up->wait, MG_QLEAVE_TIMEOUT);
    up->req->queued = 0;
    char why[160];
    snprintf(why, sizeof why, "no member of balancer %s had a free slot (max_conns) within the queue timeout", up->balancer->name);
    up_busy(up, why);
  } else if (up->state == S_CONNECTING) {
    /* A balancer member that does not accept in time fails over as a refused one does. */
    if (up->member) connect_failed(up, -ETIMEDOUT);
    else up_fail(up, 503, "connecting to backend %s timed out", up->name);
  } else {
    char why[200];
    snprintf(why, sizeof why, "backend %s timed out (no data within `timeout`)", up->name);
    if (up->state == S_HEAD) {
      attempt_failed(up, 504, 1, why);
      return;
    }
    if (up->balancer && up->balancer->passive && up->member) mg_passive_report(up->balancer, up->member, 504, 1, mg_now_ms());
    up_fail(up, 504, "%s", why);
  }
}

static int pick_member(mg_upstream_t *up, int fresh);

/* The connect failed (status: -errno): another member of a balancer, or 503. Nothing of the
 * request has reached the backend, so what is queued for it is kept for the next one. */
static void connect_failed(mg_upstream_t *up, int status) {
  char why[160];
  snprintf(why, sizeof why, "connect() to %s failed: %s", up->name, strerror(-status));
  mg_fdio_close(&up->io);
  up->readable = up->writable = up->peer_closed = 0;
  if (up->member) {
    mg_member_failed(up->member, mg_now_ms(), strerror(-status));
    mg_log_error(MG_LOG_WARN, up->req->id, "%s; trying another member of balancer %s", why, up->balancer->name);
    up->tried[up->member->index - 1] = 1;
    up->member = NULL;
    release_slot(up);
    if (up->attempts < up->balancer->maxattempts && mg_passive_retry_connect(up->balancer)) {
      uv_timer_stop(&up->timer);
      if (pick_member(up, 0) == 0) up_connect(up);
      return;
    }
  }
  up_fail(up, 503, "%s", why);
}

/* The first bytes went out (or came in): the connection is up. */
static void established(mg_upstream_t *up) {
  up->state = S_HEAD;
  /* Quick ACKs back on (see up_connect): the request just sent, right after the SYN-ACK,
   * would otherwise leave the socket delaying its ACKs, and a backend that writes its head
   * and its body apart (Nagle on, as uWSGI's default) would wait 40 ms for each. From here
   * the kernel's own rules decide, as on any socket. */
  if (up->addr->sa.ss_family != AF_UNIX) {
    int on = 1;
    setsockopt(up->io.fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
  }
  if (up->member) mg_member_start(up->member);
  /* The request outlives its upstream: the access log needs its own copy of the name. */
  up->req->upstream_name = mg_pool_strdup(&up->req->pool, up->name);
  if (up->timeout_ms) {
    mg_timer_start(&up->timer, on_timeout, up->timeout_ms, up->timeout_ms);
    up->armed_ms = uv_now(up->timer.loop);
  } else {
    uv_timer_stop(&up->timer);
  }
}

/* Writes the queue while connecting: a write that takes bytes establishes the connection. */
static void connecting_flush(mg_upstream_t *up) {
  size_t before = up->wq_bytes;
  int rc = up_flush(up);
  if (rc < 0) {
    connect_failed(up, rc);
    return;
  }
  if (up->wq_bytes < before || (!up->wq && up->writable)) {
    established(up);
    up_flush(up); /* what is left (and a spooled body's next blocks), as a connected socket's */
  }
}

/* Reads until EAGAIN, the end, a pause (the client is slow) or the upstream closing. */
static void read_all(mg_upstream_t *up) {
  for (int budget = 64; up->readable && up->reading && !up->closing; budget--) {
    if (!budget) {
      mg_fdio_again(&up->io); /* others get their turn; reading goes on next turn */
      return;
    }
    char *block = mg_block_get();
    ssize_t n = read(up->io.fd, block, MG_BLOCK_SIZE);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) {
        mg_block_put(block);
        continue;
      }
      if (err == EAGAIN) {
        mg_block_put(block);
        up->readable = 0;
        return;
      }
      on_read(up, -err, block);
      return;
    }
    if (n == 0) {
      on_read(up, UV_EOF, block);
      return;
    }
    int drained = n < MG_BLOCK_SIZE && up->peer_closed, attempt = up->attempts;
    on_read(up, n, block);
    /* A short read after the peer's FIN emptied the socket: that is the end, known without
     * one more read (unless the answer was retried away: a new connection is under way). */
    if (drained && !up->closing && up->attempts == attempt) on_read(up, UV_EOF, mg_block_get());
    if (drained) return;
  }
}

static void on_io(mg_fdio_t *io, unsigned events) {
  mg_upstream_t *up = io->data;
  if (up->closing) return;
  if (up->state == S_CONNECTING) {
    if (events & MG_FDIO_ERR) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      connect_failed(up, -(err ? err : ECONNREFUSED));
      return;
    }
    if (events & MG_FDIO_OUT) {
      up->writable = 1;
      connecting_flush(up);
      if (up->closing || up->state == S_CONNECTING) return;
    } else if (events & (MG_FDIO_IN | MG_FDIO_HUP)) {
      /* Bytes or an end before our request left: the read tells which. */
      established(up);
    } else {
      return;
    }
  } else if (events & MG_FDIO_OUT) {
    up->writable = 1;
    up_flush(up);
    if (up->closing) return;
  }
  if (events & (MG_FDIO_IN | MG_FDIO_HUP | MG_FDIO_ERR)) up->readable = 1;
  if (events & MG_FDIO_HUP) up->peer_closed = 1;
  read_all(up);
}

static void up_connect(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  /* The upstream time (JSON access log, SPEC 20 histograms): one clock read per request. */
  if (!req->upstream_start_ns) req->upstream_start_ns = uv_hrtime();
  up->state = S_CONNECTING;
  up->attempts++;
  up->reading = 1;
  up->readable = up->writable = up->peer_closed = 0;
  mg_addr_format(up->addr, up->name, sizeof up->name);
  int family = up->addr->sa.ss_family;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    connect_failed(up, -errno);
    return;
  }
  /* Nagle stays on: the head and a small body leave in one write, so it delays nothing (as
   * on nginx's backend sockets).
   * The handshake's last ACK leaves with the request, not alone (HAProxy's tcp-smart-connect):
   * with quick ACKs off before connect(), the kernel holds the ACK of the SYN-ACK for the first
   * data, which send_request writes as soon as the socket is writable (on loopback, within
   * this call), and established() turns them on again. The
   * backend then sees its connection once, with the request already in it: one segment and
   * one wake-up of the backend less per request (its CPU per request: -15 %). */
  if (family != AF_UNIX) {
    int off = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off);
  }
  socklen_t alen = family == AF_UNIX ? sizeof(struct sockaddr_un) : family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int rc = connect(fd, (const struct sockaddr *)&up->addr->sa, alen);
  /* A unix socket whose backlog is full says EAGAIN: for a gateway that is a refusal. */
  if (rc < 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    connect_failed(up, -err);
    return;
  }
  rc = mg_fdio_open(req->server->loop, &up->io, fd, on_io, up);
  if (rc < 0) {
    connect_failed(up, rc);
    return;
  }
  /* The request goes out now: on loopback the connection is usually up already, and then the
   * connect timeout is never armed (established() arms the inactivity timer instead): one
   * clock read and two timer heap operations less per request. */
  int attempt = up->attempts;
  if (!up->head_queued) send_request(up);
  if (up->closing) return;
  connecting_flush(up);
  /* Still connecting, and not on another attempt started meanwhile (a failover arms its own). */
  if (up->closing || up->attempts != attempt || up->state != S_CONNECTING) return;
  uint64_t ct = up->member && up->member->connect_timeout_ms ? up->member->connect_timeout_ms : req->route->connect_timeout;
  if (ct) mg_timer_start(&up->timer, on_timeout, ct, 0);
}

/* SPEC 20: a 503 for want of a free slot (queue.c answers it, with Retry-After). */
static void up_busy(mg_upstream_t *up, const char *why) {
  mg_req_t *req = up->req;
  mg_balancer_t *b = up->balancer;
  up_close(up);
  if (req) mg_queue_respond_busy(req, b, why);
}

/* Chooses a member and takes one of its slots (queue.c): 1, 0 (all full), -1 (none usable) or
 * -2 (a hook ended the request: the upstream is closed). */
static int choose(mg_upstream_t *up) {
  mg_member_t *m = NULL;
  if (up->balancer->passive) mg_passive_sweep(up->balancer, mg_now_ms()); /* ejections ended meanwhile */
  int rc = mg_queue_choose(up->req, up->balancer, up->tried, &m);
  if (rc == -2) up_close(up);
  if (rc != 1) return rc;
  up->member = m;
  up->slot = m->cap ? m : NULL;
  up->addr = &m->addr;
  up->timeout_ms = m->timeout_ms ? m->timeout_ms : up->req->route->timeout;
  return 1;
}

/* The queue offers a waiter its turn: a slot, then the connect (or the 503 of a balancer with
 * no usable member left). */
static int take_turn(mg_waiter_t *w) {
  mg_upstream_t *up = (mg_upstream_t *)((char *)w - offsetof(mg_upstream_t, wait));
  int rc = choose(up);
  if (rc == 0) return 0;
  mg_queue_served(w);
  if (up->req) up->req->queued = 0;
  if (rc == -2) return 1;
  uv_timer_stop(&up->timer);
  if (rc == -1) up_fail(up, 503, "no usable member in balancer %s", up->balancer->name);
  else up_connect(up);
  return 1;
}

/* Every member is at its max_conns: the request waits in the balancer's queue, or 503. */
static int queue_wait(mg_upstream_t *up) {
  mg_balancer_t *b = up->balancer;
  up->wait.take = take_turn;
  up->wait.loop = up->timer.loop;
  if (mg_queue_join(b, &up->wait) < 0) {
    char why[160];
    snprintf(why, sizeof why, "every member of balancer %s is at its max_conns and %s", b->name,
             b->queue_size ? "its queue is full" : "it has no queue");
    up_busy(up, why);
    return -1;
  }
  up->req->queued = 1;
  mg_timer_start(&up->timer, on_timeout, b->queue_timeout_ms, 0);
  return 1;
}

/* Chooses the member for the next attempt. Returns 0; 1 when the request waits in the queue
 * (up_connect follows when it gets a slot); -1 after answering. `fresh`: a first attempt,
 * which queues behind the requests already waiting rather than taking a slot freed for them. */
static int pick_member(mg_upstream_t *up, int fresh) {
  if (!up->balancer) return 0;
  mg_balancer_t *b = up->balancer;
  if (fresh && !mg_explain && mg_queue_busy(b)) return queue_wait(up);
  int rc = choose(up);
  if (rc == 1) return 0;
  if (rc == -2) return -1;
  if (rc == -1 || mg_explain) {
    up_fail(up, 503, "no usable member in balancer %s", b->name);
    return -1;
  }
  return queue_wait(up);
}

/* --explain: what the backend would receive, reported instead of sent; the request then ends
 * with an empty 204 that explain does not show. */
static void explain_backend(mg_upstream_t *up) {
  mg_req_t *req = up->req;
  mg_vars_t vars;
  mg_vars_init(&vars);
  if (req->lua) mg_hooks->env_export(req);
  uint64_t clen = req->redirects ? 0 : req->body_ready ? req->body.len : req->content_length > 0 ? (uint64_t)req->content_length : 0;
  mg_cgi_env_build(req, clen, &vars);
  mg_explain->backend(req, up->member, &vars);
  mg_vars_free(&vars);
  up_close(up);
  req->keepalive = 0;
  mg_req_respond(req, 204, NULL, "", 0);
}

void mg_upstream_start(mg_req_t *req) {
  mg_upstream_t *up = mg_free_get(&up_free_list);
  memset(up, 0, offsetof(mg_upstream_t, parsed));
  up->req = req;
  up->spool_fd = -1;
  up->io.fd = -1;
  up->pending_tail = &up->pending;
  up->wq_tail = &up->wq;
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
    up->spool = req->chunked || (req->route->request_buffering && req->content_length > 0);
  }
  int queued = 0;
  /* A body that streams to the backend as it arrives is never sent twice. */
  up->resendable = req->redirects || req->body_ready || up->spool || (req->content_length <= 0 && !req->chunked);
  if (req->route->kind == MG_TARGET_BALANCER) {
    up->balancer = req->route->balancer;
    size_t n = (size_t)up->balancer->nmembers;
    up->tried = n <= sizeof up->tried_small ? up->tried_small : mg_calloc(n, 1);
    /* A body read whole first is read before the member is chosen (on_body_end). */
    if (!up->spool || mg_explain) {
      int rc = pick_member(up, 1);
      if (rc < 0) return;
      queued = rc == 1;
    }
    if (up->balancer->passive) mg_passive_request(up->balancer, mg_now_ms());
  } else {
    up->addr = &req->route->addr;
  }
  if (mg_explain) {
    explain_backend(up);
    return;
  }
  if (!req->redirects) mg_req_continue(req);
  if (up->spool) {
    up->state = S_WAIT_BODY;
    return;
  }
  if (!queued) up_connect(up);
}

const mg_handler_t mg_handler_scgi = {"scgi", mg_upstream_start};
