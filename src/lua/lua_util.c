/* lua_util: the helpers (docs/lua-api.md, "String helpers"): mg.log, mg.now, mg.time, the
 * digests and HMACs, hex, CRC-32, and through lua_codec.c the string codecs. The names that
 * OpenResty also has give OpenResty's results (ngx.md5 is hex, ngx.md5_bin and ngx.sha1_bin
 * raw, ngx.hmac_sha1 the raw 20 bytes, ngx.crc32_short and ngx.crc32_long the same number);
 * their string argument is read as lua-resty-core reads it (mg_codec_arg: nil is ""), while
 * the HMACs, which are lua-nginx-module C functions, want exactly two strings. Digests and
 * HMACs come from OpenSSL's libcrypto, CRC-32 from zlib. */
#include "lua_util.h"

#include "lua_request.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "log.h"
#include "lua_codec.h"
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
  mg_log_error(levels[i], mg_lua_req_now ? mg_lua_req_now->id : NULL, "%s", lua_tostring(L, -1));
  return 0;
}

/* The algorithms, fetched from OpenSSL's default provider once per process, with one reused
 * digest context and one HMAC context each: OpenSSL 3's one-shot EVP_Digest and HMAC fetch the
 * algorithm and allocate a context on every call, which costs more than hashing a token. */
typedef struct {
  const char *name;
  EVP_MD *md;
  EVP_MD_CTX *ctx;
  EVP_MAC_CTX *mac;
} algo_t;
enum { ALG_MD5, ALG_SHA1, ALG_SHA256 };
static algo_t algos[] = {{"MD5", NULL, NULL, NULL}, {"SHA1", NULL, NULL, NULL}, {"SHA256", NULL, NULL, NULL}};

static algo_t *algo(lua_State *L, int i) {
  algo_t *a = &algos[i];
  if (!a->md) {
    a->md = EVP_MD_fetch(NULL, a->name, NULL);
    a->ctx = EVP_MD_CTX_new();
    if (!a->md || !a->ctx) luaL_error(L, "OpenSSL has no %s", a->name);
  }
  return a;
}

static int digest(lua_State *L, int alg, unsigned char *out, unsigned int *len) {
  size_t n;
  const char *s = mg_codec_arg(L, 1, &n);
  algo_t *a = algo(L, alg);
  if (!EVP_DigestInit_ex(a->ctx, a->md, NULL) || !EVP_DigestUpdate(a->ctx, s, n) || !EVP_DigestFinal_ex(a->ctx, out, len))
    return luaL_error(L, "digest failed");
  return 0;
}

static void push_hex(lua_State *L, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char small[2 * EVP_MAX_MD_SIZE];
  char *d = 2 * n <= sizeof small ? small : lua_newuserdata(L, 2 * n);
  for (size_t i = 0; i < n; i++) {
    d[2 * i] = hex[s[i] >> 4];
    d[2 * i + 1] = hex[s[i] & 15];
  }
  lua_pushlstring(L, d, 2 * n);
}

/* A binary digest of the first argument. */
static int push_digest(lua_State *L, int alg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  digest(L, alg, out, &len);
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

/* mg.md5(s) → 32 lower-case hex digits, as ngx.md5 */
static int l_md5(lua_State *L) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  digest(L, ALG_MD5, out, &len);
  push_hex(L, out, len);
  return 1;
}

static int l_md5_bin(lua_State *L) { return push_digest(L, ALG_MD5); }
static int l_sha1_bin(lua_State *L) { return push_digest(L, ALG_SHA1); }
static int l_sha256(lua_State *L) { return push_digest(L, ALG_SHA256); }

/* hmac(key, s) → the raw digest; exactly two arguments, strings or numbers, as
 * lua-nginx-module's ngx.hmac_sha1 checks them. */
static int hmac(lua_State *L, int alg) {
  if (lua_gettop(L) != 2) return luaL_error(L, "expecting 2 arguments, but got %d", lua_gettop(L));
  size_t kl, n;
  const char *k = luaL_checklstring(L, 1, &kl);
  const char *s = luaL_checklstring(L, 2, &n);
  algo_t *a = &algos[alg];
  if (!a->mac) {
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    a->mac = m ? EVP_MAC_CTX_new(m) : NULL;
    EVP_MAC_free(m);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)a->name, 0), OSSL_PARAM_construct_end()};
    if (!a->mac || !EVP_MAC_CTX_set_params(a->mac, params)) {
      EVP_MAC_CTX_free(a->mac);
      a->mac = NULL;
      return luaL_error(L, "OpenSSL has no HMAC-%s", a->name);
    }
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  /* A new key each call (an empty key is a key too: k is never NULL). */
  if (!EVP_MAC_init(a->mac, (const unsigned char *)k, kl, NULL) || !EVP_MAC_update(a->mac, (const unsigned char *)s, n) ||
      !EVP_MAC_final(a->mac, out, &len, sizeof out))
    return luaL_error(L, "hmac failed");
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_hmac_sha1(lua_State *L) { return hmac(L, ALG_SHA1); }
static int l_hmac_sha256(lua_State *L) { return hmac(L, ALG_SHA256); }

/* mg.crc32_short(s), mg.crc32_long(s) → the CRC-32 of s as a number. nginx has two functions
 * (tuned for short and long input) with one result; zlib's is fast for both. */
static int l_crc32(lua_State *L) {
  size_t n;
  const char *s = mg_codec_arg(L, 1, &n);
  lua_pushnumber(L, (lua_Number)crc32_z(0, (const Bytef *)s, n));
  return 1;
}

static int l_to_hex(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  push_hex(L, s, n);
  return 1;
}

void mg_util_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"log", l_log},
      {"md5", l_md5},
      {"md5_bin", l_md5_bin},
      {"sha1", l_sha1_bin},
      {"sha1_bin", l_sha1_bin},
      {"sha256", l_sha256},
      {"hmac_sha1", l_hmac_sha1},
      {"hmac_sha256", l_hmac_sha256},
      {"crc32_short", l_crc32},
      {"crc32_long", l_crc32},
      {"to_hex", l_to_hex},
      {NULL, NULL},
  };
  luaL_register(L, NULL, fns);
  mg_codec_open(L);
}
