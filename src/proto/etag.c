/* etag: see etag.h. */
#include "etag.h"

#include <string.h>

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* The opaque part of a tag, quotes included: skips a W/ prefix. Returns its length, or 0
 * when s does not start with an entity-tag ('"', etagc*, '"'). */
static size_t opaque_at(const char **s) {
  const char *p = *s;
  if (p[0] == 'W' && p[1] == '/') p += 2;
  if (*p != '"') return 0;
  const char *q = strchr(p + 1, '"');
  if (!q) return 0;
  *s = p;
  return (size_t)(q - p) + 1;
}

int mg_etag_match_weak(const char *field, const char *etag) {
  if (!field || !etag) return 0;
  size_t want = opaque_at(&etag);
  if (!want) return 0;
  const char *p = field;
  while (is_ows(*p)) p++;
  if (*p == '*') {
    p++;
    while (is_ows(*p)) p++;
    return *p == 0;
  }
  for (;;) {
    while (is_ows(*p) || *p == ',') p++; /* empty list members are allowed (RFC 9110 5.6.1) */
    if (!*p) return 0;
    size_t n = opaque_at(&p);
    if (!n) return 0;
    if (n == want && memcmp(p, etag, n) == 0) return 1;
    p += n;
    while (is_ows(*p)) p++;
    if (*p && *p != ',') return 0;
  }
}
