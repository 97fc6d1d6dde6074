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

/* ---- the rule for a field set from Lua ------------------------------------------------------ */

/* NULL when the name is a token, else the message, pushed. */
static const char *bad_name(lua_State *L, const char *name, size_t nl) {
  return mg_http_is_token(name, nl) ? NULL : lua_pushfstring(L, "invalid header field name '%s'", name);
}

/* NULL when the value may be sent, else the message, pushed. */
static const char *bad_value(lua_State *L, const char *name, const char *v, size_t vl) {
  return mg_http_value_is_safe(v, vl) ? NULL : lua_pushfstring(L, "header value for '%s' holds CR, LF or NUL", name);
}

/* One value (string or number) of field `name` at stack index idx: NULL, or the message. */
static const char *bad_item(lua_State *L, const char *name, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    return lua_pushfstring(L, "header value for '%s' must be a string, not %s", name, lua_typename(L, t));
  size_t vl;
  const char *v = lua_tolstring(L, idx, &vl); /* a number becomes a string in its stack slot only */
  return bad_value(L, name, v, vl);
}

/* The pair (name, value) at the top of the stack as fields: NULL, or the message, pushed. A
 * value may be a list of values (OpenResty's ngx.header["Set-Cookie"] = { "a=1", "b=2" }):
 * one field each. */
static const char *bad_pair(lua_State *L) {
  if (lua_type(L, -2) != LUA_TSTRING)
    return lua_pushfstring(L, "header field names must be strings, not %s", luaL_typename(L, -2));
  size_t nl;
  const char *name = lua_tolstring(L, -2, &nl);
  const char *err = bad_name(L, name, nl);
  if (err) return err;
  if (lua_type(L, -1) != LUA_TTABLE) return bad_item(L, name, -1);
  for (int i = 1, n = (int)lua_objlen(L, -1); i <= n; i++) {
    lua_rawgeti(L, -1, i);
    err = bad_item(L, name, -1);
    if (err) {
      lua_remove(L, -2); /* the item: the message stays on top */
      return err;
    }
    lua_pop(L, 1);
  }
  return NULL;
}

const char *mg_lua_fields_from_table(lua_State *L, int idx, mg_pool_t *pool, mg_fields_t *f, int replace) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  /* Every field is checked before any is copied: a caller that refuses the table has nothing
   * to undo. */
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* name value */
    const char *err = bad_pair(L);
    if (err) {                    /* name value err */
      lua_insert(L, -3);          /* err name value */
      lua_pop(L, 2);              /* err */
      return err;
    }
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nl, vl;
    const char *name = lua_tolstring(L, -2, &nl);
    if (lua_type(L, -1) == LUA_TTABLE) {
      if (replace) mg_fields_set(pool, f, name, NULL);
      for (int i = 1, n = (int)lua_objlen(L, -1); i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *v = lua_tolstring(L, -1, &vl);
        mg_fields_add(pool, f, name, nl, v, vl);
        lua_pop(L, 1);
      }
    } else {
      const char *v = lua_tolstring(L, -1, &vl);
      if (replace) mg_fields_set(pool, f, name, v);
      else mg_fields_add(pool, f, name, nl, v, vl);
    }
    lua_pop(L, 1);
  }
  return NULL;
}

/* ---- req:headers() / res:headers() ---------------------------------------------------------- */

/* The copy's __index, as OpenResty's get_headers(): a name not found as written is looked up
 * lower-cased with '_' read as '-', so h["User-Agent"] and h.user_agent both find it. */
static int fields_index(lua_State *L) {
  size_t n;
  const char *k = lua_tolstring(L, 2, &n);
  if (!k || lua_type(L, 2) != LUA_TSTRING) return 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    char c = k[i];
    luaL_addchar(&b, c == '_' ? '-' : (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
  }
  luaL_pushresult(&b);
  lua_rawget(L, 1);
  return 1;
}

/* A new table, lowercase names, a list for a repeated field, read case-insensitively. A copy:
 * changing it changes nothing; req.headers is the way to edit. */
void mg_lua_push_fields(lua_State *L, const mg_fields_t *f) {
  lua_createtable(L, 0, f->n);
  luaL_getmetatable(L, MG_LUA_FIELDS_MT);
  lua_setmetatable(L, -2);
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

void mg_lua_push_fields_raw(lua_State *L, const mg_fields_t *f) {
  lua_createtable(L, 0, f->n);
  for (int i = 0; i < f->n; i++) {
    lua_getfield(L, -1, f->v[i].name);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushstring(L, f->v[i].value);
      lua_setfield(L, -2, f->v[i].name);
    } else if (lua_istable(L, -1)) {
      lua_pushstring(L, f->v[i].value);
      lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
      lua_pop(L, 1);
    } else {
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_pushstring(L, f->v[i].value);
      lua_rawseti(L, -2, 2);
      lua_setfield(L, -2, f->v[i].name);
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
  const char *err = bad_name(L, name, nl);
  if (err) return luaL_error(L, "%s", err);
  if (b->response ? b->req->head_sent : 0) return luaL_error(L, "response headers are already sent");
  if (!b->response) mg_lua_check_phase(L, b->req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_BALANCER, "setting request headers");
  else
    mg_lua_check_phase(L, b->req, MG_PH_HEADER_FILTER | MG_PH_CONTENT | MG_PH_ACCESS | MG_PH_REWRITE,
                       "setting response headers");
  if (lua_isnil(L, 3)) {
    mg_fields_set(&b->req->pool, f, name, NULL);
    return 0;
  }
  /* A string, a number, or a list of them (one field each, as ngx.header's). */
  lua_settop(L, 3);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  if ((err = mg_lua_fields_from_table(L, -1, &b->req->pool, f, 1))) return luaL_error(L, "%s", err);
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
  hdr_box_t *b = mg_lua_push_box(L, &mg_lua_req_attach(req)->hdr_ref[response], sizeof *b, MG_LUA_HDR_MT);
  if (b) b->req = req, b->response = response;
}

void mg_lua_headers_open(lua_State *L) {
  if (luaL_newmetatable(L, MG_LUA_FIELDS_MT)) {
    lua_pushcfunction(L, fields_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
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
