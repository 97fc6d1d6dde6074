/* shdict: see shdict.h.
 *
 * Zone layout: a header, the bucket array, then the heap of blocks. Every link inside a zone is
 * an offset from the zone's start, never a pointer, so the zone means the same in every process.
 * A block is a 16-byte header (its size with the low bit set when in use, and the size of the
 * block before it, for coalescing) and its payload; a free block keeps its free-list links in
 * its payload. An entry is one block: hash-chain and LRU links, expiry, key, value. */
#include "shdict.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "buf.h"
#include "log.h"

#define DICT_MT "moongate.shdict"
#define LIMIT_MT "moongate.limit_req"
#define REGISTRY_KEY "moongate.shdicts"
#define MAGIC 0x6d677364u
#define MIN_SIZE (64 * 1024)
#define MAX_KEY (64 * 1024)
#define MAX_VALUE (1024 * 1024)

enum { T_STRING = 1, T_NUMBER = 2, T_BOOLEAN = 3 };

typedef struct {
  uint32_t magic;
  uint32_t dirty; /* a structural change is under way (see lock_zone) */
  pthread_mutex_t lock;
  uint64_t size, nbuckets, heap, heap_end;
  uint64_t free_head;
  uint64_t lru_head, lru_tail; /* most recently used first */
  uint64_t nkeys;
} zone_hdr_t;

typedef struct {
  uint64_t size; /* bytes of the block, header included; low bit: in use */
  uint64_t prev_size;
} block_t;

typedef struct {
  uint64_t next, prev;
} free_links_t;

typedef struct {
  uint64_t hnext, lprev, lnext;
  double expires; /* monotonic seconds; 0: never */
  uint32_t hash, klen, vlen;
  uint8_t type;
  uint8_t pad[3];
  char data[];
} entry_t;

struct mg_zone_s {
  char name[128];
  size_t size;
  zone_hdr_t *h;
  int refs;
  struct mg_zone_s *next;
};

static mg_zone_t *zones; /* this process's zones, by name */

#define AT(z, off) ((void *)((char *)(z) + (off)))
#define OFF(z, p) ((uint64_t)((char *)(p) - (char *)(z)))

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

/* ---- the allocator ------------------------------------------------------------------------ */

static block_t *blk(zone_hdr_t *z, uint64_t off) { return AT(z, off); }
static uint64_t bsize(const block_t *b) { return b->size & ~(uint64_t)1; }

static void free_unlink(zone_hdr_t *z, uint64_t off) {
  free_links_t *l = AT(z, off + sizeof(block_t));
  if (l->prev) ((free_links_t *)AT(z, l->prev + sizeof(block_t)))->next = l->next;
  else z->free_head = l->next;
  if (l->next) ((free_links_t *)AT(z, l->next + sizeof(block_t)))->prev = l->prev;
}

static void free_push(zone_hdr_t *z, uint64_t off) {
  free_links_t *l = AT(z, off + sizeof(block_t));
  l->prev = 0;
  l->next = z->free_head;
  if (z->free_head) ((free_links_t *)AT(z, z->free_head + sizeof(block_t)))->prev = off;
  z->free_head = off;
}

static void zone_format(zone_hdr_t *z) {
  z->free_head = z->lru_head = z->lru_tail = 0;
  z->nkeys = 0;
  memset(AT(z, sizeof *z), 0, z->nbuckets * sizeof(uint64_t));
  block_t *b = blk(z, z->heap);
  b->size = z->heap_end - z->heap;
  b->prev_size = 0;
  free_push(z, z->heap);
}

