/* lua_re: see lua_re.h. The results follow lua-resty-core's resty/core/regex.lua over
 * lua-nginx-module's ngx_http_lua_ffi_exec_regex, measured on Debian's build:
 *
 * - The subject (and a replacement that is not a function) goes through tostring, so nil is
 *   "nil"; the pattern must be a string and the options a string or nil.
 * - match gives a table: [0] the whole match, [1].. the groups, a group that did not take part
 *   false, each named group also by its name (with "D", a list of the values that matched);
 *   no match is a single nil, a failure nil, err. find gives from, to (of the nth group when
 *   nth is given), nil, nil, err on failure. ctx.pos (1-based, default 1) is where the search
 *   starts, and the end of the match + 1 afterwards.
 * - gmatch's iterator, sub and gsub step over an empty match by one byte.
 * - With "d" (DFA) only [0] is filled, with the longest match.
 * - A failed match reports PCRE 8's error numbers ("pcre_exec() failed: -8" for the match
 *   limit), which is what OpenResty's users see and test for; PCRE2's own numbers are mapped.
 *
 * The cache holds compiled patterns keyed by the pattern string's address (LuaJIT interns every
 * string, and the cache keeps its patterns alive in an anchor table, so an address names one
 * text) and the options. Each entry owns its match data, reused by every call: a cached match
 * allocates nothing in C. A pattern compiled for one call lives in a userdata whose __gc frees
 * it, so an error raised half-way (a memory error, a failing replacement function) leaks
 * nothing. */
#include "lua_re.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <lauxlib.h>
#include <limits.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RE_MT "moongate.re"
#define RE_STATE_MT "moongate.re.state"
#define RE_BUCKETS 1024
#define RE_ERR_MAX 128 /* OpenResty's MAX_ERR_MSG_LEN: compile errors are cut to 127 bytes */
#define RE_DFA_WORKSPACE 100
#define RE_DEFAULT_CACHE 1024

typedef struct re_s {
  pcre2_code *code;
  pcre2_match_data *md;
  int ncap;                /* groups reported: 0 with "d", as OpenResty */
  uint32_t name_count, name_size;
  PCRE2_SPTR names;
  unsigned flags;
  int fast; /* JIT-compiled and no UTF-8 check owed: pcre2_jit_match, PCRE2's fast path */
  int cached;
  /* cache entries only */
  struct re_s *next;
  const char *pat;
  uint64_t key;
} re_t;

typedef struct {
  re_t *buckets[RE_BUCKETS];
  size_t n;
  int anchor_ref; /* registry: a table whose keys are the cached pattern strings */
  int warned;
} re_state_t;

int mg_re_parse_opts(const char *opts, size_t len, uint32_t *pcre_opts, unsigned *flags) {
  uint32_t p = 0;
  unsigned f = 0;
  for (size_t i = 0; i < len; i++) {
    switch (opts[i]) {
      case 'o': f |= MG_RE_ONCE; break;
      case 'j': f |= MG_RE_JIT; break;
      case 'i': p |= PCRE2_CASELESS; break;
      case 's': p |= PCRE2_DOTALL; break;
      case 'm': p |= PCRE2_MULTILINE; break;
      case 'u': p |= PCRE2_UTF; break;
      case 'U': p |= PCRE2_UTF, f |= MG_RE_NO_UTF_CHECK; break;
      case 'x': p |= PCRE2_EXTENDED; break;
      case 'd': f |= MG_RE_DFA; break;
      case 'a': p |= PCRE2_ANCHORED; break;
      case 'D': p |= PCRE2_DUPNAMES, f |= MG_RE_DUPNAMES; break;
      /* PCRE 8's JAVASCRIPT_COMPAT is these three in PCRE2 */
      case 'J': p |= PCRE2_ALT_BSUX | PCRE2_MATCH_UNSET_BACKREF | PCRE2_ALLOW_EMPTY_CLASS; break;
      default: *pcre_opts = p, *flags = f; return (int)i;
    }
  }
  *pcre_opts = p, *flags = f;
  return -1;
}

