/* lua_api: the functions of the moongate module implemented in C, registered into the module
 * table before init.lua runs: mg.sleep, mg.spawn, mg.wait (lua_thread.c), mg.socket
 * (lua_socket.c), mg.shared and mg.limit_req (lua_shdict.c, lua_limit_req.c), the helpers
 * (lua_util.c), and M._lookup for mg.set's user and group. The only file that knows them all. */
#ifndef MG_LUA_API_H
#define MG_LUA_API_H

#include <lua.h>

/* Adds the functions to the module table at the top of the stack. */
void mg_lua_api_open(lua_State *L);

#endif
