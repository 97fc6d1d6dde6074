/* lua_socket: see lua_socket.h.
 *
 * Lifecycle: the C state (mg_socket_t, with its libuv handles) is separate from the Lua
 * userdata (a box pointing at it), because a handle's memory may be freed only in its close
 * callback while Lua collects userdata whenever it likes. sock_close() is idempotent and the
 * only way a connection ends; the struct is freed when its last handle has closed. A box whose
 * socket is gone (closed, pooled, its request ended) answers nil, "closed". */
#include "lua_socket.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"
#include "lua_request.h"
#include "lua_sockbase.h"
#include "lua_socket_tls.h"
#include "lua_thread.h"
#include "lua_udp.h"
#include "lua_vm.h"
#include "stream.h"

#define SOCK_MT "moongate.socket"
#define READ_CAP (64 * 1024)
#define DEFAULT_POOL_SIZE 30

enum { OP_NONE, OP_RESOLVE, OP_CONNECT, OP_SEND, OP_RECEIVE, OP_HANDSHAKE };
enum { R_LINE, R_ALL, R_COUNT, R_UNTIL };

typedef struct mg_socket_s mg_socket_t;

typedef struct {
  mg_socket_t *s;
  uint64_t connect_ms, send_ms, read_ms; /* kept here: they outlive one connection */
  int attached; /* it had a connection once (sslhandshake tells "never connected" apart) */
} sock_box_t;

struct mg_socket_s {
  mg_owned_t own; /* first: the owner's list holds this */
  mg_stream_t h;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;
  int handles;
  unsigned stream_inited : 1, connected : 1, closing : 1, reading : 1, eof : 1, eof_told : 1, pooled : 1;
  int read_err;
  int op;
  mg_thread_t *waiter;
  /* receive */
  int rmode;
  size_t rcount;
  char *pattern;
  size_t plen;
  int until_size; /* receiveuntil iterator called with a size: 0 none */
  int inclusive;  /* receiveuntil's { inclusive = true }: the pattern is part of the data */
  int until_done; /* a sized iterator gave the last piece before the pattern: nil next */
  const void *until_owner; /* which iterator until_done is about */
  mg_buf_t rbuf;
  size_t roff;
  char *wbuf; /* the unsent part of a send */
  size_t wlen;
  mg_sock_resolve_t *rs; /* the name being resolved (OP_RESOLVE) */
  /* TLS (sslhandshake): the connection's state stays with it in the pool */
  mg_ctls_t *tls;
  char *tls_name;   /* server_name to check the certificate against, when verifying */
  int tls_verify;   /* ssl_verify */
  int tls_retbool;  /* reused_session was false: the result is true, not a session */
  /* ownership and pool */
  sock_box_t *box;
  mg_socket_t *pnext;
  uint64_t idle_ms;
  int reused;
  uint64_t read_ms;
  int pool_size; /* connect's pool_size option, 0: none */
  char key[256];
};

static mg_socket_t *pool_head;
/* lua_socket_timeout: operations and idle pooled connections. */
#define default_ms mg_socket_default_ms
extern void (*mg_thread_release_hook)(mg_thread_t *t);

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void on_sock_closed(uv_handle_t *h) {
  mg_socket_t *s = h->data;
  if (--s->handles > 0) return;
  mg_buf_free(&s->rbuf);
  free(s->wbuf);
  free(s->pattern);
  mg_ctls_free(s->tls);
  free(s->tls_name);
  free(s);
}

/* A write of its own (ciphertext of the handshake, a close_notify, a TLS record that a read
 * answered): freed in its callback, which never touches the socket. */
typedef struct {
  uv_write_t w;
  char *data;
} raw_write_t;

static void on_raw_written(uv_write_t *w, int status) {
  raw_write_t *rw = (raw_write_t *)w;
  (void)status; /* a failed write shows as a failed read or send */
  free(rw->data);
  free(rw);
}

/* Writes the ciphertext waiting in the TLS layer; behind any write already queued. */
static void tls_flush(mg_socket_t *s) {
  size_t len;
  char *data;
  if (!s->tls || !s->stream_inited || !(data = mg_ctls_take(s->tls, &len))) return;
  raw_write_t *rw = mg_malloc(sizeof *rw);
  rw->data = data;
  uv_buf_t ub = uv_buf_init(data, (unsigned)len);
  if (uv_write(&rw->w, &s->h.stream, &ub, 1, on_raw_written) < 0) free(data), free(rw);
}

static void pool_unlink(mg_socket_t *s) {
  for (mg_socket_t **pp = &pool_head; *pp; pp = &(*pp)->pnext)
    if (*pp == s) {
      *pp = s->pnext;
      break;
    }
  s->pooled = 0;
}

