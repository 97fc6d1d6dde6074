/* shdict: dictionaries in shared memory, seen by every worker (SPEC 13), and limit_req.
 *
 * mg.shared(name, size) in init.lua maps a zone (MAP_SHARED | MAP_ANONYMOUS) in the process
 * that loads the configuration, the master, before it forks the workers, so every worker
 * shares it. A reload that declares the same name with the same size gets the same zone back
 * (the master keeps zones by name while a configuration uses them), so contents survive it.
 *
 * Inside a zone, as OpenResty's ngx.shared.DICT over nginx's slab allocator: a hash table of
 * entries, an LRU list, and a first-fit allocator with boundary tags; when a set does not fit,
 * the least recently used entries are evicted (`forcible`). One robust process-shared mutex per
 * zone: a worker killed while holding it does not freeze the others. If it died in the middle
 * of changing the zone's structure, the next locker empties the zone rather than trust it (a
 * rare loss of cached data instead of a crash); an incr of an existing number is a single
 * store and never leaves the zone inconsistent.
 *
 * mg.limit_req(name, { rate =, burst =, size = }) is nginx's limit_req leaky bucket (the
 * "excess" arithmetic of ngx_http_limit_req_module and lua-resty-limit-traffic), with its
 * state in a zone of its own, exact across workers. */
#ifndef MG_SHDICT_H
#define MG_SHDICT_H

#include <lua.h>
#include <stddef.h>

typedef struct mg_zone_s mg_zone_t;

/* Nonzero while init.lua runs: only then may mg.shared and mg.limit_req declare. */
extern int mg_lua_shdict_declaring;

/* Drops a configuration's hold on its zones (the Lua state's registry of them is gone with
 * it); a zone no configuration holds any more is unmapped. */
void mg_shdict_release_all(lua_State *L);

/* mg.shared and mg.limit_req into the module table at the top of the stack. */
void mg_shdict_open(lua_State *L);

#endif
