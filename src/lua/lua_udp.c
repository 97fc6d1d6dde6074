/* lua_udp: see lua_udp.h.
 *
 * A connected datagram socket (UDP or a unix datagram socket, which libuv's uv_udp_t cannot
 * be) driven with plain send/recv and a uv_poll_t that waits for it to become readable. As in
 * lua_socket.c the C state (udp_t) is apart from the Lua userdata (a box pointing at it): the
 * state is freed in its handles' close callbacks, and a box whose state is gone answers
 * nil, "closed". udp_close() is idempotent and the only way a socket ends. */
#include "lua_udp.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "lua_request.h"
#include "lua_sockbase.h"
#include "lua_thread.h"
#include "lua_vm.h"
#include "timeq.h"

#define UDP_MT "moongate.udp"
#define MAX_DATAGRAM 65536

enum { OP_NONE, OP_RESOLVE, OP_RECEIVE };

typedef struct udp_s udp_t;

typedef struct {
  udp_t *u;
  uint64_t read_ms; /* kept here: it outlives one peer */
} udp_box_t;

struct udp_s {
  mg_owned_t own; /* first: the owner's list holds this */
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  int handles;
  unsigned poll_inited : 1, closing : 1;
  int op;
  mg_thread_t *waiter;
  size_t rsize;      /* the pending receive's size */
  mg_sock_resolve_t *rs; /* the name being resolved */
  udp_box_t *box;
};

/* Datagrams are read here and copied into the Lua string at once. */
static char dgram[MAX_DATAGRAM];

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void on_udp_closed(uv_handle_t *h) {
  udp_t *u = h->data;
  if (--u->handles > 0) return;
  if (u->fd >= 0) close(u->fd);
  free(u);
}

static void udp_close(udp_t *u) {
  if (u->closing) return;
  u->closing = 1;
  mg_sock_resolve_cancel(u->rs), u->rs = NULL; /* its callback frees it */
  mg_owned_unlink(&u->own);
  if (u->box) u->box->u = NULL, u->box = NULL;
  uv_close((uv_handle_t *)&u->timer, on_udp_closed);
  if (u->poll_inited) uv_close((uv_handle_t *)&u->poll, on_udp_closed);
}

/* The owner ends: the socket closes without resuming anyone. */
static void on_owner_gone(mg_owned_t *o) {
  udp_t *u = (udp_t *)o;
  u->waiter = NULL;
  udp_close(u);
}

/* ---- waiting -------------------------------------------------------------------------------- */

static void finish_op(udp_t *u, int nres) {
  mg_thread_t *t = u->waiter;
  u->waiter = NULL;
  u->op = OP_NONE;
  if (!u->closing) {
    uv_timer_stop(&u->timer);
    if (u->poll_inited) uv_poll_stop(&u->poll);
  }
  if (t) mg_thread_resume(t, nres);
}

/* The system's text of an errno, lower-case, as lua-nginx-module gives it (for LuaSocket). */
static void push_errno(lua_State *L, int err) {
  char buf[128];
  const char *msg = strerror(err);
  size_t n = strlen(msg);
  if (n >= sizeof buf) n = sizeof buf - 1;
  for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)msg[i]);
  lua_pushnil(L);
  lua_pushlstring(L, buf, n);
}

static void op_cancel(mg_thread_t *t) {
  udp_t *u = t->wait;
  u->waiter = NULL;
  mg_sock_resolve_cancel(u->rs), u->rs = NULL;
  u->op = OP_NONE;
  if (!u->closing) {
    uv_timer_stop(&u->timer);
    if (u->poll_inited) uv_poll_stop(&u->poll);
  }
}

static void on_udp_timeout(uv_timer_t *tm) {
  udp_t *u = tm->data;
  mg_thread_t *t = u->waiter;
  if (!t) return;
  mg_sock_resolve_cancel(u->rs), u->rs = NULL;
  lua_pushnil(t->co);
  lua_pushliteral(t->co, "timeout");
  finish_op(u, 2);
}

static int wait_op(lua_State *L, mg_thread_t *t, udp_t *u, int op, uint64_t ms) {
  u->op = op;
  u->waiter = t;
  if (ms) mg_timer_start(&u->timer, on_udp_timeout, ms, 0);
  return mg_thread_wait(L, t, op_cancel, u);
}

/* ---- the box -------------------------------------------------------------------------------- */

static udp_box_t *check_box(lua_State *L) { return luaL_checkudata(L, 1, UDP_MT); }

