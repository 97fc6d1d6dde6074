/* cgi_env: see cgi_env.h. */
#include "traceparent.h"
#include "cgi_env.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "path.h"
#include "route.h"
#include "route_re.h"

int mg_cgi_header_name(const char *field, char *out) {
  if (mg_name_eq(field, "Content-Length") || mg_name_eq(field, "Content-Type") || mg_name_eq(field, "Proxy") || !*field)
    return -1;
  memcpy(out, "HTTP_", 5);
  char *o = out + 5;
  for (const char *p = field; *p; p++) {
    char c = *p;
    if (c >= 'a' && c <= 'z') *o++ = (char)(c - 32);
    else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) *o++ = c;
    else if (c == '-') *o++ = '_';
    else return -1; /* '_' and anything else: could spoof another field (X_Forwarded_For) */
  }
  *o = 0;
  return 0;
}

void mg_cgi_split_path(mg_pool_t *pool, const char *path, size_t len, const char *prefix, size_t plen, int pathinfo,
                       const char **script_name, const char **path_info) {
  if (!pathinfo) {
    char *s = mg_pool_alloc(pool, len + 1);
    mg_path_decode(path, len, s);
    *script_name = s;
    *path_info = NULL;
    return;
  }
  /* The prefix matched the normalized path, so it is a prefix of it byte for byte; split
   * there, before the prefix's trailing slash, and decode each half on its own. */
  size_t cut = plen;
  if (cut > len) cut = len;
  if (cut > 0 && prefix[cut - 1] == '/') cut--;
  char *s = mg_pool_alloc(pool, cut + 1);
  mg_path_decode(path, cut, s);
  char *pi = mg_pool_alloc(pool, len - cut + 2);
  if (len == cut) {
    pi[0] = 0;
  } else {
    mg_path_decode(path + cut, len - cut, pi);
  }
  *script_name = s;
  *path_info = pi;
}

static void add(mg_vars_t *v, const char *name, const char *value) {
  mg_vars_add(v, name, strlen(name), value, strlen(value));
}