/* Returns the payload offset of a block of at least n bytes, or 0. */
static uint64_t zalloc(zone_hdr_t *z, size_t n) {
  uint64_t need = (sizeof(block_t) + n + 15) & ~(uint64_t)15;
  if (need < sizeof(block_t) + sizeof(free_links_t)) need = sizeof(block_t) + sizeof(free_links_t);
  for (uint64_t off = z->free_head; off; off = ((free_links_t *)AT(z, off + sizeof(block_t)))->next) {
    block_t *b = blk(z, off);
    uint64_t size = bsize(b);
    if (size < need) continue;
    free_unlink(z, off);
    if (size - need >= 64) {
      /* Split: the rest stays free. */
      uint64_t rest = off + need;
      block_t *r = blk(z, rest);
      r->size = size - need;
      r->prev_size = need;
      if (rest + r->size < z->heap_end) blk(z, rest + r->size)->prev_size = r->size;
      free_push(z, rest);
      size = need;
    }
    b->size = size | 1;
    return off + sizeof(block_t);
  }
  return 0;
}

static void zfree(zone_hdr_t *z, uint64_t payload) {
  uint64_t off = payload - sizeof(block_t);
  block_t *b = blk(z, off);
  uint64_t size = bsize(b);
  uint64_t next = off + size;
  if (next < z->heap_end && !(blk(z, next)->size & 1)) {
    free_unlink(z, next);
    size += bsize(blk(z, next));
  }
  if (off > z->heap && b->prev_size && !(blk(z, off - b->prev_size)->size & 1)) {
    uint64_t prev = off - b->prev_size;
    free_unlink(z, prev);
    size += bsize(blk(z, prev));
    off = prev;
    b = blk(z, off);
  }
  b->size = size;
  if (off + size < z->heap_end) blk(z, off + size)->prev_size = size;
  free_push(z, off);
}

static uint64_t free_bytes(zone_hdr_t *z) {
  uint64_t total = 0;
  for (uint64_t off = z->free_head; off; off = ((free_links_t *)AT(z, off + sizeof(block_t)))->next)
    total += bsize(blk(z, off)) - sizeof(block_t);
  return total;
}

/* ---- entries ----------------------------------------------------------------------------------- */

static uint64_t *bucket(zone_hdr_t *z, uint32_t hash) {
  return (uint64_t *)AT(z, sizeof *z) + (hash & (z->nbuckets - 1));
}

static void lru_unlink(zone_hdr_t *z, entry_t *e) {
  if (e->lprev) ((entry_t *)AT(z, e->lprev))->lnext = e->lnext;
  else z->lru_head = e->lnext;
  if (e->lnext) ((entry_t *)AT(z, e->lnext))->lprev = e->lprev;
  else z->lru_tail = e->lprev;
}

static void lru_push(zone_hdr_t *z, entry_t *e) {
  uint64_t off = OFF(z, e);
  e->lprev = 0;
  e->lnext = z->lru_head;
  if (z->lru_head) ((entry_t *)AT(z, z->lru_head))->lprev = off;
  z->lru_head = off;
  if (!z->lru_tail) z->lru_tail = off;
}

static void entry_delete(zone_hdr_t *z, entry_t *e) {
  uint64_t off = OFF(z, e);
  for (uint64_t *pp = bucket(z, e->hash); *pp; pp = &((entry_t *)AT(z, *pp))->hnext)
    if (*pp == off) {
      *pp = e->hnext;
      break;
    }
  lru_unlink(z, e);
  z->nkeys--;
  zfree(z, off);
}

/* The live entry for key, or NULL (an expired one is deleted on the way). */
static entry_t *entry_find(zone_hdr_t *z, const char *k, size_t kl, uint32_t hash, double now) {
  for (uint64_t off = *bucket(z, hash); off;) {
    entry_t *e = AT(z, off);
    off = e->hnext;
    if (e->hash == hash && e->klen == kl && memcmp(e->data, k, kl) == 0) {
      if (e->expires && e->expires <= now) {
        entry_delete(z, e);
        return NULL;
      }
      return e;
    }
  }
  return NULL;
}

