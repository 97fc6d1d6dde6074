/* Unit test of the shared-memory zone (src/shm/zone.c, included for its static functions):
 * seeded random allocations and frees against a model, with the heap's structure checked after
 * every operation: the blocks tile the heap exactly, free neighbours are always coalesced, the
 * free list holds exactly the free blocks, and no payload is overwritten by another. Then the
 * robust lock: a child process that dies holding the lock in the middle of a change leaves the
 * zone emptied for the next locker, one that dies holding it outside a change leaves it as it
 * was; and zones are kept by name and size, counted, and unmapped with their last reference. */
#include "../../src/shm/zone.c"

#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define SIZE (128 * 1024)
#define SLOTS 400
#define ROUNDS 20000
#define RESERVE 1000

static uint64_t slot_off[SLOTS]; /* 0: not allocated */
static size_t slot_len[SLOTS];

static unsigned rnd_state = 12345;
static unsigned rnd(void) {
  rnd_state = rnd_state * 1103515245u + 12345u;
  return (rnd_state >> 8) & 0xffffff;
}

/* Walks the heap and the free list; returns 0 when the heap is consistent. */
static int heap_check(zone_hdr_t *z) {
  uint64_t off = z->heap, prev_size = 0, nfree = 0;
  int prev_free = 0;
  while (off < z->heap_end) {
    block_t *b = blk(z, off);
    uint64_t size = bsize(b);
    if (size < sizeof(block_t) || off + size > z->heap_end) return fprintf(stderr, "bad size at %lu\n", (unsigned long)off), -1;
    if (b->prev_size != prev_size) return fprintf(stderr, "bad prev_size at %lu\n", (unsigned long)off), -1;
    int used = (int)(b->size & 1);
    if (!used && prev_free) return fprintf(stderr, "uncoalesced free blocks at %lu\n", (unsigned long)off), -1;
    if (!used) nfree++;
    prev_free = !used;
    prev_size = size;
    off += size;
  }
  if (off != z->heap_end) return fprintf(stderr, "blocks do not tile the heap\n"), -1;
  uint64_t listed = 0;
  for (uint64_t f = z->free_head; f; f = links(z, f)->next) {
    if (blk(z, f)->size & 1) return fprintf(stderr, "a used block on the free list\n"), -1;
    if (++listed > nfree) break;
  }
  if (listed != nfree) return fprintf(stderr, "free list holds %lu of %lu free blocks\n", (unsigned long)listed, (unsigned long)nfree), -1;
  return 0;
}

static void fill(char *p, size_t n, int slot) {
  for (size_t k = 0; k < n; k++) p[k] = (char)(slot * 31 + k);
}

static int intact(const char *p, size_t n, int slot) {
  for (size_t k = 0; k < n; k++)
    if (p[k] != (char)(slot * 31 + k)) return 0;
  return 1;
}

/* The heap as one free block again. */
static int heap_empty(zone_hdr_t *z) { return z->free_head == z->heap && bsize(blk(z, z->heap)) == z->heap_end - z->heap; }

static int reserved_zero(mg_zone_t *zn) {
  size_t len;
  const unsigned char *r = mg_zone_reserved(zn, &len);
  for (size_t i = 0; i < len; i++)
    if (r[i]) return 0;
  return len == RESERVE;
}

/* Forks a child that takes the lock, marks a change when `changing`, and dies holding it. */
static void die_holding_lock(mg_zone_t *zn, int changing) {
  pid_t pid = fork();
  if (pid == 0) {
    mg_zone_lock(zn);
    if (changing) mg_zone_changing(zn);
    _exit(0);
  }
  int status;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status));
}

