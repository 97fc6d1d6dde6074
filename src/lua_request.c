/* lua_request: see lua_request.h.
 *
 * `req` is a full userdata holding the request pointer; it is cleared when the request is
 * released, so a hook that kept `req` in a global and touches it later gets an error, never
 * freed memory. Fields are read through __index on demand, so a hook pays only for what it
 * reads. `req.headers` and `res.headers` are small proxies over the C header lists.
 *
 * Every API entry checks the phase it is called in, as lua-nginx-module does, and raises
 * "API disabled in the context of <phase>" otherwise. */
#include "lua_request.h"

#include <assert.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "balancer.h"
#include "log.h"
#include "lua_vm.h"
#include "path.h"
#include "redirect.h"
#include "server.h"

enum { PH_REWRITE = 1, PH_ACCESS = 2, PH_BALANCER = 4, PH_HEADER_FILTER = 8, PH_LOG = 16, PH_CONTENT = 32, PH_TIMER = 64 };
static const char *phase_label[] = {"rewrite", "access", "balancer", "header_filter", "log", "content", "timer"};

#define REQ_MT "moongate.req"
#define HDR_MT "moongate.headers"
#define RES_MT "moongate.res"

typedef struct {
  mg_req_t *req;
} req_box_t;

typedef struct {
  mg_req_t *req;
  int response; /* 0: request headers, 1: response headers */
} hdr_box_t;

/* What req:exit() asked for, kept until the hook returns. */
typedef struct {
  int status;
  char *body;
  size_t body_len;
  int redirect;
  char *location;
} exit_t;

static exit_t *exit_of(mg_req_t *req) {
  if (!req->lua_exit) req->lua_exit = mg_pool_alloc(&req->pool, sizeof(exit_t)), memset(req->lua_exit, 0, sizeof(exit_t));
  return req->lua_exit;
}

static const char *phase_name(int ph) {
  for (int i = 0; i < 7; i++)
    if (ph == 1 << i) return phase_label[i];
  return "init";
}

static mg_req_t *check_req(lua_State *L, int idx) {
  req_box_t *b = luaL_checkudata(L, idx, REQ_MT);
  if (!b->req) luaL_error(L, "request object used after its request ended");
  return b->req;
}

static void check_phase(lua_State *L, mg_req_t *req, int allowed, const char *what) {
  if (!(req->phase & allowed)) luaL_error(L, "API disabled in the context of %s: %s", phase_name(req->phase), what);
}

int mg_lua_has_phase(const mg_req_t *req, int phase) {
  if (req->cfg->hooks[phase].n) return 1;
  return req->route && req->route->hooks[phase].n;
}

/* ---- headers proxy ----------------------------------------------------------------------- */

static mg_fields_t *hdr_fields(lua_State *L, hdr_box_t **out) {
  hdr_box_t *b = luaL_checkudata(L, 1, HDR_MT);
  if (!b->req) luaL_error(L, "headers used after their request ended");
  *out = b;
  return b->response ? &b->req->resp_headers : &b->req->headers;
}

static int hdr_index(lua_State *L) {
  hdr_box_t *b;
  mg_fields_t *f = hdr_fields(L, &b);
  const char *name = luaL_checkstring(L, 2);
  const char *v = mg_fields_join(&b->req->pool, f, name, strcasecmp(name, "Cookie") == 0 ? "; " : ", ");
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  return 1;
}