/* A new entry (not yet linked); evicts from the LRU end while it does not fit. */
static entry_t *entry_alloc(zone_hdr_t *z, size_t kl, size_t vl, int *forcible) {
  uint64_t off;
  while (!(off = zalloc(z, sizeof(entry_t) + kl + vl))) {
    if (!z->lru_tail) return NULL;
    entry_delete(z, AT(z, z->lru_tail));
    *forcible = 1;
  }
  return AT(z, off);
}

static void entry_link(zone_hdr_t *z, entry_t *e) {
  uint64_t *b = bucket(z, e->hash);
  e->hnext = *b;
  *b = OFF(z, e);
  lru_push(z, e);
  z->nkeys++;
}

/* ---- locking ---------------------------------------------------------------------------------- */

static void lock_zone(zone_hdr_t *z) {
  int rc = pthread_mutex_lock(&z->lock);
  if (rc == EOWNERDEAD) {
    /* Its holder died. A structural change it left half done cannot be trusted: start over. */
    if (z->dirty) {
      zone_format(z);
      z->dirty = 0;
      mg_log(MG_LOG_WARN, "a worker died while changing a shared dictionary: its contents were cleared");
    }
    pthread_mutex_consistent(&z->lock);
  }
}

static void unlock_zone(zone_hdr_t *z) { pthread_mutex_unlock(&z->lock); }

/* ---- zones in this process ---------------------------------------------------------------------- */

static mg_zone_t *zone_get(const char *name, size_t size, char *err, size_t errlen) {
  for (mg_zone_t *zn = zones; zn; zn = zn->next)
    if (strcmp(zn->name, name) == 0 && zn->size == size) {
      zn->refs++;
      return zn;
    }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %zu bytes of shared memory: %s", size, strerror(errno));
    return NULL;
  }
  zone_hdr_t *z = p;
  z->magic = MAGIC;
  z->size = size;
  uint64_t nb = 16;
  while (nb * 512 < size) nb <<= 1; /* about one bucket per 512 bytes */
  z->nbuckets = nb;
  z->heap = (sizeof *z + nb * sizeof(uint64_t) + 15) & ~(uint64_t)15;
  z->heap_end = size & ~(uint64_t)15;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&z->lock, &a);
  pthread_mutexattr_destroy(&a);
  zone_format(z);
  mg_zone_t *zn = mg_calloc(1, sizeof *zn);
  snprintf(zn->name, sizeof zn->name, "%s", name);
  zn->size = size, zn->h = z, zn->refs = 1;
  zn->next = zones;
  zones = zn;
  return zn;
}

static void zone_unref(mg_zone_t *zn) {
  if (--zn->refs > 0) return;
  for (mg_zone_t **pp = &zones; *pp; pp = &(*pp)->next)
    if (*pp == zn) {
      *pp = zn->next;
      break;
    }
  munmap(zn->h, zn->size);
  free(zn);
}

typedef struct {
  mg_zone_t *zone;
} dict_box_t;

