/* buf: growable byte strings and the pool of 64 KiB I/O blocks.
 *
 * mg_buf_t is an append-only byte string used to build request heads, SCGI netstrings and
 * response heads. I/O blocks carry body bytes between the two sockets of a request: a block is
 * taken from the pool by a read, handed to the write that forwards it (which owns it until its
 * callback), and returned to the pool there. The pool keeps a few free blocks per worker so a
 * steady stream of requests allocates nothing. */
#ifndef MG_BUF_H
#define MG_BUF_H

#include <stddef.h>
#include <stdint.h>

#define MG_BLOCK_SIZE (64 * 1024)

/* Under AddressSanitizer the free lists (I/O blocks, connection slab) are bypassed, so a use
 * after free is caught instead of hidden by reuse. */
#if defined(__SANITIZE_ADDRESS__)
#define MG_NO_POOLS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MG_NO_POOLS 1
#endif
#endif

typedef struct {
  char *data;
  size_t len, cap;
  int borrowed; /* data is the caller's storage (mg_buf_init_in) */
} mg_buf_t;

void mg_buf_init(mg_buf_t *b);
/* Starts with the caller's cap bytes (on its stack): nothing is allocated unless the string
 * outgrows them, when it moves to the heap. mg_buf_free is still to be called. */
void mg_buf_init_in(mg_buf_t *b, char *storage, size_t cap);
void mg_buf_free(mg_buf_t *b);
void mg_buf_reserve(mg_buf_t *b, size_t extra);
void mg_buf_append(mg_buf_t *b, const void *p, size_t n);
void mg_buf_puts(mg_buf_t *b, const char *s);
/* Decimal / lower-case hex digits of v at out (no NUL); returns their count (at most 20 / 16).
 * The request path formats its numbers with these: snprintf costs more than the rest of
 * building a response head. */
size_t mg_fmt_u64(char *out, uint64_t v);
size_t mg_fmt_hex(char *out, uint64_t v);
/* The low `digits` hex digits of v at out, zero-padded (no NUL). */
void mg_fmt_hex_fixed(char *out, uint64_t v, int digits);
void mg_buf_printf(mg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string, quoted: `"` and `\` escaped, control bytes as \u00XX; NULL as "". */
void mg_buf_json_str(mg_buf_t *b, const char *s);
/* Gives the bytes to the caller (who frees them with free(); borrowed bytes are copied to the
 * heap first) and leaves b empty. */
char *mg_buf_steal(mg_buf_t *b);

char *mg_block_get(void);
void mg_block_put(char *block);

/* A per-worker free list of same-sized structs that every request needs (the request, its
 * upstream): reused instead of going through malloc and free each time. mg_free_get returns
 * uninitialised memory of fl->size bytes; at most fl->max are kept. Bypassed under
 * AddressSanitizer like the other free lists. */
typedef struct {
  void *head;
  unsigned n, max;
  size_t size;
} mg_freelist_t;
#define MG_FREELIST(type, max) {NULL, 0, (max), sizeof(type)}
void *mg_free_get(mg_freelist_t *fl);
void mg_free_put(mg_freelist_t *fl, void *p);
/* For owners that keep something in a struct across reuse: a kept struct as it was put (its
 * first pointer-sized bytes excepted), or NULL; and whether a put now would free instead. */
void *mg_free_take(mg_freelist_t *fl);
int mg_free_full(const mg_freelist_t *fl);

/* strdup that aborts on failure: configuration and per-request strings are small, and a
 * gateway out of memory cannot answer anyway. */
char *mg_strdup(const char *s);
char *mg_strndup(const char *s, size_t n);
void *mg_malloc(size_t n);
void *mg_calloc(size_t n, size_t size);
void *mg_realloc(void *p, size_t n);

#endif
