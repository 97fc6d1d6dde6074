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
#include <unistd.h>

#include "balancer.h"
#include "log.h"
#include "lua_socket.h"
#include "lua_vm.h"
#include "path.h"
#include "loop.h"

#define PH_REWRITE MG_PH_REWRITE
#define PH_ACCESS MG_PH_ACCESS
#define PH_BALANCER MG_PH_BALANCER
#define PH_HEADER_FILTER MG_PH_HEADER_FILTER
#define PH_LOG MG_PH_LOG
#define PH_CONTENT MG_PH_CONTENT

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

#define phase_name mg_lua_phase_name

static mg_req_t *check_req(lua_State *L, int idx) {
  req_box_t *b = luaL_checkudata(L, idx, REQ_MT);
  if (!b->req) luaL_error(L, "request object used after its request ended");
  return b->req;
}

static void check_phase(lua_State *L, mg_req_t *req, int allowed, const char *what) {
  if (!(req->phase & allowed)) luaL_error(L, "API disabled in the context of %s: %s", phase_name(req->phase), what);
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
  if (!mg_http_value_is_safe(v, vl)) return luaL_error(L, "header value for '%s' holds CR, LF or NUL", name);
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
static int req_read_body(lua_State *L);
static int req_body(lua_State *L);
static int req_set_body(lua_State *L);
static lua_CFunction subrequest_fn;

void mg_lua_set_subrequest(lua_CFunction fn) { subrequest_fn = fn; }

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

void mg_lua_push_fields(lua_State *L, const mg_fields_t *f) { push_fields_table(L, f); }

mg_req_t *mg_lua_check_req(lua_State *L, int idx) { return check_req(L, idx); }

int mg_lua_final_status(lua_State *L, int idx, int *status) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  lua_Number n = lua_tonumber(L, idx);
  if (!(n >= 200 && n <= 599) || n != (lua_Number)(int)n) return 0;
  *status = (int)n;
  return 1;
}

const char *mg_lua_status_text(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    lua_pushvalue(L, idx); /* converted in place by lua_tostring: a copy, idx stays a number */
    return lua_tostring(L, -1);
  }
  if (t == LUA_TSTRING) return lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
  return lua_typename(L, t);
}

/* In a Lua thread (a hook, a handler, a timer), a waiting call on a req must be on the
 * thread's own request. Outside one, the phase check refuses the call. */
static void check_own(lua_State *L, mg_req_t *req, const char *what) {
  mg_thread_t *t = mg_thread_current();
  if (t && t->req != req)
    luaL_error(L, "%s on the req of another request (%s, kept in a variable or table): a waiting call works only on the "
                  "running request's own req", what, req->id);
}

