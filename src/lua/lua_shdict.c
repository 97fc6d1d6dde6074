/* lua_shdict: see lua_shdict.h. */
#include "lua_shdict.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
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

/* The methods reproduce lua-resty-core's shdict.lua (get, get_stale, the stores, incr, ttl,
 * expire, capacity, free_space) and lua-nginx-module's C functions (the lists, get_keys,
 * flush_expired, flush_all) down to their results and their messages, including those that
 * come from LuaJIT's FFI conversions there ("cannot convert 'nil' to 'double'"). */

static mg_zone_t *check_dict(lua_State *L) {
  mg_shdict_box_t *b = luaL_checkudata(L, 1, DICT_MT);
  if (!b->zone) luaL_error(L, "shared dictionary used after its configuration ended");
  return b->zone;
}

/* The key at index 2, or NULL with OpenResty's message for a nil, empty or too long one in
 * *err. `tostring`: a key of another type than string becomes its tostring (the FFI functions),
 * else it must be a string or a number (the C functions: luaL_checklstring). */
static const char *check_key(lua_State *L, size_t *kl, int tostring, const char **err) {
  int t = lua_type(L, 2);
  *err = NULL;
  if (t == LUA_TNIL || t == LUA_TNONE) {
    *err = "nil key";
    return NULL;
  }
  if (tostring && t != LUA_TSTRING && t != LUA_TNUMBER) {
    lua_getfield(L, LUA_GLOBALSINDEX, "tostring"); /* ... tostring */
    lua_pushvalue(L, 2);                           /* ... tostring key */
    lua_call(L, 1, 1);                             /* ... s */
    lua_replace(L, 2);
  }
  const char *k = luaL_checklstring(L, 2, kl);
  if (*kl == 0) *err = "empty key";
  else if (*kl > MG_DICT_MAX_KEY) *err = "key too long";
  return *err ? NULL : k;
}

/* Pushes the failure `nil, msg` (or `false, msg` with `falsy`) and returns 2. */
static int fail(lua_State *L, int falsy, const char *msg) {
  if (falsy) lua_pushboolean(L, 0);
  else lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* Seconds as OpenResty passes them to its C side: whole milliseconds, truncated (a LuaJIT
 * conversion to long; one out of its range is LONG_MIN); 0 (never expires) unless positive. */
static double whole_ms(double s) {
  double ms = s * 1000;
  if (!(ms > -9.2233720368547758e18 && ms < 9.2233720368547758e18)) return 0;
  long long l = (long long)ms;
  return l > 0 ? (double)l / 1000 : 0;
}

/* The exptime of a store, at idx: nil or false for none; a number not negative. */
static double check_exptime(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNONE || t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx))) return 0;
  if (t != LUA_TNUMBER) luaL_error(L, "attempt to compare %s with number", lua_typename(L, t));
  double x = lua_tonumber(L, idx);
  if (x < 0) luaL_error(L, "bad \"exptime\" argument");
  return whole_ms(x);
}

/* The user's flags of a store, at idx: nil or false for none; a number as LuaJIT makes it an
 * int (truncated; out of range: INT_MIN), true as 1. */
static uint32_t check_flags(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNONE || t == LUA_TNIL || t == LUA_TBOOLEAN) return (uint32_t)lua_toboolean(L, idx);
  if (t != LUA_TNUMBER)
    luaL_error(L, "bad argument #10 to 'ngx_lua_ffi_shdict_store' (cannot convert '%s' to 'int')", lua_typename(L, t));
  double n = lua_tonumber(L, idx);
  return (uint32_t)(n > -2147483649.0 && n < 2147483648.0 ? (int32_t)n : INT32_MIN);
}

/* A number argument as tonumber takes it (a numeric string too); 0 when it is not one. */
static int to_number(lua_State *L, int idx, double *n) {
  int t = lua_type(L, idx);
  if (t != LUA_TNUMBER && !(t == LUA_TSTRING && lua_isnumber(L, idx))) return 0;
  *n = lua_tonumber(L, idx);
  return 1;
}

/* ---- reading values ----------------------------------------------------------------------------- */

typedef struct {
  lua_State *L;
  uint32_t flags;
} got_t;

static void on_value(void *ud, const mg_dict_value_t *v) {
  got_t *g = ud;
  if (v->type == MG_DICT_STRING) lua_pushlstring(g->L, v->str, v->len);
  else if (v->type == MG_DICT_NUMBER) lua_pushnumber(g->L, v->num);
  else lua_pushboolean(g->L, v->boolean);
  g->flags = v->flags;
}