static void re_free(re_t *re) {
  if (re->md) pcre2_match_data_free(re->md);
  if (re->code) pcre2_code_free(re->code);
  re->md = NULL, re->code = NULL;
}

static int re_gc(lua_State *L) {
  re_free(luaL_checkudata(L, 1, RE_MT));
  return 0;
}

static int state_gc(lua_State *L) {
  re_state_t *st = luaL_checkudata(L, 1, RE_STATE_MT);
  for (int i = 0; i < RE_BUCKETS; i++) {
    for (re_t *re = st->buckets[i], *next; re; re = next) {
      next = re->next;
      re_free(re);
      free(re);
    }
    st->buckets[i] = NULL;
  }
  st->n = 0;
  return 0;
}

/* OpenResty writes compile errors into a 128-byte buffer: a long pattern's message is cut,
 * on purpose here too. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

/* Compiles into re. Returns 0, or -1 with OpenResty's message in err. */
static int re_compile(re_t *re, const char *pat, size_t len, uint32_t popts, unsigned flags, char *err) {
  int code;
  PCRE2_SIZE off;
  memset(re, 0, sizeof *re);
  re->code = pcre2_compile((PCRE2_SPTR)pat, len, popts, &code, &off, NULL);
  if (!re->code) {
    char msg[256];
    pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
    /* nginx's format: the rest of the pattern from the error's offset, unless at its end */
    if (off >= len)
      snprintf(err, RE_ERR_MAX, "pcre2_compile() failed: %s in \"%.*s\"", msg, (int)len, pat);
    else
      snprintf(err, RE_ERR_MAX, "pcre2_compile() failed: %s in \"%.*s\" at \"%.*s\"", msg, (int)len, pat,
               (int)(len - off), pat + off);
    return -1;
  }
  /* A pattern JIT cannot compile (rare: very large ones) runs in the interpreter, as in
   * OpenResty, which logs it at debug level only. */
  int jit = (flags & MG_RE_JIT) && pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  re->flags = flags;
  /* pcre2_jit_match skips the checks of pcre2_match: the UTF-8 check ("u" owes it) and the
   * offset's (done in re_exec). */
  re->fast = jit && !(flags & MG_RE_DFA) && (!(popts & PCRE2_UTF) || (flags & MG_RE_NO_UTF_CHECK));
  uint32_t n = 0;
  pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &n);
  re->ncap = (flags & MG_RE_DFA) ? 0 : (int)n;
  re->md = (flags & MG_RE_DFA) ? pcre2_match_data_create(1, NULL) : pcre2_match_data_create_from_pattern(re->code, NULL);
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &re->name_count);
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &re->name_size);
  pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &re->names);
  if (!re->md) {
    re_free(re);
    snprintf(err, RE_ERR_MAX, "no memory");
    return -1;
  }
  return 0;
}

/* The cache's size limit: regex_cache_max_entries of mg.set, read from the configuration's
 * recorded settings each time an entry is added (rare), so init.lua may set it after a first
 * use. */
static lua_Integer cache_max(lua_State *L) {
  lua_Integer max = RE_DEFAULT_CACHE;
  /* stack: loaded moongate _state settings value */
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  const char *path[] = {"moongate", "_state", "settings", "regex_cache_max_entries"};
  int depth = 1;
  for (int i = 0; i < 4 && lua_istable(L, -1); i++, depth++) lua_getfield(L, -1, path[i]);
  if (depth == 5 && lua_isnumber(L, -1)) max = lua_tointeger(L, -1);
  lua_pop(L, depth);
  return max;
}

static uint32_t cache_hash(const char *pat, uint64_t key) {
  uintptr_t p = (uintptr_t)pat;
  return (uint32_t)((p >> 4) ^ (p >> 14) ^ (key ^ key >> 32) * 2654435761u) & (RE_BUCKETS - 1);
}

