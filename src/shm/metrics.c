/* metrics: see metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"

/* A histogram row: nbuckets finite buckets, +Inf, then the sum in microseconds. */
#define HROW(m) ((size_t)(m)->nbuckets + 2)

/* The pool: every cell of every configuration, mapped once (the master, before the first
 * fork) and never unmapped, so the workers of two generations add to the same rows. The last
 * ROW_MAX cells are the overflow row, where a row that did not fit counts unseen. */
#define POOL_CELLS ((size_t)1 << 19) /* 4 MiB of address space; pages are touched as rows are used */
#define ROW_MAX (MG_METRICS_MAX_BUCKETS + 2)
static uint64_t *pool;
static size_t pool_used;

/* The directory of rows by key: the master's private memory (only it binds), an open-addressed
 * hash of indices into dir (FNV-1a), so binding a large configuration stays linear. */
typedef struct {
  char *key;
  size_t off, n;
} row_t;
static row_t *dir;
static size_t ndir, capdir;
static size_t *slots; /* index + 1 into dir, 0: empty; nslots a power of two */
static size_t nslots;

static uint64_t fnv(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325u;
  for (const char *p = s; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3u;
  return h ^ n;
}

static int grow_slots(void) {
  size_t n = nslots ? nslots * 2 : 1024;
  size_t *t = calloc(n, sizeof *t);
  if (!t) return -1;
  for (size_t i = 0; i < ndir; i++) {
    size_t j = fnv(dir[i].key, dir[i].n) & (n - 1);
    while (t[j]) j = (j + 1) & (n - 1);
    t[j] = i + 1;
  }
  free(slots);
  slots = t, nslots = n;
  return 0;
}

/* The handle is private memory (copied into each worker by fork): where each row is. */
struct mg_metrics_s {
  int nroutes, nbalancers, nbuckets;
  uint64_t bounds_us[MG_METRICS_MAX_BUCKETS];
  double bounds[MG_METRICS_MAX_BUCKETS];
  size_t o_conns, o_lua_us, o_lua_calls;
  size_t *req, *rhist;      /* nroutes + 1 */
  int *route_members, *route_up;
  size_t *uhist;            /* sum of route_members */
  size_t *queue, *qhist, *retries; /* nbalancers */
  int *bal_members, *bal_ej;
  size_t *eject;            /* sum of bal_members */
};

static mg_metrics_t *current;

static int pool_map(void) {
  if (pool) return 0;
  void *p = mmap(NULL, POOL_CELLS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  pool = p;
  return 0;
}

/* The row of `key` (n cells): the one made by an earlier configuration, or a new one. */
static size_t row(const char *key, size_t n) {
  static const size_t overflow = POOL_CELLS - ROW_MAX;
  if ((ndir + 1) * 2 > nslots && grow_slots() < 0) return overflow;
  size_t j = fnv(key, n) & (nslots - 1);
  for (; slots[j]; j = (j + 1) & (nslots - 1)) {
    const row_t *r = &dir[slots[j] - 1];
    if (r->n == n && strcmp(r->key, key) == 0) return r->off;
  }
  if (pool_used + n > overflow) {
    static int said;
    if (!said) mg_log(MG_LOG_WARN, "metrics: shared memory for counters is full; new routes and members are not counted");
    said = 1;
    return overflow;
  }
  if (ndir == capdir) {
    size_t cap = capdir ? capdir * 2 : 256;
    row_t *d = realloc(dir, cap * sizeof *d);
    if (!d) return overflow;
    dir = d, capdir = cap;
  }
  size_t len = strlen(key) + 1;
  char *k = malloc(len);
  if (!k) return overflow;
  memcpy(k, key, len);
  dir[ndir] = (row_t){k, pool_used, n};
  slots[j] = ++ndir;
  pool_used += n;
  return dir[ndir - 1].off;
}

void mg_metrics_unmap(mg_metrics_t *m) {
  if (!m) return;
  if (current == m) current = NULL;
  free(m->req), free(m->rhist), free(m->route_members), free(m->route_up), free(m->uhist);
  free(m->queue), free(m->qhist), free(m->retries), free(m->bal_members), free(m->bal_ej), free(m->eject);
  free(m);
}

/* A key from parts joined by tabs (the parts' own tabs are harmless: every key of one kind has
 * the same number of parts first). */
static const char *key_of(char *buf, size_t cap, const char *kind, const char *a, const char *b, const char *c) {
  snprintf(buf, cap, "%s\t%s\t%s\t%s", kind, a ? a : "", b ? b : "", c ? c : "");
  return buf;
}

mg_metrics_t *mg_metrics_map(const mg_metrics_shape_t *s) {
  if (s->nbuckets < 0 || s->nbuckets > MG_METRICS_MAX_BUCKETS || s->nroutes < 0 || s->nbalancers < 0) {
    errno = EINVAL;
    return NULL;
  }
  if (pool_map() < 0) return NULL;
  mg_metrics_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->nroutes = s->nroutes, m->nbalancers = s->nbalancers, m->nbuckets = s->nbuckets;
  /* The buckets are part of a histogram's key: other bounds, other rows. */
  char bsig[MG_METRICS_MAX_BUCKETS * 24 + 1] = "";
  size_t bl = 0;
  for (int i = 0; i < s->nbuckets; i++) {
    m->bounds[i] = s->buckets[i];
    m->bounds_us[i] = (uint64_t)(s->buckets[i] * 1e6 + 0.5);
    bl += (size_t)snprintf(bsig + bl, sizeof bsig - bl, "%llu,", (unsigned long long)m->bounds_us[i]);
  }
  int nup = 0, nej = 0;
  for (int i = 0; i < s->nroutes; i++) nup += s->route_members[i] > 0 ? s->route_members[i] : 0;
  for (int i = 0; i < s->nbalancers; i++) nej += s->balancer_members[i] > 0 ? s->balancer_members[i] : 0;
  size_t nr = (size_t)s->nroutes + 1, nb = (size_t)s->nbalancers + 1;
  m->req = calloc(nr, sizeof(size_t)), m->rhist = calloc(nr, sizeof(size_t));
  m->route_members = calloc(nr, sizeof(int)), m->route_up = calloc(nr, sizeof(int));
  m->uhist = calloc((size_t)nup + 1, sizeof(size_t));
  m->queue = calloc(nb, sizeof(size_t)), m->qhist = calloc(nb, sizeof(size_t)), m->retries = calloc(nb, sizeof(size_t));
  m->bal_members = calloc(nb, sizeof(int)), m->bal_ej = calloc(nb, sizeof(int));
  m->eject = calloc((size_t)nej + 1, sizeof(size_t));
  if (!m->req || !m->rhist || !m->route_members || !m->route_up || !m->uhist || !m->queue || !m->qhist ||
      !m->retries || !m->bal_members || !m->bal_ej || !m->eject) {
    mg_metrics_unmap(m);
    errno = ENOMEM;
    return NULL;
  }
  size_t klen = 4096;
  char *k = malloc(klen);
  if (!k) {
    mg_metrics_unmap(m);
    errno = ENOMEM;
    return NULL;
  }
  m->o_conns = row("conns", MG_METRICS_PROTOS);
  m->o_lua_us = row("lua_us", MG_METRICS_PHASES);
  m->o_lua_calls = row("lua_calls", MG_METRICS_PHASES);
  int up = 0;
  for (int i = 0; i <= s->nroutes; i++) {
    const char *rk = i < s->nroutes ? (s->route_keys[i] ? s->route_keys[i] : "") : NULL; /* NULL: no route */
    m->req[i] = row(key_of(k, klen, rk ? "req" : "req-none", rk, NULL, NULL), MG_METRICS_CLASSES);
    m->rhist[i] = row(key_of(k, klen, rk ? "rhist" : "rhist-none", bsig, rk, NULL), HROW(m));
    if (i == s->nroutes) break;
    m->route_members[i] = s->route_members[i] > 0 ? s->route_members[i] : 0;
    m->route_up[i] = up;
    for (int j = 0; j < m->route_members[i]; j++)
      m->uhist[up++] = row(key_of(k, klen, "uhist", bsig, rk, s->member_keys[i][j]), HROW(m));
  }
  int ej = 0;
  for (int i = 0; i < s->nbalancers; i++) {
    const char *bk = s->balancer_keys[i] ? s->balancer_keys[i] : "";
    m->queue[i] = row(key_of(k, klen, "queue", bk, NULL, NULL), 4);
    m->qhist[i] = row(key_of(k, klen, "qhist", bsig, bk, NULL), HROW(m));
    m->retries[i] = row(key_of(k, klen, "retries", bk, NULL, NULL), 2);
    m->bal_members[i] = s->balancer_members[i] > 0 ? s->balancer_members[i] : 0;
    m->bal_ej[i] = ej;
    for (int j = 0; j < m->bal_members[i]; j++) m->eject[ej++] = row(key_of(k, klen, "eject", bk, s->bmember_keys[i][j], NULL), 1);
  }
  free(k);
  return m;
}

void mg_metrics_use(mg_metrics_t *m) { current = m; }
mg_metrics_t *mg_metrics_current(void) { return current; }

/* ---- updates ------------------------------------------------------------------------------ */

static inline void add(uint64_t *cell, uint64_t v) { __atomic_fetch_add(cell, v, __ATOMIC_RELAXED); }

static void hist_add(const mg_metrics_t *m, uint64_t *row, uint64_t usec) {
  int i = 0;
  while (i < m->nbuckets && usec > m->bounds_us[i]) i++;
  add(&row[i], 1);
  add(&row[m->nbuckets + 1], usec);
}

void mg_metrics_request(int route, int status, uint64_t usec) {
  mg_metrics_t *m = current;
  if (!m) return;
  if (route < 0 || route > m->nroutes) route = m->nroutes;
  int cls = status >= 100 && status < 600 ? status / 100 - 1 : MG_METRICS_CLASSES - 1;
  add(&pool[m->req[route] + (size_t)cls], 1);
  hist_add(m, &pool[m->rhist[route]], usec);
}

void mg_metrics_upstream(int route, int member, uint64_t usec) {
  mg_metrics_t *m = current;
  if (!m || route < 0 || route >= m->nroutes || member < 0 || member >= m->route_members[route]) return;
  hist_add(m, &pool[m->uhist[m->route_up[route] + member]], usec);
}

void mg_metrics_conn(int proto, int delta) {
  mg_metrics_t *m = current;
  if (!m || proto < 0 || proto >= MG_METRICS_PROTOS) return;
  add(&pool[m->o_conns + (size_t)proto], (uint64_t)(int64_t)delta);
}

void mg_metrics_lua(int phase, uint64_t usec) {
  mg_metrics_t *m = current;
  if (!m || phase < 0 || phase >= MG_METRICS_PHASES) return;
  add(&pool[m->o_lua_us + (size_t)phase], usec);
  add(&pool[m->o_lua_calls + (size_t)phase], 1);
}

void mg_metrics_queue(int b, int event, uint64_t wait_usec) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers) return;
  uint64_t *q = &pool[m->queue[b]];
  switch (event) {
  case MG_QUEUE_ENTER: add(&q[0], 1); break;
  case MG_QUEUE_SERVED:
    add(&q[0], (uint64_t)-1), add(&q[1], 1);
    hist_add(m, &pool[m->qhist[b]], wait_usec);
    break;
  case MG_QUEUE_FULL: add(&q[2], 1); break;
  case MG_QUEUE_TIMEOUT: add(&q[0], (uint64_t)-1), add(&q[3], 1); break;
  case MG_QUEUE_GONE: add(&q[0], (uint64_t)-1); break; /* no outcome: the client left */
  default: break;
  }
}

