/* fields: see fields.h. */
#include "fields.h"

#include <string.h>
#include <strings.h>
#include <time.h>

const char *mg_fields_get(const mg_fields_t *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (mg_name_eq(f->v[i].name, name)) return f->v[i].value;
  return NULL;
}

const char *mg_fields_join(mg_pool_t *p, const mg_fields_t *f, const char *name, const char *sep) {
  const char *first = NULL;
  size_t total = 0, count = 0, sl = strlen(sep);
  for (int i = 0; i < f->n; i++)
    if (mg_name_eq(f->v[i].name, name)) {
      if (!first) first = f->v[i].value;
      total += strlen(f->v[i].value) + sl, count++;
    }
  if (count <= 1) return first;
  char *out = mg_pool_alloc(p, total + 1), *o = out;
  size_t joined = 0;
  for (int i = 0; i < f->n; i++)
    if (mg_name_eq(f->v[i].name, name)) {
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
    if (!mg_name_eq(f->v[i].name, name)) f->v[k++] = f->v[i];
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
  for (int i = 0; i < f->n; i++) k += mg_name_eq(f->v[i].name, name);
  return k;
}

/* RFC 9110 5.6.2 tchar: ALPHA, DIGIT and "!#$%&'*+-.^_`|~". */
#define T(c) [c] = 1
const unsigned char mg_http_tchar[256] = {
    T('!'), T('#'), T('$'), T('%'), T('&'), T('\''), T('*'), T('+'), T('-'), T('.'), T('^'), T('_'), T('`'), T('|'), T('~'),
    T('0'), T('1'), T('2'), T('3'), T('4'), T('5'), T('6'), T('7'), T('8'), T('9'),
    T('A'), T('B'), T('C'), T('D'), T('E'), T('F'), T('G'), T('H'), T('I'), T('J'), T('K'), T('L'), T('M'),
    T('N'), T('O'), T('P'), T('Q'), T('R'), T('S'), T('T'), T('U'), T('V'), T('W'), T('X'), T('Y'), T('Z'),
    T('a'), T('b'), T('c'), T('d'), T('e'), T('f'), T('g'), T('h'), T('i'), T('j'), T('k'), T('l'), T('m'),
    T('n'), T('o'), T('p'), T('q'), T('r'), T('s'), T('t'), T('u'), T('v'), T('w'), T('x'), T('y'), T('z'),
};
#undef T

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
