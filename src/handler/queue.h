/* queue: requests waiting for a member slot of a balancer (SPEC 20: max_conns and queue).
 *
 * A waiter is a request for which every member it could use is at its max_conns. It joins
 * its balancer's queue (bounded, over all workers, by the queue's size) and gets a ticket:
 * tickets are handed out in arrival order over all workers. This worker keeps its waiters in
 * a list, oldest first, and publishes the ticket of the oldest in shared memory (shm/caps.h).
 *
 * Wake-ups: a slot freed in this worker makes it look at its waiters on the next loop turn; a
 * worker with waiters also looks every MG_QUEUE_POLL_MS (a timer that runs only while it has
 * waiters), which is how a slot freed in another worker reaches them. When it looks, its
 * oldest waiter may take a free slot only if no other worker's oldest waiter is older (a
 * worker that has not looked for MG_QUEUE_STALE_MS -- stuck in a long Lua call, or dead -- is
 * not waited for). So the queue is FIFO over all workers, and a slot freed anywhere reaches
 * the oldest waiter within one poll interval: the added latency is at most MG_QUEUE_POLL_MS
 * plus the waiting worker's loop turn. Polling rather than an eventfd per worker keeps the
 * workers independent of each other's descriptors across reloads and restarts, and costs
 * nothing while nobody waits. */
#ifndef MG_QUEUE_H
#define MG_QUEUE_H

#include <stdint.h>

#include "balancer.h"
#include "buf.h"
#include "loop.h"
#include "request.h"

#define MG_QUEUE_POLL_MS 1
#define MG_QUEUE_STALE_MS 100

typedef struct mg_waiter_s mg_waiter_t;
struct mg_waiter_s {
  mg_waiter_t *prev, *next;
  mg_balancer_t *b; /* NULL: not queued */
  uint64_t ticket, since_ms;
  uv_loop_t *loop;
  /* Called when the waiter is the oldest and may look for a slot: 0 when none was free (it
   * stays, first in line); 1 when its turn is over (it took a slot, or ended): it has then
   * called mg_queue_served. */
  int (*take)(mg_waiter_t *w);
};

/* Gives every balancer of cfg its shared queue state and every member its slots (the master,
 * at load, before the workers fork; a reload finds the entries whose names stay). A member
 * without them (no shared memory, or a full table) has no max_conns: it is logged. */
int mg_queue_bind(mg_config_t *cfg);
/* Whether requests of b wait in a queue now (any worker): a new request then queues behind
 * them rather than taking a slot that was freed for the oldest. */
int mg_queue_busy(const mg_balancer_t *b);
/* Queues w (take and loop set). 0, or -1 when the queue is full or b has none (the
 * caller answers 503; counted as refused). */
int mg_queue_join(mg_balancer_t *b, mg_waiter_t *w);
enum { MG_QLEAVE_TIMEOUT, MG_QLEAVE_GONE };
/* w leaves the queue with its turn (a no-op when it is not queued). */
void mg_queue_served(mg_waiter_t *w);
/* w leaves the queue without a slot: its timeout, or its client went away. */
void mg_queue_leave(mg_waiter_t *w, int why);
/* A request of b was refused without a queue (all members at max_conns, no queue or a full
 * one): counted. */
void mg_queue_refused(mg_balancer_t *b);
/* A slot of b was freed in this worker: its waiters look on the next loop turn. */
void mg_queue_kick(mg_balancer_t *b, uv_loop_t *loop);
/* The Retry-After seconds of b's 503s: its queue timeout rounded up, at least 1. */
int mg_queue_retry_after(const mg_balancer_t *b);

/* Chooses a member of b for req and takes one of its slots: the balancer hooks or Lua method
 * first (a member they name that is full or unusable is passed over), then stickiness, then
 * the method. `tried`: members this request failed on. 1 with *out set; 0 when every member
 * the request could use is at its max_conns; -1 when none is usable; -2 when a hook ended the
 * request. */
int mg_queue_choose(mg_req_t *req, mg_balancer_t *b, const unsigned char *tried, mg_member_t **out);
/* Answers 503 with Retry-After for want of a slot (or the error page for 503), the error log
 * naming `why`. */
void mg_queue_respond_busy(mg_req_t *req, const mg_balancer_t *b, const char *why);

/* The status page's part: a member's max_conns and slots used (JSON fields), a balancer's
 * queue (a JSON field), and both as Prometheus families. */
void mg_queue_json_member(mg_buf_t *out, const mg_member_t *m);
void mg_queue_json_balancer(mg_buf_t *out, const mg_balancer_t *b);
void mg_queue_prom(mg_buf_t *out, const mg_config_t *cfg);

#endif