static void sock_close(mg_socket_t *s) {
  if (s->closing) return;
  s->closing = 1;
  mg_sock_resolve_cancel(s->rs); /* its callback must not touch this socket */
  s->rs = NULL;
  mg_owned_unlink(&s->own);
  if (s->pooled) pool_unlink(s);
  if (s->box) s->box->s = NULL, s->box = NULL;
  if (s->tls && s->connected && !s->eof && mg_ctls_done(s->tls)) {
    /* A close_notify, as nginx's ngx_ssl_shutdown sends, if the socket takes it now. */
    mg_ctls_shutdown(s->tls);
    size_t len;
    char *data = mg_ctls_take(s->tls, &len);
    if (data) {
      uv_buf_t ub = uv_buf_init(data, (unsigned)len);
      (void)uv_try_write(&s->h.stream, &ub, 1);
      free(data);
    }
  }
  uv_close((uv_handle_t *)&s->timer, on_sock_closed);
  if (s->stream_inited) uv_close(&s->h.handle, on_sock_closed);
}

/* The owner ends: its cosocket closes without resuming anyone. */
static void on_owner_gone(mg_owned_t *o) {
  mg_socket_t *s = (mg_socket_t *)o;
  s->waiter = NULL;
  sock_close(s);
}

static void release_hook(mg_thread_t *t) { mg_socket_close_owned(&t->sockets); }

static mg_socket_t *sock_new(uv_loop_t *loop) {
  mg_socket_t *s = mg_calloc(1, sizeof *s);
  mg_buf_init(&s->rbuf);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->handles = 1;
  s->own.close = on_owner_gone;
  return s;
}

/* ---- waiting and results ------------------------------------------------------------------------ */

#define err_text mg_socket_err_text

/* Resumes the waiting thread with the values pushed onto its stack. */
static void finish_op(mg_socket_t *s, int nres) {
  mg_thread_t *t = s->waiter;
  s->waiter = NULL;
  s->op = OP_NONE;
  uv_timer_stop(&s->timer);
  if (t) mg_thread_resume(t, nres);
}

static void fail_op(mg_socket_t *s, const char *err, int close) {
  mg_thread_t *t = s->waiter;
  if (close) sock_close(s);
  if (!t) return;
  lua_pushnil(t->co);
  lua_pushstring(t->co, err);
  finish_op(s, 2);
}

static void op_cancel(mg_thread_t *t) {
  mg_socket_t *s = t->wait;
  s->waiter = NULL;
  s->op = OP_NONE;
  if (!s->closing) uv_timer_stop(&s->timer);
}

static int wait_op(lua_State *L, mg_thread_t *t, mg_socket_t *s, int op, uint64_t ms);

static void on_op_timeout(uv_timer_t *tm) {
  mg_socket_t *s = tm->data;
  mg_thread_t *t = s->waiter;
  if (!t) return;
  if (s->op == OP_RECEIVE) {
    /* A read timeout leaves the connection usable (as OpenResty); what came is returned. */
    lua_State *co = t->co;
    lua_pushnil(co);
    lua_pushliteral(co, "timeout");
    lua_pushlstring(co, s->rbuf.data ? s->rbuf.data + s->roff : "", s->rbuf.len - s->roff);
    s->roff = s->rbuf.len;
    finish_op(s, 3);
    return;
  }
  fail_op(s, "timeout", 1);
}

static int wait_op(lua_State *L, mg_thread_t *t, mg_socket_t *s, int op, uint64_t ms) {
  s->op = op;
  s->waiter = t;
  if (ms) mg_timer_start(&s->timer, on_op_timeout, ms, 0);
  return mg_thread_wait(L, t, op_cancel, s);
}

/* ---- the box ----------------------------------------------------------------------------------- */

static sock_box_t *check_box(lua_State *L) { return luaL_checkudata(L, 1, SOCK_MT); }

static void attach(sock_box_t *b, mg_socket_t *s, mg_thread_t *t) {
  b->s = s;
  b->attached = 1;
  s->box = b;
  s->read_ms = b->read_ms;
  mg_lua_req_t *lr = t->req ? t->req->lua : NULL; /* a request's thread: attached */
  mg_owned_link(&s->own, lr ? &lr->sockets : &t->sockets);
}

