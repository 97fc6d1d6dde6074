/* Unit test of the shared-dictionary zone (src/shdict.c, included for its static functions):
 * seeded random sets, deletes, expiries and lookups against a model, with the zone's structure
 * checked after every operation: the blocks tile the heap exactly, free neighbours are always
 * coalesced, the free list holds exactly the free blocks, every used block is one entry reachable
 * from its hash bucket and from the LRU list. A full zone evicts and never refuses a value that
 * fits. */
#include "../../src/shm/shdict.c"

#include "check.h"

#define KEYS 300
#define ROUNDS 30000

static char model[KEYS][8192];
static int model_len[KEYS]; /* -1: absent */

static unsigned rnd_state = 12345;
static unsigned rnd(void) {
  rnd_state = rnd_state * 1103515245u + 12345u;
  return (rnd_state >> 8) & 0xffffff;
}

/* Walks the heap and the lists; returns 0 when the zone is consistent. */
static int zone_check(zone_hdr_t *z) {
  uint64_t off = z->heap, prev_size = 0, nfree = 0, nused = 0;
  int prev_free = 0;
  while (off < z->heap_end) {
    block_t *b = blk(z, off);
    uint64_t size = bsize(b);
    if (size < sizeof(block_t) || off + size > z->heap_end) return fprintf(stderr, "bad size at %lu\n", (unsigned long)off), -1;
    if (b->prev_size != prev_size) return fprintf(stderr, "bad prev_size at %lu\n", (unsigned long)off), -1;
    int used = (int)(b->size & 1);
    if (!used && prev_free) return fprintf(stderr, "uncoalesced free blocks at %lu\n", (unsigned long)off), -1;
    if (used) nused++;
    else nfree++;
    prev_free = !used;
    prev_size = size;
    off += size;
  }
  if (off != z->heap_end) return fprintf(stderr, "blocks do not tile the heap\n"), -1;
  uint64_t listed = 0;
  for (uint64_t f = z->free_head; f; f = ((free_links_t *)AT(z, f + sizeof(block_t)))->next) {
    if (blk(z, f)->size & 1) return fprintf(stderr, "a used block on the free list\n"), -1;
    if (++listed > nfree) break;
  }
  if (listed != nfree) return fprintf(stderr, "free list holds %lu of %lu free blocks\n", (unsigned long)listed, (unsigned long)nfree), -1;
  if (nused != z->nkeys) return fprintf(stderr, "%lu used blocks for %lu keys\n", (unsigned long)nused, (unsigned long)z->nkeys), -1;
  uint64_t in_lru = 0;
  for (uint64_t e = z->lru_head; e && in_lru <= nused; e = ((entry_t *)AT(z, e))->lnext) in_lru++;
  if (in_lru != nused) return fprintf(stderr, "LRU list holds %lu of %lu entries\n", (unsigned long)in_lru, (unsigned long)nused), -1;
  uint64_t in_buckets = 0;
  for (uint64_t i = 0; i < z->nbuckets; i++)
    for (uint64_t e = ((uint64_t *)AT(z, sizeof *z))[i]; e && in_buckets <= nused; e = ((entry_t *)AT(z, e))->hnext)
      in_buckets++;
  if (in_buckets != nused) return fprintf(stderr, "buckets hold %lu of %lu entries\n", (unsigned long)in_buckets, (unsigned long)nused), -1;
  return 0;
}

/* d:set without Lua: returns 0, or -1 when it did not fit even after evicting everything. */
static int set(zone_hdr_t *z, const char *k, const char *v, size_t vl, double ttl, int *forcible) {
  size_t kl = strlen(k);
  uint32_t h = hash_key(k, kl);
  double now = now_s();
  entry_t *old = entry_find(z, k, kl, h, now);
  if (old) entry_delete(z, old);
  entry_t *e = entry_alloc(z, kl, vl, forcible);
  if (!e) return -1;
  e->hash = h, e->klen = (uint32_t)kl, e->vlen = (uint32_t)vl, e->type = T_STRING;
  e->expires = ttl > 0 ? now + ttl : 0;
  memcpy(e->data, k, kl);
  memcpy(e->data + kl, v, vl);
  entry_link(z, e);
  return 0;
}

