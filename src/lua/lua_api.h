/* lua_api: the request-time functions of the moongate module (SPEC 12), registered into the
 * module table before init.lua runs: mg.sleep, mg.spawn, mg.wait (lua_thread.c), mg.socket
 * (lua_socket.c), and req:subrequest (subrequest.c). The only file that knows them all. */
#ifndef MG_LUA_API_H
#define MG_LUA_API_H

#include <lua.h>

/* Adds the functions to the module table at the top of the stack. */
void mg_lua_api_open(lua_State *L);

#endif
