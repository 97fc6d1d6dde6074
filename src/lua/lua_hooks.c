/* lua_hooks: the hooks table of core/hooks.h, as the Lua binding fills it.
 *
 * The core, the transports and the handlers reach Lua only through this table. Rewrite and
 * access hooks run here in Lua threads (lua_thread.c): one that never waits costs a coroutine
 * resume; one that waits hands the request back to the phase engine with mg_phase_resume when
 * its thread has ended. Balancer, header_filter and body_filter hooks run in one protected
 * call each and cannot wait; log hooks run in Lua threads and may wait, detached from the
 * connection (below). A Lua error ends the request with 500 (or cuts the
 * connection when the head is already sent) and logs the traceback; the worker goes on. */
#include "lua_hooks.h"

#include <assert.h>
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>

#include "balancer.h"
#include "hooks.h"
#include "log.h"
#include "loop.h"
#include "lua_request.h"
#include "metrics.h"
#include "lua_res.h"
#include "lua_thread.h"
#include "lua_timer.h"
#include "lua_vm.h"
#include "lua_worker.h"
#include "phase.h"

/* ---- rewrite and access: hooks in Lua threads ----------------------------------------------- */

/* What a finished hook asked for: MG_OK to go on, MG_ENDED when it failed (500), answered or
 * restarted the request. */
static int hook_result(mg_req_t *req, mg_thread_t *t, int rc) {
  if (mg_explain) mg_explain->hook_end(req, rc == MG_THREAD_ERROR ? t->error : NULL);
  if (rc == MG_THREAD_ERROR) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s hook: %s", mg_lua_phase_name(t->phase), t->error);
    mg_thread_release(t);
    mg_lua_exit_clear(req);
    mg_req_error(req, 500, NULL);
    return MG_ENDED;
  }
  mg_thread_release(t);
  /* Output written with ngx.say/print: the hook that wrote it ends the response. */
  if (mg_lua_end_output(req)) return MG_ENDED;
  const char *location = NULL;
  int e = mg_lua_take_exit(req, &location);
  if (e == MG_LUA_EXIT_REDIRECT) {
    mg_phase_restart(req, location);
    return MG_ENDED;
  }
  return e == MG_LUA_EXIT_RESPONDED ? MG_ENDED : MG_OK;
}

static void on_hook_done(mg_thread_t *t, int rc) {
  mg_req_t *req = t->req;
  req->thread = NULL;
  mg_phase_resume(req, hook_result(req, t, rc));
}

static int run_hook(mg_req_t *req, int phase, int ref) {
  if (mg_explain) mg_explain->hook_begin(req, phase, ref);
  mg_thread_t *t = mg_thread_new(req->cfg->L, req, 1 << phase);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, ref); /* co: fn */
  mg_lua_push_req(t->co, req);                /* co: fn req */
  t->on_done = on_hook_done;
  /* Held while the hook runs: its output may end the response at once (see lua_content.c). */
  mg_req_hold(req);
  int rc = mg_thread_start(t, 1);
  if (req->finished) {
    mg_thread_release(t);
    rc = MG_ENDED;
  } else if (rc == MG_WAITS) {
    req->thread = t;
  } else {
    rc = hook_result(req, t, rc);
  }
  mg_req_unhold(req);
  return rc;
}

static void abandon(mg_req_t *req) {
  mg_thread_t *t = req->thread;
  req->thread = NULL;
  if (t) mg_thread_abort(t);
}

/* ---- header_filter, body_filter, log: hooks in one protected call --------------------------- */

/* SPEC 20: mg_lua_call, its time added to the phase's Lua time (mg_lua_phase_now, a bit). */
static int timed_call(lua_State *L, int nargs, int nresults, char *err, size_t err_len) {
  int outer = mg_lua_depth == 0;
  uint64_t t0 = outer ? uv_hrtime() : 0;
  int rc = mg_lua_call(L, nargs, nresults, err, err_len);
  if (outer && mg_lua_phase_now) mg_metrics_lua(__builtin_ctz((unsigned)mg_lua_phase_now), (uv_hrtime() - t0) / 1000);
  return rc;
}

