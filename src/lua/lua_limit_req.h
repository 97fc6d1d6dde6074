/* lua_limit_req: mg.limit_req(name, { rate =, burst =, size = }) and lim:incoming(key, commit),
 * nginx's limit_req leaky bucket (the "excess" arithmetic of ngx_http_limit_req_module and
 * lua-resty-limit-traffic) with each key's state in a dictionary of its own (shm/dict.h), so it
 * is exact across workers. Limiters are declared in init.lua; their dictionary is held in the
 * state's registry of zones (lua_shdict.h) and released with the configuration. */
#ifndef MG_LUA_LIMIT_REQ_H
#define MG_LUA_LIMIT_REQ_H

#include <lua.h>

/* The limiter's metatable, and mg.limit_req in the module table at the top of the stack. */
void mg_limit_req_open(lua_State *L);

#endif
