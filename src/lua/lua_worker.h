/* lua_worker: a worker's Lua before and as it starts serving: the request objects'
 * metatables, the run-time limit, the cosockets' default timeout, then the timers
 * (lua_timer.c) and the init_worker hooks (docs/reference.md, "init.lua"; docs/lua-api.md,
 * "Waiting: coroutines, cosockets, subrequests" and "Timers").
 *
 * An init_worker hook or a timer runs in a Lua thread without a request, so it may wait (a
 * cosocket to prime a cache); the worker serves meanwhile. One that fails is logged and the
 * worker goes on. */
#ifndef MG_LUA_WORKER_H
#define MG_LUA_WORKER_H

#include <uv.h>

#include "config.h"

/* Starts the timers and runs the init_worker hooks in a worker's loop (after
 * mg_lua_worker_prepare). Returns 0: a failed hook is logged, never a reason not to serve. */
int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop);
/* What a worker's Lua state needs before it serves, without init_worker or timers (--explain). */
void mg_lua_worker_prepare(mg_config_t *cfg, uv_loop_t *loop);

#endif
