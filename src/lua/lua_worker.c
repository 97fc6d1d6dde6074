/* lua_worker: see lua_worker.h. The timers themselves are lua_timer.c's. */
#include "lua_worker.h"

#include <lauxlib.h>

#include "log.h"
#include "lua_headers.h"
#include "lua_re.h"
#include "lua_req.h"
#include "lua_res.h"
#include "lua_socket.h"
#include "lua_socket_tls.h"
#include "lua_thread.h"
#include "lua_timer.h"
#include "lua_vm.h"

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
  mg_re_choose(cfg->L); /* mg.re: the FFI with the JIT compiler on, the classic C functions without */
  mg_socket_set_default_timeout(cfg->set.lua_socket_timeout);
  mg_ctls_configure(cfg->set.lua_ssl_trusted_certificate, (int)cfg->set.lua_ssl_verify_depth);
}

int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop) {
  lua_State *L = cfg->L;
  mg_lua_worker_prepare(cfg, loop);
  /* Before init_worker: its hooks may create timers. */
  mg_lua_timers_start(cfg, loop);
  for (int i = 0; i < cfg->init_worker.n; i++) {
    /* One that fails, before or after it waits, is logged and the next hook runs. */
    mg_thread_t *t = mg_thread_new(L, NULL, MG_PH_INIT_WORKER);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, cfg->init_worker.refs[i]);
    t->on_done = on_init_worker_done;
    int rc = mg_thread_start(t, 0);
    if (rc != MG_WAITS) on_init_worker_done(t, rc);
  }
  return 0;
}