static int hdr_newindex(lua_State *L) {
  hdr_box_t *b;
  mg_fields_t *f = hdr_fields(L, &b);
  size_t nl;
  const char *name = luaL_checklstring(L, 2, &nl);
  if (!mg_http_is_token(name, nl)) return luaL_error(L, "bad header name '%s'", name);
  if (b->response ? b->req->head_sent : 0) return luaL_error(L, "response headers are already sent");
  if (!b->response && !(b->req->phase & (PH_REWRITE | PH_ACCESS | PH_BALANCER)))
    return luaL_error(L, "API disabled in the context of %s: setting request headers", phase_name(b->req->phase));
  if (b->response && !(b->req->phase & (PH_HEADER_FILTER | PH_CONTENT | PH_ACCESS | PH_REWRITE)))
    return luaL_error(L, "API disabled in the context of %s: setting response headers", phase_name(b->req->phase));
  if (lua_isnil(L, 3)) {
    mg_fields_set(&b->req->pool, f, name, NULL);
    return 0;
  }
  size_t vl;
  const char *v = luaL_checklstring(L, 3, &vl);
  for (size_t i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) return luaL_error(L, "header value for '%s' holds CR, LF or NUL", name);
  mg_fields_set(&b->req->pool, f, name, v);
  return 0;
}

/* One proxy per request and list, made on first use and kept in the registry, so repeated
 * `req.headers[...]` allocate nothing, and so release can detach it from the request. */
static int hdr_push(lua_State *L, mg_req_t *req, int response) {
  int *ref = &req->hdr_ref[response];
  if (*ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    return 1;
  }
  hdr_box_t *b = lua_newuserdata(L, sizeof *b);
  b->req = req, b->response = response;
  luaL_getmetatable(L, HDR_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* ---- req ------------------------------------------------------------------------------------- */

static int push_ref_table(lua_State *L, int *ref) {
  if (*ref == LUA_NOREF) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
  return 1;
}

static int req_exit(lua_State *L);
static int req_redirect(lua_State *L);

/* req:headers() / res:headers(): a new plain table, lowercase names, a list for a repeated
 * field (SPEC 14). A copy: changing it changes nothing; req.headers is the way to edit. */
static int push_fields_table(lua_State *L, const mg_fields_t *f) {
  lua_createtable(L, 0, f->n);
  for (int i = 0; i < f->n; i++) {
    /* Field names can be as long as max_header_size: lower-case them through a Lua buffer. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *c = f->v[i].name; *c; c++) luaL_addchar(&b, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
    luaL_pushresult(&b);                  /* t name */
    lua_pushvalue(L, -1);                 /* t name name */
    lua_rawget(L, -3);                    /* t name old */
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushstring(L, f->v[i].value);   /* t name value */
      lua_rawset(L, -3);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      lua_createtable(L, 2, 0);           /* t name old list */
      lua_insert(L, -2);                  /* t name list old */
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, f->v[i].value);
      lua_rawseti(L, -2, 2);              /* t name list */
      lua_rawset(L, -3);
    } else {
      lua_pushstring(L, f->v[i].value);   /* t name list value */
      lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
      lua_pop(L, 2);
    }
  }
  return 1;
}

/* `req:headers()` is `req.headers(req)`: the proxy's __call gives the plain copy. */
static int hdr_call(lua_State *L) {
  hdr_box_t *b;
  mg_fields_t *f = hdr_fields(L, &b);
  return push_fields_table(L, f);
}

