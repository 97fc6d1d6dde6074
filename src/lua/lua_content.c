/* lua_content: the Lua content handler, a route whose target is a function (docs/reference.md, "Routes"; docs/lua-api.md, "Content handlers").
 *
 * The function runs in a Lua thread as fn(req) and may wait; it answers by returning
 * `status, body, headers` or through req:exit / req:redirect. A Lua error is a 500 with the
 * traceback in the error log; so is a returned status that is not final, or a header field
 * that could not be sent (lua_headers.h), logged with the route. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "handler.h"
#include "log.h"
#include "lua_headers.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "phase.h"

static void respond(mg_req_t *req, lua_State *co) {
  lua_settop(co, 3); /* status body headers */
  int status = req->route->errpage_fn ? req->errpage_status : 200; /* an error page's function */
  /* ngx.status set and no status returned (a plain return, ngx.exit(ngx.OK)): that status. */
  if (((mg_lua_req_t *)req->lua)->ngx_status_set) status = req->status;
  if (!lua_isnil(co, 1) && !mg_lua_final_status(co, 1, &status)) {
    mg_log_error(MG_LOG_ERROR, req->id, "content handler of route %s returned status %s, not a final status (200 to 599)",
                 req->route->decl, mg_lua_status_text(co, 1));
    mg_req_error(req, 500, NULL);
    return;
  }
  if (lua_istable(co, 3)) {
    const char *err = mg_lua_fields_from_table(co, 3, &req->pool, &req->resp_headers, 1);
    if (err) {
      mg_log_error(MG_LOG_ERROR, req->id, "content handler of route %s returned headers that cannot be sent: %s",
                   req->route->decl, err);
      mg_req_error(req, 500, NULL);
      return;
    }
  }
  size_t bl = 0;
  const char *body = lua_tolstring(co, 2, &bl);
  char *copy = body ? mg_pool_strndup(&req->pool, body, bl) : NULL;
  const char *ct = mg_fields_get(&req->resp_headers, "Content-Type") ? NULL : "text/plain";
  mg_req_respond(req, status, ct, copy ? copy : "", bl);
}

static void finish(mg_req_t *req, mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in content handler of route %s: %s", req->route->decl, t->error);
    mg_thread_release(t);
    mg_lua_exit_clear(req);
    mg_req_error(req, 500, NULL);
    return;
  }
  if (mg_lua_end_output(req)) { /* ngx.say/print wrote the response: its return values are moot */
    mg_thread_release(t);
    return;
  }
  const char *location = NULL;
  int e = mg_lua_take_exit(req, &location);
  if (e != MG_LUA_EXIT_NONE) {
    mg_thread_release(t);
    if (e == MG_LUA_EXIT_REDIRECT) mg_phase_restart(req, location);
    return;
  }
  /* The results are copied into the request before the coroutine goes back to the pool. After
   * ngx.exit(ngx.OK) without output there are none: an empty 200, as OpenResty's. */
  if (t->exited) lua_settop(t->co, 0);
  respond(req, t->co);
  mg_thread_release(t);
}

static void on_done(mg_thread_t *t, int rc) {
  mg_req_t *req = t->req;
  req->thread = NULL;
  /* A body held while the handler waited and never read is read and dropped once the
   * response is made (nginx discards it the same way); the transport outlives the call. */
  int held = req->hold_body;
  req->hold_body = 0;
  const mg_sink_t *sink = req->sink;
  void *transport = req->transport;
  finish(req, t, rc);
  if (held && sink->kick) sink->kick(transport);
}

static void lua_start(mg_req_t *req) {
  mg_thread_t *t = mg_thread_new(req->cfg->L, req, MG_PH_CONTENT);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, req->route->handler_ref); /* co: fn */
  mg_lua_push_req(t->co, req);                                     /* co: fn req */
  int nargs = 1;
  if (req->route->errpage_fn) lua_pushinteger(t->co, req->errpage_status), nargs = 2; /* fn(req, status) */
  t->on_done = on_done;
  /* Held while the function runs: its output may end the response at once (a body_filter
   * hook failing under ngx.say answers 500), and the request must outlive the run. */
  mg_req_hold(req);
  int rc = mg_thread_start(t, nargs);
  if (req->finished) {
    mg_thread_release(t);
  } else if (rc == MG_WAITS) {
    req->thread = t;
    /* The client's body stays where it is while the handler waits, for a read_body() after
     * the wait (as OpenResty's, where the body waits in the socket). */
    if (!req->is_subrequest && !req->body_reading && !req->on_body && !req->msg_done &&
        (req->content_length > 0 || req->chunked))
      req->hold_body = 1;
  } else {
    finish(req, t, rc);
  }
  mg_req_unhold(req);
}

const mg_handler_t mg_handler_lua = {"lua", lua_start};
