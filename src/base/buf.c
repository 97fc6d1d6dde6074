/* buf: see buf.h. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void) {
  static const char msg[] = "moongate: out of memory\n";
  fwrite(msg, 1, sizeof msg - 1, stderr);
  abort();
}

void *mg_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom();
  return p;
}

void *mg_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom();
  return p;
}

void *mg_realloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) oom();
  return p;
}

char *mg_strndup(const char *s, size_t n) {
  char *d = mg_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}

char *mg_strdup(const char *s) { return mg_strndup(s, strlen(s)); }

void mg_buf_init(mg_buf_t *b) { b->data = NULL, b->len = b->cap = 0, b->borrowed = 0; }

void mg_buf_init_in(mg_buf_t *b, char *storage, size_t cap) {
  b->data = storage, b->len = 0, b->cap = cap, b->borrowed = 1;
  storage[0] = 0;
}

void mg_buf_free(mg_buf_t *b) {
  if (!b->borrowed) free(b->data);
  mg_buf_init(b);
}

void mg_buf_reserve(mg_buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  if (b->borrowed) {
    char *d = mg_malloc(cap);
    memcpy(d, b->data, b->len + 1);
    b->data = d, b->borrowed = 0;
  } else {
    b->data = mg_realloc(b->data, cap);
  }
  b->cap = cap;
}

void mg_buf_append(mg_buf_t *b, const void *p, size_t n) {
  mg_buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
}

void mg_buf_puts(mg_buf_t *b, const char *s) { mg_buf_append(b, s, strlen(s)); }

void mg_buf_printf(mg_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  mg_buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

char *mg_buf_steal(mg_buf_t *b) {
  if (b->borrowed) mg_buf_reserve(b, b->cap); /* onto the heap */
  char *p = b->data;
  mg_buf_init(b);
  return p;
}

/* The free list is per process; each worker is single-threaded. */
#ifndef MG_NO_POOLS
#define POOL_MAX 64
static char *pool[POOL_MAX];
static int pool_len;
#endif

char *mg_block_get(void) {
#ifndef MG_NO_POOLS
  if (pool_len > 0) return pool[--pool_len];
#endif
  return mg_malloc(MG_BLOCK_SIZE);
}

void mg_block_put(char *block) {
  if (!block) return;
#ifndef MG_NO_POOLS
  if (pool_len < POOL_MAX) {
    pool[pool_len++] = block;
    return;
  }
#endif
  free(block);
}

void *mg_free_take(mg_freelist_t *fl) {
#ifndef MG_NO_POOLS
  void *p = fl->head;
  if (p) {
    memcpy(&fl->head, p, sizeof(void *));
    fl->n--;
    return p;
  }
#else
  (void)fl;
#endif
  return NULL;
}

int mg_free_full(const mg_freelist_t *fl) {
#ifndef MG_NO_POOLS
  return fl->n >= fl->max;
#else
  (void)fl;
  return 1;
#endif
}

void *mg_free_get(mg_freelist_t *fl) {
  void *p = mg_free_take(fl);
  return p ? p : mg_malloc(fl->size);
}

void mg_free_put(mg_freelist_t *fl, void *p) {
  if (!p) return;
#ifdef MG_NO_POOLS
  (void)fl;
#else
  if (fl->n < fl->max) {
    memcpy(p, &fl->head, sizeof(void *));
    fl->head = p;
    fl->n++;
    return;
  }
#endif
  free(p);
}

size_t mg_fmt_u64(char *out, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do tmp[n++] = (char)('0' + v % 10), v /= 10;
  while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

void mg_fmt_hex_fixed(char *out, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; i--) out[i] = "0123456789abcdef"[v & 15], v >>= 4;
}

size_t mg_fmt_hex(char *out, uint64_t v) {
  char tmp[16];
  size_t n = 0;
  do tmp[n++] = "0123456789abcdef"[v & 15], v >>= 4;
  while (v);
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

void mg_buf_json_str(mg_buf_t *b, const char *s) {
  mg_buf_append(b, "\"", 1);
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') mg_buf_printf(b, "\\%c", c);
    else if (c < 0x20) mg_buf_printf(b, "\\u%04x", c);
    else mg_buf_append(b, s, 1);
  }
  mg_buf_append(b, "\"", 1);
}
