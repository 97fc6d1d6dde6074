/* lua_timer: timers created from Lua at run time, the worker's identity, and the count of Lua
 * runs detached from any connection (docs/lua-api.md, "Timers"), as lua-nginx-module's
 * ngx_http_lua_timer.c and ngx_http_lua_worker.c have them.
 *
 * mg.timer.at(delay, fn, ...) and mg.timer.every(delay, fn, ...) may be called from any
 * phase of a worker (a hook, a handler, a filter, a log hook, another timer, init_worker);
 * fn(premature, ...) runs later in a Lua thread without a request, so it may wait. A worker
 * holds at most lua_max_pending_timers timers not yet run (beyond: nil, "too many pending
 * timers") and runs at most lua_max_running_timers at once: a timer due when that many run is
 * dropped with an alert in the error log, as OpenResty drops it. A log hook that waits
 * (lua_hooks.c) runs on, detached from its connection, and counts as a running timer.
 *
 * When the worker stops, mg_lua_timers_exit() runs every pending timer at once with
 * premature = true; the worker then waits (within shutdown_timeout) until the runs under way
 * have ended. While it stops, a new timer with a delay above 0 gets nil, "process exiting". */
#ifndef MG_LUA_TIMER_H
#define MG_LUA_TIMER_H

#include <lua.h>
#include <uv.h>

#include "config.h"

/* mg.timer.at/every/running_count/pending_count into the mg.timer table, mg.worker.* (id, count,
 * pid, pids, exiting) into a new mg.worker table, of the module table at the top of the stack. */
void mg_lua_timer_open(lua_State *L);

/* A worker starts: its slot (0..count-1, the same slot across reloads) and the worker count.
 * Before it (init.lua, --explain) there is no worker: mg.worker.id() is nil and mg.timer.at
 * raises. */
void mg_lua_worker_identity(int id, int count);
/* The timers of this worker run cfg's Lua on loop (after mg_lua_worker_prepare). */
void mg_lua_timers_start(mg_config_t *cfg, uv_loop_t *loop);

/* The worker stops: mg.worker.exiting() becomes true, every pending timer runs now with
 * premature = true. on_idle(arg) is called each time the last running timer or detached run
 * ends (mg_lua_timers_busy() is then 0). */
void mg_lua_timers_exit(void (*on_idle)(void *arg), void *arg);
/* Timers pending or running, and detached runs: what a stopping worker waits for. */
int mg_lua_timers_busy(void);

/* A Lua run that outlives its connection (a log hook that waits) asks for one of the running
 * slots: 1 when it got one (counted until mg_lua_detached_end), 0 when
 * lua_max_running_timers already run (an error is logged, naming `what`). */
int mg_lua_detached_begin(const char *what, const char *req_id);
void mg_lua_detached_end(void);

#endif
