/* lua_socket: see lua_socket.h.
 *
 * Lifecycle: the C state (mg_socket_t, with its libuv handles) is separate from the Lua
 * userdata (a box pointing at it), because a handle's memory may be freed only in its close
 * callback while Lua collects userdata whenever it likes. sock_close() is idempotent and the
 * only way a connection ends; the struct is freed when its last handle has closed. A box whose
 * socket is gone (closed, pooled, its request ended) answers nil, "closed". */
#include "lua_socket.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "lua_vm.h"
#include "stream.h"

#define SOCK_MT "moongate.socket"
#define READ_CAP (64 * 1024)
#define DEFAULT_POOL_SIZE 30

enum { OP_NONE, OP_RESOLVE, OP_CONNECT, OP_SEND, OP_RECEIVE };
enum { R_LINE, R_ALL, R_COUNT, R_UNTIL };

typedef struct mg_socket_s mg_socket_t;

typedef struct {
  mg_socket_t *s;
  uint64_t connect_ms, send_ms, read_ms; /* kept here: they outlive one connection */
} sock_box_t;

struct mg_socket_s {
  mg_stream_t h;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;
  int handles;
  unsigned stream_inited : 1, connected : 1, closing : 1, reading : 1, eof : 1, pooled : 1;
  int read_err;
  int op;
  mg_thread_t *waiter;
  /* receive */
  int rmode;
  size_t rcount;
  char *pattern;
  size_t plen;
  int until_size; /* receiveuntil iterator called with a size: 0 none */
  mg_buf_t rbuf;
  size_t roff;
  char *wbuf; /* the unsent part of a send */
  size_t wlen;
  /* ownership and pool */
  void **owner;
  mg_socket_t *onext, **oprev;
  sock_box_t *box;
  mg_socket_t *pnext;
  uint64_t idle_ms;
  int reused;
  uint64_t read_ms;
  char key[128];
};

/* A name being resolved: libuv's request outlives the socket if the socket closes first. */
typedef struct {
  uv_getaddrinfo_t req;
  mg_socket_t *s; /* NULL when the socket gave up waiting or closed */
  int port;
} resolve_t;

static mg_socket_t *pool_head;
/* lua_socket_timeout: operations and idle pooled connections. */
static uint64_t default_ms = 60000;

void mg_socket_set_default_timeout(uint64_t ms) { default_ms = ms; }
extern void (*mg_thread_release_hook)(mg_thread_t *t);

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void on_sock_closed(uv_handle_t *h) {
  mg_socket_t *s = h->data;
  if (--s->handles > 0) return;
  mg_buf_free(&s->rbuf);
  free(s->wbuf);
  free(s->pattern);
  free(s);
}

static void owner_unlink(mg_socket_t *s) {
  if (!s->oprev) return;
  *s->oprev = s->onext;
  if (s->onext) s->onext->oprev = s->oprev;
  s->onext = NULL, s->oprev = NULL;
}

static void owner_link(mg_socket_t *s, void **list) {
  mg_socket_t **head = (mg_socket_t **)list;
  s->onext = *head;
  if (*head) (*head)->oprev = &s->onext;
  *head = s;
  s->oprev = head;
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
  if (s->op == OP_RESOLVE && s->wbuf) {
    /* The resolver's callback frees its request and must not touch this socket. */
    ((resolve_t *)s->wbuf)->s = NULL;
    s->wbuf = NULL;
  }
  owner_unlink(s);
  if (s->pooled) pool_unlink(s);
  if (s->box) s->box->s = NULL, s->box = NULL;
  uv_close((uv_handle_t *)&s->timer, on_sock_closed);
  if (s->stream_inited) uv_close(&s->h.handle, on_sock_closed);
}

void mg_socket_close_owned(void **list) {
  mg_socket_t *s;
  while ((s = *(mg_socket_t **)list)) {
    if (s->waiter) s->waiter = NULL;
    sock_close(s);
  }
}

static void release_hook(mg_thread_t *t) { mg_socket_close_owned(&t->sockets); }

static mg_socket_t *sock_new(uv_loop_t *loop) {
  mg_socket_t *s = mg_calloc(1, sizeof *s);
  mg_buf_init(&s->rbuf);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->handles = 1;
  return s;
}

/* ---- waiting and results ------------------------------------------------------------------------ */

