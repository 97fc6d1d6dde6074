/* explain: `moongate --explain "METHOD /path?query" [--header "Name: value"]... [--json]`
 * (docs/lua-api.md, "Testing a policy: `moongate --explain`").
 *
 * The request runs through the real code: explain makes a worker's loop and Lua state from the
 * configuration (without init_worker hooks, timers or health checks), opens a socketpair, hands
 * one end to http/conn.c as an HTTP/1.1 client connection and writes the request into the other. Parsing,
 * normalization, limits, routing and the rewrite/access/balancer hooks are the ones that serve;
 * mg_explain (request.h) makes them report what happens: each hook with what it changed
 * (lua/_explain.lua compares the request before and after), internal restarts, the member the
 * balancer picks, and the SCGI variables built for the backend, which is never contacted
 * (waiting Lua calls return nil, "explain"). When no backend would be reached -- a hook or a
 * limit answers, no route matches -- the response read back from the socketpair is the answer.
 *
 * Returns the exit status: 0 explained, 1 the request could not be made or did not finish. */
#include "explain.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "phase.h"
#include "route_re.h"
#include "balancer.h"
#include "buf.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "loop.h"
#include "lua_request.h"
#include "lua_worker.h"
#include "lua_vm.h"

typedef struct {
  lua_State *L;
  int module;          /* registry reference of the _explain module */
  int reached_handler; /* the backend or another handler was reported: the response is ours */
  int done, failed;
  llhttp_t parser;
  llhttp_settings_t settings;
  mg_buf_t field, value;
  int in_value;
  uv_poll_t poll;
  uv_timer_t timer;
  int fd; /* the client's end */
  mg_buf_t out; /* the request, written as the connection takes it */
  size_t out_off;
  mg_server_t server;
} explain_t;

static explain_t X;

/* Calls _explain[name] with the nargs values on the stack. */
static void call(const char *name, int nargs) {
  lua_State *L = X.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, X.module); /* args module */
  lua_getfield(L, -1, name);                  /* args module fn */
  lua_remove(L, -2);
  lua_insert(L, -1 - nargs); /* fn args */
  char err[2048];
  if (mg_lua_call(L, nargs, 0, err, sizeof err) < 0) fprintf(stderr, "moongate --explain: %s\n", err);
}

static void push_route(mg_req_t *req);

static void on_hook_begin(mg_req_t *req, int phase, int ref) {
  lua_State *L = X.L;
  lua_pushstring(L, mg_phase_name(phase));
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  mg_lua_push_req(L, req);
  if (req->route) push_route(req); /* access and balancer hooks run on a matched route */
  else lua_pushnil(L);
  call("hook_begin", 4);
}

static void on_hook_end(mg_req_t *req, const char *error) {
  lua_State *L = X.L;
  mg_lua_push_req(L, req);
  if (error) lua_pushstring(L, error);
  else lua_pushnil(L);
  call("hook_end", 2);
}

static void on_restart(mg_req_t *req, const char *location) {
  (void)req;
  lua_pushstring(X.L, location);
  call("restart", 1);
}

/* Pushes { match, host, target, handler, decl } of the request's route. */
static void push_route(mg_req_t *req) {
  lua_State *L = X.L;
  const mg_route_t *r = req->route;
  lua_createtable(L, 0, 6);
  lua_pushfstring(L, "%s%s", r->exact ? "=" : !r->re ? "" : r->caseless ? "~*" : "~", r->match);
  lua_setfield(L, -2, "match");
  if (r->host) {
    lua_pushstring(L, r->host);
    lua_setfield(L, -2, "host");
  }
  long ov[2 * MG_ROUTE_RE_MAX_PAIRS];
  int n = r->re ? mg_route_re_match(r, req->path, req->path_len, ov, MG_ROUTE_RE_MAX_PAIRS) : 0;
  if (n > 0) { /* captures: { "$0=/api/v2/", "$1=2", ... } */
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
      if (ov[2 * i] >= 0) lua_pushfstring(L, "$%d=%s", i, mg_pool_strndup(&req->pool, req->path + ov[2 * i], (size_t)(ov[2 * i + 1] - ov[2 * i])));
      else lua_pushfstring(L, "$%d=false", i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "captures");
  }
  char target[300];
  switch (r->kind) {
    case MG_TARGET_SCGI: {
      char a[256];
      mg_addr_format(&r->addr, a, sizeof a);
      snprintf(target, sizeof target, "%s%s", r->addr.sa.ss_family == AF_UNIX ? "" : "scgi://", a);
      break;
    }
    case MG_TARGET_BALANCER: snprintf(target, sizeof target, "balancer://%s/", r->balancer->name); break;
    case MG_TARGET_STATIC: snprintf(target, sizeof target, "{ root = \"%s\" }", r->root); break;
    default: snprintf(target, sizeof target, "%s", r->handler->name); break;
  }
  lua_pushstring(L, target);
  lua_setfield(L, -2, "target");
  lua_pushstring(L, r->handler->name);
  lua_setfield(L, -2, "handler");
  if (r->decl) {
    lua_pushstring(L, r->decl);
    lua_setfield(L, -2, "decl");
  }
}

