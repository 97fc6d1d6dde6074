/* zone: see zone.h.
 *
 * Layout: the header (zone_hdr_t), the owner's reserved bytes, then the heap of blocks from a
 * 16-byte boundary to the last 16-byte boundary of the zone. A block is a 16-byte header (its
 * size with the low bit set when in use, and the size of the block before it, for coalescing)
 * and its payload; a free block keeps its free-list links in its payload. */
#include "zone.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "buf.h"
#include "log.h"

#define MAGIC 0x6d677364u

typedef struct {
  uint32_t magic;
  uint32_t dirty; /* a structural change is under way (see mg_zone_lock) */
  pthread_mutex_t lock;
  uint64_t size, heap, heap_end;
  uint64_t free_head;
  uint64_t reserve; /* the owner's bytes, right after this header */
} zone_hdr_t;

typedef struct {
  uint64_t size; /* bytes of the block, header included; low bit: in use */
  uint64_t prev_size;
} block_t;

typedef struct {
  uint64_t next, prev;
} free_links_t;

static mg_zone_t *zones; /* this process's zones, by name */

#define AT(z, off) ((void *)((char *)(z) + (off)))
#define HDR(zn) ((zone_hdr_t *)(zn)->base)

/* ---- the allocator ------------------------------------------------------------------------ */

static block_t *blk(zone_hdr_t *z, uint64_t off) { return AT(z, off); }
static uint64_t bsize(const block_t *b) { return b->size & ~(uint64_t)1; }
static free_links_t *links(zone_hdr_t *z, uint64_t off) { return AT(z, off + sizeof(block_t)); }

static void free_unlink(zone_hdr_t *z, uint64_t off) {
  free_links_t *l = links(z, off);
  if (l->prev) links(z, l->prev)->next = l->next;
  else z->free_head = l->next;
  if (l->next) links(z, l->next)->prev = l->prev;
}

static void free_push(zone_hdr_t *z, uint64_t off) {
  free_links_t *l = links(z, off);
  l->prev = 0;
  l->next = z->free_head;
  if (z->free_head) links(z, z->free_head)->prev = off;
  z->free_head = off;
}

static void zone_format(zone_hdr_t *z) {
  z->free_head = 0;
  memset(AT(z, sizeof *z), 0, z->reserve);
  block_t *b = blk(z, z->heap);
  b->size = z->heap_end - z->heap;
  b->prev_size = 0;
  free_push(z, z->heap);
}

uint64_t mg_zone_alloc(mg_zone_t *zn, size_t n) {
  zone_hdr_t *z = HDR(zn);
  uint64_t need = (sizeof(block_t) + n + 15) & ~(uint64_t)15;
  if (need < sizeof(block_t) + sizeof(free_links_t)) need = sizeof(block_t) + sizeof(free_links_t);
  for (uint64_t off = z->free_head; off; off = links(z, off)->next) {
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

void mg_zone_free(mg_zone_t *zn, uint64_t payload) {
  zone_hdr_t *z = HDR(zn);
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

size_t mg_zone_free_bytes(mg_zone_t *zn) {
  zone_hdr_t *z = HDR(zn);
  uint64_t total = 0;
  for (uint64_t off = z->free_head; off; off = links(z, off)->next) total += bsize(blk(z, off)) - sizeof(block_t);
  return (size_t)total;
}

void mg_zone_clear(mg_zone_t *zn) { zone_format(HDR(zn)); }

/* ---- locking ---------------------------------------------------------------------------------- */

void mg_zone_lock(mg_zone_t *zn) {
  zone_hdr_t *z = HDR(zn);
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

void mg_zone_changing(mg_zone_t *zn) { HDR(zn)->dirty = 1; }

void mg_zone_unlock(mg_zone_t *zn) {
  HDR(zn)->dirty = 0;
  pthread_mutex_unlock(&HDR(zn)->lock);
}

/* ---- zones in this process ---------------------------------------------------------------------- */

mg_zone_t *mg_zone_get(const char *name, size_t size, size_t reserve, char *err, size_t errlen) {
  for (mg_zone_t *zn = zones; zn; zn = zn->next)
    if (strcmp(zn->name, name) == 0 && zn->size == size && zn->reserve == reserve) {
      zn->refs++;
      return zn;
    }
  uint64_t heap = (sizeof(zone_hdr_t) + reserve + 15) & ~(uint64_t)15;
  if (heap + 64 > (size & ~(size_t)15)) {
    snprintf(err, errlen, "%zu bytes are too few for a shared memory zone", size);
    return NULL;
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %zu bytes of shared memory: %s", size, strerror(errno));
    return NULL;
  }
  zone_hdr_t *z = p;
  z->magic = MAGIC;
  z->size = size;
  z->reserve = reserve;
  z->heap = heap;
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
  zn->base = p, zn->size = size, zn->reserved = AT(z, sizeof *z), zn->reserve = reserve, zn->refs = 1;
  zn->next = zones;
  zones = zn;
  return zn;
}

void mg_zone_ref(mg_zone_t *zn) { zn->refs++; }

void mg_zone_unref(mg_zone_t *zn) {
  if (--zn->refs > 0) return;
  for (mg_zone_t **pp = &zones; *pp; pp = &(*pp)->next)
    if (*pp == zn) {
      *pp = zn->next;
      break;
    }
  munmap(zn->base, zn->size);
  free(zn);
}
