/* lua_headers: header fields in Lua (SPEC 4, 14): the req.headers and res.headers proxies
 * and the plain copies req:headers() and res:headers().
 *
 * A field set through a proxy has a name that is an HTTP token and a value without CR, LF or
 * NUL (mg_http_is_token, mg_http_value_is_safe): it cannot end its line and start another
 * field, or another response. */
#ifndef MG_LUA_HEADERS_H
#define MG_LUA_HEADERS_H

#include <lua.h>

#include "request.h"

/* Pushes the request's headers proxy (response 0: req.headers, 1: res.headers), made on first
 * use and kept, so repeated `req.headers[...]` allocate nothing. */
void mg_lua_headers_push(lua_State *L, mg_req_t *req, int response);
/* A plain table of header fields (lowercase names, lists for repeats), as req:headers(). */
void mg_lua_push_fields(lua_State *L, const mg_fields_t *f);
/* The proxies' metatable, once per worker. */
void mg_lua_headers_open(lua_State *L);

#endif
