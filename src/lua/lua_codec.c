/* lua_codec: see lua_codec.h. The results follow what Debian's nginx with lua-nginx-module
 * 0.10.23 and lua-resty-core returns, measured rather than taken from its documentation:
 *
 * - escape_uri(s[, type]) escapes with nginx's ngx_escape_uri tables; the default type 2 (a URI
 *   component) keeps A-Z a-z 0-9 and - . _ ~ ! * ' ( ), and escapes every other byte as %XX
 *   (upper-case hex). A string with nothing to escape comes back as the same string.
 * - unescape_uri(s) decodes %XX (either case) and turns '+' into a space; a '%' not followed by
 *   two hex digits stays as it is.
 * - decode_args(s[, max]) is nginx's ngx_http_lua_parse_args: a pair with an empty key is
 *   dropped, a bare key is true, a repeated key gives a list, at most max pairs (default 100,
 *   0 or less for all) after which a second result "truncated" says some were left.
 * - encode_args(t) is ngx_http_lua_process_args_option, keys sorted (OpenResty's order is the
 *   table's, which LuaJIT's seeded string hash makes differ between processes).
 * - decode_base64(s) is nginx's ngx_decode_base64: it reads up to the first '=' (what follows
 *   is ignored), any byte outside the alphabet before it gives nil, so does a length of 4n+1;
 *   missing padding is fine. encode_base64(s[, no_padding]) pads unless no_padding is true.
 * - decode_base64mime(s) (lua-resty-core 0.1.31 with lua-nginx-module 0.10.28, later than
 *   Debian's) is decode_base64 with every byte outside the alphabet before the first '='
 *   skipped rather than refused.
 *
 * Bytes are encoded and decoded by OpenSSL's base64 (EVP_EncodeBlock, EVP_DecodeBlock); the
 * checks above, which are not OpenSSL's, are done here first. Outputs are measured first and
 * written once into a stack buffer, or a userdata when large (so a raise never leaks it). */
#include "lua_codec.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The registry key of the tostring that mg_codec_arg calls. */
static char tostring_key;

const char *mg_codec_arg(lua_State *L, int idx, size_t *len) {
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING) return lua_tolstring(L, idx, len);
  if (t == LUA_TNONE || t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx))) {
    *len = 0;
    return "";
  }
  /* stack: ... tostring value */
  lua_pushlightuserdata(L, &tostring_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  lua_replace(L, idx);
  return lua_tolstring(L, idx, len);
}

/* Raises fmt with the position of the function `level` frames up (luaL_where's levels: 1 is
 * the caller of the running C function), as lua-resty-core's error(msg, level + 1) does. */
static int raise_at(lua_State *L, int level, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, level);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* size bytes: `small` when they fit, else a userdata left on the stack for the GC to free. */
static unsigned char *scratch(lua_State *L, size_t size, unsigned char *small, size_t small_size) {
  return size <= small_size ? small : lua_newuserdata(L, size);
}

/* ---- URI escaping --------------------------------------------------------------------------- */

/* nginx's ngx_escape_uri tables, one bit per byte (set: escape it), by type: 0 a URI, 1 query
 * arguments, 2 a URI component, 3 HTML, 4 a refresh header, 5 memcached, 6 mail auth. Checked
 * byte by byte against ngx.escape_uri over all 256 bytes by the differential test. */