void mg_cgi_env_build(mg_req_t *req, uint64_t content_length, mg_vars_t *v) {
  mg_pool_t *pool = &req->pool;
  const mg_route_t *r = req->route;
  char num[24];
  num[mg_fmt_u64(num, content_length)] = 0;
  add(v, "CONTENT_LENGTH", mg_pool_strdup(pool, num));
  add(v, "SCGI", "1");
  add(v, "REQUEST_METHOD", req->method);
  add(v, "REQUEST_URI", req->target);
  add(v, "QUERY_STRING", req->query ? req->query : "");
  int pathinfo = r->pathinfo || req->env_pathinfo;
  const char *script_name, *path_info;
  if (r->re && pathinfo) {
    /* A regex route: SCRIPT_NAME is the path up to the end of the match, PATH_INFO the rest. */
    long ov[2];
    size_t end = mg_route_re_match(r, req->path, req->path_len, ov, 1) > 0 ? (size_t)ov[1] : req->path_len;
    mg_cgi_split_path(pool, req->path, req->path_len, req->path, end, 1, &script_name, &path_info);
  } else if (!mg_route_matches(r, req->path, req->path_len)) {
    /* Handed over by a static route's fallback from outside this route's prefix: the app is
     * mounted at the root for this request, the whole path is PATH_INFO. */
    mg_cgi_split_path(pool, req->path, req->path_len, "", 0, pathinfo, &script_name, &path_info);
  } else {
    mg_cgi_split_path(pool, req->path, req->path_len, r->match, r->match_len, pathinfo && !r->exact, &script_name,
                      &path_info);
  }
  add(v, "SCRIPT_NAME", script_name);
  if (path_info) add(v, "PATH_INFO", path_info);
  if (req->http_major == 1 && req->http_minor <= 1) {
    add(v, "SERVER_PROTOCOL", req->http_minor ? "HTTP/1.1" : "HTTP/1.0");
  } else {
    char proto[16];
    snprintf(proto, sizeof proto, "HTTP/%d.%d", req->http_major, req->http_minor);
    add(v, "SERVER_PROTOCOL", mg_pool_strdup(pool, proto));
  }
  add(v, "SERVER_NAME", req->host ? req->host : req->cfg->set.server_name);
  char addr[64];
  int port;
  mg_req_local(req, addr, sizeof addr, &port);
  num[mg_fmt_u64(num, (uint64_t)(port > 0 ? port : 0))] = 0;
  add(v, "SERVER_PORT", mg_pool_strdup(pool, num));
  add(v, "SERVER_ADDR", mg_pool_strdup(pool, addr));
  add(v, "SERVER_SOFTWARE", "moongate/" MG_VERSION);
  add(v, "REMOTE_ADDR", req->remote);
  num[mg_fmt_u64(num, req->remote_port)] = 0;
  /* Empty when realip took an address without a port, as nginx's $remote_port. */
  add(v, "REMOTE_PORT", req->remote_no_port ? "" : mg_pool_strdup(pool, num));
  add(v, "REQUEST_SCHEME", req->is_tls ? "https" : "http");
  if (content_length || !req->redirects) {
    const char *ct = mg_fields_get(&req->headers, "Content-Type");
    if (ct && !req->redirects) add(v, "CONTENT_TYPE", ct);
  }
  if (req->is_tls) add(v, "HTTPS", "on");
  if (req->redirects) {
    /* The status an error page stands for (Apache's, for an ErrorDocument), else 200. */
    num[mg_fmt_u64(num, (uint64_t)(req->errpage_status ? req->errpage_status : 200))] = 0;
    add(v, "REDIRECT_STATUS", mg_pool_strdup(pool, num));
    add(v, "REDIRECT_URL", req->redirect_url ? req->redirect_url : "");
    add(v, "REDIRECT_QUERY_STRING", req->redirect_query ? req->redirect_query : "");
    add(v, "REDIRECT_REQUEST_METHOD", req->redirect_method ? req->redirect_method : "");
  }
  /* One HTTP_* per field name, in the order names first appear; repeats joined. */
  const mg_fields_t *h = &req->headers;
  for (int i = 0; i < h->n; i++) {
    const char *name = h->v[i].name;
    size_t nl = strlen(name);
    char *hn = mg_pool_alloc(pool, nl + 6);
    if (mg_cgi_header_name(name, hn) < 0) continue;
    if (!r->pass_authorization && mg_name_eq(name, "Authorization")) continue;
    int seen = 0;
    for (int k = 0; k < i && !seen; k++) seen = mg_name_eq(h->v[k].name, name);
    if (seen) continue;
    const char *value = mg_fields_join(pool, h, name, mg_name_eq(name, "Cookie") ? "; " : ", ");
    mg_vars_add(v, hn, nl + 5, value, strlen(value));
  }
  /* SPEC 20: the backend's parent span is moongate's; tracestate goes on as received (a hook
   * sees both in req.headers and ngx.var.traceparent, and req.env may still override). */
  if (req->traced) {
    char *tp = mg_pool_alloc(pool, 56);
    mg_traceparent_format(tp, req->trace_id, req->span_id, req->trace_flags);
    mg_vars_set(v, "HTTP_TRACEPARENT", 16, tp, 55);
  }
  for (int i = 0; i < r->nenv; i++) {
    const mg_kv_t *kv = &r->env[i];
    mg_vars_set(v, kv->name, strlen(kv->name), kv->value, kv->value ? strlen(kv->value) : 0);
  }
  /* req.env, exported by the hooks' side as plain data (lua_request.c) */
  for (int i = 0; i < req->nenv_list; i++) {
    const mg_kv_t *kv = &req->env_list[i];
    mg_vars_set(v, kv->name, strlen(kv->name), kv->value, kv->value ? strlen(kv->value) : 0);
  }
  /* proxy-scgi-pathinfo is an instruction to the gateway, not a variable for the app. */
  mg_vars_set(v, "proxy-scgi-pathinfo", 19, NULL, 0);
}
