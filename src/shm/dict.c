/* dict: see dict.h.
 *
 * The zone's reserved bytes hold the dictionary's header (dict_hdr_t) and then its buckets, one
 * per 512 bytes of zone or so, a power of two; all zero is the empty dictionary, which is what
 * the zone leaves when it empties itself. An entry is one block of the zone's heap, linked by
 * offsets from the zone's start into its bucket's chain and into the LRU list. */
#include "dict.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
  uint64_t lru_head, lru_tail; /* most recently used first */
  uint64_t nkeys;
} dict_hdr_t;

typedef struct {
  uint64_t hnext, lprev, lnext;
  double expires; /* monotonic seconds; 0: never */
  uint32_t hash, klen, vlen;
  uint8_t type; /* an mg_dict_type_t other than nil */
  uint8_t pad[3];
  char data[]; /* the key, then the value */
} entry_t;

/* One operation's view of the dictionary, taken once: where its parts are in this process. */
typedef struct {
  mg_zone_t *zn;
  char *base;
  dict_hdr_t *h;
  uint64_t *buckets, mask;
} dict_t;

#define AT(d, off) ((void *)((d)->base + (off)))
#define OFF(d, p) ((uint64_t)((char *)(p) - (d)->base))

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash_key(const char *k, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 16777619u;
  return h;
}

static inline void view(mg_zone_t *zn, dict_t *d) {
  size_t len;
  d->zn = zn;
  d->base = mg_zone_base(zn);
  d->h = mg_zone_reserved(zn, &len);
  d->buckets = (uint64_t *)(d->h + 1);
  d->mask = (len - sizeof(dict_hdr_t)) / sizeof(uint64_t) - 1;
}

static int key_valid(size_t klen) { return klen > 0 && klen <= MG_DICT_MAX_KEY; }

/* ---- entries ----------------------------------------------------------------------------------- */

static uint64_t *bucket(dict_t *d, uint32_t hash) { return d->buckets + (hash & d->mask); }

static void lru_unlink(dict_t *d, entry_t *e) {
  if (e->lprev) ((entry_t *)AT(d, e->lprev))->lnext = e->lnext;
  else d->h->lru_head = e->lnext;
  if (e->lnext) ((entry_t *)AT(d, e->lnext))->lprev = e->lprev;
  else d->h->lru_tail = e->lprev;
}

static void lru_push(dict_t *d, entry_t *e) {
  uint64_t off = OFF(d, e);
  e->lprev = 0;
  e->lnext = d->h->lru_head;
  if (d->h->lru_head) ((entry_t *)AT(d, d->h->lru_head))->lprev = off;
  d->h->lru_head = off;
  if (!d->h->lru_tail) d->h->lru_tail = off;
}

static void entry_delete(dict_t *d, entry_t *e) {
  uint64_t off = OFF(d, e);
  for (uint64_t *pp = bucket(d, e->hash); *pp; pp = &((entry_t *)AT(d, *pp))->hnext)
    if (*pp == off) {
      *pp = e->hnext;
      break;
    }
  lru_unlink(d, e);
  d->h->nkeys--;
  mg_zone_free(d->zn, off);
}

/* The live entry for key, or NULL (an expired one is deleted on the way). */
static entry_t *entry_find(dict_t *d, const char *k, size_t kl, uint32_t hash, double now) {
  for (uint64_t off = *bucket(d, hash); off;) {
    entry_t *e = AT(d, off);
    off = e->hnext;
    if (e->hash == hash && e->klen == kl && memcmp(e->data, k, kl) == 0) {
      if (e->expires && e->expires <= now) {
        entry_delete(d, e);
        return NULL;
      }
      return e;
    }
  }
  return NULL;
}

/* A new entry holding key and value, linked in; evicts from the LRU end while it does not fit.
 * NULL when it does not fit in an empty zone. */
