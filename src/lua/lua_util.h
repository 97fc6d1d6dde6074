/* lua_util: mg.log, mg.now, mg.time, mg.encode_base64/decode_base64, mg.escape_uri/unescape_uri,
 * mg.encode_args/decode_args, mg.md5/sha1/sha256, mg.hmac_sha256, mg.to_hex (docs/lua-api.md, "More of the request and response"). */
#ifndef MG_LUA_UTIL_H
#define MG_LUA_UTIL_H

#include <lua.h>

/* The helpers into the module table at the top of the stack. */
void mg_util_open(lua_State *L);

#endif