/* Calls one hook with the request (and the response, for header_filter and log). Returns
 * MG_OK, or -1 (a failure) after logging the Lua error. */
static int call_hook(mg_req_t *req, int ref, int phase_bit, int with_res) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  mg_lua_push_req(L, req);
  if (with_res) mg_lua_push_res(L, req);
  mg_lua_req_t *lr = req->lua;
  int saved = lr->phase, saved_now = mg_lua_phase_now;
  mg_req_t *saved_req = mg_lua_req_now;
  lr->phase = mg_lua_phase_now = phase_bit;
  mg_lua_req_now = req;
  char err[2048];
  int rc = timed_call(L, with_res ? 2 : 1, 0, err, sizeof err);
  lr->phase = saved, mg_lua_phase_now = saved_now;
  mg_lua_req_now = saved_req;
  if (rc < 0) mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s hook: %s", mg_lua_phase_name(phase_bit), err);
  assert(lua_gettop(L) == top);
  (void)top;
  return rc;
}

/* The global hooks first, then the route's; the first that fails stops the others. */
static void header_filter(mg_req_t *req) {
  for (int i = 0, n = mg_req_hook_count(req, MG_PHASE_HEADER_FILTER); i < n; i++) {
    if (call_hook(req, mg_req_hook_at(req, MG_PHASE_HEADER_FILTER, i), MG_PH_HEADER_FILTER, 1) < 0) {
      /* The head is not out yet: request.c replaces the response with a 500 page. */
      req->filter_failed = 1;
      return;
    }
  }
}

/* ---- log: hooks in Lua threads that may wait, detached from the connection ------------------ */

/* Every log hook runs, in order, each in a Lua thread: an error is logged, and the response
 * is already complete. One that waits (mg.sleep, a cosocket to ship the line) goes on
 * detached: the request is held (mg_req_hold: its pool, so req and res stay readable) while
 * its connection moves on to the next request, the hooks after it run when it ends, and the
 * whole takes one of the lua_max_running_timers slots (lua_timer.c) until the last ends.
 * `detached`: that is already so. A subrequest's log hook cannot wait (its parent may end
 * first), nor one past the running limit: such a hook is ended where it waits. */
static void log_hooks_from(mg_req_t *req, int i, int detached);

static void on_log_hook_done(mg_thread_t *t, int rc) {
  mg_req_t *req = t->req;
  int next = (int)(intptr_t)t->data;
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, req->id, "Lua error in log hook: %s", t->error);
  mg_thread_release(t);
  log_hooks_from(req, next, 1);
}

static void log_hooks_from(mg_req_t *req, int i, int detached) {
  for (int n = mg_req_hook_count(req, MG_PHASE_LOG); i < n; i++) {
    mg_thread_t *t = mg_thread_new(req->cfg->L, req, MG_PH_LOG);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, mg_req_hook_at(req, MG_PHASE_LOG, i)); /* co: fn */
    mg_lua_push_req(t->co, req);                                                 /* co: fn req */
    mg_lua_push_res(t->co, req);                                                 /* co: fn req res */
    t->on_done = on_log_hook_done;
    t->data = (void *)(intptr_t)(i + 1);
    int rc = mg_thread_start(t, 2);
    if (rc == MG_WAITS) {
      if (detached) return;
      if (req->is_subrequest) {
        mg_log_error(MG_LOG_ERROR, req->id, "a log hook of a subrequest cannot wait: it was ended");
      } else if (mg_lua_detached_begin("a log hook", req->id)) {
        mg_req_hold(req);
        return;
      }
      mg_thread_abort(t);
      continue;
    }
    if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, req->id, "Lua error in log hook: %s", t->error);
    mg_thread_release(t);
  }
  if (detached) {
    mg_lua_detached_end();
    mg_req_unhold(req); /* may free it */
  }
}

static void log_phase(mg_req_t *req) { log_hooks_from(req, 0, 0); }

