/* resp_buffer: see resp_buffer.h.
 *
 * The file is a FIFO: pieces are appended at `woff` and sent from `roff`. When the client has
 * taken everything (roff reaches woff) both go back to 0 and the file is truncated, so a
 * response that the client follows closely never grows the file past a few blocks. The file
 * is opened only when the first piece has to wait, so a response the client keeps up with
 * costs no system call and no allocation beyond this struct. Writes and reads are
 * synchronous, a block at a time, on a local temporary file (as nginx's proxy_temp_path
 * without aio). */
#include "resp_buffer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

struct mg_rbuf_s {
  mg_req_t *req; /* NULL once freed */
  int fd;        /* -1 until a piece has to wait */
  uint64_t woff, roff;
  uint64_t mem_max, file_max;
  void (*on_space)(void *arg);
  void *arg;
  unsigned ended : 1;          /* the backend's body is complete; the request owns the buffer */
  unsigned backend_waits : 1;  /* put returned 1: on_space is owed */
  unsigned waits_for_turn : 1; /* ... because the client took bytes at the time (see put) */
  unsigned timer_inited : 1;
  size_t last_queue;   /* the client's queue at the last look (recheck) */
  uv_timer_t recheck;  /* while waits_for_turn: is the client still taking bytes? */
};

#define RECHECK_MS 100

static void pump(mg_req_t *req);

static void on_closed(uv_handle_t *h) { free(h->data); }

mg_rbuf_t *mg_rbuf_new(mg_req_t *req, void (*on_space)(void *arg), void *arg) {
  mg_rbuf_t *rb = mg_calloc(1, sizeof *rb);
  rb->req = req;
  rb->fd = -1;
  /* At least one read: a smaller bound would send nothing before the file, and the file is
   * pumped only as writes drain. */
  rb->mem_max = req->route->response_buffer_size < MG_BLOCK_SIZE ? MG_BLOCK_SIZE : req->route->response_buffer_size;
  rb->file_max = req->route->response_temp_max;
  rb->on_space = on_space;
  rb->arg = arg;
  req->handler_data = rb;
  return rb;
}

void mg_rbuf_free(mg_rbuf_t *rb) {
  if (!rb) return;
  mg_req_t *req = rb->req;
  if (req && req->handler_data == rb) {
    req->handler_data = NULL;
    if (rb->ended) req->handler_cancel = NULL;
    if (req->on_drain == pump) req->on_drain = NULL;
  }
  if (rb->fd >= 0) close(rb->fd);
  rb->req = NULL;
  if (rb->timer_inited) uv_close((uv_handle_t *)&rb->recheck, on_closed);
  else free(rb);
}

static void on_cancel(mg_req_t *req) { mg_rbuf_free(req->handler_data); }

static int waiting(const mg_rbuf_t *rb) { return rb->woff > rb->roff; }

/* The backend is owed its turn now: it waited for the client (put) or for the file's room. */
static void backend_goes_on(mg_rbuf_t *rb) {
  rb->backend_waits = rb->waits_for_turn = 0;
  if (rb->timer_inited) uv_timer_stop(&rb->recheck);
  rb->on_space(rb->arg);
}

/* The backend waits for a client that took bytes: once the client is blocked, or its queue
 * has not gone down since the last look (other streams hold the connection), or is low
 * already (a drain that will not come), the backend reads on and what it sends waits in the
 * file, so a client that stops does not hold it. */
static void on_recheck(uv_timer_t *tm) {
  mg_rbuf_t *rb = tm->data;
  size_t q = mg_req_write_queue(rb->req);
  if (mg_req_client_blocked(rb->req) || q < MG_WRITE_LOW || q >= rb->last_queue) backend_goes_on(rb);
  else rb->last_queue = q;
}

