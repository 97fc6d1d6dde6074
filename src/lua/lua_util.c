/* lua_util: the helpers (docs/lua-api.md, "More of the request and response"): mg.log, mg.now, mg.time, base64, URI escaping, query
 * arguments, digests and HMAC, hex. Digests, HMAC and base64 come from OpenSSL's libcrypto;
 * URI escaping follows RFC 3986 (unreserved characters are kept, everything else is %XX). */
#include "lua_util.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "lua_thread.h"

/* mg.log(level, ...) */
static int l_log(lua_State *L) {
  static const char *names[] = {"debug", "info", "notice", "warn", "error", NULL};
  static const int levels[] = {MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_NOTICE, MG_LOG_WARN, MG_LOG_ERROR};
  int i = luaL_checkoption(L, 1, NULL, names);
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int a = 2; a <= n; a++) {
    int t = lua_type(L, a);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
      lua_pushvalue(L, a);
      luaL_addvalue(&b);
    } else if (t == LUA_TBOOLEAN) {
      luaL_addstring(&b, lua_toboolean(L, a) ? "true" : "false");
    } else {
      luaL_addstring(&b, t == LUA_TNIL ? "nil" : lua_typename(L, t));
    }
  }
  luaL_pushresult(&b);
  mg_thread_t *t = mg_thread_current();
  mg_log_error(levels[i], t && t->req ? t->req->id : NULL, "%s", lua_tostring(L, -1));
  return 0;
}

static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1000.0);
  return 1;
}

static int l_time(lua_State *L) {
  /* The clock mg.now() reads: time(2) reads the kernel's coarse clock, which can still be on
   * the previous second when CLOCK_REALTIME has passed it, so the two could disagree by a
   * whole second. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec);
  return 1;
}

static int l_encode_base64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  /* EVP_EncodeBlock needs 4 output bytes per 3 input bytes (+1 NUL); go in pieces. */
  unsigned char out[4 * 768 + 1];
  for (size_t off = 0; off < n; off += 3 * 768) {
    size_t piece = n - off < 3 * 768 ? n - off : 3 * 768;
    int w = EVP_EncodeBlock(out, s + off, (int)piece);
    luaL_addlstring(&b, (const char *)out, (size_t)w);
  }
  luaL_pushresult(&b);
  return 1;
}

static int l_decode_base64(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (n % 4) {
    lua_pushnil(L);
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  unsigned char out[3 * 1024];
  for (size_t off = 0; off < n; off += 4 * 1024) {
    size_t piece = n - off < 4 * 1024 ? n - off : 4 * 1024;
    int w = EVP_DecodeBlock(out, (const unsigned char *)s + off, (int)piece);
    if (w < 0) {
      lua_pushnil(L);
      return 1;
    }
    /* EVP_DecodeBlock counts padding as zero bytes: drop them. */
    if (off + piece == n) {
      if (piece >= 1 && s[n - 1] == '=') w--;
      if (piece >= 2 && s[n - 2] == '=') w--;
    }
    luaL_addlstring(&b, (const char *)out, (size_t)w);
  }
  luaL_pushresult(&b);
  return 1;
}

static int unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

static void add_escaped(mg_buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (unreserved(c)) {
      mg_buf_append(b, (const char *)&c, 1);
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      mg_buf_append(b, e, 3);
    }
  }
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* %XX decoded (a malformed escape is kept as is); with plus, '+' is a space (query strings). */
static void push_unescaped(lua_State *L, const char *s, size_t n, int plus) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      luaL_addchar(&b, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
      i += 2;
    } else {
      luaL_addchar(&b, plus && s[i] == '+' ? ' ' : s[i]);
    }
  }
  luaL_pushresult(&b);
}

static int l_escape_uri(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  mg_buf_t b;
  mg_buf_init(&b);
  add_escaped(&b, s, n);
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  mg_buf_free(&b);
  return 1;
}

