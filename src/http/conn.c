/* conn: see conn.h.
 *
 * Reading: the socket is read into a pooled 64 KiB block. On a plain connection that block is
 * the plaintext (c->rbuf) handed to the protocol; on TLS the ciphertext goes into the TLS
 * layer and plaintext is decrypted a block at a time, only while the protocol is ready, so a
 * held or throttled request holds its ciphertext as a plain one holds its bytes. Plaintext not
 * yet taken stays in c->rbuf; the socket is read only when c->rbuf is empty and the protocol
 * may go on.
 *
 * Writing: every write owns what it sends (a pooled block or a heap buffer) until its
 * callback; bytes held back (a response head) leave with the next write, so a small response
 * leaves in one syscall. What the socket takes at once needs no write request.
 *
 * Closing: one idempotent close (conn_close) runs the protocol's release and closes the
 * handle; the struct goes back to the slab in the handle's close callback. A lingering close
 * shuts down the write side and drains what the client still sends for a short while. */
#include "conn.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "request.h"

#define LINGER_MS 2000

typedef struct {
  uv_write_t w;
  mg_conn_t *conn;
  char *block;
  char *heap;
  char *head; /* held bytes sent in the same write */
  char copy[MG_CONN_COPY_MAX];
} mg_write_t;

static void conn_close(mg_conn_t *c);

/* ---- writing ------------------------------------------------------------------------- */

/* Held bytes (response heads): built on the caller's stack, then held in a block from a
 * per-worker free list (one byte before them says whether it came from there) until the write
 * that sends them is done -- no malloc for the head of a common response. */
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

void mg_conn_hold(mg_conn_t *c, const char *data, size_t len) {
  c->held_len = (uint32_t)len;
  c->held = head_alloc(len);
  memcpy(c->held, data, len);
}

int mg_conn_drop_held(mg_conn_t *c) {
  if (!c->held) return 0;
  head_free(c->held);
  c->held = NULL;
  return 1;
}

/* A write failed: what was in flight never reached the client (the protocol's release reads
 * c->broken). */
static void conn_broken(mg_conn_t *c) {
  c->broken = 1;
  conn_close(c);
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
    conn_broken(c);
    return;
  }
  if (c->closing || !c->proto) return;
  c->proto->written(c);
}

static void conn_write_raw(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap, char *head,
                           const char *copy, size_t copy_len);

void mg_conn_write_copy(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap, const char *copy,
                        size_t copy_len) {
  if (c->closing) {
    mg_block_put(block);
    free(heap);
    return;
  }
  if (c->tls) {
    /* TLS: the plaintext pieces are encrypted now (memory BIOs take all of it), released at
     * once, and the ciphertext leaves in one write that owns it. */
    int bad = 0;
    if (c->held) {
      bad |= mg_tls_write(c->tls, c->held, c->held_len) < 0;
      head_free(c->held);
      c->held = NULL;
    }
    for (unsigned i = 0; i < n; i++) {
      if (copy && i == 0) bad |= mg_tls_write(c->tls, copy, copy_len) < 0;
      else bad |= mg_tls_write(c->tls, bufs[i].base, bufs[i].len) < 0;
    }
    mg_block_put(block);
    free(heap);
    if (bad) {
      conn_broken(c);
      return;
    }
    size_t len;
    char *out = mg_tls_take(c->tls, &len);
    if (!out) return;
    uv_buf_t b = uv_buf_init(out, (unsigned)len);
    conn_write_raw(c, &b, 1, NULL, out, NULL, NULL, 0);
    return;
  }
  uv_buf_t all[5];
  unsigned k = 0;
  char *head = NULL, copy_buf[MG_CONN_COPY_MAX];
  if (c->held) {
    head = c->held;
    all[k++] = uv_buf_init(c->held, c->held_len);
    c->held = NULL;
  }
  for (unsigned i = 0; i < n; i++) all[k++] = bufs[i];
  if (copy) {
    memcpy(copy_buf, copy, copy_len);
    all[k - n] = uv_buf_init(copy_buf, (unsigned)copy_len);
  }
  if (k == 0) return;
  conn_write_raw(c, all, k, block, heap, head, copy ? copy_buf : NULL, copy_len);
}

void mg_conn_write(mg_conn_t *c, uv_buf_t *bufs, unsigned n, char *block, char *heap) {
  mg_conn_write_copy(c, bufs, n, block, heap, NULL, 0);
}

/* Writes all[0..k) to the socket: what the socket takes at once leaves now, the rest in one
 * uv_write that owns block, heap and head (and a copy of the bytes at `copy`). */