/* ngx.arg while body_filter hooks run: the chunk is in a registry slot (a C function called
 * from the hook cannot reach the caller's stack) with eof; bf_set says ngx.arg[1] was assigned. */
static int bf_ref = LUA_NOREF, bf_on, bf_eof, bf_set;

int mg_lua_body_arg(lua_State *L, int i) {
  if (!bf_on || !(mg_lua_phase_now & MG_PH_BODY_FILTER)) return luaL_error(L, "ngx.arg is only in body_filter hooks");
  if (i == 1) lua_rawgeti(L, LUA_REGISTRYINDEX, bf_ref);
  else if (i == 2) lua_pushboolean(L, bf_eof);
  else lua_pushnil(L);
  return 1;
}

int mg_lua_body_arg_set(lua_State *L, int i, int vidx) {
  if (!bf_on || !(mg_lua_phase_now & MG_PH_BODY_FILTER)) return luaL_error(L, "ngx.arg is only in body_filter hooks");
  if (i != 1) return luaL_error(L, "assigning ngx.arg[%d] is not supported by moongate (ngx.arg[1], the chunk, is)", i);
  int t = lua_type(L, vidx);
  if (t == LUA_TNIL) lua_pushliteral(L, "");
  else if (t == LUA_TSTRING || t == LUA_TNUMBER) lua_pushvalue(L, vidx);
  else return luaL_error(L, "ngx.arg[1] must be a string, got %s", lua_typename(L, t));
  lua_tostring(L, -1);
  lua_rawseti(L, LUA_REGISTRYINDEX, bf_ref);
  bf_set = 1;
  return 0;
}

/* Every hook sees the chunk the previous one left; a string return replaces it. MG_OK with
 * the chunk to send in *out (malloc'd, the caller's), or -1 (a failure) after logging. */
static int body_filter(mg_req_t *req, const char *data, size_t len, int eof, char **out, size_t *out_len) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_pushlstring(L, data, len); /* the current chunk */
  int rc = MG_OK;
  mg_lua_req_t *lr = mg_lua_req_attach(req);
  int saved = lr->phase, saved_now = mg_lua_phase_now;
  mg_req_t *saved_req = mg_lua_req_now;
  int saved_on = bf_on, saved_eof = bf_eof;
  mg_lua_req_now = req;
  if (bf_ref == LUA_NOREF) lua_pushnil(L), bf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  bf_on = 1, bf_eof = eof;
  for (int i = 0, n = mg_req_hook_count(req, MG_PHASE_BODY_FILTER); i < n; i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, mg_req_hook_at(req, MG_PHASE_BODY_FILTER, i));
    mg_lua_push_req(L, req);
    mg_lua_push_res(L, req);
    lua_pushvalue(L, top + 1);
    lua_pushboolean(L, eof);
    lua_pushvalue(L, top + 1); /* what ngx.arg[1] reads */
    lua_rawseti(L, LUA_REGISTRYINDEX, bf_ref);
    bf_set = 0;
    lr->phase = mg_lua_phase_now = MG_PH_BODY_FILTER;
    char err[2048];
    rc = timed_call(L, 4, 1, err, sizeof err);
    lr->phase = saved, mg_lua_phase_now = saved_now;
    if (rc < 0) {
      mg_log_error(MG_LOG_ERROR, req->id, "Lua error in body_filter hook: %s", err);
      break;
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_replace(L, top + 1);
    } else {
      lua_pop(L, 1);
      if (bf_set) lua_rawgeti(L, LUA_REGISTRYINDEX, bf_ref), lua_replace(L, top + 1);
    }
  }
  if (rc == MG_OK) {
    size_t n;
    const char *s = lua_tolstring(L, top + 1, &n);
    *out = mg_malloc(n ? n : 1);
    memcpy(*out, s, n);
    *out_len = n;
  }
  mg_lua_req_now = saved_req;
  bf_on = saved_on, bf_eof = saved_eof;
  lua_settop(L, top);
  return rc;
}

/* ---- balancer ------------------------------------------------------------------------------- */

