/* timeq: timeout queues, one libuv timer for many owners.
 *
 * Instead of a libuv timer per connection (152 bytes each), an owner embeds an entry and waits
 * in one of a few FIFO queues, one per kind of timeout. Every entry of a queue has the same
 * duration, so appending keeps a queue sorted by deadline, and one timer, set to the earliest
 * head, serves them all (the scheme of h2o's timeout lists). Deadlines are loop times in ms
 * modulo 2^32: timeouts are far shorter than 24 days, so the signed difference orders them.
 * The owner finds itself from its entry (container_of); nothing here knows what it is. */
#ifndef MG_TIMEQ_H
#define MG_TIMEQ_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The loop-independent clock in ms (monotonic). */
static inline uint64_t mg_now_ms(void) { return uv_hrtime() / 1000000; }

/* uv_timer_start counted from now rather than from the loop's cached time: a timer started
 * after CPU work in the same loop turn (a Lua hook, a handler after hooks) would otherwise
 * fire early by the duration of that work. One clock read (vDSO, no syscall). */
static inline int mg_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t ms, uint64_t repeat) {
  uv_update_time(t->loop);
  return uv_timer_start(t, cb, ms, repeat);
}

#define MG_TIMEQ_QUEUES 4

typedef struct mg_timeq_entry_s {
  struct mg_timeq_entry_s *next, *prev;
  uint32_t deadline;
  uint8_t queue; /* 1 to MG_TIMEQ_QUEUES; 0: in no queue */
} mg_timeq_entry_t;

typedef struct mg_timeq_s mg_timeq_t;
/* Called for an entry whose deadline passed; it is already out of its queue. */
typedef void (*mg_timeq_expired_cb)(mg_timeq_t *q, mg_timeq_entry_t *e, int queue);

struct mg_timeq_s {
  uv_loop_t *loop;
  mg_timeq_expired_cb expired;
  mg_timeq_entry_t *head[MG_TIMEQ_QUEUES], *tail[MG_TIMEQ_QUEUES];
  uv_timer_t timer; /* started on first use; does not keep the loop alive */
  uint64_t due;
  int timer_inited;
};

void mg_timeq_init(mg_timeq_t *q, uv_loop_t *loop, mg_timeq_expired_cb expired);
/* Moves e to the tail of `queue`, due in ms; queue 0 or ms 0 only takes it out. */
void mg_timeq_set(mg_timeq_t *q, mg_timeq_entry_t *e, int queue, uint64_t ms);
void mg_timeq_remove(mg_timeq_t *q, mg_timeq_entry_t *e);
/* The entry waiting longest in `queue` (the first to expire), or NULL. */
static inline mg_timeq_entry_t *mg_timeq_first(const mg_timeq_t *q, int queue) { return q->head[queue - 1]; }
/* Closes the timer (the loop is ending); the queues must be empty or abandoned. */
void mg_timeq_close(mg_timeq_t *q, uv_close_cb cb);

#endif
