/* pool: see pool.h. */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"

void mg_pool_init(mg_pool_t *p) {
  p->cur = p->inline_data;
  p->end = p->inline_data + MG_POOL_INLINE;
  p->chunks = NULL;
  p->cleanups = NULL;
}

void mg_pool_free(mg_pool_t *p) {
  while (p->cleanups) {
    mg_pool_cleanup_t *k = p->cleanups;
    p->cleanups = k->next;
    k->fn(k->arg);
  }
  while (p->chunks) {
    mg_pool_chunk_t *c = p->chunks;
    p->chunks = c->next;
    free(c);
  }
  mg_pool_init(p);
}

void *mg_pool_alloc(mg_pool_t *p, size_t n) {
  n = (n + 7) & ~(size_t)7;
  if ((size_t)(p->end - p->cur) < n) {
    size_t size = n > 8192 ? n : 8192;
    mg_pool_chunk_t *c = mg_malloc(sizeof *c + size);
    c->next = p->chunks;
    p->chunks = c;
    p->cur = c->data;
    p->end = c->data + size;
  }
  void *r = p->cur;
  p->cur += n;
  return r;
}

char *mg_pool_strndup(mg_pool_t *p, const char *s, size_t n) {
  char *d = mg_pool_alloc(p, n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *mg_pool_strdup(mg_pool_t *p, const char *s) { return mg_pool_strndup(p, s, strlen(s)); }

void mg_pool_cleanup(mg_pool_t *p, void (*fn)(void *arg), void *arg) {
  mg_pool_cleanup_t *k = mg_pool_alloc(p, sizeof *k);
  k->fn = fn, k->arg = arg;
  k->next = p->cleanups;
  p->cleanups = k;
}
