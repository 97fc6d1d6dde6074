/* lua_limit_req: see lua_limit_req.h.
 *
 * A key's state is a 16-byte string value in the limiter's dictionary: the excess (requests
 * over the rate, the water in the bucket) and the time it was last committed. */
#include "lua_limit_req.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dict.h"
#include "lua_shdict.h"

#define LIMIT_MT "moongate.limit_req"

typedef struct {
  mg_shdict_box_t dict; /* first, for mg_shdict_release_all */
  double rate;          /* requests per second */
  double burst;         /* requests */
} limit_box_t;

/* One call of lim:incoming, for on_update. */
typedef struct {
  const limit_box_t *lb;
  int commit, rejected;
  double excess;
} incoming_t;

/* Under the dictionary's lock: the bucket's level for this request, and its new state when
 * the request is let through and committed. */
static int on_update(void *ud, void *value, int found, double now) {
  incoming_t *in = ud;
  double state[2]; /* excess (requests), last (seconds) */
  double excess = 0;
  if (found) {
    memcpy(state, value, sizeof state);
    /* The bucket leaks `rate` requests per second; this request adds one. */
    excess = state[0] - in->lb->rate * fabs(now - state[1]) + 1;
    if (excess < 0) excess = 0;
  }
  in->excess = excess;
  in->rejected = excess > in->lb->burst;
  if (in->rejected || !in->commit) return 0;
  state[0] = excess, state[1] = now;
  memcpy(value, state, sizeof state);
  return 1;
}

/* lim:incoming(key, commit) → delay seconds, or nil, "rejected" */
static int l_incoming(lua_State *L) {
  limit_box_t *lb = luaL_checkudata(L, 1, LIMIT_MT);
  if (!lb->dict.zone) return luaL_error(L, "limiter used after its configuration ended");
  size_t kl;
  const char *k = luaL_checklstring(L, 2, &kl);
  if (kl == 0 || kl > MG_DICT_MAX_KEY) return luaL_argerror(L, 2, "key of 1 to 65535 bytes");
  incoming_t in = {.lb = lb, .commit = lua_toboolean(L, 3)};
  double state[2];
  /* An idle key's state is worth nothing once the bucket has drained. A key that does not fit
   * is not limited this time (its state is lost, as an evicted one's is). */
  mg_dict_update(lb->dict.zone, k, kl, state, sizeof state, 60 + (lb->burst + 1) / lb->rate, on_update, &in);
  if (in.rejected) {
    lua_pushnil(L);
    lua_pushliteral(L, "rejected");
    return 2;
  }
  lua_pushnumber(L, in.excess / lb->rate);
  return 1;
}

/* mg.limit_req(name, { rate = "10r/s", burst = 20, size = "1m" }) */
static int l_limit_req(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!mg_lua_shdict_declaring) return luaL_error(L, "mg.limit_req: limiters are declared in init.lua");
  lua_getfield(L, 2, "rate");
  const char *rs = lua_tostring(L, -1);
  double rate = 0;
  char unit[4] = "";
  if (!rs || sscanf(rs, "%lfr/%1[sm]", &rate, unit) != 2 || !(rate > 0))
    return luaL_error(L, "mg.limit_req: rate must be like \"10r/s\" or \"30r/m\", got %s", rs ? rs : "nothing");
  if (unit[0] == 'm') rate /= 60;
  lua_getfield(L, 2, "burst");
  double burst = luaL_optnumber(L, -1, 0);
  if (burst < 0) return luaL_error(L, "mg.limit_req: burst must not be negative");
  lua_getfield(L, 2, "size");
  size_t size = lua_isnil(L, -1) ? 1024 * 1024 : mg_shdict_size_arg(L, lua_gettop(L), "mg.limit_req");
  lua_pop(L, 3);
  for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
    const char *k = lua_tostring(L, -2);
    if (!k || (strcmp(k, "rate") && strcmp(k, "burst") && strcmp(k, "size")))
      return luaL_error(L, "mg.limit_req: unknown option %s (rate, burst, size)", k ? k : "?");
  }
  char zname[128];
  snprintf(zname, sizeof zname, "limit_req:%s", name);
  mg_zone_t *zn = mg_shdict_push(L, zname, size, "mg.limit_req"); /* dict */
  limit_box_t *lb = lua_newuserdata(L, sizeof *lb);               /* dict lim */
  lb->dict.zone = zn;
  mg_zone_ref(zn); /* the limiter holds the zone too; released with the state's registry */
  lb->rate = rate, lb->burst = burst;
  luaL_getmetatable(L, LIMIT_MT);
  lua_setmetatable(L, -2);
  char key[160];
  snprintf(key, sizeof key, "%s#limiter%p", zname, (void *)lb);
  mg_shdict_keep(L, key);
  lua_remove(L, -2); /* lim */
  return 1;
}

void mg_limit_req_open(lua_State *L) {
  if (luaL_newmetatable(L, LIMIT_MT)) {
    lua_newtable(L);
    lua_pushcfunction(L, l_incoming);
    lua_setfield(L, -2, "incoming");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"limit_req", l_limit_req}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