static int l_tcp(lua_State *L) {
  sock_box_t *b = lua_newuserdata(L, sizeof *b);
  b->s = NULL;
  b->attached = 0;
  b->connect_ms = b->send_ms = b->read_ms = default_ms;
  luaL_getmetatable(L, SOCK_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_gc(lua_State *L) {
  sock_box_t *b = lua_touserdata(L, 1);
  if (b->s) sock_close(b->s);
  return 0;
}

/* ---- reading ------------------------------------------------------------------------------------ */

/* Ciphertext lands here and is fed to the TLS layer at once: libuv calls on_alloc and then
 * on_sock_read before anything else runs, so one buffer serves every TLS cosocket. */
static char cipher_in[16384];

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  mg_socket_t *s = h->data;
  (void)hint;
  if (s->tls) {
    *buf = uv_buf_init(cipher_in, sizeof cipher_in);
    return;
  }
  mg_buf_reserve(&s->rbuf, 16384);
  buf->base = s->rbuf.data + s->rbuf.len;
  buf->len = 16384;
}

static int try_satisfy(mg_socket_t *s, lua_State *co);
static void update_reading(mg_socket_t *s);
static void handshake_step(mg_socket_t *s);

/* Ciphertext came: the handshake goes on (and may resume its waiter), then whole records are
 * decrypted into rbuf. Returns 1 when the connection ended (close_notify or a broken record). */
static int tls_input(mg_socket_t *s, const char *data, size_t n) {
  mg_ctls_feed(s->tls, data, n);
  if (!mg_ctls_done(s->tls)) {
    handshake_step(s);
    if (s->closing || !mg_ctls_done(s->tls)) return 0;
  }
  int rc = mg_ctls_read(s->tls, &s->rbuf);
  tls_flush(s); /* a read may answer (a key update) */
  if (rc == MG_CTLS_WANT) return 0;
  if (rc == MG_CTLS_ERROR) s->read_err = UV_EPROTO;
  return 1;
}

static void on_sock_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  mg_socket_t *s = st->data;
  if (nread == 0 || s->closing) return;
  size_t got = 0;
  int ended = nread < 0;
  if (ended) {
    if (nread != UV_EOF) s->read_err = (int)nread;
  } else if (s->tls) {
    size_t before = s->rbuf.len;
    ended = tls_input(s, buf->base, (size_t)nread);
    if (s->closing) return; /* a failed handshake closed it */
    got = s->rbuf.len - before;
  } else {
    s->rbuf.len += (size_t)nread;
    got = (size_t)nread;
  }
  if (ended) {
    s->eof = 1;
    uv_read_stop(st);
    s->reading = 0;
    if (s->op == OP_HANDSHAKE) {
      fail_op(s, "handshake failed", 1);
      return;
    }
  }
  /* A pooled connection that the peer closed, or that got bytes nobody asked for (a TLS
   * session ticket is no plaintext: it keeps the connection), cannot be reused. */
  if (s->pooled && (ended || got)) {
    sock_close(s);
    return;
  }
  if (s->waiter && s->op == OP_RECEIVE) {
    int n = try_satisfy(s, s->waiter->co);
    if (n > 0) {
      finish_op(s, n);
      return;
    }
  }
  update_reading(s);
}

/* Reads while connected, up to READ_CAP unread bytes. */
static void update_reading(mg_socket_t *s) {
  if (s->closing || !s->connected) return;
  if (s->roff && s->roff == s->rbuf.len) s->rbuf.len = s->roff = 0;
  /* The cap bounds what nobody has asked for yet; a waiting receive reads on (a reply larger
   * than the cap, receive(n) with a large n, "*a" to the end). */
  int want = !s->eof && (s->op == OP_RECEIVE || s->op == OP_HANDSHAKE || s->rbuf.len - s->roff < READ_CAP);
  if (want && !s->reading) {
    if (s->roff > READ_CAP) {
      memmove(s->rbuf.data, s->rbuf.data + s->roff, s->rbuf.len - s->roff);
      s->rbuf.len -= s->roff, s->roff = 0;
    }
    if (uv_read_start(&s->h.stream, on_alloc, on_sock_read) == 0) s->reading = 1;
  } else if (!want && s->reading) {
    uv_read_stop(&s->h.stream);
    s->reading = 0;
  }
}

static void consume(mg_socket_t *s, lua_State *co, size_t n, size_t skip) {
  lua_pushlstring(co, s->rbuf.data + s->roff, n);
  s->roff += n + skip;
}

/* A line of "*l" without its CRs: every one is dropped, not only one before the LF, as
 * lua-nginx-module's line reader ignores them wherever they are. */
static void push_line(lua_State *co, const char *data, size_t n) {
  if (!memchr(data, '\r', n)) {
    lua_pushlstring(co, data, n);
    return;
  }
  luaL_Buffer b;
  luaL_buffinit(co, &b);
  for (size_t i = 0; i < n; i++)
    if (data[i] != '\r') luaL_addchar(&b, data[i]);
  luaL_pushresult(&b);
}

/* Pushes the result of the pending receive onto co when the buffer (and EOF) allow it.
 * Returns the number of values pushed, 0 when more data is needed. */