int mg_rbuf_put(mg_rbuf_t *rb, char *block, const char *data, size_t len) {
  mg_req_t *req = rb->req;
  size_t queued = mg_req_write_queue(req);
  if (!waiting(rb) && queued + len <= rb->mem_max) {
    /* The client keeps up: straight on (the last use of rb, which the send may free). */
    mg_req_send_body(req, block, data, len);
    return 0;
  }
  if (!waiting(rb) && !mg_req_client_blocked(req)) {
    /* Over the memory bound, but the client takes bytes now (an HTTP/2 stream waiting for
     * its turn on a busy connection): the backend waits for the client instead of the bytes
     * waiting in the file, as nginx's event pipe blocks its upstream while the downstream is
     * ready. The file is for a client that does not read: should this one stop, the recheck
     * lets the backend go on into the file. The piece goes on (set up first: the send may
     * free rb). */
    rb->backend_waits = rb->waits_for_turn = 1;
    rb->last_queue = queued + len;
    if (!rb->timer_inited) {
      uv_timer_init(req->server->loop, &rb->recheck);
      rb->recheck.data = rb;
      rb->timer_inited = 1;
    }
    uv_timer_start(&rb->recheck, on_recheck, RECHECK_MS, RECHECK_MS);
    if (!req->on_drain) mg_req_on_drain(req, pump);
    mg_req_send_body(req, block, data, len);
    return 1;
  }
  if (rb->fd < 0) {
    int fd = mg_tmpfile();
    if (fd < 0) {
      mg_block_put(block);
      mg_log_error(MG_LOG_ERROR, req->id, "response buffering: cannot create a temporary file: %s", strerror(-fd));
      return fd;
    }
    rb->fd = fd;
  }
  ssize_t n = pwrite(rb->fd, data, len, (off_t)rb->woff);
  mg_block_put(block);
  if (n != (ssize_t)len) {
    int err = n < 0 ? errno : ENOSPC;
    mg_log_error(MG_LOG_ERROR, req->id, "response buffering: writing %zu bytes to the temporary file failed: %s", len,
                 strerror(err));
    return -err;
  }
  rb->woff += len;
  if (!req->on_drain) mg_req_on_drain(req, pump);
  if (rb->woff >= rb->file_max) {
    rb->backend_waits = 1;
    return 1;
  }
  return 0;
}

/* The client has room: the file a block at a time until the sink holds mem_max again. */
static void pump(mg_req_t *req) {
  mg_rbuf_t *rb = req->handler_data;
  if (!rb) return;
  while (waiting(rb)) {
    if (mg_req_write_queue(req) > rb->mem_max) {
      mg_req_on_drain(req, pump);
      return;
    }
    uint64_t left = rb->woff - rb->roff;
    size_t want = left < MG_BLOCK_SIZE ? (size_t)left : MG_BLOCK_SIZE;
    char *blk = mg_block_get();
    ssize_t n = pread(rb->fd, blk, want, (off_t)rb->roff);
    if (n <= 0) {
      mg_block_put(blk);
      mg_log_error(MG_LOG_ERROR, req->id, "response buffering: reading the temporary file failed: %s",
                   n < 0 ? strerror(errno) : "it is shorter than what was written");
      /* Once the backend's body is complete the buffer is the request's to drop; before, the
       * upstream drops it when the cut request ends. */
      if (rb->ended) mg_rbuf_free(rb);
      mg_req_abort(req, NULL);
      return;
    }
    rb->roff += (uint64_t)n;
    mg_req_send_body(req, blk, blk, (size_t)n);
    if (req->handler_data != rb || req->finished || mg_req_peer_gone(req)) return; /* cancelled meanwhile */
  }
  /* Everything written has been sent: the file starts over. */
  rb->woff = rb->roff = 0;
  if (rb->fd >= 0 && ftruncate(rb->fd, 0) < 0)
    mg_log_error(MG_LOG_WARN, req->id, "response buffering: truncating the temporary file failed: %s", strerror(errno));
  if (rb->ended) {
    mg_rbuf_free(rb);
    mg_req_send_end(req);
    return;
  }
  if (rb->backend_waits) backend_goes_on(rb);
}

void mg_rbuf_end(mg_rbuf_t *rb) {
  mg_req_t *req = rb->req;
  if (!waiting(rb)) {
    mg_rbuf_free(rb);
    mg_req_send_end(req);
    return;
  }
  rb->ended = 1;
  rb->backend_waits = rb->waits_for_turn = 0;
  if (rb->timer_inited) uv_timer_stop(&rb->recheck);
  req->handler_cancel = on_cancel;
  if (!req->on_drain) mg_req_on_drain(req, pump);
}
