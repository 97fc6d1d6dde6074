/* lua_res: the `res` object of the header_filter, body_filter and log hooks (docs/lua-api.md, "res (header_filter, log)"):
 * res.status (assignable in header_filter, a final status only), res.headers (the response's
 * headers proxy), res.bytes_sent. Like req, it is cleared when its request is released. */
#ifndef MG_LUA_RES_H
#define MG_LUA_RES_H

#include <lua.h>

#include "request.h"

/* Pushes the request's `res` userdata, made on first use. */
void mg_lua_push_res(lua_State *L, mg_req_t *req);
/* res's metatable, once per worker. */
void mg_lua_res_open(lua_State *L);

#endif
