/* queue: see queue.h. */
#include "queue.h"

#include <stdio.h>
#include <string.h>

#include "hooks.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "timeq.h"

/* This worker's balancers that have waiters (a short list: balancers are few). */
#define MAX_ACTIVE 256
static mg_balancer_t *active[MAX_ACTIVE];
static int nactive;
static uv_timer_t poll_timer;
static uv_loop_t *poll_loop;

static void poll_cb(uv_timer_t *t);

int mg_queue_bind(mg_config_t *cfg) {
  int rc = mg_caps_map();
  if (rc < 0) return rc;
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    b->q = mg_caps_queue(b->name);
    if (!b->q && b->queue_size)
      mg_log(MG_LOG_WARN, "balancer %s: no room left in shared memory for its queue: requests at max_conns get 503 at once", b->name);
    for (int k = 0; k < b->nmembers; k++) {
      mg_member_t *m = &b->members[k];
      m->cap = mg_caps_member(b->name, mg_member_key(m), m->max_conns);
      if (!m->cap && m->max_conns)
        mg_log(MG_LOG_WARN, "balancer %s: no room left in shared memory for member %s: its max_conns is not enforced", b->name, m->addr.url);
    }
  }
  return 0;
}

static void ensure_timer(uv_loop_t *loop) {
  if (poll_loop == loop) return;
  /* A new loop (the worker's, once): the timer is made on it and does not keep it alive. */
  uv_timer_init(loop, &poll_timer);
  uv_unref((uv_handle_t *)&poll_timer);
  poll_loop = loop;
}

static void activate(mg_balancer_t *b) {
  for (int i = 0; i < nactive; i++)
    if (active[i] == b) return;
  if (nactive < MAX_ACTIVE) active[nactive++] = b;
}

static mg_capq_proc_t *mine(const mg_balancer_t *b) {
  int me = mg_caps_self();
  return me >= 0 && b->q ? &b->q->proc[me] : NULL;
}

/* Publishes this worker's oldest ticket and waiter count (called after every change). */
static void publish(mg_balancer_t *b) {
  mg_capq_proc_t *p = mine(b);
  if (!p) return;
  __atomic_store_n(&p->head, b->wait_head ? b->wait_head->ticket : 0, __ATOMIC_RELEASE);
  __atomic_store_n(&p->seen_ms, mg_now_ms(), __ATOMIC_RELAXED);
}

int mg_queue_busy(const mg_balancer_t *b) { return b->q && __atomic_load_n(&b->q->waiting, __ATOMIC_ACQUIRE) > 0; }

int mg_queue_join(mg_balancer_t *b, mg_waiter_t *w) {
  mg_capq_proc_t *p = mine(b);
  if (!b->queue_size || !p) {
    mg_queue_refused(b);
    return -1;
  }
  if (__atomic_add_fetch(&b->q->waiting, 1, __ATOMIC_ACQ_REL) > b->queue_size) {
    __atomic_sub_fetch(&b->q->waiting, 1, __ATOMIC_ACQ_REL);
    mg_queue_refused(b);
    return -1;
  }
  __atomic_add_fetch(&p->n, 1, __ATOMIC_ACQ_REL);
  __atomic_add_fetch(&b->q->waits, 1, __ATOMIC_RELAXED);
  mg_metrics_queue(b->index, MG_QUEUE_ENTER, 0);
  w->b = b;
  w->ticket = __atomic_fetch_add(&b->q->ticket, 1, __ATOMIC_ACQ_REL);
  w->since_ms = mg_now_ms();
  w->next = NULL, w->prev = b->wait_tail;
  if (b->wait_tail) b->wait_tail->next = w;
  else b->wait_head = w;
  b->wait_tail = w;
  publish(b);
  activate(b);
  ensure_timer(w->loop);
  /* It may be first in line with a slot free already (it queued only behind others). */
  if (!uv_is_active((uv_handle_t *)&poll_timer) || uv_timer_get_due_in(&poll_timer) > 0)
    mg_timer_start(&poll_timer, poll_cb, 0, MG_QUEUE_POLL_MS);
  return 0;
}