static void opt_error(lua_State *L, const char *opts, size_t len, int bad) {
  lua_pushfstring(L, "unknown flag \"%c\" (flags \"", opts[bad]);
  lua_pushlstring(L, opts, len);
  lua_pushliteral(L, "\")");
  lua_concat(L, 3);
  lua_error(L);
}

/* Raised without a file:line, as every error of mg.re: the same whether the caller reached
 * this function directly or through re.lua, and a missing argument is "nil" as re.lua sees it. */
static void type_error(lua_State *L, int idx, const char *fn, const char *want) {
  lua_pushfstring(L, "bad argument #%d to '%s' (%s expected, got %s)", idx, fn, want,
                  lua_isnone(L, idx) ? "nil" : luaL_typename(L, idx));
  lua_error(L);
}

/* The cache: cache_find gives the entry for (pat, popts, flags) or NULL; cache_add compiles and
 * adds one when the cache has room and returns it with *added set, or NULL: *err_set when it
 * failed to compile (err holds the message), else the cache is full (warned about once) and the
 * caller compiles for the call. The caller keeps a new entry's pattern string alive. */
static re_t *cache_find(const re_state_t *st, const char *pat, uint32_t popts, unsigned flags) {
  uint64_t key = (uint64_t)popts | (uint64_t)flags << 32;
  for (re_t *re = st->buckets[cache_hash(pat, key)]; re; re = re->next)
    if (re->pat == pat && re->key == key) return re;
  return NULL;
}

/* After a cache_find that missed: the pattern compiled and added when the cache has room. */
static re_t *cache_add(re_state_t *st, const char *pat, size_t len, uint32_t popts, unsigned flags, lua_Integer max,
                       char *err, int *added, int *err_set) {
  uint64_t key = (uint64_t)popts | (uint64_t)flags << 32;
  uint32_t h = cache_hash(pat, key);
  *added = 0, *err_set = 0;
  if ((lua_Integer)st->n < max) {
    re_t tmp;
    if (re_compile(&tmp, pat, len, popts, flags, err) < 0) return *err_set = 1, NULL;
    re_t *re = malloc(sizeof *re);
    if (!re) {
      re_free(&tmp);
      snprintf(err, RE_ERR_MAX, "no memory for the regex cache");
      return *err_set = 1, NULL;
    }
    *re = tmp;
    re->pat = pat, re->key = key, re->cached = 1;
    re->next = st->buckets[h], st->buckets[h] = re;
    st->n++;
    *added = 1;
    return re;
  }
  if (max > 0 && !st->warned) {
    st->warned = 1;
    mg_log_error(MG_LOG_WARN, NULL,
                 "lua exceeding regex cache max entries (%lld): regex_cache_max_entries reached, further "
                 "\"o\" patterns are compiled at each call",
                 (long long)max);
  }
  return NULL;
}

/* The compiled pattern for the pattern at pat_idx under the options at opt_idx. Pushes one
 * value: the userdata owning a pattern compiled for this call, nil for a cached one, or the
 * error message (and returns NULL). Raises for an unknown option letter or wrong types. */