static int try_satisfy(mg_socket_t *s, lua_State *co) {
  const char *data = s->rbuf.data ? s->rbuf.data + s->roff : "";
  size_t avail = s->rbuf.len - s->roff;
  switch (s->rmode) {
    case R_LINE: {
      const char *nl = memchr(data, '\n', avail);
      if (nl) {
        size_t n = (size_t)(nl - data);
        push_line(co, data, n);
        s->roff += n + 1;
        return 1;
      }
      break;
    }
    case R_COUNT:
      if (avail >= s->rcount) {
        consume(s, co, s->rcount, 0);
        return 1;
      }
      break;
    case R_ALL:
      if (s->eof && !s->read_err) {
        consume(s, co, avail, 0);
        return 1;
      }
      break;
    case R_UNTIL: {
      const char *p = avail >= s->plen ? memmem(data, avail, s->pattern, s->plen) : NULL;
      if (p) {
        size_t n = (size_t)(p - data);
        if (s->until_size && n > (size_t)s->until_size) {
          consume(s, co, (size_t)s->until_size, 0);
          return 1;
        }
        /* The last part before the pattern ("" when the pieces took it all), with the pattern
         * when inclusive; a sized iterator says nil next (lua-nginx-module's state -1). */
        if (s->inclusive) consume(s, co, n + s->plen, 0);
        else consume(s, co, n, s->plen);
        if (s->until_size) s->until_done = 1;
        return 1;
      }
      /* Bytes that cannot be the start of the pattern may go out in pieces of `size`. */
      if (s->until_size && avail >= s->plen && avail - (s->plen - 1) >= (size_t)s->until_size) {
        consume(s, co, (size_t)s->until_size, 0);
        return 1;
      }
      break;
    }
  }
  if (s->eof && s->eof_told && avail == 0) {
    /* Told once, with what was left: from then on the read side is closed (lua-nginx-module's
     * read_closed), and a receive says only that. */
    lua_pushnil(co);
    lua_pushliteral(co, "closed");
    return 2;
  }
  if (s->eof) {
    /* The peer closed (or failed) before the pattern was satisfied. */
    s->eof_told = 1;
    lua_pushnil(co);
    lua_pushstring(co, s->read_err ? err_text(s->read_err) : "closed");
    if (s->rmode == R_LINE) push_line(co, data, avail);
    else lua_pushlstring(co, data, avail);
    s->roff += avail;
    return 3;
  }
  return 0;
}

static int do_receive(lua_State *L, sock_box_t *b, int mode, size_t count) {
  mg_socket_t *s = b->s;
  if (!s || !s->connected) return mg_sock_fail(L, "closed");
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  s->rmode = mode, s->rcount = count;
  int n = try_satisfy(s, L);
  if (n > 0) {
    update_reading(s);
    return n;
  }
  mg_thread_t *t = mg_thread_check(L, "receive");
  if (mg_explain) return mg_thread_explained(L);
  update_reading(s);
  return wait_op(L, t, s, OP_RECEIVE, b->read_ms);
}

/* sock:receive([pattern]): "*l" (default), "*a" or a number of bytes. */
static int l_receive(lua_State *L) {
  sock_box_t *b = check_box(L);
  if (lua_isnumber(L, 2)) { /* a numeric string too ("12"), as OpenResty */
    lua_Number n = lua_tonumber(L, 2);
    if (n < 0) return luaL_argerror(L, 2, "bad pattern argument");
    if (n == 0) {
      lua_pushliteral(L, "");
      return 1;
    }
    return do_receive(L, b, R_COUNT, (size_t)n);
  }
  const char *p = luaL_optstring(L, 2, "*l");
  if (strcmp(p, "*l") == 0 || strcmp(p, "*L") == 0) return do_receive(L, b, R_LINE, 0);
  if (strcmp(p, "*a") == 0) return do_receive(L, b, R_ALL, 0);
  return luaL_argerror(L, 2, "bad pattern argument");
}

/* An iterator's option; its address names the iterator that a sized call ended a part of. */
typedef struct {
  int inclusive;
} until_t;

/* The iterator receiveuntil returns: iter([size]). Upvalues: the box, the pattern, until_t. */
static int l_until_iter(lua_State *L) {
  sock_box_t *b = lua_touserdata(L, lua_upvalueindex(1));
  size_t plen;
  const char *pat = lua_tolstring(L, lua_upvalueindex(2), &plen);
  until_t *u = lua_touserdata(L, lua_upvalueindex(3));
  if (lua_gettop(L) > 1) return luaL_error(L, "expecting 0 or 1 arguments, but seen %d", lua_gettop(L));
  int size = (int)luaL_optinteger(L, 1, 0);
  lua_settop(L, 0);
  mg_socket_t *s = b->s;
  if (!s || !s->connected) return mg_sock_fail(L, "closed");
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  if (s->until_done && s->until_owner == u) {
    /* The previous piece was the last before the pattern. */
    s->until_done = 0;
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushnil(L);
    return 3;
  }
  if (!s->pattern || s->plen != plen || memcmp(s->pattern, pat, plen) != 0) {
    free(s->pattern);
    s->pattern = mg_malloc(plen);
    memcpy(s->pattern, pat, plen);
    s->plen = plen;
  }
  s->until_size = size > 0 ? size : 0;
  s->inclusive = u->inclusive;
  s->until_done = 0;
  s->until_owner = u; /* compared, never read: the part's end is known when the wait ends */
  return do_receive(L, b, R_UNTIL, 0);
}