static void unlink_waiter(mg_waiter_t *w) {
  mg_balancer_t *b = w->b;
  if (w->prev) w->prev->next = w->next;
  else b->wait_head = w->next;
  if (w->next) w->next->prev = w->prev;
  else b->wait_tail = w->prev;
  w->prev = w->next = NULL;
  w->b = NULL;
  mg_capq_proc_t *p = mine(b);
  if (p) __atomic_sub_fetch(&p->n, 1, __ATOMIC_ACQ_REL);
  __atomic_sub_fetch(&b->q->waiting, 1, __ATOMIC_ACQ_REL);
  publish(b);
}

void mg_queue_leave(mg_waiter_t *w, int why) {
  mg_balancer_t *b = w->b;
  if (!b) return;
  unlink_waiter(w);
  __atomic_add_fetch(why == MG_QLEAVE_TIMEOUT ? &b->q->timeouts : &b->q->gone, 1, __ATOMIC_RELAXED);
  mg_metrics_queue(b->index, why == MG_QLEAVE_TIMEOUT ? MG_QUEUE_TIMEOUT : MG_QUEUE_GONE, 0);
}

void mg_queue_served(mg_waiter_t *w) {
  mg_balancer_t *b = w->b;
  if (!b) return;
  unlink_waiter(w);
  __atomic_add_fetch(&b->q->served, 1, __ATOMIC_RELAXED);
  uint64_t waited = mg_now_ms() - w->since_ms;
  __atomic_add_fetch(&b->q->wait_ms, waited, __ATOMIC_RELAXED);
  mg_metrics_queue(b->index, MG_QUEUE_SERVED, waited * 1000);
}

void mg_queue_refused(mg_balancer_t *b) {
  if (b->q) __atomic_add_fetch(&b->q->refused, 1, __ATOMIC_RELAXED);
  mg_metrics_queue(b->index, MG_QUEUE_FULL, 0); /* moongate_queue_requests_total{outcome="full"} */
}

int mg_queue_retry_after(const mg_balancer_t *b) {
  int s = b->queue_size ? (int)((b->queue_timeout_ms + 999) / 1000) : 1;
  return s < 1 ? 1 : s;
}

void mg_queue_kick(mg_balancer_t *b, uv_loop_t *loop) {
  if (!b->wait_head || poll_loop != loop) return;
  if (uv_timer_get_due_in(&poll_timer) > 0 || !uv_is_active((uv_handle_t *)&poll_timer))
    mg_timer_start(&poll_timer, poll_cb, 0, MG_QUEUE_POLL_MS);
}

/* Whether no other worker has an older waiter that is still looking. */
static int oldest(const mg_balancer_t *b, uint64_t ticket, uint64_t now) {
  int me = mg_caps_self();
  for (int i = 0; i < MG_CAPS_PROCS; i++) {
    if (i == me) continue;
    const mg_capq_proc_t *p = &b->q->proc[i];
    if (__atomic_load_n(&p->n, __ATOMIC_ACQUIRE) <= 0) continue;
    uint64_t head = __atomic_load_n(&p->head, __ATOMIC_ACQUIRE);
    if (!head || head >= ticket) continue;
    if (now - __atomic_load_n(&p->seen_ms, __ATOMIC_RELAXED) > MG_QUEUE_STALE_MS) continue;
    return 0;
  }
  return 1;
}

/* Serves b's waiters while the oldest of them may take a slot. */
static void dispatch(mg_balancer_t *b, uint64_t now) {
  while (b->wait_head) {
    mg_waiter_t *w = b->wait_head;
    if (!oldest(b, w->ticket, now)) break;
    uint64_t ticket = w->ticket;
    if (!w->take(w)) break;
    /* Never loops on a waiter that stayed by mistake; one that queued again (its connect
     * failed at once and every other member is full) has a new ticket and stays. */
    if (b->wait_head == w && w->ticket == ticket) mg_queue_served(w);
  }
  publish(b);
}

static void poll_cb(uv_timer_t *t) {
  uint64_t now = mg_now_ms();
  for (int i = 0; i < nactive;) {
    mg_balancer_t *b = active[i];
    dispatch(b, now);
    if (!b->wait_head) active[i] = active[--nactive];
    else i++;
  }
  if (!nactive) uv_timer_stop(t);
}

/* ---- choosing a member with a free slot ------------------------------------------------- */

