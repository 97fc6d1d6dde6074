/* realip: see realip.h.
 *
 * The walk is nginx's (ngx_http_get_forwarded_addr in 1.22): the trust check on the peer, then
 * tokens from the right of the last header, each separated by commas and spaces, the earlier
 * headers after it; for X-Real-IP and other names only the first header of the name, as nginx
 * keeps. Its splitting rules are reproduced exactly, since a gateway and an nginx behind the
 * same proxy must name the same client; tests/e2e/test_realip.py compares the two. Forwarded
 * is RFC 7239's, which nginx does not read: the `for=` of each element, from the right. */
#include "realip.h"

#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "addr.h"
#include "cidr.h"
#include "request.h"

typedef struct {
  int family; /* AF_INET, AF_INET6, or 0 for a unix-socket peer */
  uint8_t b[16];
  int port;   /* 0: none */
} hop_t;

/* ---- X-Forwarded-For: tokens from the right, split as nginx splits them ------------------ */

typedef struct {
  const char *s;
  size_t len;
  int more;
} xff_iter_t;

static int is_sep(char c) { return c == ' ' || c == ','; }

/* The next token from the right: 1 with *tok and *tl, or 0 when there is none. Separators
 * after a token are skipped, but never the value's first byte. */
static int xff_next(xff_iter_t *it, const char **tok, size_t *tl) {
  if (!it->more) return 0;
  const char *s = it->s;
  size_t len = it->len;
  if (len == 0) {
    it->more = 0;
    *tok = s, *tl = 0;
    return 1;
  }
  while (len > 1 && is_sep(s[len - 1])) len--;
  size_t i = len - 1;
  while (i > 0 && !is_sep(s[i])) i--;
  size_t start = i > 0 ? i + 1 : 0;
  *tok = s + start, *tl = len - start;
  it->more = start > 0;
  it->len = start > 0 ? start - 1 : 0;
  return 1;
}

/* ---- Forwarded (RFC 7239) ---------------------------------------------------------------- */

/* The `for=` value of each element of a Forwarded value, in order, unquoted; an element
 * without one gets a NULL (no address: it ends the walk). Returns how many, at most max. */
static int fwd_split(const char *v, const char **tok, size_t *tl, int max) {
  int n = 0;
  const char *p = v;
  while (*p && n < max) {
    tok[n] = NULL, tl[n] = 0;
    /* pairs of the element, until ',' outside quotes */
    for (;;) {
      while (*p == ' ' || *p == '\t' || *p == ';') p++;
      const char *name = p;
      while (*p && *p != '=' && *p != ';' && *p != ',') p++;
      size_t nl = (size_t)(p - name);
      while (nl && (name[nl - 1] == ' ' || name[nl - 1] == '\t')) nl--;
      const char *val = p, *vend = p;
      if (*p == '=') {
        p++;
        if (*p == '"') {
          val = ++p;
          while (*p && *p != '"') p++;
          vend = p;
          if (*p == '"') p++;
        } else {
          val = p;
          while (*p && *p != ';' && *p != ',' && *p != ' ' && *p != '\t') p++;
          vend = p;
        }
        if (nl == 3 && strncasecmp(name, "for", 3) == 0 && !tok[n]) tok[n] = val, tl[n] = (size_t)(vend - val);
      }
      while (*p && *p != ';' && *p != ',') p++;
      if (*p != ';') break;
    }
    n++;
    if (*p == ',') p++;
    else break;
  }
  return n;
}

/* A Forwarded node: "192.0.2.60", "192.0.2.60:4711", "[2001:db8::17]", "[2001:db8::17]:4711"; an
 * obfuscated port ("_x") counts as none. "unknown" and obfuscated names are not addresses. */
