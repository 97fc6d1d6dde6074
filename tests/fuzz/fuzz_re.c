/* Fuzz target: mg.re's option parsing and its "o" cache. The input is split at NUL bytes into
 * options, pattern, subject and replacement; the options are parsed by mg_re_parse_opts (which
 * must report the first unknown letter, or none), then match, find, gmatch and gsub run through
 * Lua with and without "o" on a cache of 4 entries and 7 patterns, so the cache fills, stops
 * adding and keeps answering. Each input gets a fresh Lua state, closed at its end, so the
 * cache and every compiled pattern must be freed by their __gc (LeakSanitizer checks). Every call must return or raise a Lua error, never crash. "U" is dropped: it
 * promises valid UTF-8, which fuzzed input is not. */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lua_re.h"
#include "lua_vm.h"

static const char script[] =
    "local re, o, p, s, r = ...\n"
    "re.match(s, p, o) re.find(s, p, o, { pos = #s % 5 }, 1)\n"
    "local it = re.gmatch(s, p, o) if it then for _ = 1, 20 do if not it() then break end end end\n"
    "re.gsub(s, p, r, o) re.sub(s, p, function(m) return m[0] end, o)\n"
    "for k = 0, 6 do re.match(s, p .. string.rep('(?:)', k), o .. 'o') re.gsub(s, p, r, o .. 'o') end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* mg_lua_new: the embedded modules (mg_re_open requires moongate.re). This program does not
   * export the FFI's functions, so mg.re runs its classic C functions here. */
  lua_State *L = mg_lua_new("/nonexistent");
  if (!L) abort();
  {
    /* the setting the cache reads: package.loaded.moongate._state.settings */
    luaL_dostring(L, "package.loaded.moongate = { _state = { settings = { regex_cache_max_entries = 4 } } }");
    lua_newtable(L);
    mg_re_open(L);
    lua_getfield(L, -1, "re");
    lua_setglobal(L, "RE");
    lua_pop(L, 1);
  }
  const char *part[4] = {"", "", "", ""};
  size_t len[4] = {0};
  int n = 0;
  size_t start = 0;
  for (size_t i = 0; i <= size && n < 4; i++)
    if (i == size || data[i] == 0) {
      part[n] = (const char *)data + start, len[n] = i - start, n++;
      start = i + 1;
    }
  char opts[64];
  size_t ol = 0;
  for (size_t i = 0; i < len[0] && ol < sizeof opts; i++)
    if (part[0][i] != 'U') opts[ol++] = part[0][i];
  uint32_t popts;
  unsigned flags;
  int bad = mg_re_parse_opts(opts, ol, &popts, &flags);
  if (bad >= (int)ol || bad < -1) abort();
  if (bad >= 0 && strchr("imsxujodDJa", opts[bad]) && opts[bad]) abort();
  int top = lua_gettop(L);
  if (luaL_loadbuffer(L, script, sizeof script - 1, "=fuzz_re") != 0) abort();
  lua_getglobal(L, "RE");
  lua_pushlstring(L, opts, ol);
  for (int i = 1; i < 4; i++) lua_pushlstring(L, part[i], len[i]);
  lua_pcall(L, 5, 0, 0); /* a Lua error (bad flag, bad template) is a result */
  lua_settop(L, top);
  lua_close(L);
  return 0;
}
