/* metrics: see metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A histogram row: nbuckets finite buckets, +Inf, then the sum in microseconds. */
#define HROW(m) ((size_t)(m)->nbuckets + 2)

/* The handle is private memory (copied into each worker by fork); the cells are shared. */
struct mg_metrics_s {
  uint64_t *cells;
  size_t ncells;
  int nroutes, nbalancers, nbuckets;
  uint64_t bounds_us[MG_METRICS_MAX_BUCKETS];
  double bounds[MG_METRICS_MAX_BUCKETS];
  /* offsets (in cells) of each family */
  size_t o_req, o_rhist, o_uhist, o_conns, o_lua_us, o_lua_calls, o_queue, o_qhist, o_retries, o_eject;
  int *route_members, *route_up; /* nroutes: members, first row in o_uhist */
  int *bal_members, *bal_ej;     /* nbalancers: members, first cell in o_eject */
  char **route_keys, **bal_keys; /* for the copy on reload */
  char ***member_keys, ***bmember_keys;
};

static mg_metrics_t *current;

static char *dup(const char *s) {
  s = s ? s : "";
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static char **dup_keys(const char **keys, int n) {
  char **v = calloc((size_t)n + 1, sizeof *v);
  for (int i = 0; v && i < n; i++) v[i] = dup(keys ? keys[i] : NULL);
  return v;
}

static void free_keys(char **v, int n) {
  if (!v) return;
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

void mg_metrics_unmap(mg_metrics_t *m) {
  if (!m) return;
  if (current == m) current = NULL;
  if (m->cells) munmap(m->cells, m->ncells * sizeof(uint64_t));
  for (int i = 0; i < m->nroutes; i++) free_keys(m->member_keys ? m->member_keys[i] : NULL, m->route_members[i]);
  for (int i = 0; i < m->nbalancers; i++) free_keys(m->bmember_keys ? m->bmember_keys[i] : NULL, m->bal_members[i]);
  free(m->member_keys), free(m->bmember_keys);
  free_keys(m->route_keys, m->nroutes), free_keys(m->bal_keys, m->nbalancers);
  free(m->route_members), free(m->route_up), free(m->bal_members), free(m->bal_ej);
  free(m);
}

static int find(char **keys, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (keys[i] && strcmp(keys[i], key) == 0) return i;
  return -1;
}

static void copy_cells(uint64_t *to, const uint64_t *from, size_t n) {
  for (size_t i = 0; i < n; i++) to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* The counters of what both shapes have; gauges (connections, queue lengths) belong to the
 * processes of their own generation and start at zero. */
static void copy_from(mg_metrics_t *m, const mg_metrics_t *p) {
  int same_buckets = m->nbuckets == p->nbuckets && memcmp(m->bounds_us, p->bounds_us, sizeof m->bounds_us) == 0;
  for (int r = 0; r <= m->nroutes; r++) {
    int q = r == m->nroutes ? p->nroutes : find(p->route_keys, p->nroutes, m->route_keys[r]);
    if (q < 0) continue;
    copy_cells(m->cells + m->o_req + (size_t)r * MG_METRICS_CLASSES, p->cells + p->o_req + (size_t)q * MG_METRICS_CLASSES,
               MG_METRICS_CLASSES);
    if (!same_buckets) continue;
    copy_cells(m->cells + m->o_rhist + (size_t)r * HROW(m), p->cells + p->o_rhist + (size_t)q * HROW(p), HROW(m));
    if (r == m->nroutes) continue;
    for (int k = 0; k < m->route_members[r]; k++) {
      int j = find(p->member_keys[q], p->route_members[q], m->member_keys[r][k]);
      if (j >= 0)
        copy_cells(m->cells + m->o_uhist + (size_t)(m->route_up[r] + k) * HROW(m),
                   p->cells + p->o_uhist + (size_t)(p->route_up[q] + j) * HROW(p), HROW(m));
    }
  }
  copy_cells(m->cells + m->o_lua_us, p->cells + p->o_lua_us, MG_METRICS_PHASES);
  copy_cells(m->cells + m->o_lua_calls, p->cells + p->o_lua_calls, MG_METRICS_PHASES);
  for (int b = 0; b < m->nbalancers; b++) {
    int q = find(p->bal_keys, p->nbalancers, m->bal_keys[b]);
    if (q < 0) continue;
    copy_cells(m->cells + m->o_queue + (size_t)b * 4 + 1, p->cells + p->o_queue + (size_t)q * 4 + 1, 3);
    if (same_buckets) copy_cells(m->cells + m->o_qhist + (size_t)b * HROW(m), p->cells + p->o_qhist + (size_t)q * HROW(p), HROW(m));
    copy_cells(m->cells + m->o_retries + (size_t)b * 2, p->cells + p->o_retries + (size_t)q * 2, 2);
    for (int k = 0; k < m->bal_members[b]; k++) {
      int j = find(p->bmember_keys[q], p->bal_members[q], m->bmember_keys[b][k]);
      if (j >= 0) copy_cells(m->cells + m->o_eject + m->bal_ej[b] + k, p->cells + p->o_eject + p->bal_ej[q] + j, 1);
    }
  }
}

mg_metrics_t *mg_metrics_map(const mg_metrics_shape_t *s, const mg_metrics_t *prev) {
  if (s->nbuckets < 0 || s->nbuckets > MG_METRICS_MAX_BUCKETS || s->nroutes < 0 || s->nbalancers < 0) {
    errno = EINVAL;
    return NULL;
  }
  mg_metrics_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->nroutes = s->nroutes, m->nbalancers = s->nbalancers, m->nbuckets = s->nbuckets;
  for (int i = 0; i < s->nbuckets; i++) {
    m->bounds[i] = s->buckets[i];
    m->bounds_us[i] = (uint64_t)(s->buckets[i] * 1e6 + 0.5);
  }
  m->route_members = calloc((size_t)s->nroutes + 1, sizeof(int));
  m->route_up = calloc((size_t)s->nroutes + 1, sizeof(int));
  m->bal_members = calloc((size_t)s->nbalancers + 1, sizeof(int));
  m->bal_ej = calloc((size_t)s->nbalancers + 1, sizeof(int));
  m->route_keys = dup_keys(s->route_keys, s->nroutes);
  m->bal_keys = dup_keys(s->balancer_keys, s->nbalancers);
  m->member_keys = calloc((size_t)s->nroutes + 1, sizeof(char **));
  m->bmember_keys = calloc((size_t)s->nbalancers + 1, sizeof(char **));
  if (!m->route_members || !m->route_up || !m->bal_members || !m->bal_ej || !m->route_keys || !m->bal_keys ||
      !m->member_keys || !m->bmember_keys) {
    mg_metrics_unmap(m);
    errno = ENOMEM;
    return NULL;
  }
  int nup = 0, nej = 0;
  for (int i = 0; i < s->nroutes; i++) {
    m->route_members[i] = s->route_members[i] > 0 ? s->route_members[i] : 0;
    m->route_up[i] = nup;
    nup += m->route_members[i];
    m->member_keys[i] = dup_keys(s->member_keys ? s->member_keys[i] : NULL, m->route_members[i]);
  }
  for (int i = 0; i < s->nbalancers; i++) {
    m->bal_members[i] = s->balancer_members[i] > 0 ? s->balancer_members[i] : 0;
    m->bal_ej[i] = nej;
    nej += m->bal_members[i];
    m->bmember_keys[i] = dup_keys(s->bmember_keys ? s->bmember_keys[i] : NULL, m->bal_members[i]);
  }
  size_t n = 0;
  m->o_req = n, n += ((size_t)s->nroutes + 1) * MG_METRICS_CLASSES;
  m->o_rhist = n, n += ((size_t)s->nroutes + 1) * HROW(m);
  m->o_uhist = n, n += (size_t)nup * HROW(m);
  m->o_conns = n, n += MG_METRICS_PROTOS;
  m->o_lua_us = n, n += MG_METRICS_PHASES;
  m->o_lua_calls = n, n += MG_METRICS_PHASES;
  m->o_queue = n, n += (size_t)s->nbalancers * 4;
  m->o_qhist = n, n += (size_t)s->nbalancers * HROW(m);
  m->o_retries = n, n += (size_t)s->nbalancers * 2;
  m->o_eject = n, n += (size_t)nej;
  m->ncells = n;
  void *p = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    mg_metrics_unmap(m);
    errno = e;
    return NULL;
  }
  m->cells = p; /* zero-filled */
  if (prev) copy_from(m, prev);
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
  add(&m->cells[m->o_req + (size_t)route * MG_METRICS_CLASSES + (size_t)cls], 1);
  hist_add(m, &m->cells[m->o_rhist + (size_t)route * HROW(m)], usec);
}

void mg_metrics_upstream(int route, int member, uint64_t usec) {
  mg_metrics_t *m = current;
  if (!m || route < 0 || route >= m->nroutes || member < 0 || member >= m->route_members[route]) return;
  hist_add(m, &m->cells[m->o_uhist + (size_t)(m->route_up[route] + member) * HROW(m)], usec);
}

void mg_metrics_conn(int proto, int delta) {
  mg_metrics_t *m = current;
  if (!m || proto < 0 || proto >= MG_METRICS_PROTOS) return;
  add(&m->cells[m->o_conns + (size_t)proto], (uint64_t)(int64_t)delta);
}

void mg_metrics_lua(int phase, uint64_t usec) {
  mg_metrics_t *m = current;
  if (!m || phase < 0 || phase >= MG_METRICS_PHASES) return;
  add(&m->cells[m->o_lua_us + (size_t)phase], usec);
  add(&m->cells[m->o_lua_calls + (size_t)phase], 1);
}

void mg_metrics_queue(int b, int event, uint64_t wait_usec) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers) return;
  uint64_t *q = &m->cells[m->o_queue + (size_t)b * 4];
  switch (event) {
  case MG_QUEUE_ENTER: add(&q[0], 1); break;
  case MG_QUEUE_SERVED:
    add(&q[0], (uint64_t)-1), add(&q[1], 1);
    hist_add(m, &m->cells[m->o_qhist + (size_t)b * HROW(m)], wait_usec);
    break;
  case MG_QUEUE_FULL: add(&q[2], 1); break;
  case MG_QUEUE_TIMEOUT: add(&q[0], (uint64_t)-1), add(&q[3], 1); break;
  default: break;
  }
}