static inline entry_t *entry_add(dict_t *d, const char *k, size_t kl, uint32_t hash, uint8_t type, const void *v,
                          size_t vl, double expires, int *forcible) {
  uint64_t off;
  while (!(off = mg_zone_alloc(d->zn, sizeof(entry_t) + kl + vl))) {
    if (!d->h->lru_tail) return NULL;
    entry_delete(d, AT(d, d->h->lru_tail));
    *forcible = 1;
  }
  entry_t *e = AT(d, off);
  e->hash = hash, e->klen = (uint32_t)kl, e->vlen = (uint32_t)vl, e->type = type;
  e->expires = expires;
  memcpy(e->data, k, kl);
  memcpy(e->data + kl, v, vl);
  uint64_t *b = bucket(d, hash);
  e->hnext = *b;
  *b = off;
  lru_push(d, e);
  d->h->nkeys++;
  return e;
}

static void lru_touch(dict_t *d, entry_t *e) {
  lru_unlink(d, e);
  lru_push(d, e);
}

/* The start of an operation on one key: the zone locked and changing, the live entry (or NULL). */
static inline entry_t *key_begin(dict_t *d, mg_zone_t *zn, const char *k, size_t kl, uint32_t h, double now) {
  view(zn, d);
  mg_zone_lock(zn);
  mg_zone_changing(zn);
  return entry_find(d, k, kl, h, now);
}

/* ---- the operations ------------------------------------------------------------------------ */

mg_zone_t *mg_dict_open(const char *name, size_t size, char *err, size_t errlen) {
  if (size < MG_DICT_MIN_SIZE) {
    snprintf(err, errlen, "a shared dictionary needs at least %d bytes", MG_DICT_MIN_SIZE);
    return NULL;
  }
  uint64_t nb = 16;
  while (nb * 512 < size) nb <<= 1; /* about one bucket per 512 bytes */
  return mg_zone_get(name, size, sizeof(dict_hdr_t) + nb * sizeof(uint64_t), err, errlen);
}

