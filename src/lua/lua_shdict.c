/* lua_shdict: see lua_shdict.h. */
#include "lua_shdict.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"

#define DICT_MT "moongate.shdict"
#define REGISTRY_KEY "moongate.shdicts"

int mg_lua_shdict_declaring;

void mg_shdict_release_all(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      mg_shdict_box_t *b = lua_touserdata(L, -1);
      if (b && b->zone) mg_zone_unref(b->zone), b->zone = NULL;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* ---- arguments --------------------------------------------------------------------------------- */

static mg_zone_t *check_dict(lua_State *L) {
  mg_shdict_box_t *b = luaL_checkudata(L, 1, DICT_MT);
  if (!b->zone) luaL_error(L, "shared dictionary used after its configuration ended");
  return b->zone;
}

static const char *check_key(lua_State *L, size_t *kl) {
  const char *k = luaL_checklstring(L, 2, kl);
  if (*kl == 0) luaL_argerror(L, 2, "key must not be empty");
  if (*kl > MG_DICT_MAX_KEY) luaL_argerror(L, 2, "key longer than 64 KiB");
  return k;
}

static double check_ttl(lua_State *L, int idx) {
  double ttl = luaL_optnumber(L, idx, 0);
  if (ttl < 0) luaL_argerror(L, idx, "ttl must not be negative");
  return ttl;
}

/* ---- the methods --------------------------------------------------------------------------------- */

static void on_value(void *ud, const mg_dict_value_t *v) {
  lua_State *L = ud;
  if (v->type == MG_DICT_STRING) lua_pushlstring(L, v->str, v->len);
  else if (v->type == MG_DICT_NUMBER) lua_pushnumber(L, v->num);
  else lua_pushboolean(L, v->boolean);
}

/* d:get(key) → value or nil */
static int l_get(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  if (mg_dict_get(d, k, kl, on_value, L) < 0) lua_pushnil(L);
  return 1;
}

/* d:set / d:add / d:replace(key, value[, ttl]) → true, nil, forcible or false, err, forcible */
static int store(lua_State *L, mg_dict_mode_t mode) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  double ttl = check_ttl(L, 4);
  int t = lua_type(L, 3);
  mg_dict_value_t v = {.type = MG_DICT_NIL};
  if (t == LUA_TSTRING) {
    v.type = MG_DICT_STRING, v.str = lua_tolstring(L, 3, &v.len);
    if (v.len > MG_DICT_MAX_VALUE) return luaL_argerror(L, 3, "value larger than 1 MiB");
  } else if (t == LUA_TNUMBER) {
    v.type = MG_DICT_NUMBER, v.num = lua_tonumber(L, 3);
  } else if (t == LUA_TBOOLEAN) {
    v.type = MG_DICT_BOOLEAN, v.boolean = lua_toboolean(L, 3);
  } else if (t != LUA_TNIL || mode != MG_DICT_SET) {
    return luaL_argerror(L, 3, "value must be a string, a number or a boolean");
  }
  int forcible;
  int rc = mg_dict_set(d, mode, k, kl, &v, ttl, &forcible);
  lua_pushboolean(L, rc == 0);
  if (rc < 0) lua_pushstring(L, mg_dict_strerror(rc));
  else lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_set(lua_State *L) { return store(L, MG_DICT_SET); }
static int l_add(lua_State *L) { return store(L, MG_DICT_ADD); }
static int l_replace(lua_State *L) { return store(L, MG_DICT_REPLACE); }

/* d:incr(key, n[, init[, init_ttl]]) → the new value (and nil, forcible when made from init),
 * or nil, err */
static int l_incr(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  double n = luaL_checknumber(L, 3);
  int has_init = !lua_isnoneornil(L, 4);
  double init = has_init ? luaL_checknumber(L, 4) : 0;
  double ttl = check_ttl(L, 5);
  double result;
  int forcible;
  int rc = mg_dict_incr(d, k, kl, n, has_init ? &init : NULL, ttl, &result, &forcible);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, mg_dict_strerror(rc));
    return 2;
  }
  lua_pushnumber(L, result);
  if (rc == 0) return 1;
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* d:delete(key) → true */
static int l_delete(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  mg_dict_delete(d, k, kl);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:ttl(key) → seconds left (0: no expiry), or nil, "not found" */
static int l_ttl(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  double left;
  int rc = mg_dict_ttl(d, k, kl, &left);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, mg_dict_strerror(rc));
    return 2;
  }
  lua_pushnumber(L, left);
  return 1;
}

