/* route_re: regular-expression routes, mg.route("~PATTERN", ...) and "~*PATTERN" (case
 * insensitive), on PCRE2 with its JIT (docs/reference.md, "Routes"). No I/O.
 *
 * A pattern is compiled once when the configuration loads, and matched against the request's
 * normalized path (percent-escapes as the client sent them, like prefix routes). The match
 * data is one per process: a worker serves one request at a time on its loop, and a match's
 * offsets are copied out before the next one. */
#ifndef MG_ROUTE_RE_H
#define MG_ROUTE_RE_H

#include <stddef.h>

#include "config.h"

/* The most capture pairs reported (the whole match and 31 groups). */
#define MG_ROUTE_RE_MAX_PAIRS 32

/* Compiles r->match into r->re. Returns 0, or -1 with PCRE2's message and the offset in err. */
int mg_route_re_compile(mg_route_t *r, int caseless, char *err, size_t err_len);

/* Matches path against a regex route. Fills ov with up to max pairs of offsets (-1 for a group
 * that did not take part) and returns the number of pairs (the groups + 1), 0 when the path
 * does not match, or -1 when the match failed (a match limit). */
int mg_route_re_match(const mg_route_t *r, const char *path, size_t len, long *ov, int max);

/* The group number of the i-th named group, with its name in *name; -1 past the last. */
int mg_route_re_name(const mg_route_t *r, int i, const char **name);

void mg_route_re_free(mg_route_t *r);

#endif