static int req_index(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  int port;
  switch (k[0]) {
    case 'c':
      if (strcmp(k, "ctx") == 0) return push_ref_table(L, &req->ctx_ref);
      break;
    case 'e':
      if (strcmp(k, "env") == 0) return push_ref_table(L, &req->env_ref);
      if (strcmp(k, "exit") == 0) return lua_pushcfunction(L, req_exit), 1;
      break;
    case 'h':
      if (strcmp(k, "headers") == 0) return hdr_push(L, req, 0);
      if (strcmp(k, "host") == 0) return req->host ? lua_pushstring(L, req->host) : lua_pushnil(L), 1;
      if (strcmp(k, "http_version") == 0) return lua_pushfstring(L, "%d.%d", req->http_major, req->http_minor), 1;
      break;
    case 'i':
      if (strcmp(k, "id") == 0) return lua_pushstring(L, req->id), 1;
      break;
    case 'm':
      if (strcmp(k, "method") == 0) return lua_pushstring(L, req->method), 1;
      break;
    case 'q':
      if (strcmp(k, "query") == 0) return req->query ? lua_pushstring(L, req->query) : lua_pushnil(L), 1;
      break;
    case 'r':
      if (strcmp(k, "raw_uri") == 0) return lua_pushstring(L, req->target), 1;
      if (strcmp(k, "remote_addr") == 0) return lua_pushstring(L, mg_req_remote(req, &port)), 1;
      if (strcmp(k, "remote_port") == 0) return mg_req_remote(req, &port), lua_pushinteger(L, port), 1;
      if (strcmp(k, "route") == 0) return req->route ? lua_pushstring(L, req->route->match) : lua_pushnil(L), 1;
      if (strcmp(k, "redirect") == 0) return lua_pushcfunction(L, req_redirect), 1;
      break;
    case 's':
      if (strcmp(k, "scheme") == 0) return lua_pushliteral(L, "http"), 1;
      break;
    case 'u':
      if (strcmp(k, "uri") == 0) return lua_pushlstring(L, req->path, req->path_len), 1;
      break;
  }
  return luaL_error(L, "req has no field '%s'", k);
}

static int req_newindex(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "uri") == 0) {
    check_phase(L, req, PH_REWRITE, "setting req.uri");
    size_t len;
    const char *uri = luaL_checklstring(L, 3, &len);
    const char *path, *query;
    size_t pl, ql;
    if (mg_target_split(uri, len, &path, &pl, &query, &ql) < 0 || uri[0] != '/')
      return luaL_error(L, "req.uri must be a local path starting with '/', got '%s'", uri);
    char *norm = mg_pool_alloc(&req->pool, pl + 2);
    int n = mg_path_normalize(path, pl, norm, req->cfg->set.allow_encoded_slashes);
    if (n < 0) return luaL_error(L, "req.uri '%s' is not a valid path", uri);
    req->path = norm, req->path_len = (size_t)n;
    if (query) req->query = mg_pool_strndup(&req->pool, query, ql);
    return 0;
  }
  if (strcmp(k, "query") == 0) {
    check_phase(L, req, PH_REWRITE | PH_ACCESS, "setting req.query");
    req->query = lua_isnil(L, 3) ? NULL : mg_pool_strdup(&req->pool, luaL_checkstring(L, 3));
    return 0;
  }
  if (strcmp(k, "method") == 0) {
    check_phase(L, req, PH_REWRITE | PH_ACCESS, "setting req.method");
    size_t ml;
    const char *m = luaL_checklstring(L, 3, &ml);
    if (!mg_http_is_token(m, ml)) return luaL_error(L, "req.method must be an HTTP token");
    req->method = mg_pool_strdup(&req->pool, m);
    return 0;
  }
  return luaL_error(L, "req.%s cannot be assigned", k);
}

/* req:exit(status[, body[, headers]]) */
static int req_exit(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  check_phase(L, req, PH_REWRITE | PH_ACCESS | PH_BALANCER | PH_CONTENT, "req:exit");
  int status = (int)luaL_checkinteger(L, 2);
  if (status < 100 || status > 599) return luaL_argerror(L, 2, "status must be from 100 to 599");
  size_t bl = 0;
  const char *body = luaL_optlstring(L, 3, NULL, &bl);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      size_t nl, vl;
      const char *n = lua_tolstring(L, -2, &nl);
      const char *v = lua_tolstring(L, -1, &vl);
      if (!n || !v || !mg_http_is_token(n, nl) || strpbrk(v, "\r\n") || strlen(v) != vl)
        return luaL_error(L, "bad argument #4 to 'exit' (header names must be tokens, values without CR/LF)");
      mg_fields_set(&req->pool, &req->resp_headers, n, v);
      lua_pop(L, 1);
    }
  }
  exit_t *e = exit_of(req);
  e->status = status;
  e->body = body ? mg_pool_strndup(&req->pool, body, bl) : NULL;
  e->body_len = bl;
  return 0;
}

