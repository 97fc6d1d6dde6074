/* lua_socket_tls: the client side of TLS for cosockets, sock:sslhandshake (docs/lua-api.md,
 * "Cosockets"), on OpenSSL 3.
 *
 * One SSL_CTX per worker, made on the first handshake from the settings
 * lua_ssl_trusted_certificate and lua_ssl_verify_depth (docs/reference.md). As under
 * lua-nginx-module, the handshake itself never fails on a bad certificate: the verification
 * result is recorded, and mg_ctls_verify() turns it into OpenResty's error ("<code>: <OpenSSL's
 * text>", or "certificate host mismatch") when the caller asked for verification, so a
 * handshake with ssl_verify false works against any certificate.
 *
 * A connection's TLS is a pair of memory BIOs (src/base/tlsbio.h, shared with the listeners): the
 * cosocket keeps its one libuv read path and write path. Ciphertext read from the socket goes
 * in with mg_ctls_feed; plaintext comes out with mg_ctls_read; plaintext to send goes in with
 * mg_ctls_write; the ciphertext to write (handshake records included) comes out with
 * mg_ctls_take.
 *
 * Sessions are Lua userdata (metatable "moongate.ssl_session") owning one SSL_SESSION
 * reference, freed when collected; sslhandshake returns one and takes one back to resume. */
#ifndef MG_LUA_SOCKET_TLS_H
#define MG_LUA_SOCKET_TLS_H

#include <lua.h>
#include <stddef.h>

#include "buf.h"

typedef struct mg_ctls_s mg_ctls_t;

/* The worker's settings: the CA file (NULL: /etc/ssl/certs/ca-certificates.crt) and the depth.
 * Takes effect on the next context made: call it before the worker serves. */
void mg_ctls_configure(const char *ca_file, int depth);

/* A client TLS connection sending `server_name` by SNI (NULL or "": none) and offering the
 * session of the userdata at `session_idx` of L (0 or a value that is no session: none), asking
 * for the OCSP status (stapling) when status_req is set.
 * Returns NULL with OpenResty's message in *err. */
mg_ctls_t *mg_ctls_new(lua_State *L, int session_idx, const char *server_name, int status_req, const char **err);
void mg_ctls_free(mg_ctls_t *c);

enum { MG_CTLS_OK = 0, MG_CTLS_WANT = 1, MG_CTLS_CLOSED = 2, MG_CTLS_ERROR = -1 };

/* One step of the handshake: MG_CTLS_OK (done), MG_CTLS_WANT (more ciphertext needed; write
 * what mg_ctls_take gives first) or MG_CTLS_ERROR. */
int mg_ctls_handshake(mg_ctls_t *c);
int mg_ctls_done(const mg_ctls_t *c);

/* After a handshake: NULL when the certificate verified (and matches `name` when it is not NULL
 * or empty), else OpenResty's error text, formatted into buf (cap bytes). */
const char *mg_ctls_verify(mg_ctls_t *c, const char *name, char *buf, size_t cap);

/* Pushes the connection's session as a userdata (nil when OpenSSL has none). */
void mg_ctls_push_session(lua_State *L, mg_ctls_t *c);
/* Whether the value at idx is a session userdata. */
int mg_ctls_is_session(lua_State *L, int idx);

void mg_ctls_feed(mg_ctls_t *c, const char *data, size_t len);
/* Decrypts every whole record fed so far, appending the plaintext to out: MG_CTLS_WANT (all
 * taken), MG_CTLS_CLOSED (the peer sent close_notify) or MG_CTLS_ERROR. */
int mg_ctls_read(mg_ctls_t *c, mg_buf_t *out);
/* Encrypts plaintext; the ciphertext waits for mg_ctls_take. Returns 0 or MG_CTLS_ERROR. */
int mg_ctls_write(mg_ctls_t *c, const char *data, size_t len);
/* The ciphertext to write (malloc'd, *len bytes), or NULL when there is none. */
char *mg_ctls_take(mg_ctls_t *c, size_t *len);
/* Queues a close_notify (for mg_ctls_take) on a connection whose handshake is done. */
void mg_ctls_shutdown(mg_ctls_t *c);

/* The session metatable, once per state. */
void mg_ctls_open(lua_State *L);

#endif
