/* lua_ngx_var: ngx.var, nginx's variables read from the request (docs/openresty.md, "ngx.var").
 *
 * Names are read case-insensitively, as nginx does. Every value is a string (nginx's
 * variables are), or nil when the request has none (no query: ngx.var.args is nil) or the name
 * is not a variable moongate knows, as OpenResty gives nil for an undefined variable. Writing:
 * `args` and `uri` in rewrite and access; any other name raises OpenResty's "variable not found
 * for writing" (moongate's configuration declares no variables: ngx.ctx is the place for a
 * request's own values). */
#include <arpa/inet.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "fields.h"
#include "lua_ngx.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "path.h"
#include "traceparent.h"


static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* nginx's $uri is the path fully decoded: every %XX, '+' kept. */
static void push_decoded(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    int h, l;
    if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
      luaL_addchar(&b, (char)(h * 16 + l));
      i += 2;
    } else {
      luaL_addchar(&b, s[i]);
    }
  }
  luaL_pushresult(&b);
}

/* $arg_NAME: the raw value of the first NAME=... of the query (the name case-insensitive, as
 * nginx's ngx_http_arg: a bare "NAME" without '=' is not found). */
static int push_arg(lua_State *L, const char *q, const char *name, size_t nl) {
  if (!q || !nl) return 0;
  size_t ql = strlen(q);
  for (size_t i = 0; i + nl < ql + 1; i++) {
    if ((i == 0 || q[i - 1] == '&') && i + nl < ql && q[i + nl] == '=' && strncasecmp(q + i, name, nl) == 0) {
      const char *v = q + i + nl + 1, *end = strchr(v, '&');
      lua_pushlstring(L, v, end ? (size_t)(end - v) : strlen(v));
      return 1;
    }
  }
  return 0;
}

/* $http_NAME: the request field NAME ('_' read as '-'); the first of a repeated field, except
 * Cookie ("; ") and X-Forwarded-For (", "), joined as nginx 1.22 does. */
static int push_http(lua_State *L, mg_req_t *req, const char *name, size_t nl) {
  char hn[256];
  if (nl >= sizeof hn) return 0;
  for (size_t i = 0; i < nl; i++) hn[i] = name[i] == '_' ? '-' : name[i];
  hn[nl] = 0;
  const char *sep = strcasecmp(hn, "cookie") == 0 ? "; " : strcasecmp(hn, "x-forwarded-for") == 0 ? ", " : NULL;
  const char *v = sep ? mg_fields_join(&req->pool, &req->headers, hn, sep) : mg_fields_get(&req->headers, hn);
  if (!v) return 0;
  lua_pushstring(L, v);
  return 1;
}

/* $cookie_NAME: the value of cookie NAME in the Cookie fields. */
static int push_cookie(lua_State *L, mg_req_t *req, const char *name, size_t nl) {
  const char *c = mg_fields_join(&req->pool, &req->headers, "Cookie", "; ");
  if (!c || !nl) return 0;
  const char *p = c;
  while (*p) {
    while (*p == ' ' || *p == ';' || *p == '\t') p++;
    const char *k = p;
    while (*p && *p != '=' && *p != ';') p++;
    size_t kl = (size_t)(p - k);
    while (kl && (k[kl - 1] == ' ' || k[kl - 1] == '\t')) kl--;
    if (*p != '=') continue;
    const char *v = ++p;
    while (*p && *p != ';') p++;
    if (kl == nl && strncasecmp(k, name, nl) == 0) {
      lua_pushlstring(L, v, (size_t)(p - v));
      return 1;
    }
  }
  return 0;
}

static int push_msec(lua_State *L, double s) {
  char out[32];
  snprintf(out, sizeof out, "%.3f", s);
  lua_pushstring(L, out);
  return 1;
}

static int pushf_int(lua_State *L, long long v) {
  char out[24];
  snprintf(out, sizeof out, "%lld", v);
  lua_pushstring(L, out);
  return 1;
}

