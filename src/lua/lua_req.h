/* lua_req: the `req` object's fields and methods (docs/lua-api.md, "req"): what a hook or handler
 * reads (req.method, req.uri, req.headers, req.ctx, req.env, ...), what it may assign
 * (req.uri in rewrite; req.query and req.method in rewrite and access), req:exit(),
 * req:redirect(), and the methods of the other files (req:read_body() and its kin,
 * req:subrequest()). The userdata itself and its checks are lua_request.c's. */
#ifndef MG_LUA_REQ_H
#define MG_LUA_REQ_H

#include <lua.h>

/* req's metatable, once per worker. */
void mg_lua_req_open(lua_State *L);

#endif
