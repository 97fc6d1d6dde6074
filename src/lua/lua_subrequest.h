/* lua_subrequest: req:subrequest(uri[, opts]) (docs/lua-api.md, "Waiting: coroutines, cosockets, subrequests"), nginx's ngx.location.capture.
 *
 * A subrequest is a child request run through the same engine (routing, the target route's
 * hooks, any handler: SCGI, balancer, static, Lua) whose response goes to a capture sink
 * instead of the client: status, headers and body up to subrequest_max_body, handed to the
 * Lua thread that asked as { status =, headers =, body = }, or nil and an error. If that
 * thread is abandoned (client gone), the child is cancelled with everything it holds. */
#ifndef MG_LUA_SUBREQUEST_H
#define MG_LUA_SUBREQUEST_H

#include <lua.h>

int mg_subrequest_lua(lua_State *L);

#endif
