/* fields: see fields.h. */
#include "fields.h"

#include <string.h>
#include <strings.h>
#include <time.h>

const char *mg_fields_get(const mg_fields_t *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) return f->v[i].value;
  return NULL;
}

const char *mg_fields_join(mg_pool_t *p, const mg_fields_t *f, const char *name, const char *sep) {
  const char *first = NULL;
  size_t total = 0, count = 0, sl = strlen(sep);
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) {
      if (!first) first = f->v[i].value;
      total += strlen(f->v[i].value) + sl, count++;
    }
  if (count <= 1) return first;
  char *out = mg_pool_alloc(p, total + 1), *o = out;
  size_t joined = 0;
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) == 0) {
      /* Counted, not inferred from the output so far: empty values keep their separators. */
      if (joined++) memcpy(o, sep, sl), o += sl;
      size_t l = strlen(f->v[i].value);
      memcpy(o, f->v[i].value, l), o += l;
    }
  *o = 0;
  return out;
}

void mg_fields_add(mg_pool_t *p, mg_fields_t *f, const char *name, size_t nl, const char *value, size_t vl) {
  mg_fields_push(p, f, mg_pool_strndup(p, name, nl), mg_pool_strndup(p, value, vl));
}

void mg_fields_set(mg_pool_t *p, mg_fields_t *f, const char *name, const char *value) {
  int k = 0;
  for (int i = 0; i < f->n; i++)
    if (strcasecmp(f->v[i].name, name) != 0) f->v[k++] = f->v[i];
  f->n = k;
  if (value) mg_fields_add(p, f, name, strlen(name), value, strlen(value));
}

void mg_fields_push(mg_pool_t *p, mg_fields_t *f, char *name, char *value) {
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 16;
    mg_field_t *v = mg_pool_alloc(p, sizeof(mg_field_t) * (size_t)cap);
    if (f->n) memcpy(v, f->v, sizeof(mg_field_t) * (size_t)f->n);
    f->v = v, f->cap = cap;
  }
  f->v[f->n].name = name;
  f->v[f->n].value = value;
  f->n++;
}

int mg_fields_count(const mg_fields_t *f, const char *name) {
  int k = 0;
  for (int i = 0; i < f->n; i++) k += strcasecmp(f->v[i].name, name) == 0;
  return k;
}

int mg_http_is_token(const char *s, size_t n) {
  static const char *extra = "!#$%&'*+-.^_`|~";
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr(extra, c))))
      return 0;
  }
  return 1;
}

const char *mg_http_reason(int s) {
  switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return s < 300 ? "OK" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
  }
}

const char *mg_http_date(char *out, size_t n, int64_t t) {
  struct tm tm;
  time_t tt = (time_t)t;
  gmtime_r(&tt, &tm);
  strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return out;
}

/* The Date header changes once a second; format it only then. */
const char *mg_http_date_now(void) {
  static char buf[40];
  static time_t last;
  time_t now = time(NULL);
  if (now != last) mg_http_date(buf, sizeof buf, now), last = now;
  return buf;
}
