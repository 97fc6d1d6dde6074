/* lua_socket_tls: see lua_socket_tls.h.
 *
 * The context mirrors what lua-nginx-module makes for its cosockets: SSL_VERIFY_PEER with a
 * callback that accepts every certificate (as nginx's ngx_ssl_verify_callback), the verify
 * depth of lua_ssl_verify_depth, the trusted CAs of lua_ssl_trusted_certificate; the verdict is
 * read afterwards with SSL_get_verify_result and the host checked with X509_check_host, as
 * ngx_ssl_check_host does. Unlike lua-nginx-module 0.10.23 (TLS 1.0 to 1.2 by default),
 * TLS 1.2 and 1.3 are offered: older versions are off in OpenSSL 3's default security level. */
#include "lua_socket_tls.h"

#include <lauxlib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tlsbio.h"

_Static_assert((int)MG_CTLS_OK == (int)MG_TLSBIO_OK && (int)MG_CTLS_WANT == (int)MG_TLSBIO_WANT &&
                   (int)MG_CTLS_CLOSED == (int)MG_TLSBIO_CLOSED && (int)MG_CTLS_ERROR == (int)MG_TLSBIO_ERROR,
               "lua_socket_tls.h's results are tlsbio's");

#define SESSION_MT "moongate.ssl_session"
#define DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"

struct mg_ctls_s {
  mg_tlsbio_t b;
  unsigned done : 1;
};

static SSL_CTX *ctx;
static int ctx_failed; /* the CA file could not be read: said once, every handshake fails */
static char *ca_path;
static int verify_depth = 1;

void mg_ctls_configure(const char *ca_file, int depth) {
  free(ca_path);
  ca_path = mg_strdup(ca_file ? ca_file : DEFAULT_CA);
  verify_depth = depth;
  if (ctx) SSL_CTX_free(ctx), ctx = NULL;
  ctx_failed = 0;
}

/* Accepts every certificate: the verdict is read after the handshake, when the caller asked. */
static int on_verify(int ok, X509_STORE_CTX *store) {
  (void)ok, (void)store;
  return 1;
}

static SSL_CTX *get_ctx(void) {
  if (ctx || ctx_failed) return ctx;
  char why[256];
  SSL_CTX *c = mg_tlsbio_ctx_new(0);
  if (!c) {
    mg_log(MG_LOG_ERROR, "cannot create a TLS context for cosockets (%s): cosocket TLS handshakes fail",
           mg_tlsbio_error(why, sizeof why));
    ctx_failed = 1;
    return NULL;
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, on_verify);
  SSL_CTX_set_verify_depth(c, verify_depth);
  const char *ca = ca_path ? ca_path : DEFAULT_CA;
  if (SSL_CTX_load_verify_locations(c, ca, NULL) != 1) {
    /* nginx refuses to start on an unreadable lua_ssl_trusted_certificate; a worker here
     * serves on, and every handshake says why it failed. */
    mg_log(MG_LOG_ERROR, "lua_ssl_trusted_certificate %s cannot be loaded (%s): cosocket TLS handshakes fail", ca,
           mg_tlsbio_error(why, sizeof why));
    SSL_CTX_free(c);
    ctx_failed = 1;
    return NULL;
  }
  ctx = c;
  return ctx;
}

/* ---- sessions ------------------------------------------------------------------------------ */

static int session_gc(lua_State *L) {
  SSL_SESSION **p = luaL_checkudata(L, 1, SESSION_MT);
  if (*p) SSL_SESSION_free(*p), *p = NULL;
  return 0;
}

int mg_ctls_is_session(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, SESSION_MT);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

void mg_ctls_push_session(lua_State *L, mg_ctls_t *c) {
  SSL_SESSION *sess = SSL_get1_session(c->b.ssl);
  if (!sess) {
    lua_pushnil(L);
    return;
  }
  SSL_SESSION **p = lua_newuserdata(L, sizeof *p);
  *p = sess;
  luaL_getmetatable(L, SESSION_MT);
  lua_setmetatable(L, -2);
}

void mg_ctls_open(lua_State *L) {
  if (luaL_newmetatable(L, SESSION_MT)) {
    lua_pushcfunction(L, session_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

/* ---- a connection -------------------------------------------------------------------------- */

mg_ctls_t *mg_ctls_new(lua_State *L, int session_idx, const char *server_name, int status_req, const char **err) {
  SSL_CTX *c = get_ctx();
  if (!c) {
    *err = "failed to create ssl connection";
    return NULL;
  }
  mg_ctls_t *t = mg_calloc(1, sizeof *t);
  mg_tlsbio_init(&t->b, c, 0);
  if (session_idx && mg_ctls_is_session(L, session_idx)) {
    SSL_SESSION **p = lua_touserdata(L, session_idx);
    if (*p && SSL_set_session(t->b.ssl, *p) != 1) {
      ERR_clear_error();
      mg_ctls_free(t);
      *err = "ssl set session failed";
      return NULL;
    }
  }
  if (server_name && *server_name && SSL_set_tlsext_host_name(t->b.ssl, server_name) != 1) {
    ERR_clear_error();
    mg_ctls_free(t);
    *err = "SSL_set_tlsext_host_name failed";
    return NULL;
  }
  if (status_req) SSL_set_tlsext_status_type(t->b.ssl, TLSEXT_STATUSTYPE_ocsp);
  return t;
}

void mg_ctls_free(mg_ctls_t *t) {
  if (!t) return;
  mg_tlsbio_free(&t->b);
  free(t);
}

int mg_ctls_handshake(mg_ctls_t *t) {
  if (t->done) return MG_CTLS_OK;
  int rc = mg_tlsbio_handshake(&t->b);
  if (rc == MG_CTLS_OK) t->done = 1;
  return rc;
}

int mg_ctls_done(const mg_ctls_t *t) { return t->done; }

const char *mg_ctls_verify(mg_ctls_t *t, const char *name, char *buf, size_t cap) {
  long rc = SSL_get_verify_result(t->b.ssl);
  if (rc != X509_V_OK) {
    snprintf(buf, cap, "%ld: %s", rc, X509_verify_cert_error_string(rc));
    return buf;
  }
  if (name && *name) {
    X509 *cert = SSL_get1_peer_certificate(t->b.ssl);
    int ok = cert && X509_check_host(cert, name, strlen(name), 0, NULL) == 1;
    X509_free(cert);
    if (!ok) return "certificate host mismatch";
  }
  return NULL;
}

void mg_ctls_feed(mg_ctls_t *t, const char *data, size_t len) { mg_tlsbio_feed(&t->b, data, len); }

int mg_ctls_read(mg_ctls_t *t, mg_buf_t *out) {
  for (;;) {
    size_t got;
    mg_buf_reserve(out, 16384);
    int rc = mg_tlsbio_read(&t->b, out->data + out->len, out->cap - out->len - 1, &got);
    if (rc != MG_CTLS_OK) return rc;
    out->len += got;
  }
}

int mg_ctls_write(mg_ctls_t *t, const char *data, size_t len) { return mg_tlsbio_write(&t->b, data, len); }

char *mg_ctls_take(mg_ctls_t *t, size_t *len) { return mg_tlsbio_take(&t->b, len); }

void mg_ctls_shutdown(mg_ctls_t *t) {
  if (!t->done) return;
  SSL_shutdown(t->b.ssl);
  ERR_clear_error();
}