int mg_dict_get(mg_zone_t *zn, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  entry_t *e = key_begin(&d, zn, key, klen, hash_key(key, klen), now_s());
  if (e) {
    lru_touch(&d, e);
    const char *v = e->data + e->klen;
    mg_dict_value_t val = {.type = (mg_dict_type_t)e->type};
    if (e->type == MG_DICT_STRING) val.str = v, val.len = e->vlen;
    else if (e->type == MG_DICT_NUMBER) memcpy(&val.num, v, sizeof val.num);
    else val.boolean = v[0];
    on_value(ud, &val);
  }
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

int mg_dict_set(mg_zone_t *zn, mg_dict_mode_t mode, const char *key, size_t klen, const mg_dict_value_t *v,
                double ttl, int *forcible) {
  *forcible = 0;
  char num[8];
  const void *bytes = num;
  size_t vl = 0;
  if (!key_valid(klen)) return MG_DICT_INVALID;
  if (v->type == MG_DICT_STRING) {
    if (v->len > MG_DICT_MAX_VALUE) return MG_DICT_INVALID;
    bytes = v->str, vl = v->len;
  } else if (v->type == MG_DICT_NUMBER) {
    memcpy(num, &v->num, sizeof v->num);
    vl = sizeof v->num;
  } else if (v->type == MG_DICT_BOOLEAN) {
    num[0] = (char)(v->boolean != 0);
    vl = 1;
  } else if (v->type != MG_DICT_NIL || mode != MG_DICT_SET) {
    return MG_DICT_INVALID;
  }
  double now = now_s();
  uint32_t h = hash_key(key, klen);
  dict_t d;
  entry_t *old = key_begin(&d, zn, key, klen, h, now);
  int rc = 0;
  if (mode == MG_DICT_ADD && old) rc = MG_DICT_EXISTS;
  else if (mode == MG_DICT_REPLACE && !old) rc = MG_DICT_NOT_FOUND;
  if (rc == 0) {
    if (old) entry_delete(&d, old);
    if (v->type != MG_DICT_NIL &&
        !entry_add(&d, key, klen, h, (uint8_t)v->type, bytes, vl, ttl > 0 ? now + ttl : 0, forcible))
      rc = MG_DICT_NO_MEMORY;
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_incr(mg_zone_t *zn, const char *key, size_t klen, double n, const double *init, double init_ttl,
                 double *result, int *forcible) {
  *forcible = 0;
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  view(zn, &d);
  uint32_t h = hash_key(key, klen);
  double now = now_s();
  mg_zone_lock(zn);
  entry_t *e = entry_find(&d, key, klen, h, now);
  if (e && e->type == MG_DICT_NUMBER) {
    /* One store in place: safe even if this worker dies right here. */
    double sum;
    memcpy(&sum, e->data + e->klen, sizeof sum);
    sum += n;
    memcpy(e->data + e->klen, &sum, sizeof sum);
    mg_zone_unlock(zn);
    *result = sum;
    return 0;
  }
  int rc = e ? MG_DICT_NOT_A_NUMBER : MG_DICT_NOT_FOUND;
  if (!e && init) {
    mg_zone_changing(zn);
    double sum = *init + n;
    if (entry_add(&d, key, klen, h, MG_DICT_NUMBER, &sum, sizeof sum, init_ttl > 0 ? now + init_ttl : 0, forcible)) {
      *result = sum;
      rc = MG_DICT_CREATED;
    } else {
      rc = MG_DICT_NO_MEMORY;
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_update(mg_zone_t *zn, const char *key, size_t klen, void *value, size_t len, double ttl,
                   mg_dict_on_update_t on_update, void *ud) {
  if (!key_valid(klen) || len > MG_DICT_MAX_VALUE) return MG_DICT_INVALID;
  uint32_t h = hash_key(key, klen);
  double now = now_s();
  dict_t d;
  entry_t *e = key_begin(&d, zn, key, klen, h, now);
  int found = e && e->type == MG_DICT_STRING && e->vlen == len;
  if (found) memcpy(value, e->data + e->klen, len);
  int rc = 0;
  if (on_update(ud, value, found, now)) {
    if (found) {
      memcpy(e->data + e->klen, value, len);
      lru_touch(&d, e);
    } else {
      int forcible = 0;
      if (e) entry_delete(&d, e);
      if (!entry_add(&d, key, klen, h, MG_DICT_STRING, value, len, ttl > 0 ? now + ttl : 0, &forcible))
        rc = MG_DICT_NO_MEMORY;
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_delete(mg_zone_t *zn, const char *key, size_t klen) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  entry_t *e = key_begin(&d, zn, key, klen, hash_key(key, klen), now_s());
  if (e) entry_delete(&d, e);
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

int mg_dict_ttl(mg_zone_t *zn, const char *key, size_t klen, double *left) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  double now = now_s();
  dict_t d;
  entry_t *e = key_begin(&d, zn, key, klen, hash_key(key, klen), now);
  if (e) *left = e->expires ? e->expires - now : 0;
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

int mg_dict_expire(mg_zone_t *zn, const char *key, size_t klen, double ttl) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  double now = now_s();
  dict_t d;
  entry_t *e = key_begin(&d, zn, key, klen, hash_key(key, klen), now);
  if (e) e->expires = ttl > 0 ? now + ttl : 0;
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

size_t mg_dict_keys(mg_zone_t *zn, size_t max, mg_dict_on_key_t on_key, void *ud) {
  dict_t d;
  view(zn, &d);
  double now = now_s();
  size_t n = 0;
  mg_zone_lock(zn);
  for (uint64_t off = d.h->lru_head; off && (max == 0 || n < max);) {
    entry_t *e = AT(&d, off);
    off = e->lnext;
    if (e->expires && e->expires <= now) continue;
    on_key(ud, e->data, e->klen);
    n++;
  }
  mg_zone_unlock(zn);
  return n;
}

void mg_dict_flush_all(mg_zone_t *zn) {
  mg_zone_lock(zn);
  mg_zone_changing(zn);
  mg_zone_clear(zn);
  mg_zone_unlock(zn);
}

size_t mg_dict_capacity(mg_zone_t *zn) { return mg_zone_size(zn); }

size_t mg_dict_free_space(mg_zone_t *zn) {
  mg_zone_lock(zn);
  size_t f = mg_zone_free_bytes(zn);
  mg_zone_unlock(zn);
  return f;
}

const char *mg_dict_strerror(int rc) {
  switch (rc) {
  case MG_DICT_NOT_FOUND: return "not found";
  case MG_DICT_EXISTS: return "exists";
  case MG_DICT_NO_MEMORY: return "no memory";
  case MG_DICT_NOT_A_NUMBER: return "not a number";
  case MG_DICT_INVALID: return "invalid argument";
  default: return "unknown error";
  }
}