/* req:redirect(uri): restart at a local URI once the hook returns. */
static int req_redirect(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  check_phase(L, req, PH_REWRITE | PH_ACCESS | PH_CONTENT, "req:redirect");
  const char *uri = luaL_checkstring(L, 2);
  if (uri[0] != '/') return luaL_argerror(L, 2, "a local URI starting with '/'");
  exit_t *e = exit_of(req);
  e->redirect = 1;
  e->location = mg_pool_strdup(&req->pool, uri);
  return 0;
}

/* ---- res ---------------------------------------------------------------------------------------- */

static int res_index(lua_State *L) {
  req_box_t *b = luaL_checkudata(L, 1, RES_MT);
  if (!b->req) return luaL_error(L, "response object used after its request ended");
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") == 0) return lua_pushinteger(L, b->req->status), 1;
  if (strcmp(k, "headers") == 0) return hdr_push(L, b->req, 1);
  if (strcmp(k, "bytes_sent") == 0) return lua_pushnumber(L, (lua_Number)b->req->bytes_sent), 1;
  return luaL_error(L, "res has no field '%s'", k);
}

static int res_newindex(lua_State *L) {
  req_box_t *b = luaL_checkudata(L, 1, RES_MT);
  if (!b->req) return luaL_error(L, "response object used after its request ended");
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") == 0) {
    check_phase(L, b->req, PH_HEADER_FILTER, "setting res.status");
    int s = (int)luaL_checkinteger(L, 3);
    if (s < 100 || s > 599) return luaL_error(L, "res.status must be from 100 to 599");
    b->req->status = s;
    return 0;
  }
  return luaL_error(L, "res.%s cannot be assigned", k);
}

/* ---- running hooks --------------------------------------------------------------------------------- */

static void ensure_metatables(lua_State *L) {
  if (luaL_newmetatable(L, REQ_MT)) {
    lua_pushcfunction(L, req_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, req_newindex);
    lua_setfield(L, -2, "__newindex");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, HDR_MT)) {
    lua_pushcfunction(L, hdr_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, hdr_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, hdr_call);
    lua_setfield(L, -2, "__call");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, RES_MT)) {
    lua_pushcfunction(L, res_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, res_newindex);
    lua_setfield(L, -2, "__newindex");
  }
  lua_pop(L, 1);
}