static const uint32_t escape_maps[7][8] = {
    {0xffffffff, 0x80000029, 0x00000000, 0x80000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
    {0xffffffff, 0x80000829, 0x00000000, 0x80000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
    {0xffffffff, 0xfc00987d, 0x78000001, 0xb8000001, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
    {0xffffffff, 0x000000ad, 0x00000000, 0x80000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
    {0xffffffff, 0x00000085, 0x00000000, 0x80000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
    {0xffffffff, 0x00000021, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000},
    {0xffffffff, 0x00000021, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000},
};
#define ESCAPE_COMPONENT 2

static inline int escapes(const uint32_t *map, unsigned char c) { return (map[c >> 5] >> (c & 31)) & 1; }

/* How many bytes of s the map escapes: the output is n + 2 * that. */
static size_t escape_count(const uint32_t *map, const unsigned char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += (size_t)escapes(map, s[i]);
  return k;
}

static unsigned char *escape_write(const uint32_t *map, unsigned char *d, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    if (escapes(map, c)) {
      *d++ = '%';
      *d++ = (unsigned char)hex[c >> 4];
      *d++ = (unsigned char)hex[c & 15];
    } else {
      *d++ = c;
    }
  }
  return d;
}

/* escape_uri's type: a number from 0 to 6, truncated as lua-resty-core's FFI call truncates it.
 * Raises as lua-resty-core does, at the position of the escape_uri call's caller. */
static int escape_type(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER) return raise_at(L, 2, "\"type\" is not a number");
  lua_Number t = lua_tonumber(L, idx);
  /* Written so that NaN is out of range too (lua-resty-core would pass it on to C). */
  if (!(t >= 0 && t <= 6)) {
    lua_pushvalue(L, idx);
    return raise_at(L, 2, "\"type\" %s out of range", lua_tostring(L, -1));
  }
  return (int)t;
}

/* mg.escape_uri(s[, type]) */
static int l_escape_uri(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)mg_codec_arg(L, 1, &n);
  int type = lua_isnoneornil(L, 2) ? ESCAPE_COMPONENT : escape_type(L, 2);
  const uint32_t *map = escape_maps[type];
  size_t k = escape_count(map, s, n);
  if (k == 0) {
    if (lua_type(L, 1) == LUA_TSTRING) lua_pushvalue(L, 1);
    else lua_pushlstring(L, (const char *)s, n);
    return 1;
  }
  unsigned char small[1024];
  unsigned char *d = scratch(L, n + 2 * k, small, sizeof small);
  escape_write(map, d, s, n);
  lua_pushlstring(L, (const char *)d, n + 2 * k);
  return 1;
}

static inline int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* s decoded into d (which may be s: the output is never longer); returns the output length. */
static size_t unescape(unsigned char *d, const unsigned char *s, size_t n) {
  unsigned char *start = d;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    int hi, lo;
    if (c == '%' && n - i > 2 && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
      *d++ = (unsigned char)(hi << 4 | lo);
      i += 2;
    } else {
      *d++ = c == '+' ? ' ' : c;
    }
  }
  return (size_t)(d - start);
}

/* mg.unescape_uri(s) */
static int l_unescape_uri(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)mg_codec_arg(L, 1, &n);
  size_t i = 0;
  while (i < n && s[i] != '%' && s[i] != '+') i++;
  if (i == n) {
    if (lua_type(L, 1) == LUA_TSTRING) lua_pushvalue(L, 1);
    else lua_pushlstring(L, (const char *)s, n);
    return 1;
  }
  unsigned char small[1024];
  unsigned char *d = scratch(L, n, small, sizeof small);
  lua_pushlstring(L, (const char *)d, unescape(d, s, n));
  return 1;
}

/* ---- query arguments ------------------------------------------------------------------------ */

/* stack: t key value → t, the pair added as ngx_http_lua_set_multi_value_table adds it (a
 * second value makes a list), or dropped when the key is empty. */
static void args_add(lua_State *L, int t) {
  if (lua_objlen(L, -2) == 0) {
    lua_pop(L, 2);
    return;
  }
  lua_pushvalue(L, -2);
  lua_rawget(L, t); /* t key value old */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_rawset(L, t);
  } else if (lua_istable(L, -1)) {
    lua_insert(L, -2); /* t key old value */
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
  } else {
    lua_createtable(L, 4, 0); /* t key value old list */
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1); /* t key value list */
    lua_insert(L, -2);
    lua_rawseti(L, -2, 2); /* t key list */
    lua_rawset(L, t);
  }
}

