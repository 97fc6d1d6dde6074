/* timeq: see timeq.h. */
#include "timeq.h"

#include <string.h>

void mg_timeq_init(mg_timeq_t *q, uv_loop_t *loop, mg_timeq_expired_cb expired) {
  memset(q, 0, sizeof *q);
  q->loop = loop;
  q->expired = expired;
}

void mg_timeq_remove(mg_timeq_t *q, mg_timeq_entry_t *e) {
  if (!e->queue) return;
  int k = e->queue - 1;
  if (e->prev) e->prev->next = e->next;
  else q->head[k] = e->next;
  if (e->next) e->next->prev = e->prev;
  else q->tail[k] = e->prev;
  e->next = e->prev = NULL;
  e->queue = 0;
}

static void schedule(mg_timeq_t *q);

static void on_timer(uv_timer_t *t) {
  mg_timeq_t *q = t->data;
  uint64_t now = uv_now(q->loop);
  for (int k = 0; k < MG_TIMEQ_QUEUES; k++) {
    mg_timeq_entry_t *e;
    while ((e = q->head[k]) && (int32_t)(e->deadline - (uint32_t)now) <= 0) {
      mg_timeq_remove(q, e);
      q->expired(q, e, k + 1);
    }
  }
  schedule(q);
}

static void schedule(mg_timeq_t *q) {
  uint64_t now = uv_now(q->loop);
  int64_t wait = INT64_MAX;
  for (int k = 0; k < MG_TIMEQ_QUEUES; k++)
    if (q->head[k]) {
      int32_t d = (int32_t)(q->head[k]->deadline - (uint32_t)now);
      if (d < wait) wait = d;
    }
  if (wait == INT64_MAX) {
    uv_timer_stop(&q->timer);
    return;
  }
  uint64_t due = now + (uint64_t)(wait > 0 ? wait : 0);
  if (uv_is_active((uv_handle_t *)&q->timer) && q->due <= due) return;
  q->due = due;
  uv_timer_start(&q->timer, on_timer, due - now, 0);
}

void mg_timeq_set(mg_timeq_t *q, mg_timeq_entry_t *e, int queue, uint64_t ms) {
  mg_timeq_remove(q, e);
  if (queue <= 0 || queue > MG_TIMEQ_QUEUES || ms == 0) return;
  if (!q->timer_inited) {
    uv_timer_init(q->loop, &q->timer);
    q->timer.data = q;
    uv_unref((uv_handle_t *)&q->timer);
    q->timer_inited = 1;
  }
  int k = queue - 1;
  e->queue = (uint8_t)queue;
  e->deadline = (uint32_t)(uv_now(q->loop) + ms);
  e->prev = q->tail[k];
  e->next = NULL;
  if (q->tail[k]) q->tail[k]->next = e;
  else q->head[k] = e;
  q->tail[k] = e;
  schedule(q);
}

void mg_timeq_close(mg_timeq_t *q, uv_close_cb cb) {
  if (q->timer_inited) uv_close((uv_handle_t *)&q->timer, cb);
  q->timer_inited = 0;
}