static int var_get(lua_State *L) {
  size_t kl;
  const char *key = luaL_checklstring(L, 2, &kl);
  char k[256];
  if (kl >= sizeof k) return 0;
  for (size_t i = 0; i <= kl; i++) k[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
  mg_req_t *req = mg_lua_req_running(L);
  if (strncmp(k, "arg_", 4) == 0) return push_arg(L, req->query, k + 4, kl - 4);
  if (strncmp(k, "http_", 5) == 0) return push_http(L, req, k + 5, kl - 5);
  if (strncmp(k, "cookie_", 7) == 0) return push_cookie(L, req, k + 7, kl - 7);
  if (strncmp(k, "sent_http_", 10) == 0) {
    char hn[256];
    for (size_t i = 10; i <= kl; i++) hn[i - 10] = k[i] == '_' ? '-' : k[i];
    const char *v = mg_fields_get(&req->resp_headers, hn);
    if (!v) return 0;
    lua_pushstring(L, v);
    return 1;
  }
  char addr[64];
  int port;
  switch (k[0]) {
    case 'a':
      if (strcmp(k, "args") == 0) return req->query ? (lua_pushstring(L, req->query), 1) : 0;
      break;
    case 'b':
      if (strcmp(k, "body_bytes_sent") == 0 || strcmp(k, "bytes_sent") == 0) return pushf_int(L, (long long)req->bytes_sent);
      if (strcmp(k, "binary_remote_addr") == 0) {
        unsigned char bin[16];
        if (inet_pton(AF_INET, req->remote, bin) == 1) return lua_pushlstring(L, (char *)bin, 4), 1;
        if (inet_pton(AF_INET6, req->remote, bin) == 1) return lua_pushlstring(L, (char *)bin, 16), 1;
        return 0;
      }
      break;
    case 'c':
      if (strcmp(k, "content_length") == 0) return push_http(L, req, "content_length", 14);
      if (strcmp(k, "content_type") == 0) return push_http(L, req, "content_type", 12);
      break;
    case 'd':
      if (strcmp(k, "document_uri") == 0) return push_decoded(L, req->path, req->path_len), 1;
      break;
    case 'h':
      if (strcmp(k, "host") == 0) return lua_pushstring(L, req->host ? req->host : req->cfg->set.server_name), 1;
      if (strcmp(k, "hostname") == 0) {
        char h[256] = "";
        gethostname(h, sizeof h - 1);
        return lua_pushstring(L, h), 1;
      }
      if (strcmp(k, "https") == 0) return lua_pushstring(L, req->is_tls ? "on" : ""), 1;
      /* nginx's $http2: the protocol ALPN or the preface chose, "" for HTTP/1.x */
      if (strcmp(k, "http2") == 0) return lua_pushstring(L, req->http_major != 2 ? "" : req->is_tls ? "h2" : "h2c"), 1;
      break;
    case 'i':
      if (strcmp(k, "is_args") == 0) return lua_pushstring(L, req->query ? "?" : ""), 1;
      break;
    case 'm':
      if (strcmp(k, "msec") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return push_msec(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
      }
      break;
    case 'n':
      if (strcmp(k, "nginx_version") == 0) return lua_pushstring(L, MG_VERSION), 1;
      break;
    case 'p':
      if (strcmp(k, "pid") == 0) return pushf_int(L, (long long)getpid());
      if (strcmp(k, "parent_span_id") == 0)
        return req->traced && req->parent_span_id[0] ? (lua_pushstring(L, req->parent_span_id), 1) : 0;
      break;
    case 'q':
      if (strcmp(k, "query_string") == 0) return req->query ? (lua_pushstring(L, req->query), 1) : 0;
      break;
    case 'r':
      if (strcmp(k, "request_uri") == 0) return lua_pushstring(L, req->target ? req->target : ""), 1;
      if (strcmp(k, "request_method") == 0) return lua_pushstring(L, req->method), 1;
      if (strcmp(k, "request_length") == 0) return pushf_int(L, (long long)req->request_length);
      if (strcmp(k, "remote_addr") == 0) return lua_pushstring(L, req->remote), 1;
      /* As nginx's $remote_port: empty when realip took an address without a port. */
      if (strcmp(k, "remote_port") == 0) return req->remote_no_port ? (lua_pushliteral(L, ""), 1) : pushf_int(L, req->remote_port);
      /* nginx's realip variables: the peer's address before realip. */
      if (strcmp(k, "realip_remote_addr") == 0) return lua_pushstring(L, req->peer ? req->peer : req->remote), 1;
      if (strcmp(k, "realip_remote_port") == 0) return pushf_int(L, req->peer ? req->peer_port : req->remote_port);
      if (strcmp(k, "request_id") == 0) return lua_pushstring(L, req->id), 1;
      if (strcmp(k, "request_time") == 0) return push_msec(L, (double)(uv_hrtime() - req->start_ns) / 1e9);
      if (strcmp(k, "request") == 0) {
        lua_pushfstring(L, "%s %s HTTP/%d.%d", req->orig_method ? req->orig_method : req->method,
                        req->target ? req->target : "", req->http_major, req->http_minor);
        return 1;
      }
      if (strcmp(k, "remote_user") == 0) return 0;
      break;
    case 's':
      if (strcmp(k, "scheme") == 0) return lua_pushstring(L, req->is_tls ? "https" : "http"), 1;
      if (strcmp(k, "server_addr") == 0) return mg_req_local(req, addr, sizeof addr, &port) < 0 ? 0 : (lua_pushstring(L, addr), 1);
      if (strcmp(k, "server_port") == 0) return mg_req_local(req, addr, sizeof addr, &port) < 0 ? 0 : pushf_int(L, port);
      if (strcmp(k, "server_name") == 0) return lua_pushstring(L, req->cfg->set.server_name), 1;
      if (strcmp(k, "server_protocol") == 0) return lua_pushfstring(L, "HTTP/%d.%d", req->http_major, req->http_minor), 1;
      if (strcmp(k, "status") == 0) return pushf_int(L, req->head_sent || req->aborted ? mg_req_logged_status(req) : 0);
      if (strcmp(k, "span_id") == 0) return req->traced ? (lua_pushstring(L, req->span_id), 1) : 0;
      break;
    case 't':
      if (strcmp(k, "time_local") == 0) return mg_ngx_push_time(L, "%d/%b/%Y:%H:%M:%S %z", 1);
      if (strcmp(k, "time_iso8601") == 0) return mg_ngx_push_time(L, "%Y-%m-%dT%H:%M:%S%z", 1);
      /* SPEC 20: trace context (core/trace.h); nil with tracing off. */
      if (strcmp(k, "trace_id") == 0) return req->traced ? (lua_pushstring(L, req->trace_id), 1) : 0;
      if (strcmp(k, "traceparent") == 0) { /* what the backend gets as HTTP_TRACEPARENT */
        if (!req->traced) return 0;
        char tp[56];
        mg_traceparent_format(tp, req->trace_id, req->span_id, req->trace_flags);
        return lua_pushstring(L, tp), 1;
      }
      break;
    case 'o': /* nginx's otel module names */
      if (strcmp(k, "otel_trace_id") == 0) return req->traced ? (lua_pushstring(L, req->trace_id), 1) : 0;
      if (strcmp(k, "otel_span_id") == 0) return req->traced ? (lua_pushstring(L, req->span_id), 1) : 0;
      if (strcmp(k, "otel_parent_id") == 0)
        return req->traced && req->parent_span_id[0] ? (lua_pushstring(L, req->parent_span_id), 1) : 0;
      if (strcmp(k, "otel_parent_sampled") == 0)
        return req->traced && req->parent_span_id[0] ? (lua_pushstring(L, req->trace_flags & 1 ? "1" : "0"), 1) : 0;
      break;
    case 'u':
      if (strcmp(k, "uri") == 0) return push_decoded(L, req->path, req->path_len), 1;
      if (strcmp(k, "upstream_addr") == 0) return req->upstream_name ? (lua_pushstring(L, req->upstream_name), 1) : 0;
      if (strcmp(k, "upstream_status") == 0) return req->upstream_status ? pushf_int(L, req->upstream_status) : 0;
      if (strcmp(k, "upstream_response_time") == 0)
        return req->upstream_name ? push_msec(L, (double)req->upstream_usec / 1e6) : 0;
      break;
  }
  return 0;
}

static int var_set(lua_State *L) {
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  mg_req_t *req = mg_lua_req_running(L);
  int rw = MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT;
  if (strcasecmp(k, "args") == 0) {
    if (!(mg_lua_phase_now & rw))
      return luaL_error(L, "API disabled in the context of %s: writing ngx.var.args", mg_lua_phase_name(mg_lua_phase_now));
    if (lua_isnil(L, 3)) req->query = NULL;
    else req->query = mg_pool_strdup(&req->pool, luaL_checkstring(L, 3));
    return 0;
  }
  if (strcasecmp(k, "uri") == 0) {
    if (!(mg_lua_phase_now & (MG_PH_REWRITE | MG_PH_ACCESS)))
      return luaL_error(L, "API disabled in the context of %s: writing ngx.var.uri", mg_lua_phase_name(mg_lua_phase_now));
    size_t len;
    const char *uri = luaL_checklstring(L, 3, &len);
    char *path, *query;
    size_t pl;
    if (uri[0] != '/' || mg_target_parse(&req->pool, uri, len, req->cfg->set.allow_encoded_slashes, &path, &pl, &query) < 0)
      return luaL_error(L, "ngx.var.uri must be a local path starting with '/', got '%s'", uri);
    req->path = path, req->path_len = pl;
    return 0;
  }
  return luaL_error(L,
                    "variable \"%s\" not found for writing; moongate's ngx.var can write \"args\" and \"uri\" only "
                    "(keep a request's own values in ngx.ctx)",
                    k);
}

void mg_ngx_var_open(lua_State *L) {
  lua_pushcfunction(L, var_get);
  lua_setfield(L, -2, "var_get");
  lua_pushcfunction(L, var_set);
  lua_setfield(L, -2, "var_set");
}
