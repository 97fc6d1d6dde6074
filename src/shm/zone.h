/* zone: a zone of shared memory, seen by every worker, with its lock and allocator.
 *
 * A zone is mapped (MAP_SHARED | MAP_ANONYMOUS) in the process that loads the configuration,
 * the master, before it forks the workers, so every worker shares it. Zones are kept by name
 * and size in this process and counted: a reload that asks for the same name with the same
 * size gets the same zone back while the old configuration still holds it, so its contents
 * survive the reload. The last release unmaps it.
 *
 * Inside, a zone is its header, `reserve` bytes that belong to its owner (a dictionary's
 * header and buckets), then a heap served by a first-fit allocator with boundary tags. Every
 * link inside a zone is an offset from the zone's start (mg_zone_base), never a pointer, so the
 * zone means the same in every process.
 *
 * One robust process-shared mutex per zone: a worker killed while holding it does not freeze
 * the others. An owner marks the lock with mg_zone_changing before it changes the zone's
 * structure; if the holder died with that mark set, the next locker empties the zone (the
 * reserved bytes zeroed, the heap one free block) rather than trust it, and logs a warning: a
 * rare loss of cached data instead of a crash. A change made by a single store (an increment in
 * place) needs no mark. */
#ifndef MG_ZONE_H
#define MG_ZONE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_zone_s mg_zone_t;

/* A zone as this process maps it. Written by zone.c alone; its owner reads the mapping through
 * the inline accessors below, which cost nothing on the hot path of every operation. */
struct mg_zone_s {
  char *base;     /* the mapping */
  size_t size;    /* bytes mapped */
  void *reserved; /* the owner's bytes, right after the zone's header */
  size_t reserve;
  char name[128];
  int refs;
  struct mg_zone_s *next; /* this process's zones */
};

/* The zone `name` of `size` bytes whose first `reserve` bytes after the zone's header belong
 * to its owner (zeroed, and zeroed again whenever the zone is emptied): the one this process
 * already maps with that name, size and reserve, with one more reference, or a new one. Returns
 * NULL with a message in err when the memory cannot be mapped or leaves no room for a heap. */
mg_zone_t *mg_zone_get(const char *name, size_t size, size_t reserve, char *err, size_t errlen);
/* One more reference; each is dropped with mg_zone_unref, the last one unmaps the zone. */
void mg_zone_ref(mg_zone_t *zn);
void mg_zone_unref(mg_zone_t *zn);

/* The bytes mapped, header included (what was asked of mg_zone_get). */
static inline size_t mg_zone_size(const mg_zone_t *zn) { return zn->size; }
/* Where the offsets inside the zone count from. */
static inline char *mg_zone_base(const mg_zone_t *zn) { return zn->base; }
/* The owner's reserved bytes, and their number in *len. */
static inline void *mg_zone_reserved(const mg_zone_t *zn, size_t *len) {
  *len = zn->reserve;
  return zn->reserved;
}

/* Takes the zone's lock, emptying the zone first if the last holder died while changing it. */
void mg_zone_lock(mg_zone_t *zn);
/* Under the lock: a structural change is under way until mg_zone_unlock. */
void mg_zone_changing(mg_zone_t *zn);
void mg_zone_unlock(mg_zone_t *zn);

/* The functions below are called under the lock. */

/* Empties the zone: the reserved bytes zeroed, the heap one free block. */
void mg_zone_clear(mg_zone_t *zn);
/* The offset of a payload of at least n bytes, 16-byte aligned, or 0 when no free block is
 * large enough. */
uint64_t mg_zone_alloc(mg_zone_t *zn, size_t n);
/* Frees a payload mg_zone_alloc returned; free neighbours are merged with it at once. */
void mg_zone_free(mg_zone_t *zn, uint64_t off);
/* The payload bytes of all free blocks (each block's own header not counted). */
size_t mg_zone_free_bytes(mg_zone_t *zn);

#endif
