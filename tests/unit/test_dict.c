/* Unit test of the shared dictionary through its C API (src/shm/dict.h): each value type
 * stored and read back, the set/add/replace modes, incr with and without init, ttl and expire
 * with time passing, delete, keys in LRU order, flush_all and flush_expired, the update of
 * limit_req's state, user flags, expired entries kept stale until freed (get_stale) and freed
 * two at a time by the stores, lists, a full dictionary evicting (forcible) at most 30 times and
 * the safe modes never evicting; then seeded random sets, deletes and gets against a model,
 * after which the emptied dictionary has all its space back (every block freed and coalesced,
 * list items too). */
#include "dict.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

#define SIZE (256 * 1024)
#define KEYS 300
#define ROUNDS 30000

/* What a get saw: the value, a string's bytes copied. */
typedef struct {
  mg_dict_value_t v;
  char str[8192];
  int calls;
} got_t;

static void on_value(void *ud, const mg_dict_value_t *v) {
  got_t *g = ud;
  g->v = *v;
  if (v->type == MG_DICT_STRING && v->len <= sizeof g->str) memcpy(g->str, v->str, v->len);
  g->calls++;
}

static int get(mg_zone_t *d, const char *k, got_t *g) {
  memset(g, 0, sizeof *g);
  return mg_dict_get(d, k, strlen(k), on_value, g);
}

static int set_str(mg_zone_t *d, mg_dict_mode_t mode, const char *k, const char *s, size_t len, double ttl, int *forcible) {
  mg_dict_value_t v = {.type = MG_DICT_STRING, .str = s, .len = len};
  return mg_dict_set(d, mode, k, strlen(k), &v, ttl, forcible);
}

static int set_num(mg_zone_t *d, const char *k, double num, double ttl) {
  mg_dict_value_t v = {.type = MG_DICT_NUMBER, .num = num};
  int forcible;
  return mg_dict_set(d, MG_DICT_SET, k, strlen(k), &v, ttl, &forcible);
}

