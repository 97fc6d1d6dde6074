/* tls: see tls.h. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

struct mg_tls_ctx_s {
  SSL_CTX **ctx; /* [0] is the default */
  X509 **cert;   /* each context's leaf, for SNI */
  int n;
};

struct mg_tls_s {
  SSL *ssl;
  BIO *rbio, *wbio;
};

static void ssl_error(char *err, size_t n, const char *what, const char *file) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, n, "%s %s: %s", what, file, e ? buf : "unreadable");
  ERR_clear_error();
}

/* ALPN: HTTP/1.1 is all this server speaks; a client that offers only h2 gets no ALPN. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  for (unsigned i = 0; i < inlen;) {
    unsigned l = in[i];
    if (i + 1 + l > inlen) break;
    if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
      *out = in + i + 1, *outlen = 8;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + l;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/* SNI: the first certificate whose names match the requested host; the default otherwise. */
static int on_servername(SSL *ssl, int *al, void *arg) {
  (void)al;
  mg_tls_ctx_t *t = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  for (int i = 0; i < t->n; i++)
    if (X509_check_host(t->cert[i], name, strlen(name), 0, NULL) == 1) {
      if (i) SSL_set_SSL_CTX(ssl, t->ctx[i]);
      return SSL_TLSEXT_ERR_OK;
    }
  return SSL_TLSEXT_ERR_OK;
}

mg_tls_ctx_t *mg_tls_ctx_new(const char *const *certs, const char *const *keys, int n, char *err, size_t err_len) {
  mg_tls_ctx_t *t = mg_calloc(1, sizeof *t);
  t->ctx = mg_calloc((size_t)n, sizeof *t->ctx);
  t->cert = mg_calloc((size_t)n, sizeof *t->cert);
  for (int i = 0; i < n; i++, t->n++) {
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    t->ctx[i] = c;
    if (!c) return ssl_error(err, err_len, "cannot create a TLS context for", certs[i]), mg_tls_ctx_free(t), NULL;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(c, on_alpn, NULL);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    if (SSL_CTX_use_certificate_chain_file(c, certs[i]) != 1)
      return ssl_error(err, err_len, "bad certificate", certs[i]), mg_tls_ctx_free(t), NULL;
    if (SSL_CTX_use_PrivateKey_file(c, keys[i], SSL_FILETYPE_PEM) != 1)
      return ssl_error(err, err_len, "bad key", keys[i]), mg_tls_ctx_free(t), NULL;
    if (SSL_CTX_check_private_key(c) != 1)
      return ssl_error(err, err_len, "the key does not match the certificate", certs[i]), mg_tls_ctx_free(t), NULL;
    t->cert[i] = SSL_CTX_get0_certificate(c);
  }
  if (n > 1) {
    SSL_CTX_set_tlsext_servername_callback(t->ctx[0], on_servername);
    SSL_CTX_set_tlsext_servername_arg(t->ctx[0], t);
  }
  return t;
}

void mg_tls_ctx_free(mg_tls_ctx_t *t) {
  if (!t) return;
  for (int i = 0; i < t->n; i++) SSL_CTX_free(t->ctx[i]);
  free(t->ctx);
  free(t->cert);
  free(t);
}

mg_tls_t *mg_tls_new(mg_tls_ctx_t *t) {
  mg_tls_t *s = mg_calloc(1, sizeof *s);
  s->ssl = SSL_new(t->ctx[0]);
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(s->ssl, s->rbio, s->wbio); /* the SSL owns the BIOs */
  SSL_set_accept_state(s->ssl);
  return s;
}

void mg_tls_free(mg_tls_t *s) {
  if (!s) return;
  SSL_free(s->ssl);
  free(s);
}

void mg_tls_feed(mg_tls_t *s, const char *data, size_t len) { BIO_write(s->rbio, data, (int)len); }

size_t mg_tls_read(mg_tls_t *s, char *out, size_t cap, int *status) {
  size_t got = 0;
  int rc = SSL_read_ex(s->ssl, out, cap, &got);
  if (rc == 1) {
    *status = MG_TLS_OK;
    return got;
  }
  int e = SSL_get_error(s->ssl, rc);
  ERR_clear_error();
  *status = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? MG_TLS_WANT : e == SSL_ERROR_ZERO_RETURN ? MG_TLS_CLOSED : MG_TLS_ERROR;
  return 0;
}

int mg_tls_write(mg_tls_t *s, const char *data, size_t len) {
  size_t done = 0;
  if (len == 0) return 0;
  /* Memory BIOs never fill up: SSL_write takes everything at once. */
  if (SSL_write_ex(s->ssl, data, len, &done) != 1 || done != len) {
    ERR_clear_error();
    return MG_TLS_ERROR;
  }
  return 0;
}

char *mg_tls_take(mg_tls_t *s, size_t *len) {
  size_t n = BIO_ctrl_pending(s->wbio);
  if (n == 0) return NULL;
  char *out = mg_malloc(n);
  *len = (size_t)BIO_read(s->wbio, out, (int)n);
  return out;
}

size_t mg_tls_buffered(mg_tls_t *s) { return BIO_ctrl_pending(s->rbio) + (size_t)SSL_pending(s->ssl); }
