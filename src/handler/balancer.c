/* balancer: see balancer.h. */
#include "balancer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passive.h"

int mg_member_usable(const mg_member_t *m, uint64_t now_ms) {
  if (m->unresolved) return 0;
  if (m->flags & (MG_MEMBER_DISABLED | MG_MEMBER_STOPPED)) return 0;
  const mg_member_stats_t *s = m->shared ? m->shared : &m->local;
  if (s->health_down) return 0;
  if (m->passive && mg_passive_ejected_ms(m, now_ms)) return 0;
  return m->local.error_until_ms <= now_ms && (!m->shared || m->shared->error_until_ms <= now_ms);
}

/* Usable for a request that is not sticky, in the given standby pass. */
static int eligible(const mg_member_t *m, uint64_t now, const unsigned char *tried, int i, int standby) {
  if (tried && tried[i]) return 0;
  if (!mg_member_usable(m, now)) return 0;
  if (m->flags & MG_MEMBER_DRAINING) return 0;
  if (mg_member_full(m)) return 0;
  return standby ? (m->flags & MG_MEMBER_HOT_STANDBY) != 0 : (m->flags & MG_MEMBER_HOT_STANDBY) == 0;
}

/* Smooth weighted round robin over the eligible members whose `key` is the minimum (key is
 * NULL for plain byrequests). */
static mg_member_t *smooth_rr(mg_balancer_t *b, uint64_t now, const unsigned char *tried, int standby,
                              const double *key, double min) {
  mg_member_t *best = NULL;
  int64_t total = 0;
  for (int i = 0; i < b->nmembers; i++) {
    mg_member_t *m = &b->members[i];
    if (!eligible(m, now, tried, i, standby)) continue;
    if (key && key[i] != min) continue;
    m->score += m->lbfactor;
    total += m->lbfactor;
    if (!best || m->score > best->score) best = m;
  }
  if (best) best->score -= total;
  return best;
}

static mg_member_t *pick_pass(mg_balancer_t *b, uint64_t now, const unsigned char *tried, int standby) {
  if (b->method == MG_LB_BYREQUESTS || b->method == MG_LB_LUA) return smooth_rr(b, now, tried, standby, NULL, 0);
  double key[b->nmembers > 0 ? b->nmembers : 1];
  double min = -1;
  for (int i = 0; i < b->nmembers; i++) {
    mg_member_t *m = &b->members[i];
    /* bybusyness counts what every worker has in flight on the member when the workers share
     * its slots (SPEC 20: the least busy member with a free slot), else this worker's. */
    key[i] = b->method == MG_LB_BYTRAFFIC ? (double)m->local.bytes / m->lbfactor
             : m->cap                     ? (double)__atomic_load_n(&m->cap->busy, __ATOMIC_RELAXED)
                                          : (double)m->local.inflight;
    if (eligible(m, now, tried, i, standby) && (min < 0 || key[i] < min)) min = key[i];
  }
  if (min < 0) return NULL;
  return smooth_rr(b, now, tried, standby, key, min);
}

/* A sticky request counts in the rotation as Apache's byrequests counts it: every eligible
 * member's score grows by its lbfactor and the chosen one pays the total, so members that get
 * sticky traffic get less of the rest and the whole stays weighted. */
static void count_sticky(mg_balancer_t *b, mg_member_t *chosen, uint64_t now, const unsigned char *tried) {
  int64_t total = 0;
  for (int i = 0; i < b->nmembers; i++) {
    mg_member_t *m = &b->members[i];
    if (!eligible(m, now, tried, i, 0)) continue;
    m->score += m->lbfactor;
    total += m->lbfactor;
  }
  chosen->score -= total;
}

/* Whether a member of the pass (standby or not) is usable but at its max_conns. */
static int any_full(const mg_balancer_t *b, uint64_t now, const unsigned char *tried, int standby) {
  for (int i = 0; i < b->nmembers; i++) {
    const mg_member_t *m = &b->members[i];
    if (!(tried && tried[i]) && mg_member_usable(m, now) && !(m->flags & MG_MEMBER_DRAINING) && mg_member_full(m) &&
        !(m->flags & MG_MEMBER_HOT_STANDBY) == !standby)
      return 1;
  }
  return 0;
}

