/* lua_manager: see lua_manager.h. */
#include "lua_manager.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "balancer.h"
#include "lua_request.h"
#include "timeq.h"

static const char *const method_names[] = {"byrequests", "bytraffic", "bybusyness", "lua"};

static void push_member(lua_State *L, mg_member_t *m, uint64_t now) {
  mg_member_sync(m);
  const mg_member_stats_t *s = m->shared ? m->shared : &m->local;
  char flags[8];
  lua_createtable(L, 0, 12);
  lua_pushstring(L, m->addr.url), lua_setfield(L, -2, "url");
  lua_pushstring(L, m->addr.text), lua_setfield(L, -2, "address");
  if (m->name) lua_pushstring(L, m->name->host), lua_setfield(L, -2, "host");
  if (m->route) lua_pushstring(L, m->route), lua_setfield(L, -2, "route");
  lua_pushinteger(L, m->lbfactor), lua_setfield(L, -2, "lbfactor");
  lua_pushinteger(L, m->cfg_lbfactor), lua_setfield(L, -2, "configured_lbfactor");
  lua_pushstring(L, mg_member_flags_text(m->flags, flags)), lua_setfield(L, -2, "status");
  lua_pushstring(L, mg_member_flags_text(m->cfg_flags, flags)), lua_setfield(L, -2, "configured_status");
  lua_pushboolean(L, m->shared && (m->shared->live_set || m->shared->live_lbfactor || m->shared->live_max_set)),
      lua_setfield(L, -2, "changed");
  lua_pushinteger(L, m->cap ? __atomic_load_n(&m->cap->max, __ATOMIC_RELAXED) : m->max_conns), lua_setfield(L, -2, "max_conns");
  lua_pushinteger(L, m->max_conns), lua_setfield(L, -2, "configured_max_conns");
  lua_pushinteger(L, m->cap ? __atomic_load_n(&m->cap->busy, __ATOMIC_RELAXED) : 0), lua_setfield(L, -2, "slots_used");
  lua_pushboolean(L, mg_member_usable(m, now)), lua_setfield(L, -2, "usable");
  lua_pushboolean(L, s->health_down), lua_setfield(L, -2, "health_down");
  lua_pushnumber(L, (lua_Number)s->requests), lua_setfield(L, -2, "requests");
  lua_pushnumber(L, (lua_Number)s->bytes), lua_setfield(L, -2, "bytes");
  lua_pushnumber(L, (lua_Number)s->errors), lua_setfield(L, -2, "errors");
  lua_pushinteger(L, (lua_Integer)(s->inflight > 0 ? s->inflight : 0)), lua_setfield(L, -2, "inflight");
  lua_pushstring(L, s->last_error), lua_setfield(L, -2, "last_error");
}

/* mg._balancers() → { { name, method, members = { {url, status, lbfactor, ...}, ... } }, ... }:
 * the counters summed over workers, the flags and lbfactor in effect. */
static int l_balancers(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  const mg_config_t *cfg = req->cfg;
  uint64_t now = mg_now_ms();
  lua_createtable(L, cfg->nbalancers, 0);
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    lua_createtable(L, 0, 3);
    lua_pushstring(L, b->name), lua_setfield(L, -2, "name");
    lua_pushstring(L, method_names[b->method]), lua_setfield(L, -2, "method");
    lua_createtable(L, b->nmembers, 0);
    for (int k = 0, n = 0; k < b->nmembers; k++) {
      if (!mg_member_shown(&b->members[k])) continue; /* a name's slot without an address */
      push_member(L, &b->members[k], now);
      lua_rawseti(L, -2, ++n);
    }
    lua_setfield(L, -2, "members");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* mg._member_set(balancer, url, status|nil, lbfactor|nil, max_conns|nil) → true, or nil and why. */
static int l_member_set(lua_State *L) {
  mg_req_t *req = mg_lua_req_running(L);
  const char *bname = luaL_checkstring(L, 1), *url = luaL_checkstring(L, 2);
  const char *status = luaL_optstring(L, 3, NULL);
  int lbfactor = (int)luaL_optinteger(L, 4, 0);
  int max_conns = (int)luaL_optinteger(L, 5, -1);
  char err[160];
  mg_member_t *m = mg_balancer_find_member(req->cfg, bname, url, err, sizeof err);
  if (!m || mg_member_live_apply(m, status, lbfactor, max_conns, err, sizeof err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

void mg_manager_open(lua_State *L) {
  lua_pushcfunction(L, l_balancers);
  lua_setfield(L, -2, "_balancers");
  lua_pushcfunction(L, l_member_set);
  lua_setfield(L, -2, "_member_set");
}