void mg_metrics_ejection(int b, int k) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers || k < 0 || k >= m->bal_members[b]) return;
  add(&pool[m->eject[m->bal_ej[b] + k]], 1);
}

void mg_metrics_retry(int b, int budget_refused) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers) return;
  add(&pool[m->retries[b] + (budget_refused ? 1 : 0)], 1);
}

/* ---- reading ------------------------------------------------------------------------------ */

static uint64_t get(const mg_metrics_t *m, size_t i) {
  (void)m;
  return __atomic_load_n(&pool[i], __ATOMIC_RELAXED);
}

static void hist_get(const mg_metrics_t *m, size_t row, mg_metrics_hist_t *h) {
  memset(h, 0, sizeof *h);
  uint64_t cum = 0;
  for (int i = 0; i <= m->nbuckets; i++) {
    cum += get(m, row + (size_t)i);
    h->buckets[i] = cum;
  }
  h->count = cum;
  h->sum = (double)get(m, row + (size_t)m->nbuckets + 1) / 1e6;
}

int mg_metrics_nbuckets(const mg_metrics_t *m) { return m ? m->nbuckets : 0; }
double mg_metrics_bucket(const mg_metrics_t *m, int i) { return m && i >= 0 && i < m->nbuckets ? m->bounds[i] : 0; }