/* Pushes the request's userdata, creating it on first use. */
static void push_req(lua_State *L, mg_req_t *req) {
  if (req->self_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->self_ref);
    return;
  }
  ensure_metatables(L);
  req_box_t *b = lua_newuserdata(L, sizeof *b);
  b->req = req;
  luaL_getmetatable(L, REQ_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  req->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void push_res(lua_State *L, mg_req_t *req) {
  if (req->res_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->res_ref);
    return;
  }
  req_box_t *b = lua_newuserdata(L, sizeof *b);
  b->req = req;
  luaL_getmetatable(L, RES_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  req->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Detaches a cached userdata from the request and drops its reference. */
static void detach(lua_State *L, int *ref) {
  if (*ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
  *(void **)lua_touserdata(L, -1) = NULL; /* every box starts with its request pointer */
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

void mg_lua_req_release(mg_req_t *req) {
  if (req->self_ref == LUA_NOREF && req->env_ref == LUA_NOREF && req->ctx_ref == LUA_NOREF && req->res_ref == LUA_NOREF &&
      req->hdr_ref[0] == LUA_NOREF && req->hdr_ref[1] == LUA_NOREF)
    return;
  lua_State *L = req->cfg->L;
  /* A hook that kept req, res or a headers proxy past the request gets an error from it,
   * never freed memory. */
  detach(L, &req->self_ref);
  detach(L, &req->res_ref);
  detach(L, &req->hdr_ref[0]);
  detach(L, &req->hdr_ref[1]);
  luaL_unref(L, LUA_REGISTRYINDEX, req->env_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, req->ctx_ref);
  req->env_ref = req->ctx_ref = LUA_NOREF;
}

/* Calls one hook with the request (and the response, for header_filter and log). Returns 0,
 * or -1 after logging the Lua error. */
static int call_hook(mg_req_t *req, int ref, int phase_bit, int with_res) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  push_req(L, req);
  if (with_res) push_res(L, req);
  req->phase = phase_bit;
  char err[2048];
  int rc = mg_lua_call(L, with_res ? 2 : 1, 0, err, sizeof err);
  req->phase = 0;
  if (rc < 0) mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s hook: %s", phase_name(phase_bit), err);
  assert(lua_gettop(L) == top);
  (void)top;
  return rc;
}

/* Acts on req:exit / req:redirect. Returns 1 when the request was ended or redirected. */
static int take_exit(mg_req_t *req) {
  exit_t *e = req->lua_exit;
  if (!e || (!e->status && !e->redirect)) return 0;
  req->lua_exit = NULL;
  if (e->redirect) {
    mg_redirect_start(req, e->location);
    return 1;
  }
  if (e->body) {
    mg_req_respond(req, e->status, mg_fields_get(&req->resp_headers, "Content-Type") ? NULL : "text/plain", e->body, e->body_len);
  } else {
    /* A status with no body: an error page for error statuses, an empty body otherwise. */
    if (e->status >= 400) mg_req_error(req, e->status, NULL);
    else mg_req_respond(req, e->status, NULL, "", 0);
  }
  return 1;
}

/* Calls visit() for each hook of `phase`, the global ones first, then the route's; stops at
 * the first nonzero return and gives it back (0 when every hook ran). */
static int each_hook(mg_req_t *req, int phase, int (*visit)(mg_req_t *req, int ref, void *arg), void *arg) {
  const mg_hooks_t *lists[2] = {&req->cfg->hooks[phase], req->route ? &req->route->hooks[phase] : NULL};
  for (int l = 0; l < 2; l++)
    for (int i = 0; lists[l] && i < lists[l]->n; i++) {
      int rc = visit(req, lists[l]->refs[i], arg);
      if (rc) return rc;
    }
  return 0;
}

/* rewrite and access: an error ends the request with 500; req:exit ends the chain. */
static int visit_request_hook(mg_req_t *req, int ref, void *arg) {
  if (call_hook(req, ref, *(int *)arg, 0) < 0) {
    req->lua_exit = NULL;
    mg_req_error(req, 500, NULL);
    return 1;
  }
  return take_exit(req);
}

static int run_phase(mg_req_t *req, int phase, int phase_bit) {
  return each_hook(req, phase, visit_request_hook, &phase_bit);
}

int mg_lua_rewrite(mg_req_t *req) { return run_phase(req, MG_PHASE_REWRITE, PH_REWRITE); }

int mg_lua_access(mg_req_t *req) { return run_phase(req, MG_PHASE_ACCESS, PH_ACCESS); }

static int visit_header_filter(mg_req_t *req, int ref, void *arg) {
  (void)arg;
  if (call_hook(req, ref, PH_HEADER_FILTER, 1) < 0) {
    /* The head is not out yet: http.c replaces the response with a 500 page. */
    req->filter_failed = 1;
    return 1;
  }
  return 0;
}

void mg_lua_header_filter(mg_req_t *req) { each_hook(req, MG_PHASE_HEADER_FILTER, visit_header_filter, NULL); }

static int visit_log(mg_req_t *req, int ref, void *arg) {
  (void)arg;
  call_hook(req, ref, PH_LOG, 1); /* an error is logged; the response is already complete */
  return 0;
}

void mg_lua_log_phase(mg_req_t *req) { each_hook(req, MG_PHASE_LOG, visit_log, NULL); }

/* ---- balancer ------------------------------------------------------------------------------------- */

static void push_members(lua_State *L, mg_balancer_t *b) {
  uint64_t now = mg_now_ms();
  lua_createtable(L, b->nmembers, 0);
  for (int i = 0; i < b->nmembers; i++) {
    mg_member_t *m = &b->members[i];
    lua_createtable(L, 0, 9);
    lua_pushinteger(L, i + 1);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, m->addr.url);
    lua_setfield(L, -2, "name");
    if (m->route) lua_pushstring(L, m->route), lua_setfield(L, -2, "route");
    lua_pushinteger(L, m->lbfactor);
    lua_setfield(L, -2, "lbfactor");
    char flags[8] = "", *f = flags;
    if (m->flags & MG_MEMBER_DISABLED) *f++ = 'D';
    if (m->flags & MG_MEMBER_HOT_STANDBY) *f++ = 'H';
    if (m->flags & MG_MEMBER_STOPPED) *f++ = 'S';
    if (m->flags & MG_MEMBER_DRAINING) *f++ = 'N';
    *f = 0;
    lua_pushstring(L, flags);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)m->local.inflight);
    lua_setfield(L, -2, "inflight");
    lua_pushnumber(L, (lua_Number)m->local.requests);
    lua_setfield(L, -2, "requests");
    lua_pushnumber(L, (lua_Number)m->local.errors);
    lua_setfield(L, -2, "errors");
    lua_pushboolean(L, mg_member_usable(m, now));
    lua_setfield(L, -2, "usable");
    lua_rawseti(L, -2, i + 1);
  }
}

