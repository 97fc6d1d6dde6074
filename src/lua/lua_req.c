/* lua_req: see lua_req.h.
 *
 * Fields are read through __index on demand, so a hook pays only for what it reads: req.ctx
 * and req.env are tables made on first use and kept in the registry for the request's life;
 * the others are read from the request each time. An unknown field is an error, not nil, so
 * that a misspelt name shows. req:exit() and req:redirect() only record what they ask for:
 * the response or the restart happens once the hook or handler has returned
 * (mg_lua_take_exit). */
#include "lua_req.h"

#include <lauxlib.h>
#include <string.h>

#include "lua_body.h"
#include "lua_headers.h"
#include "lua_request.h"
#include "lua_subrequest.h"
#include "path.h"
#include "route_re.h"

/* Pushes the table behind *ref, made on first use. */
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

/* req:exit(status[, body[, headers]]) */
static int req_exit(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_BALANCER | MG_PH_CONTENT, "req:exit");
  int status;
  if (!mg_lua_final_status(L, 2, &status))
    return luaL_argerror(L, 2, lua_pushfstring(L, "status %s is not a final status (200 to 599)", mg_lua_status_text(L, 2)));
  size_t bl = 0;
  const char *body = luaL_optlstring(L, 3, NULL, &bl);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    const char *err = mg_lua_fields_from_table(L, 4, &req->pool, &req->resp_headers, 1);
    if (err) return luaL_argerror(L, 4, err);
  }
  mg_lua_exit_t *e = mg_lua_exit_of(req);
  e->status = status;
  e->body = body ? mg_pool_strndup(&req->pool, body, bl) : NULL;
  e->body_len = bl;
  return 0;
}

/* req:redirect(uri): restart at a local URI once the hook returns. */
static int req_redirect(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT, "req:redirect");
  const char *uri = luaL_checkstring(L, 2);
  if (uri[0] != '/') return luaL_argerror(L, 2, "a local URI starting with '/'");
  mg_lua_exit_t *e = mg_lua_exit_of(req);
  e->redirect = 1;
  e->location = mg_pool_strdup(&req->pool, uri);
  return 0;
}

/* req.captures: a regex route's groups as mg.re.match gives them ([0] the match, [1].. the
 * groups, false for one that did not take part, named ones by name too); nil on other routes. */
static int push_captures(lua_State *L, mg_req_t *req) {
  const mg_route_t *r = req->route;
  long ov[2 * MG_ROUTE_RE_MAX_PAIRS];
  int n = r && r->re ? mg_route_re_match(r, req->path, req->path_len, ov, MG_ROUTE_RE_MAX_PAIRS) : 0;
  if (n <= 0) return lua_pushnil(L), 1;
  lua_createtable(L, n - 1, 0);
  for (int i = 0; i < n; i++) {
    if (ov[2 * i] >= 0) lua_pushlstring(L, req->path + ov[2 * i], (size_t)(ov[2 * i + 1] - ov[2 * i]));
    else lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i);
  }
  const char *name;
  for (int i = 0, g; (g = mg_route_re_name(r, i, &name)) >= 0; i++) {
    lua_rawgeti(L, -1, g);
    lua_setfield(L, -2, name);
  }
  return 1;
}

static int req_index(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  mg_lua_req_t *lr = req->lua;
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  switch (k[0]) {
    case 'c':
      if (strcmp(k, "ctx") == 0) return push_ref_table(L, &lr->ctx_ref);
      if (strcmp(k, "captures") == 0) return push_captures(L, req);
      break;
    case 'e':
      if (strcmp(k, "env") == 0) return push_ref_table(L, &lr->env_ref);
      if (strcmp(k, "exit") == 0) return lua_pushcfunction(L, req_exit), 1;
      break;
    case 'h':
      if (strcmp(k, "headers") == 0) return mg_lua_headers_push(L, req, 0), 1;
      if (strcmp(k, "host") == 0) return req->host ? lua_pushstring(L, req->host) : lua_pushnil(L), 1;
      if (strcmp(k, "http_version") == 0) /* a number, as ngx.req.http_version(): 1.0, 1.1 */
        return lua_pushnumber(L, req->http_major + req->http_minor / 10.0), 1;
      break;
    case 'i':
      if (strcmp(k, "id") == 0) return lua_pushstring(L, req->id), 1;
      if (strcmp(k, "is_subrequest") == 0) return lua_pushboolean(L, req->is_subrequest), 1;
      break;
    case 'b':
      if (strcmp(k, "body") == 0) return lua_pushcfunction(L, mg_lua_req_body), 1;
      break;
    case 'm':
      if (strcmp(k, "method") == 0) return lua_pushstring(L, req->method), 1;
      break;
    case 'p':
      /* SPEC 19: the socket's peer, or the PROXY header's source; realip never changes it. */
      if (strcmp(k, "peer_addr") == 0) return lua_pushstring(L, req->peer ? req->peer : req->remote), 1;
      if (strcmp(k, "peer_port") == 0) return lua_pushinteger(L, req->peer ? req->peer_port : req->remote_port), 1;
      break;
    case 'q':
      if (strcmp(k, "query") == 0) return req->query ? lua_pushstring(L, req->query) : lua_pushnil(L), 1;
      break;
    case 'r':
      if (strcmp(k, "raw_uri") == 0) return lua_pushstring(L, req->target), 1;
      if (strcmp(k, "remote_addr") == 0) return lua_pushstring(L, req->remote), 1;
      /* An address realip took from a header without a port has none: nil. */
      if (strcmp(k, "remote_port") == 0) return req->remote_no_port ? 0 : (lua_pushinteger(L, req->remote_port), 1);
      if (strcmp(k, "route") == 0) return req->route ? lua_pushstring(L, req->route->match) : lua_pushnil(L), 1;
      if (strcmp(k, "redirect") == 0) return lua_pushcfunction(L, req_redirect), 1;
      if (strcmp(k, "read_body") == 0) return lua_pushcfunction(L, mg_lua_req_read_body), 1;
      break;
    case 's':
      if (strcmp(k, "scheme") == 0) return lua_pushstring(L, req->is_tls ? "https" : "http"), 1;
      if (strcmp(k, "set_body") == 0) return lua_pushcfunction(L, mg_lua_req_set_body), 1;
      if (strcmp(k, "subrequest") == 0) return lua_pushcfunction(L, mg_subrequest_lua), 1;
      break;
    case 'u':
      if (strcmp(k, "uri") == 0) return lua_pushlstring(L, req->path, req->path_len), 1;
      break;
  }
  return luaL_error(L, "req has no field '%s'", k);
}

static int req_newindex(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "uri") == 0) {
    mg_lua_check_phase(L, req, MG_PH_REWRITE, "setting req.uri");
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
    mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS, "setting req.query");
    req->query = lua_isnil(L, 3) ? NULL : mg_pool_strdup(&req->pool, luaL_checkstring(L, 3));
    return 0;
  }
  if (strcmp(k, "method") == 0) {
    mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS, "setting req.method");
    size_t ml;
    const char *m = luaL_checklstring(L, 3, &ml);
    if (!mg_http_is_token(m, ml)) return luaL_error(L, "req.method must be an HTTP token");
    req->method = mg_pool_strdup(&req->pool, m);
    return 0;
  }
  return luaL_error(L, "req.%s cannot be assigned", k);
}

void mg_lua_req_open(lua_State *L) {
  if (luaL_newmetatable(L, MG_LUA_REQ_MT)) {
    lua_pushcfunction(L, req_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, req_newindex);
    lua_setfield(L, -2, "__newindex");
  }
  lua_pop(L, 1);
}
