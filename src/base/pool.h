/* pool: the per-request arena.
 *
 * Every string a request keeps (its target, header fields, response headers from the backend
 * or from hooks) is allocated from its pool and released at once when the request ends, so a
 * finished request leaves nothing behind. The first chunk lives inside the pool itself, so a
 * typical request allocates no memory for its strings beyond the request. */
#ifndef MG_POOL_H
#define MG_POOL_H

#include <stddef.h>

#define MG_POOL_INLINE 2048

typedef struct mg_pool_chunk_s {
  struct mg_pool_chunk_s *next;
  char data[];
} mg_pool_chunk_t;

/* Run when the pool is freed, newest first, before its memory goes: how an upper layer (the
 * Lua binding) releases what it hung on a request without the request naming it. */
typedef struct mg_pool_cleanup_s {
  struct mg_pool_cleanup_s *next;
  void (*fn)(void *arg);
  void *arg;
} mg_pool_cleanup_t;

typedef struct {
  char *cur, *end;
  mg_pool_chunk_t *chunks; /* malloc'd chunks beyond the inline one */
  mg_pool_cleanup_t *cleanups;
  char inline_data[MG_POOL_INLINE];
} mg_pool_t;

void mg_pool_init(mg_pool_t *p);
void mg_pool_free(mg_pool_t *p);
void *mg_pool_alloc(mg_pool_t *p, size_t n);
char *mg_pool_strndup(mg_pool_t *p, const char *s, size_t n);
char *mg_pool_strdup(mg_pool_t *p, const char *s);
/* Registers fn(arg) to run when the pool is freed (its node comes from the pool). */
void mg_pool_cleanup(mg_pool_t *p, void (*fn)(void *arg), void *arg);

#endif
