/* config_passive: see config_passive.h. */
#include "config_passive.h"

#include <stdlib.h>

#include "passive.h"

/* t[key] as a whole number, or dflt. */
static int num(lua_State *L, const char *key, int dflt) {
  lua_getfield(L, -1, key);
  int v = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* The list t[key] of numbers into out (at most max); returns their count. */
static int num_list(lua_State *L, const char *key, int *out, int max) {
  lua_getfield(L, -1, key);
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  if (n > max) n = max;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    out[i] = (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return n;
}

static int flag(lua_State *L, const char *key) {
  lua_getfield(L, -1, key);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

void mg_config_passive_load(lua_State *L, mg_balancer_t *b) {
  /* stack: ... balancer */
  lua_getfield(L, -1, "passive");
  lua_getfield(L, -2, "retries");
  /* stack: ... balancer, passive, retries */
  if (lua_isnil(L, -1) && lua_isnil(L, -2)) {
    lua_pop(L, 2);
    return;
  }
  mg_passive_t *p = mg_calloc(1, sizeof *p);
  b->passive = p;
  if (lua_istable(L, -2)) {
    lua_pushvalue(L, -2);
    mg_passive_eject_t *e = &p->eject;
    p->eject_on = 1;
    e->fails = num(L, "fails", 5);
    e->window_ms = (uint64_t)num(L, "window", 10000);
    e->eject_ms = (uint64_t)num(L, "eject", 30000);
    e->nstatuses = num_list(L, "statuses", e->statuses, MG_PASSIVE_MAX_STATUSES);
    e->timeouts = flag(L, "timeouts");
    e->max_ejected_pct = num(L, "max_ejected_pct", -1);
    e->max_ejected_count = num(L, "max_ejected_count", 0);
    lua_pop(L, 1);
  }
  if (lua_istable(L, -1)) {
    mg_retries_t *r = &p->retry;
    p->retries_on = 1;
    r->on_connect = flag(L, "connect");
    r->on_timeout = flag(L, "timeout");
    r->nstatuses = num_list(L, "statuses", r->statuses, MG_PASSIVE_MAX_STATUSES);
    r->tries = num(L, "tries", 2);
    r->budget_pct = num(L, "budget", 20);
    lua_getfield(L, -1, "methods");
    int n = (int)lua_objlen(L, -1);
    for (int i = 0; i < n && i < MG_RETRY_MAX_METHODS; i++) {
      lua_rawgeti(L, -1, i + 1);
      r->methods[r->nmethods++] = mg_strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}
