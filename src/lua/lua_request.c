/* lua_request: see lua_request.h.
 *
 * `req` is a full userdata holding the request pointer; it is cleared when the request is
 * released, so a hook that kept `req` in a global and touches it later gets an error, never
 * freed memory. Its fields are read through __index on demand (lua_req.c), so a hook pays
 * only for what it reads.
 *
 * Every API entry checks the phase it is called in, as lua-nginx-module does, and raises
 * "API disabled in the context of <phase>" otherwise. */
#include "lua_request.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "errpage.h"
#include "fields.h"
#include "lua_socket.h"

/* The pool cleanup of a request Lua has seen: drops its Lua references, closes its
 * cosockets, abandons a waiting thread. */
static void req_release(void *arg);

mg_lua_req_t *mg_lua_req_attach(mg_req_t *req) {
  if (req->lua) return req->lua;
  mg_lua_req_t *lr = mg_pool_alloc(&req->pool, sizeof *lr);
  memset(lr, 0, sizeof *lr);
  lr->self_ref = lr->res_ref = lr->hdr_ref[0] = lr->hdr_ref[1] = lr->env_ref = lr->ctx_ref = LUA_NOREF;
  req->lua = lr;
  mg_pool_cleanup(&req->pool, req_release, req);
  return lr;
}

void *mg_lua_push_box(lua_State *L, int *ref, size_t size, const char *mt) {
  if (*ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    return NULL;
  }
  void *b = lua_newuserdata(L, size);
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return b;
}

/* The metatables were made when the worker was prepared (mg_lua_worker_prepare), not looked
 * for again per request. */
void mg_lua_push_req(lua_State *L, mg_req_t *req) {
  mg_lua_box_t *b = mg_lua_push_box(L, &mg_lua_req_attach(req)->self_ref, sizeof *b, MG_LUA_REQ_MT);
  if (b) b->req = req;
}

