/* phase: see phase.h. */
#include "phase.h"

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "redirect.h"
#include "route.h"

enum { ST_REWRITE, ST_ROUTE, ST_ACCESS, ST_HANDLER, ST_RUNNING };

static void engine_run(mg_req_t *req);

/* What a finished hook asked for. Returns 1 when the request was ended or restarted. */
static int hook_result(mg_req_t *req, mg_thread_t *t, int rc) {
  if (mg_explain) mg_explain->hook_end(req, rc == MG_THREAD_ERROR ? t->error : NULL);
  if (rc == MG_THREAD_ERROR) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s hook: %s", mg_lua_phase_name(t->phase), t->error);
    mg_thread_release(t);
    mg_lua_exit_clear(req);
    mg_req_error(req, 500, NULL);
    return 1;
  }
  mg_thread_release(t);
  const char *location = NULL;
  int e = mg_lua_take_exit(req, &location);
  if (e == MG_LUA_EXIT_REDIRECT) {
    mg_phase_restart(req, location);
    return 1;
  }
  return e == MG_LUA_EXIT_RESPONDED;
}

static void on_hook_done(mg_thread_t *t, int rc) {
  mg_req_t *req = t->req;
  req->thread = NULL;
  if (hook_result(req, t, rc)) return;
  engine_run(req);
}

/* Runs the hooks of `phase` from req->hook_i on. Returns 0 when all ran, 1 when the request
 * ended, -1 when a hook waits (the engine goes on in on_hook_done). */
static int run_hooks(mg_req_t *req, int phase, int bit) {
  int ref;
  while ((ref = mg_lua_hook_at(req, phase, req->hook_i)) != LUA_NOREF) {
    req->hook_i++;
    if (mg_explain) mg_explain->hook_begin(req, phase, ref);
    mg_thread_t *t = mg_lua_hook_thread(req, ref, bit);
    t->on_done = on_hook_done;
    int rc = mg_thread_start(t, 1);
    if (rc == MG_THREAD_WAIT) {
      req->thread = t;
      /* Hold the client's body while the hook waits, unless it waits for that body. */
      if (!req->handler_started && !req->is_subrequest && !req->body_reading) req->hold_body = 1;
      return -1;
    }
    if (hook_result(req, t, rc)) return 1;
  }
  req->hook_i = 0;
  return 0;
}

static int route_request(mg_req_t *req) {
  req->route = mg_route_find(req->cfg, req->host, req->path, req->path_len);
  const mg_route_t *r = req->route;
  if (!r || (r->internal && !req->is_subrequest && !req->redirects)) {
    /* An internal route does not exist for clients (nginx's `internal;`). */
    req->route = NULL;
    mg_req_error(req, 404, NULL);
    return 1;
  }
  uint64_t limit = r->client_max_body_size;
  if (limit && req->content_length > 0 && (uint64_t)req->content_length > limit) {
    req->keepalive = 0;
    mg_req_error(req, 413, "request body of %lld bytes exceeds client_max_body_size %llu of route %s",
                 (long long)req->content_length, (unsigned long long)limit, r->match);
    return 1;
  }
  return 0;
}

static void engine_run(mg_req_t *req) {
  for (;;) {
    switch (req->stage) {
      case ST_REWRITE:
        if (mg_lua_has_phase(req, MG_PHASE_REWRITE) && run_hooks(req, MG_PHASE_REWRITE, MG_PH_REWRITE)) return;
        req->stage = ST_ROUTE;
        break;
      case ST_ROUTE:
        if (route_request(req)) return;
        req->stage = ST_ACCESS;
        break;
      case ST_ACCESS:
        if (mg_lua_has_phase(req, MG_PHASE_ACCESS) && run_hooks(req, MG_PHASE_ACCESS, MG_PH_ACCESS)) return;
        req->stage = ST_HANDLER;
        break;
      default: {
        req->stage = ST_RUNNING;
        req->handler_started = 1;
        int held = req->hold_body;
        req->hold_body = 0;
        mg_conn_t *c = req->conn;
        if (mg_explain && mg_explain->handler(req)) return;
        req->route->handler->start(req);
        /* The handler may have finished the request already; the connection is still valid
         * memory until the loop runs its close callbacks. */
        if (held) mg_conn_kick(c);
        return;
      }
    }
  }
}

void mg_phase_start(mg_req_t *req) {
  req->stage = ST_REWRITE;
  req->hook_i = 0;
  engine_run(req);
}

void mg_phase_restart(mg_req_t *req, const char *location) {
  if (mg_explain) mg_explain->restart(req, location);
  if (mg_redirect_prepare(req, location) < 0) return;
  req->stage = ST_REWRITE;
  req->hook_i = 0;
  req->handler_started = 0;
  engine_run(req);
}

void mg_phase_abort(mg_req_t *req) {
  mg_thread_t *t = req->thread;
  if (!t) return;
  req->thread = NULL;
  mg_thread_abort(t);
}
