/* tlsbio: see tlsbio.h. */
#include "tlsbio.h"

#include <openssl/err.h>
#include <stdio.h>

#include "buf.h"

SSL_CTX *mg_tlsbio_ctx_new(int server) {
  SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c) SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  return c;
}

const char *mg_tlsbio_error(char *buf, size_t cap) {
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, cap);
  else snprintf(buf, cap, "unreadable");
  ERR_clear_error();
  return buf;
}

void mg_tlsbio_init(mg_tlsbio_t *b, SSL_CTX *ctx, int server) {
  b->ssl = SSL_new(ctx);
  b->rbio = BIO_new(BIO_s_mem());
  b->wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(b->ssl, b->rbio, b->wbio);
  if (server) SSL_set_accept_state(b->ssl);
  else SSL_set_connect_state(b->ssl);
}

void mg_tlsbio_free(mg_tlsbio_t *b) {
  SSL_free(b->ssl);
  b->ssl = NULL, b->rbio = b->wbio = NULL;
}

/* What a failed SSL call (rc <= 0) means; OpenSSL's error queue is emptied, so that the next
 * connection's SSL_get_error does not read this one's errors. */
static int status_of(mg_tlsbio_t *b, int rc) {
  int e = SSL_get_error(b->ssl, rc);
  ERR_clear_error();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return MG_TLSBIO_WANT;
  return e == SSL_ERROR_ZERO_RETURN ? MG_TLSBIO_CLOSED : MG_TLSBIO_ERROR;
}

int mg_tlsbio_handshake(mg_tlsbio_t *b) {
  int rc = SSL_do_handshake(b->ssl);
  if (rc == 1) return MG_TLSBIO_OK;
  rc = status_of(b, rc);
  return rc == MG_TLSBIO_WANT ? rc : MG_TLSBIO_ERROR;
}

void mg_tlsbio_feed(mg_tlsbio_t *b, const char *data, size_t len) {
  if (len) BIO_write(b->rbio, data, (int)len);
}

int mg_tlsbio_read(mg_tlsbio_t *b, char *out, size_t cap, size_t *got) {
  int rc = SSL_read_ex(b->ssl, out, cap, got);
  if (rc == 1) return MG_TLSBIO_OK;
  *got = 0;
  return status_of(b, rc);
}

int mg_tlsbio_write(mg_tlsbio_t *b, const char *data, size_t len) {
  size_t done = 0;
  if (len == 0) return 0;
  /* Memory BIOs never fill up: SSL_write takes everything at once. */
  if (SSL_write_ex(b->ssl, data, len, &done) != 1 || done != len) {
    ERR_clear_error();
    return MG_TLSBIO_ERROR;
  }
  return 0;
}

char *mg_tlsbio_take(mg_tlsbio_t *b, size_t *len) {
  size_t n = BIO_ctrl_pending(b->wbio);
  if (n == 0) return NULL;
  char *out = mg_malloc(n);
  *len = (size_t)BIO_read(b->wbio, out, (int)n);
  return out;
}

size_t mg_tlsbio_buffered(mg_tlsbio_t *b) { return BIO_ctrl_pending(b->rbio) + (size_t)SSL_pending(b->ssl); }