/* Detaches a cached userdata from the request and drops its reference. */
static void detach(lua_State *L, int *ref) {
  if (*ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
  ((mg_lua_box_t *)lua_touserdata(L, -1))->req = NULL;
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

static void req_release(void *arg) {
  mg_req_t *req = arg;
  mg_lua_req_t *lr = req->lua;
  mg_socket_close_owned(&lr->sockets);
  if (req->thread) {
    mg_thread_t *t = req->thread;
    req->thread = NULL;
    mg_thread_abort(t);
  }
  if (lr->self_ref == LUA_NOREF && lr->env_ref == LUA_NOREF && lr->ctx_ref == LUA_NOREF && lr->res_ref == LUA_NOREF &&
      lr->hdr_ref[0] == LUA_NOREF && lr->hdr_ref[1] == LUA_NOREF)
    return;
  lua_State *L = req->cfg->L;
  /* A hook that kept req, res or a headers proxy past the request gets an error from it,
   * never freed memory. */
  detach(L, &lr->self_ref);
  detach(L, &lr->res_ref);
  detach(L, &lr->hdr_ref[0]);
  detach(L, &lr->hdr_ref[1]);
  luaL_unref(L, LUA_REGISTRYINDEX, lr->env_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lr->ctx_ref);
  lr->env_ref = lr->ctx_ref = LUA_NOREF;
}

/* ---- the checks of every request API -------------------------------------------------------- */

mg_req_t *mg_lua_check_req(lua_State *L, int idx) {
  mg_lua_box_t *b = luaL_checkudata(L, idx, MG_LUA_REQ_MT);
  if (!b->req) luaL_error(L, "request object used after its request ended");
  return b->req;
}

void mg_lua_check_phase(lua_State *L, mg_req_t *req, int allowed, const char *what) {
  mg_lua_req_t *lr = req->lua; /* there is a req object: the request is attached */
  if (!(lr->phase & allowed)) luaL_error(L, "API disabled in the context of %s: %s", mg_lua_phase_name(lr->phase), what);
}

/* In a Lua thread (a hook, a handler, a timer), a waiting call on a req must be on the
 * thread's own request. Outside one, the phase check refuses the call. */
void mg_lua_check_own(lua_State *L, mg_req_t *req, const char *what) {
  mg_thread_t *t = mg_thread_current();
  if (t && t->req != req)
    luaL_error(L, "%s on the req of another request (%s, kept in a variable or table): a waiting call works only on the "
                  "running request's own req", what, req->id);
}

mg_thread_t *mg_lua_check_own_req(lua_State *L, mg_req_t *req, const char *what) {
  mg_thread_t *t = mg_thread_check(L, what);
  mg_lua_check_own(L, req, what);
  return t;
}

/* ---- req:exit() and req:redirect(), once the hook has returned ------------------------------ */

int mg_lua_end_output(mg_req_t *req) {
  mg_lua_req_t *lr = req->lua;
  if (!lr || !lr->ngx_output) return 0;
  int status = lr->exit.status;
  memset(&lr->exit, 0, sizeof lr->exit); /* the status of another ngx.exit after output is moot */
  /* ngx.exit(444) after ngx.say: the body is cut where it is and the connection closes, as
   * nginx's after ngx.flush (the client never sees the end of the body). */
  if (mg_status_answers_nothing(status)) mg_req_drop(req, status);
  else if (!req->resp_ended) mg_req_send_end(req);
  return 1;
}

mg_req_t *mg_lua_req_running(lua_State *L) {
  mg_req_t *req = mg_lua_req_now;
  if (!req) luaL_error(L, "no request found");
  mg_lua_req_attach(req);
  return req;
}

mg_lua_exit_t *mg_lua_exit_of(mg_req_t *req) { return &mg_lua_req_attach(req)->exit; }

int mg_lua_take_exit(mg_req_t *req, const char **redirect) {
  mg_lua_req_t *lr = req->lua;
  if (!lr || (!lr->exit.status && !lr->exit.redirect)) return MG_LUA_EXIT_NONE;
  mg_lua_exit_t e = lr->exit;
  memset(&lr->exit, 0, sizeof lr->exit);
  if (e.redirect) {
    *redirect = e.location;
    return MG_LUA_EXIT_REDIRECT;
  }
  /* nginx answers these with nothing: the connection closes (444 is nginx's `return 444`, a
   * scanner dropped; 408 and 499 end the request as a timeout and a client gone would). */
  if (e.drop || mg_status_answers_nothing(e.status)) {
    mg_req_drop(req, e.status);
    return MG_LUA_EXIT_RESPONDED;
  }
  /* nginx's own codes for a header too large, a bad or missing client certificate and plain
   * HTTP on a TLS port are answered as 400; after 494 the connection goes on, after the
   * others it ends (as after a 400). */
  int keeps = e.status == 494;
  if (e.status >= 494 && e.status <= 497) e.status = 400;
  if (e.body) {
    mg_req_respond(req, e.status, mg_fields_get(&req->resp_headers, "Content-Type") ? NULL : "text/plain", e.body, e.body_len);
  } else {
    /* A status with no body: an error page for error statuses, an empty body otherwise. */
    if (keeps) mg_req_unread_body_closes(req);
    else if (e.status >= 400) mg_req_error_closes(req, e.status);
    if (e.status >= 400 && mg_errpage_try(req, e.status)) {
      /* SPEC 19: the route's error page for that status answers (nginx's error_page). */
    } else if (e.status >= 400) {
      /* The error page, keeping the header fields Lua set (ngx.header, req:exit's headers), as
       * nginx keeps them on its error pages. */
      char page[128];
      int n = snprintf(page, sizeof page, "%d %s\n", e.status, mg_http_reason(e.status));
      mg_req_respond(req, e.status, "text/plain", page, (size_t)n);
    } else {
      mg_req_respond(req, e.status, NULL, "", 0);
    }
  }
  return MG_LUA_EXIT_RESPONDED;
}

void mg_lua_exit_clear(mg_req_t *req) {
  mg_lua_req_t *lr = req->lua;
  if (lr) memset(&lr->exit, 0, sizeof lr->exit);
}

/* ---- statuses from Lua ---------------------------------------------------------------------- */

int mg_lua_final_status(lua_State *L, int idx, int *status) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  lua_Number n = lua_tonumber(L, idx);
  if (!(n >= 200 && n <= 599) || n != (lua_Number)(int)n) return 0;
  *status = (int)n;
  return 1;
}

const char *mg_lua_status_text(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    lua_pushvalue(L, idx); /* converted in place by lua_tostring: a copy, idx stays a number */
    return lua_tostring(L, -1);
  }
  if (t == LUA_TSTRING) return lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
  return lua_typename(L, t);
}