void mg_metrics_ejection(int b, int k) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers || k < 0 || k >= m->bal_members[b]) return;
  add(&m->cells[m->o_eject + (size_t)m->bal_ej[b] + (size_t)k], 1);
}

void mg_metrics_retry(int b, int budget_refused) {
  mg_metrics_t *m = current;
  if (!m || b < 0 || b >= m->nbalancers) return;
  add(&m->cells[m->o_retries + (size_t)b * 2 + (budget_refused ? 1 : 0)], 1);
}

/* ---- reading ------------------------------------------------------------------------------ */

static uint64_t get(const mg_metrics_t *m, size_t i) { return __atomic_load_n(&m->cells[i], __ATOMIC_RELAXED); }

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
  return get(m, m->o_req + (size_t)route * MG_METRICS_CLASSES + (size_t)cls);
}

void mg_metrics_request_hist(const mg_metrics_t *m, int route, mg_metrics_hist_t *h) {
  if (!m || route < 0 || route > m->nroutes) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->o_rhist + (size_t)route * HROW(m), h);
}

void mg_metrics_upstream_hist(const mg_metrics_t *m, int route, int member, mg_metrics_hist_t *h) {
  if (!m || route < 0 || route >= m->nroutes || member < 0 || member >= m->route_members[route]) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->o_uhist + (size_t)(m->route_up[route] + member) * HROW(m), h);
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
  int64_t v = (int64_t)get(m, m->o_queue + (size_t)b * 4 + (size_t)what);
  return v > 0 ? v : 0;
}

void mg_metrics_queue_wait_hist(const mg_metrics_t *m, int b, mg_metrics_hist_t *h) {
  if (!m || b < 0 || b >= m->nbalancers) {
    memset(h, 0, sizeof *h);
    return;
  }
  hist_get(m, m->o_qhist + (size_t)b * HROW(m), h);
}

uint64_t mg_metrics_ejections(const mg_metrics_t *m, int b, int k) {
  if (!m || b < 0 || b >= m->nbalancers || k < 0 || k >= m->bal_members[b]) return 0;
  return get(m, m->o_eject + (size_t)m->bal_ej[b] + (size_t)k);
}

uint64_t mg_metrics_retries(const mg_metrics_t *m, int b, int budget_refused) {
  if (!m || b < 0 || b >= m->nbalancers) return 0;
  return get(m, m->o_retries + (size_t)b * 2 + (budget_refused ? 1 : 0));
}