int main(void) {
  char err[128];
  mg_zone_t *zn = mg_zone_get("unit", SIZE, RESERVE, err, sizeof err);
  CHECK(zn != NULL);
  if (!zn) CHECK_DONE();
  zone_hdr_t *z = HDR(zn);
  CHECK(mg_zone_size(zn) == SIZE);
  CHECK(reserved_zero(zn));
  CHECK(heap_empty(z));
  size_t free0 = mg_zone_free_bytes(zn);
  CHECK(free0 > SIZE - 2 * 1024 && free0 < SIZE);

  /* Random allocations and frees: the heap stays consistent and every payload intact. */
  int consistent = 1, corrupted = 0, refused = 0, misaligned = 0;
  for (int r = 0; r < ROUNDS && consistent; r++) {
    int i = (int)(rnd() % SLOTS);
    if (slot_off[i]) {
      if (!intact(mg_zone_base(zn) + slot_off[i], slot_len[i], i)) corrupted++;
      mg_zone_free(zn, slot_off[i]);
      slot_off[i] = 0;
    } else {
      size_t n = rnd() % 8 == 0 ? 2000 + rnd() % 6000 : rnd() % 300;
      uint64_t off = mg_zone_alloc(zn, n);
      if (!off) {
        refused++;
      } else {
        if (off % 16) misaligned++;
        fill(mg_zone_base(zn) + off, n, i);
        slot_off[i] = off, slot_len[i] = n;
      }
    }
    if (heap_check(z) < 0) consistent = 0, fprintf(stderr, "heap inconsistent after round %d\n", r);
  }
  CHECK(consistent);
  CHECK(corrupted == 0);
  CHECK(misaligned == 0);
  CHECK(refused > 0); /* the test did fill the zone */
  for (int i = 0; i < SLOTS; i++)
    if (slot_off[i]) mg_zone_free(zn, slot_off[i]), slot_off[i] = 0;
  CHECK(heap_check(z) == 0);
  CHECK(heap_empty(z));
  CHECK(mg_zone_free_bytes(zn) == free0);
  /* More than the heap holds is refused, and the heap survives it. */
  CHECK(mg_zone_alloc(zn, SIZE) == 0);
  CHECK(heap_check(z) == 0 && heap_empty(z));

  /* A holder that dies in the middle of a change: the next locker empties the zone. */
  CHECK(mg_zone_alloc(zn, 100) != 0);
  memset(mg_zone_reserved(zn, &(size_t){0}), 0xab, RESERVE);
  die_holding_lock(zn, 1);
  mg_zone_lock(zn);
  CHECK(reserved_zero(zn));
  CHECK(heap_empty(z));
  CHECK(z->dirty == 0);
  mg_zone_unlock(zn);
  /* A holder that dies outside a change: the next locker finds the zone as it was. */
  uint64_t kept = mg_zone_alloc(zn, 100);
  memset(mg_zone_reserved(zn, &(size_t){0}), 0xab, RESERVE);
  die_holding_lock(zn, 0);
  mg_zone_lock(zn);
  CHECK(!reserved_zero(zn));
  CHECK(kept != 0 && (blk(z, kept - sizeof(block_t))->size & 1));
  mg_zone_unlock(zn);
  /* And the lock works as before for the next ones. */
  mg_zone_lock(zn);
  mg_zone_unlock(zn);
  mg_zone_clear(zn);
  CHECK(reserved_zero(zn) && heap_empty(z));

  /* The same name and size gives the same zone (how a reload keeps contents); another size
   * another zone. */
  mg_zone_t *again = mg_zone_get("unit", SIZE, RESERVE, err, sizeof err);
  CHECK(again == zn && zn->refs == 2);
  mg_zone_t *other = mg_zone_get("unit", 2 * SIZE, RESERVE, err, sizeof err);
  CHECK(other != NULL && other != zn);
  mg_zone_ref(other);
  mg_zone_unref(other);
  CHECK(zones == other);
  mg_zone_unref(other);
  mg_zone_unref(again);
  mg_zone_unref(zn);
  CHECK(zones == NULL);
  /* Too small for a heap: refused with a message. */
  CHECK(mg_zone_get("tiny", 1024, 4096, err, sizeof err) == NULL);
  CHECK(strstr(err, "too few") != NULL);
  CHECK_DONE();
}