int mg_balancer_any_full(const mg_balancer_t *b, uint64_t now, const unsigned char *tried) {
  return any_full(b, now, tried, 0) || any_full(b, now, tried, 1);
}

mg_member_t *mg_balancer_pick(mg_balancer_t *b, const char *sticky, uint64_t now, const unsigned char *tried) {
  for (int i = 0; i < b->nmembers; i++) mg_member_sync(&b->members[i]); /* an operator's changes */
  if (sticky) {
    for (int i = 0; i < b->nmembers; i++) {
      mg_member_t *m = &b->members[i];
      /* A sticky member at its max_conns is passed over like one in error (Apache's route
       * falls back to the balancer's choice when its member cannot take the request). */
      if (m->route && strcmp(m->route, sticky) == 0 && !(tried && tried[i]) && mg_member_usable(m, now) && !mg_member_full(m)) {
        if (b->method == MG_LB_BYREQUESTS) count_sticky(b, m, now, tried);
        return m;
      }
    }
  }
  mg_member_t *m = pick_pass(b, now, tried, 0);
  /* A member that is only busy (at its max_conns) is still there: hot standbys stand in for
   * members that are out, not for members that are full. */
  if (m || any_full(b, now, tried, 0)) return m;
  return pick_pass(b, now, tried, 1);
}

static size_t route_of(const char *v, size_t n, const char **route) {
  const char *dot = NULL;
  for (size_t i = 0; i < n; i++)
    if (v[i] == '.') dot = v + i;
  if (!dot || dot + 1 == v + n) return 0;
  *route = dot + 1;
  return (size_t)(v + n - dot - 1);
}

/* Finds NAME=value in a list separated by `sep` ("; " for cookies, "&" for queries). */
static size_t find_param(const char *list, char sep, const char *name, const char **route) {
  size_t nl = strlen(name);
  const char *p = list;
  while (p && *p) {
    while (*p == ' ' || *p == sep) p++;
    const char *end = strchr(p, sep);
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
      size_t n = route_of(p + nl + 1, len - nl - 1, route);
      if (n) return n;
    }
    p = end;
  }
  return 0;
}

size_t mg_balancer_sticky_route(const mg_balancer_t *b, const char *cookie, const char *query, const char **route) {
  if (!b->stickysession) return 0;
  size_t n = cookie ? find_param(cookie, ';', b->stickysession, route) : 0;
  if (!n && query) n = find_param(query, '&', b->stickysession, route);
  return n;
}

/* A name's address, as the resolver last wrote it (a seqlock read: the copy counts only when
 * dns_gen was even and the same before and after). */
static void sync_address(mg_member_t *m, mg_member_stats_t *s) {
  uint32_t gen = __atomic_load_n(&s->dns_gen, __ATOMIC_ACQUIRE);
  if (gen == m->dns_seen || (gen & 1)) return;
  struct sockaddr_storage sa;
  memcpy(&sa, &s->dns_sa, sizeof sa);
  uint32_t salen = s->dns_salen, set = s->dns_set;
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (__atomic_load_n(&s->dns_gen, __ATOMIC_RELAXED) != gen || salen > sizeof sa) return;
  m->dns_seen = gen;
  m->unresolved = !set;
  if (!set) return;
  memcpy(&m->addr.sa, &sa, salen);
  m->addr.salen = salen;
  m->addr.text[0] = 0;
  mg_addr_format(&m->addr, m->addr.text, sizeof m->addr.text);
}