static re_t *re_get(lua_State *L, int pat_idx, int opt_idx, const char *fn) {
  re_state_t *st = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_type(L, pat_idx) != LUA_TSTRING) type_error(L, pat_idx, fn, "string");
  size_t len, olen = 0;
  const char *pat = lua_tolstring(L, pat_idx, &len), *opts = "";
  if (!lua_isnoneornil(L, opt_idx)) {
    if (lua_type(L, opt_idx) != LUA_TSTRING) type_error(L, opt_idx, fn, "string");
    opts = lua_tolstring(L, opt_idx, &olen);
  }
  uint32_t popts;
  unsigned flags;
  int bad = mg_re_parse_opts(opts, olen, &popts, &flags);
  if (bad >= 0) opt_error(L, opts, olen, bad);
  char err[RE_ERR_MAX];
  if (flags & MG_RE_ONCE) {
    re_t *re = cache_find(st, pat, popts, flags);
    if (re) return lua_pushnil(L), re;
    int added, failed;
    re = cache_add(st, pat, len, popts, flags, cache_max(L), err, &added, &failed);
    if (failed) return lua_pushstring(L, err), NULL;
    if (added) { /* stack: anchors */
      lua_rawgeti(L, LUA_REGISTRYINDEX, st->anchor_ref);
      lua_pushvalue(L, pat_idx);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
    if (re) return lua_pushnil(L), re;
  }
  re_t *re = lua_newuserdata(L, sizeof *re);
  memset(re, 0, sizeof *re);
  luaL_getmetatable(L, RE_MT);
  lua_setmetatable(L, -2);
  if (re_compile(re, pat, len, popts, flags, err) < 0) {
    lua_pop(L, 1);
    return lua_pushstring(L, err), NULL;
  }
  return re;
}

/* PCRE2's error numbers as PCRE 8 gave them (OpenResty on Debian reports those). */
static int pcre1_code(int rc) {
  if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) return -10; /* BADUTF8 */
  switch (rc) {
    case PCRE2_ERROR_NOMATCH: return -1;
    case PCRE2_ERROR_PARTIAL: return -12;
    case PCRE2_ERROR_BADUTFOFFSET: return -11;
    case PCRE2_ERROR_BADOFFSET: return -24;
    case PCRE2_ERROR_MATCHLIMIT: return -8;
    case PCRE2_ERROR_DEPTHLIMIT: return -21;
    case PCRE2_ERROR_HEAPLIMIT: return -6; /* NOMEMORY */
    case PCRE2_ERROR_NOMEMORY: return -6;
    case PCRE2_ERROR_JIT_STACKLIMIT: return -27;
    case PCRE2_ERROR_DFA_UITEM: return -16;
    case PCRE2_ERROR_DFA_UCOND: return -17;
    case PCRE2_ERROR_DFA_WSSIZE: return -19;
    case PCRE2_ERROR_DFA_RECURSE: return -20;
    case PCRE2_ERROR_BADOPTION: return -3;
    default: return rc;
  }
}

/* Runs re over s from byte pos. Returns PCRE2's result: pairs set, 0, or a negative code. */
static int re_exec(re_t *re, const char *s, size_t len, size_t pos) {
  uint32_t mopts = (re->flags & MG_RE_NO_UTF_CHECK) ? PCRE2_NO_UTF_CHECK : 0;
  if (re->flags & MG_RE_DFA) {
    int ws[RE_DFA_WORKSPACE];
    return pcre2_dfa_match(re->code, (PCRE2_SPTR)s, len, pos, mopts, re->md, NULL, ws, RE_DFA_WORKSPACE);
  }
  if (re->fast) {
    if (pos > len) return PCRE2_ERROR_BADOFFSET;
    return pcre2_jit_match(re->code, (PCRE2_SPTR)s, len, pos, mopts, re->md, NULL);
  }
  return pcre2_match(re->code, (PCRE2_SPTR)s, len, pos, mopts, re->md, NULL);
}

/* The subject as lua-resty-core reads it: tostring(v), which replaces the argument. */
static const char *subject_arg(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
  if (lua_isnone(L, idx)) lua_settop(L, idx);
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  if (!lua_isstring(L, -1)) lua_pushliteral(L, "'tostring' must return a string"), lua_error(L);
  lua_replace(L, idx);
  return lua_tolstring(L, idx, len);
}