/* d:get(key) → value, or value, flags (when not 0); nil for a missing or expired key */
static int l_get(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  got_t g = {L, 0};
  int rc = mg_dict_get(d, k, kl, on_value, &g);
  if (rc == MG_DICT_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  if (!g.flags) return 1;
  lua_pushnumber(L, (int32_t)g.flags);
  return 2;
}

/* d:get_stale(key) → value, flags or nil, stale (an expired value not freed yet); nil */
static int l_get_stale(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  got_t g = {L, 0};
  int stale;
  int rc = mg_dict_get_stale(d, k, kl, on_value, &g, &stale);
  if (rc == MG_DICT_NOT_FOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  if (g.flags) lua_pushnumber(L, (int32_t)g.flags);
  else lua_pushnil(L);
  lua_pushboolean(L, stale);
  return 3;
}

/* ---- storing ------------------------------------------------------------------------------------ */

/* d:set / safe_set / add / safe_add / replace(key, value[, exptime[, flags]]) → true, nil,
 * forcible or false, err, forcible */
static int store(lua_State *L, mg_dict_mode_t mode) {
  mg_zone_t *d = check_dict(L);
  double ttl = check_exptime(L, 4);
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  int t = lua_type(L, 3);
  mg_dict_value_t v = {.type = MG_DICT_NIL};
  if (t == LUA_TSTRING) v.type = MG_DICT_STRING, v.str = lua_tolstring(L, 3, &v.len);
  else if (t == LUA_TNUMBER) v.type = MG_DICT_NUMBER, v.num = lua_tonumber(L, 3);
  else if (t == LUA_TBOOLEAN) v.type = MG_DICT_BOOLEAN, v.boolean = lua_toboolean(L, 3);
  else if (t != LUA_TNIL && t != LUA_TNONE) return fail(L, 0, "bad value type");
  v.flags = check_flags(L, 5);
  int forcible = 0, rc;
  if (v.type == MG_DICT_NIL && mode != MG_DICT_SET && mode != MG_DICT_SAFE_SET) {
    err = "attempt to add or replace nil values";
  } else {
    rc = mg_dict_set(d, mode, k, kl, &v, ttl, &forcible);
    err = rc < 0 ? mg_dict_strerror(rc) : NULL;
  }
  lua_pushboolean(L, err == NULL);
  if (err) lua_pushstring(L, err);
  else lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_set(lua_State *L) { return store(L, MG_DICT_SET); }
static int l_safe_set(lua_State *L) { return store(L, MG_DICT_SAFE_SET); }
static int l_add(lua_State *L) { return store(L, MG_DICT_ADD); }
static int l_safe_add(lua_State *L) { return store(L, MG_DICT_SAFE_ADD); }
static int l_replace(lua_State *L) { return store(L, MG_DICT_REPLACE); }

/* d:delete(key) → true, nil, false (d:set(key, nil)) */
static int l_delete(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L);
  return store(L, MG_DICT_SET);
}

/* d:incr(key, n[, init[, init_ttl]]) → the new value (and nil, forcible when init is given),
 * or nil, err */
static int l_incr(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  double n, init = 0, ttl = 0;
  if (!to_number(L, 3, &n)) return luaL_error(L, "cannot convert 'nil' to 'double'");
  int has_init = lua_toboolean(L, 4);
  if (has_init && !to_number(L, 4, &init))
    return luaL_error(L, "bad init arg: number expected, got %s", luaL_typename(L, 4));
  if (!lua_isnoneornil(L, 5)) {
    if (!to_number(L, 5, &ttl)) return luaL_error(L, "bad init_ttl arg: number expected, got %s", luaL_typename(L, 5));
    if (ttl < 0) return luaL_error(L, "bad \"init_ttl\" argument");
    if (!has_init) return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
  }
  double result;
  int forcible;
  int rc = mg_dict_incr(d, k, kl, n, has_init ? &init : NULL, whole_ms(ttl), &result, &forcible);
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  lua_pushnumber(L, result);
  if (!has_init) return 1;
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* ---- expiry ------------------------------------------------------------------------------------- */

/* d:ttl(key) → seconds left, to the millisecond (0: no expiry; negative: expired, not freed
 * yet), or nil, "not found" */
static int l_ttl(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  double left;
  int rc = mg_dict_ttl(d, k, kl, &left);
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  lua_pushnumber(L, floor(left * 1000 + 0.5) / 1000);
  return 1;
}

/* d:expire(key, exptime) → true (exptime 0 or negative: no expiry), or nil, "not found" */
static int l_expire(lua_State *L) {
  mg_zone_t *d = check_dict(L);
  if (!lua_toboolean(L, 3)) return luaL_error(L, "bad \"exptime\" argument");
  size_t kl;
  const char *err, *k = check_key(L, &kl, 1, &err);
  if (!k) return fail(L, 0, err);
  double ttl;
  if (!to_number(L, 3, &ttl))
    return luaL_error(L, "attempt to perform arithmetic on local 'exptime' (a %s value)", luaL_typename(L, 3));
  int rc = mg_dict_expire(d, k, kl, whole_ms(ttl));
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the whole dictionary ------------------------------------------------------------------------- */

typedef struct {
  lua_State *L;
  int n;
} keys_t;

static void on_key(void *ud, const char *key, size_t klen) {
  keys_t *ks = ud;
  lua_pushlstring(ks->L, key, klen); /* keys key */
  lua_rawseti(ks->L, -2, ++ks->n);   /* keys */
}

/* The optional count of get_keys and flush_expired (0 or negative: all). */
static size_t check_max(lua_State *L, int dflt) {
  int n = lua_gettop(L);
  if (n != 1 && n != 2) luaL_error(L, "expecting 1 or 2 argument(s), but saw %d", n);
  int max = n == 2 ? luaL_checkint(L, 2) : dflt;
  return max > 0 ? (size_t)max : 0;
}

/* d:get_keys([max]) → the live keys (at most max, default 1024, 0 for all), least recently
 * used first */
static int l_get_keys(lua_State *L) {
  size_t max = check_max(L, 1024);
  mg_zone_t *d = check_dict(L);
  lua_newtable(L);
  keys_t ks = {L, 0};
  mg_dict_keys(d, max, on_key, &ks);
  return 1;
}

/* d:flush_expired([max]) → how many expired entries were freed (at most max, 0 for all) */
static int l_flush_expired(lua_State *L) {
  size_t max = check_max(L, 0);
  lua_pushnumber(L, (lua_Number)mg_dict_flush_expired(check_dict(L), max));
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

/* ---- lists ------------------------------------------------------------------------------------------ */

/* The dictionary and key of a list function taking `nargs` arguments, or NULL with the failure
 * pushed (*ret: how many results). */
static const char *list_args(lua_State *L, int nargs, mg_zone_t **d, size_t *kl, int *ret) {
  int n = lua_gettop(L);
  if (n != nargs) luaL_error(L, "expecting %d arguments, but only seen %d", nargs, n);
  *d = check_dict(L);
  const char *err, *k = check_key(L, kl, 0, &err);
  if (!k) *ret = fail(L, 0, err);
  return k;
}

/* d:lpush / d:rpush(key, value) → the list's length, or nil, err */
static int push(lua_State *L, int left) {
  mg_zone_t *d;
  size_t kl;
  int ret;
  const char *k = list_args(L, 3, &d, &kl, &ret);
  if (!k) return ret;
  mg_dict_value_t v = {.type = MG_DICT_NIL};
  int t = lua_type(L, 3);
  if (t == LUA_TSTRING) v.type = MG_DICT_STRING, v.str = lua_tolstring(L, 3, &v.len);
  else if (t == LUA_TNUMBER) v.type = MG_DICT_NUMBER, v.num = lua_tonumber(L, 3);
  else return fail(L, 0, "bad value type");
  size_t len;
  int rc = mg_dict_push(d, left, k, kl, &v, &len);
  if (rc < 0) return fail(L, rc == MG_DICT_NO_MEMORY && len == SIZE_MAX, mg_dict_strerror(rc));
  lua_pushnumber(L, (lua_Number)len);
  return 1;
}

static int l_lpush(lua_State *L) { return push(L, 1); }
static int l_rpush(lua_State *L) { return push(L, 0); }

/* d:lpop / d:rpop(key) → the item, nil for a missing list, or nil, err */
static int pop(lua_State *L, int left) {
  mg_zone_t *d;
  size_t kl;
  int ret;
  const char *k = list_args(L, 2, &d, &kl, &ret);
  if (!k) return ret;
  got_t g = {L, 0};
  int rc = mg_dict_pop(d, left, k, kl, on_value, &g);
  if (rc == MG_DICT_NOT_FOUND) lua_pushnil(L);
  else if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  return 1;
}

static int l_lpop(lua_State *L) { return pop(L, 1); }
static int l_rpop(lua_State *L) { return pop(L, 0); }

/* d:llen(key) → the list's length (0: missing), or nil, "value not a list" */
static int l_llen(lua_State *L) {
  mg_zone_t *d;
  size_t kl, len;
  int ret;
  const char *k = list_args(L, 2, &d, &kl, &ret);
  if (!k) return ret;
  int rc = mg_dict_llen(d, k, kl, &len);
  if (rc < 0) return fail(L, 0, mg_dict_strerror(rc));
  lua_pushnumber(L, (lua_Number)len);
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
    static const luaL_Reg m[] = {
        {"get", l_get},         {"get_stale", l_get_stale},   {"set", l_set},
        {"safe_set", l_safe_set}, {"add", l_add},             {"safe_add", l_safe_add},
        {"replace", l_replace}, {"incr", l_incr},             {"delete", l_delete},
        {"ttl", l_ttl},         {"expire", l_expire},         {"lpush", l_lpush},
        {"rpush", l_rpush},     {"lpop", l_lpop},             {"rpop", l_rpop},
        {"llen", l_llen},       {"get_keys", l_get_keys},     {"flush_all", l_flush_all},
        {"flush_expired", l_flush_expired}, {"capacity", l_capacity}, {"free_space", l_free_space},
        {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, m);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"shared", l_shared}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