static void conn_write_raw(mg_conn_t *c, uv_buf_t *all, unsigned k, char *block, char *heap, char *head,
                           const char *copy, size_t copy_len) {
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
  if (copy) {
    /* The copied bytes, if still unsent, must live as long as the write. */
    memcpy(wr->copy, copy, copy_len);
    for (unsigned i = 0; i < k; i++)
      if (all[i].base >= copy && all[i].base < copy + copy_len) all[i].base = wr->copy + (all[i].base - copy);
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
    conn_broken(c);
  }
}

size_t mg_conn_queued(const mg_conn_t *c) { return uv_stream_get_write_queue_size(&c->h.stream); }

/* ---- timeouts ---------------------------------------------------------------------------- */

/* Timeouts: the server's timeout queues (base/timeq.h), one per kind. */
static mg_conn_t *conn_of(mg_timeq_entry_t *e) { return (mg_conn_t *)((char *)e - offsetof(mg_conn_t, tq)); }

static void on_conn_timeout(mg_timeq_t *q, mg_timeq_entry_t *e, int kind) {
  (void)q;
  mg_conn_t *c = conn_of(e);
  if (c->pp && kind == MG_CONN_T_HEADER) {
    char addr[MG_ADDR_TEXT];
    mg_conn_remote_text(c, addr, sizeof addr);
    mg_log(MG_LOG_ERROR, "PROXY protocol: client %s sent no complete PROXY header within client_header_timeout; connection closed",
           addr);
    conn_close(c);
    return;
  }
  if (c->proto && kind != MG_CONN_T_LINGER) c->proto->timeout(c, kind);
  else conn_close(c);
}

void mg_conn_timer_set(mg_conn_t *c, int kind, uint64_t ms) {
  mg_server_t *s = c->server;
  if (!s->timeouts.loop) mg_timeq_init(&s->timeouts, s->loop, on_conn_timeout);
  mg_timeq_set(&s->timeouts, &c->tq, c->closing ? MG_CONN_T_NONE : kind, ms);
}

/* ---- reading ----------------------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *sd, int status) {
  (void)status;
  free(sd);
}

void mg_conn_linger(mg_conn_t *c) {
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  c->lingering = 1;
  uv_shutdown_t *sd = mg_malloc(sizeof *sd);
  if (uv_shutdown(sd, &c->h.stream, on_shutdown) < 0) {
    free(sd);
    conn_close(c);
    return;
  }
  mg_conn_timer_set(c, MG_CONN_T_LINGER, LINGER_MS);
  mg_conn_update_reading(c);
}

void mg_conn_reject(mg_conn_t *c) {
  static char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
      "Connection: close\r\n\r\n503 Service Unavailable\n";
  uv_buf_t b = uv_buf_init(busy, sizeof busy - 1);
  mg_conn_write(c, &b, 1, NULL, NULL);
  mg_conn_linger(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  buf->base = mg_block_get();
  buf->len = MG_BLOCK_SIZE;
}

/* SPEC 19: the connection's first bytes go to the PROXY header parser. Returns how many of
 * data[0..n) were the header once it is complete (its source is now the peer), or SIZE_MAX
 * while more is needed or when the header was refused (logged, the connection closed). */
static size_t proxy_take(mg_conn_t *c, const char *data, size_t n) {
  size_t used;
  mg_proxy_hdr_t h;
  int rc = mg_proxy_parse(c->pp, data, n, &used, &h);
  if (rc == MG_PROXY_MORE) return SIZE_MAX;
  if (rc == MG_PROXY_BAD) {
    char addr[MG_ADDR_TEXT];
    mg_conn_remote_text(c, addr, sizeof addr);
    mg_log(MG_LOG_ERROR, "PROXY protocol: client %s: %s; connection closed", addr, c->pp->error);
    conn_close(c);
    return SIZE_MAX;
  }
  if (h.family == AF_INET || h.family == AF_INET6) {
    c->remote_family = (uint8_t)h.family;
    memcpy(c->remote, h.src, h.family == AF_INET ? 4 : 16);
    c->remote_port = h.src_port;
  } else if (h.family == AF_UNIX) {
    c->remote_family = 0, c->remote_port = 0; /* "unix:", as a unix-socket peer */
  }
  free(c->pp);
  c->pp = NULL;
  return used;
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
    if (nread == UV_EOF) c->proto->peer_closed(c);
    else c->proto->gone(c);
    return;
  }
  if (c->lingering) {
    mg_block_put(buf->base);
    return;
  }
  size_t off = 0; /* bytes of this read that were the PROXY header */
  if (c->pp && ((off = proxy_take(c, buf->base, (size_t)nread)) == SIZE_MAX || off == (size_t)nread)) {
    mg_block_put(buf->base);
    return;
  }
  if (c->tls) {
    /* Ciphertext: into the TLS layer; mg_conn_process decrypts what the protocol may take. */
    mg_tls_feed(c->tls, buf->base + off, (size_t)nread - off);
    mg_block_put(buf->base);
    mg_conn_process(c);
    return;
  }
  if (c->rbuf) {
    /* Only while the protocol is being chosen: the start of a preface waits for the rest. */
    size_t room = MG_BLOCK_SIZE - c->rbuf_len, n = (size_t)nread < room ? (size_t)nread : room;
    memcpy(c->rbuf + c->rbuf_len, buf->base, n);
    c->rbuf_len += (uint32_t)n;
    mg_block_put(buf->base);
  } else {
    c->rbuf = buf->base;
    c->rbuf_off = (uint32_t)off;
    c->rbuf_len = (uint32_t)nread;
  }
  mg_conn_process(c);
}

