/* lua_shdict: the Lua binding of the shared dictionaries, mg.shared(name[, size]) and the
 * dictionary methods (docs/lua-api.md, "State shared by all workers"), over shm/dict.h; and the registry of the zones a Lua state
 * (a configuration) holds.
 *
 * mg.shared(name, size) in init.lua opens the dictionary, whose zone the master maps before
 * it forks the workers, so every worker shares it; mg.shared(name) finds a declared one. Each
 * Lua state keeps the zones it holds in its registry: a reload that declares the same name
 * with the same size holds the same zone as the configuration it replaces, so the contents
 * survive it, and mg_shdict_release_all, when a configuration ends, drops its holds.
 *
 * The methods are every one of OpenResty's ngx.shared.DICT, with its results value by value
 * (as lua-resty-core and lua-nginx-module 0.10 give them, checked by
 * tests/e2e/test_openresty_diff_shdict.py): get, get_stale, set, safe_set, add, safe_add,
 * replace (ok, err, forcible), incr (with init and init_ttl), delete, ttl, expire, lpush,
 * rpush, lpop, rpop, llen, get_keys, flush_all, flush_expired, capacity, free_space; user flags
 * on the stores and get. A nil, empty or too long key is a result (nil, "nil key"), as are
 * "not found", "exists", "no memory", "not a number", "value not a list", "value is a list" and
 * "bad value type"; what OpenResty raises (a negative exptime, a bad init, a list call with the
 * wrong number of arguments) raises with its message. */
#ifndef MG_LUA_SHDICT_H
#define MG_LUA_SHDICT_H

#include <lua.h>
#include <stddef.h>

#include "lua_limit_req.h"
#include "zone.h"

/* Nonzero while init.lua runs: only then may mg.shared and mg.limit_req declare. */
extern int mg_lua_shdict_declaring;

/* Drops a configuration's hold on its zones (the Lua state's registry of them is gone with
 * it); a zone no configuration holds any more is unmapped. */
void mg_shdict_release_all(lua_State *L);

/* Makes this state's registry of zones, the dictionaries' metatable, and mg.shared in the
 * module table at the top of the stack. */
void mg_shdict_open_shared(lua_State *L);

/* mg.shared and mg.limit_req into the module table at the top of the stack. Inline so that the
 * caller depends on both files: lua_limit_req.c builds on this one's registry, and a call from
 * here to it would make a cycle. */
static inline void mg_shdict_open(lua_State *L) {
  mg_shdict_open_shared(L);
  mg_limit_req_open(L);
}

/* What a userdata that holds a zone starts with. mg_shdict_release_all drops the hold of every
 * userdata kept in the state's registry of zones and sets zone to NULL ("used after its
 * configuration ended"). */
typedef struct {
  mg_zone_t *zone;
} mg_shdict_box_t;

/* Finds the dictionary `name` in this state's registry or, with a size (0: it must exist),
 * opens it there; pushes its userdata and returns its zone. Raises "<what>: ..." errors. */
mg_zone_t *mg_shdict_push(lua_State *L, const char *name, size_t size, const char *what);

/* Keeps the userdata at the top of the stack, which starts with an mg_shdict_box_t holding one
 * reference, in the state's registry of zones under `key`, for mg_shdict_release_all. */
void mg_shdict_keep(lua_State *L, const char *key);

/* A size argument like "10m", "512k", "1g" or a number of bytes; raises "<what>: size must be
 * like ..." otherwise. */
size_t mg_shdict_size_arg(lua_State *L, int idx, const char *what);

#endif