static const char *err_text(int err) {
  switch (err) {
    case UV_ECONNREFUSED: return "connection refused";
    case UV_ECONNRESET: return "connection reset by peer";
    case UV_ETIMEDOUT: return "timeout";
    case UV_EOF: return "closed";
    case UV_ENOENT: return "no such file or directory";
    case UV_EPIPE: return "broken pipe";
    default: return uv_strerror(err);
  }
}

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

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static void attach(sock_box_t *b, mg_socket_t *s, mg_thread_t *t) {
  b->s = s;
  s->box = b;
  s->read_ms = b->read_ms;
  mg_lua_req_t *lr = t->req ? t->req->lua : NULL; /* a request's thread: attached */
  owner_link(s, lr ? &lr->sockets : &t->sockets);
}

static int l_tcp(lua_State *L) {
  sock_box_t *b = lua_newuserdata(L, sizeof *b);
  b->s = NULL;
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

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  mg_socket_t *s = h->data;
  (void)hint;
  mg_buf_reserve(&s->rbuf, s->rbuf.len + 16384);
  buf->base = s->rbuf.data + s->rbuf.len;
  buf->len = 16384;
}

static int try_satisfy(mg_socket_t *s, lua_State *co);
static void update_reading(mg_socket_t *s);

static void on_sock_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  mg_socket_t *s = st->data;
  (void)buf;
  if (nread == 0 || s->closing) return;
  if (nread < 0) {
    s->eof = 1;
    if (nread != UV_EOF) s->read_err = (int)nread;
    uv_read_stop(st);
    s->reading = 0;
    if (s->pooled) {
      sock_close(s); /* an idle pooled connection that the peer closed */
      return;
    }
  } else {
    s->rbuf.len += (size_t)nread;
    if (s->pooled) {
      sock_close(s); /* bytes nobody asked for: the connection cannot be reused */
      return;
    }
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
  int want = !s->eof && (s->op == OP_RECEIVE || s->rbuf.len - s->roff < READ_CAP);
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
        if (s->until_size && n == 0) {
          /* Everything before the pattern was returned in pieces: the end of this part. */
          s->roff += s->plen;
          lua_pushnil(co);
          return 1;
        }
        if (s->until_size && n > (size_t)s->until_size) {
          consume(s, co, (size_t)s->until_size, 0);
          return 1;
        }
        consume(s, co, n, s->until_size ? 0 : s->plen);
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
  if (s->eof) {
    /* The peer closed (or failed) before the pattern was satisfied. */
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
  if (!s || !s->connected) return push_closed(L);
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
  if (lua_type(L, 2) == LUA_TNUMBER) {
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

/* The iterator receiveuntil returns: iter([size]). Upvalues: the box, the pattern. */
static int l_until_iter(lua_State *L) {
  sock_box_t *b = lua_touserdata(L, lua_upvalueindex(1));
  size_t plen;
  const char *pat = lua_tolstring(L, lua_upvalueindex(2), &plen);
  int size = (int)luaL_optinteger(L, 1, 0);
  lua_settop(L, 0);
  mg_socket_t *s = b->s;
  if (!s || !s->connected) return push_closed(L);
  if (!s->pattern || s->plen != plen || memcmp(s->pattern, pat, plen) != 0) {
    free(s->pattern);
    s->pattern = mg_malloc(plen);
    memcpy(s->pattern, pat, plen);
    s->plen = plen;
  }
  s->until_size = size > 0 ? size : 0;
  return do_receive(L, b, R_UNTIL, 0);
}

static int l_receiveuntil(lua_State *L) {
  check_box(L);
  size_t plen;
  luaL_checklstring(L, 2, &plen);
  if (plen == 0) return luaL_argerror(L, 2, "pattern is empty");
  lua_settop(L, 2);
  lua_pushcclosure(L, l_until_iter, 2);
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

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
  resolve_t *rs = (resolve_t *)r;
  mg_socket_t *s = rs->s;
  if (s && !s->closing) {
    s->wbuf = NULL;
    if (status < 0 || !res) {
      fail_op(s, "host not found", 1);
    } else {
      struct sockaddr_storage ss;
      memcpy(&ss, res->ai_addr, res->ai_addrlen);
      ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)rs->port);
      s->op = OP_CONNECT;
      int rc = start_connect(s, (struct sockaddr *)&ss);
      if (rc < 0) fail_op(s, err_text(rc), 1);
    }
  }
  if (res) uv_freeaddrinfo(res);
  free(rs);
}

static void resolve_cancel(mg_thread_t *t) {
  mg_socket_t *s = t->wait;
  resolve_t *rs = (resolve_t *)s->wbuf;
  if (rs) rs->s = NULL;
  s->wbuf = NULL;
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
  mg_thread_t *t = mg_thread_check(L, "connect");
  if (mg_explain) return mg_thread_explained(L);
  if (b->s) sock_close(b->s); /* connect on a connected cosocket closes the old connection */
  char key[128];
  if (unix_sock) snprintf(key, sizeof key, "%s", host);
  else snprintf(key, sizeof key, "%s:%d", host, port);
  mg_socket_t *s = pool_take(key);
  if (s) {
    s->reused++;
    attach(b, s, t);
    lua_pushinteger(L, 1);
    return 1;
  }
  uv_loop_t *loop = mg_thread_loop();
  s = sock_new(loop);
  snprintf(s->key, sizeof s->key, "%s", key);
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
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 || uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
    rc = start_connect(s, (struct sockaddr *)&ss);
    if (rc < 0) {
      sock_close(s);
      lua_pushnil(L);
      lua_pushstring(L, err_text(rc));
      return 2;
    }
    return wait_op(L, t, s, OP_CONNECT, b->connect_ms);
  }
  /* A name: resolved by libuv's thread pool, then connected. */
  resolve_t *rs = mg_calloc(1, sizeof *rs);
  rs->s = s, rs->port = port;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  rc = uv_getaddrinfo(loop, &rs->req, on_resolved, host, NULL, &hints);
  if (rc < 0) {
    free(rs);
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, "host not found");
    return 2;
  }
  s->wbuf = (char *)rs; /* while resolving, wbuf holds the resolver request */
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

