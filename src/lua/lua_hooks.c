/* lua_hooks: the hooks table of core/hooks.h, as the Lua binding fills it.
 *
 * The core, the transports and the handlers reach Lua only through this table. Rewrite and
 * access hooks run here in Lua threads (lua_thread.c): one that never waits costs a coroutine
 * resume; one that waits hands the request back to the phase engine with mg_phase_resume when
 * its thread has ended. The other entries are the binding's functions in lua_request.c. */
#include "lua_hooks.h"

#include "hooks.h"
#include "log.h"
#include "lua_request.h"
#include "lua_thread.h"
#include "lua_vm.h"
#include "phase.h"

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
  mg_thread_t *t = mg_lua_hook_thread(req, ref, 1 << phase);
  t->on_done = on_hook_done;
  int rc = mg_thread_start(t, 1);
  if (rc == MG_THREAD_WAIT) {
    req->thread = t;
    return MG_WAITS;
  }
  return hook_result(req, t, rc);
}

static void abandon(mg_req_t *req) {
  mg_thread_t *t = req->thread;
  req->thread = NULL;
  if (t) mg_thread_abort(t);
}

static uint64_t calls(void) { return mg_lua_calls; }

static const mg_hooks_table_t lua_hooks = {
    .run = run_hook,
    .abandon = abandon,
    .header_filter = mg_lua_header_filter,
    .body_filter = mg_lua_body_filter,
    .log = mg_lua_log_phase,
    .balancer = mg_lua_balancer,
    .env_export = mg_lua_env_export,
    .worker_start = mg_lua_worker_init,
    .calls = calls,
};

void mg_lua_hooks_install(void) { mg_hooks = &lua_hooks; }