/* mg.decode_args(s[, max]) → t[, "truncated"] */
static int l_decode_args(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs != 1 && nargs != 2) return luaL_error(L, "expecting 1 or 2 arguments but seen %d", nargs);
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  int max = nargs == 2 ? luaL_checkint(L, 2) : 100;
  unsigned char small[1024];
  unsigned char *buf = scratch(L, n, small, sizeof small);
  lua_createtable(L, 0, 4);
  int t = lua_gettop(L);
  const unsigned char *p = s, *q = s, *end = s + n;
  int value = 0, count = 0;
  while (p != end) {
    if (*p == '=' && !value) {
      lua_pushlstring(L, (const char *)buf, unescape(buf, q, (size_t)(p - q))); /* t key */
      q = ++p;
      value = 1;
    } else if (*p == '&') {
      lua_pushlstring(L, (const char *)buf, unescape(buf, q, (size_t)(p - q))); /* t key|value */
      q = ++p;
      if (value) value = 0;
      else lua_pushboolean(L, 1); /* t key true */
      args_add(L, t);
      /* As nginx counts: every '&', an empty pair's too, and not the last pair. */
      if (max > 0 && ++count == max) {
        lua_pushliteral(L, "truncated");
        return 2;
      }
    } else {
      p++;
    }
  }
  if (p != q || value) {
    lua_pushlstring(L, (const char *)buf, unescape(buf, q, (size_t)(p - q)));
    if (!value) lua_pushboolean(L, 1);
    args_add(L, t);
  }
  return 1;
}

typedef struct {
  const char *s;
  size_t n;
} args_key_t;

static int args_key_cmp(const void *a, const void *b) {
  const args_key_t *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* The value at the top for encode_args: its bytes in *len (a number converted in its stack
 * slot), or NULL for a type that cannot be one. */
static const char *args_value(lua_State *L, size_t *len) {
  int t = lua_type(L, -1);
  return t == LUA_TSTRING || t == LUA_TNUMBER ? lua_tolstring(L, -1, len) : NULL;
}

/* One of encode_args's two passes over the value at the top, for key k. Measuring (d NULL),
 * it checks the value, raising as OpenResty does for one that cannot be an argument, and adds
 * the bytes it gives to *bytes; writing, it writes them at d and returns their end. *pairs
 * counts the pairs so far either way (each after the first is preceded by '&'). */
static unsigned char *args_pair(lua_State *L, const args_key_t *k, unsigned char *d, size_t *bytes, size_t *pairs) {
  const uint32_t *map = escape_maps[ESCAPE_COMPONENT];
  size_t ke = k->n + 2 * escape_count(map, (const unsigned char *)k->s, k->n);
  int t = lua_type(L, -1);
  if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) return d;
  if (t != LUA_TTABLE && t != LUA_TBOOLEAN && t != LUA_TSTRING && t != LUA_TNUMBER)
    luaL_error(L, "attempt to use %s as query arg value", luaL_typename(L, -1));
  /* A table gives one pair per item (lua_next's order: the list first, in order); anything
   * else is a list of itself. */
  int list = t == LUA_TTABLE;
  if (list) lua_pushnil(L);
  while (list ? lua_next(L, -2) != 0 : 1) {
    int vt = lua_type(L, -1);
    if (!(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
      size_t vl = 0;
      const char *v = vt == LUA_TBOOLEAN ? NULL : args_value(L, &vl);
      if (vt != LUA_TBOOLEAN && !v) luaL_error(L, "attempt to use %s as query arg value", luaL_typename(L, -1));
      if (d) {
        if (*pairs) *d++ = '&';
        d = escape_write(map, d, (const unsigned char *)k->s, k->n);
        if (v) {
          *d++ = '=';
          d = escape_write(map, d, (const unsigned char *)v, vl);
        }
      } else {
        *bytes += (*pairs ? 1 : 0) + ke + (v ? 1 + vl + 2 * escape_count(map, (const unsigned char *)v, vl) : 0);
      }
      ++*pairs;
    }
    if (!list) break;
    lua_pop(L, 1);
  }
  return d;
}

/* mg.encode_args(t) */
static int l_encode_args(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs != 1) return luaL_error(L, "expecting 1 argument but seen %d", nargs);
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t nkeys = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "attempt to use a non-string key in the \"args\" option table");
    nkeys++;
  }
  /* The keys' bytes belong to t, which stays on the stack and unchanged. */
  args_key_t small_keys[32];
  args_key_t *keys = nkeys <= 32 ? small_keys : lua_newuserdata(L, nkeys * sizeof *keys);
  size_t i = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    keys[i].s = lua_tolstring(L, -2, &keys[i].n);
    i++;
  }
  qsort(keys, nkeys, sizeof *keys, args_key_cmp);
  size_t bytes = 0, pairs = 0;
  for (i = 0; i < nkeys; i++) {
    lua_pushlstring(L, keys[i].s, keys[i].n);
    lua_rawget(L, 1);
    args_pair(L, &keys[i], NULL, &bytes, &pairs);
    lua_pop(L, 1);
  }
  unsigned char small[1024];
  unsigned char *out = scratch(L, bytes, small, sizeof small), *d = out;
  pairs = 0;
  for (i = 0; i < nkeys; i++) {
    lua_pushlstring(L, keys[i].s, keys[i].n);
    lua_rawget(L, 1);
    d = args_pair(L, &keys[i], d, NULL, &pairs);
    lua_pop(L, 1);
  }
  lua_pushlstring(L, (const char *)out, (size_t)(d - out));
  return 1;
}