uint64_t mg_metrics_requests(const mg_metrics_t *m, int route, int cls) {
  if (!m || route < 0 || route > m->nroutes || cls < 0 || cls >= MG_METRICS_CLASSES) return 0;
  return get(m, m->req[route] + (size_t)cls);
}

void mg_metrics_request_hist(const mg_metrics_t *m, int route, mg_metrics_hist_t *h) {
  if (!m || route < 0 || route > m->nroutes) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->rhist[route], h);
}

void mg_metrics_upstream_hist(const mg_metrics_t *m, int route, int member, mg_metrics_hist_t *h) {
  if (!m || route < 0 || route >= m->nroutes || member < 0 || member >= m->route_members[route]) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->uhist[m->route_up[route] + member], h);
}

int64_t mg_metrics_conns(const mg_metrics_t *m, int proto) {
  if (!m || proto < 0 || proto >= MG_METRICS_PROTOS) return 0;
  int64_t v = (int64_t)get(m, m->o_conns + (size_t)proto);
  return v > 0 ? v : 0;
}

double mg_metrics_lua_seconds(const mg_metrics_t *m, int phase) {
  if (!m || phase < 0 || phase >= MG_METRICS_PHASES) return 0;
  return (double)get(m, m->o_lua_us + (size_t)phase) / 1e6;
}