/* d:expire(key, ttl) → true, or nil, "not found" */
static int l_expire(lua_State *L) {
  double ttl = check_ttl(L, 3);
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *k = check_key(L, &kl);
  int rc = mg_dict_expire(d, k, kl, ttl);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, mg_dict_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

typedef struct {
  lua_State *L;
  int n;
} keys_t;

static void on_key(void *ud, const char *key, size_t klen) {
  keys_t *ks = ud;
  lua_pushlstring(ks->L, key, klen); /* keys key */
  lua_rawseti(ks->L, -2, ++ks->n);   /* keys */
}

/* d:get_keys([max]) → the keys (at most max, default 1024, 0 for all), most recent first */
static int l_get_keys(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, 1024);
  lua_newtable(L);
  keys_t ks = {L, 0};
  if (max >= 0) mg_dict_keys(d, (size_t)max, on_key, &ks); /* a negative max: none */
  return 1;
}

static int l_flush_all(lua_State *L) {
  mg_dict_flush_all(check_dict(L));
  return 0;
}

static int l_capacity(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mg_dict_capacity(check_dict(L)));
  return 1;
}

static int l_free_space(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mg_dict_free_space(check_dict(L)));
  return 1;
}

/* ---- declaring ---------------------------------------------------------------------------------------- */

size_t mg_shdict_size_arg(lua_State *L, int idx, const char *what) {
  if (lua_type(L, idx) == LUA_TNUMBER) return (size_t)lua_tonumber(L, idx);
  size_t l;
  const char *s = luaL_checklstring(L, idx, &l);
  char *end;
  double v = strtod(s, &end);
  double mul = 1;
  if (*end == 'k' || *end == 'K') mul = 1024, end++;
  else if (*end == 'm' || *end == 'M') mul = 1024 * 1024, end++;
  else if (*end == 'g' || *end == 'G') mul = 1024.0 * 1024 * 1024, end++;
  if (*end || !(v > 0)) luaL_error(L, "%s: size must be like \"10m\", \"512k\" or a number of bytes, got \"%s\"", what, s);
  return (size_t)(v * mul);
}

mg_zone_t *mg_shdict_push(lua_State *L, const char *name, size_t size, const char *what) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY); /* reg */
  lua_getfield(L, -1, name);                         /* reg dict? */
  if (!lua_isnil(L, -1)) {
    mg_shdict_box_t *b = lua_touserdata(L, -1);
    if (size && b->zone && mg_zone_size(b->zone) != size)
      luaL_error(L, "%s: \"%s\" is already declared with size %d", what, name, (int)mg_zone_size(b->zone));
    lua_remove(L, -2); /* dict */
    return b->zone;
  }
  if (!size) luaL_error(L, "%s: no shared dictionary \"%s\" (declare it in init.lua with a size)", what, name);
  if (size < MG_DICT_MIN_SIZE) luaL_error(L, "%s: size of \"%s\" must be at least 64k", what, name);
  char err[160];
  mg_zone_t *zn = mg_dict_open(name, size, err, sizeof err);
  if (!zn) luaL_error(L, "%s: %s", what, err);
  lua_pop(L, 1); /* reg */
  mg_shdict_box_t *b = lua_newuserdata(L, sizeof *b); /* reg dict */
  b->zone = zn;
  luaL_getmetatable(L, DICT_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  lua_remove(L, -2); /* dict */
  return zn;
}

void mg_shdict_keep(lua_State *L, const char *key) {
  lua_getfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY); /* box reg */
  lua_pushvalue(L, -2);                              /* box reg box */
  lua_setfield(L, -2, key);                          /* box reg */
  lua_pop(L, 1);                                     /* box */
}

/* mg.shared(name[, size]) */
static int l_shared(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (!*name || strlen(name) > 100) return luaL_argerror(L, 1, "a name of 1 to 100 characters");
  size_t size = lua_isnoneornil(L, 2) ? 0 : mg_shdict_size_arg(L, 2, "mg.shared");
  if (size && mg_lua_shdict_declaring == 0)
    return luaL_error(L, "mg.shared: dictionaries are declared in init.lua (at load time), not in a request");
  mg_shdict_push(L, name, size, "mg.shared");
  return 1;
}

void mg_shdict_open_shared(lua_State *L) {
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, REGISTRY_KEY);
  if (luaL_newmetatable(L, DICT_MT)) {
    static const luaL_Reg m[] = {{"get", l_get},           {"set", l_set},       {"add", l_add},
                                 {"replace", l_replace},   {"incr", l_incr},     {"delete", l_delete},
                                 {"ttl", l_ttl},           {"expire", l_expire}, {"get_keys", l_get_keys},
                                 {"flush_all", l_flush_all}, {"capacity", l_capacity},
                                 {"free_space", l_free_space}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, m);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"shared", l_shared}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
