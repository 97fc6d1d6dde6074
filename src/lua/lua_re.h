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

/* Sets field "re" of the table at the top of the stack: the five functions of
 * lua/moongate/re.lua (require "moongate.re" must find it), sharing one cache that is freed
 * with the Lua state. Each runs either through LuaJIT's FFI (the mg_re_ffi_* functions below,
 * which compiled traces call directly) or as the classic C functions of this unit (cheaper in
 * the interpreter); both give the same results. The choice is made when the state is opened. */
void mg_re_open(lua_State *L);

/* Makes the choice again from the state's JIT mode (jit.status()): the FFI when the compiler is
 * on, the classic functions when it is off. A worker calls it once lua_max_run_time has set the
 * mode, before serving. */
void mg_re_choose(lua_State *L);

/* The FFI's functions, exported by the binary (ENABLE_EXPORTS) for lua/moongate/re.lua; a
 * handle is an opaque struct re_s. Not for C callers. */
struct re_s;
/* The compiled pattern for pat under opts: 1 and the cache's entry (never freed), 0 and a
 * pattern compiled for the call (mg_re_ffi_free), -1 with the error in err (128 bytes), or
 * -2 - i for an unknown option letter at opts[i]. max: regex_cache_max_entries. */
int mg_re_ffi_get(void *state, const char *pat, size_t len, const char *opts, size_t olen, long long max,
                  struct re_s **out, char *err);
void mg_re_ffi_free(struct re_s *re);
/* Runs from byte pos: the pairs set (1 for "d"), 0 when they do not fit, -1 for no match or
 * PCRE 8's error number (mg_re_ffi_errcode maps PCRE2's). The offsets are in the match data's
 * ovector (mg_re_ffi_ovector, PCRE2_SIZE[2 * (ncap + 1)], read as intptr_t: -1 when unset),
 * the first 2 * rc of them valid. mg_re_ffi_direct gives what pcre2_jit_match needs and
 * returns 1 when it may be called directly instead (JIT-compiled, no "d", no UTF-8 check owed;
 * the caller checks pos <= len). */
int mg_re_ffi_exec(struct re_s *re, const char *s, size_t len, int pos);
int mg_re_ffi_errcode(int rc);
void *mg_re_ffi_ovector(struct re_s *re);
int mg_re_ffi_direct(struct re_s *re, void **code, void **md, uint32_t *mopts);
int mg_re_ffi_ncap(const struct re_s *re);
unsigned mg_re_ffi_flags(const struct re_s *re);
int mg_re_ffi_name_count(const struct re_s *re);
const char *mg_re_ffi_name(const struct re_s *re, int i, int *group);
/* 0, or -1 after logging why the replacement template is refused. */
int mg_re_ffi_template_check(const char *t, size_t n);

#endif