void mg_conn_update_reading(mg_conn_t *c) {
  if (c->closing) return;
  /* The socket stays in the read set while a request is served (stopping and restarting
   * would cost two epoll_ctl calls per request); bytes that arrive meanwhile (a pipelined
   * request) wait in rbuf, and reading stops only then. */
  int want = c->lingering || ((!c->rbuf || c->choosing) && !c->throttled && !c->peer_eof &&
                               !(c->tls && mg_tls_buffered(c->tls) >= MG_BLOCK_SIZE));
  if (want && !c->reading) {
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0) c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop(&c->h.stream);
    c->reading = 0;
  }
}

void mg_conn_pause_read(mg_conn_t *c) {
  c->throttled = 1;
  mg_conn_update_reading(c);
}

void mg_conn_resume_read(mg_conn_t *c) {
  if (!c->throttled) return;
  c->throttled = 0;
  mg_conn_process(c);
}

/* Ciphertext the TLS layer made (handshake, alerts) goes to the socket as it is. */
static void tls_flush(mg_conn_t *c) {
  size_t len;
  char *out = mg_tls_take(c->tls, &len);
  if (!out) return;
  uv_buf_t b = uv_buf_init(out, (unsigned)len);
  conn_write_raw(c, &b, 1, NULL, out, NULL, NULL, 0);
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
  if (st == MG_TLS_CLOSED) c->proto->peer_closed(c);
  else if (st == MG_TLS_ERROR) c->proto->gone(c);
  return 0;
}

static int conn_ready(const mg_conn_t *c) { return !c->closing && !c->throttled && c->proto->ready(c); }

/* The HTTP/2 connection preface (RFC 9113 3.4). */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* SPEC 20: open connections by protocol. A connection counts as HTTP/1.1 until it turns out
 * to be HTTP/2, then moves; h2: 1 for HTTP/2, -1 to stop counting it (its close). */
static void conn_count(mg_conn_t *c, int h2) {
  if (c->metrics_proto) mg_metrics_conn(c->metrics_proto - 1, -1);
  c->metrics_proto = 0;
  if (h2 < 0) return;
  c->metrics_proto = (uint8_t)(1 + h2 * 2 + (c->tls != NULL));
  mg_metrics_conn(c->metrics_proto - 1, 1);
}

/* 1: the bytes are the preface; 0: they are not; -1: they begin it, more are needed. */
static int preface_match(const char *p, size_t len) {
  size_t n = len < sizeof h2_preface - 1 ? len : sizeof h2_preface - 1;
  if (memcmp(p, h2_preface, n) != 0) return 0;
  return n == sizeof h2_preface - 1 ? 1 : -1;
}

/* The first plaintext is here: the protocol is chosen. Returns -1 while a plain connection's
 * first bytes begin the preface (reading goes on), 1 when the connection closed. */
static int conn_choose(mg_conn_t *c) {
  int h2 = c->tls ? mg_tls_alpn_h2(c->tls) : preface_match(c->rbuf + c->rbuf_off, c->rbuf_len - c->rbuf_off);
  if (h2 < 0) return -1;
  c->choosing = 0;
  if (!h2) return 0;
  c->proto = c->alt;
  conn_count(c, 1);
  if (c->proto->start(c) < 0) {
    conn_close(c);
    return 1;
  }
  return 0;
}

void mg_conn_process(mg_conn_t *c) {
  /* Until decrypting was tried once with rbuf empty: a call made while rbuf still held the
   * end of a request (a response finished inside the protocol's process) must still look at
   * what the TLS layer holds, such as a close_notify, for no socket read will come to ask
   * again. */
  int tried = 0;
  for (;;) {
    int filled = 0;
    if (c->tls && !c->rbuf && conn_ready(c)) {
      filled = tls_fill(c);
      tried = 1;
      if (c->closing) return;
    }
    if (c->choosing && c->rbuf) {
      int rc = conn_choose(c);
      if (rc > 0) return;
      if (rc < 0) break;
    }
    if (c->proto->process(c)) return;
    if (c->rbuf || !conn_ready(c) || (!filled && (tried || !c->tls))) break;
  }
  mg_conn_update_reading(c);
}