static int l_udp(lua_State *L) {
  if (lua_gettop(L) != 0) return luaL_error(L, "expecting zero arguments, but got %d", lua_gettop(L));
  udp_box_t *b = lua_newuserdata(L, sizeof *b);
  b->u = NULL;
  b->read_ms = mg_socket_default_ms;
  luaL_getmetatable(L, UDP_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_gc(lua_State *L) {
  udp_box_t *b = lua_touserdata(L, 1);
  if (b->u) udp_close(b->u);
  return 0;
}

/* ---- setpeername ---------------------------------------------------------------------------- */

/* A socket connected to sa: 0, or -errno (u->fd is set unless socket() itself failed). */
static int open_fd(udp_t *u, const struct sockaddr *sa, socklen_t len) {
  int fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (sa->sa_family == AF_UNIX) {
    /* Autobind (as lua-nginx-module does), so that the peer has an address to answer to. */
    sa_family_t fam = AF_UNIX;
    if (bind(fd, (struct sockaddr *)&fam, sizeof fam) != 0) {
      int e = errno;
      close(fd);
      return -e;
    }
  }
  /* A failed connect keeps the socket, unconnected, as lua-nginx-module's does: a send then
   * says "transport endpoint is not connected". */
  u->fd = fd;
  return connect(fd, sa, len) != 0 ? -errno : 0;
}

/* Only a waiting socket resolves: closing, timing out and a killed thread cancel the request. */
static void on_resolved(void *owner, const struct sockaddr *sa, socklen_t len) {
  udp_t *u = owner;
  lua_State *co = u->waiter->co;
  u->rs = NULL;
  int rc = -1;
  if (!sa) {
    mg_sock_fail(co, "host not found");
  } else {
    rc = open_fd(u, sa, len);
    if (rc < 0) push_errno(co, -rc);
    else lua_pushinteger(co, 1);
  }
  finish_op(u, rc < 0 ? 2 : 1);
}

/* sock:setpeername(host, port) or sock:setpeername("unix:/path") → 1 or nil, err. */
static int l_setpeername(lua_State *L) {
  int n = lua_gettop(L);
  if (n != 2 && n != 3)
    return luaL_error(L, "ngx.socket.udp setpeername: expecting 2 or 3 arguments (including the object), but seen %d", n);
  udp_box_t *b = check_box(L);
  const char *host = luaL_checkstring(L, 2);
  lua_Integer port = n == 3 ? luaL_checkinteger(L, 3) : 0;
  mg_thread_t *t = mg_thread_check(L, "setpeername");
  if (mg_explain) return mg_thread_explained(L);
  if (port < 0 || port > 65535) {
    lua_pushnil(L);
    lua_pushfstring(L, "bad port number: %d", (int)port);
    return 2;
  }
  if (b->u) {
    if (b->u->op != OP_NONE) return mg_sock_fail(L, "socket busy");
    udp_close(b->u); /* a new peer: a new socket */
  }
  udp_t *u = mg_calloc(1, sizeof *u);
  u->fd = -1;
  u->own.close = on_owner_gone;
  uv_timer_init(mg_thread_loop(), &u->timer);
  u->timer.data = u;
  u->handles = 1;
  b->u = u, u->box = b;
  mg_lua_req_t *lr = t->req ? t->req->lua : NULL;
  mg_owned_link(&u->own, lr ? &lr->sockets : &t->sockets);

  struct sockaddr_storage ss;
  socklen_t len = 0;
  memset(&ss, 0, sizeof ss);
  if (strncmp(host, "unix:", 5) == 0) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    if (strlen(host + 5) >= sizeof sun->sun_path) {
      lua_pushnil(L);
      lua_pushfstring(L, "failed to parse host name \"%s\": path too long", host);
      return 2;
    }
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, host + 5);
    len = sizeof *sun;
  } else {
    len = mg_sock_literal(host, (int)port, &ss);
  }
  if (len) {
    int rc = open_fd(u, (struct sockaddr *)&ss, len);
    if (rc < 0) {
      push_errno(L, -rc);
      return 2;
    }
    lua_pushinteger(L, 1);
    return 1;
  }
  /* A name: resolved by libuv's thread pool, as the TCP cosocket's. */
  if (!(u->rs = mg_sock_resolve(mg_thread_loop(), host, (int)port, SOCK_DGRAM, on_resolved, u)))
    return mg_sock_fail(L, "host not found");
  return wait_op(L, t, u, OP_RESOLVE, b->read_ms);
}

/* ---- send and receive ----------------------------------------------------------------------- */