/* sock:receiveuntil(pattern[, { inclusive = bool }]) → iterator, or nil, "pattern is empty". */
static int l_receiveuntil(lua_State *L) {
  check_box(L);
  int n = lua_gettop(L);
  if (n != 2 && n != 3) return luaL_error(L, "expecting 2 or 3 arguments (including the object), but got %d", n);
  int inclusive = 0;
  if (n == 3) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "inclusive");
    if (lua_isboolean(L, -1)) inclusive = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1)) return luaL_error(L, "bad \"inclusive\" option value type: %s", luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  size_t plen;
  luaL_checklstring(L, 2, &plen);
  if (plen == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "pattern is empty");
    return 2;
  }
  lua_settop(L, 2);
  until_t *u = lua_newuserdata(L, sizeof *u);
  u->inclusive = inclusive;
  lua_pushcclosure(L, l_until_iter, 3);
  return 1;
}

/* ---- connecting --------------------------------------------------------------------------------- */

static void on_connected(uv_connect_t *cr, int status) {
  mg_socket_t *s = cr->data;
  if (s->closing) return;
  if (status < 0) {
    fail_op(s, err_text(status), 1);
    return;
  }
  s->connected = 1;
  update_reading(s);
  mg_thread_t *t = s->waiter;
  if (t) lua_pushinteger(t->co, 1);
  finish_op(s, 1);
}

static int start_connect(mg_socket_t *s, const struct sockaddr *sa) {
  s->connect.data = s;
  return uv_tcp_connect(&s->connect, &s->h.tcp, sa, on_connected);
}

static void on_resolved(void *owner, const struct sockaddr *sa, socklen_t len) {
  mg_socket_t *s = owner;
  (void)len;
  s->rs = NULL;
  if (!sa) {
    fail_op(s, "host not found", 1);
    return;
  }
  s->op = OP_CONNECT;
  int rc = start_connect(s, sa);
  if (rc < 0) fail_op(s, err_text(rc), 1);
}

static void resolve_cancel(mg_thread_t *t) {
  mg_socket_t *s = t->wait;
  mg_sock_resolve_cancel(s->rs);
  s->rs = NULL;
  op_cancel(t);
}

static mg_socket_t *pool_take(const char *key) {
  for (mg_socket_t **pp = &pool_head; *pp; pp = &(*pp)->pnext)
    if (strcmp((*pp)->key, key) == 0) {
      mg_socket_t *s = *pp;
      *pp = s->pnext;
      s->pooled = 0;
      uv_timer_stop(&s->timer);
      return s;
    }
  return NULL;
}

