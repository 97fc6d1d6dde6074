/* h2_fields: an HTTP/2 request's fields from its decoded header block, and a response's
 * header block from its fields; pure (no session, no socket).
 *
 * Request side: the session hands every decoded (name, value) pair of a request's HEADERS to
 * mg_h2f_add, which keeps the regular fields in the request's list (names arrive lowercase)
 * and the pseudo-header fields apart, checks RFC 9113 8.2-8.3 (pseudo-headers known, once
 * each, before every regular field; names lowercase tokens; no connection-specific field; `te`
 * only "trailers"; values without control bytes) and counts the block against the limits.
 * mg_h2f_finish then checks what the block as a whole must hold, joins cookie crumbs into one
 * field (8.2.3) and gives the request a `host` field from :authority, so that the engine, the
 * Lua API and the backend see what HTTP/1.1 gives them.
 *
 * Response side: mg_h2f_response builds the nghttp2 name/value array: `:status` first, names
 * lowercased, the fields HTTP/2 forbids dropped, server and date added as HTTP/1.1 does. */
#ifndef MG_H2_FIELDS_H
#define MG_H2_FIELDS_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

#include "fields.h"
#include "pool.h"

enum { MG_H2F_OK = 0, MG_H2F_TOO_LARGE = 1, MG_H2F_MALFORMED = 2 };

typedef struct {
  uint64_t max_list;   /* http2_max_header_list_size: sum of name + value + 32 (RFC 9113 6.5.2) */
  uint64_t max_field;  /* max_header_size: name + value of one field */
  uint64_t max_fields; /* max_headers */
} mg_h2f_limits_t;

/* One request's header block as it is decoded. Zero it to start. */
typedef struct {
  uint64_t list_size;
  uint32_t nfields;
  uint8_t regular_seen, too_large;
  const char *why; /* the reason, once malformed or too large */
  char *method, *scheme, *authority, *path;
} mg_h2f_t;

/* One decoded field: MG_H2F_OK, MG_H2F_TOO_LARGE (from now on nothing more is kept; the
 * request is answered 431 once the block ends) or MG_H2F_MALFORMED (h->why says why). */
int mg_h2f_add(mg_h2f_t *h, mg_pool_t *pool, mg_fields_t *out, const mg_h2f_limits_t *lim, const char *name,
               size_t nl, const char *value, size_t vl);
/* The block ended: MG_H2F_OK or MG_H2F_MALFORMED (h->why). Joins cookies, adds host. */
int mg_h2f_finish(mg_h2f_t *h, mg_pool_t *pool, mg_fields_t *fields);

/* The response head as nghttp2 takes it, from the pool (which must outlive the frame): into
 * *out, returning the count. Content-Length is kept as the fields give it. */
size_t mg_h2f_response(mg_pool_t *pool, int status, const mg_fields_t *resp, const char *server, const char *date,
                       nghttp2_nv **out);

#endif
