/* upstream_int: the SCGI upstream's state (upstream.c), in a header of its own so that the
 * handler's file holds the code only. Nothing but upstream.c includes it. */
#ifndef MG_UPSTREAM_INT_H
#define MG_UPSTREAM_INT_H

#include <uv.h>

#include "balancer.h"
#include "fdio.h"
#include "queue.h"
#include "request.h"
#include "resp_buffer.h"
#include "scgi.h"
#include "upstream.h"

enum { S_WAIT_BODY, S_CONNECTING, S_HEAD, S_BODY, S_DONE };

typedef struct chunk_s {
  struct chunk_s *next;
  size_t len;
  char data[];
} chunk_t;

/* A buffer queued for the backend; `mem` is freed when it has been written. */
typedef struct wq_s {
  struct wq_s *next;
  void *mem;
  const char *data;
  size_t len;
} wq_t;

struct mg_upstream_s {
  mg_fdio_t io;
  uv_timer_t timer;
  mg_req_t *req; /* NULL once closed */
  const mg_addr_t *addr;
  mg_balancer_t *balancer;
  mg_member_t *member;
  unsigned char *tried;           /* per member of the balancer: already tried */
  unsigned char tried_small[16];  /* ... for balancers of up to 16 members */
  int attempts;
  int state;
  char name[80];
  mg_buf_t head;         /* a response head that arrived in several reads */
  chunk_t *pending, **pending_tail;
  size_t pending_bytes;
  int spool_fd; /* a duplicate of req->body.fd being sent */
  uint64_t spool_off;
  uint64_t bytes_in;
  uint64_t timeout_ms;
  uint64_t armed_ms;     /* the loop time when the inactivity timer was last (re)armed */
  wq_t *wq, **wq_tail;   /* writes waiting for the socket */
  size_t wq_bytes;
  int handles_open;
  unsigned closing : 1, reading : 1, client_paused : 1, timed : 1;
  unsigned head_queued : 1; /* the SCGI head is in wq (or out): body bytes follow it there */
  unsigned spool : 1;       /* the request body is read whole into req->body first */
  unsigned resendable : 1;  /* no body, or one held whole: another attempt may send it again */
  mg_rbuf_t *rbuf;          /* response_buffering: made when the client first falls behind */
  mg_member_t *slot;        /* SPEC 20: the member whose slot (max_conns) this request holds */
  mg_waiter_t wait;         /* SPEC 20: in the balancer's queue while wait.b is set */
  unsigned readable : 1, writable : 1, peer_closed : 1, write_failed : 1, flushing : 1;
  /* Last: mg_cgi_parse fills it, so a new upstream zeroes only the fields above (3 KiB less
   * to clear per request). */
  mg_cgi_head_t parsed; /* the response head, once complete */
  /* The SCGI request when it fits (the common case): its queue entry and bytes live here, so
   * sending it allocates nothing. Not zeroed either. */
  wq_t head_wq;
  char head_mem[2048];
};

#endif