/* sock:connect(host, port) or sock:connect("unix:/path") → 1 or nil, err. */
static int l_connect(lua_State *L) {
  sock_box_t *b = check_box(L);
  const char *host = luaL_checkstring(L, 2);
  int unix_sock = strncmp(host, "unix:", 5) == 0;
  int port = unix_sock ? 0 : (int)luaL_checkinteger(L, 3);
  if (!unix_sock && (port < 1 || port > 65535)) return luaL_argerror(L, 3, "port must be from 1 to 65535");
  /* The options: pool (the pool's name instead of "host:port"), pool_size (setkeepalive's
   * default size for this connection); lua-nginx-module's backlog queue is not there. */
  int oi = unix_sock ? 3 : 4, pool_size = 0;
  const char *pool = NULL;
  if (!lua_isnoneornil(L, oi)) {
    luaL_checktype(L, oi, LUA_TTABLE);
    lua_getfield(L, oi, "pool");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      return luaL_error(L, "bad \"pool\" option type: %s", luaL_typename(L, -1));
    pool = lua_tostring(L, -1); /* stays on the stack, so the string lives */
    lua_getfield(L, oi, "pool_size");
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || lua_tointeger(L, -1) < 1))
      return luaL_error(L, "bad \"pool_size\" option value: a positive number expected, got %s", luaL_typename(L, -1));
    pool_size = (int)lua_tointeger(L, -1);
    lua_getfield(L, oi, "backlog");
    if (!lua_isnil(L, -1)) return luaL_error(L, "the backlog option of connect is not supported by moongate");
  }
  char key[sizeof ((mg_socket_t *)0)->key];
  int klen = pool ? snprintf(key, sizeof key, "%s", pool)
                  : unix_sock ? snprintf(key, sizeof key, "%s", host) : snprintf(key, sizeof key, "%s:%d", host, port);
  if (klen >= (int)sizeof key) return luaL_argerror(L, pool ? oi : 2, "pool name longer than 255 bytes");
  mg_thread_t *t = mg_thread_check(L, "connect");
  if (mg_explain) return mg_thread_explained(L);
  if (b->s) sock_close(b->s); /* connect on a connected cosocket closes the old connection */
  mg_socket_t *s = pool_take(key);
  if (s) {
    if (pool_size) s->pool_size = pool_size;
    s->reused++;
    attach(b, s, t);
    lua_pushinteger(L, 1);
    return 1;
  }
  uv_loop_t *loop = mg_thread_loop();
  s = sock_new(loop);
  snprintf(s->key, sizeof s->key, "%s", key);
  s->pool_size = pool_size;
  attach(b, s, t);
  int rc;
  if (unix_sock) {
    uv_pipe_init(loop, &s->h.pipe, 0);
    s->h.handle.data = s;
    s->stream_inited = 1, s->handles++;
    s->connect.data = s;
    uv_pipe_connect(&s->connect, &s->h.pipe, host + 5, on_connected);
    return wait_op(L, t, s, OP_CONNECT, b->connect_ms);
  }
  uv_tcp_init(loop, &s->h.tcp);
  s->h.handle.data = s;
  s->stream_inited = 1, s->handles++;
  uv_tcp_nodelay(&s->h.tcp, 1);
  struct sockaddr_storage ss;
  if (mg_sock_literal(host, port, &ss)) {
    rc = start_connect(s, (struct sockaddr *)&ss);
    if (rc < 0) {
      sock_close(s);
      return mg_sock_fail(L, err_text(rc));
    }
    return wait_op(L, t, s, OP_CONNECT, b->connect_ms);
  }
  /* A name: resolved by libuv's thread pool, then connected. */
  if (!(s->rs = mg_sock_resolve(loop, host, port, SOCK_STREAM, on_resolved, s))) {
    sock_close(s);
    return mg_sock_fail(L, "host not found");
  }
  s->op = OP_RESOLVE;
  s->waiter = t;
  if (b->connect_ms) mg_timer_start(&s->timer, on_op_timeout, b->connect_ms, 0);
  return mg_thread_wait(L, t, resolve_cancel, s);
}

/* ---- sending ------------------------------------------------------------------------------------ */

static void on_sent(uv_write_t *w, int status) {
  mg_socket_t *s = w->data;
  free(s->wbuf);
  s->wbuf = NULL;
  if (s->closing) return;
  if (status < 0) {
    fail_op(s, err_text(status), 1);
    return;
  }
  mg_thread_t *t = s->waiter;
  if (t) lua_pushinteger(t->co, (lua_Integer)s->wlen);
  finish_op(s, 1);
}

/* sock:send(data) → bytes sent or nil, err. data: mg_socket_data's rules (nested arrays of
 * strings and numbers, a number, nil, a boolean). Over TLS the bytes counted are plaintext. */
static int l_send(lua_State *L) {
  sock_box_t *b = check_box(L);
  mg_socket_t *s = b->s;
  if (lua_gettop(L) != 2) return luaL_error(L, "expecting 2 arguments (including the object), but got %d", lua_gettop(L));
  /* As lua-nginx-module: a closed socket is said before a bad argument. */
  if (!s || !s->connected) return mg_sock_fail(L, "closed");
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  if (s->tls && !mg_ctls_done(s->tls)) return mg_sock_fail(L, "closed");
  mg_buf_t data;
  mg_buf_init(&data);
  mg_socket_data(L, 2, &data); /* raises before it allocates */
  size_t len = data.len;
  if (len == 0) {
    mg_buf_free(&data);
    lua_pushinteger(L, 0);
    return 1;
  }
  if (s->tls) {
    /* The plaintext becomes records; what goes on the wire is the ciphertext. */
    size_t clen = 0;
    int rc = mg_ctls_write(s->tls, data.data, len);
    char *cipher = rc == 0 ? mg_ctls_take(s->tls, &clen) : NULL;
    mg_buf_free(&data);
    if (!cipher) {
      sock_close(s);
      return mg_sock_fail(L, "closed");
    }
    data.data = cipher, data.len = clen, data.cap = clen + 1; /* freed with free() below */
  }
  /* Most sends fit in the socket buffer: no wait at all. */
  uv_buf_t ub = uv_buf_init(data.data, (unsigned)data.len);
  int n = uv_try_write(&s->h.stream, &ub, 1);
  if (n == (int)data.len) {
    free(data.data);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
  }
  if (n < 0 && n != UV_EAGAIN) {
    free(data.data);
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, err_text(n));
    return 2;
  }
  if (n < 0) n = 0;
  /* The rest is the socket's before anything can raise: an error below leaks nothing. */
  free(s->wbuf);
  s->wlen = len;
  s->wbuf = mg_malloc(data.len - (size_t)n);
  memcpy(s->wbuf, data.data + n, data.len - (size_t)n);
  ub = uv_buf_init(s->wbuf, (unsigned)(data.len - (size_t)n));
  free(data.data);
  mg_thread_t *t = mg_thread_check(L, "send");
  if (mg_explain) return mg_thread_explained(L);
  s->write.data = s;
  int rc = uv_write(&s->write, &s->h.stream, &ub, 1, on_sent);
  if (rc < 0) {
    free(s->wbuf);
    s->wbuf = NULL;
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, err_text(rc));
    return 2;
  }
  return wait_op(L, t, s, OP_SEND, b->send_ms);
}