static int on_handler(mg_req_t *req) {
  if (req->route->kind == MG_TARGET_SCGI || req->route->kind == MG_TARGET_BALANCER) return 0;
  X.reached_handler = 1;
  push_route(req);
  call("handler", 1);
  req->keepalive = 0;
  mg_req_respond(req, 204, NULL, "", 0);
  return 1;
}

static void on_backend(mg_req_t *req, const void *member, const mg_vars_t *vars) {
  lua_State *L = X.L;
  X.reached_handler = 1;
  push_route(req);
  const mg_member_t *m = member;
  if (m) {
    const mg_balancer_t *b = req->route->balancer;
    lua_createtable(L, 0, 5);
    char a[256];
    mg_addr_format(&m->addr, a, sizeof a);
    lua_pushfstring(L, "%s%s", m->addr.sa.ss_family == AF_UNIX ? "" : "scgi://", a);
    lua_setfield(L, -2, "url");
    lua_pushinteger(L, m->index);
    lua_setfield(L, -2, "index");
    lua_pushinteger(L, m->lbfactor);
    lua_setfield(L, -2, "lbfactor");
    if (m->route) {
      lua_pushstring(L, m->route);
      lua_setfield(L, -2, "route");
    }
    const char *route = NULL;
    size_t rl = mg_balancer_sticky_route(b, mg_fields_join(&req->pool, &req->headers, "Cookie", "; "), req->query, &route);
    if (rl && m->route && strlen(m->route) == rl && memcmp(m->route, route, rl) == 0) {
      lua_pushstring(L, b->stickysession);
      lua_setfield(L, -2, "sticky");
    }
  } else {
    lua_pushnil(L);
  }
  lua_createtable(L, vars->n, 0);
  for (int i = 0; i < vars->n; i++) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, vars->v[i].name, vars->v[i].name_len);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, vars->v[i].value, vars->v[i].value_len);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, i + 1);
  }
  call("backend", 3);
}

static const mg_explain_t explain_hooks = {on_hook_begin, on_hook_end, on_restart, on_handler, on_backend};

/* ---- the client's end: the response, parsed with llhttp ----------------------------------------- */

static void finish(int failed) {
  if (X.done) return;
  X.done = 1, X.failed = failed;
  uv_poll_stop(&X.poll);
  uv_timer_stop(&X.timer);
  uv_stop(X.server.loop);
}

static void flush_field(void) {
  if (!X.in_value) return;
  lua_State *L = X.L;
  lua_pushlstring(L, X.field.data, X.field.len);
  lua_pushlstring(L, X.value.data, X.value.len);
  call("response_header", 2);
  X.field.len = X.value.len = 0;
  X.in_value = 0;
}

static int on_status_code(llhttp_t *p) {
  lua_pushinteger(X.L, p->status_code);
  call("response_status", 1);
  return 0;
}

static int on_hfield(llhttp_t *p, const char *at, size_t len) {
  (void)p;
  flush_field();
  mg_buf_append(&X.field, at, len);
  return 0;
}

static int on_hvalue(llhttp_t *p, const char *at, size_t len) {
  (void)p;
  X.in_value = 1;
  mg_buf_append(&X.value, at, len);
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  (void)p;
  flush_field();
  return 0;
}