/* ctx.pos as the offset to start at (0-based); ctx_idx 0 for none. */
static size_t ctx_pos(lua_State *L, int ctx_idx) {
  if (!ctx_idx) return 0;
  lua_getfield(L, ctx_idx, "pos");
  size_t pos = 0;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, -1);
    if (n > (lua_Number)INT_MAX) pos = (size_t)INT_MAX;
    else if (n > 0) pos = (size_t)(int)(n - 1);
  } else if (lua_toboolean(L, -1)) { /* lua-resty-core's `pos <= 0`, raised as it raises */
    lua_pushfstring(L, "attempt to compare %s with number", luaL_typename(L, -1));
    lua_error(L);
  }
  lua_pop(L, 1);
  return pos;
}

static int ctx_arg(lua_State *L, int idx, const char *fn) {
  if (!lua_toboolean(L, idx)) return 0;
  if (!lua_istable(L, idx)) type_error(L, idx, fn, "table");
  return idx;
}

/* Pushes the captures table (res_idx: the caller's table to fill, or 0 for a new one). */
static void push_captures(lua_State *L, const re_t *re, int rc, const char *s, int res_idx) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
  if (res_idx) lua_pushvalue(L, res_idx);
  else lua_createtable(L, re->ncap, (int)re->name_count);
  /* stack: res */
  for (int i = 0; i <= re->ncap; i++) {
    if (i < rc && ov[2 * i] != PCRE2_UNSET) lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
    else lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i);
  }
  PCRE2_SPTR e = re->names;
  for (uint32_t k = 0; k < re->name_count; k++, e += re->name_size) {
    int n = (e[0] << 8) | e[1];
    const char *name = (const char *)e + 2;
    /* stack: res cap */
    lua_rawgeti(L, -1, n);
    if (re->flags & MG_RE_DUPNAMES) {
      if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        continue;
      }
      lua_getfield(L, -2, name); /* res cap old */
      if (lua_istable(L, -1)) {
        lua_insert(L, -2); /* res old cap */
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 1);
        continue;
      }
      lua_pop(L, 1);
      lua_createtable(L, 1, 0); /* res cap list */
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
    }
    lua_setfield(L, -2, name);
  }
}

static int exec_error(lua_State *L, int rc, int nils) {
  for (int i = 0; i < nils; i++) lua_pushnil(L);
  if (rc == 0) lua_pushliteral(L, "capture size too small");
  else lua_pushfstring(L, "pcre_exec() failed: %d", pcre1_code(rc));
  return nils + 1;
}

/* match(subj, regex, opts?, ctx?, res?) and find(subj, regex, opts?, ctx?, nth?). */
static int re_match_helper(lua_State *L, int want_caps) {
  size_t len;
  const char *s = subject_arg(L, 1, &len);
  const char *fn = want_caps ? "match" : "find";
  int ctx = ctx_arg(L, 4, fn);
  int res = want_caps && lua_toboolean(L, 5) ? 5 : 0;
  if (res && !lua_istable(L, 5)) type_error(L, 5, fn, "table");
  lua_Number nth = 0; /* lua-resty-core indexes its ovector with nth * 2, a fraction included */
  if (!want_caps && lua_toboolean(L, 5)) {
    if (lua_type(L, 5) != LUA_TNUMBER) {
      lua_pushfstring(L, "attempt to compare %s with number", luaL_typename(L, 5));
      lua_error(L);
    }
    nth = lua_tonumber(L, 5);
  }
  lua_settop(L, 5);
  re_t *re = re_get(L, 2, 3, fn);
  if (!re) { /* stack: ... err */
    int err = lua_gettop(L);
    lua_pushnil(L);
    if (!want_caps) lua_pushnil(L);
    lua_pushvalue(L, err);
    return want_caps ? 2 : 3;
  }
  int rc = re_exec(re, s, len, ctx_pos(L, ctx));
  if (rc == PCRE2_ERROR_NOMATCH) return lua_pushnil(L), 1;
  if (rc < 0 || (rc == 0 && !(re->flags & MG_RE_DFA))) return exec_error(L, rc, want_caps ? 1 : 2);
  if (rc == 0) rc = 1;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
  if (ctx) {
    lua_pushnumber(L, (lua_Number)ov[1] + 1);
    lua_setfield(L, ctx, "pos");
  }
  if (want_caps) return push_captures(L, re, rc, s, res), 1;
  if (!(nth >= 0)) nth = 0; /* NaN too */
  if (nth > re->ncap) return lua_pushnil(L), lua_pushnil(L), lua_pushliteral(L, "nth out of bound"), 3;
  if (nth >= rc) return lua_pushnil(L), lua_pushnil(L), 2;
  int from = (int)(nth * 2), to = (int)(nth * 2 + 1);
  if (to >= 2 * rc || ov[from] == PCRE2_UNSET || ov[to] == PCRE2_UNSET) return lua_pushnil(L), lua_pushnil(L), 2;
  lua_pushnumber(L, (lua_Number)ov[from] + 1);
  lua_pushnumber(L, (lua_Number)ov[to]);
  return 2;
}

