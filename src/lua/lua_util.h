/* lua_util: the helpers of the moongate module (docs/lua-api.md, "String helpers"): mg.log,
 * mg.now, mg.time, mg.md5/md5_bin/sha1/sha1_bin/sha256, mg.hmac_sha1/hmac_sha256,
 * mg.crc32_short/crc32_long, mg.to_hex, and the string codecs of lua_codec.h. */
#ifndef MG_LUA_UTIL_H
#define MG_LUA_UTIL_H

#include <lua.h>

/* The helpers into the module table at the top of the stack. */
void mg_util_open(lua_State *L);

#endif