void mg_shdict_release_all(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      dict_box_t *b = lua_touserdata(L, -1);
      if (b && b->zone) zone_unref(b->zone), b->zone = NULL;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* ---- Lua: values --------------------------------------------------------------------------------- */

static zone_hdr_t *check_dict(lua_State *L) {
  dict_box_t *b = luaL_checkudata(L, 1, DICT_MT);
  if (!b->zone) luaL_error(L, "shared dictionary used after its configuration ended");
  return b->zone->h;
}

static const char *check_key(lua_State *L, size_t *kl) {
  const char *k = luaL_checklstring(L, 2, kl);
  if (*kl == 0) luaL_argerror(L, 2, "key must not be empty");
  if (*kl > MAX_KEY) luaL_argerror(L, 2, "key longer than 64 KiB");
  return k;
}

static double check_ttl(lua_State *L, int idx) {
  double ttl = luaL_optnumber(L, idx, 0);
  if (ttl < 0) luaL_argerror(L, idx, "ttl must not be negative");
  return ttl;
}

static void push_value(lua_State *L, const entry_t *e) {
  const char *v = e->data + e->klen;
  if (e->type == T_STRING) {
    lua_pushlstring(L, v, e->vlen);
  } else if (e->type == T_NUMBER) {
    double d;
    memcpy(&d, v, sizeof d);
    lua_pushnumber(L, d);
  } else {
    lua_pushboolean(L, v[0]);
  }
}

/* The start of an operation on one key: the zone locked, the live entry (or NULL). */
typedef struct {
  zone_hdr_t *z;
  double now;
} keyop_t;

static entry_t *key_begin(lua_State *L, keyop_t *o) {
  o->z = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  uint32_t h = hash_key(k, kl);
  o->now = now_s();
  lock_zone(o->z);
  o->z->dirty = 1;
  return entry_find(o->z, k, kl, h, o->now);
}

static void key_end(keyop_t *o) {
  o->z->dirty = 0;
  unlock_zone(o->z);
}

/* d:get(key) → value or nil */
static int l_get(lua_State *L) {
  keyop_t o;
  entry_t *e = key_begin(L, &o);
  zone_hdr_t *z = o.z;
  if (e) {
    lru_unlink(z, e);
    lru_push(z, e);
    push_value(L, e);
  } else {
    lua_pushnil(L);
  }
  key_end(&o);
  return 1;
}

enum { MODE_SET, MODE_ADD, MODE_REPLACE };

static int store(lua_State *L, int mode) {
  zone_hdr_t *z = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  double ttl = check_ttl(L, 4);
  int t = lua_type(L, 3);
  char num[8];
  const char *v = NULL;
  size_t vl = 0;
  uint8_t type = 0;
  if (t == LUA_TSTRING) {
    v = lua_tolstring(L, 3, &vl), type = T_STRING;
    if (vl > MAX_VALUE) return luaL_argerror(L, 3, "value larger than 1 MiB");
  } else if (t == LUA_TNUMBER) {
    double d = lua_tonumber(L, 3);
    memcpy(num, &d, sizeof d);
    v = num, vl = sizeof d, type = T_NUMBER;
  } else if (t == LUA_TBOOLEAN) {
    num[0] = (char)lua_toboolean(L, 3);
    v = num, vl = 1, type = T_BOOLEAN;
  } else if (t != LUA_TNIL || mode != MODE_SET) {
    return luaL_argerror(L, 3, "value must be a string, a number or a boolean");
  }
  uint32_t h = hash_key(k, kl);
  double now = now_s();
  int forcible = 0;
  lock_zone(z);
  z->dirty = 1;
  entry_t *old = entry_find(z, k, kl, h, now);
  const char *err = NULL;
  if (mode == MODE_ADD && old) err = "exists";
  else if (mode == MODE_REPLACE && !old) err = "not found";
  if (!err) {
    if (old) entry_delete(z, old);
    if (type) {
      entry_t *e = entry_alloc(z, kl, vl, &forcible);
      if (!e) {
        err = "no memory";
      } else {
        e->hash = h, e->klen = (uint32_t)kl, e->vlen = (uint32_t)vl, e->type = type;
        e->expires = ttl > 0 ? now + ttl : 0;
        memcpy(e->data, k, kl);
        memcpy(e->data + kl, v, vl);
        entry_link(z, e);
      }
    }
  }
  z->dirty = 0;
  unlock_zone(z);
  if (err) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, err);
    lua_pushboolean(L, forcible);
    return 3;
  }
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_set(lua_State *L) { return store(L, MODE_SET); }
static int l_add(lua_State *L) { return store(L, MODE_ADD); }
static int l_replace(lua_State *L) { return store(L, MODE_REPLACE); }

