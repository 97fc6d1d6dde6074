/* lua_headers: see lua_headers.h.
 *
 * `req.headers` and `res.headers` are small proxies over the C field lists: indexing one
 * reads the list (a repeated field joined with ", ", Cookie with "; "), assigning sets or
 * removes a field, calling it gives a plain copy to iterate. The proxy is a userdata that
 * starts with its request pointer, like req, and is cleared when the request is released. */
#include "lua_headers.h"

#include <lauxlib.h>
#include <string.h>
#include <strings.h>

#include "lua_request.h"

typedef struct {
  mg_req_t *req; /* first, as in every box of the request (mg_lua_box_t) */
  int response;  /* 0: request headers, 1: response headers */
} hdr_box_t;

/* ---- req:headers() / res:headers() ---------------------------------------------------------- */

/* A new plain table, lowercase names, a list for a repeated field (SPEC 14). A copy: changing
 * it changes nothing; req.headers is the way to edit. */
void mg_lua_push_fields(lua_State *L, const mg_fields_t *f) {
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
}

/* ---- the proxies ---------------------------------------------------------------------------- */

static mg_fields_t *hdr_fields(lua_State *L, hdr_box_t **out) {
  hdr_box_t *b = luaL_checkudata(L, 1, MG_LUA_HDR_MT);
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
  if (!b->response) mg_lua_check_phase(L, b->req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_BALANCER, "setting request headers");
  else
    mg_lua_check_phase(L, b->req, MG_PH_HEADER_FILTER | MG_PH_CONTENT | MG_PH_ACCESS | MG_PH_REWRITE,
                       "setting response headers");
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

/* `req:headers()` is `req.headers(req)`: the proxy's __call gives the plain copy. */
static int hdr_call(lua_State *L) {
  hdr_box_t *b;
  mg_lua_push_fields(L, hdr_fields(L, &b));
  return 1;
}

/* One proxy per request and list, kept in the registry so that the release can detach it
 * from the request. */
void mg_lua_headers_push(lua_State *L, mg_req_t *req, int response) {
  int *ref = &mg_lua_req_attach(req)->hdr_ref[response];
  if (*ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    return;
  }
  hdr_box_t *b = lua_newuserdata(L, sizeof *b);
  b->req = req, b->response = response;
  luaL_getmetatable(L, MG_LUA_HDR_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void mg_lua_headers_open(lua_State *L) {
  if (luaL_newmetatable(L, MG_LUA_HDR_MT)) {
    lua_pushcfunction(L, hdr_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, hdr_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, hdr_call);
    lua_setfield(L, -2, "__call");
  }
  lua_pop(L, 1);
}
