/* lua_re: regular expressions for Lua, mg.re (also ngx.re): match, find, gmatch, sub, gsub on
 * PCRE2, with OpenResty's interface and results (docs/lua-api.md, "Regular expressions").
 *
 * What each function returns, accepts and raises is what Debian's lua-nginx-module 0.10.23 with
 * lua-resty-core gives for ngx.re.NAME, as tests/e2e/test_regex.py measures; the differences
 * (PCRE2's compile messages instead of PCRE 8's, one bounded cache instead of an LRU) are in the
 * docs. Options are OpenResty's letters; "j" compiles with PCRE2's JIT, "d" matches with
 * pcre2_dfa_match, "o" keeps the compiled pattern in a per-VM cache of at most
 * regex_cache_max_entries patterns (mg.set), after which patterns are compiled at each call and
 * the error log says so once. */
#ifndef MG_LUA_RE_H
#define MG_LUA_RE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* Option flags beyond PCRE2's compile options. */
enum { MG_RE_ONCE = 1, MG_RE_DFA = 2, MG_RE_JIT = 4, MG_RE_DUPNAMES = 8, MG_RE_NO_UTF_CHECK = 16 };

/* Parses OpenResty's option letters (i m s x u U j o d D J a) into PCRE2 compile options and
 * MG_RE_* flags. Returns -1 when all are known, or the index of the first unknown letter. */
int mg_re_parse_opts(const char *opts, size_t len, uint32_t *pcre_opts, unsigned *flags);

/* Sets field "re" of the table at the top of the stack: a new table of the five functions,
 * sharing one cache that is freed with the Lua state. */
void mg_re_open(lua_State *L);

#endif
