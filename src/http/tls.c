/* tls: see tls.h. */
#include "tls.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tlsbio.h"

_Static_assert((int)MG_TLS_OK == (int)MG_TLSBIO_OK && (int)MG_TLS_WANT == (int)MG_TLSBIO_WANT &&
                   (int)MG_TLS_CLOSED == (int)MG_TLSBIO_CLOSED && (int)MG_TLS_ERROR == (int)MG_TLSBIO_ERROR,
               "tls.h's results are tlsbio's");

struct mg_tls_ctx_s {
  SSL_CTX **ctx; /* [0] is the default */
  X509 **cert;   /* each context's leaf, for SNI */
  int n;
  int h2; /* ALPN offers h2 */
};

struct mg_tls_s {
  mg_tlsbio_t b;
};

static void ssl_error(char *err, size_t n, const char *what, const char *file) {
  char buf[256];
  snprintf(err, n, "%s %s: %s", what, file, mg_tlsbio_error(buf, sizeof buf));
}

/* ALPN: h2 first when the listener has HTTP/2, then http/1.1; a client that offers neither
 * gets no ALPN (and HTTP/1.1). RFC 9113 9.2.2: HTTP/2 over TLS 1.2 needs an ephemeral key
 * exchange and an AEAD cipher; a TLS 1.2 client that negotiated anything else gets
 * http/1.1 rather than an h2 connection it would have to refuse (INADEQUATE_SECURITY). */
static int h2_cipher_ok(SSL *ssl) {
  if (SSL_version(ssl) >= TLS1_3_VERSION) return 1;
  const SSL_CIPHER *c = SSL_get_pending_cipher(ssl);
  if (!c || !SSL_CIPHER_is_aead(c)) return 0;
  int kx = SSL_CIPHER_get_kx_nid(c);
  return kx == NID_kx_ecdhe || kx == NID_kx_dhe;
}

static int alpn_find(const unsigned char *in, unsigned inlen, const char *proto, const unsigned char **out,
                     unsigned char *outlen) {
  size_t pl = strlen(proto);
  for (unsigned i = 0; i < inlen;) {
    unsigned l = in[i];
    if (i + 1 + l > inlen) break;
    if (l == pl && memcmp(in + i + 1, proto, pl) == 0) {
      *out = in + i + 1, *outlen = (unsigned char)l;
      return 1;
    }
    i += 1 + l;
  }
  return 0;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg) {
  const mg_tls_ctx_t *t = arg;
  if (t->h2 && h2_cipher_ok(ssl) && alpn_find(in, inlen, "h2", out, outlen)) return SSL_TLSEXT_ERR_OK;
  if (alpn_find(in, inlen, "http/1.1", out, outlen)) return SSL_TLSEXT_ERR_OK;
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

mg_tls_ctx_t *mg_tls_ctx_new(const char *const *certs, const char *const *keys, int n, int h2, char *err,
                             size_t err_len) {
  mg_tls_ctx_t *t = mg_calloc(1, sizeof *t);
  t->h2 = h2;
  t->ctx = mg_calloc((size_t)n, sizeof *t->ctx);
  t->cert = mg_calloc((size_t)n, sizeof *t->cert);
  for (int i = 0; i < n; i++, t->n++) {
    SSL_CTX *c = mg_tlsbio_ctx_new(1);
    t->ctx[i] = c;
    if (!c) return ssl_error(err, err_len, "cannot create a TLS context for", certs[i]), mg_tls_ctx_free(t), NULL;
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(c, on_alpn, t);
    /* An idle connection keeps no record buffers (nginx does the same). */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
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
  mg_tlsbio_init(&s->b, t->ctx[0], 1);
  return s;
}

void mg_tls_free(mg_tls_t *s) {
  if (!s) return;
  mg_tlsbio_free(&s->b);
  free(s);
}

void mg_tls_feed(mg_tls_t *s, const char *data, size_t len) { mg_tlsbio_feed(&s->b, data, len); }

size_t mg_tls_read(mg_tls_t *s, char *out, size_t cap, int *status) {
  size_t got;
  *status = mg_tlsbio_read(&s->b, out, cap, &got);
  return got;
}

int mg_tls_write(mg_tls_t *s, const char *data, size_t len) { return mg_tlsbio_write(&s->b, data, len); }

char *mg_tls_take(mg_tls_t *s, size_t *len) { return mg_tlsbio_take(&s->b, len); }

size_t mg_tls_buffered(mg_tls_t *s) { return mg_tlsbio_buffered(&s->b); }

int mg_tls_alpn_h2(const mg_tls_t *s) {
  const unsigned char *p;
  unsigned int len;
  SSL_get0_alpn_selected(s->b.ssl, &p, &len);
  return len == 2 && memcmp(p, "h2", 2) == 0;
}