/* The members as plain views, the second argument of a balancer hook or Lua method. */
static void push_members(lua_State *L, mg_balancer_t *b) {
  uint64_t now = mg_now_ms();
  lua_createtable(L, b->nmembers, 0);
  for (int i = 0, n = 0; i < b->nmembers; i++) {
    mg_member_t *m = &b->members[i];
    if (!mg_member_shown(m)) continue; /* SPEC 20: a name's slot without an address */
    lua_createtable(L, 0, 13);
    lua_pushinteger(L, i + 1);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, m->addr.url);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, m->addr.text);
    lua_setfield(L, -2, "address");
    if (m->route) lua_pushstring(L, m->route), lua_setfield(L, -2, "route");
    lua_pushinteger(L, m->lbfactor);
    lua_setfield(L, -2, "lbfactor");
    char flags[8] = "", *f = flags;
    if (m->flags & MG_MEMBER_DISABLED) *f++ = 'D';
    if (m->flags & MG_MEMBER_HOT_STANDBY) *f++ = 'H';
    if (m->flags & MG_MEMBER_STOPPED) *f++ = 'S';
    if (m->flags & MG_MEMBER_DRAINING) *f++ = 'N';
    *f = 0;
    lua_pushstring(L, flags);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)m->local.inflight);
    lua_setfield(L, -2, "inflight");
    lua_pushnumber(L, (lua_Number)m->local.requests);
    lua_setfield(L, -2, "requests");
    lua_pushnumber(L, (lua_Number)m->local.errors);
    lua_setfield(L, -2, "errors");
    lua_pushboolean(L, mg_member_usable(m, now));
    lua_setfield(L, -2, "usable");
    /* SPEC 20: its max_conns (0: none) and the slots taken over all workers */
    lua_pushinteger(L, m->cap ? __atomic_load_n(&m->cap->max, __ATOMIC_RELAXED) : m->max_conns);
    lua_setfield(L, -2, "max_conns");
    lua_pushinteger(L, m->cap ? __atomic_load_n(&m->cap->busy, __ATOMIC_RELAXED) : 0);
    lua_setfield(L, -2, "slots_used");
    lua_pushboolean(L, mg_member_full(m));
    lua_setfield(L, -2, "full");
    lua_rawseti(L, -2, ++n);
  }
}

/* Reads a member choice at the top of the stack: a member view, an index or a URL. Pops it
 * and returns the 1-based member, or 0 for none. */
static int member_choice(lua_State *L, mg_balancer_t *b) {
  int idx = 0;
  if (lua_type(L, -1) == LUA_TNUMBER) idx = (int)lua_tointeger(L, -1);
  else if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "index");
    idx = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *url = lua_tostring(L, -1);
    for (int i = b->nmembers - 1; i >= 0; i--) /* the first (of a name's, the first with an address) */
      if (strcmp(b->members[i].addr.url, url) == 0 && (!idx || !b->members[i].unresolved)) idx = i + 1;
  }
  lua_pop(L, 1);
  return idx >= 1 && idx <= b->nmembers ? idx : 0;
}

/* Calls a balancer hook or Lua method as fn(req, members). MG_OK with its choice in *member
 * (0: none), or MG_ENDED when it failed (500, the error logged) or called req:exit. */
static int call_chooser(mg_req_t *req, mg_balancer_t *b, int ref, const char *what, int *member) {
  lua_State *L = req->cfg->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  mg_lua_push_req(L, req);
  push_members(L, b);
  mg_lua_req_t *lr = req->lua;
  int saved_now = mg_lua_phase_now;
  mg_req_t *saved_req = mg_lua_req_now;
  lr->phase = mg_lua_phase_now = MG_PH_BALANCER;
  mg_lua_req_now = req;
  char err[2048];
  int rc = timed_call(L, 2, 1, err, sizeof err);
  lr->phase = 0, mg_lua_phase_now = saved_now;
  mg_lua_req_now = saved_req;
  if (rc < 0) {
    mg_log_error(MG_LOG_ERROR, req->id, "Lua error in %s of balancer %s: %s", what, b->name, err);
    mg_req_error(req, 500, NULL);
    return MG_ENDED;
  }
  *member = member_choice(L, b);
  assert(lua_gettop(L) == top);
  (void)top;
  const char *unused;
  if (mg_lua_take_exit(req, &unused) != MG_LUA_EXIT_NONE) return MG_ENDED;
  return MG_OK;
}

