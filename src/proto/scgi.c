/* scgi: see scgi.h. */
#include "scgi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mg_vars_init(mg_vars_t *vs) { vs->v = NULL, vs->n = vs->cap = vs->borrowed = 0; }

void mg_vars_init_in(mg_vars_t *vs, mg_var_t *storage, int cap) {
  vs->v = storage, vs->n = 0, vs->cap = cap, vs->borrowed = 1;
}

void mg_vars_free(mg_vars_t *vs) {
  if (!vs->borrowed) free(vs->v);
  mg_vars_init(vs);
}

void mg_vars_add(mg_vars_t *vs, const char *name, size_t nl, const char *value, size_t vl) {
  if (vs->n == vs->cap) {
    vs->cap = vs->cap ? vs->cap * 2 : 48;
    if (vs->borrowed) {
      mg_var_t *v = mg_malloc(sizeof(mg_var_t) * (size_t)vs->cap);
      memcpy(v, vs->v, sizeof(mg_var_t) * (size_t)vs->n);
      vs->v = v, vs->borrowed = 0;
    } else {
      vs->v = mg_realloc(vs->v, sizeof(mg_var_t) * (size_t)vs->cap);
    }
  }
  vs->v[vs->n++] = (mg_var_t){name, value, (uint32_t)nl, (uint32_t)vl};
}

void mg_vars_set(mg_vars_t *vs, const char *name, size_t nl, const char *value, size_t vl) {
  for (int i = 0; i < vs->n; i++) {
    if (vs->v[i].name_len == nl && memcmp(vs->v[i].name, name, nl) == 0) {
      if (value) {
        vs->v[i].value = value, vs->v[i].value_len = (uint32_t)vl;
      } else {
        memmove(vs->v + i, vs->v + i + 1, sizeof(mg_var_t) * (size_t)(vs->n - i - 1));
        vs->n--;
      }
      return;
    }
  }
  if (value) mg_vars_add(vs, name, nl, value, vl);
}

const mg_var_t *mg_vars_get(const mg_vars_t *vs, const char *name) {
  size_t nl = strlen(name);
  for (int i = 0; i < vs->n; i++)
    if (vs->v[i].name_len == nl && memcmp(vs->v[i].name, name, nl) == 0) return &vs->v[i];
  return NULL;
}

static size_t body_len(const mg_vars_t *vs) {
  size_t body = 0;
  for (int i = 0; i < vs->n; i++) body += vs->v[i].name_len + vs->v[i].value_len + 2;
  return body;
}

size_t mg_scgi_encoded_len(const mg_vars_t *vs, size_t *body) {
  *body = body_len(vs);
  char digits[24];
  return mg_fmt_u64(digits, *body) + 1 + *body + 1;
}

void mg_scgi_encode_to(const mg_vars_t *vs, size_t body, char *p) {
  p += mg_fmt_u64(p, body);
  *p++ = ':';
  for (int i = 0; i < vs->n; i++) {
    memcpy(p, vs->v[i].name, vs->v[i].name_len);
    p += vs->v[i].name_len;
    *p++ = 0;
    memcpy(p, vs->v[i].value, vs->v[i].value_len);
    p += vs->v[i].value_len;
    *p++ = 0;
  }
  *p = ',';
}

size_t mg_scgi_encode(const mg_vars_t *vs, mg_buf_t *out) {
  size_t body, total = mg_scgi_encoded_len(vs, &body);
  mg_buf_reserve(out, total);
  mg_scgi_encode_to(vs, body, out->data + out->len);
  out->len += total;
  out->data[out->len] = 0;
  return total;
}

long mg_scgi_decode(const char *in, size_t len, mg_vars_t *out) {
  size_t i = 0, n = 0;
  while (i < len && in[i] >= '0' && in[i] <= '9') {
    if (i > 9) return -1;
    n = n * 10 + (size_t)(in[i] - '0');
    i++;
  }
  if (i == len) return 0;
  if (i == 0 || in[i] != ':') return -1;
  i++;
  if (len - i < n + 1) return 0;
  const char *p = in + i, *end = p + n;
  if (*end != ',') return -1;
  while (p < end) {
    const char *name = p, *z = memchr(p, 0, (size_t)(end - p));
    if (!z || z == name) return -1;
    const char *value = z + 1, *z2 = memchr(value, 0, (size_t)(end - value));
    if (!z2) return -1;
    mg_vars_add(out, name, (size_t)(z - name), value, (size_t)(z2 - value));
    p = z2 + 1;
  }
  return (long)(i + n + 1);
}