void mg_member_sync(mg_member_t *m) {
  mg_member_stats_t *s = m->shared;
  if (!s) return;
  if (m->name) sync_address(m, s);
  uint32_t gen = __atomic_load_n(&s->live_gen, __ATOMIC_ACQUIRE);
  if (gen == m->live_seen) return;
  m->live_seen = gen;
  m->flags = __atomic_load_n(&s->live_set, __ATOMIC_RELAXED) ? __atomic_load_n(&s->live_flags, __ATOMIC_RELAXED) : m->cfg_flags;
  int32_t lf = __atomic_load_n(&s->live_lbfactor, __ATOMIC_RELAXED);
  m->lbfactor = lf > 0 ? lf : m->cfg_lbfactor;
  mg_member_live_max(m);
}

void mg_member_set_address(mg_member_t *m, const struct sockaddr *sa, socklen_t salen) {
  m->unresolved = sa == NULL;
  if (sa) {
    memset(&m->addr.sa, 0, sizeof m->addr.sa);
    memcpy(&m->addr.sa, sa, salen);
    m->addr.salen = salen;
    m->addr.text[0] = 0;
    mg_addr_format(&m->addr, m->addr.text, sizeof m->addr.text);
  }
  mg_member_stats_t *s = m->shared;
  if (!s) return;
  __atomic_add_fetch(&s->dns_gen, 1, __ATOMIC_RELAXED); /* odd: a write is under way */
  __atomic_thread_fence(__ATOMIC_RELEASE);
  if (sa) memcpy(&s->dns_sa, &m->addr.sa, sizeof s->dns_sa), s->dns_salen = salen;
  s->dns_set = sa != NULL;
  m->dns_seen = __atomic_add_fetch(&s->dns_gen, 1, __ATOMIC_RELEASE);
}

mg_member_t *mg_member_siblings(mg_member_t *m, int *n) {
  if (!m->name) return *n = 1, m;
  *n = m->name->n;
  return &m->name->b->members[m->name->first];
}

int mg_member_shown(mg_member_t *m) {
  mg_member_sync(m);
  return !m->unresolved;
}

void mg_member_live_max(mg_member_t *m) {
  mg_member_stats_t *s = m->shared;
  if (!s || !m->cap) return;
  int32_t max = __atomic_load_n(&s->live_max_set, __ATOMIC_RELAXED) ? __atomic_load_n(&s->live_max_conns, __ATOMIC_RELAXED)
                                                                   : m->max_conns;
  if (__atomic_load_n(&m->cap->max, __ATOMIC_RELAXED) != max) __atomic_store_n(&m->cap->max, max, __ATOMIC_RELAXED);
}

static unsigned flag_of(char c) {
  return c == 'D' ? MG_MEMBER_DISABLED : c == 'H' ? MG_MEMBER_HOT_STANDBY : c == 'S' ? MG_MEMBER_STOPPED : c == 'N' ? MG_MEMBER_DRAINING : 0;
}

mg_member_t *mg_balancer_find_member(const mg_config_t *cfg, const char *bname, const char *url, char *err, size_t errlen) {
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    if (strcmp(b->name, bname) != 0) continue;
    for (int k = 0; k < b->nmembers; k++)
      if (strcmp(b->members[k].addr.url, url) == 0) return &b->members[k];
    snprintf(err, errlen, "balancer %s has no member %s", bname, url);
    return NULL;
  }
  snprintf(err, errlen, "no balancer named %s", bname);
  return NULL;
}

const char *mg_member_flags_text(unsigned flags, char *buf) {
  char *f = buf;
  if (flags & MG_MEMBER_DISABLED) *f++ = 'D';
  if (flags & MG_MEMBER_HOT_STANDBY) *f++ = 'H';
  if (flags & MG_MEMBER_STOPPED) *f++ = 'S';
  if (flags & MG_MEMBER_DRAINING) *f++ = 'N';
  *f = 0;
  return buf;
}

