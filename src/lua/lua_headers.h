/* lua_headers: header fields in Lua (docs/lua-api.md, "req" and "More of the request and response"): the req.headers and res.headers proxies,
 * the plain copies req:headers() and res:headers(), and the one rule for a Lua table of
 * header fields (req:exit's headers, a content handler's returned headers, a subrequest's
 * opts.headers).
 *
 * A field set from Lua has a name that is an HTTP token and a value without CR, LF or NUL
 * (mg_http_is_token, mg_http_value_is_safe): it cannot end its line and start another field,
 * or another response. The proxies and the tables refuse the same fields with the same
 * messages. */
#ifndef MG_LUA_HEADERS_H
#define MG_LUA_HEADERS_H

#include <lua.h>

#include "request.h"

/* Pushes the request's headers proxy (response 0: req.headers, 1: res.headers), made on first
 * use and kept, so repeated `req.headers[...]` allocate nothing. */
void mg_lua_headers_push(lua_State *L, mg_req_t *req, int response);
/* A plain table of header fields (lowercase names, lists for repeats), as req:headers(). */
void mg_lua_push_fields(lua_State *L, const mg_fields_t *f);
/* The same with the names as sent and no metatable (OpenResty's res.header of a capture, and
 * ngx.req.get_headers(0, true)). */
void mg_lua_push_fields_raw(lua_State *L, const mg_fields_t *f);
/* Copies the table of header fields at idx (name = value: a string name that is an HTTP
 * token, a string or number value without CR, LF or NUL) into f from pool: with `replace`,
 * each name replaces the fields of that name already in f (mg_fields_set), else the fields
 * are appended (mg_fields_add). Returns NULL, or, when a field is bad, a message naming the
 * first bad one, pushed onto L, and nothing is copied: "invalid header field name 'x y'",
 * "header value for 'X' holds CR, LF or NUL", "header field names must be strings, not
 * number", "header value for 'X' must be a string, not table". It never raises: the caller
 * raises it (req:exit, req:subrequest) or, outside any Lua call (a content handler's return),
 * logs it and answers 500. */
const char *mg_lua_fields_from_table(lua_State *L, int idx, mg_pool_t *pool, mg_fields_t *f, int replace);
/* The proxies' metatable, once per worker. */
void mg_lua_headers_open(lua_State *L);

#endif