mg_thread_t *mg_lua_check_own_req(lua_State *L, mg_req_t *req, const char *what) {
  mg_thread_t *t = mg_thread_check(L, what);
  check_own(L, req, what);
  return t;
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
      if (strcmp(k, "is_subrequest") == 0) return lua_pushboolean(L, req->is_subrequest), 1;
      break;
    case 'b':
      if (strcmp(k, "body") == 0) return lua_pushcfunction(L, req_body), 1;
      break;
    case 'm':
      if (strcmp(k, "method") == 0) return lua_pushstring(L, req->method), 1;
      break;
    case 'q':
      if (strcmp(k, "query") == 0) return req->query ? lua_pushstring(L, req->query) : lua_pushnil(L), 1;
      break;
    case 'r':
      if (strcmp(k, "raw_uri") == 0) return lua_pushstring(L, req->target), 1;
      if (strcmp(k, "remote_addr") == 0) return lua_pushstring(L, req->remote), 1;
      if (strcmp(k, "remote_port") == 0) return lua_pushinteger(L, req->remote_port), 1;
      if (strcmp(k, "route") == 0) return req->route ? lua_pushstring(L, req->route->match) : lua_pushnil(L), 1;
      if (strcmp(k, "redirect") == 0) return lua_pushcfunction(L, req_redirect), 1;
      if (strcmp(k, "read_body") == 0) return lua_pushcfunction(L, req_read_body), 1;
      break;
    case 's':
      if (strcmp(k, "scheme") == 0) return lua_pushstring(L, req->is_tls ? "https" : "http"), 1;
      if (strcmp(k, "set_body") == 0) return lua_pushcfunction(L, req_set_body), 1;
      if (strcmp(k, "subrequest") == 0 && subrequest_fn) return lua_pushcfunction(L, subrequest_fn), 1;
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
    char *path, *query;
    size_t pl;
    int rc = mg_target_parse(&req->pool, uri, len, req->cfg->set.allow_encoded_slashes, &path, &pl, &query);
    if (rc == MG_PATH_BAD_TARGET || uri[0] != '/')
      return luaL_error(L, "req.uri must be a local path starting with '/', got '%s'", uri);
    if (rc < 0) return luaL_error(L, "req.uri '%s' is not a valid path", uri);
    req->path = path, req->path_len = pl;
    if (query) req->query = query;
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
  int status;
  if (!mg_lua_final_status(L, 2, &status))
    return luaL_argerror(L, 2, lua_pushfstring(L, "status %s is not a final status (200 to 599)", mg_lua_status_text(L, 2)));
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

/* ---- the request body in Lua (SPEC 12) ------------------------------------------------------------ */

static uint64_t body_limit(const mg_req_t *req) {
  return req->route ? req->route->client_max_body_size : req->cfg->set.client_max_body_size;
}

static void on_body_collect(mg_req_t *req, const char *data, size_t len) {
  uint64_t limit = body_limit(req);
  if (req->body_reading == 0) return;
  if (limit && req->body.len + len > limit) {
    req->body_reading = 0;
    req->keepalive = 0;
    mg_req_error(req, 413, "request body exceeds client_max_body_size %llu (req:read_body)", (unsigned long long)limit);
    return;
  }
  int rc = mg_body_add(&req->body, data, len);
  if (rc < 0) {
    req->body_reading = 0;
    mg_req_error(req, 500, "spooling the request body failed: %s", strerror(-rc));
  }
}

static void on_body_collected(mg_req_t *req) {
  req->on_body = NULL, req->on_body_end = NULL;
  if (!req->body_reading) return;
  req->body_reading = 0;
  req->body_ready = 1;
  mg_thread_t *t = req->body_waiter;
  req->body_waiter = NULL;
  if (t) mg_thread_wake(t, 0); /* inside the parser: the thread runs on the next turn */
}

static void read_body_cancel(mg_thread_t *t) {
  if (t->req) t->req->body_waiter = NULL;
}

/* req:read_body(): reads the whole request body before the backend is contacted. */
static int req_read_body(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  check_own(L, req, "req:read_body");
  check_phase(L, req, PH_REWRITE | PH_ACCESS | PH_CONTENT, "req:read_body");
  if (req->body_ready) return 0;
  if (req->redirects || req->msg_done || (req->content_length <= 0 && !req->chunked)) {
    /* No body, or it was dropped (internal redirect) or already went by. */
    req->body_ready = 1;
    return 0;
  }
  if (req->on_body) return luaL_error(L, "req:read_body: the body is already being streamed to the backend");
  mg_thread_t *t = mg_thread_check(L, "req:read_body");
  if (mg_explain) return mg_thread_explained(L);
  uint64_t limit = body_limit(req);
  if (limit && req->content_length > 0 && (uint64_t)req->content_length > limit) {
    req->keepalive = 0;
    lua_pushnil(L);
    lua_pushliteral(L, "request body too large");
    return 2;
  }
  req->on_body = on_body_collect;
  req->on_body_end = on_body_collected;
  req->body_reading = 1;
  mg_req_read_body(req); /* may read all of it at once */
  if (req->body_ready) return 0;
  req->body_waiter = t;
  return mg_thread_wait(L, t, read_body_cancel, NULL);
}

/* req:body() → the body read by req:read_body(), nil and "in file" beyond lua_body_max. */
static int req_body(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  if (!req->body_ready) {
    lua_pushnil(L);
    lua_pushliteral(L, "body not read (call req:read_body() first)");
    return 2;
  }
  mg_body_t *b = &req->body;
  if (b->fd < 0) {
    lua_pushlstring(L, b->mem.data ? b->mem.data : "", b->mem.len);
    return 1;
  }
  if (b->len > req->cfg->set.lua_body_max) {
    lua_pushnil(L);
    lua_pushliteral(L, "in file");
    return 2;
  }
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  char chunk[16384];
  uint64_t off = 0;
  while (off < b->len) {
    ssize_t n = pread(b->fd, chunk, sizeof chunk, (off_t)off);
    if (n <= 0) return luaL_error(L, "req:body: reading the spooled body failed");
    luaL_addlstring(&lb, chunk, (size_t)n);
    off += (uint64_t)n;
  }
  luaL_pushresult(&lb);
  return 1;
}

/* req:set_body(str): the backend receives str instead (CONTENT_LENGTH follows). */
static int req_set_body(lua_State *L) {
  mg_req_t *req = check_req(L, 1);
  check_phase(L, req, PH_REWRITE | PH_ACCESS | PH_CONTENT, "req:set_body");
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  if (!req->body_ready) return luaL_error(L, "req:set_body: call req:read_body() first");
  mg_body_reset(&req->body);
  int rc = mg_body_add(&req->body, s, len);
  if (rc < 0) return luaL_error(L, "req:set_body: %s", strerror(-rc));
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
    int s;
    if (!mg_lua_final_status(L, 3, &s))
      return luaL_error(L, "res.status: status %s is not a final status (200 to 599)", mg_lua_status_text(L, 3));
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

/* Pushes the request's userdata, creating it on first use. The metatables were made when the
 * worker was prepared (mg_lua_worker_prepare), not looked for again per request. */
static void req_release(void *arg);

void mg_lua_req_attach(mg_req_t *req) {
  if (req->lua_attached) return;
  req->lua_attached = 1;
  mg_pool_cleanup(&req->pool, req_release, req);
}

static void push_req(lua_State *L, mg_req_t *req) {
  mg_lua_req_attach(req);
  if (req->self_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->self_ref);
    return;
  }
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

/* The pool cleanup of a request Lua has seen (mg_lua_req_attach): drops its Lua references,
 * closes its cosockets, abandons a waiting thread. */
static void req_release(void *arg) {
  mg_req_t *req = arg;
  mg_socket_close_owned(&req->sockets);
  if (req->thread) {
    mg_thread_t *t = req->thread;
    req->thread = NULL;
    mg_thread_abort(t);
  }
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
  int saved = req->phase, saved_now = mg_lua_phase_now;
  req->phase = mg_lua_phase_now = phase_bit;
  char err[2048];
  int rc = mg_lua_call(L, with_res ? 2 : 1, 0, err, sizeof err);
  req->phase = saved, mg_lua_phase_now = saved_now;
  if (rc < 0) mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s hook: %s", phase_name(phase_bit), err);
  assert(lua_gettop(L) == top);
  (void)top;
  return rc;
}

int mg_lua_take_exit(mg_req_t *req, const char **redirect) {
  exit_t *e = req->lua_exit;
  if (!e || (!e->status && !e->redirect)) return MG_LUA_EXIT_NONE;
  req->lua_exit = NULL;
  if (e->redirect) {
    *redirect = e->location;
    return MG_LUA_EXIT_REDIRECT;
  }
  if (e->body) {
    mg_req_respond(req, e->status, mg_fields_get(&req->resp_headers, "Content-Type") ? NULL : "text/plain", e->body, e->body_len);
  } else {
    /* A status with no body: an error page for error statuses, an empty body otherwise. */
    if (e->status >= 400) mg_req_error(req, e->status, NULL);
    else mg_req_respond(req, e->status, NULL, "", 0);
  }
  return MG_LUA_EXIT_RESPONDED;
}

void mg_lua_exit_clear(mg_req_t *req) { req->lua_exit = NULL; }

void mg_lua_push_req(lua_State *L, mg_req_t *req) { push_req(L, req); }

mg_thread_t *mg_lua_hook_thread(mg_req_t *req, int ref, int phase_bit) {
  mg_thread_t *t = mg_thread_new(req->cfg->L, req, phase_bit);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, ref); /* co: fn */
  push_req(t->co, req);                       /* co: fn req */
  return t;
}

/* Calls visit() for each hook of `phase`, the global ones first, then the route's; stops at
 * the first nonzero return and gives it back (0 when every hook ran). */
static int each_hook(mg_req_t *req, int phase, int (*visit)(mg_req_t *req, int ref, void *arg), void *arg) {
  int ref;
  for (int i = 0, n = mg_req_hook_count(req, phase); i < n; i++) {
    ref = mg_req_hook_at(req, phase, i);
    int rc = visit(req, ref, arg);
    if (rc) return rc;
  }
  return 0;
}

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

/* body_filter: every hook sees the chunk the previous one left; a string return replaces it. */
int mg_lua_body_filter(mg_req_t *req, const char *data, size_t len, int eof, char **out, size_t *out_len) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_pushlstring(L, data, len); /* the current chunk */
  int ref, rc = 0;
  int saved = req->phase, saved_now = mg_lua_phase_now;
  for (int i = 0, n = mg_req_hook_count(req, MG_PHASE_BODY_FILTER); i < n; i++) {
    ref = mg_req_hook_at(req, MG_PHASE_BODY_FILTER, i);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    push_req(L, req);
    push_res(L, req);
    lua_pushvalue(L, top + 1);
    lua_pushboolean(L, eof);
    req->phase = mg_lua_phase_now = MG_PH_BODY_FILTER;
    char err[2048];
    rc = mg_lua_call(L, 4, 1, err, sizeof err);
    req->phase = saved, mg_lua_phase_now = saved_now;
    if (rc < 0) {
      mg_log_error(MG_LOG_ERROR, req->id, "Lua error in body_filter hook: %s", err);
      break;
    }
    if (lua_type(L, -1) == LUA_TSTRING) lua_replace(L, top + 1);
    else lua_pop(L, 1);
  }
  if (rc == 0) {
    size_t n;
    const char *s = lua_tolstring(L, top + 1, &n);
    *out = mg_malloc(n ? n : 1);
    memcpy(*out, s, n);
    *out_len = n;
  }
  lua_settop(L, top);
  return rc;
}

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
  int saved_now = mg_lua_phase_now;
  req->phase = mg_lua_phase_now = PH_BALANCER;
  char err[2048];
  int rc = mg_lua_call(L, 2, 1, err, sizeof err);
  req->phase = 0, mg_lua_phase_now = saved_now;
  if (rc < 0) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s of balancer %s: %s", what, b->name, err);
    mg_req_error(req, 500, NULL);
    return -1;
  }
  int idx = member_choice(L, b);
  assert(lua_gettop(L) == top);
  (void)top;
  const char *unused;
  if (mg_lua_take_exit(req, &unused) != MG_LUA_EXIT_NONE) return -1;
  return idx;
}

