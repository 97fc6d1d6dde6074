/* lua_subrequest: see lua_subrequest.h.
 *
 * The child is released on a zero timer after its response is complete, never inside the
 * handler call that completed it (the handler's frames are still on the stack).
 *
 * A child lives only while a thread of its parent waits for it: req:subrequest() is refused
 * on the req of another request than the calling thread's (a req kept in an upvalue or a
 * module table), so a parent that ends aborts its thread, whose wait releases the child; a
 * child never outlives the request and connection it points to. The client request at the
 * root of the tree counts its subrequests (subrequest_limit) and the bytes of their bodies
 * (subrequest_max_total_body): a fan-out that would go past either gets nil and an error. */
#include "lua_subrequest.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "lua_headers.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "lua_vm.h"
#include "path.h"
#include "phase.h"

#define MAX_DEPTH 10

typedef struct {
  mg_req_t *child;
  mg_thread_t *t; /* the thread waiting for the result */
  mg_buf_t body;
  uv_timer_t reaper; /* the timeout while waiting, then the zero timer that releases the child */
  unsigned done : 1, too_large : 1, total_too_large : 1, aborted : 1;
  int drop_status; /* the child answered nothing on purpose (ngx.exit(444)): so does its parent */
} capture_t;

/* The client request at the root of a subrequest tree. */
static mg_req_t *main_of(mg_req_t *r) {
  while (r->parent) r = r->parent;
  return r;
}

/* Logs, once per client request, that one of its caps was reached. */
static void log_cap(mg_req_t *main, const char *fmt, uint64_t cap) {
  if (main->subrequest_capped) return;
  main->subrequest_capped = 1;
  mg_log_error(MG_LOG_ERROR, main->id, fmt, (unsigned long long)cap);
}

static void on_reaper_closed(uv_handle_t *h) {
  capture_t *c = h->data;
  mg_buf_free(&c->body);
  free(c);
}

static void on_reap(uv_timer_t *tm) {
  capture_t *c = tm->data;
  if (c->child) mg_req_release(c->child);
  c->child = NULL;
  /* A subrequest that answered nothing (ngx.exit(444), 408, 499) ends the whole client request
   * the same way, as nginx's does: the thread still waiting for it (complete() did not wake
   * it) is never resumed, and goes with its request. */
  mg_thread_t *t = c->t;
  int drop = c->drop_status;
  c->t = NULL;
  uv_close((uv_handle_t *)tm, on_reaper_closed); /* c is freed on a later turn */
  if (drop && t && t->req) {
    t->cancel = NULL, t->wait = NULL;
    mg_req_drop(t->req, drop);
  }
}

/* Pushes the result onto L: the response table, or nil and why. */
static int push_result(lua_State *L, capture_t *c) {
  mg_req_t *r = c->child;
  if (c->too_large || c->total_too_large || c->aborted) {
    lua_pushnil(L);
    lua_pushstring(L, c->too_large ? "body too large" : c->total_too_large ? "total body too large" : "response aborted");
    return 2;
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  mg_lua_push_fields(L, &r->resp_headers);
  lua_setfield(L, -2, "headers");
  mg_lua_push_fields_raw(L, &r->resp_headers); /* ngx.location.capture's res.header */
  lua_setfield(L, -2, "header");
  lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
  lua_setfield(L, -2, "body");
  return 1;
}

/* opts.timeout passed: the child is stopped with what it holds, the caller gets nil, "timeout". */
static void on_timeout(uv_timer_t *tm) {
  capture_t *c = tm->data;
  mg_thread_t *t = c->t;
  c->t = NULL;
  c->done = 1;
  mg_log_error(MG_LOG_WARN, c->child->parent ? c->child->parent->id : NULL, "subrequest to %s timed out",
               c->child->target);
  mg_req_release(c->child);
  c->child = NULL;
  uv_close((uv_handle_t *)tm, on_reaper_closed);
  if (t) {
    lua_pushnil(t->co);
    lua_pushliteral(t->co, "timeout");
    mg_thread_resume(t, 2);
  }
}

static void complete(capture_t *c) {
  if (c->done) return;
  c->done = 1;
  if (c->t && !c->drop_status) {
    mg_thread_t *t = c->t;
    c->t = NULL;
    int n = push_result(t->co, c);
    mg_thread_wake(t, n); /* inside the child's handler: the parent runs on the next turn */
  }
  uv_timer_start(&c->reaper, on_reap, 0, 0);
}

static void cap_head(mg_req_t *req) { (void)req; }

static void cap_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  capture_t *c = req->transport;
  if (!c->done) {
    const mg_settings_t *s = &req->cfg->set;
    mg_req_t *main = main_of(req);
    if (c->body.len + len > s->subrequest_max_body || main->subrequest_bytes + len > s->subrequest_max_total_body) {
      if (c->body.len + len > s->subrequest_max_body) {
        c->too_large = 1;
      } else {
        c->total_too_large = 1;
        log_cap(main, "subrequest_max_total_body (%llu bytes) reached: the bodies of this request's subrequests are refused beyond it", s->subrequest_max_total_body);
      }
      mg_block_put(block);
      free(heap);
      mg_req_stop(req);
      complete(c);
      return;
    }
    main->subrequest_bytes += len;
    mg_buf_append(&c->body, data, len);
  }
  mg_block_put(block);
  free(heap);
}

