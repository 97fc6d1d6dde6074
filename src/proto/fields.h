/* fields: HTTP header fields and the small rules of RFC 9110 every layer shares, pure.
 *
 * A field list is what a request received and what a response will send: names and values
 * from the request's pool, in order, repeats kept. Lookups are case-insensitive. Beside the
 * list: what a token is, what a field value may hold, the reason phrase of a status, and the
 * HTTP date. Each rule is written here once; the HTTP/1.1 parser, the SCGI codec, the Lua
 * API and the handlers call it. */
#ifndef MG_FIELDS_H
#define MG_FIELDS_H

#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include "pool.h"

/* Field names equal but for case: the first bytes compared inline (most names differ there),
 * then strcasecmp, whose call costs more than the comparison of two short names. */
static inline int mg_name_eq(const char *a, const char *b) {
  return ((unsigned char)(a[0] ^ b[0]) & 0xdf) == 0 && strcasecmp(a, b) == 0;
}

typedef struct {
  char *name, *value;
} mg_field_t;

typedef struct {
  mg_field_t *v;
  int n, cap;
} mg_fields_t;

/* The value of the first field named `name`, or NULL. */
const char *mg_fields_get(const mg_fields_t *f, const char *name);
/* The value of every field named `name` joined with `sep`, from the pool; NULL when absent. */
const char *mg_fields_join(mg_pool_t *p, const mg_fields_t *f, const char *name, const char *sep);
/* Appends a field; both strings are copied into the pool. */
void mg_fields_add(mg_pool_t *p, mg_fields_t *f, const char *name, size_t nl, const char *value, size_t vl);
/* Appends a field whose strings already live as long as the list (the parser's, from the pool). */
void mg_fields_push(mg_pool_t *p, mg_fields_t *f, char *name, char *value);
/* Removes every field named `name`; with a value, adds one field with it. */
void mg_fields_set(mg_pool_t *p, mg_fields_t *f, const char *name, const char *value);
/* How many fields are named `name`. */
int mg_fields_count(const mg_fields_t *f, const char *name);

/* 1 when s[0..n) is an HTTP token (RFC 9110 5.6.2): a field name or a method. Inline over
 * a table: it runs on every field name of every backend response. */
extern const unsigned char mg_http_tchar[256];
static inline int mg_http_is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!mg_http_tchar[(unsigned char)s[i]]) return 0;
  return 1;
}
/* 1 when v[0..n) may be an HTTP field value (RFC 9110 5.5): visible characters, obs-text,
 * and SP/HTAB between them; no other control character. Inline: it runs on every field of
 * every backend response. */
static inline int mg_http_is_field_value(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c < 0x20 ? c != '\t' : c == 0x7f) return 0;
  }
  return 1;
}
/* 1 when v[0..n) holds no CR, LF or NUL: the one rule a value set by Lua or received from a
 * client must meet so that it cannot end its line and start another field (or response). */
static inline int mg_http_value_is_safe(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) return 0;
  return 1;
}

/* The standard reason phrase of a status ("Not Found"); a class name for unknown ones. */
const char *mg_http_reason(int status);
/* t (seconds since the epoch) as an HTTP date, "Sun, 06 Nov 1994 08:49:37 GMT", into out. */
const char *mg_http_date(char *out, size_t n, int64_t t);
/* The current time as an HTTP date, formatted once a second (the Date field of responses). */
const char *mg_http_date_now(void);

#endif