/* d:incr(key, n[, init[, init_ttl]]) → new value, or nil, err */
static int l_incr(lua_State *L) {
  zone_hdr_t *z = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  double n = luaL_checknumber(L, 3);
  int has_init = !lua_isnoneornil(L, 4);
  double init = has_init ? luaL_checknumber(L, 4) : 0;
  double ttl = check_ttl(L, 5);
  uint32_t h = hash_key(k, kl);
  double now = now_s();
  lock_zone(z);
  entry_t *e = entry_find(z, k, kl, h, now);
  if (e && e->type == T_NUMBER) {
    /* One store in place: safe even if this worker dies right here. */
    double d;
    memcpy(&d, e->data + e->klen, sizeof d);
    d += n;
    memcpy(e->data + e->klen, &d, sizeof d);
    unlock_zone(z);
    lua_pushnumber(L, d);
    return 1;
  }
  const char *err = e ? "not a number" : "not found";
  double result = 0;
  int forcible = 0;
  if (!e && has_init) {
    z->dirty = 1;
    entry_t *ne = entry_alloc(z, kl, sizeof(double), &forcible);
    if (ne) {
      result = init + n;
      ne->hash = h, ne->klen = (uint32_t)kl, ne->vlen = sizeof(double), ne->type = T_NUMBER;
      ne->expires = ttl > 0 ? now + ttl : 0;
      memcpy(ne->data, k, kl);
      memcpy(ne->data + kl, &result, sizeof result);
      entry_link(z, ne);
      err = NULL;
    } else {
      err = "no memory";
    }
    z->dirty = 0;
  }
  unlock_zone(z);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushnumber(L, result);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_delete(lua_State *L) {
  keyop_t o;
  entry_t *e = key_begin(L, &o);
  if (e) entry_delete(o.z, e);
  key_end(&o);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:ttl(key) → seconds left (0: no expiry), or nil, "not found" */
static int l_ttl(lua_State *L) {
  keyop_t o;
  entry_t *e = key_begin(L, &o);
  double left = e ? (e->expires ? e->expires - o.now : 0) : -1;
  key_end(&o);
  if (left < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
  }
  lua_pushnumber(L, left);
  return 1;
}

/* d:expire(key, ttl) → true, or nil, "not found" */
static int l_expire(lua_State *L) {
  double ttl = check_ttl(L, 3);
  keyop_t o;
  entry_t *e = key_begin(L, &o);
  if (e) e->expires = ttl > 0 ? o.now + ttl : 0;
  key_end(&o);
  if (!e) {
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* d:get_keys([max]) → the keys (at most max, default 1024, 0 for all), most recent first */
static int l_get_keys(lua_State *L) {
  zone_hdr_t *z = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, 1024);
  double now = now_s();
  lua_newtable(L);
  int n = 0;
  lock_zone(z);
  for (uint64_t off = z->lru_head; off && (max == 0 || n < max);) {
    entry_t *e = AT(z, off);
    off = e->lnext;
    if (e->expires && e->expires <= now) continue;
    lua_pushlstring(L, e->data, e->klen);
    lua_rawseti(L, -2, ++n);
  }
  unlock_zone(z);
  return 1;
}

static int l_flush_all(lua_State *L) {
  zone_hdr_t *z = check_dict(L);
  lock_zone(z);
  z->dirty = 1;
  zone_format(z);
  z->dirty = 0;
  unlock_zone(z);
  return 0;
}

static int l_capacity(lua_State *L) {
  zone_hdr_t *z = check_dict(L);
  lua_pushnumber(L, (lua_Number)z->size);
  return 1;
}

static int l_free_space(lua_State *L) {
  zone_hdr_t *z = check_dict(L);
  lock_zone(z);
  uint64_t f = free_bytes(z);
  unlock_zone(z);
  lua_pushnumber(L, (lua_Number)f);
  return 1;
}

/* ---- declaring ---------------------------------------------------------------------------------------- */

static size_t parse_size_arg(lua_State *L, int idx, const char *what) {
  if (lua_type(L, idx) == LUA_TNUMBER) return (size_t)lua_tonumber(L, idx);
  size_t l;
  const char *s = luaL_checklstring(L, idx, &l);
  char *end;
  double v = strtod(s, &end);
  double mul = 1;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1024 * 1024, end++;
  else if (*end == 'g' || *end == 'G') mul = 1024.0 * 1024 * 1024, end++;
  if (*end || !(v > 0)) luaL_error(L, "%s: size must be like \"10m\", \"512k\" or a number of bytes, got \"%s\"", what, s);
  return (size_t)(v * mul);
}

/* Finds or makes the dictionary `name` of `size` bytes (size 0: must exist) in this state's
 * registry; pushes its userdata. */
static void push_dict(lua_State *L, const char *name, size_t size, const char *what) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY); /* reg */
  lua_getfield(L, -1, name);                         /* reg dict? */
  if (!lua_isnil(L, -1)) {
    dict_box_t *b = lua_touserdata(L, -1);
    if (size && b->zone && b->zone->size != size)
      luaL_error(L, "%s: \"%s\" is already declared with size %d", what, name, (int)b->zone->size);
    lua_remove(L, -2);
    return;
  }
  if (!size) luaL_error(L, "%s: no shared dictionary \"%s\" (declare it in init.lua with a size)", what, name);
  if (size < MIN_SIZE) luaL_error(L, "%s: size of \"%s\" must be at least 64k", what, name);
  char err[160];
  mg_zone_t *zn = zone_get(name, size, err, sizeof err);
  if (!zn) luaL_error(L, "%s: %s", what, err);
  lua_pop(L, 1);
  dict_box_t *b = lua_newuserdata(L, sizeof *b);
  b->zone = zn;
  luaL_getmetatable(L, DICT_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  lua_remove(L, -2);
}

int mg_lua_shdict_declaring;

/* mg.shared(name[, size]) */
static int l_shared(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (!*name || strlen(name) > 100) return luaL_argerror(L, 1, "a name of 1 to 100 characters");
  size_t size = lua_isnoneornil(L, 2) ? 0 : parse_size_arg(L, 2, "mg.shared");
  if (size && mg_lua_shdict_declaring == 0)
    return luaL_error(L, "mg.shared: dictionaries are declared in init.lua (at load time), not in a request");
  push_dict(L, name, size, "mg.shared");
  return 1;
}

/* ---- limit_req ------------------------------------------------------------------------------------------ */

typedef struct {
  dict_box_t dict;
  double rate;  /* requests per second */
  double burst; /* requests */
} limit_box_t;

/* lim:incoming(key, commit) → delay seconds, or nil, "rejected" */
static int l_incoming(lua_State *L) {
  limit_box_t *lb = luaL_checkudata(L, 1, LIMIT_MT);
  if (!lb->dict.zone) return luaL_error(L, "limiter used after its configuration ended");
  zone_hdr_t *z = lb->dict.zone->h;
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  if (kl == 0 || kl > MAX_KEY) return luaL_argerror(L, 2, "key of 1 byte to 64 KiB");
  int commit = lua_toboolean(L, 3);
  uint32_t h = hash_key(k, kl);
  double now = now_s();
  double state[2]; /* excess (requests), last (seconds) */
  lock_zone(z);
  z->dirty = 1;
  entry_t *e = entry_find(z, k, kl, h, now);
  double excess = 0;
  if (e) {
    memcpy(state, e->data + e->klen, sizeof state);
    /* The bucket leaks `rate` requests per second; this request adds one. */
    excess = state[0] - lb->rate * fabs(now - state[1]) + 1;
    if (excess < 0) excess = 0;
  }
  int rejected = excess > lb->burst;
  if (!rejected && commit) {
    state[0] = excess, state[1] = now;
    if (e) {
      memcpy(e->data + e->klen, state, sizeof state);
      lru_unlink(z, e);
      lru_push(z, e);
    } else {
      int forcible = 0;
      entry_t *ne = entry_alloc(z, kl, sizeof state, &forcible);
      if (ne) {
        ne->hash = h, ne->klen = (uint32_t)kl, ne->vlen = sizeof state, ne->type = T_STRING;
        /* An idle key's state is worth nothing once the bucket has drained. */
        ne->expires = now + 60 + (lb->burst + 1) / lb->rate;
        memcpy(ne->data, k, kl);
        memcpy(ne->data + kl, state, sizeof state);
        entry_link(z, ne);
      }
    }
  }
  z->dirty = 0;
  unlock_zone(z);
  if (rejected) {
    lua_pushnil(L);
    lua_pushliteral(L, "rejected");
    return 2;
  }
  lua_pushnumber(L, excess / lb->rate);
  return 1;
}

/* mg.limit_req(name, { rate = "10r/s", burst = 20, size = "1m" }) */
static int l_limit_req(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!mg_lua_shdict_declaring) return luaL_error(L, "mg.limit_req: limiters are declared in init.lua");
  lua_getfield(L, 2, "rate");
  const char *rs = lua_tostring(L, -1);
  double rate = 0;
  char unit[4] = "";
  if (!rs || sscanf(rs, "%lfr/%1[sm]", &rate, unit) != 2 || !(rate > 0))
    return luaL_error(L, "mg.limit_req: rate must be like \"10r/s\" or \"30r/m\", got %s", rs ? rs : "nothing");
  if (unit[0] == 'm') rate /= 60;
  lua_getfield(L, 2, "burst");
  double burst = luaL_optnumber(L, -1, 0);
  if (burst < 0) return luaL_error(L, "mg.limit_req: burst must not be negative");
  lua_getfield(L, 2, "size");
  size_t size = lua_isnil(L, -1) ? 1024 * 1024 : parse_size_arg(L, lua_gettop(L), "mg.limit_req");
  lua_pop(L, 3);
  for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
    const char *k = lua_tostring(L, -2);
    if (!k || (strcmp(k, "rate") && strcmp(k, "burst") && strcmp(k, "size")))
      return luaL_error(L, "mg.limit_req: unknown option %s (rate, burst, size)", k ? k : "?");
  }
  char zname[128];
  snprintf(zname, sizeof zname, "limit_req:%s", name);
  push_dict(L, zname, size, "mg.limit_req"); /* dict */
  dict_box_t *d = lua_touserdata(L, -1);
  limit_box_t *lb = lua_newuserdata(L, sizeof *lb);
  lb->dict.zone = d->zone;
  d->zone->refs++; /* the limiter holds the zone too; released with the state's registry */
  lb->rate = rate, lb->burst = burst;
  luaL_getmetatable(L, LIMIT_MT);
  lua_setmetatable(L, -2);
  /* Keep the limiter in the registry as well, so mg_shdict_release_all drops its hold. */
  char key[160];
  snprintf(key, sizeof key, "%s#limiter%p", zname, (void *)lb);
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY); /* dict lim reg */
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, key);
  lua_pop(L, 1);
  lua_remove(L, -2); /* lim */
  return 1;
}

void mg_shdict_open(lua_State *L) {
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY);
  if (luaL_newmetatable(L, DICT_MT)) {
    static const luaL_Reg m[] = {{"get", l_get},           {"set", l_set},       {"add", l_add},
                                 {"replace", l_replace},   {"incr", l_incr},     {"delete", l_delete},
                                 {"ttl", l_ttl},           {"expire", l_expire}, {"get_keys", l_get_keys},
                                 {"flush_all", l_flush_all}, {"capacity", l_capacity},
                                 {"free_space", l_free_space}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, m);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LIMIT_MT)) {
    lua_newtable(L);
    lua_pushcfunction(L, l_incoming);
    lua_setfield(L, -2, "incoming");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"shared", l_shared}, {"limit_req", l_limit_req}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