static int visit_balancer_hook(mg_req_t *req, int ref, void *arg) {
  if (!mg_explain) return call_chooser(req, arg, ref, "balancer hook");
  mg_explain->hook_begin(req, MG_PHASE_BALANCER, ref);
  int idx = call_chooser(req, arg, ref, "balancer hook");
  mg_explain->hook_end(req, idx < 0 ? "the hook failed or ended the request (see the error log)" : NULL);
  return idx;
}

int mg_lua_balancer(mg_req_t *req, mg_balancer_t *b, int method) {
  int idx = each_hook(req, MG_PHASE_BALANCER, visit_balancer_hook, b);
  if (idx != 0) return idx;
  if (method && b->method == MG_LB_LUA) return call_chooser(req, b, b->method_ref, "method");
  return 0;
}

/* ---- req.env as plain data ---------------------------------------------------------------------- */

void mg_lua_env_export(mg_req_t *req) {
  req->nenv_list = 0;
  req->env_pathinfo = 0;
  if (req->env_ref == LUA_NOREF) return;
  lua_State *L = req->cfg->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->env_ref); /* env */
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) n++, lua_pop(L, 1);
  req->env_list = mg_pool_alloc(&req->pool, sizeof(mg_kv_t) * (size_t)(n ? n : 1));
  lua_pushnil(L);
  while (lua_next(L, -2)) { /* env key value */
    size_t nl = 0, vl = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
    int remove = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    int t = lua_type(L, -1);
    const char *v = remove ? NULL : (t == LUA_TSTRING || t == LUA_TNUMBER) ? lua_tolstring(L, -1, &vl) : NULL;
    if (k && strcmp(k, "proxy-scgi-pathinfo") == 0) {
      req->env_pathinfo = !remove && t != LUA_TNIL;
    } else if (!k || (!v && !remove) || memchr(k, 0, nl) || (v && memchr(v, 0, vl)) || nl == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: entries must be name = string, number or false; one dropped");
    } else if (strcmp(k, "CONTENT_LENGTH") == 0 || strcmp(k, "SCGI") == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: %s cannot be overridden", k);
    } else {
      mg_kv_t *kv = &req->env_list[req->nenv_list++];
      kv->name = mg_pool_strndup(&req->pool, k, nl);
      kv->value = v ? mg_pool_strndup(&req->pool, v, vl) : NULL;
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
  mg_thread_t *running; /* a run that still waits: the next tick is skipped */
} lua_timer_t;

static void on_timer_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in timer: %s", t->error);
  lua_timer_t *lt = t->data;
  if (lt) lt->running = NULL;
  mg_thread_release(t);
}

