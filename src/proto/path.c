/* path: see path.h. */
#include "path.h"

#include <string.h>
#include <strings.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int mg_target_split(const char *t, size_t len, const char **path, size_t *path_len, const char **query,
                    size_t *query_len) {
  size_t i = 0;
  if (len >= 7 && (strncasecmp(t, "http://", 7) == 0 || (len >= 8 && strncasecmp(t, "https://", 8) == 0))) {
    i = t[4] == ':' ? 7 : 8;
    while (i < len && t[i] != '/' && t[i] != '?') i++;
    if (i == len || t[i] == '?') {
      /* "http://host" and "http://host?q" address the root. */
      *path = "/", *path_len = 1;
      *query = i < len ? t + i + 1 : NULL;
      *query_len = i < len ? len - i - 1 : 0;
      return 0;
    }
  } else if (len == 0 || t[0] != '/') {
    return MG_PATH_BAD;
  }
  const char *q = memchr(t + i, '?', len - i);
  *path = t + i;
  *path_len = q ? (size_t)(q - (t + i)) : len - i;
  *query = q ? q + 1 : NULL;
  *query_len = q ? len - (size_t)(q + 1 - t) : 0;
  return 0;
}

int mg_target_parse(mg_pool_t *pool, const char *target, size_t len, int allow_encoded_slashes, char **path,
                    size_t *path_len, char **query) {
  const char *p, *q;
  size_t pl, ql;
  if (mg_target_split(target, len, &p, &pl, &q, &ql) < 0) return MG_PATH_BAD_TARGET;
  char *norm = mg_pool_alloc(pool, pl + 2);
  int n = mg_path_normalize(p, pl, norm, allow_encoded_slashes);
  if (n < 0) return n;
  *path = norm, *path_len = (size_t)n;
  *query = q ? mg_pool_strndup(pool, q, ql) : NULL;
  return 0;
}

int mg_path_normalize(const char *in, size_t len, char *out, int allow_encoded_slashes) {
  if (len == 0 || in[0] != '/') return MG_PATH_BAD;
  /* Each kept segment is written followed by '/'; ".." pops back to the previous one. */
  size_t n = 0, i = 0;
  int last_dot = 0;
  out[n++] = '/';
  while (i < len) {
    while (i < len && in[i] == '/') i++;
    if (i == len) break;
    size_t seg_start = n;
    int dots = 0, other = 0;
    while (i < len && in[i] != '/') {
      unsigned char c = (unsigned char)in[i];
      if (c == '%') {
        if (i + 2 >= len) return MG_PATH_BAD;
        int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
        if (h < 0 || l < 0) return MG_PATH_BAD;
        unsigned char d = (unsigned char)(h * 16 + l);
        if (d == 0) return MG_PATH_BAD;
        if (d == '/' && !allow_encoded_slashes) return MG_PATH_ENCODED_SLASH;
        if (is_unreserved(d)) {
          out[n++] = (char)d;
        } else {
          static const char hex[] = "0123456789ABCDEF";
          out[n++] = '%', out[n++] = hex[d >> 4], out[n++] = hex[d & 15];
        }
        c = d;
        i += 3;
      } else {
        if (c == 0) return MG_PATH_BAD;
        out[n++] = (char)c;
        i++;
      }
      if (c == '.') dots++;
      else other++;
    }
    last_dot = !other && (dots == 1 || dots == 2);
    if (last_dot && dots == 1) {
      n = seg_start;
    } else if (last_dot) {
      if (seg_start <= 1) return MG_PATH_BAD; /* climbs above "/" */
      n = seg_start - 1;
      while (n > 0 && out[n - 1] != '/') n--;
    } else {
      out[n++] = '/';
    }
  }
  /* A path keeps its trailing slash, and one ending in "." or ".." names a directory. */
  if (n > 1 && in[len - 1] != '/' && !last_dot) n--;
  out[n] = 0;
  return (int)n;
}

size_t mg_path_decode(const char *in, size_t len, char *out) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (in[i] == '%' && i + 2 < len && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
      out[n++] = (char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
      i += 2;
    } else {
      out[n++] = in[i];
    }
  }
  out[n] = 0;
  return n;
}

/* The characters a path segment holds literally (RFC 3986 pchar less '%', plus '/'). */
static int path_safe(unsigned char c) {
  return is_unreserved(c) || strchr("/!$&'()*+,;=:@", c) != NULL;
}

size_t mg_path_encode(const char *in, size_t len, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c && path_safe(c)) out[n++] = (char)c;
    else out[n++] = '%', out[n++] = hex[c >> 4], out[n++] = hex[c & 15];
  }
  out[n] = 0;
  return n;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'f'); }

int mg_host_valid(const char *h, size_t n) {
  size_t i = 0;
  if (n && h[0] == '[') {
    /* IPv6address or IPvFuture: hex digits, ':', '.', and for IPvFuture "v", unreserved and
     * sub-delims; what matters here is that nothing delimits differently. */
    for (i = 1; i < n && h[i] != ']'; i++)
      if (!(is_hex(h[i]) || h[i] == ':' || h[i] == '.' || h[i] == 'v' || h[i] == 'V')) return 0;
    if (i == n || i == 1) return 0;
    i++;
  } else {
    /* RFC 3986's sub-delims but ',': "a,b" would be read as a list of two by other hops. */
    static const char ok[] = "-._~!$&'()*+;=";
    for (; i < n && h[i] != ':'; i++) {
      char c = h[i];
      if (c == '%') {
        if (i + 2 >= n || !is_hex(h[i + 1]) || !is_hex(h[i + 2])) return 0;
        i += 2;
      } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr(ok, c)))) {
        return 0;
      }
    }
  }
  if (i == n) return 1;
  if (h[i] != ':') return 0;
  for (i++; i < n; i++)
    if (h[i] < '0' || h[i] > '9') return 0;
  return 1;
}