static int balancer_hook(mg_req_t *req, mg_balancer_t *b, int ref, int *member) {
  if (!mg_explain) return call_chooser(req, b, ref, "balancer hook", member);
  mg_explain->hook_begin(req, MG_PHASE_BALANCER, ref);
  /* Held: a hook that ends the request (req:exit(444) closes at once) must not take the
   * request hook_end reports on with it. */
  mg_req_hold(req);
  int rc = call_chooser(req, b, ref, "balancer hook", member);
  mg_explain->hook_end(req, rc == MG_ENDED ? "the hook failed or ended the request (see the error log)" : NULL);
  mg_req_unhold(req);
  return rc;
}

/* The hooks in order until one chooses a member or ends the request; then a Lua method. */
static int balancer(mg_req_t *req, mg_balancer_t *b, int method, int *member) {
  *member = 0;
  for (int i = 0, n = mg_req_hook_count(req, MG_PHASE_BALANCER); i < n; i++) {
    int rc = balancer_hook(req, b, mg_req_hook_at(req, MG_PHASE_BALANCER, i), member);
    if (rc != MG_OK || *member) return rc;
  }
  if (method && b->method == MG_LB_LUA) return call_chooser(req, b, b->method_ref, "method", member);
  return MG_OK;
}

/* ---- req.env as plain data ------------------------------------------------------------------ */

/* Copies req.env into req->env_list and req->env_pathinfo, the plain data cgi_env.c reads.
 * Cheap for a request whose Lua never made req.env. */
static void env_export(mg_req_t *req) {
  req->nenv_list = 0;
  req->env_pathinfo = 0;
  mg_lua_req_t *lr = req->lua;
  if (!lr || lr->env_ref == LUA_NOREF) return;
  lua_State *L = req->cfg->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lr->env_ref); /* env */
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) n++, lua_pop(L, 1);
  req->env_list = mg_pool_alloc(&req->pool, sizeof(mg_kv_t) * (size_t)(n ? n : 1));
  lua_pushnil(L);
  while (lua_next(L, -2)) { /* env key value */
    size_t nl = 0, vl = 0;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
    int remove = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    int t = lua_type(L, -1);
    const char *v = remove ? NULL : (t == LUA_TSTRING || t == LUA_TNUMBER) ? lua_tolstring(L, -1, &vl) : NULL;
    if (k && strcmp(k, "proxy-scgi-pathinfo") == 0) {
      req->env_pathinfo = !remove && t != LUA_TNIL;
    } else if (!k || (!v && !remove) || memchr(k, 0, nl) || (v && memchr(v, 0, vl)) || nl == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: entries must be name = string, number or false; one dropped");
    } else if (strcmp(k, "CONTENT_LENGTH") == 0 || strcmp(k, "SCGI") == 0) {
      mg_log_error(MG_LOG_WARN, req->id, "req.env: %s cannot be overridden", k);
    } else {
      mg_kv_t *kv = &req->env_list[req->nenv_list++];
      kv->name = mg_pool_strndup(&req->pool, k, nl);
      kv->value = v ? mg_pool_strndup(&req->pool, v, vl) : NULL;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ---- the table ------------------------------------------------------------------------------ */

static uint64_t calls(void) { return mg_lua_calls; }

static int running(const mg_req_t *req) { return mg_lua_req_now == req; }

static const mg_hooks_table_t lua_hooks = {
    .run = run_hook,
    .abandon = abandon,
    .header_filter = header_filter,
    .body_filter = body_filter,
    .log = log_phase,
    .balancer = balancer,
    .env_export = env_export,
    .worker_start = mg_lua_worker_init,
    .running = running,
    .calls = calls,
};

void mg_lua_hooks_install(void) { mg_hooks = &lua_hooks; }