/* ---- TLS ------------------------------------------------------------------------------------ */

/* Pushes sslhandshake's results onto co for a handshake that ended with rc; returns their
 * count and sets *failed when the connection is to be closed (as lua-nginx-module does). */
static int handshake_results(mg_socket_t *s, lua_State *co, int rc, int *failed) {
  char buf[256];
  const char *err = NULL;
  if (rc == MG_CTLS_ERROR) err = "handshake failed";
  else if (s->tls_verify) err = mg_ctls_verify(s->tls, s->tls_name, buf, sizeof buf);
  *failed = err != NULL;
  if (err) {
    lua_pushnil(co);
    lua_pushstring(co, err);
    return 2;
  }
  if (s->tls_retbool) lua_pushboolean(co, 1);
  else mg_ctls_push_session(co, s->tls);
  return 1;
}

/* Ciphertext came during a handshake: one more step, and its end resumes the waiter. */
static void handshake_step(mg_socket_t *s) {
  int rc = mg_ctls_handshake(s->tls);
  tls_flush(s);
  if (rc == MG_CTLS_WANT || s->op != OP_HANDSHAKE || !s->waiter) return;
  int failed;
  int n = handshake_results(s, s->waiter->co, rc, &failed);
  if (failed) sock_close(s);
  finish_op(s, n);
}

/* sock:sslhandshake([reused_session[, server_name[, ssl_verify[, send_status_req]]]]) →
 * a session (true when reused_session is false) or nil, err. On a connection that already
 * speaks TLS (one taken from the pool), no new handshake: reused_session itself when it is a
 * session, else as after a handshake. */
static int l_sslhandshake(lua_State *L) {
  sock_box_t *b = check_box(L);
  int nargs = lua_gettop(L);
  if (nargs > 5)
    return luaL_error(L, "ngx.socket sslhandshake: expecting 1 ~ 5 arguments (including the object), but seen %d", nargs);
  const char *name = lua_isnoneornil(L, 3) ? NULL : luaL_checkstring(L, 3);
  int verify = lua_toboolean(L, 4), status_req = lua_toboolean(L, 5);
  int retbool = lua_isboolean(L, 2) && !lua_toboolean(L, 2);
  mg_socket_t *s = b->s;
  if (!b->attached) return luaL_error(L, "socket is never created nor connected");
  if (!s || !s->connected || s->eof) return mg_sock_fail(L, "closed");
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  if (s->tls) {
    if (!mg_ctls_done(s->tls)) {
      /* A handshake given up half-way (its thread was killed) cannot go on. */
      sock_close(s);
      lua_pushnil(L);
      lua_pushliteral(L, "handshake failed");
      return 2;
    }
    if (mg_ctls_is_session(L, 2)) lua_pushvalue(L, 2);
    else if (retbool) lua_pushboolean(L, 1);
    else mg_ctls_push_session(L, s->tls);
    return 1;
  }
  mg_thread_t *t = mg_thread_check(L, "sslhandshake");
  if (mg_explain) return mg_thread_explained(L);
  const char *err;
  s->tls = mg_ctls_new(L, 2, name, status_req, &err);
  if (!s->tls) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  free(s->tls_name);
  s->tls_name = name && verify ? mg_strdup(name) : NULL;
  s->tls_verify = verify, s->tls_retbool = retbool;
  /* Bytes that came before the handshake are the server's first records. */
  mg_ctls_feed(s->tls, s->rbuf.data ? s->rbuf.data + s->roff : "", s->rbuf.len - s->roff);
  s->rbuf.len = s->roff = 0;
  int rc = mg_ctls_handshake(s->tls);
  tls_flush(s);
  if (rc != MG_CTLS_WANT) {
    int failed;
    int n = handshake_results(s, L, rc, &failed);
    if (failed) sock_close(s);
    return n;
  }
  s->op = OP_HANDSHAKE;
  update_reading(s);
  return wait_op(L, t, s, OP_HANDSHAKE, b->connect_ms);
}

/* ---- the rest -------------------------------------------------------------------------------------- */