/* ---- base64 --------------------------------------------------------------------------------- */

/* OpenSSL's block calls take an int length: larger inputs go in pieces (whole groups). */
#define B64_PIECE (3u << 20)

/* mg.encode_base64(s[, no_padding]) */
static int l_encode_base64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)mg_codec_arg(L, 1, &n);
  int pad = 1;
  if (lua_toboolean(L, 2)) {
    if (lua_type(L, 2) != LUA_TBOOLEAN)
      return luaL_error(L, "bad no_padding: boolean expected, got %s", luaL_typename(L, 2));
    pad = 0;
  }
  size_t out = (n + 2) / 3 * 4;
  unsigned char small[1024 + 1];
  unsigned char *d = scratch(L, out + 1, small, sizeof small); /* EVP_EncodeBlock adds a NUL */
  size_t w = 0;
  for (size_t off = 0; off < n; off += B64_PIECE) {
    size_t piece = n - off < B64_PIECE ? n - off : B64_PIECE;
    w += (size_t)EVP_EncodeBlock(d + w, s + off, (int)piece);
  }
  if (!pad)
    while (w && d[w - 1] == '=') w--;
  lua_pushlstring(L, (const char *)d, w);
  return 1;
}

static inline int b64_digit(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Pushes the bytes of `len` base64 digits (alphabet only, len % 4 != 1). */
static int b64_push_decoded(lua_State *L, const unsigned char *s, size_t len) {
  size_t whole = len / 4 * 4, rest = len - whole;
  size_t out = whole / 4 * 3 + (rest ? rest - 1 : 0);
  unsigned char small[1024];
  unsigned char *d = scratch(L, out, small, sizeof small);
  size_t w = 0;
  for (size_t off = 0; off < whole; off += B64_PIECE / 3 * 4) {
    size_t piece = whole - off < B64_PIECE / 3 * 4 ? whole - off : B64_PIECE / 3 * 4;
    int got = EVP_DecodeBlock(d + w, s + off, (int)piece);
    if (got < 0) return lua_pushnil(L), 1; /* not reached: every byte was checked */
    w += (size_t)got;
  }
  if (rest) {
    /* 2 or 3 digits left: as a group filled with zero digits, of which rest - 1 bytes count
     * (the unused low bits of the last digit are ignored, as nginx ignores them). */
    unsigned char group[4] = {'A', 'A', 'A', 'A'}, bytes[3];
    memcpy(group, s + whole, rest);
    if (EVP_DecodeBlock(bytes, group, 4) < 0) return lua_pushnil(L), 1;
    memcpy(d + w, bytes, rest - 1);
    w += rest - 1;
  }
  lua_pushlstring(L, (const char *)d, w);
  return 1;
}

/* mg.decode_base64(s) → the bytes, or nil for input that is not base64 */
static int l_decode_base64(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return luaL_error(L, "string argument only");
  size_t n;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, 1, &n);
  size_t len = 0;
  for (; len < n && s[len] != '='; len++)
    if (!b64_digit(s[len])) return lua_pushnil(L), 1;
  if (len % 4 == 1) return lua_pushnil(L), 1;
  return b64_push_decoded(L, s, len);
}