static int l_match(lua_State *L) { return re_match_helper(L, 1); }
static int l_find(lua_State *L) { return re_match_helper(L, 0); }

/* The gmatch iterator's state; upvalues: this, the subject, the pattern's owner (or nil). */
typedef struct {
  re_t *re;
  size_t pos;
  int done;
} gmatch_t;

static int gmatch_iter(lua_State *L) {
  gmatch_t *g = lua_touserdata(L, lua_upvalueindex(1));
  if (g->done) return lua_pushnil(L), 1;
  size_t len;
  const char *s = lua_tolstring(L, lua_upvalueindex(2), &len);
  re_t *re = g->re;
  int rc = re_exec(re, s, len, g->pos);
  if (rc == PCRE2_ERROR_NOMATCH) return g->done = 1, lua_pushnil(L), 1;
  if (rc < 0 || (rc == 0 && !(re->flags & MG_RE_DFA))) return g->done = 1, exec_error(L, rc, 1);
  if (rc == 0) rc = 1;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
  size_t next = ov[1];
  if (next == ov[0]) {
    next++;
    if (next > len) g->done = 1;
  }
  g->pos = next;
  push_captures(L, re, rc, s, 0);
  return 1;
}

static int l_gmatch(lua_State *L) {
  size_t len;
  subject_arg(L, 1, &len);
  lua_settop(L, 3);
  re_t *re = re_get(L, 2, 3, "gmatch"); /* stack: subj regex opts owner|nil|err */
  if (!re) return lua_pushnil(L), lua_insert(L, -2), 2;
  gmatch_t *g = lua_newuserdata(L, sizeof *g);
  g->re = re, g->pos = 0, g->done = 0;
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, gmatch_iter, 3);
  return 1;
}

/* The replacement template ($0..$N, ${N}, $$; names are refused as OpenResty does). Returns 0,
 * or -1 after logging OpenResty's message. */