/* sock:send(data) with a string or an array of strings → bytes sent or nil, err. */
static int l_send(lua_State *L) {
  sock_box_t *b = check_box(L);
  mg_socket_t *s = b->s;
  size_t len;
  const char *data;
  if (lua_istable(L, 2)) {
    luaL_Buffer lb;
    luaL_buffinit(L, &lb);
    for (int i = 1;; i++) {
      lua_rawgeti(L, 2, i);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        break;
      }
      if (!lua_isstring(L, -1)) return luaL_argerror(L, 2, "array of strings expected");
      luaL_addvalue(&lb);
    }
    luaL_pushresult(&lb);
    data = lua_tolstring(L, -1, &len);
  } else {
    data = luaL_checklstring(L, 2, &len);
  }
  if (!s || !s->connected) return push_closed(L);
  if (s->op != OP_NONE) return luaL_error(L, "socket busy with another operation");
  /* Most sends fit in the socket buffer: no wait at all. */
  uv_buf_t ub = uv_buf_init((char *)data, (unsigned)len);
  int n = len ? uv_try_write(&s->h.stream, &ub, 1) : 0;
  if (n == (int)len) {
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
  }
  if (n < 0 && n != UV_EAGAIN) {
    sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, err_text(n));
    return 2;
  }
  if (n < 0) n = 0;
  mg_thread_t *t = mg_thread_check(L, "send");
  if (mg_explain) return mg_thread_explained(L);
  s->wlen = len;
  s->wbuf = mg_malloc(len - (size_t)n);
  memcpy(s->wbuf, data + n, len - (size_t)n);
  ub = uv_buf_init(s->wbuf, (unsigned)(len - (size_t)n));
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

/* ---- the rest -------------------------------------------------------------------------------------- */

/* A timeout in ms: 0 is the default (never "no timeout", which would hold the descriptor for
 * good), NaN, infinities and negative numbers are refused, huge ones capped. */
static uint64_t check_ms(lua_State *L, int idx) {
  uint64_t ms;
  if (mg_lua_timeout_ms(luaL_checknumber(L, idx), 1, default_ms, &ms) < 0)
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
  if (!b->s) return push_closed(L);
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
  int size = lua_isnoneornil(L, 3) ? DEFAULT_POOL_SIZE : (int)luaL_checkinteger(L, 3);
  if (size < 1) return luaL_argerror(L, 3, "pool size must be positive");
  if (!s || !s->connected) return push_closed(L);
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
  owner_unlink(s);
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
  if (!b->s) return push_closed(L);
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
        {"getreusedtimes", l_getreusedtimes}, {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_tcp);
  lua_setfield(L, -2, "tcp");
  lua_setfield(L, -2, "socket");
}
