/* passive: see passive.h. */
#include "passive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "metrics.h"
#include "timeq.h"
#include "zone.h"

#define MEMBER_SLOTS 2048
#define BALANCER_SLOTS 256

/* The zone's reserved bytes: every slot, found by key at bind time. */
typedef struct {
  mg_passive_member_t members[MEMBER_SLOTS];
  mg_passive_bal_t balancers[BALANCER_SLOTS];
} table_t;

static mg_zone_t *zone;

static table_t *table(void) {
  size_t len;
  return mg_zone_reserved(zone, &len);
}

/* The slot whose key (its first member) is `key`, or a free one made for it, or NULL when all n
 * are taken. */
static void *find_slot(void *slots, size_t stride, int n, size_t keylen, const char *key) {
  char *free_slot = NULL;
  for (int i = 0; i < n; i++) {
    char *slot = (char *)slots + (size_t)i * stride;
    if (!slot[0]) {
      if (!free_slot) free_slot = slot;
    } else if (strcmp(slot, key) == 0) {
      return slot;
    }
  }
  if (free_slot) {
    memset(free_slot, 0, stride);
    snprintf(free_slot, keylen, "%s", key);
  }
  return free_slot;
}

int mg_passive_bind(mg_config_t *cfg) {
  int wanted = 0;
  for (int i = 0; i < cfg->nbalancers; i++) wanted |= cfg->balancers[i]->passive != NULL;
  if (!wanted) return 0;
  if (!zone) {
    char err[160];
    zone = mg_zone_get("moongate passive health", sizeof(table_t) + 4096, sizeof(table_t), err, sizeof err);
    if (!zone) {
      mg_log(MG_LOG_WARN, "passive health and retries are off: %s", err);
      return -1;
    }
  }
  table_t *t = table();
  mg_zone_lock(zone);
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    if (!b->passive) continue;
    b->passive->shared = find_slot(t->balancers, sizeof t->balancers[0], BALANCER_SLOTS, sizeof t->balancers[0].key, b->name);
    if (!b->passive->eject_on) continue;
    for (int k = 0; k < b->nmembers; k++) {
      char key[200];
      snprintf(key, sizeof key, "%s\t%s", b->name, mg_member_key(&b->members[k]));
      b->members[k].passive = find_slot(t->members, sizeof t->members[0], MEMBER_SLOTS, sizeof t->members[0].key, key);
    }
  }
  mg_zone_unlock(zone);
  return 0;
}

void mg_passive_free(mg_passive_t *p) {
  if (!p) return;
  for (int i = 0; i < p->retry.nmethods; i++) free(p->retry.methods[i]);
  free(p);
}

/* ---- passive health ------------------------------------------------------------------------- */

static int listed(const int *statuses, int n, int status) {
  for (int i = 0; i < n; i++)
    if (statuses[i] == status) return 1;
  return 0;
}

/* How many of b's members may be out at once. */
static int max_ejected(const mg_balancer_t *b) {
  const mg_passive_eject_t *e = &b->passive->eject;
  if (e->max_ejected_pct < 0) return e->max_ejected_count;
  int n = 0; /* the members with an address (a name's empty slots are not members now) */
  for (int i = 0; i < b->nmembers; i++) n += !b->members[i].unresolved;
  return n * e->max_ejected_pct / 100;
}

/* Under the lock: ejects m unless max_ejected members are out already. Returns the time it is
 * out for, 0 when it stays. */
static uint64_t eject(mg_balancer_t *b, mg_member_t *m, uint64_t now) {
  int out = 0;
  for (int i = 0; i < b->nmembers; i++)
    if (b->members[i].passive && b->members[i].passive->ejected_until_ms > now) out++;
  if (out >= max_ejected(b)) return 0;
  mg_passive_member_t *s = m->passive;
  /* Doubled for each ejection in the last 10 minutes: 1, 2, 4, 8, then 10 times `eject`. */
  int recent = 0;
  for (int i = 0; i < 4; i++)
    if (s->history[i] && now - s->history[i] < 600000) recent++;
  uint64_t times = recent >= 4 ? 10 : (uint64_t)1 << recent;
  uint64_t ms = b->passive->eject.eject_ms * times;
  memmove(&s->history[1], &s->history[0], 3 * sizeof s->history[0]);
  s->history[0] = now;
  s->ejections++;
  s->fails = 0; /* the count restarts when it comes back */
  s->ejected = 1;
  __atomic_store_n(&s->ejected_until_ms, now + ms, __ATOMIC_RELEASE);
  mg_metrics_ejection(b->index, m->index - 1); /* moongate_ejections_total */
  return ms;
}