/* sock:send(data) → 1 or nil, err: one datagram, never waited for. */
static int l_send(lua_State *L) {
  if (lua_gettop(L) != 2) return luaL_error(L, "expecting 2 arguments (including the object), but got %d", lua_gettop(L));
  udp_box_t *b = check_box(L);
  udp_t *u = b->u;
  if (!u || u->fd < 0) return mg_sock_fail(L, "closed");
  if (u->op != OP_NONE) return mg_sock_fail(L, "socket busy");
  mg_buf_t data;
  mg_buf_init(&data);
  mg_socket_data(L, 2, &data); /* raises before it allocates */
  ssize_t n = send(u->fd, data.data ? data.data : "", data.len, 0);
  int e = errno;
  size_t len = data.len;
  mg_buf_free(&data);
  if (n < 0) {
    push_errno(L, e);
    return 2;
  }
  if ((size_t)n != len) {
    lua_pushnil(L);
    lua_pushliteral(L, "partial write");
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}

/* One recv: pushes the datagram or the error and returns their count, 0 when none is there. */
static int try_recv(udp_t *u, lua_State *L) {
  ssize_t n = recv(u->fd, dgram, u->rsize, 0);
  if (n >= 0) {
    lua_pushlstring(L, dgram, (size_t)n);
    return 1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
  push_errno(L, errno);
  return 2;
}

static void on_readable(uv_poll_t *p, int status, int events) {
  udp_t *u = p->data;
  (void)events;
  if (u->closing || !u->waiter || u->op != OP_RECEIVE) return;
  lua_State *co = u->waiter->co;
  int n;
  if (status < 0) {
    lua_pushnil(co);
    lua_pushstring(co, mg_socket_err_text(status));
    n = 2;
  } else if ((n = try_recv(u, co)) == 0) {
    return; /* woken for nothing: wait on */
  }
  finish_op(u, n);
}

/* sock:receive([size]) → a datagram or nil, err. */
static int l_receive(lua_State *L) {
  int nargs = lua_gettop(L);
  if (nargs != 1 && nargs != 2) return luaL_error(L, "expecting 1 or 2 arguments (including the object), but got %d", nargs);
  udp_box_t *b = check_box(L);
  lua_Number size = luaL_optnumber(L, 2, MAX_DATAGRAM);
  udp_t *u = b->u;
  if (!u || u->fd < 0) return mg_sock_fail(L, "closed");
  if (u->op != OP_NONE) return mg_sock_fail(L, "socket busy");
  u->rsize = !(size > 0) ? 0 : size > MAX_DATAGRAM ? MAX_DATAGRAM : (size_t)size;
  int n = try_recv(u, L);
  if (n > 0) return n;
  mg_thread_t *t = mg_thread_check(L, "receive");
  if (mg_explain) return mg_thread_explained(L);
  if (!u->poll_inited) {
    uv_poll_init(mg_thread_loop(), &u->poll, u->fd);
    u->poll.data = u;
    u->poll_inited = 1, u->handles++;
  }
  uv_poll_start(&u->poll, UV_READABLE, on_readable);
  return wait_op(L, t, u, OP_RECEIVE, b->read_ms);
}

/* sock:settimeout(ms): receive's (and a name's resolving). As lua-nginx-module's UDP cosocket,
 * 0, a negative number or NaN is the default (lua_socket_timeout); a huge one is capped. */
static int l_settimeout(lua_State *L) {
  if (lua_gettop(L) != 2)
    return luaL_error(L, "ngx.socket settimeout: expecting at least 2 arguments (including the object) but seen %d", lua_gettop(L));
  udp_box_t *b = check_box(L);
  lua_Number ms = luaL_checknumber(L, 2);
  b->read_ms = !(ms >= 1) ? mg_socket_default_ms : ms > MG_LUA_MAX_TIMEOUT_MS ? (uint64_t)MG_LUA_MAX_TIMEOUT_MS : (uint64_t)ms;
  return 0;
}

static int l_close(lua_State *L) {
  if (lua_gettop(L) != 1) return luaL_error(L, "expecting 1 argument (including the object) but seen %d", lua_gettop(L));
  udp_box_t *b = check_box(L);
  if (!b->u || b->u->fd < 0) return mg_sock_fail(L, "closed");
  if (b->u->op != OP_NONE) return mg_sock_fail(L, "socket busy");
  udp_close(b->u);
  lua_pushinteger(L, 1);
  return 1;
}

void mg_udp_open(lua_State *L) {
  if (luaL_newmetatable(L, UDP_MT)) {
    static const luaL_Reg methods[] = {
        {"setpeername", l_setpeername}, {"send", l_send},   {"receive", l_receive},
        {"settimeout", l_settimeout},   {"close", l_close}, {NULL, NULL},
    };
    static const char *const refused[] = {"bind", NULL};
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    mg_sock_refuse(L, "udpsock", refused);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_udp);
  lua_setfield(L, -2, "udp");
}