static void cap_end(mg_req_t *req) { complete(req->transport); }

static void cap_abort(mg_req_t *req) {
  capture_t *c = req->transport;
  if (c->done) return;
  c->aborted = 1;
  c->drop_status = req->dropped; /* on_reap drops the parent too, off this stack */
  mg_req_stop(req);
  complete(c);
}

/* The capture: a sink with no framing, no flow control and no socket of its own. */
static const mg_sink_t capture_sink = {.name = "capture", .head = cap_head, .body = cap_body, .end = cap_end, .abort = cap_abort};

static void sub_cancel(mg_thread_t *t) {
  capture_t *c = t->wait;
  c->t = NULL;
  if (c->done) return; /* the reaper frees it */
  /* The parent is gone: stop the child and everything it holds now. */
  c->done = 1;
  mg_req_release(c->child);
  c->child = NULL;
  uv_close((uv_handle_t *)&c->reaper, on_reaper_closed);
}

static int bad(lua_State *L, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static int is_body_header(const char *name) {
  return strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Content-Type") == 0 ||
         strcasecmp(name, "Transfer-Encoding") == 0 || strcasecmp(name, "Expect") == 0;
}

/* req:subrequest(uri[, { method =, body =, query =, headers =, env =, timeout = }]) */
int mg_subrequest_lua(lua_State *L) {
  mg_req_t *parent = mg_lua_check_req(L, 1);
  size_t ul;
  const char *uri = luaL_checklstring(L, 2, &ul);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  mg_thread_t *t = mg_lua_check_own_req(L, parent, "req:subrequest");
  if (mg_explain) return mg_thread_explained(L);
  if (uri[0] != '/') return luaL_argerror(L, 2, "a local URI starting with '/'");
  if (parent->depth >= MAX_DEPTH) return bad(L, "subrequest depth limit (10) reached");
  lua_settop(L, 3);
  const char *method = "GET", *body = NULL, *query = NULL;
  size_t bl = 0;
  uint64_t timeout_ms = parent->cfg->set.timeout;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "timeout");
    /* 0 is the default (the timeout setting), as for cosockets; never "no timeout". */
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) ||
                              mg_lua_timeout_ms(lua_tonumber(L, -1), 1000, parent->cfg->set.timeout, &timeout_ms) < 0))
      return luaL_error(L, "req:subrequest: opts.timeout must be a finite number of seconds from 0 (0: the default)");
    lua_pop(L, 1);
    lua_getfield(L, 3, "method");
    if (!lua_isnil(L, -1)) method = luaL_checkstring(L, -1);
    lua_getfield(L, 3, "body");
    if (!lua_isnil(L, -1)) body = luaL_checklstring(L, -1, &bl);
    lua_getfield(L, 3, "query");
    if (!lua_isnil(L, -1)) query = luaL_checkstring(L, -1);
    lua_pop(L, 3);
  }
  if (!mg_http_is_token(method, strlen(method))) return luaL_error(L, "req:subrequest: method must be an HTTP token");
  const mg_settings_t *set = &parent->cfg->set;
  mg_req_t *main = main_of(parent);
  if (main->subrequests >= set->subrequest_limit) {
    log_cap(main, "subrequest_limit (%llu) reached: this request's further subrequests are refused", set->subrequest_limit);
    return bad(L, "too many subrequests");
  }
  if (main->subrequest_bytes + bl > set->subrequest_max_total_body) {
    log_cap(main, "subrequest_max_total_body (%llu bytes) reached: the bodies of this request's subrequests are refused beyond it", set->subrequest_max_total_body);
    return bad(L, "total body too large");
  }
  main->subrequests++;
  main->subrequest_bytes += bl;
  mg_req_t *child = mg_req_new_child(parent, &capture_sink, NULL);
  mg_pool_t *pool = &child->pool;
  child->method = child->orig_method = mg_pool_strdup(pool, method);
  child->is_head = strcmp(method, "HEAD") == 0;
  /* The target: the URI, its query replaced by opts.query when given. */
  const char *path, *q;
  size_t pl, ql;
  if (mg_target_split(uri, ul, &path, &pl, &q, &ql) < 0) {
    mg_req_release(child);
    return bad(L, "bad uri");
  }
  if (query) q = query, ql = strlen(query);
  size_t tl = pl + (q ? ql + 1 : 0);
  char *target = mg_pool_alloc(pool, tl + 1);
  memcpy(target, path, pl);
  if (q) target[pl] = '?', memcpy(target + pl + 1, q, ql);
  target[tl] = 0;
  child->target = target;
  child->path = mg_pool_alloc(pool, pl + 2);
  int n = mg_path_normalize(path, pl, child->path, child->cfg->set.allow_encoded_slashes);
  if (n < 0) {
    mg_req_release(child);
    return bad(L, "bad uri");
  }
  child->path_len = (size_t)n;
  child->query = q ? mg_pool_strndup(pool, q, ql) : NULL;
  /* Headers: opts.headers, or the parent's without those that describe its body. */
  if (lua_istable(L, 3)) lua_getfield(L, 3, "headers");
  else lua_pushnil(L);
  if (lua_istable(L, -1)) {
    const char *err = mg_lua_fields_from_table(L, -1, pool, &child->headers, 0);
    if (err) {
      mg_req_release(child);
      return luaL_error(L, "req:subrequest: opts.headers: %s", err);
    }
  } else {
    for (int i = 0; i < parent->headers.n; i++) {
      const mg_field_t *f = &parent->headers.v[i];
      if (!is_body_header(f->name))
        mg_fields_add(pool, &child->headers, f->name, strlen(f->name), f->value, strlen(f->value));
    }
  }
  lua_pop(L, 1);
  if (body) {
    mg_body_add(&child->body, body, bl);
    child->content_length = (int64_t)bl;
  }
  child->body_ready = 1;
  /* opts.env becomes the child's req.env. */
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "env");
    if (lua_istable(L, -1)) {
      lua_newtable(L);
      lua_pushnil(L);
      while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      }
      mg_lua_req_attach(child)->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
  }
  capture_t *c = mg_calloc(1, sizeof *c);
  mg_buf_init(&c->body);
  c->child = child;
  uv_timer_init(mg_thread_loop(), &c->reaper);
  c->reaper.data = c;
  child->transport = c;
  mg_phase_start(child);
  /* A child that answered nothing at once: the thread waits for the reaper, which drops
   * this request too (on_reap). */
  if (c->done && !c->drop_status) return push_result(L, c);
  c->t = t;
  if (!c->done) mg_timer_start(&c->reaper, on_timeout, timeout_ms, 0);
  return mg_thread_wait(L, t, sub_cancel, c);
}