/* Reads a member choice at the top of the stack: a member view, an index or a URL. */
static int member_choice(lua_State *L, mg_balancer_t *b) {
  int idx = 0;
  if (lua_type(L, -1) == LUA_TNUMBER) idx = (int)lua_tointeger(L, -1);
  else if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "index");
    idx = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *url = lua_tostring(L, -1);
    for (int i = 0; i < b->nmembers; i++)
      if (strcmp(b->members[i].addr.url, url) == 0) idx = i + 1;
  }
  lua_pop(L, 1);
  return idx >= 1 && idx <= b->nmembers ? idx : 0;
}

static int call_chooser(mg_req_t *req, mg_balancer_t *b, int ref, const char *what) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  push_req(L, req);
  push_members(L, b);
  req->phase = PH_BALANCER;
  char err[2048];
  int rc = mg_lua_call(L, 2, 1, err, sizeof err);
  req->phase = 0;
  if (rc < 0) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s of balancer %s: %s", what, b->name, err);
    mg_req_error(req, 500, NULL);
    return -1;
  }
  int idx = member_choice(L, b);
  assert(lua_gettop(L) == top);
  (void)top;
  if (take_exit(req)) return -1;
  return idx;
}

static int visit_balancer_hook(mg_req_t *req, int ref, void *arg) {
  return call_chooser(req, arg, ref, "balancer hook");
}

int mg_lua_balancer(mg_req_t *req, mg_balancer_t *b, int method) {
  int idx = each_hook(req, MG_PHASE_BALANCER, visit_balancer_hook, b);
  if (idx != 0) return idx;
  if (method && b->method == MG_LB_LUA) return call_chooser(req, b, b->method_ref, "method");
  return 0;
}

/* ---- content handler ---------------------------------------------------------------------------- */