void mg_passive_report(mg_balancer_t *b, mg_member_t *m, int status, int timeout, uint64_t now) {
  mg_passive_t *p = b->passive;
  mg_passive_member_t *s = m->passive;
  if (!p || !p->eject_on || !s) return;
  const mg_passive_eject_t *e = &p->eject;
  int failed = timeout ? e->timeouts : listed(e->statuses, e->nstatuses, status);
  if (!failed) {
    if (__atomic_load_n(&s->fails, __ATOMIC_RELAXED)) __atomic_store_n(&s->fails, 0, __ATOMIC_RELAXED);
    return;
  }
  mg_zone_lock(zone);
  uint64_t ms = 0;
  int fails = 0;
  /* A request that was in flight when the member went out says nothing new. */
  if (s->ejected_until_ms <= now) {
    if (s->fails == 0 || now - s->first_fail_ms > e->window_ms) s->fails = 0, s->first_fail_ms = now;
    fails = ++s->fails;
    if (fails >= e->fails) ms = eject(b, m, now);
  }
  mg_zone_unlock(zone);
  if (ms) {
    char last[32];
    if (timeout) snprintf(last, sizeof last, "a timeout");
    else snprintf(last, sizeof last, "status %d", status);
    mg_log(MG_LOG_WARN, "passive health: member %s of balancer %s ejected for %llu ms after %d failures in a row (the last: %s)",
           m->addr.url, b->name, (unsigned long long)ms, fails, last);
  }
}

