/* tls: TLS listeners on OpenSSL 3 (docs/reference.md, "TLS").
 *
 * A listener with `tls` gets one SSL_CTX per certificate, made when the configuration loads
 * (in the master, before the fork, so every worker shares the session-ticket keys and a
 * resumed session works whichever worker takes it). TLS 1.2 and 1.3 only, ALPN `h2` (when the
 * listener has HTTP/2) then `http/1.1`,
 * session tickets on, the certificate chosen by SNI among the listener's (the first is the
 * default). A reload builds new contexts: certificates are read again.
 *
 * A connection's TLS is a pair of memory BIOs (src/base/tlsbio.h, shared with the cosockets),
 * so the connection keeps its one read path and one write path (and the same backpressure)
 * whether it is TLS or not: ciphertext read from the socket goes in with mg_tls_feed, plaintext
 * comes out with mg_tls_read; plaintext to send goes in with mg_tls_write and the ciphertext to
 * write comes out with mg_tls_take. */
#ifndef MG_TLS_H
#define MG_TLS_H

#include <stddef.h>

typedef struct mg_tls_ctx_s mg_tls_ctx_t; /* a listener's certificates */
typedef struct mg_tls_s mg_tls_t;         /* one connection */

/* Loads the certificates (PEM chain files and keys) of a listener; h2: ALPN offers HTTP/2.
 * Returns NULL with the reason in err. */
mg_tls_ctx_t *mg_tls_ctx_new(const char *const *certs, const char *const *keys, int n, int h2, char *err,
                             size_t err_len);
void mg_tls_ctx_free(mg_tls_ctx_t *t);

mg_tls_t *mg_tls_new(mg_tls_ctx_t *t);
void mg_tls_free(mg_tls_t *s);

enum { MG_TLS_OK = 0, MG_TLS_WANT = 1, MG_TLS_CLOSED = 2, MG_TLS_ERROR = -1 };

/* What mg_tlsbio_feed, read, write, take and buffered do (base/tlsbio.h), on a listener's
 * connection: mg_tls_read gives the byte count and puts the result in *status. Reading the
 * socket stops when mg_tls_buffered is above a block, as for a plain connection that holds
 * unparsed bytes. */
void mg_tls_feed(mg_tls_t *s, const char *data, size_t len);
size_t mg_tls_read(mg_tls_t *s, char *out, size_t cap, int *status);
int mg_tls_write(mg_tls_t *s, const char *data, size_t len);
char *mg_tls_take(mg_tls_t *s, size_t *len);
size_t mg_tls_buffered(mg_tls_t *s);
/* 1 when the handshake chose h2 by ALPN. */
int mg_tls_alpn_h2(const mg_tls_t *s);

#endif