void mg_lua_content(mg_req_t *req) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->route->handler_ref);
  push_req(L, req);
  req->phase = PH_CONTENT;
  char err[2048];
  int rc = mg_lua_call(L, 1, 3, err, sizeof err);
  req->phase = 0;
  if (rc < 0) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in content handler of route %s: %s", req->route->decl, err);
    req->lua_exit = NULL;
    mg_req_error(req, 500, NULL);
    return;
  }
  if (take_exit(req)) {
    lua_settop(L, top);
    return;
  }
  int status = lua_isnil(L, -3) ? 200 : (int)lua_tointeger(L, -3);
  if (status < 100 || status > 599) {
    lua_settop(L, top);
    mg_log_error(MG_LOG_ERROR, req->id, "content handler of route %s returned a bad status", req->route->decl);
    mg_req_error(req, 500, NULL);
    return;
  }
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t nl, vl;
      const char *n = lua_tolstring(L, -2, &nl);
      const char *v = lua_tolstring(L, -1, &vl);
      if (n && v && mg_http_is_token(n, nl) && !strpbrk(v, "\r\n") && strlen(v) == vl)
        mg_fields_set(&req->pool, &req->resp_headers, n, v);
      else
        mg_log_error(MG_LOG_WARN, req->id, "content handler of route %s returned a bad header; dropped", req->route->decl);
      lua_pop(L, 1);
    }
  }
  size_t bl = 0;
  const char *body = lua_tolstring(L, -2, &bl);
  char *copy = body ? mg_pool_strndup(&req->pool, body, bl) : NULL;
  lua_settop(L, top);
  const char *ct = mg_fields_get(&req->resp_headers, "Content-Type") ? NULL : "text/plain";
  mg_req_respond(req, status, ct, copy ? copy : "", bl);
}

/* ---- req.env --------------------------------------------------------------------------------------- */

int mg_lua_env_pathinfo(mg_req_t *req) {
  if (req->env_ref == LUA_NOREF) return 0;
  lua_State *L = req->cfg->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->env_ref);
  lua_getfield(L, -1, "proxy-scgi-pathinfo");
  int on = !lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
  lua_pop(L, 2);
  return on;
}

void mg_lua_apply_env(mg_req_t *req, mg_vars_t *vars) {
  if (req->env_ref == LUA_NOREF) return;
  lua_State *L = req->cfg->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->env_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t nl, vl = 0;
    const char *n = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
    int remove = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    const char *v = remove ? NULL : lua_tolstring(L, -1, &vl);
    if (!n || (!v && !remove) || memchr(n, 0, nl) || (v && memchr(v, 0, vl)) || nl == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: entries must be name = string, number or false; one dropped");
    } else if (strcmp(n, "CONTENT_LENGTH") == 0 || strcmp(n, "SCGI") == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: %s cannot be overridden", n);
    } else {
      const char *pn = mg_pool_strndup(&req->pool, n, nl);
      const char *pv = v ? mg_pool_strndup(&req->pool, v, vl) : NULL;
      mg_vars_set(vars, pn, nl, pv, vl);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ---- init_worker and timers ------------------------------------------------------------------------ */

typedef struct {
  uv_timer_t t;
  mg_config_t *cfg;
  int ref;
} lua_timer_t;

static void on_lua_timer(uv_timer_t *t) {
  lua_timer_t *lt = (lua_timer_t *)t;
  lua_State *L = lt->cfg->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->ref);
  char err[2048];
  if (mg_lua_call(L, 0, 0, err, sizeof err) < 0) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in timer: %s", err);
}

int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop) {
  lua_State *L = cfg->L;
  ensure_metatables(L);
  for (int i = 0; i < cfg->init_worker.n; i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->init_worker.refs[i]);
    char err[2048];
    if (mg_lua_call(L, 0, 0, err, sizeof err) < 0) {
      mg_log_error(MG_LOG_ERROR, NULL, "Lua error in init_worker: %s", err);
      return -1;
    }
  }
  for (int i = 0; i < cfg->ntimers; i++) {
    lua_timer_t *lt = mg_calloc(1, sizeof *lt);
    lt->cfg = cfg, lt->ref = cfg->timers[i].ref;
    uv_timer_init(loop, &lt->t);
    uv_timer_start(&lt->t, on_lua_timer, (uint64_t)cfg->timers[i].ms, (uint64_t)cfg->timers[i].ms);
    uv_unref((uv_handle_t *)&lt->t);
  }
  return 0;
}
