/* lua_vm: the Lua state of a configuration.
 *
 * Creates a state with the standard libraries and the embedded `moongate` module, calls Lua
 * functions under a traceback handler, and locks globals once init.lua has run so that a
 * misspelt name is an error, not a new global.
 *
 * The run-time limit (lua_max_run_time): a worker's Lua code runs in bursts, each from the
 * moment C enters Lua (a coroutine resumed, a protected call) until control is back in C at
 * the outermost level. A burst that spends more CPU than the limit is ended: a CPU-time timer
 * notices it and sets an instruction count hook that raises "<file:line>: ran longer than
 * lua_max_run_time (<t>s) without yielding: ended" at every instruction until the burst is
 * over, so a pcall that catches the error cannot keep the loop going. Only the interpreter calls hooks: LuaJIT's compiled traces
 * never do (unless LuaJIT is built with LUAJIT_ENABLE_CHECKHOOK, which distributions do not),
 * and `while true do end` compiles into a trace that never exits. With the limit on, the
 * worker's Lua state therefore runs without the JIT compiler. */
#ifndef MG_LUA_VM_H
#define MG_LUA_VM_H

#include <lua.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* Protected calls made by this process: the status page reports it, so a user can see that a
 * route without hooks never enters Lua. */
extern uint64_t mg_lua_calls;

/* A new state with package.path starting at `dir`. Returns NULL when out of memory. */
lua_State *mg_lua_new(const char *dir);

/* Calls the function below `nargs` arguments on the stack, as lua_pcall does, with a
 * traceback handler. Returns 0, or -1 with the error message and traceback in err. The
 * function and its arguments are popped; nresults values are left on success. */
int mg_lua_call(lua_State *L, int nargs, int nresults, char *err, size_t err_len);

/* Makes reads of undefined globals and writes of new ones raise an error. */
void mg_lua_lock_globals(lua_State *L);

/* Puts a worker's state under lua_max_run_time (`ms`, 0: no limit, the JIT compiler stays
 * on). Once per worker, before it serves: it starts a CPU-time timer of the calling thread
 * that signals MG_LUA_TICK_SIGNAL every ms/8 of CPU. */
void mg_lua_limit_install(lua_State *L, uint64_t ms);
#define MG_LUA_TICK_SIGNAL (SIGRTMIN + 4)

/* Every entry from C into Lua is wrapped in mg_lua_enter()/mg_lua_leave(): the outermost
 * one starts a new burst. A few stores and a test: the timer's signal handler does the rest. */
extern volatile sig_atomic_t mg_lua_depth, mg_lua_burst, mg_lua_ending;
void mg_lua_limit_reset(void);
static inline void mg_lua_enter(void) {
  /* The burst first: a tick between the two stores sees depth 0 and counts nothing. */
  if (mg_lua_depth == 0) mg_lua_burst = (mg_lua_burst + 1) & 0x3fffffff; /* no signed overflow */
  mg_lua_depth++;
}
static inline void mg_lua_leave(void) {
  if (--mg_lua_depth == 0 && mg_lua_ending) mg_lua_limit_reset();
}

/* The largest timeout the Lua API takes (2^31 - 1 ms, about 24.8 days, the largest
 * lua-nginx-module accepts); a larger one is capped to it. */
#define MG_LUA_MAX_TIMEOUT_MS 2147483647.0

/* Reads a timeout of the Lua API: `v` in units of `unit_ms` milliseconds (1 for cosockets, 1000
 * for seconds). 0 means `dflt_ms` (lua-nginx-module's rule), a value above the cap is capped.
 * Returns 0 with the milliseconds in *ms, or -1 for NaN, an infinity or a negative number
 * (the caller raises its "bad argument"). */
int mg_lua_timeout_ms(double v, double unit_ms, uint64_t dflt_ms, uint64_t *ms);

#endif
