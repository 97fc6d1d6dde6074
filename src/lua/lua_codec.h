/* lua_codec: the string codecs among the helpers (docs/lua-api.md, "String helpers"), with
 * OpenResty's names and results: mg.escape_uri, mg.unescape_uri, mg.encode_args,
 * mg.decode_args, mg.encode_base64, mg.decode_base64, mg.decode_base64mime, mg.quote_sql_str.
 * What each returns, accepts and raises is what lua-nginx-module 0.10 with lua-resty-core gives
 * for ngx.NAME, as tests/e2e/test_openresty_diff_strings.py measures against Debian's nginx
 * (decode_base64mime, later than Debian's, against a model of lua-nginx-module's C). */
#ifndef MG_LUA_CODEC_H
#define MG_LUA_CODEC_H

#include <lua.h>
#include <stddef.h>

/* Argument idx read the way lua-resty-core reads a string argument: a string as it is; nil,
 * false or no argument as ""; anything else through the global tostring of the time the module
 * was opened (so a number gives its Lua text and __tostring applies). A converted value
 * replaces the argument on the stack, which keeps the returned bytes alive. Raises only what
 * tostring raises. */
const char *mg_codec_arg(lua_State *L, int idx, size_t *len);

/* The codecs into the module table at the top of the stack. */
void mg_codec_open(lua_State *L);

#endif