void mg_passive_sweep(mg_balancer_t *b, uint64_t now) {
  if (!b->passive || !b->passive->eject_on) return;
  for (int i = 0; i < b->nmembers; i++) {
    mg_passive_member_t *s = b->members[i].passive;
    if (!s || !__atomic_load_n(&s->ejected, __ATOMIC_RELAXED) || __atomic_load_n(&s->ejected_until_ms, __ATOMIC_ACQUIRE) > now) continue;
    int one = 1;
    if (__atomic_compare_exchange_n(&s->ejected, &one, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
      mg_log(MG_LOG_NOTICE, "passive health: member %s of balancer %s is back after its ejection", b->members[i].addr.url, b->name);
  }
}

static void on_sweep(uv_timer_t *t) {
  mg_config_t *cfg = t->data;
  uint64_t now = mg_now_ms();
  for (int i = 0; i < cfg->nbalancers; i++) mg_passive_sweep(cfg->balancers[i], now);
}

void mg_passive_start(mg_config_t *cfg, uv_loop_t *loop) {
  int wanted = 0;
  for (int i = 0; i < cfg->nbalancers; i++) wanted |= cfg->balancers[i]->passive && cfg->balancers[i]->passive->eject_on;
  if (!wanted) return;
  static uv_timer_t timer;
  uv_timer_init(loop, &timer);
  timer.data = cfg;
  uv_timer_start(&timer, on_sweep, 1000, 1000);
  /* The sweep alone must not keep a draining worker alive. */
  uv_unref((uv_handle_t *)&timer);
}

/* ---- retries -------------------------------------------------------------------------------- */

/* The index of the current second's bucket, emptied first when it still counts an older one. */
static int bucket(mg_passive_bal_t *s, uint64_t now) {
  uint64_t sec = now / 1000;
  int i = (int)(sec % 10);
  if (__atomic_load_n(&s->win[i].sec, __ATOMIC_ACQUIRE) != sec) {
    mg_zone_lock(zone);
    if (s->win[i].sec != sec) {
      s->win[i].requests = s->win[i].retries = 0;
      __atomic_store_n(&s->win[i].sec, sec, __ATOMIC_RELEASE);
    }
    mg_zone_unlock(zone);
  }
  return i;
}

void mg_passive_request(mg_balancer_t *b, uint64_t now) {
  mg_passive_t *p = b->passive;
  if (!p || !p->retries_on || !p->shared) return;
  mg_passive_bal_t *s = p->shared;
  __atomic_add_fetch(&s->win[bucket(s, now)].requests, 1, __ATOMIC_RELAXED);
}

/* Envoy's retry budget: retries in the last 10 s stay under budget% of the requests, but 3 in the
 * current second are always allowed. Takes the retry when it is allowed. */
static int budget_take(mg_passive_bal_t *s, int pct, uint64_t now) {
  uint64_t sec = now / 1000;
  int cur = bucket(s, now);
  uint64_t requests = 0, retries = 0;
  for (int i = 0; i < 10; i++) {
    if (__atomic_load_n(&s->win[i].sec, __ATOMIC_ACQUIRE) + 10 <= sec) continue;
    requests += __atomic_load_n(&s->win[i].requests, __ATOMIC_RELAXED);
    retries += __atomic_load_n(&s->win[i].retries, __ATOMIC_RELAXED);
  }
  int ok = __atomic_load_n(&s->win[cur].retries, __ATOMIC_RELAXED) < 3 || (retries + 1) * 100 <= requests * (uint64_t)pct;
  if (ok) __atomic_add_fetch(&s->win[cur].retries, 1, __ATOMIC_RELAXED);
  return ok;
}

int mg_passive_retry(mg_balancer_t *b, const char *method, int resendable, int status, int timeout, int attempts,
                     uint64_t now) {
  mg_passive_t *p = b->passive;
  if (!p || !p->retries_on || !resendable) return 0;
  const mg_retries_t *r = &p->retry;
  if (timeout ? !r->on_timeout : !listed(r->statuses, r->nstatuses, status)) return 0;
  if (attempts >= r->tries) return 0;
  int allowed = 0;
  for (int i = 0; i < r->nmethods && !allowed; i++) allowed = strcmp(r->methods[i], method) == 0;
  if (!allowed) return 0;
  mg_passive_bal_t *s = p->shared;
  if (!s) return 0;
  if (!budget_take(s, r->budget_pct, now)) {
    __atomic_add_fetch(&s->refused, 1, __ATOMIC_RELAXED);
    mg_metrics_retry(b->index, 1); /* moongate_retries_budget_exhausted_total */
    return 0;
  }
  __atomic_add_fetch(&s->retries, 1, __ATOMIC_RELAXED);
  mg_metrics_retry(b->index, 0); /* moongate_retries_total */
  return 1;
}

int mg_passive_retry_connect(const mg_balancer_t *b) { return !b->passive || !b->passive->retries_on || b->passive->retry.on_connect; }

/* ---- status page ------------------------------------------------------------------------------ */

void mg_passive_json_member(mg_buf_t *out, const mg_member_t *m, uint64_t now) {
  const mg_passive_member_t *s = m->passive;
  mg_buf_printf(out, ",\"ejections\":%llu,\"ejected_ms\":%llu,\"passive_fails\":%d",
                (unsigned long long)(s ? s->ejections : 0), (unsigned long long)mg_passive_ejected_ms(m, now), s ? s->fails : 0);
}

void mg_passive_json_balancer(mg_buf_t *out, const mg_balancer_t *b) {
  const mg_passive_bal_t *s = b->passive ? b->passive->shared : NULL;
  mg_buf_printf(out, ",\"retries\":%llu,\"retries_refused\":%llu", (unsigned long long)(s ? s->retries : 0),
                (unsigned long long)(s ? s->refused : 0));
}

static void prom_family(mg_buf_t *out, const char *name, const char *type, const char *help) {
  mg_buf_printf(out, "# HELP moongate_%s %s\n# TYPE moongate_%s %s\n", name, help, name, type);
}

void mg_passive_prometheus(mg_buf_t *out, const mg_config_t *cfg, uint64_t now, void (*label)(mg_buf_t *, const char *)) {
  static const char *member[][3] = {
      {"member_ejections_total", "counter", "Times passive health ejected the member."},
      {"member_ejected", "gauge", "1 while passive health holds the member out, else 0."},
  };
  for (int f = 0; f < 2; f++) {
    prom_family(out, member[f][0], member[f][1], member[f][2]);
    for (int i = 0; i < cfg->nbalancers; i++) {
      const mg_balancer_t *b = cfg->balancers[i];
      for (int k = 0; k < b->nmembers; k++) {
        const mg_member_t *m = &b->members[k];
        if (m->unresolved) continue;
        uint64_t v = f == 0 ? (m->passive ? m->passive->ejections : 0) : mg_passive_ejected_ms(m, now) > 0;
        mg_buf_printf(out, "moongate_%s{balancer=\"", member[f][0]);
        label(out, b->name);
        mg_buf_puts(out, "\",member=\"");
        label(out, mg_member_key(m));
        mg_buf_printf(out, "\"} %llu\n", (unsigned long long)v);
      }
    }
  }
  static const char *balancer[][2] = {
      {"balancer_retries_total", "Requests tried again on another member (retries)."},
      {"balancer_retries_refused_total", "Retries the retry budget refused."},
  };
  for (int f = 0; f < 2; f++) {
    prom_family(out, balancer[f][0], "counter", balancer[f][1]);
    for (int i = 0; i < cfg->nbalancers; i++) {
      const mg_balancer_t *b = cfg->balancers[i];
      const mg_passive_bal_t *s = b->passive ? b->passive->shared : NULL;
      mg_buf_printf(out, "moongate_%s{balancer=\"", balancer[f][0]);
      label(out, b->name);
      mg_buf_printf(out, "\"} %llu\n", (unsigned long long)(s ? (f == 0 ? s->retries : s->refused) : 0));
    }
  }
}