int main(void) {
  char err[128];
  mg_zone_t *zn = zone_get("unit", 256 * 1024, err, sizeof err);
  CHECK(zn != NULL);
  if (!zn) CHECK_DONE();
  zone_hdr_t *z = zn->h;
  for (int i = 0; i < KEYS; i++) model_len[i] = -1;
  int consistent = 1, wrong_values = 0, refused = 0, evictions = 0;
  char key[32], val[8192];
  for (int r = 0; r < ROUNDS && consistent; r++) {
    int i = (int)(rnd() % KEYS);
    snprintf(key, sizeof key, "key-%d", i);
    int op = (int)(rnd() % 10);
    if (op < 5) {
      /* Mostly small values, sometimes large ones that force eviction. */
      size_t vl = rnd() % 8 == 0 ? 2000 + rnd() % 6000 : rnd() % 300;
      for (size_t k = 0; k < vl; k++) val[k] = (char)('a' + (r + k) % 26);
      int forcible = 0;
      if (set(z, key, val, vl, 0, &forcible) < 0) refused++;
      if (forcible) {
        evictions++;
        /* Whatever was evicted is gone from the model too: resync it from the zone. */
        for (int m = 0; m < KEYS; m++) {
          char mk[32];
          snprintf(mk, sizeof mk, "key-%d", m);
          if (!entry_find(z, mk, strlen(mk), hash_key(mk, strlen(mk)), now_s())) model_len[m] = -1;
        }
      }
      memcpy(model[i], val, vl);
      model_len[i] = (int)vl;
    } else if (op < 7) {
      entry_t *e = entry_find(z, key, strlen(key), hash_key(key, strlen(key)), now_s());
      if (e) entry_delete(z, e);
      model_len[i] = -1;
    } else {
      entry_t *e = entry_find(z, key, strlen(key), hash_key(key, strlen(key)), now_s());
      if ((e != NULL) != (model_len[i] >= 0)) wrong_values++;
      else if (e && ((int)e->vlen != model_len[i] || memcmp(e->data + e->klen, model[i], e->vlen) != 0)) wrong_values++;
    }
    if (zone_check(z) < 0) consistent = 0, fprintf(stderr, "zone inconsistent after round %d\n", r);
  }
  CHECK(consistent);
  CHECK(wrong_values == 0);
  CHECK(refused == 0);       /* a value that fits is never refused: something is evicted */
  CHECK(evictions > 0);      /* the test did fill the zone */
  /* Expiry: an entry past its ttl is not found (and its block is freed). */
  int forcible = 0;
  CHECK(set(z, "short", "x", 1, 0.05, &forcible) == 0);
  CHECK(entry_find(z, "short", 5, hash_key("short", 5), now_s()) != NULL);
  struct timespec ts = {0, 80 * 1000 * 1000};
  nanosleep(&ts, NULL);
  CHECK(entry_find(z, "short", 5, hash_key("short", 5), now_s()) == NULL);
  /* Emptied, the heap is one free block again. */
  while (z->lru_head) entry_delete(z, AT(z, z->lru_head));
  CHECK(zone_check(z) == 0);
  CHECK(z->free_head == z->heap && bsize(blk(z, z->heap)) == z->heap_end - z->heap);
  /* A value larger than the whole zone is refused, and the zone survives it. */
  static char huge[300 * 1024];
  CHECK(set(z, "huge", huge, sizeof huge, 0, &forcible) < 0);
  CHECK(zone_check(z) == 0);
  /* The same name and size gives the same zone (how a reload keeps contents). */
  mg_zone_t *again = zone_get("unit", 256 * 1024, err, sizeof err);
  CHECK(again == zn && zn->refs == 2);
  zone_unref(again);
  zone_unref(zn);
  CHECK(zones == NULL);
  CHECK_DONE();
}
