/* lua_body: the request body in Lua (docs/lua-api.md, "req" and "Waiting: coroutines, cosockets, subrequests"): req:read_body(), req:body(), req:set_body().
 *
 * req:read_body() reads the whole body before the backend is contacted, waiting in the
 * calling thread while it arrives; it is held in the request (in memory up to 64 KiB, beyond
 * that in an unlinked file) within client_max_body_size, and the SCGI handler sends what is
 * held. req:set_body() replaces what the backend will receive. */
#ifndef MG_LUA_BODY_H
#define MG_LUA_BODY_H

#include <lua.h>

/* The methods, as req's __index hands them out (lua_req.c). */
int mg_lua_req_read_body(lua_State *L);
int mg_lua_req_body(lua_State *L);
int mg_lua_req_set_body(lua_State *L);

#endif