static int on_rbody(llhttp_t *p, const char *at, size_t len) {
  (void)p;
  lua_pushlstring(X.L, at, len);
  call("response_body", 1);
  return 0;
}

static int on_rmessage_complete(llhttp_t *p) {
  (void)p;
  finish(0);
  return HPE_PAUSED;
}

/* Writes what the connection takes of the request. A request larger than the socket's buffer
 * goes out as the gateway reads it; one the gateway refuses before reading it all (431, 413)
 * ends with EPIPE, and its answer is read as any other. */
static void on_io(uv_poll_t *h, int status, int events);

static void write_request(void) {
  while (X.out_off < X.out.len) {
    ssize_t n = write(X.fd, X.out.data + X.out_off, X.out.len - X.out_off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0) break;
    X.out_off += (size_t)n;
  }
  X.out_off = X.out.len;
  uv_poll_start(&X.poll, UV_READABLE, on_io);
}

static void on_io(uv_poll_t *h, int status, int events) {
  (void)h;
  if (status >= 0 && (events & UV_WRITABLE)) write_request();
  if (status >= 0 && !(events & UV_READABLE)) return;
  char buf[16384];
  ssize_t n = status < 0 ? -1 : read(X.fd, buf, sizeof buf);
  if (n <= 0) {
    /* A close-delimited body ends here; otherwise the response was cut. */
    finish(llhttp_finish(&X.parser) != HPE_OK);
    return;
  }
  llhttp_errno_t e = llhttp_execute(&X.parser, buf, (size_t)n);
  if (e != HPE_OK && e != HPE_PAUSED) finish(1);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "moongate --explain: the request did not finish within 10 s (a hook that never returns?)\n");
  finish(1);
}

static void on_closed(uv_handle_t *h) { (void)h; }

/* ---- running it ------------------------------------------------------------------------------------ */