static int fwd_node(const char *s, size_t len, hop_t *h) {
  const char *end = s + len, *port = NULL;
  int family;
  if (len && s[0] == '[') {
    const char *rb = memchr(s, ']', len);
    if (!rb || mg_ip_parse(s + 1, (size_t)(rb - s - 1), &family, h->b) < 0 || family != AF_INET6) return -1;
    if (rb + 1 < end && rb[1] != ':') return -1;
    if (rb + 1 < end) port = rb + 2;
  } else {
    const char *colon = memchr(s, ':', len);
    size_t al = colon ? (size_t)(colon - s) : len;
    if (mg_ip_parse(s, al, &family, h->b) < 0 || family != AF_INET) return -1;
    if (colon) port = colon + 1;
  }
  h->family = family;
  h->port = 0;
  if (port && !(port < end && *port == '_')) {
    long v = 0;
    if (port >= end || end - port > 5) return -1;
    for (const char *q = port; q < end; q++) {
      if (*q < '0' || *q > '9') return -1;
      v = v * 10 + (*q - '0');
    }
    if (v < 1 || v > 65535) return -1;
    h->port = (int)v;
  }
  return 0;
}

/* ---- the walk ---------------------------------------------------------------------------- */

typedef struct {
  const mg_realip_cfg_t *r;
  hop_t best;
  int found, stop;
} walk_t;

/* One hop from the right: 1 to go on to the next, 0 when the walk ends. */
static int walk_hop(walk_t *w, int ok, const hop_t *h) {
  if (!ok) return 0;
  w->best = *h;
  w->found = 1;
  return w->r->recursive && mg_cidr_match(w->r->from, w->r->nfrom, h->family, h->b);
}

/* The hops of one header value, from the right. Returns 1 to go on to an earlier header. */
static int walk_value(walk_t *w, mg_req_t *req, const char *v) {
  hop_t h;
  const char *tok;
  size_t tl;
  if (w->r->kind == MG_REALIP_FORWARDED) {
    enum { MAX = 64 };
    const char **toks = mg_pool_alloc(&req->pool, MAX * sizeof *toks);
    size_t *lens = mg_pool_alloc(&req->pool, MAX * sizeof *lens);
    int n = fwd_split(v, toks, lens, MAX);
    if (n == 0) return walk_hop(w, 0, NULL);
    while (n-- > 0)
      if (!walk_hop(w, toks[n] && fwd_node(toks[n], lens[n], &h) == 0, &h)) return 0;
    return 1;
  }
  xff_iter_t it = {v, strlen(v), 1};
  while (xff_next(&it, &tok, &tl))
    if (!walk_hop(w, mg_ip_port_parse(tok, tl, &h.family, h.b, &h.port) == 0, &h)) return 0;
  return 1;
}

void mg_realip_apply(mg_req_t *req) {
  const mg_realip_cfg_t *r = req->realip ? req->realip : &req->cfg->set.realip;
  if (!r->nfrom) return;
  walk_t w = {.r = r};
  int port;
  const char *peer = req->peer ? req->peer : req->remote;
  if (mg_ip_port_parse(peer, strlen(peer), &w.best.family, w.best.b, &port) < 0) w.best.family = 0;
  if (!mg_cidr_match(r->from, r->nfrom, w.best.family, w.best.b)) return;
  const mg_fields_t *f = &req->headers;
  int list = r->kind == MG_REALIP_XFF || r->kind == MG_REALIP_FORWARDED;
  if (list) {
    /* Every header of the name, the last first: one list of hops as if joined. */
    for (int i = f->n - 1; i >= 0; i--) {
      if (!mg_name_eq(f->v[i].name, r->header)) continue;
      if (!walk_value(&w, req, f->v[i].value)) break;
    }
  } else {
    const char *v = mg_fields_get(f, r->header);
    if (v) walk_value(&w, req, v);
  }
  if (!w.found) return;
  char text[MG_ADDR_TEXT];
  mg_addr_ntop(w.best.family, w.best.b, text, sizeof text);
  req->remote = mg_pool_strdup(&req->pool, text);
  req->remote_port = (uint16_t)w.best.port;
  req->remote_no_port = w.best.port == 0;
}