static int got_str(const got_t *g, const char *s) {
  return g->v.type == MG_DICT_STRING && g->v.len == strlen(s) && memcmp(g->str, s, g->v.len) == 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

typedef struct {
  char keys[8][32];
  char last[32];
  size_t n;
} keys_t;

static void on_key(void *ud, const char *key, size_t klen) {
  keys_t *ks = ud;
  if (ks->n < 8 && klen < 32) memcpy(ks->keys[ks->n], key, klen), ks->keys[ks->n][klen] = 0;
  if (klen < 32) memcpy(ks->last, key, klen), ks->last[klen] = 0;
  ks->n++;
}

static size_t nkeys(mg_zone_t *d) { return mg_dict_keys(d, 0, on_key, &(keys_t){0}); }

/* Everything flushed and freed: the dictionary has all its space back. */
static void empty(mg_zone_t *d, size_t free0) {
  mg_dict_flush_all(d);
  mg_dict_flush_expired(d, 0);
  CHECK(mg_dict_free_space(d) == free0);
}

/* limit_req's kind of update: a counter of two numbers, stored unless `store` is 0. */
typedef struct {
  int found, store;
  double now;
} upd_t;

static int on_update(void *ud, void *value, int found, double now) {
  upd_t *u = ud;
  u->found = found, u->now = now;
  double pair[2];
  if (found) memcpy(pair, value, sizeof pair);
  else pair[0] = 0, pair[1] = 0;
  pair[0] += 1, pair[1] = now;
  memcpy(value, pair, sizeof pair);
  return u->store;
}

static void test_types_and_modes(mg_zone_t *d) {
  got_t g;
  int forcible;
  CHECK(get(d, "missing", &g) == MG_DICT_NOT_FOUND && g.calls == 0);
  /* Each type comes back as it went in; a string may hold any byte. */
  CHECK(set_str(d, MG_DICT_SET, "s", "a\0b", 3, 0, &forcible) == 0 && forcible == 0);
  CHECK(get(d, "s", &g) == 0 && g.calls == 1 && g.v.type == MG_DICT_STRING && g.v.len == 3 && memcmp(g.str, "a\0b", 3) == 0);
  CHECK(set_num(d, "n", -2.5, 0) == 0);
  CHECK(get(d, "n", &g) == 0 && g.v.type == MG_DICT_NUMBER && g.v.num == -2.5);
  mg_dict_value_t t = {.type = MG_DICT_BOOLEAN, .boolean = 1}, f = {.type = MG_DICT_BOOLEAN, .boolean = 0};
  CHECK(mg_dict_set(d, MG_DICT_SET, "t", 1, &t, 0, &forcible) == 0);
  CHECK(mg_dict_set(d, MG_DICT_SET, "f", 1, &f, 0, &forcible) == 0);
  CHECK(get(d, "t", &g) == 0 && g.v.type == MG_DICT_BOOLEAN && g.v.boolean == 1);
  CHECK(get(d, "f", &g) == 0 && g.v.type == MG_DICT_BOOLEAN && g.v.boolean == 0);
  CHECK(set_str(d, MG_DICT_SET, "empty", "", 0, 0, &forcible) == 0);
  CHECK(get(d, "empty", &g) == 0 && got_str(&g, ""));
  /* A set over another type replaces it; a nil set deletes. */
  CHECK(set_str(d, MG_DICT_SET, "n", "now a string", 12, 0, &forcible) == 0);
  CHECK(get(d, "n", &g) == 0 && got_str(&g, "now a string"));
  mg_dict_value_t nil = {.type = MG_DICT_NIL};
  CHECK(mg_dict_set(d, MG_DICT_SET, "n", 1, &nil, 0, &forcible) == 0);
  CHECK(get(d, "n", &g) == MG_DICT_NOT_FOUND);
  /* add only makes, replace only changes. */
  CHECK(set_str(d, MG_DICT_ADD, "s", "x", 1, 0, &forcible) == MG_DICT_EXISTS && forcible == 0);
  CHECK(get(d, "s", &g) == 0 && g.v.len == 3);
  CHECK(set_str(d, MG_DICT_ADD, "a", "x", 1, 0, &forcible) == 0);
  CHECK(set_str(d, MG_DICT_REPLACE, "zz", "x", 1, 0, &forcible) == MG_DICT_NOT_FOUND);
  CHECK(get(d, "zz", &g) == MG_DICT_NOT_FOUND);
  CHECK(set_str(d, MG_DICT_REPLACE, "a", "y", 1, 0, &forcible) == 0);
  CHECK(get(d, "a", &g) == 0 && got_str(&g, "y"));
  /* Misuse is refused before anything changes. */
  CHECK(set_str(d, MG_DICT_SET, "", "x", 1, 0, &forcible) == MG_DICT_INVALID);
  static char big_key[MG_DICT_MAX_KEY + 1];
  memset(big_key, 'k', sizeof big_key);
  mg_dict_value_t one = {.type = MG_DICT_NUMBER, .num = 1};
  CHECK(mg_dict_set(d, MG_DICT_SET, big_key, sizeof big_key, &one, 0, &forcible) == MG_DICT_INVALID);
  CHECK(mg_dict_set(d, MG_DICT_ADD, "a", 1, &nil, 0, &forcible) == MG_DICT_INVALID);
  CHECK(mg_dict_set(d, MG_DICT_REPLACE, "a", 1, &nil, 0, &forcible) == MG_DICT_INVALID);
  CHECK(get(d, "a", &g) == 0 && got_str(&g, "y"));
  /* delete */
  CHECK(mg_dict_delete(d, "a", 1) == 0);
  CHECK(mg_dict_delete(d, "a", 1) == MG_DICT_NOT_FOUND);
  CHECK(get(d, "a", &g) == MG_DICT_NOT_FOUND);
}

static void test_incr(mg_zone_t *d) {
  double r = 0, init = 10;
  int forcible;
  CHECK(mg_dict_incr(d, "c", 1, 1, NULL, 0, &r, &forcible) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_incr(d, "c", 1, 2, &init, 0, &r, &forcible) == MG_DICT_CREATED && r == 12 && forcible == 0);
  CHECK(mg_dict_incr(d, "c", 1, -0.5, NULL, 0, &r, &forcible) == 0 && r == 11.5);
  CHECK(mg_dict_incr(d, "c", 1, 1, &init, 0, &r, &forcible) == 0 && r == 12.5); /* init only for a missing key */
  got_t g;
  CHECK(get(d, "c", &g) == 0 && g.v.type == MG_DICT_NUMBER && g.v.num == 12.5);
  CHECK(set_str(d, MG_DICT_SET, "str", "1", 1, 0, &forcible) == 0);
  CHECK(mg_dict_incr(d, "str", 3, 1, NULL, 0, &r, &forcible) == MG_DICT_NOT_A_NUMBER);
  CHECK(mg_dict_incr(d, "str", 3, 1, &init, 0, &r, &forcible) == MG_DICT_NOT_A_NUMBER);
  CHECK(mg_dict_incr(d, "", 0, 1, &init, 0, &r, &forcible) == MG_DICT_INVALID);
  /* init_ttl: the entry made from init expires; an increment keeps its expiry. */
  CHECK(mg_dict_incr(d, "short", 5, 1, &init, 0.05, &r, &forcible) == MG_DICT_CREATED && r == 11);
  CHECK(mg_dict_incr(d, "short", 5, 1, &init, 0, &r, &forcible) == 0 && r == 12);
  sleep_ms(80);
  CHECK(get(d, "short", &g) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_incr(d, "short", 5, 1, NULL, 0, &r, &forcible) == MG_DICT_NOT_FOUND);
}

static void test_ttl_and_expire(mg_zone_t *d) {
  double left = -1;
  int forcible;
  got_t g;
  CHECK(set_str(d, MG_DICT_SET, "forever", "x", 1, 0, &forcible) == 0);
  CHECK(mg_dict_ttl(d, "forever", 7, &left) == 0 && left == 0);
  CHECK(mg_dict_ttl(d, "nothing", 7, &left) == MG_DICT_NOT_FOUND);
  CHECK(set_str(d, MG_DICT_SET, "t", "x", 1, 0.05, &forcible) == 0);
  CHECK(mg_dict_ttl(d, "t", 1, &left) == 0 && left > 0 && left <= 0.05);
  CHECK(get(d, "t", &g) == 0);
  sleep_ms(80);
  CHECK(get(d, "t", &g) == MG_DICT_NOT_FOUND);
  /* Expired, but not freed yet: its ttl is how long ago it expired. */
  CHECK(mg_dict_ttl(d, "t", 1, &left) == 0 && left < -0.02 && left > -1);
  /* expire gives a key a ttl, or takes it away with 0. */
  CHECK(mg_dict_expire(d, "nothing", 7, 1) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_expire(d, "forever", 7, 0.05) == 0);
  CHECK(mg_dict_ttl(d, "forever", 7, &left) == 0 && left > 0 && left <= 0.05);
  CHECK(set_str(d, MG_DICT_SET, "kept", "x", 1, 0.05, &forcible) == 0);
  CHECK(mg_dict_expire(d, "kept", 4, 0) == 0);
  sleep_ms(80);
  CHECK(get(d, "forever", &g) == MG_DICT_NOT_FOUND);
  CHECK(get(d, "kept", &g) == 0);
  CHECK(mg_dict_ttl(d, "kept", 4, &left) == 0 && left == 0);
}

static void test_keys_and_flush(mg_zone_t *d, size_t free0) {
  empty(d, free0);
  int forcible;
  got_t g;
  CHECK(set_str(d, MG_DICT_SET, "a", "1", 1, 0, &forcible) == 0);
  CHECK(set_str(d, MG_DICT_SET, "b", "2", 1, 0, &forcible) == 0);
  CHECK(set_str(d, MG_DICT_SET, "c", "3", 1, 0, &forcible) == 0);
  CHECK(set_str(d, MG_DICT_SET, "gone", "4", 1, 0.02, &forcible) == 0);
  CHECK(mg_dict_free_space(d) < free0);
  CHECK(get(d, "a", &g) == 0); /* a get makes a key the most recently used */
  sleep_ms(40);
  keys_t ks = {0};
  /* The least recently used first; the expired key is not listed. */
  CHECK(mg_dict_keys(d, 0, on_key, &ks) == 3 && ks.n == 3);
  CHECK_STR(ks.keys[0], "b");
  CHECK_STR(ks.keys[1], "c");
  CHECK_STR(ks.keys[2], "a");
  keys_t two = {0};
  CHECK(mg_dict_keys(d, 2, on_key, &two) == 2 && two.n == 2);
  CHECK_STR(two.keys[1], "c");
  /* ttl and expire leave the order as it is; an incr, a failed add, a replace move the key. */
  CHECK(mg_dict_ttl(d, "b", 1, &(double){0}) == 0 && mg_dict_expire(d, "b", 1, 100) == 0);
  CHECK(mg_dict_keys(d, 1, on_key, &(keys_t){0}) == 1);
  keys_t again = {0};
  mg_dict_keys(d, 1, on_key, &again);
  CHECK_STR(again.keys[0], "b");
  CHECK(set_str(d, MG_DICT_ADD, "b", "x", 1, 0, &forcible) == MG_DICT_EXISTS);
  keys_t moved = {0};
  mg_dict_keys(d, 0, on_key, &moved);
  CHECK_STR(moved.keys[0], "c");
  CHECK_STR(moved.last, "b");
  /* flush_all makes everything stale at once and frees the three least recently used; the
   * expired "gone" was the oldest of them. */
  size_t before = mg_dict_free_space(d);
  mg_dict_flush_all(d);
  CHECK(nkeys(d) == 0);
  CHECK(mg_dict_free_space(d) > before && mg_dict_free_space(d) < free0);
  int stale = 0;
  CHECK(mg_dict_get_stale(d, "b", 1, on_value, memset(&g, 0, sizeof g), &stale) == 0 && stale == 1 && got_str(&g, "2"));
  CHECK(mg_dict_flush_expired(d, 0) == 1);
  CHECK(get(d, "a", &g) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_get_stale(d, "b", 1, on_value, &g, &stale) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_free_space(d) == free0);
  /* flush_expired frees at most max, the oldest first. */
  for (int i = 0; i < 5; i++) {
    char k[8];
    snprintf(k, sizeof k, "x%d", i);
    CHECK(set_str(d, MG_DICT_SET, k, "v", 1, 0.01, &forcible) == 0);
  }
  CHECK(set_str(d, MG_DICT_SET, "live", "v", 1, 0, &forcible) == 0);
  sleep_ms(30);
  CHECK(mg_dict_flush_expired(d, 2) == 2);
  CHECK(mg_dict_ttl(d, "x0", 2, &(double){0}) == MG_DICT_NOT_FOUND && mg_dict_ttl(d, "x2", 2, &(double){0}) == 0);
  CHECK(mg_dict_flush_expired(d, 0) == 3 && mg_dict_flush_expired(d, 0) == 0);
  CHECK(nkeys(d) == 1);
  CHECK(mg_dict_delete(d, "live", 4) == 0);
  CHECK(mg_dict_free_space(d) == free0);
}

static void test_update(mg_zone_t *d) {
  double pair[2];
  got_t g;
  upd_t u = {.store = 0};
  /* Not stored: nothing changes. */
  CHECK(mg_dict_update(d, "lim", 3, pair, sizeof pair, 0, on_update, &u) == 0 && u.found == 0);
  CHECK(get(d, "lim", &g) == MG_DICT_NOT_FOUND);
  /* Stored: a new key, then read back and changed in place. */
  u.store = 1;
  CHECK(mg_dict_update(d, "lim", 3, pair, sizeof pair, 0.05, on_update, &u) == 0 && u.found == 0);
  CHECK(mg_dict_update(d, "lim", 3, pair, sizeof pair, 0, on_update, &u) == 0 && u.found == 1);
  CHECK(get(d, "lim", &g) == 0 && g.v.type == MG_DICT_STRING && g.v.len == sizeof pair);
  memcpy(pair, g.str, sizeof pair);
  CHECK(pair[0] == 2 && pair[1] == u.now);
  /* The expiry of the new key holds across updates. */
  sleep_ms(80);
  CHECK(get(d, "lim", &g) == MG_DICT_NOT_FOUND);
  /* A value of another shape is not taken for the state, and is replaced when stored. */
  mg_dict_value_t one = {.type = MG_DICT_NUMBER, .num = 1};
  int forcible;
  CHECK(mg_dict_set(d, MG_DICT_SET, "lim", 3, &one, 0, &forcible) == 0);
  CHECK(mg_dict_update(d, "lim", 3, pair, sizeof pair, 0, on_update, &u) == 0 && u.found == 0);
  CHECK(get(d, "lim", &g) == 0 && g.v.type == MG_DICT_STRING && g.v.len == sizeof pair);
  CHECK(mg_dict_update(d, "", 0, pair, sizeof pair, 0, on_update, &u) == MG_DICT_INVALID);
  CHECK(mg_dict_delete(d, "lim", 3) == 0);
}

static void test_eviction(mg_zone_t *d) {
  static char v[1000];
  memset(v, 'v', sizeof v);
  char key[32];
  int evicted = 0, failed = 0, forcible;
  for (int i = 1; i <= 2000; i++) { /* 2 MB into 256 KiB */
    snprintf(key, sizeof key, "fill%d", i);
    if (set_str(d, MG_DICT_SET, key, v, sizeof v, 0, &forcible) < 0) failed++;
    evicted += forcible;
  }
  CHECK(failed == 0);
  CHECK(evicted > 1000);
  keys_t ks = {0};
  size_t n = mg_dict_keys(d, 0, on_key, &ks);
  CHECK(n > 100 && n < 260);
  CHECK_STR(ks.last, "fill2000"); /* the most recently used is listed last */
  got_t g;
  CHECK(get(d, "fill2000", &g) == 0 && g.v.len == sizeof v);
  CHECK(get(d, "fill1", &g) == MG_DICT_NOT_FOUND); /* the least recently used went first */
  /* A value larger than the whole zone does not fit: the old value of its key is gone, and 30
   * entries were evicted for it in vain, one per round as lua-nginx-module does. */
  static char huge[300 * 1024];
  CHECK(set_str(d, MG_DICT_SET, "fill2000", huge, sizeof huge, 0, &forcible) == MG_DICT_NO_MEMORY && forcible == 1);
  CHECK(get(d, "fill2000", &g) == MG_DICT_NOT_FOUND);
  CHECK(nkeys(d) == n - 1 - 30);
  /* The same in an empty dictionary: nothing to evict, forcible stays 0. */
  mg_dict_flush_all(d);
  mg_dict_flush_expired(d, 0);
  CHECK(set_str(d, MG_DICT_SET, "big", huge, sizeof huge, 0, &forcible) == MG_DICT_NO_MEMORY && forcible == 0);
  double r, init = 0;
  CHECK(mg_dict_incr(d, "after", 5, 1, &init, 0, &r, &forcible) == MG_DICT_CREATED && r == 1 && forcible == 0);
  CHECK(mg_dict_delete(d, "after", 5) == 0);
  /* A zone full of small entries: 30 evictions do not make room for a large value. */
  int i = 0;
  do {
    snprintf(key, sizeof key, "s%06d", ++i);
    CHECK(set_str(d, MG_DICT_SET, key, "v", 1, 0, &forcible) == 0);
  } while (!forcible);
  n = nkeys(d);
  static char large[64 * 1024];
  CHECK(set_str(d, MG_DICT_SET, "large", large, sizeof large, 0, &forcible) == MG_DICT_NO_MEMORY && forcible == 1);
  CHECK(nkeys(d) == n - 30);
  /* incr from init evicts like set. */
  do {
    snprintf(key, sizeof key, "s%06d", ++i);
    CHECK(set_str(d, MG_DICT_SET, key, "v", 1, 0, &forcible) == 0);
  } while (!forcible);
  CHECK(mg_dict_incr(d, "counter", 7, 1, &init, 0, &r, &forcible) == MG_DICT_CREATED && r == 1 && forcible == 1);
  CHECK(mg_dict_keys(d, 0, on_key, &ks) > 0);
  CHECK_STR(ks.last, "counter");
}

static void test_flags(mg_zone_t *d, size_t free0) {
  got_t g;
  int forcible, stale;
  mg_dict_value_t v = {.type = MG_DICT_STRING, .str = "v", .len = 1, .flags = 7};
  CHECK(mg_dict_set(d, MG_DICT_SET, "f", 1, &v, 0, &forcible) == 0);
  CHECK(get(d, "f", &g) == 0 && got_str(&g, "v") && g.v.flags == 7);
  CHECK(mg_dict_get_stale(d, "f", 1, on_value, &g, &stale) == 0 && g.v.flags == 7 && stale == 0);
  /* A store sets them, to 0 when not given; in place (same size) or not. */
  v.flags = 0xffffffffu;
  CHECK(mg_dict_set(d, MG_DICT_REPLACE, "f", 1, &v, 0, &forcible) == 0);
  CHECK(get(d, "f", &g) == 0 && g.v.flags == 0xffffffffu);
  mg_dict_value_t n = {.type = MG_DICT_NUMBER, .num = 1};
  CHECK(mg_dict_set(d, MG_DICT_SET, "f", 1, &n, 0, &forcible) == 0);
  CHECK(get(d, "f", &g) == 0 && g.v.type == MG_DICT_NUMBER && g.v.flags == 0);
  /* An increment keeps them; a number made from init has none. */
  n.flags = 3;
  CHECK(mg_dict_set(d, MG_DICT_ADD, "n", 1, &n, 0, &forcible) == 0);
  double r, init = 5;
  CHECK(mg_dict_incr(d, "n", 1, 1, NULL, 0, &r, &forcible) == 0 && r == 2);
  CHECK(get(d, "n", &g) == 0 && g.v.num == 2 && g.v.flags == 3);
  CHECK(mg_dict_incr(d, "m", 1, 1, &init, 0, &r, &forcible) == MG_DICT_CREATED);
  CHECK(get(d, "m", &g) == 0 && g.v.num == 6 && g.v.flags == 0);
  empty(d, free0);
}

/* Fills d with 200-byte values under keys of one length until the first eviction; returns the
 * number of the last key. */
static int fill_equal(mg_zone_t *d) {
  static char v[200];
  char key[16];
  int i = 0, forcible;
  do {
    snprintf(key, sizeof key, "k%05d", ++i);
    CHECK(set_str(d, MG_DICT_SET, key, v, sizeof v, 0, &forcible) == 0);
  } while (!forcible && i < 100000);
  return i;
}

static void test_safe_modes(mg_zone_t *d, size_t free0) {
  static char v[200], bigger[3000];
  char last[16], prev[16];
  int forcible;
  got_t g;
  int i = fill_equal(d);
  size_t n = nkeys(d);
  snprintf(last, sizeof last, "k%05d", i);
  snprintf(prev, sizeof prev, "k%05d", i - 1);
  /* The zone is full: the safe modes refuse a new key rather than evict. */
  CHECK(set_str(d, MG_DICT_SAFE_SET, "new", v, sizeof v, 0, &forcible) == MG_DICT_NO_MEMORY && forcible == 0);
  CHECK(set_str(d, MG_DICT_SAFE_ADD, "new", v, sizeof v, 0, &forcible) == MG_DICT_NO_MEMORY && forcible == 0);
  CHECK(get(d, "new", &g) == MG_DICT_NOT_FOUND && nkeys(d) == n);
  CHECK(set_str(d, MG_DICT_SAFE_ADD, last, v, sizeof v, 0, &forcible) == MG_DICT_EXISTS);
  /* A value of the same size goes in place; a larger one frees the old and then fails. */
  CHECK(set_str(d, MG_DICT_SAFE_SET, last, v, sizeof v, 0, &forcible) == 0 && forcible == 0);
  CHECK(set_str(d, MG_DICT_SAFE_SET, last, bigger, sizeof bigger, 0, &forcible) == MG_DICT_NO_MEMORY);
  CHECK(get(d, last, &g) == MG_DICT_NOT_FOUND && nkeys(d) == n - 1);
  /* What that freed serves the next one; set then evicts where safe_set refused. */
  CHECK(set_str(d, MG_DICT_SAFE_ADD, "new", v, sizeof v, 0, &forcible) == 0 && forcible == 0);
  CHECK(set_str(d, MG_DICT_SAFE_SET, "new2", v, sizeof v, 0, &forcible) == MG_DICT_NO_MEMORY);
  CHECK(set_str(d, MG_DICT_SET, "new2", v, sizeof v, 0, &forcible) == 0 && forcible == 1);
  CHECK(get(d, prev, &g) == 0);
  mg_dict_value_t nil = {.type = MG_DICT_NIL};
  CHECK(mg_dict_set(d, MG_DICT_SAFE_SET, prev, strlen(prev), &nil, 0, &forcible) == 0);
  CHECK(get(d, prev, &g) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_set(d, MG_DICT_SAFE_ADD, prev, strlen(prev), &nil, 0, &forcible) == MG_DICT_INVALID);
  empty(d, free0);
}

static void test_stale_and_lazy_freeing(mg_zone_t *d, size_t free0) {
  got_t g;
  int forcible, stale;
  double left, r, init = 10;
  mg_dict_value_t v = {.type = MG_DICT_STRING, .str = "old", .len = 3, .flags = 5};
  CHECK(mg_dict_set(d, MG_DICT_SET, "a", 1, &v, 0.01, &forcible) == 0);
  for (int i = 0; i < 4; i++) {
    char k[4] = {'x', (char)('0' + i), 0};
    CHECK(set_num(d, k, i, 0.01) == 0);
  }
  CHECK(set_num(d, "keep", 1, 0) == 0);
  sleep_ms(30);
  /* An expired entry is not found, but get_stale gives it, flags and all, with stale set. */
  CHECK(mg_dict_get_stale(d, "a", 1, on_value, memset(&g, 0, sizeof g), &stale) == 0 && stale == 1);
  CHECK(got_str(&g, "old") && g.v.flags == 5);
  CHECK(mg_dict_ttl(d, "a", 1, &left) == 0 && left < 0);
  /* expire brings it back; the get frees the two oldest expired entries on its way (x0, x1). */
  CHECK(mg_dict_expire(d, "a", 1, 10) == 0);
  CHECK(get(d, "a", &g) == 0 && got_str(&g, "old"));
  CHECK(mg_dict_get_stale(d, "a", 1, on_value, &g, &stale) == 0 && stale == 0);
  CHECK(mg_dict_ttl(d, "x0", 2, &left) == MG_DICT_NOT_FOUND && mg_dict_ttl(d, "x1", 2, &left) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_ttl(d, "x2", 2, &left) == 0 && left < 0);
  /* A store too frees two at most (x2, x3); the next stops at "keep", which is live. */
  CHECK(set_num(d, "y", 1, 0) == 0);
  CHECK(mg_dict_ttl(d, "x2", 2, &left) == MG_DICT_NOT_FOUND && mg_dict_ttl(d, "x3", 2, &left) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_incr(d, "z", 1, 1, &init, 0, &r, &forcible) == MG_DICT_CREATED);
  CHECK(nkeys(d) == 4); /* keep a y z */
  /* add and incr take the place of an expired key; replace does not see it. */
  CHECK(set_num(d, "e", 1, 0.01) == 0);
  CHECK(set_num(d, "f", 1, 0.01) == 0);
  sleep_ms(30);
  CHECK(set_str(d, MG_DICT_REPLACE, "e", "r", 1, 0, &forcible) == MG_DICT_NOT_FOUND);
  CHECK(set_str(d, MG_DICT_ADD, "e", "new", 3, 0, &forcible) == 0);
  CHECK(get(d, "e", &g) == 0 && got_str(&g, "new"));
  CHECK(mg_dict_incr(d, "f", 1, 1, NULL, 0, &r, &forcible) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_incr(d, "f", 1, 1, &init, 0, &r, &forcible) == MG_DICT_CREATED && r == 11);
  CHECK(mg_dict_ttl(d, "f", 1, &left) == 0 && left == 0);
  empty(d, free0);
}

typedef struct {
  mg_dict_value_t v;
  char str[64];
} item_got_t;

static void on_item(void *ud, const mg_dict_value_t *v) {
  item_got_t *g = ud;
  g->v = *v;
  if (v->type == MG_DICT_STRING && v->len < sizeof g->str) memcpy(g->str, v->str, v->len), g->str[v->len] = 0;
}

static void test_lists(mg_zone_t *d, size_t free0) {
  size_t len;
  item_got_t it;
  got_t g;
  int forcible;
  mg_dict_value_t a = {.type = MG_DICT_STRING, .str = "a", .len = 1}, two = {.type = MG_DICT_NUMBER, .num = 2};
  mg_dict_value_t yes = {.type = MG_DICT_BOOLEAN, .boolean = 1};
  CHECK(mg_dict_llen(d, "l", 1, &len) == 0 && len == 0);
  CHECK(mg_dict_pop(d, 1, "l", 1, on_item, &it) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_push(d, 1, "l", 1, &a, &len) == 0 && len == 1);   /* a */
  CHECK(mg_dict_push(d, 1, "l", 1, &two, &len) == 0 && len == 2); /* 2 a */
  CHECK(mg_dict_push(d, 0, "l", 1, &two, &len) == 0 && len == 3); /* 2 a 2 */
  CHECK(mg_dict_push(d, 0, "l", 1, &a, &len) == 0 && len == 4);   /* 2 a 2 a */
  CHECK(mg_dict_push(d, 0, "l", 1, &yes, &len) == MG_DICT_INVALID);
  CHECK(mg_dict_llen(d, "l", 1, &len) == 0 && len == 4);
  CHECK(get(d, "l", &g) == MG_DICT_IS_LIST);
  CHECK(mg_dict_incr(d, "l", 1, 1, NULL, 0, &(double){0}, &forcible) == MG_DICT_NOT_A_NUMBER);
  CHECK(mg_dict_pop(d, 1, "l", 1, on_item, &it) == 0 && it.v.type == MG_DICT_NUMBER && it.v.num == 2);
  CHECK(mg_dict_pop(d, 0, "l", 1, on_item, &it) == 0 && it.v.type == MG_DICT_STRING && strcmp(it.str, "a") == 0);
  CHECK(mg_dict_pop(d, 0, "l", 1, on_item, &it) == 0 && it.v.num == 2);
  CHECK(mg_dict_llen(d, "l", 1, &len) == 0 && len == 1);
  /* The last item takes the key with it. */
  CHECK(mg_dict_pop(d, 1, "l", 1, on_item, &it) == 0 && strcmp(it.str, "a") == 0);
  CHECK(nkeys(d) == 0 && mg_dict_free_space(d) == free0);
  /* A list operation on another value, and the other way round. */
  CHECK(set_str(d, MG_DICT_SET, "s", "x", 1, 0, &forcible) == 0);
  CHECK(mg_dict_push(d, 1, "s", 1, &a, &len) == MG_DICT_NOT_A_LIST);
  CHECK(mg_dict_pop(d, 1, "s", 1, on_item, &it) == MG_DICT_NOT_A_LIST);
  CHECK(mg_dict_llen(d, "s", 1, &len) == MG_DICT_NOT_A_LIST);
  CHECK(mg_dict_delete(d, "s", 1) == 0);
  /* An expired list starts over; a set over a list frees its items. */
  for (int i = 0; i < 50; i++) CHECK(mg_dict_push(d, 0, "l", 1, &a, &len) == 0);
  CHECK(mg_dict_expire(d, "l", 1, 0.01) == 0);
  sleep_ms(30);
  CHECK(mg_dict_llen(d, "l", 1, &len) == 0 && len == 0);
  CHECK(mg_dict_pop(d, 1, "l", 1, on_item, &it) == MG_DICT_NOT_FOUND);
  CHECK(mg_dict_push(d, 0, "l", 1, &two, &len) == 0 && len == 1);
  for (int i = 0; i < 50; i++) CHECK(mg_dict_push(d, 0, "l", 1, &a, &len) == 0);
  CHECK(set_str(d, MG_DICT_SET, "l", "x", 1, 0, &forcible) == 0);
  CHECK(get(d, "l", &g) == 0 && got_str(&g, "x"));
  CHECK(mg_dict_delete(d, "l", 1) == 0 && mg_dict_free_space(d) == free0);
  /* A push never evicts; a list evicted by a set takes its items with it. */
  static char chunk[8000];
  mg_dict_value_t big = {.type = MG_DICT_STRING, .str = chunk, .len = sizeof chunk};
  int pushed = 0, rc;
  while ((rc = mg_dict_push(d, 0, "big", 3, &big, &len)) == 0) pushed++;
  CHECK(rc == MG_DICT_NO_MEMORY && len != SIZE_MAX && pushed > 20 && nkeys(d) == 1);
  CHECK(set_str(d, MG_DICT_SET, "other", chunk, sizeof chunk, 0, &forcible) == 0 && forcible == 1);
  CHECK(nkeys(d) == 1 && mg_dict_llen(d, "big", 3, &len) == 0 && len == 0);
  CHECK(mg_dict_delete(d, "other", 5) == 0 && mg_dict_free_space(d) == free0);
}

static char model[KEYS][8192];
static int model_len[KEYS]; /* -1: absent */

static unsigned rnd_state = 12345;
static unsigned rnd(void) {
  rnd_state = rnd_state * 1103515245u + 12345u;
  return (rnd_state >> 8) & 0xffffff;
}

static void test_against_model(mg_zone_t *d, size_t free0) {
  for (int i = 0; i < KEYS; i++) model_len[i] = -1;
  int wrong_values = 0, refused = 0, evictions = 0;
  char key[32], val[8192];
  static got_t g;
  for (int r = 0; r < ROUNDS; r++) {
    int i = (int)(rnd() % KEYS);
    snprintf(key, sizeof key, "key-%d", i);
    int op = (int)(rnd() % 10);
    if (op < 5) {
      /* Mostly small values, sometimes large ones that force eviction. */
      size_t vl = rnd() % 8 == 0 ? 2000 + rnd() % 6000 : rnd() % 300;
      for (size_t k = 0; k < vl; k++) val[k] = (char)('a' + (r + k) % 26);
      int forcible = 0, rc = set_str(d, MG_DICT_SET, key, val, vl, 0, &forcible);
      CHECK(rc == 0 || rc == MG_DICT_NO_MEMORY);
      if (forcible) {
        evictions++;
        /* Whatever was evicted is gone from the model too: resync it from the dictionary. */
        for (int m = 0; m < KEYS; m++) {
          char mk[32];
          snprintf(mk, sizeof mk, "key-%d", m);
          if (model_len[m] >= 0 && get(d, mk, &g) == MG_DICT_NOT_FOUND) model_len[m] = -1;
        }
      }
      if (rc < 0) {
        /* Not even 30 evictions made room: the key's old value is gone too. */
        refused++;
        model_len[i] = -1;
        continue;
      }
      memcpy(model[i], val, vl);
      model_len[i] = (int)vl;
    } else if (op < 7) {
      int rc = mg_dict_delete(d, key, strlen(key));
      if ((rc == 0) != (model_len[i] >= 0)) wrong_values++;
      model_len[i] = -1;
    } else {
      int rc = get(d, key, &g);
      if ((rc == 0) != (model_len[i] >= 0)) wrong_values++;
      else if (rc == 0 && (!(g.v.type == MG_DICT_STRING) || (int)g.v.len != model_len[i] || memcmp(g.str, model[i], g.v.len) != 0))
        wrong_values++;
    }
  }
  CHECK(wrong_values == 0);
  CHECK(refused < ROUNDS / 100); /* rare: 30 evictions make room for almost every value */
  CHECK(evictions > 0);          /* the test did fill the zone */
  size_t live = 0;
  for (int i = 0; i < KEYS; i++) live += model_len[i] >= 0;
  CHECK(mg_dict_keys(d, 0, on_key, &(keys_t){0}) == live);
  /* Emptied key by key, the dictionary has all its space back. */
  for (int i = 0; i < KEYS; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    mg_dict_delete(d, key, strlen(key));
  }
  CHECK(mg_dict_free_space(d) == free0);
}

int main(void) {
  char err[128];
  CHECK(mg_dict_open("small", 32 * 1024, err, sizeof err) == NULL);
  mg_zone_t *d = mg_dict_open("unit", SIZE, err, sizeof err);
  CHECK(d != NULL);
  if (!d) CHECK_DONE();
  CHECK(mg_dict_capacity(d) == SIZE);
  size_t free0 = mg_dict_free_space(d);
  CHECK(free0 > SIZE - 8 * 1024 && free0 < SIZE);
  test_types_and_modes(d);
  test_incr(d);
  test_ttl_and_expire(d);
  test_keys_and_flush(d, free0);
  test_update(d);
  test_eviction(d);
  empty(d, free0);
  test_flags(d, free0);
  test_safe_modes(d, free0);
  test_stale_and_lazy_freeing(d, free0);
  test_lists(d, free0);
  test_against_model(d, free0);
  CHECK_STR(mg_dict_strerror(MG_DICT_NOT_FOUND), "not found");
  CHECK_STR(mg_dict_strerror(MG_DICT_EXISTS), "exists");
  CHECK_STR(mg_dict_strerror(MG_DICT_NO_MEMORY), "no memory");
  CHECK_STR(mg_dict_strerror(MG_DICT_NOT_A_NUMBER), "not a number");
  CHECK_STR(mg_dict_strerror(MG_DICT_NOT_A_LIST), "value not a list");
  CHECK_STR(mg_dict_strerror(MG_DICT_IS_LIST), "value is a list");
  /* The same name and size gives the same dictionary, with its contents (how a reload keeps
   * them). */
  CHECK(set_num(d, "kept", 7, 0) == 0);
  mg_zone_t *again = mg_dict_open("unit", SIZE, err, sizeof err);
  CHECK(again == d);
  got_t g;
  CHECK(get(again, "kept", &g) == 0 && g.v.num == 7);
  mg_zone_unref(again);
  mg_zone_unref(d);
  CHECK_DONE();
}
