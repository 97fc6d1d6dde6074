/* path: request-target parsing and path normalization (docs/reference.md, "Routes"), pure
 * functions, no I/O.
 *
 * The normalized path is what routing matches and what hooks see as req.uri: unreserved
 * characters percent-decoded, other escapes kept (with upper-case hex), "." and ".."
 * segments resolved, "//" collapsed, a trailing slash kept. Decoding it fully gives the
 * path the backend sees in SCRIPT_NAME and PATH_INFO. */
#ifndef MG_PATH_H
#define MG_PATH_H

#include <stddef.h>

#include "pool.h"

enum {
  MG_PATH_OK = 0,
  MG_PATH_BAD = -1,           /* 400: not a path, bad escape, NUL, climbs above "/" */
  MG_PATH_ENCODED_SLASH = -2, /* 404: "%2F" without allow_encoded_slashes */
  MG_PATH_BAD_TARGET = -3,    /* 400: not a request target at all */
};

/* Splits a request target into path and query. Origin form "/p?q" and absolute form
 * "http://host/p?q" are accepted (the host of the absolute form is ignored: moongate is
 * never a forward proxy). Returns 0, or MG_PATH_BAD. `query` is NULL when there is no '?'. */
int mg_target_split(const char *target, size_t len, const char **path, size_t *path_len,
                    const char **query, size_t *query_len);

/* The one way a target becomes a path and a query (a request's, an internal redirect's, a
 * subrequest's, req.uri's): split with mg_target_split, the path normalised into the pool
 * (*path, NUL-terminated), the query copied (*query, NULL without '?'). Returns 0,
 * MG_PATH_BAD_TARGET, MG_PATH_BAD or MG_PATH_ENCODED_SLASH. */
int mg_target_parse(mg_pool_t *pool, const char *target, size_t len, int allow_encoded_slashes, char **path,
                    size_t *path_len, char **query);

/* 1 when h[0..n) is a valid Host field value (RFC 9112 3.2, RFC 3986 3.2.2): an IP literal
 * in brackets or a reg-name (unreserved, sub-delims, percent escapes), then optionally ':'
 * and a decimal port. Empty is valid (a target without authority). No '@', '/', space, or
 * list: a host that another hop would read differently is refused. */
int mg_host_valid(const char *h, size_t n);

/* Normalizes `in` into `out`, which must hold len + 2 bytes. Returns the output length, or
 * MG_PATH_BAD / MG_PATH_ENCODED_SLASH. */
int mg_path_normalize(const char *in, size_t len, char *out, int allow_encoded_slashes);

/* Percent-decodes every escape of a normalized path into out (len + 1 bytes). Returns the
 * output length. The input has been validated by mg_path_normalize. */
size_t mg_path_decode(const char *in, size_t len, char *out);

/* Percent-encodes what a path cannot hold literally (the inverse used by WSGI's
 * request_uri). out must hold 3 * len + 1 bytes. Returns the output length. */
size_t mg_path_encode(const char *in, size_t len, char *out);

#endif