static int is_hop_by_hop(const char *n, size_t l) {
  static const char *hop[] = {"Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade",
                              "Proxy-Connection", NULL};
  for (int i = 0; hop[i]; i++)
    if (strlen(hop[i]) == l && strncasecmp(hop[i], n, l) == 0) return 1;
  return 0;
}

static int parse_content_length(const char *v, size_t n, int64_t *out) {
  if (n == 0 || n > 18) return -1;
  int64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  *out = x;
  return 0;
}

/* RFC 9110 7.6.1: the fields a `Connection` header names are for this hop only, and an
 * intermediary removes them (as Apache's ap_proxy_clear_connection does). */
static void drop_connection_options(mg_cgi_head_t *h, const char *v, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
    size_t tl = i - start;
    if (tl == 0) continue;
    int out = 0;
    for (int k = 0; k < h->nheaders; k++) {
      mg_header_t *f = &h->headers[k];
      if (f->name_len == tl && strncasecmp(f->name, v + start, tl) == 0) {
        if (tl == 14 && strncasecmp(f->name, "Content-Length", 14) == 0) h->content_length = -1;
        continue;
      }
      h->headers[out++] = *f;
    }
    h->nheaders = out;
  }
}

int mg_cgi_parse(const char *buf, size_t len, mg_cgi_head_t *h) {
  h->status = 200, h->reason = NULL, h->reason_len = 0, h->content_length = -1, h->nheaders = 0;
  h->error = NULL;
  enum { MAX_CONNECTION_FIELDS = 8 };
  mg_header_t conn[MAX_CONNECTION_FIELDS];
  int nconn = 0;
  size_t i = 0;
  for (;;) {
    const char *nl = memchr(buf + i, '\n', len - i);
    if (!nl) return MG_CGI_MORE;
    size_t line_end = (size_t)(nl - buf);
    size_t e = line_end;
    if (e > i && buf[e - 1] == '\r') e--;
    if (e == i) {
      h->head_len = line_end + 1;
      for (int k = 0; k < nconn; k++) drop_connection_options(h, conn[k].value, conn[k].value_len);
      return MG_CGI_DONE;
    }
    const char *line = buf + i;
    size_t ll = e - i;
    i = line_end + 1;
    const char *colon = memchr(line, ':', ll);
    if (!colon) return h->error = "header line without a colon", MG_CGI_ERROR;
    size_t nl_len = (size_t)(colon - line);
    if (!mg_http_is_token(line, nl_len)) return h->error = "header name is not an HTTP token", MG_CGI_ERROR;
    const char *v = colon + 1, *ve = line + ll;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    size_t vl = (size_t)(ve - v);
    if (!mg_http_is_field_value(v, vl)) return h->error = "header value holds a control character", MG_CGI_ERROR;
    if (nl_len == 6 && strncasecmp(line, "Status", 6) == 0) {
      if (vl < 3 || v[0] < '1' || v[0] > '5' || v[1] < '0' || v[1] > '9' || v[2] < '0' || v[2] > '9' ||
          (vl > 3 && v[3] != ' '))
        return h->error = "bad Status line", MG_CGI_ERROR;
      /* An interim 1xx is not an answer: sent as the final one, the client would read the
       * next response on its connection as this one's body. */
      if (v[0] == '1') return h->error = "a 1xx Status is not a final response", MG_CGI_ERROR;
      h->status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
      if (vl > 4) h->reason = v + 4, h->reason_len = (uint32_t)(vl - 4);
      continue;
    }
    if (is_hop_by_hop(line, nl_len)) {
      if (nl_len == 10 && strncasecmp(line, "Connection", 10) == 0 && nconn < MAX_CONNECTION_FIELDS) conn[nconn++] = (mg_header_t){line, v, (uint32_t)nl_len, (uint32_t)vl};
      continue;
    }
    if (nl_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
      int64_t cl;
      if (parse_content_length(v, vl, &cl) < 0) return h->error = "bad Content-Length", MG_CGI_ERROR;
      if (h->content_length >= 0 && h->content_length != cl)
        return h->error = "differing Content-Length fields", MG_CGI_ERROR;
      if (h->content_length >= 0) continue;
      h->content_length = cl;
    }
    if (h->nheaders == MG_CGI_MAX_HEADERS) return h->error = "more than 100 header fields", MG_CGI_ERROR;
    h->headers[h->nheaders++] = (mg_header_t){line, v, (uint32_t)nl_len, (uint32_t)vl};
  }
}

