/* tlsbio: TLS over a pair of memory BIOs, on OpenSSL 3, for both sides: the listeners'
 * connections (src/http/tls.c) and the cosockets' (src/lua/lua_socket_tls.c).
 *
 * The connection never touches a descriptor, so its owner keeps its one read path and one
 * write path whether it speaks TLS or not: ciphertext read from the socket goes in with
 * mg_tlsbio_feed, plaintext comes out with mg_tlsbio_read; plaintext to send goes in with
 * mg_tlsbio_write, and the ciphertext to write (handshake records included) comes out with
 * mg_tlsbio_take. What each side adds (certificates, SNI, ALPN, verification, sessions) stays
 * with that side; what is here is the same for both. */
#ifndef MG_TLSBIO_H
#define MG_TLSBIO_H

#include <openssl/ssl.h>
#include <stddef.h>

typedef struct {
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
} mg_tlsbio_t;

/* The results of the calls below; the two sides' enums (MG_TLS_*, MG_CTLS_*) have these values. */
enum { MG_TLSBIO_OK = 0, MG_TLSBIO_WANT = 1, MG_TLSBIO_CLOSED = 2, MG_TLSBIO_ERROR = -1 };

/* A context for the server side (server != 0) or the client side offering TLS 1.2 and 1.3
 * (older versions are off in OpenSSL 3's default security level anyway). NULL when OpenSSL
 * cannot make one: mg_tlsbio_error says why. */
SSL_CTX *mg_tlsbio_ctx_new(int server);

/* OpenSSL's earliest queued error as text in buf ("unreadable" when the queue is empty), and
 * the queue cleared. Returns buf. */
const char *mg_tlsbio_error(char *buf, size_t cap);

/* A connection of ctx, accepting (server) or connecting; mg_tlsbio_free frees it. */
void mg_tlsbio_init(mg_tlsbio_t *b, SSL_CTX *ctx, int server);
void mg_tlsbio_free(mg_tlsbio_t *b);

/* One step of the handshake: MG_TLSBIO_OK (done), MG_TLSBIO_WANT (more ciphertext is needed;
 * write what mg_tlsbio_take gives first) or MG_TLSBIO_ERROR. */
int mg_tlsbio_handshake(mg_tlsbio_t *b);

/* Ciphertext from the socket. */
void mg_tlsbio_feed(mg_tlsbio_t *b, const char *data, size_t len);
/* Plaintext, at most cap bytes into out: MG_TLSBIO_OK with *got > 0 bytes, MG_TLSBIO_WANT
 * (more ciphertext needed, or the handshake goes on), MG_TLSBIO_CLOSED (close_notify) or
 * MG_TLSBIO_ERROR (a broken record or handshake). */
int mg_tlsbio_read(mg_tlsbio_t *b, char *out, size_t cap, size_t *got);
/* Encrypts plaintext; the ciphertext waits for mg_tlsbio_take. Returns 0 or MG_TLSBIO_ERROR. */
int mg_tlsbio_write(mg_tlsbio_t *b, const char *data, size_t len);
/* The ciphertext to write (malloc'd, *len bytes), or NULL when there is none. */
char *mg_tlsbio_take(mg_tlsbio_t *b, size_t *len);
/* Bytes waiting in the TLS layer, ciphertext not yet decrypted and plaintext not yet read. */
size_t mg_tlsbio_buffered(mg_tlsbio_t *b);

#endif
