/* lua_ngx: the `ngx` global, lua-nginx-module's API on moongate's machinery (docs/openresty.md).
 *
 * One implementation serves both names: the `ngx.*` functions that touch the request (ngx.say,
 * ngx.exit, ngx.var, ngx.header, ngx.req.*, ngx.status) are C functions here that find the
 * request the running Lua code serves (mg_lua_req_now, lua_request.h) instead of taking a
 * `req` argument; everything else in `ngx` is the `mg.*` function of the same meaning, put
 * together by lua/moongate/ngx.lua. Names lua-nginx-module has and moongate does not raise
 * "ngx.NAME is not supported by moongate".
 *
 * Output: ngx.say/ngx.print stream the response (its head goes out with the first bytes,
 * chunked unless a Content-Length was set), in rewrite, access and content; once Lua has
 * written output, the hook or handler that wrote it ends the response when it returns, as
 * ngx.exit does. The time functions (ngx.now, ngx.today, ngx.http_time, ...) and the two C
 * functions pure-Lua libraries reach through LuaJIT's FFI (ngx_hex_dump, ngx_atoi) are in
 * lua_ngx_time.c. */
#ifndef MG_LUA_NGX_H
#define MG_LUA_NGX_H

#include <lua.h>

/* Builds `ngx` (with the moongate module table at the top of the stack, after every other
 * mg_*_open) and sets it as a global, with OpenResty's `print` (to the error log at notice). */
void mg_ngx_open(lua_State *L);

/* The time functions (lua_ngx_time.c) into the table at the top of the stack: now, time,
 * update_time, today, localtime, utctime, http_time, cookie_time, parse_http_time. mg.now and
 * mg.time are the same functions. */
void mg_ngx_time_open(lua_State *L);

/* Pushes the cached time (mg.now's) formatted by strftime's fmt, local or UTC. */
int mg_ngx_push_time(lua_State *L, const char *fmt, int local);

#endif
