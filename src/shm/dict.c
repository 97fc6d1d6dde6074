/* dict: see dict.h.
 *
 * The zone's reserved bytes hold the dictionary's header (dict_hdr_t) and then its buckets, one
 * per 512 bytes of zone or so, a power of two; all zero is the empty dictionary, which is what
 * the zone leaves when it empties itself. An entry is one block of the zone's heap, linked by
 * offsets from the zone's start into its bucket's chain and into the LRU list. A list's entry
 * holds, after its key, the offsets of its first and last items (list_t, unaligned: read and
 * written with memcpy), and its vlen is its number of items; each item is a block of its own.
 *
 * The functions mark the zone as changing (mg_zone_changing) in the helpers that change its
 * structure, right before they do, so an operation that changes nothing (a get of the most
 * recently used key with nothing expired to free, an increment in place of it) never marks it. */
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
  uint32_t flags; /* the user's */
  uint8_t type;   /* an mg_dict_type_t other than nil, or TYPE_LIST */
  uint8_t pad[7];
  char data[]; /* the key, then the value */
} entry_t;

#define TYPE_LIST 5 /* OpenResty's SHDICT_TLIST */

typedef struct {
  uint64_t head, tail;
} list_t;

typedef struct {
  uint64_t prev, next;
  uint32_t len;
  uint8_t type; /* MG_DICT_STRING or MG_DICT_NUMBER */
  uint8_t pad[3];
  char data[];
} item_t;

/* What flush_all sets an entry's expiry to: a moment long past, yet not 0 (never). */
#define FLUSHED 1e-9
/* How many times a store evicts before it gives up, as lua-nginx-module. */
#define EVICT_ROUNDS 30

/* One operation's view of the dictionary, taken once: where its parts are in this process. */
typedef struct {
  mg_zone_t *zn;
  char *base;
  dict_hdr_t *h;
  uint64_t *buckets, mask;
  double now;
} dict_t;

/* What a lookup found. */
enum { NONE, LIVE, EXPIRED };

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

/* The view of zn, locked: the start of every operation. */
static inline void begin(mg_zone_t *zn, dict_t *d) {
  size_t len;
  d->zn = zn;
  d->base = mg_zone_base(zn);
  d->h = mg_zone_reserved(zn, &len);
  d->buckets = (uint64_t *)(d->h + 1);
  d->mask = (len - sizeof(dict_hdr_t)) / sizeof(uint64_t) - 1;
  d->now = now_s();
  mg_zone_lock(zn);
}

static int key_valid(size_t klen) { return klen > 0 && klen <= MG_DICT_MAX_KEY; }

static double expiry(const dict_t *d, double ttl) { return ttl > 0 ? d->now + ttl : 0; }

/* ---- entries ----------------------------------------------------------------------------------- */

static uint64_t *bucket(dict_t *d, uint32_t hash) { return d->buckets + (hash & d->mask); }

static int expired(const dict_t *d, const entry_t *e) { return e->expires != 0 && e->expires <= d->now; }

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

/* Makes e the most recently used. */
static void lru_touch(dict_t *d, entry_t *e) {
  if (d->h->lru_head == OFF(d, e)) return;
  mg_zone_changing(d->zn);
  lru_unlink(d, e);
  lru_push(d, e);
}

static list_t list_of(const entry_t *e) {
  list_t l;
  memcpy(&l, e->data + e->klen, sizeof l);
  return l;
}

static void list_store(entry_t *e, const list_t *l) { memcpy(e->data + e->klen, l, sizeof *l); }

/* Frees a list's items and leaves it empty. */
static void list_clear(dict_t *d, entry_t *e) {
  mg_zone_changing(d->zn);
  list_t l = list_of(e);
  for (uint64_t off = l.head; off;) {
    uint64_t next = ((item_t *)AT(d, off))->next;
    mg_zone_free(d->zn, off);
    off = next;
  }
  l.head = l.tail = 0;
  list_store(e, &l);
  e->vlen = 0;
}

