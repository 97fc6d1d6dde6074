/* Fuzz target: the string codecs of ngx.* / mg.* (src/lua/lua_codec.c) against models.
 *
 * - decode_base64 against a model of nginx's ngx_decode_base64, which OpenResty calls: the
 *   characters up to the first '=' must all be of the alphabet, their count must not leave one
 *   over (len % 4 == 1), and they decode to floor(len * 3 / 4) bytes; otherwise nil. Also
 *   decode_base64(encode_base64(s[, no_padding])) == s.
 * - unescape_uri against a model in plain Lua ('+' is a space, then every %XX is its byte,
 *   anything else is kept), and unescape_uri(escape_uri(s)) == s.
 * - decode_args against a model built from unescape_uri: pieces split at '&', each at its
 *   first '=', empty keys dropped, a key without '=' is true, repeats make a list, at most 100
 *   pieces.
 * A mismatch aborts with the input on stderr; any Lua error is a failure too. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lua_codec.h"

static const char script[] =
    "local C, s = ...\n"
    "local function fail(what, a, b) error(what .. ': ' .. string.format('%q', tostring(a)) .. ' ~= ' .. "
    "string.format('%q', tostring(b)) .. ' for ' .. string.format('%q', s), 0) end\n"
    /* ngx_decode_base64's model */
    "local A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'\n"
    "local val = {} for i = 1, 64 do val[A:byte(i)] = i - 1 end\n"
    "local function model_b64(x)\n"
    "  local n = 0\n"
    "  for i = 1, #x do local c = x:byte(i) if c == 61 then break end if not val[c] then return nil end n = i end\n"
    "  if n % 4 == 1 then return nil end\n"
    "  local out, bits, acc = {}, 0, 0\n"
    "  for i = 1, n do acc = acc * 64 + val[x:byte(i)] bits = bits + 6\n"
    "    if bits >= 8 then bits = bits - 8 local b = math.floor(acc / 2 ^ bits) out[#out + 1] = string.char(b) acc = acc % 2 ^ bits end\n"
    "  end\n"
    "  return table.concat(out)\n"
    "end\n"
    "local got = C.decode_base64(s) local want = model_b64(s)\n"
    "if got ~= want then fail('decode_base64', got, want) end\n"
    "if C.decode_base64(C.encode_base64(s)) ~= s then fail('base64 round trip', C.decode_base64(C.encode_base64(s)), s) end\n"
    "if C.decode_base64(C.encode_base64(s, true)) ~= s then fail('base64 no_padding round trip', nil, s) end\n"
    /* unescape_uri's model */
    "local function model_unescape(x)\n"
    "  x = x:gsub('+', ' ')\n"
    "  return (x:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end))\n"
    "end\n"
    "got, want = C.unescape_uri(s), model_unescape(s)\n"
    "if got ~= want then fail('unescape_uri', got, want) end\n"
    "if C.unescape_uri(C.escape_uri(s)) ~= s then fail('uri round trip', C.unescape_uri(C.escape_uri(s)), s) end\n"
    /* decode_args' model */
    "local function model_args(x)\n"
    "  local t, n = {}, 0\n"
    "  for piece in (x .. '&'):gmatch('([^&]*)&') do\n"
    "    if n == 100 then break end\n"
    "    n = n + 1\n"
    "    local k, v = piece:match('^([^=]*)=(.*)$')\n"
    "    if not k then k, v = piece, true else v = model_unescape(v) end\n"
    "    k = model_unescape(k)\n"
    "    if k ~= '' then\n"
    "      local old = t[k]\n"
    "      if old == nil then t[k] = v elseif type(old) == 'table' then old[#old + 1] = v else t[k] = { old, v } end\n"
    "    end\n"
    "  end\n"
    "  return t\n"
    "end\n"
    "local function same(a, b)\n"
    "  for k, v in pairs(a) do\n"
    "    local w = b[k]\n"
    "    if type(v) == 'table' then\n"
    "      if type(w) ~= 'table' or #v ~= #w then return false, k end\n"
    "      for i = 1, #v do if v[i] ~= w[i] then return false, k end end\n"
    "    elseif v ~= w then return false, k end\n"
    "  end\n"
    "  for k in pairs(b) do if a[k] == nil then return false, k end end\n"
    "  return true\n"
    "end\n"
    "local ok, k = same(C.decode_args(s), model_args(s))\n"
    "if not ok then fail('decode_args at key ' .. tostring(k), C.decode_args(s)[k], model_args(s)[k]) end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_loadbuffer(L, script, sizeof script - 1, "=fuzz_codec") != 0) abort();
  lua_newtable(L);
  mg_codec_open(L);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 2, 0, 0) != 0) {
    fprintf(stderr, "fuzz_codec: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_close(L);
  return 0;
}
