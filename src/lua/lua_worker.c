/* lua_worker: see lua_worker.h.
 *
 * A timer's run that still waits when its next tick comes is not started again: that tick is
 * skipped, so a slow timer never piles up runs. Timers are unreferenced handles: they never
 * keep a worker's loop alive on their own. */
#include "lua_worker.h"

#include <lauxlib.h>

#include "log.h"
#include "lua_headers.h"
#include "lua_req.h"
#include "lua_res.h"
#include "lua_socket.h"
#include "lua_thread.h"
#include "lua_vm.h"

typedef struct {
  uv_timer_t t;
  mg_config_t *cfg;
  int ref;
  mg_thread_t *running; /* a run that still waits: the next tick is skipped */
} lua_timer_t;

static void on_timer_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in timer: %s", t->error);
  lua_timer_t *lt = t->data;
  if (lt) lt->running = NULL;
  mg_thread_release(t);
}

static void on_lua_timer(uv_timer_t *tm) {
  lua_timer_t *lt = (lua_timer_t *)tm;
  if (lt->running) return;
  mg_thread_t *t = mg_thread_new(lt->cfg->L, NULL, MG_PH_TIMER);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, lt->ref);
  t->on_done = on_timer_done;
  t->data = lt;
  int rc = mg_thread_start(t, 0);
  if (rc == MG_WAITS) lt->running = t;
  else on_timer_done(t, rc);
}

/* A failed init_worker hook is logged (its message carries init.lua's file:line) and the
 * worker serves anyway, as OpenResty's does: a worker that exited instead would be restarted
 * into the same error, and a reload into it would leave no worker serving. */
static void on_init_worker_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in init_worker (the worker serves anyway): %s", t->error);
  mg_thread_release(t);
}

void mg_lua_worker_prepare(mg_config_t *cfg, uv_loop_t *loop) {
  mg_lua_req_open(cfg->L);
  mg_lua_headers_open(cfg->L);
  mg_lua_res_open(cfg->L);
  mg_thread_init(loop);
  mg_lua_limit_install(cfg->L, cfg->set.lua_max_run_time);
  mg_socket_set_default_timeout(cfg->set.lua_socket_timeout);
}

int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop) {
  lua_State *L = cfg->L;
  mg_lua_worker_prepare(cfg, loop);
  for (int i = 0; i < cfg->init_worker.n; i++) {
    /* One that fails, before or after it waits, is logged and the next hook runs. */
    mg_thread_t *t = mg_thread_new(L, NULL, MG_PH_INIT_WORKER);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, cfg->init_worker.refs[i]);
    t->on_done = on_init_worker_done;
    int rc = mg_thread_start(t, 0);
    if (rc != MG_WAITS) on_init_worker_done(t, rc);
  }
  for (int i = 0; i < cfg->ntimers; i++) {
    lua_timer_t *lt = mg_calloc(1, sizeof *lt);
    lt->cfg = cfg, lt->ref = cfg->timers[i].ref;
    uv_timer_init(loop, &lt->t);
    uv_timer_start(&lt->t, on_lua_timer, (uint64_t)cfg->timers[i].ms, (uint64_t)cfg->timers[i].ms);
    uv_unref((uv_handle_t *)&lt->t);
  }
  return 0;
}