/* A timeout in ms: 0 is the default (never "no timeout", which would hold the descriptor for
 * good), NaN, infinities and negative numbers are refused, huge ones capped; what is not a
 * number reads as 0, as lua-nginx-module's lua_tonumber reads it. */
static uint64_t check_ms(lua_State *L, int idx) {
  uint64_t ms;
  if (mg_lua_timeout_ms(lua_tonumber(L, idx), 1, default_ms, &ms) < 0)
    luaL_argerror(L, idx, "timeout must be a number of milliseconds from 0 (0: the default)");
  return ms;
}

static int l_settimeout(lua_State *L) {
  sock_box_t *b = check_box(L);
  b->connect_ms = b->send_ms = b->read_ms = check_ms(L, 2);
  if (b->s) b->s->read_ms = b->read_ms;
  return 0;
}

static int l_settimeouts(lua_State *L) {
  sock_box_t *b = check_box(L);
  b->connect_ms = check_ms(L, 2);
  b->send_ms = check_ms(L, 3);
  b->read_ms = check_ms(L, 4);
  if (b->s) b->s->read_ms = b->read_ms;
  return 0;
}

static int l_close(lua_State *L) {
  sock_box_t *b = check_box(L);
  if (!b->s) return mg_sock_fail(L, "closed");
  if (b->s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  sock_close(b->s);
  lua_pushinteger(L, 1);
  return 1;
}

static void on_idle_timeout(uv_timer_t *tm) { sock_close(tm->data); }

/* sock:setkeepalive([idle_ms[, pool_size]]): into the pool; the object is closed for us. */
static int l_setkeepalive(lua_State *L) {
  sock_box_t *b = check_box(L);
  mg_socket_t *s = b->s;
  uint64_t idle = lua_isnoneornil(L, 2) ? default_ms : check_ms(L, 2);
  int size = !lua_isnoneornil(L, 3) ? (int)luaL_checkinteger(L, 3) : s && s->pool_size ? s->pool_size : DEFAULT_POOL_SIZE;
  if (size < 1) return luaL_argerror(L, 3, "pool size must be positive");
  if (!s || !s->connected) return mg_sock_fail(L, "closed");
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  if (s->roff < s->rbuf.len || s->eof) {
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, s->eof ? "closed" : "unread data in buffer");
    return 2;
  }
  /* A full pool for this key gives up its least recently pooled connection. */
  int count = 0;
  mg_socket_t *oldest = NULL;
  for (mg_socket_t *p = pool_head; p; p = p->pnext)
    if (strcmp(p->key, s->key) == 0) count++, oldest = p;
  if (count >= size && oldest) sock_close(oldest);
  mg_owned_unlink(&s->own);
  s->box = NULL;
  b->s = NULL;
  s->pooled = 1;
  s->pnext = pool_head;
  pool_head = s;
  s->roff = s->rbuf.len = 0;
  if (idle) mg_timer_start(&s->timer, on_idle_timeout, idle, 0);
  update_reading(s);
  lua_pushinteger(L, 1);
  return 1;
}

static int l_getreusedtimes(lua_State *L) {
  sock_box_t *b = check_box(L);
  if (!b->s) return mg_sock_fail(L, "closed");
  lua_pushinteger(L, b->s->reused);
  return 1;
}

void mg_socket_open(lua_State *L) {
  mg_thread_release_hook = release_hook;
  if (luaL_newmetatable(L, SOCK_MT)) {
    static const luaL_Reg methods[] = {
        {"connect", l_connect},         {"send", l_send},
        {"receive", l_receive},         {"receiveuntil", l_receiveuntil},
        {"settimeout", l_settimeout},   {"settimeouts", l_settimeouts},
        {"close", l_close},             {"setkeepalive", l_setkeepalive},
        {"getreusedtimes", l_getreusedtimes}, {"sslhandshake", l_sslhandshake},
        {NULL, NULL},
    };
    static const char *const refused[] = {"bind", "getfd", "setclientcert", "settrustedstore", "receiveany",
                                          "setoption", "getsslpointer", "getsslctx", "getsslsession", NULL};
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    mg_sock_refuse(L, "tcpsock", refused);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  mg_ctls_open(L);
  lua_newtable(L);
  lua_pushcfunction(L, l_tcp);
  lua_setfield(L, -2, "tcp");
  /* connect(...) = tcp() and its connect(...), giving the socket: in Lua, as it waits. */
  static const char connect_lua[] =
      "local tcp = ... return function(...) local sock = tcp() local ok, err = sock:connect(...) "
      "if not ok then return nil, err end return sock end";
  if (luaL_loadbuffer(L, connect_lua, sizeof connect_lua - 1, "=mg.socket.connect") != 0) lua_error(L);
  lua_pushcfunction(L, l_tcp);
  lua_call(L, 1, 1);
  lua_setfield(L, -2, "connect");
  mg_udp_open(L);
  lua_setfield(L, -2, "socket");
}