static void entry_free(dict_t *d, entry_t *e) {
  mg_zone_changing(d->zn);
  if (e->type == TYPE_LIST) list_clear(d, e);
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

/* lua-nginx-module's ngx_http_lua_shdict_expire: with force, frees the least recently used
 * entry and then up to two more if they are expired; without, up to two expired ones. Stops at
 * the first live one. Returns how many it freed. */
static int free_oldest(dict_t *d, int force) {
  int freed = 0;
  for (int n = force ? 0 : 1; n < 3; n++) {
    if (!d->h->lru_tail) break;
    entry_t *e = AT(d, d->h->lru_tail);
    if (n > 0 && !expired(d, e)) break;
    entry_free(d, e);
    freed++;
  }
  return freed;
}

/* The key's entry, live or expired, in *e (NULL: NONE), made the most recently used. */
static int lookup(dict_t *d, const char *k, size_t kl, uint32_t hash, entry_t **ep) {
  for (uint64_t off = *bucket(d, hash); off;) {
    entry_t *e = AT(d, off);
    off = e->hnext;
    if (e->hash == hash && e->klen == kl && memcmp(e->data, k, kl) == 0) {
      lru_touch(d, e);
      *ep = e;
      return expired(d, e) ? EXPIRED : LIVE;
    }
  }
  *ep = NULL;
  return NONE;
}

/* The key's entry, live or expired, left where it is in the LRU list; or NULL. */
static entry_t *peek(dict_t *d, const char *k, size_t kl) {
  uint32_t hash = hash_key(k, kl);
  for (uint64_t off = *bucket(d, hash); off;) {
    entry_t *e = AT(d, off);
    off = e->hnext;
    if (e->hash == hash && e->klen == kl && memcmp(e->data, k, kl) == 0) return e;
  }
  return NULL;
}

/* A block of n bytes; unless `safe`, evicting while it does not fit (EVICT_ROUNDS times at
 * most, *forcible set once something was). 0 when it does not fit. */
static uint64_t block_alloc(dict_t *d, size_t n, int safe, int *forcible) {
  mg_zone_changing(d->zn);
  uint64_t off = mg_zone_alloc(d->zn, n);
  for (int i = 0; !off && !safe && i < EVICT_ROUNDS; i++) {
    if (free_oldest(d, 1) == 0) break;
    *forcible = 1;
    off = mg_zone_alloc(d->zn, n);
  }
  return off;
}

/* A new entry for key with room for vl bytes of value, linked in as the most recently used;
 * its type, value, expiry and flags are the caller's to fill. NULL when it does not fit. */
static entry_t *entry_new(dict_t *d, const char *k, size_t kl, uint32_t hash, size_t vl, int safe, int *forcible) {
  uint64_t off = block_alloc(d, sizeof(entry_t) + kl + vl, safe, forcible);
  if (!off) return NULL;
  entry_t *e = AT(d, off);
  memset(e, 0, sizeof *e);
  e->hash = hash, e->klen = (uint32_t)kl, e->vlen = (uint32_t)vl;
  memcpy(e->data, k, kl);
  uint64_t *b = bucket(d, hash);
  e->hnext = *b;
  *b = off;
  lru_push(d, e);
  d->h->nkeys++;
  return e;
}

/* The bytes of a scalar value as an entry holds them, in *bytes (num: the caller's buffer for
 * a number or a boolean). Returns their length, or -1 for nil. */
static long value_bytes(const mg_dict_value_t *v, char num[8], const void **bytes) {
  *bytes = num;
  switch (v->type) {
  case MG_DICT_STRING: *bytes = v->str; return v->len > UINT32_MAX ? (long)UINT32_MAX + 1 : (long)v->len;
  case MG_DICT_NUMBER: memcpy(num, &v->num, sizeof v->num); return sizeof v->num;
  case MG_DICT_BOOLEAN: num[0] = (char)(v->boolean != 0); return 1;
  default: return -1;
  }
}

/* Fills *val from an entry's (or an item's) bytes. */
static void value_read(mg_dict_value_t *val, int type, const char *p, size_t len, uint32_t flags) {
  memset(val, 0, sizeof *val);
  val->type = (mg_dict_type_t)type;
  val->flags = flags;
  if (type == MG_DICT_STRING) val->str = p, val->len = len;
  else if (type == MG_DICT_NUMBER) memcpy(&val->num, p, sizeof val->num);
  else val->boolean = p[0];
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

static int get(mg_zone_t *zn, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud, int *stale) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  if (!stale) free_oldest(&d, 0);
  entry_t *e;
  int st = lookup(&d, key, klen, hash_key(key, klen), &e);
  int rc = 0;
  if (st == NONE || (st == EXPIRED && !stale)) {
    rc = MG_DICT_NOT_FOUND;
  } else if (e->type == TYPE_LIST) {
    rc = MG_DICT_IS_LIST;
  } else {
    mg_dict_value_t val;
    value_read(&val, e->type, e->data + e->klen, e->vlen, e->flags);
    if (stale) *stale = st == EXPIRED;
    on_value(ud, &val);
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_get(mg_zone_t *zn, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud) {
  return get(zn, key, klen, on_value, ud, NULL);
}

int mg_dict_get_stale(mg_zone_t *zn, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud,
                      int *stale) {
  *stale = 0;
  return get(zn, key, klen, on_value, ud, stale);
}

int mg_dict_set(mg_zone_t *zn, mg_dict_mode_t mode, const char *key, size_t klen, const mg_dict_value_t *v,
                double ttl, int *forcible) {
  *forcible = 0;
  char num[8];
  const void *bytes;
  long vl = value_bytes(v, num, &bytes);
  int adding = mode == MG_DICT_ADD || mode == MG_DICT_SAFE_ADD;
  if (!key_valid(klen) || (vl < 0 && (v->type != MG_DICT_NIL || adding || mode == MG_DICT_REPLACE)))
    return MG_DICT_INVALID;
  if (vl > (long)UINT32_MAX) return MG_DICT_NO_MEMORY;
  uint32_t h = hash_key(key, klen);
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  int st = lookup(&d, key, klen, h, &e);
  int rc = 0;
  if (mode == MG_DICT_REPLACE && st != LIVE) {
    rc = MG_DICT_NOT_FOUND;
  } else if (adding && st == LIVE) {
    rc = MG_DICT_EXISTS;
  } else {
    if (e && vl >= 0 && (uint32_t)vl == e->vlen && e->type != TYPE_LIST) {
      /* The same size: the value is rewritten in place. */
      mg_zone_changing(zn);
    } else {
      if (e) entry_free(&d, e);
      int safe = mode == MG_DICT_SAFE_SET || mode == MG_DICT_SAFE_ADD;
      e = vl < 0 ? NULL : entry_new(&d, key, klen, h, (size_t)vl, safe, forcible);
      if (!e && vl >= 0) rc = MG_DICT_NO_MEMORY;
    }
    if (e) {
      e->type = (uint8_t)v->type;
      e->flags = v->flags;
      e->expires = expiry(&d, ttl);
      memcpy(e->data + e->klen, bytes, (size_t)vl);
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_incr(mg_zone_t *zn, const char *key, size_t klen, double n, const double *init, double init_ttl,
                 double *result, int *forcible) {
  *forcible = 0;
  if (!key_valid(klen)) return MG_DICT_INVALID;
  uint32_t h = hash_key(key, klen);
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  int st = lookup(&d, key, klen, h, &e);
  int rc;
  double sum;
  if (st == LIVE) {
    rc = MG_DICT_NOT_A_NUMBER;
    if (e->type == MG_DICT_NUMBER && e->vlen == sizeof sum) {
      /* One store in place: safe even if this worker dies right here. */
      memcpy(&sum, e->data + e->klen, sizeof sum);
      sum += n;
      memcpy(e->data + e->klen, &sum, sizeof sum);
      *result = sum;
      rc = 0;
    }
  } else if (!init) {
    rc = MG_DICT_NOT_FOUND;
  } else {
    sum = *init + n;
    if (e && e->vlen == sizeof sum && e->type != TYPE_LIST) {
      mg_zone_changing(zn); /* an expired entry of the right size is taken over */
    } else {
      if (e) entry_free(&d, e);
      e = entry_new(&d, key, klen, h, sizeof sum, 0, forcible);
    }
    rc = MG_DICT_NO_MEMORY;
    if (e) {
      e->type = MG_DICT_NUMBER;
      e->flags = 0;
      e->expires = expiry(&d, init_ttl);
      memcpy(e->data + e->klen, &sum, sizeof sum);
      *result = sum;
      rc = MG_DICT_CREATED;
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_update(mg_zone_t *zn, const char *key, size_t klen, void *value, size_t len, double ttl,
                   mg_dict_on_update_t on_update, void *ud) {
  if (!key_valid(klen) || len > UINT32_MAX) return MG_DICT_INVALID;
  uint32_t h = hash_key(key, klen);
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  int st = lookup(&d, key, klen, h, &e);
  int found = st == LIVE && e->type == MG_DICT_STRING && e->vlen == len;
  if (found) memcpy(value, e->data + e->klen, len);
  int rc = 0;
  if (on_update(ud, value, found, d.now)) {
    if (found) {
      mg_zone_changing(zn);
      memcpy(e->data + e->klen, value, len);
    } else {
      int forcible = 0;
      if (e) entry_free(&d, e);
      e = entry_new(&d, key, klen, h, len, 0, &forcible);
      if (e) {
        e->type = MG_DICT_STRING;
        e->expires = expiry(&d, ttl);
        memcpy(e->data + e->klen, value, len);
      } else {
        rc = MG_DICT_NO_MEMORY;
      }
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_delete(mg_zone_t *zn, const char *key, size_t klen) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  lookup(&d, key, klen, hash_key(key, klen), &e);
  if (e) entry_free(&d, e);
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

int mg_dict_ttl(mg_zone_t *zn, const char *key, size_t klen, double *left) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  entry_t *e = peek(&d, key, klen);
  if (e) *left = e->expires ? e->expires - d.now : 0;
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

int mg_dict_expire(mg_zone_t *zn, const char *key, size_t klen, double ttl) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  entry_t *e = peek(&d, key, klen);
  if (e) e->expires = expiry(&d, ttl);
  mg_zone_unlock(zn);
  return e ? 0 : MG_DICT_NOT_FOUND;
}

size_t mg_dict_keys(mg_zone_t *zn, size_t max, mg_dict_on_key_t on_key, void *ud) {
  dict_t d;
  begin(zn, &d);
  size_t n = 0;
  for (uint64_t off = d.h->lru_tail; off && (max == 0 || n < max);) {
    entry_t *e = AT(&d, off);
    off = e->lprev;
    if (expired(&d, e)) continue;
    on_key(ud, e->data, e->klen);
    n++;
  }
  mg_zone_unlock(zn);
  return n;
}

void mg_dict_flush_all(mg_zone_t *zn) {
  dict_t d;
  begin(zn, &d);
  for (uint64_t off = d.h->lru_head; off; off = ((entry_t *)AT(&d, off))->lnext)
    ((entry_t *)AT(&d, off))->expires = FLUSHED;
  free_oldest(&d, 1);
  mg_zone_unlock(zn);
}

size_t mg_dict_flush_expired(mg_zone_t *zn, size_t max) {
  dict_t d;
  begin(zn, &d);
  size_t n = 0;
  for (uint64_t off = d.h->lru_tail; off;) {
    entry_t *e = AT(&d, off);
    off = e->lprev;
    if (!expired(&d, e)) continue;
    entry_free(&d, e);
    if (++n == max) break;
  }
  mg_zone_unlock(zn);
  return n;
}

/* ---- lists ------------------------------------------------------------------------------------ */

/* mg_dict_push under the lock, the value checked. */
static int push(dict_t *d, int left, const char *key, size_t klen, const mg_dict_value_t *v, const void *bytes,
                size_t vl, size_t *len) {
  uint32_t h = hash_key(key, klen);
  free_oldest(d, 0);
  entry_t *e;
  int st = lookup(d, key, klen, h, &e);
  int forcible = 0;
  if (st == LIVE && e->type != TYPE_LIST) return MG_DICT_NOT_A_LIST;
  if (st == EXPIRED && e->type != TYPE_LIST) {
    entry_free(d, e);
    e = NULL;
  } else if (st == EXPIRED) {
    list_clear(d, e); /* an expired list starts over */
    e->expires = 0;
  }
  if (!e) {
    e = entry_new(d, key, klen, h, sizeof(list_t), 1, &forcible);
    if (!e) {
      *len = SIZE_MAX;
      return MG_DICT_NO_MEMORY;
    }
    e->type = TYPE_LIST;
    e->vlen = 0;
    list_store(e, &(list_t){0, 0});
  }
  uint64_t off = block_alloc(d, sizeof(item_t) + vl, 1, &forcible);
  if (!off) {
    if (e->vlen == 0) entry_free(d, e);
    return MG_DICT_NO_MEMORY;
  }
  item_t *it = AT(d, off);
  it->len = (uint32_t)vl, it->type = (uint8_t)v->type;
  memcpy(it->data, bytes, vl);
  list_t l = list_of(e);
  if (left) {
    it->prev = 0, it->next = l.head;
    if (l.head) ((item_t *)AT(d, l.head))->prev = off;
    else l.tail = off;
    l.head = off;
  } else {
    it->next = 0, it->prev = l.tail;
    if (l.tail) ((item_t *)AT(d, l.tail))->next = off;
    else l.head = off;
    l.tail = off;
  }
  list_store(e, &l);
  *len = ++e->vlen;
  return 0;
}

int mg_dict_push(mg_zone_t *zn, int left, const char *key, size_t klen, const mg_dict_value_t *v, size_t *len) {
  *len = 0;
  char num[8];
  const void *bytes;
  long vl = value_bytes(v, num, &bytes);
  if (!key_valid(klen) || (v->type != MG_DICT_STRING && v->type != MG_DICT_NUMBER)) return MG_DICT_INVALID;
  if (vl > (long)UINT32_MAX) return MG_DICT_NO_MEMORY;
  dict_t d;
  begin(zn, &d);
  int rc = push(&d, left, key, klen, v, bytes, (size_t)vl, len);
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_pop(mg_zone_t *zn, int left, const char *key, size_t klen, mg_dict_on_value_t on_value, void *ud) {
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  int st = lookup(&d, key, klen, hash_key(key, klen), &e);
  int rc = 0;
  if (st != LIVE) {
    rc = MG_DICT_NOT_FOUND;
  } else if (e->type != TYPE_LIST) {
    rc = MG_DICT_NOT_A_LIST;
  } else {
    list_t l = list_of(e);
    uint64_t off = left ? l.head : l.tail;
    item_t *it = AT(&d, off);
    mg_dict_value_t val;
    value_read(&val, it->type, it->data, it->len, 0);
    on_value(ud, &val);
    if (e->vlen <= 1) {
      entry_free(&d, e); /* the last item goes with the list */
    } else {
      mg_zone_changing(zn);
      if (left) l.head = it->next, ((item_t *)AT(&d, l.head))->prev = 0;
      else l.tail = it->prev, ((item_t *)AT(&d, l.tail))->next = 0;
      list_store(e, &l);
      e->vlen--;
      mg_zone_free(zn, off);
    }
  }
  mg_zone_unlock(zn);
  return rc;
}

int mg_dict_llen(mg_zone_t *zn, const char *key, size_t klen, size_t *len) {
  *len = 0;
  if (!key_valid(klen)) return MG_DICT_INVALID;
  dict_t d;
  begin(zn, &d);
  free_oldest(&d, 0);
  entry_t *e;
  int rc = 0;
  if (lookup(&d, key, klen, hash_key(key, klen), &e) == LIVE) {
    if (e->type != TYPE_LIST) rc = MG_DICT_NOT_A_LIST;
    else *len = e->vlen;
  }
  mg_zone_unlock(zn);
  return rc;
}

/* ---- the zone ------------------------------------------------------------------------------------ */

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
  case MG_DICT_NOT_A_LIST: return "value not a list";
  case MG_DICT_IS_LIST: return "value is a list";
  default: return "unknown error";
  }
}
