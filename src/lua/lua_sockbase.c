/* lua_sockbase: see lua_sockbase.h. */
#include "lua_sockbase.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <math.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_DEPTH 100

uint64_t mg_socket_default_ms = 60000;

void mg_socket_set_default_timeout(uint64_t ms) { mg_socket_default_ms = ms; }

void mg_owned_link(mg_owned_t *o, void **list) {
  mg_owned_t **head = (mg_owned_t **)list;
  o->next = *head;
  if (*head) (*head)->prev = &o->next;
  *head = o;
  o->prev = head;
}

void mg_owned_unlink(mg_owned_t *o) {
  if (!o->prev) return;
  *o->prev = o->next;
  if (o->next) o->next->prev = o->prev;
  o->next = NULL, o->prev = NULL;
}

void mg_socket_close_owned(void **list) {
  mg_owned_t *o;
  while ((o = *(mg_owned_t **)list)) {
    o->close(o);
    mg_owned_unlink(o); /* in case close left it linked: the loop must end */
  }
}

socklen_t mg_sock_literal(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return sizeof(struct sockaddr_in);
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return sizeof(struct sockaddr_in6);
  return 0;
}

struct mg_sock_resolve_s {
  uv_getaddrinfo_t req;
  mg_sock_resolved_fn fn;
  void *owner; /* NULL once the owner gave up */
  int port;
};

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
  mg_sock_resolve_t *rs = (mg_sock_resolve_t *)r;
  void *owner = rs->owner;
  rs->owner = NULL;
  if (owner) {
    if (status < 0 || !res || res->ai_addrlen > sizeof(struct sockaddr_storage)) {
      rs->fn(owner, NULL, 0);
    } else {
      struct sockaddr_storage ss;
      memcpy(&ss, res->ai_addr, res->ai_addrlen);
      ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)rs->port); /* the same place in v6 */
      rs->fn(owner, (struct sockaddr *)&ss, (socklen_t)res->ai_addrlen);
    }
  }
  if (res) uv_freeaddrinfo(res);
  free(rs);
}

mg_sock_resolve_t *mg_sock_resolve(uv_loop_t *loop, const char *host, int port, int socktype, mg_sock_resolved_fn fn,
                                   void *owner) {
  mg_sock_resolve_t *rs = mg_calloc(1, sizeof *rs);
  rs->fn = fn, rs->owner = owner, rs->port = port;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = socktype};
  if (uv_getaddrinfo(loop, &rs->req, on_resolved, host, NULL, &hints) < 0) {
    free(rs);
    return NULL;
  }
  return rs;
}

void mg_sock_resolve_cancel(mg_sock_resolve_t *r) {
  if (r) r->owner = NULL; /* on_resolved frees it */
}

int mg_sock_fail(lua_State *L, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* A number as lua-nginx-module writes it (ngx_http_lua_write_num). */
static void add_num(lua_State *L, int idx, mg_buf_t *out) {
  double n = lua_tonumber(L, idx);
  char tmp[64];
  int len = n == (double)(int32_t)n ? snprintf(tmp, sizeof tmp, "%d", (int)(int32_t)n) : snprintf(tmp, sizeof tmp, "%.14g", n);
  mg_buf_append(out, tmp, (size_t)len);
}

/* An array at the top of the stack, strict: strings, numbers and arrays only. With out NULL,
 * only checks (raising for a bad value), so that nothing allocated leaks when it raises. */
static void add_table(lua_State *L, int arg, mg_buf_t *out, int depth) {
  int t = lua_gettop(L), max = 0;
  /* A table inside itself would recurse without end (lua-nginx-module overflows its C stack). */
  if (depth > MAX_DEPTH) luaL_argerror(L, arg, "tables nested too deeply (a table inside itself?)");
  luaL_checkstack(L, 4, NULL);
  lua_pushnil(L); /* stack: table key */
  while (lua_next(L, t)) {
    double k;
    if (lua_type(L, -2) != LUA_TNUMBER || (k = lua_tonumber(L, -2)) < 1 || floor(k) != k) {
      luaL_argerror(L, arg, "non-array table found");
      return;
    }
    if (k > max) max = (int)k;
    lua_pop(L, 1);
  }
  for (int i = 1; i <= max; i++) {
    lua_rawgeti(L, t, i); /* stack: table value */
    int type = lua_type(L, -1);
    if (type == LUA_TNUMBER) {
      if (out) add_num(L, -1, out);
    } else if (type == LUA_TSTRING) {
      if (!out) {
        lua_pop(L, 1);
        continue;
      }
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      mg_buf_append(out, s, len);
    } else if (type == LUA_TTABLE) {
      add_table(L, arg, out, depth + 1);
    } else {
      luaL_argerror(L, arg, lua_pushfstring(L, "bad data type %s found", lua_typename(L, type)));
      return;
    }
    lua_pop(L, 1);
  }
}

void mg_socket_data(lua_State *L, int idx, mg_buf_t *out) {
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER: add_num(L, idx, out); break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      mg_buf_append(out, s, len);
      break;
    }
    case LUA_TTABLE:
      lua_pushvalue(L, idx);
      add_table(L, idx, NULL, 0);
      add_table(L, idx, out, 0);
      lua_pop(L, 1);
      break;
    case LUA_TNIL: mg_buf_append(out, "nil", 3); break;
    case LUA_TBOOLEAN: mg_buf_puts(out, lua_toboolean(L, idx) ? "true" : "false"); break;
    default:
      luaL_argerror(L, idx, lua_pushfstring(L, "string, number, boolean, nil, or array table expected, got %s", luaL_typename(L, idx)));
  }
}

const char *mg_socket_err_text(int err) {
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

static int refused(lua_State *L) {
  return luaL_error(L, "%s is not supported by moongate", lua_tostring(L, lua_upvalueindex(1)));
}

void mg_sock_refuse(lua_State *L, const char *kind, const char *const *names) {
  for (; *names; names++) {
    lua_pushfstring(L, "%s:%s", kind, *names);
    lua_pushcclosure(L, refused, 1);
    lua_setfield(L, -2, *names);
  }
}
