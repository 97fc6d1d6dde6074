/* h2_fields: see h2_fields.h. */
#include "h2_fields.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int malformed(mg_h2f_t *h, const char *why) {
  h->why = why;
  return MG_H2F_MALFORMED;
}

static int is(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* RFC 9113 8.2.2: the fields of HTTP/1.1's connection management have no meaning here. */
static int connection_specific(const char *n, size_t nl) {
  return is(n, nl, "connection") || is(n, nl, "keep-alive") || is(n, nl, "proxy-connection") ||
         is(n, nl, "transfer-encoding") || is(n, nl, "upgrade");
}

static int lower_token(const char *n, size_t nl) {
  if (!mg_http_is_token(n, nl)) return 0;
  for (size_t i = 0; i < nl; i++)
    if (n[i] >= 'A' && n[i] <= 'Z') return 0;
  return 1;
}

int mg_h2f_add(mg_h2f_t *h, mg_pool_t *pool, mg_fields_t *out, const mg_h2f_limits_t *lim, const char *name,
               size_t nl, const char *value, size_t vl) {
  if (nl == 0) return malformed(h, "empty field name");
  if (!mg_http_is_field_value(value, vl)) return malformed(h, "control character in a field value");
  if (vl && (value[0] == ' ' || value[0] == '\t' || value[vl - 1] == ' ' || value[vl - 1] == '\t'))
    return malformed(h, "white space at the edge of a field value");
  if (name[0] == ':') {
    if (h->regular_seen) return malformed(h, "pseudo-header field after a regular field");
    char **slot = is(name, nl, ":method")      ? &h->method
                  : is(name, nl, ":scheme")    ? &h->scheme
                  : is(name, nl, ":authority") ? &h->authority
                  : is(name, nl, ":path")      ? &h->path
                                               : NULL;
    if (!slot) return malformed(h, "unknown pseudo-header field");
    if (*slot) return malformed(h, "repeated pseudo-header field");
    *slot = mg_pool_strndup(pool, value, vl);
  } else {
    h->regular_seen = 1;
    if (!lower_token(name + (name[0] == ':'), nl)) return malformed(h, "field name not a lowercase token");
    if (connection_specific(name, nl)) return malformed(h, "connection-specific field");
    if (is(name, nl, "te") && !is(value, vl, "trailers")) return malformed(h, "te other than \"trailers\"");
  }
  h->list_size += nl + vl + 32;
  h->nfields += name[0] != ':';
  if (!h->too_large) {
    if (h->list_size > lim->max_list) h->too_large = 1, h->why = "header list too large";
    else if (nl + vl > lim->max_field) h->too_large = 1, h->why = "header field too large";
    else if (h->nfields > lim->max_fields) h->too_large = 1, h->why = "too many header fields";
    if (h->too_large) return MG_H2F_TOO_LARGE;
  } else {
    return MG_H2F_TOO_LARGE;
  }
  if (name[0] != ':') mg_fields_add(pool, out, name, nl, value, vl);
  return MG_H2F_OK;
}

int mg_h2f_finish(mg_h2f_t *h, mg_pool_t *pool, mg_fields_t *fields) {
  if (!h->method) return malformed(h, "no :method");
  if (strcmp(h->method, "CONNECT") == 0) {
    /* RFC 9113 8.5; answered 405 by the engine, since it is well-formed. */
    if (h->scheme || h->path || !h->authority) return malformed(h, "CONNECT with :scheme or :path, or without :authority");
  } else {
    if (!h->scheme) return malformed(h, "no :scheme");
    if (!h->path) return malformed(h, "no :path");
    if (h->path[0] != '/' && !(strcmp(h->path, "*") == 0 && strcmp(h->method, "OPTIONS") == 0))
      return malformed(h, "a :path that is not an origin-form target");
  }
  if (!mg_http_is_token(h->method, strlen(h->method))) return malformed(h, ":method not a token");
  int nhost = mg_fields_count(fields, "host");
  if (nhost > 1) return malformed(h, "several host fields");
  const char *host = mg_fields_get(fields, "host");
  if (h->authority && host && strcasecmp(host, h->authority) != 0) return malformed(h, "host differs from :authority");
  if (h->authority && !host) mg_fields_add(pool, fields, "host", 4, h->authority, strlen(h->authority));
  if (mg_fields_count(fields, "cookie") > 1) {
    const char *joined = mg_fields_join(pool, fields, "cookie", "; ");
    mg_fields_set(pool, fields, "cookie", joined);
  }
  return MG_H2F_OK;
}

static const char *status_text(mg_pool_t *pool, int status) {
  switch (status) {
    case 200: return "200";
    case 204: return "204";
    case 206: return "206";
    case 301: return "301";
    case 302: return "302";
    case 304: return "304";
    case 400: return "400";
    case 403: return "403";
    case 404: return "404";
    case 500: return "500";
    case 502: return "502";
    case 503: return "503";
    default: break;
  }
  char num[8];
  snprintf(num, sizeof num, "%03d", status < 0 || status > 999 ? 500 : status);
  return mg_pool_strdup(pool, num);
}

static nghttp2_nv nv(const char *name, size_t nl, const char *value, size_t vl) {
  nghttp2_nv v = {(uint8_t *)name, (uint8_t *)value, nl, vl, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  return v;
}

size_t mg_h2f_response(mg_pool_t *pool, int status, const mg_fields_t *resp, const char *server, const char *date,
                       nghttp2_nv **out) {
  nghttp2_nv *a = mg_pool_alloc(pool, sizeof *a * (size_t)(resp->n + 3));
  size_t k = 0;
  const char *st = status_text(pool, status);
  a[k++] = nv(":status", 7, st, 3);
  int has_server = 0, has_date = 0;
  for (int i = 0; i < resp->n; i++) {
    const char *name = resp->v[i].name, *value = resp->v[i].value;
    size_t nl = strlen(name);
    char *lower = NULL;
    for (size_t j = 0; j < nl; j++)
      if (name[j] >= 'A' && name[j] <= 'Z') {
        lower = mg_pool_strndup(pool, name, nl);
        for (size_t m = j; m < nl; m++)
          if (lower[m] >= 'A' && lower[m] <= 'Z') lower[m] = (char)(lower[m] + 32);
        break;
      }
    if (lower) name = lower;
    if (connection_specific(name, nl) || is(name, nl, "te")) continue;
    has_server |= is(name, nl, "server");
    has_date |= is(name, nl, "date");
    a[k++] = nv(name, nl, value, strlen(value));
  }
  if (!has_server && server) a[k++] = nv("server", 6, server, strlen(server));
  if (!has_date && date) a[k++] = nv("date", 4, date, strlen(date));
  *out = a;
  return k;
}