/* mg.decode_base64mime(s) → the bytes, or nil: MIME's base64 (RFC 2045), as lua-nginx-module's
 * ngx_http_lua_decode_base64mime reads it: up to the first '=', every byte outside the
 * alphabet (line breaks, spaces, anything) skipped; nil only when the digits kept number
 * 4n+1. */
static int l_decode_base64mime(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return luaL_error(L, "string argument only");
  size_t n;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, 1, &n);
  size_t end = 0, digits = 0;
  for (; end < n && s[end] != '='; end++) digits += b64_digit(s[end]);
  if (digits % 4 == 1) return lua_pushnil(L), 1;
  if (digits == end) return b64_push_decoded(L, s, digits);
  unsigned char small[1024];
  unsigned char *kept = scratch(L, digits, small, sizeof small), *k = kept;
  for (size_t i = 0; i < end; i++)
    if (b64_digit(s[i])) *k++ = s[i];
  return b64_push_decoded(L, kept, digits);
}

/* ---- SQL ------------------------------------------------------------------------------------ */

/* The escape of an ASCII byte in MySQL's string syntax, or 0 when it stands for itself. */
static inline char sql_escape(unsigned char c) {
  switch (c) {
    case '\0': return '0';
    case '\b': return 'b';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    case 26: return 'Z';
    case '\\': return '\\';
    case '\'': return '\'';
    case '"': return '"';
    default: return 0;
  }
}

/* mg.quote_sql_str(s) → s between single quotes with \0 \b \n \r \t \Z \\ \' \" escaped */
static int l_quote_sql_str(lua_State *L) {
  if (lua_gettop(L) != 1) return luaL_error(L, "expecting one argument");
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += sql_escape(s[i]) != 0;
  unsigned char small[1024];
  unsigned char *out = scratch(L, n + k + 2, small, sizeof small), *d = out;
  *d++ = '\'';
  for (size_t i = 0; i < n; i++) {
    char e = sql_escape(s[i]);
    if (e) {
      *d++ = '\\';
      *d++ = (unsigned char)e;
    } else {
      *d++ = s[i];
    }
  }
  *d++ = '\'';
  lua_pushlstring(L, (const char *)out, (size_t)(d - out));
  return 1;
}

void mg_codec_open(lua_State *L) {
  /* stack: M */
  lua_pushlightuserdata(L, &tostring_key);
  lua_getfield(L, LUA_GLOBALSINDEX, "tostring");
  lua_rawset(L, LUA_REGISTRYINDEX);
  static const luaL_Reg fns[] = {
      {"escape_uri", l_escape_uri},
      {"unescape_uri", l_unescape_uri},
      {"encode_args", l_encode_args},
      {"decode_args", l_decode_args},
      {"encode_base64", l_encode_base64},
      {"decode_base64", l_decode_base64},
      {"decode_base64mime", l_decode_base64mime},
      {"quote_sql_str", l_quote_sql_str},
      {NULL, NULL},
  };
  luaL_register(L, NULL, fns);
}