int mg_queue_choose(mg_req_t *req, mg_balancer_t *b, const unsigned char *tried, mg_member_t **out) {
  uint64_t now = mg_now_ms();
  mg_member_t *m = NULL;
  int idx = 0;
  if (mg_hooks && (mg_req_hook_count(req, MG_PHASE_BALANCER) || b->method == MG_LB_LUA) && mg_hooks->balancer(req, b, 1, &idx) == MG_ENDED)
    return -2;
  /* A hook's or Lua method's member at its max_conns is passed over like an unusable one. */
  if (idx > 0 && !tried[idx - 1] && mg_member_usable(&b->members[idx - 1], now)) {
    mg_member_t *c = &b->members[idx - 1];
    if (!c->cap || mg_cap_acquire(c->cap)) m = c;
  }
  if (!m) {
    const char *route = NULL;
    size_t rl = 0;
    if (b->stickysession)
      rl = mg_balancer_sticky_route(b, mg_fields_join(&req->pool, &req->headers, "Cookie", "; "), req->query, &route);
    char sticky[64] = "";
    if (rl && rl < sizeof sticky) memcpy(sticky, route, rl), sticky[rl] = 0;
    /* The slot is taken with a compare-and-swap: another worker may take the last one between
     * the pick and the swap, and the pick is then made again (the member now shows full). */
    for (int i = 0; !m && i < 8; i++) {
      mg_member_t *c = mg_balancer_pick(b, rl ? sticky : NULL, now, tried);
      if (!c) break;
      if (!c->cap || mg_cap_acquire(c->cap)) m = c;
    }
  }
  if (!m) return mg_balancer_any_full(b, now, tried) ? 0 : -1;
  *out = m;
  return 1;
}

void mg_queue_respond_busy(mg_req_t *req, const mg_balancer_t *b, const char *why) {
  /* The error-log line is the one mg_req_error writes. */
  mg_log_error(MG_LOG_ERROR, req->id, "%s, client %s, request \"%s %s\"", why, req->remote, req->orig_method ? req->orig_method : "-",
               req->target ? req->target : "-");
  mg_req_unread_body_closes(req);
  req->resp_headers.n = 0;
  char ra[16];
  int n = snprintf(ra, sizeof ra, "%d", mg_queue_retry_after(b));
  mg_fields_add(&req->pool, &req->resp_headers, "Retry-After", 11, ra, (size_t)n);
  /* SPEC 19: an error page answers with the Retry-After kept (errpage.c). */
  if (mg_req_errpage && mg_req_errpage(req, 503)) return;
  static const char body[] = "503 Service Unavailable\n";
  mg_req_respond(req, 503, "text/plain", body, sizeof body - 1);
}

/* ---- the status page's part ------------------------------------------------------------- */

static int32_t slots_used(const mg_member_t *m) {
  int32_t v = m->cap ? __atomic_load_n(&m->cap->busy, __ATOMIC_RELAXED) : 0;
  return v > 0 ? v : 0;
}

static int max_conns(const mg_member_t *m) { return m->cap ? __atomic_load_n(&m->cap->max, __ATOMIC_RELAXED) : m->max_conns; }

void mg_queue_json_member(mg_buf_t *out, const mg_member_t *m) {
  mg_buf_printf(out, ",\"max_conns\":%d,\"slots_used\":%d", max_conns(m), (int)slots_used(m));
}

typedef struct {
  uint64_t length, waits, served, timeouts, gone, refused, wait_ms;
} qstats_t;

static qstats_t qstats(const mg_balancer_t *b) {
  qstats_t s = {0};
  const mg_capq_t *q = b->q;
  if (!q) return s;
  int32_t len = __atomic_load_n(&q->waiting, __ATOMIC_RELAXED);
  s.length = len > 0 ? (uint64_t)len : 0;
  s.waits = __atomic_load_n(&q->waits, __ATOMIC_RELAXED), s.served = __atomic_load_n(&q->served, __ATOMIC_RELAXED);
  s.timeouts = __atomic_load_n(&q->timeouts, __ATOMIC_RELAXED), s.gone = __atomic_load_n(&q->gone, __ATOMIC_RELAXED);
  s.refused = __atomic_load_n(&q->refused, __ATOMIC_RELAXED), s.wait_ms = __atomic_load_n(&q->wait_ms, __ATOMIC_RELAXED);
  return s;
}