static void on_lua_timer(uv_timer_t *tm) {
  lua_timer_t *lt = (lua_timer_t *)tm;
  if (lt->running) return;
  mg_thread_t *t = mg_thread_new(lt->cfg->L, NULL, MG_PH_TIMER);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, lt->ref);
  t->on_done = on_timer_done;
  t->data = lt;
  int rc = mg_thread_start(t, 0);
  if (rc == MG_THREAD_WAIT) lt->running = t;
  else on_timer_done(t, rc);
}

/* A failed init_worker hook is logged (its message carries init.lua's file:line) and the
 * worker serves anyway, as OpenResty's does: a worker that exited instead would be restarted
 * into the same error, and a reload into it would leave no worker serving. */
static void on_init_worker_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in init_worker (the worker serves anyway): %s", t->error);
  mg_thread_release(t);
}

void mg_lua_worker_prepare(mg_config_t *cfg, uv_loop_t *loop) {
  ensure_metatables(cfg->L);
  mg_thread_init(loop);
  mg_lua_limit_install(cfg->L, cfg->set.lua_max_run_time);
  mg_socket_set_default_timeout(cfg->set.lua_socket_timeout);
}

int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop) {
  lua_State *L = cfg->L;
  mg_lua_worker_prepare(cfg, loop);
  for (int i = 0; i < cfg->init_worker.n; i++) {
    /* An init_worker hook may wait (a cosocket to prime a cache); the worker serves
     * meanwhile. One that fails, before or after it waits, is logged and the next hook runs. */
    mg_thread_t *t = mg_thread_new(L, NULL, MG_PH_INIT_WORKER);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, cfg->init_worker.refs[i]);
    t->on_done = on_init_worker_done;
    int rc = mg_thread_start(t, 0);
    if (rc != MG_THREAD_WAIT) on_init_worker_done(t, rc);
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