/* ---- the connection ---------------------------------------------------------------------- */

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
  conn_count(c, -1);
  mg_timeq_remove(&c->server->timeouts, &c->tq);
  if (c->proto) c->proto->release(c);
  head_free(c->held);
  c->held = NULL;
  if (c->rbuf) mg_block_put(c->rbuf), c->rbuf = NULL;
  mg_tls_free(c->tls);
  c->tls = NULL;
  free(c->pp);
  c->pp = NULL;
  mg_server_conn_closed(c->server);
  uv_close(&c->h.handle, on_close);
}

mg_conn_t *mg_conn_new(mg_server_t *server, int unix_socket) {
  mg_conn_t *c = conn_alloc(unix_socket);
  c->server = server;
  c->listener = MG_CONN_NO_LISTENER;
  if (unix_socket) uv_pipe_init(server->loop, &c->h.pipe, 0);
  else uv_tcp_init(server->loop, &c->h.tcp);
  c->h.handle.data = c;
  c->handles_open = 1;
  return c;
}

uv_stream_t *mg_conn_stream(mg_conn_t *c) { return &c->h.stream; }

void mg_conn_start(mg_conn_t *c, const mg_conn_proto_t *proto, const mg_conn_proto_t *alt) {
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
  if (c->listener != MG_CONN_NO_LISTENER && c->server->cfg->listens[c->listener].tls)
    c->tls = mg_tls_new(c->server->cfg->listens[c->listener].tls);
  /* SPEC 19: the PROXY header comes first, ahead of TLS and of the protocol's choice, within
   * the same client_header_timeout. */
  if (c->listener != MG_CONN_NO_LISTENER && c->server->cfg->listens[c->listener].proxy_protocol) {
    c->pp = mg_malloc(sizeof *c->pp);
    mg_proxy_init(c->pp);
  }
  c->proto = proto;
  c->alt = alt;
  c->choosing = alt != NULL;
  conn_count(c, proto == alt && alt != NULL);
  if (proto->start(c) < 0) {
    conn_close(c);
    return;
  }
  mg_conn_timer_set(c, MG_CONN_T_HEADER, c->server->cfg->set.client_header_timeout);
  mg_conn_update_reading(c);
}

void mg_server_close_idle(mg_server_t *s) {
  /* Idle keep-alive connections are exactly the ones waiting in the keep-alive queue. */
  mg_timeq_entry_t *e;
  while ((e = mg_timeq_first(&s->timeouts, MG_CONN_T_KEEPALIVE))) conn_close(conn_of(e));
}

void mg_conn_close(mg_conn_t *c) { conn_close(c); }

void mg_conn_set_listener(mg_conn_t *c, int index) { c->listener = (uint8_t)index; }

void mg_conn_set_peer(mg_conn_t *c, const char *ip, int port) {
  if (inet_pton(AF_INET, ip, c->remote) == 1) c->remote_family = AF_INET;
  else if (inet_pton(AF_INET6, ip, c->remote) == 1) c->remote_family = AF_INET6;
  c->remote_port = (uint16_t)port;
}

void mg_conn_req_client(const mg_conn_t *c, mg_req_t *req) {
  char addr[MG_ADDR_TEXT];
  mg_conn_remote_text(c, addr, sizeof addr);
  req->remote = req->peer = mg_pool_strdup(&req->pool, addr);
  req->remote_port = req->peer_port = c->remote_port;
  req->is_tls = c->tls != NULL;
  if (c->listener != MG_CONN_NO_LISTENER) req->realip = &c->server->cfg->listens[c->listener].realip;
}

void mg_conn_remote_text(const mg_conn_t *c, char *out, size_t n) {
  snprintf(out, n, "%s", "unix:");
  if (c->remote_family) mg_addr_ntop(c->remote_family, c->remote, out, n);
}

int mg_conn_local(const mg_conn_t *c, char *addr, size_t n, int *port) {
  /* A listener bound to one address knows the answer without a syscall. */
  const mg_listener_t *l = c->listener == MG_CONN_NO_LISTENER ? NULL : &c->server->listeners[c->listener];
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

int mg_conn_fd(const mg_conn_t *c) {
  uv_os_fd_t fd;
  if (c->tls || uv_fileno(&c->h.handle, &fd) < 0) return -1;
  return fd;
}