void mg_queue_json_balancer(mg_buf_t *out, const mg_balancer_t *b) {
  qstats_t s = qstats(b);
  mg_buf_printf(out,
                ",\"queue\":{\"size\":%d,\"timeout_ms\":%llu,\"length\":%llu,\"waits\":%llu,\"served\":%llu,\"timeouts\":%llu,"
                "\"gone\":%llu,\"refused\":%llu,\"unavailable\":%llu,\"wait_ms\":%llu}",
                b->queue_size, (unsigned long long)(b->queue_size ? b->queue_timeout_ms : 0), (unsigned long long)s.length,
                (unsigned long long)s.waits, (unsigned long long)s.served, (unsigned long long)s.timeouts,
                (unsigned long long)s.gone, (unsigned long long)s.refused, (unsigned long long)(s.timeouts + s.refused),
                (unsigned long long)s.wait_ms);
}

static void label(mg_buf_t *b, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') mg_buf_append(b, "\\", 1);
    if (*s == '\n') mg_buf_puts(b, "\\n");
    else mg_buf_append(b, s, 1);
  }
}

void mg_queue_prom(mg_buf_t *out, const mg_config_t *cfg) {
  static const char *mfam[][3] = {
      {"max_conns", "gauge", "The member's max_conns (0: no limit)."},
      {"slots_used", "gauge", "Requests holding a slot of the member (connecting or in flight), all workers."},
  };
  for (int f = 0; f < 2; f++) {
    mg_buf_printf(out, "# HELP moongate_member_%s %s\n# TYPE moongate_member_%s %s\n", mfam[f][0], mfam[f][2], mfam[f][0], mfam[f][1]);
    for (int i = 0; i < cfg->nbalancers; i++) {
      const mg_balancer_t *b = cfg->balancers[i];
      for (int k = 0; k < b->nmembers; k++) {
        const mg_member_t *m = &b->members[k];
        if (m->unresolved) continue;
        mg_buf_printf(out, "moongate_member_%s{balancer=\"", mfam[f][0]);
        label(out, b->name);
        mg_buf_puts(out, "\",member=\"");
        label(out, mg_member_key(m));
        mg_buf_printf(out, "\"} %d\n", f == 0 ? max_conns(m) : (int)slots_used(m));
      }
    }
  }
  static const char *bfam[][3] = {
      {"queue_size", "gauge", "The most requests the balancer's queue holds (0: no queue)."},
      {"queue_length", "gauge", "Requests waiting in the balancer's queue now, all workers."},
      {"queue_waits_total", "counter", "Requests that waited in the queue for a member slot."},
      {"queue_served_total", "counter", "Requests that got a member slot after waiting."},
      {"queue_timeouts_total", "counter", "Requests answered 503 at the queue timeout."},
      {"queue_gone_total", "counter", "Requests whose client went away while they waited."},
      {"queue_refused_total", "counter", "Requests answered 503 at once: every member at max_conns and the queue full (or none)."},
      {"queue_unavailable_total", "counter", "503 answers for want of a member slot (timeouts and refusals)."},
      {"queue_wait_seconds_total", "counter", "Time the served requests waited, summed."},
  };
  for (int f = 0; f < 9; f++) {
    mg_buf_printf(out, "# HELP moongate_balancer_%s %s\n# TYPE moongate_balancer_%s %s\n", bfam[f][0], bfam[f][2], bfam[f][0], bfam[f][1]);
    for (int i = 0; i < cfg->nbalancers; i++) {
      const mg_balancer_t *b = cfg->balancers[i];
      qstats_t s = qstats(b);
      uint64_t v[] = {(uint64_t)b->queue_size, s.length, s.waits, s.served, s.timeouts, s.gone, s.refused, s.timeouts + s.refused};
      mg_buf_printf(out, "moongate_balancer_%s{balancer=\"", bfam[f][0]);
      label(out, b->name);
      if (f == 8) mg_buf_printf(out, "\"} %.3f\n", (double)s.wait_ms / 1000);
      else mg_buf_printf(out, "\"} %llu\n", (unsigned long long)v[f]);
    }
  }
}