uint64_t mg_metrics_lua_calls(const mg_metrics_t *m, int phase) {
  if (!m || phase < 0 || phase >= MG_METRICS_PHASES) return 0;
  return get(m, m->o_lua_calls + (size_t)phase);
}

int64_t mg_metrics_queue_get(const mg_metrics_t *m, int b, int what) {
  if (!m || b < 0 || b >= m->nbalancers || what < 0 || what > 3) return 0;
  int64_t v = (int64_t)get(m, m->queue[b] + (size_t)what);
  return v > 0 ? v : 0;
}

void mg_metrics_queue_wait_hist(const mg_metrics_t *m, int b, mg_metrics_hist_t *h) {
  if (!m || b < 0 || b >= m->nbalancers) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->qhist[b], h);
}

uint64_t mg_metrics_ejections(const mg_metrics_t *m, int b, int k) {
  if (!m || b < 0 || b >= m->nbalancers || k < 0 || k >= m->bal_members[b]) return 0;
  return get(m, m->eject[m->bal_ej[b] + k]);
}

uint64_t mg_metrics_retries(const mg_metrics_t *m, int b, int budget_refused) {
  if (!m || b < 0 || b >= m->nbalancers) return 0;
  return get(m, m->retries[b] + (budget_refused ? 1 : 0));
}
