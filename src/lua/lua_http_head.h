/* lua_http_head: the head of an HTTP/1.x response, parsed by llhttp, for the HTTP client
 * lua/moongate/http.lua (docs/lua-api.md, "HTTP client: moongate.http").
 *
 * mg._http_head(bytes) takes the bytes of one response head, from the status line through the
 * empty line that ends it ("HTTP/1.1 200 OK\r\n...\r\n\r\n"), and returns
 *   status (a number), reason (a string, "" when the line has none), version (1.0 or 1.1),
 *   headers (a table: each field under the name as it first arrived; a name that arrives again,
 *   in any case, makes its value a list of the values in order of arrival)
 * or nil, err when the bytes are not a whole, well-formed head: err names what is wrong in plain
 * words and quotes the line ("malformed response head: invalid status code, in line 1:
 * \"HTTP/1.1 abc\""). Raises only for a missing or non-string argument. Bytes past the empty
 * line are not read. */
#ifndef MG_LUA_HTTP_HEAD_H
#define MG_LUA_HTTP_HEAD_H

#include <lua.h>

/* mg._http_head into the module table at the top of the stack. */
void mg_http_head_open(lua_State *L);

#endif
