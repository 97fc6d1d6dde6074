/* lua_body: see lua_body.h.
 *
 * The read takes over the request's body callbacks (req->on_body) for as long as it lasts:
 * a body already being streamed to a backend cannot be read, and a body that went by (an
 * internal redirect, a request without one) reads as empty. A read over client_max_body_size
 * answers 413 and the waiting thread is abandoned with the request. */
#include "lua_body.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "timeq.h"

static uint64_t body_limit(const mg_req_t *req) {
  return req->route ? req->route->client_max_body_size : req->cfg->set.client_max_body_size;
}

static void on_body_collect(mg_req_t *req, const char *data, size_t len) {
  uint64_t limit = body_limit(req);
  if (req->body_reading == 0) return;
  if (limit && req->body.len + len > limit) {
    req->body_reading = 0;
    req->keepalive = 0;
    mg_req_error(req, 413, "request body exceeds client_max_body_size %llu (req:read_body)", (unsigned long long)limit);
    return;
  }
  int rc = mg_body_add(&req->body, data, len);
  if (rc < 0) {
    req->body_reading = 0;
    mg_req_error(req, 500, "spooling the request body failed: %s", strerror(-rc));
  }
}

static void on_body_collected(mg_req_t *req) {
  req->on_body = NULL, req->on_body_end = NULL;
  if (!req->body_reading) return;
  req->body_reading = 0;
  req->body_ready = 1;
  mg_lua_req_t *lr = req->lua;
  mg_thread_t *t = lr->body_waiter;
  lr->body_waiter = NULL;
  if (t) mg_thread_wake(t, 0); /* inside the parser: the thread runs on the next turn */
}

/* The first parse of the body, on the next loop turn: the thread is then suspended, so that a
 * parse that ends the request (a malformed chunk: 400) abandons it as any wait is abandoned,
 * rather than freeing the request under the running call. The kick holds the request (not
 * the thread, which the body may wake and which may be gone by then). */
typedef struct {
  uv_timer_t timer;
  mg_req_t *req;
} kick_t;

static void on_kick_closed(uv_handle_t *h) { free(h->data); }

static void on_kick(uv_timer_t *tm) {
  kick_t *k = tm->data;
  mg_req_t *req = k->req;
  uv_close((uv_handle_t *)tm, on_kick_closed);
  if (!req->finished) mg_req_read_body(req); /* may read all of it at once, or end the request */
  mg_req_unhold(req);
}

static void read_body_cancel(mg_thread_t *t) {
  if (t->req) ((mg_lua_req_t *)t->req->lua)->body_waiter = NULL;
}

/* req:read_body(): reads the whole request body before the backend is contacted. */
int mg_lua_req_read_body(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  mg_lua_check_own(L, req, "req:read_body");
  mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT, "req:read_body");
  if (req->body_ready) return 0;
  if (req->redirects || req->msg_done || (req->content_length <= 0 && !req->chunked)) {
    /* No body, or it was dropped (internal redirect) or already went by. */
    req->body_ready = 1;
    return 0;
  }
  if (req->on_body) return luaL_error(L, "req:read_body: the body is already being streamed to the backend");
  mg_thread_t *t = mg_thread_check(L, "req:read_body");
  if (mg_explain) return mg_thread_explained(L);
  uint64_t limit = body_limit(req);
  if (limit && req->content_length > 0 && (uint64_t)req->content_length > limit) {
    req->keepalive = 0;
    lua_pushnil(L);
    lua_pushliteral(L, "request body too large");
    return 2;
  }
  req->on_body = on_body_collect;
  req->on_body_end = on_body_collected;
  req->body_reading = 1;
  ((mg_lua_req_t *)req->lua)->body_waiter = t;
  kick_t *k = mg_malloc(sizeof *k);
  uv_timer_init(req->server->loop, &k->timer);
  k->timer.data = k;
  k->req = req;
  mg_req_hold(req);
  mg_timer_start(&k->timer, on_kick, 0, 0);
  return mg_thread_wait(L, t, read_body_cancel, NULL);
}

/* req:body() → the body read by req:read_body(); nil for none, nil and "in file" beyond
 * lua_body_max. */
int mg_lua_req_body(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  if (!req->body_ready) {
    lua_pushnil(L);
    lua_pushliteral(L, "body not read (call req:read_body() first)");
    return 2;
  }
  mg_body_t *b = &req->body;
  if (b->len == 0) {
    /* No body (a GET, a body that went by): nil, as ngx.req.get_body_data(). */
    lua_pushnil(L);
    return 1;
  }
  if (b->fd < 0) {
    lua_pushlstring(L, b->mem.data ? b->mem.data : "", b->mem.len);
    return 1;
  }
  if (b->len > req->cfg->set.lua_body_max) {
    lua_pushnil(L);
    lua_pushliteral(L, "in file");
    return 2;
  }
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  char chunk[16384];
  uint64_t off = 0;
  while (off < b->len) {
    ssize_t n = pread(b->fd, chunk, sizeof chunk, (off_t)off);
    if (n <= 0) return luaL_error(L, "req:body: reading the spooled body failed");
    luaL_addlstring(&lb, chunk, (size_t)n);
    off += (uint64_t)n;
  }
  luaL_pushresult(&lb);
  return 1;
}

/* req:set_body(str): the backend receives str instead (CONTENT_LENGTH follows). */
int mg_lua_req_set_body(lua_State *L) {
  mg_req_t *req = mg_lua_check_req(L, 1);
  mg_lua_check_phase(L, req, MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT, "req:set_body");
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  if (!req->body_ready) return luaL_error(L, "req:set_body: call req:read_body() first");
  mg_body_reset(&req->body);
  int rc = mg_body_add(&req->body, s, len);
  if (rc < 0) return luaL_error(L, "req:set_body: %s", strerror(-rc));
  return 0;
}