static int apply_one(mg_member_t *m, const char *status, int lbfactor, int max_conns, char *err, size_t errlen) {
  mg_member_stats_t *s = m->shared;
  if (!s) return snprintf(err, errlen, "no shared memory for the members: live changes are off"), -1;
  mg_member_sync(m);
  unsigned flags = m->flags;
  int reset = 0;
  if (status && strcmp(status, "=") == 0) {
    reset = 1;
  } else if (status) {
    if (!*status) return snprintf(err, errlen, "status is empty: expected +D, -D, +S, -S, +H, -H, +N or -N"), -1;
    for (const char *c = status; *c; c += 2) {
      unsigned f = (c[0] == '+' || c[0] == '-') && c[1] ? flag_of(c[1]) : 0;
      if (!f) return snprintf(err, errlen, "status \"%s\": expected +F or -F pairs, F one of D, S, H, N", status), -1;
      if (c[0] == '+') flags |= f;
      else flags &= ~f;
    }
  }
  if (lbfactor > 100 || lbfactor < -1) return snprintf(err, errlen, "lbfactor %d: expected 1 to 100", lbfactor), -1;
  if (max_conns < -2 || max_conns > 1000000) return snprintf(err, errlen, "max_conns %d: expected 0 (no limit) to 1000000", max_conns), -1;
  if (max_conns != -1 && !m->cap) return snprintf(err, errlen, "max_conns: no shared memory for this member's slots"), -1;
  if (status) {
    __atomic_store_n(&s->live_flags, reset ? m->cfg_flags : flags, __ATOMIC_RELAXED);
    __atomic_store_n(&s->live_set, reset ? 0u : 1u, __ATOMIC_RELAXED);
  }
  if (lbfactor) __atomic_store_n(&s->live_lbfactor, lbfactor < 0 ? 0 : lbfactor, __ATOMIC_RELAXED);
  if (max_conns >= 0) __atomic_store_n(&s->live_max_conns, max_conns, __ATOMIC_RELAXED);
  if (max_conns != -1) __atomic_store_n(&s->live_max_set, max_conns >= 0 ? 1u : 0u, __ATOMIC_RELAXED);
  __atomic_add_fetch(&s->live_gen, 1, __ATOMIC_RELEASE);
  mg_member_sync(m);
  return 0;
}

/* An operator names a member by its URL: for a host name, that is every address of it. */
int mg_member_live_apply(mg_member_t *m, const char *status, int lbfactor, int max_conns, char *err, size_t errlen) {
  int n;
  mg_member_t *first = mg_member_siblings(m, &n);
  for (int i = 0; i < n; i++)
    if (apply_one(&first[i], status, lbfactor, max_conns, err, errlen) < 0) return -1;
  return 0;
}

void mg_member_start(mg_member_t *m) {
  m->local.requests++, m->local.inflight++;
  if (m->shared) __atomic_add_fetch(&m->shared->requests, 1, __ATOMIC_RELAXED), __atomic_add_fetch(&m->shared->inflight, 1, __ATOMIC_RELAXED);
}

void mg_member_done(mg_member_t *m, uint64_t bytes) {
  m->local.inflight--, m->local.bytes += bytes;
  if (m->shared) __atomic_sub_fetch(&m->shared->inflight, 1, __ATOMIC_RELAXED), __atomic_add_fetch(&m->shared->bytes, bytes, __ATOMIC_RELAXED);
}

void mg_member_failed(mg_member_t *m, uint64_t now, const char *why) {
  m->local.errors++;
  m->local.error_until_ms = now + m->retry_ms;
  snprintf(m->local.last_error, sizeof m->local.last_error, "%s", why);
  if (m->shared) {
    __atomic_add_fetch(&m->shared->errors, 1, __ATOMIC_RELAXED);
    /* Other workers learn of the failure too: the member is out for every worker. */
    m->shared->error_until_ms = now + m->retry_ms;
    snprintf(m->shared->last_error, sizeof m->shared->last_error, "%s", why);
  }
}

void mg_balancer_free(mg_balancer_t *b) {
  if (!b) return;
  for (int i = 0; i < b->nmembers; i++) free(b->members[i].addr.url), free(b->members[i].route), free(b->members[i].key);
  free(b->members);
  for (int i = 0; i < b->nnames; i++) free(b->names[i].host);
  free(b->names);
  if (b->health) free(b->health->uri);
  free(b->health);
  mg_passive_free(b->passive);
  free(b->name), free(b->stickysession), free(b->decl);
  free(b);
}