static int template_check(const char *t, size_t n) {
  for (size_t i = 0; i < n;) {
    if (t[i] != '$') {
      i++;
      continue;
    }
    if (++i == n) goto invalid;
    if (t[i] == '$') {
      i++;
      continue;
    }
    int bracket = t[i] == '{';
    if (bracket && ++i == n) goto invalid;
    size_t start = i;
    if (t[i] >= '0' && t[i] <= '9') {
      while (i < n && t[i] >= '0' && t[i] <= '9') i++;
    } else {
      while (i < n && (t[i] == '_' || (t[i] >= '0' && t[i] <= '9') || ((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z'))) i++;
    }
    size_t nl = i - start;
    if (bracket) {
      if (i < n && t[i] == '}') i++;
      else {
        mg_log_error(MG_LOG_ERROR, NULL, "the closing bracket in \"%.*s\" variable is missing", (int)nl, t + start);
        return -1;
      }
    }
    if (nl == 0) goto invalid;
    if (!(t[start] >= '0' && t[start] <= '9')) {
      mg_log_error(MG_LOG_ERROR, NULL, "attempt to use named capturing variable \"%.*s\" (named captures not supported yet)",
                   (int)nl, t + start);
      return -1;
    }
  }
  return 0;
invalid:
  mg_log_error(MG_LOG_ERROR, NULL, "lua script: invalid capturing variable name found in \"%.*s\"", (int)n, t);
  return -1;
}

/* Appends the template, checked by template_check, for a match with rc pairs. */
static void template_expand(luaL_Buffer *b, const char *t, size_t n, const char *s, const PCRE2_SIZE *ov, int rc) {
  for (size_t i = 0; i < n;) {
    if (t[i] != '$') {
      size_t j = i;
      while (j < n && t[j] != '$') j++;
      luaL_addlstring(b, t + i, j - i);
      i = j;
      continue;
    }
    i++;
    if (t[i] == '$') {
      luaL_addchar(b, '$');
      i++;
      continue;
    }
    int bracket = t[i] == '{';
    if (bracket) i++;
    unsigned long g = 0;
    while (i < n && t[i] >= '0' && t[i] <= '9') {
      if (g < 100000) g = g * 10 + (unsigned long)(t[i] - '0');
      i++;
    }
    if (bracket) i++;
    if (g < (unsigned long)rc && ov[2 * g] != PCRE2_UNSET) luaL_addlstring(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
  }
}

/* sub/gsub(subj, regex, replace, opts?) → new string, count; nil, nil, err on failure. */
static int re_sub_helper(lua_State *L, int global) {
  size_t len, tl = 0;
  const char *s = subject_arg(L, 1, &len);
  lua_settop(L, 4);
  int func = lua_type(L, 3) == LUA_TFUNCTION;
  const char *t = NULL;
  if (!func) t = subject_arg(L, 3, &tl);
  re_t *re = re_get(L, 2, 4, global ? "gsub" : "sub"); /* stack: subj regex replace opts owner|nil|err */
  if (!re) return lua_pushnil(L), lua_pushnil(L), lua_pushvalue(L, -3), 3;
  if (!func && template_check(t, tl) < 0)
    return lua_pushnil(L), lua_pushnil(L), lua_pushliteral(L, "failed to compile the replacement template"), 3;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t pos = 0, cp = 0;
  int count = 0;
  for (;;) {
    int rc = re_exec(re, s, len, pos);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0 || (rc == 0 && !(re->flags & MG_RE_DFA))) return exec_error(L, rc, 2);
    if (rc == 0) rc = 1;
    count++;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
    size_t m0 = ov[0], m1 = ov[1];
    luaL_addlstring(&b, s + cp, m0 - cp);
    if (func) {
      /* The function may use this pattern again, which reuses its match data: the offsets
       * needed afterwards are copied above. */
      lua_pushvalue(L, 3);
      push_captures(L, re, rc, s, 0);
      lua_call(L, 1, 1);
      lua_getglobal(L, "tostring");
      lua_insert(L, -2);
      lua_call(L, 1, 1);
      luaL_addvalue(&b);
    } else {
      template_expand(&b, t, tl, s, ov, rc);
    }
    cp = pos = m1;
    if (pos == m0 && ++pos > len) break;
    if (!global) break;
  }
  if (count == 0) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 2;
  }
  luaL_addlstring(&b, s + cp, len - cp);
  luaL_pushresult(&b);
  lua_pushinteger(L, count);
  return 2;
}

static int l_sub(lua_State *L) { return re_sub_helper(L, 0); }
static int l_gsub(lua_State *L) { return re_sub_helper(L, 1); }

/* ---- the FFI's functions (lua/moongate/re.lua) ------------------------------------------------ */

#define MG_EXPORT __attribute__((used, visibility("default")))

MG_EXPORT int mg_re_ffi_get(void *state, const char *pat, size_t len, const char *opts, size_t olen, long long max,
                            re_t **out, char *err) {
  re_state_t *st = state;
  uint32_t popts;
  unsigned flags;
  int bad = mg_re_parse_opts(opts, olen, &popts, &flags);
  if (bad >= 0) return -2 - bad;
  *out = NULL;
  if (flags & MG_RE_ONCE) {
    int added, failed;
    re_t *re = cache_find(st, pat, popts, flags);
    if (!re) re = cache_add(st, pat, len, popts, flags, (lua_Integer)max, err, &added, &failed);
    else failed = 0;
    if (failed) return -1;
    if (re) return *out = re, 1;
  }
  re_t *re = calloc(1, sizeof *re);
  if (!re) return snprintf(err, RE_ERR_MAX, "no memory"), -1;
  if (re_compile(re, pat, len, popts, flags, err) < 0) return free(re), -1;
  return *out = re, 0;
}

MG_EXPORT void mg_re_ffi_free(re_t *re) {
  if (!re || re->cached) return; /* the cache's entries live as long as the state */
  re_free(re);
  free(re);
}

MG_EXPORT int mg_re_ffi_exec(re_t *re, const char *s, size_t len, int pos) {
  int rc = re_exec(re, s, len, pos < 0 ? 0 : (size_t)pos);
  if (rc < 0) return pcre1_code(rc);
  return rc == 0 && (re->flags & MG_RE_DFA) ? 1 : rc;
}

MG_EXPORT int mg_re_ffi_errcode(int rc) { return pcre1_code(rc); }

MG_EXPORT void *mg_re_ffi_ovector(re_t *re) { return pcre2_get_ovector_pointer(re->md); }

MG_EXPORT int mg_re_ffi_direct(re_t *re, void **code, void **md, uint32_t *mopts) {
  *code = re->code, *md = re->md;
  *mopts = (re->flags & MG_RE_NO_UTF_CHECK) ? PCRE2_NO_UTF_CHECK : 0;
  return re->fast;
}

MG_EXPORT int mg_re_ffi_ncap(const re_t *re) { return re->ncap; }
MG_EXPORT unsigned mg_re_ffi_flags(const re_t *re) { return re->flags; }
MG_EXPORT int mg_re_ffi_name_count(const re_t *re) { return (int)re->name_count; }

MG_EXPORT const char *mg_re_ffi_name(const re_t *re, int i, int *group) {
  PCRE2_SPTR e = re->names + (size_t)i * re->name_size;
  *group = (e[0] << 8) | e[1];
  return (const char *)e + 2;
}

MG_EXPORT int mg_re_ffi_template_check(const char *t, size_t n) { return template_check(t, n); }

/* The state's choice of implementation (re.lua's choose), kept in the registry. */
static char choose_key;

void mg_re_choose(lua_State *L) {
  lua_pushlightuserdata(L, &choose_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isfunction(L, -1)) lua_call(L, 0, 0);
  else lua_pop(L, 1);
}

void mg_re_open(lua_State *L) {
  /* stack: mg */
  if (luaL_newmetatable(L, RE_MT)) {
    lua_pushcfunction(L, re_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L); /* mg re */
  re_state_t *st = lua_newuserdata(L, sizeof *st); /* mg re st */
  memset(st, 0, sizeof *st);
  if (luaL_newmetatable(L, RE_STATE_MT)) {
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);
  st->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  static const luaL_Reg fns[] = {
      {"match", l_match}, {"find", l_find}, {"gmatch", l_gmatch}, {"sub", l_sub}, {"gsub", l_gsub}, {NULL, NULL}};
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -3, f->name);
  }
  /* stack: mg classic st; re.lua's builder(classic, state) gives mg.re and choose */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moongate.re");
  lua_call(L, 1, 1);
  lua_insert(L, -3);
  lua_pushlightuserdata(L, st);
  lua_replace(L, -2); /* the userdata stays alive as the classic closures' upvalue */
  lua_call(L, 2, 2); /* mg re choose */
  lua_pushlightuserdata(L, &choose_key);
  lua_insert(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_setfield(L, -2, "re");
}