int mg_explain_run(mg_config_t *cfg, const char *request_line, const char *const *headers, int nheaders, int json) {
  char method[32];
  const char *sp = strchr(request_line, ' ');
  const char *target = sp ? sp + strspn(sp, " ") : NULL;
  size_t ml = sp ? (size_t)(sp - request_line) : 0, tl = target ? strcspn(target, " ") : 0;
  if (!sp || ml == 0 || ml >= sizeof method || tl == 0 || target[tl + strspn(target + tl, " ")] != 0) {
    fprintf(stderr, "moongate --explain: expected \"METHOD /path?query\", got \"%.200s\"\n", request_line);
    return 1;
  }
  memcpy(method, request_line, ml);
  method[ml] = 0;
  mg_buf_t req;
  mg_buf_init(&req);
  mg_buf_printf(&req, "%s %.*s HTTP/1.1\r\n", method, (int)tl, target);
  int has_host = 0;
  for (int i = 0; i < nheaders; i++) {
    const char *colon = strchr(headers[i], ':');
    if (!colon || colon == headers[i] || strpbrk(headers[i], "\r\n")) {
      fprintf(stderr, "moongate --explain: --header takes \"Name: value\", not \"%s\"\n", headers[i]);
      mg_buf_free(&req);
      return 1;
    }
    if ((size_t)(colon - headers[i]) == 4 && strncasecmp(headers[i], "host", 4) == 0) has_host = 1;
    mg_buf_printf(&req, "%s\r\n", headers[i]);
  }
  if (!has_host) mg_buf_printf(&req, "Host: %s\r\n", cfg->set.server_name ? cfg->set.server_name : "localhost");
  mg_buf_puts(&req, "\r\n");

  /* As in a worker: a client end closed early is an EPIPE, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  memset(&X, 0, sizeof X);
  X.L = cfg->L;
  mg_buf_init(&X.field);
  mg_buf_init(&X.value);
  lua_State *L = X.L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "_explain");
  char err[2048];
  if (mg_lua_call(L, 1, 1, err, sizeof err) < 0) {
    fprintf(stderr, "moongate --explain: %s\n", err);
    mg_buf_free(&req);
    return 1;
  }
  X.module = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushstring(L, method);
  lua_pushlstring(L, target, tl);
  call("start", 2);

  /* A server with one listener that stands for the configuration's first: SERVER_ADDR and
   * SERVER_PORT are the ones a client of that listener would see. */
  mg_server_t *s = &X.server;
  s->loop = uv_default_loop();
  s->cfg = cfg;
  mg_listener_t listener;
  memset(&listener, 0, sizeof listener);
  listener.server = s;
  if (cfg->nlistens > 0 && !cfg->listens[0].unix_socket) {
    const char *host = cfg->listens[0].host;
    snprintf(listener.addr, sizeof listener.addr, "%s",
             strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ? "127.0.0.1" : host);
    listener.port = cfg->listens[0].port;
  }
  s->listeners = &listener;
  s->nlisteners = 1;
  mg_lua_worker_prepare(cfg, s->loop);
  mg_explain = &explain_hooks;

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    perror("moongate --explain: socketpair");
    mg_buf_free(&req);
    return 1;
  }
  X.fd = sv[1];
  mg_conn_t *c = mg_conn_new(s, 1);
  mg_server_conn_opened(s);
  if (uv_pipe_open((uv_pipe_t *)mg_conn_stream(c), sv[0]) < 0) {
    fprintf(stderr, "moongate --explain: cannot open the connection\n");
    return 1;
  }
  mg_conn_set_listener(c, 0);
  mg_conn_set_peer(c, "127.0.0.1", 0);
  /* The request is written in plain text: a TLS first listener is explained without TLS (its
   * context is put back before the configuration is freed). */
  struct mg_tls_ctx_s *tls = cfg->nlistens > 0 ? cfg->listens[0].tls : NULL;
  if (tls) cfg->listens[0].tls = NULL;
  mg_conn_start(c, &mg_h1_proto, NULL);
  if (tls) cfg->listens[0].tls = tls;
  fcntl(X.fd, F_SETFL, fcntl(X.fd, F_GETFL) | O_NONBLOCK);
  X.out = req;
  X.out_off = 0;

  llhttp_settings_init(&X.settings);
  X.settings.on_status_complete = on_status_code;
  X.settings.on_header_field = on_hfield;
  X.settings.on_header_value = on_hvalue;
  X.settings.on_headers_complete = on_headers_complete;
  X.settings.on_body = on_rbody;
  X.settings.on_message_complete = on_rmessage_complete;
  llhttp_init(&X.parser, HTTP_RESPONSE, &X.settings);
  uv_poll_init(s->loop, &X.poll, X.fd);
  uv_poll_start(&X.poll, UV_READABLE | UV_WRITABLE, on_io);
  uv_timer_init(s->loop, &X.timer);
  uv_timer_start(&X.timer, on_deadline, 10000, 0);
  uv_run(s->loop, UV_RUN_DEFAULT);

  /* Close the client's end: the connection sees the end of its stream and closes. */
  uv_close((uv_handle_t *)&X.poll, on_closed);
  uv_close((uv_handle_t *)&X.timer, on_closed);
  close(X.fd);
  if (s->nconns > 0) mg_conn_close(c);
  uv_run(s->loop, UV_RUN_NOWAIT);
  uv_run(s->loop, UV_RUN_NOWAIT);

  int rc = X.failed ? 1 : 0;
  if (!X.failed) {
    lua_pushboolean(L, json);
    lua_pushboolean(L, !X.reached_handler);
    lua_rawgeti(L, LUA_REGISTRYINDEX, X.module);
    lua_getfield(L, -1, "output");
    lua_remove(L, -2);
    lua_insert(L, -3);
    if (mg_lua_call(L, 2, 1, err, sizeof err) < 0) {
      fprintf(stderr, "moongate --explain: %s\n", err);
      rc = 1;
    } else {
      size_t n;
      const char *out = lua_tolstring(L, -1, &n);
      fwrite(out, 1, n, stdout);
      lua_pop(L, 1);
    }
  }
  mg_explain = NULL;
  mg_buf_free(&X.field);
  mg_buf_free(&X.value);
  mg_buf_free(&X.out);
  luaL_unref(L, LUA_REGISTRYINDEX, X.module);
  return rc;
}