static int l_unescape_uri(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  push_unescaped(L, s, n, 0);
  return 1;
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* mg.encode_args(t): "a=1&b=x%20y"; keys sorted; true gives a bare key, false is left out, a
 * list repeats the key. Built in a C buffer, so values can be read off the stack freely. */
static int l_encode_args(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "mg.encode_args: keys must be strings");
    n++;
  }
  const char **keys = lua_newuserdata(L, sizeof(char *) * (size_t)(n ? n : 1)); /* keys anchored by t */
  int k = 0;
  for (lua_pushnil(L); lua_next(L, 1); lua_pop(L, 1)) keys[k++] = lua_tostring(L, -2);
  qsort(keys, (size_t)k, sizeof *keys, cmp_keys);
  mg_buf_t b;
  mg_buf_init(&b);
  const char *bad = NULL;
  for (int i = 0; i < k && !bad; i++) {
    lua_getfield(L, 1, keys[i]); /* value */
    int is_list = lua_type(L, -1) == LUA_TTABLE;
    int count = is_list ? (int)lua_objlen(L, -1) : 1;
    for (int j = 1; j <= count && !bad; j++) {
      if (is_list) lua_rawgeti(L, -1, j);
      else lua_pushvalue(L, -1); /* value item */
      int vt = lua_type(L, -1);
      if (vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        continue;
      }
      if (vt != LUA_TBOOLEAN && vt != LUA_TSTRING && vt != LUA_TNUMBER) {
        bad = keys[i];
      } else {
        if (b.len) mg_buf_append(&b, "&", 1);
        add_escaped(&b, keys[i], strlen(keys[i]));
        if (vt != LUA_TBOOLEAN) {
          size_t vl;
          const char *v = lua_tolstring(L, -1, &vl); /* a number becomes a string on the stack only */
          mg_buf_append(&b, "=", 1);
          add_escaped(&b, v, vl);
        }
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (bad) {
    mg_buf_free(&b);
    return luaL_error(L, "mg.encode_args: value of %s must be a string, number, boolean or list", bad);
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  mg_buf_free(&b);
  return 1;
}

/* mg.decode_args(s[, max]) → a table: repeated keys give lists, a bare key gives true. */
static int l_decode_args(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_Integer max = luaL_optinteger(L, 2, 100);
  lua_newtable(L);
  int count = 0;
  for (size_t i = 0; i < n && (max == 0 || count < max);) {
    size_t j = i;
    while (j < n && s[j] != '&') j++;
    if (j > i) {
      const char *eq = memchr(s + i, '=', j - i);
      size_t kl = eq ? (size_t)(eq - (s + i)) : j - i;
      push_unescaped(L, s + i, kl, 1); /* t key */
      if (eq) push_unescaped(L, eq + 1, (size_t)(s + j - eq - 1), 1);
      else lua_pushboolean(L, 1);      /* t key value */
      lua_pushvalue(L, -2);
      lua_rawget(L, -4);               /* t key value old */
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_rawset(L, -3);
      } else if (lua_istable(L, -1)) {
        lua_insert(L, -2);             /* t key old value */
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
      } else {
        lua_createtable(L, 2, 0);      /* t key value old list */
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);         /* t key value list */
        lua_insert(L, -2);
        lua_rawseti(L, -2, 2);         /* t key list */
        lua_rawset(L, -3);
      }
      count++;
    }
    i = j + 1;
  }
  return 1;
}

static int digest(lua_State *L, const EVP_MD *md) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(s, n, out, &len, md, NULL)) return luaL_error(L, "digest failed");
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_md5(lua_State *L) { return digest(L, EVP_md5()); }
static int l_sha1(lua_State *L) { return digest(L, EVP_sha1()); }
static int l_sha256(lua_State *L) { return digest(L, EVP_sha256()); }

static int l_hmac_sha256(lua_State *L) {
  size_t kl, n;
  const char *k = luaL_checklstring(L, 1, &kl);
  const char *s = luaL_checklstring(L, 2, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), k, (int)kl, (const unsigned char *)s, n, out, &len)) return luaL_error(L, "hmac failed");
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_to_hex(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  static const char hex[] = "0123456789abcdef";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    luaL_addchar(&b, hex[s[i] >> 4]);
    luaL_addchar(&b, hex[s[i] & 15]);
  }
  luaL_pushresult(&b);
  return 1;
}

void mg_util_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"log", l_log},
      {"now", l_now},
      {"time", l_time},
      {"encode_base64", l_encode_base64},
      {"decode_base64", l_decode_base64},
      {"escape_uri", l_escape_uri},
      {"unescape_uri", l_unescape_uri},
      {"encode_args", l_encode_args},
      {"decode_args", l_decode_args},
      {"md5", l_md5},
      {"sha1", l_sha1},
      {"sha256", l_sha256},
      {"hmac_sha256", l_hmac_sha256},
      {"to_hex", l_to_hex},
      {NULL, NULL},
  };
  luaL_register(L, NULL, fns);
}
