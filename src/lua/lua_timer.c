/* lua_timer: see lua_timer.h.
 *
 * A timer is a libuv timer and a registry table { fn, arg1, ..., argN } that keeps its
 * function and arguments alive. Every timer not yet run is on one list, so that a stopping
 * worker can run them all at once (premature = true), as lua-nginx-module walks nginx's
 * timer tree for its own. Each run takes a coroutine of the thread pool (lua_thread.c), so a
 * timer function may wait; its cosockets belong to the run and close with it.
 *
 * mg.timer.every is lua-nginx-module's: each tick is a new run, counted as pending until it
 * fires, and runs of one timer may overlap when a run waits longer than the interval (the
 * periodic mg.timer(seconds, fn) of init.lua instead skips a tick while its last run waits).
 *
 * Timer handles are unreferenced: they never keep a loop alive on their own; a stopping
 * worker has run its pending timers before it waits. */
#include "lua_timer.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "lua_thread.h"
#include "lua_vm.h"
#include "pids.h"
#include "request.h"
#include "timeq.h"

typedef struct lua_timer_s {
  uv_timer_t h;                    /* h.data is the timer */
  struct lua_timer_s *prev, *next; /* the pending list */
  int ref;                         /* registry: { fn, args... } */
  int nargs;
  uint64_t every_ms; /* 0: one-shot */
} lua_timer_t;

/* A periodic timer of init.lua (mg.timer(seconds, fn)). */
typedef struct {
  uv_timer_t h;
  int ref;
  mg_thread_t *running; /* a run that still waits: the next tick is skipped */
} decl_timer_t;

static struct {
  lua_State *L;
  uv_loop_t *loop; /* NULL before the worker starts: no timers in init.lua */
  uint64_t max_pending, max_running;
  int npending, nrunning;
  lua_timer_t *head;
  int exiting;
  void (*on_idle)(void *arg);
  void *idle_arg;
  decl_timer_t *decl;
  int ndecl;
} tm;

static int worker_id = -1, worker_count;

void mg_lua_worker_identity(int id, int count) { worker_id = id, worker_count = count; }

int mg_lua_timers_busy(void) { return tm.npending + tm.nrunning; }

static void maybe_idle(void) {
  if (tm.exiting && tm.on_idle && tm.npending == 0 && tm.nrunning == 0) tm.on_idle(tm.idle_arg);
}

/* ---- the runs ---------------------------------------------------------------------------- */

static void on_run_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in timer: %s", t->error);
  mg_thread_release(t);
  tm.nrunning--;
  maybe_idle();
}

/* "file:line" where the timer's function was defined, for the error log. */
static const char *defined_at(lua_timer_t *t, char *buf, size_t len) {
  lua_State *L = tm.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_rawgeti(L, -1, 1); /* L: args fn */
  lua_Debug ar;
  if (lua_getinfo(L, ">S", &ar)) snprintf(buf, len, "%s:%d", ar.short_src, ar.linedefined);
  else snprintf(buf, len, "?");
  lua_pop(L, 1); /* L: (as before) */
  return buf;
}

/* Runs fn(premature, args...) in a new Lua thread: it may wait, and ends in on_run_done. */
static void timer_run(lua_timer_t *t, int premature) {
  if ((uint64_t)tm.nrunning >= tm.max_running) {
    /* OpenResty's rule and words: the run is dropped, never queued. */
    char at[256];
    mg_log(MG_LOG_ERROR, "lua failed to run timer with function defined at %s: %llu lua_max_running_timers are not enough",
           defined_at(t, at, sizeof at), (unsigned long long)tm.max_running);
    return;
  }
  mg_thread_t *th = mg_thread_new(tm.L, NULL, MG_PH_TIMER);
  lua_State *co = th->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, t->ref); /* co: args */
  lua_rawgeti(co, 1, 1);                      /* co: args fn */
  lua_pushboolean(co, premature);             /* co: args fn premature */
  for (int i = 0; i < t->nargs; i++) lua_rawgeti(co, 1, i + 2);
  lua_remove(co, 1); /* co: fn premature args... */
  th->on_done = on_run_done;
  tm.nrunning++;
  int rc = mg_thread_start(th, t->nargs + 1);
  if (rc != MG_WAITS) on_run_done(th, rc);
}

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

static void pending_unlink(lua_timer_t *t) {
  if (t->prev) t->prev->next = t->next;
  else tm.head = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  tm.npending--;
}

/* The timer is due (or the worker stops: premature). A one-shot timer, or any timer once the
 * worker stops, leaves the pending list and is freed; an every timer stays for its next tick. */
static void timer_fire(lua_timer_t *t, int premature) {
  int again = t->every_ms && !tm.exiting;
  if (!again) {
    pending_unlink(t);
    uv_timer_stop(&t->h);
  }
  timer_run(t, premature);
  if (!again) {
    luaL_unref(tm.L, LUA_REGISTRYINDEX, t->ref);
    uv_close((uv_handle_t *)&t->h, on_timer_closed);
  }
  maybe_idle();
}

static void on_timer(uv_timer_t *h) { timer_fire(h->data, 0); }

/* ---- mg.timer.at / every ------------------------------------------------------------------ */

/* lua-nginx-module's checks in its order; the delay in ms truncated as it truncates it. */
static int timer_new(lua_State *L, int every) {
  int nargs = lua_gettop(L);
  if (nargs < 2) return luaL_error(L, "expecting at least 2 arguments but got %d", nargs);
  double d = luaL_checknumber(L, 1);
  /* lua-nginx-module casts a negative delay to an unsigned one (a timer that never fires but
   * on exit); moongate refuses it. */
  if (!(d >= 0) || isinf(d)) return luaL_argerror(L, 1, "delay must be a finite number of seconds from 0");
  double m = d * 1000;
  uint64_t ms = m >= MG_LUA_MAX_TIMEOUT_MS ? (uint64_t)MG_LUA_MAX_TIMEOUT_MS : (uint64_t)m;
  if (every && ms == 0) return luaL_error(L, "delay cannot be zero");
  luaL_argcheck(L, lua_isfunction(L, 2) && !lua_iscfunction(L, 2), 2, "Lua function expected");
  if (mg_explain) return mg_thread_explained(L);
  if (!tm.loop)
    return luaL_error(L, "%s: timers run in a worker, not while init.lua loads: create them in an init_worker hook "
                         "(mg.on(\"init_worker\", fn)) or at request time, or declare a periodic one with mg.timer(seconds, fn)",
                      every ? "mg.timer.every" : "mg.timer.at");
  if (tm.exiting && ms > 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "process exiting");
    return 2;
  }
  if ((uint64_t)tm.npending >= tm.max_pending) {
    lua_pushnil(L);
    lua_pushliteral(L, "too many pending timers");
    return 2;
  }
  lua_timer_t *t = mg_calloc(1, sizeof *t);
  lua_createtable(L, nargs - 1, 0);
  for (int i = 2; i <= nargs; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i - 1);
  }
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->nargs = nargs - 2;
  t->every_ms = every ? ms : 0;
  uv_timer_init(tm.loop, &t->h);
  t->h.data = t;
  mg_timer_start(&t->h, on_timer, ms, t->every_ms);
  uv_unref((uv_handle_t *)&t->h);
  t->next = tm.head;
  if (tm.head) tm.head->prev = t;
  tm.head = t;
  tm.npending++;
  lua_pushinteger(L, 1); /* OpenResty's 1, not true */
  return 1;
}

static int l_at(lua_State *L) { return timer_new(L, 0); }
static int l_every(lua_State *L) { return timer_new(L, 1); }

static int l_running_count(lua_State *L) {
  lua_pushinteger(L, tm.nrunning);
  return 1;
}

static int l_pending_count(lua_State *L) {
  lua_pushinteger(L, tm.npending);
  return 1;
}

/* ---- mg.worker ---------------------------------------------------------------------------- */

static int l_worker_id(lua_State *L) {
  if (worker_id < 0) lua_pushnil(L); /* init.lua, as init_by_lua under a master: no worker yet */
  else lua_pushinteger(L, worker_id);
  return 1;
}

static int l_worker_count(lua_State *L) {
  if (!worker_count)
    return luaL_error(L, "mg.worker.count: no worker yet while init.lua loads (mg.workers may still change it); call "
                         "it in init_worker or later");
  lua_pushinteger(L, worker_count);
  return 1;
}

static int l_worker_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* mg.worker.pids() → { pid, ... }: the workers' pids by slot (this worker's own in its slot,
 * as lua-nginx-module puts the current process in its slot of ngx_processes), skipping a slot
 * with no worker right now. nil, "API disabled in the current context" in init.lua and
 * init_worker, as lua-resty-core's ngx.worker.pids. */
static int l_worker_pids(lua_State *L) {
  if (worker_id < 0 || mg_lua_phase_now == 0 || mg_lua_phase_now == MG_PH_INIT_WORKER) {
    lua_pushnil(L);
    lua_pushliteral(L, "API disabled in the current context");
    return 2;
  }
  if (mg_pids_get(0) < 0) return luaL_error(L, "mg.worker.pids: the master has no shared memory for the workers' pids");
  lua_createtable(L, worker_count, 0);
  int n = 0;
  for (int s = 0; s < worker_count; s++) {
    int pid = s == worker_id ? (int)getpid() : mg_pids_get(s);
    if (pid <= 0) continue;
    lua_pushinteger(L, pid);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static int l_worker_exiting(lua_State *L) {
  lua_pushboolean(L, tm.exiting);
  return 1;
}

void mg_lua_timer_open(lua_State *L) {
  /* stack: M */
  lua_getfield(L, -1, "timer"); /* M timer (a table callable as mg.timer(seconds, fn)) */
  static const luaL_Reg timer_fns[] = {
      {"at", l_at}, {"every", l_every}, {"running_count", l_running_count}, {"pending_count", l_pending_count}, {NULL, NULL}};
  luaL_register(L, NULL, timer_fns);
  lua_pop(L, 1); /* M */
  static const luaL_Reg worker_fns[] = {
      {"id", l_worker_id},           {"count", l_worker_count}, {"pid", l_worker_pid},
      {"pids", l_worker_pids},       {"exiting", l_worker_exiting}, {NULL, NULL}};
  lua_createtable(L, 0, 5);
  luaL_register(L, NULL, worker_fns);
  lua_setfield(L, -2, "worker"); /* M */
}

/* ---- the periodic timers of init.lua -------------------------------------------------------- */

static void on_decl_done(mg_thread_t *t, int rc) {
  if (rc == MG_THREAD_ERROR) mg_log_error(MG_LOG_ERROR, NULL, "Lua error in timer: %s", t->error);
  decl_timer_t *d = t->data;
  if (d) d->running = NULL;
  mg_thread_release(t);
}

static void on_decl_timer(uv_timer_t *h) {
  decl_timer_t *d = h->data;
  if (d->running) return;
  mg_thread_t *t = mg_thread_new(tm.L, NULL, MG_PH_TIMER);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, d->ref);
  t->on_done = on_decl_done;
  t->data = d;
  int rc = mg_thread_start(t, 0);
  if (rc == MG_WAITS) d->running = t;
  else on_decl_done(t, rc);
}

void mg_lua_timers_start(mg_config_t *cfg, uv_loop_t *loop) {
  tm.L = cfg->L, tm.loop = loop;
  tm.max_pending = cfg->set.lua_max_pending_timers;
  tm.max_running = cfg->set.lua_max_running_timers;
  tm.ndecl = cfg->ntimers;
  tm.decl = mg_calloc((size_t)(cfg->ntimers ? cfg->ntimers : 1), sizeof *tm.decl);
  for (int i = 0; i < cfg->ntimers; i++) {
    decl_timer_t *d = &tm.decl[i];
    d->ref = cfg->timers[i].ref;
    uv_timer_init(loop, &d->h);
    d->h.data = d;
    uv_timer_start(&d->h, on_decl_timer, (uint64_t)cfg->timers[i].ms, (uint64_t)cfg->timers[i].ms);
    uv_unref((uv_handle_t *)&d->h);
  }
}

/* ---- a stopping worker -------------------------------------------------------------------- */

void mg_lua_timers_exit(void (*on_idle)(void *arg), void *arg) {
  if (tm.exiting) return;
  tm.exiting = 1;
  tm.on_idle = on_idle, tm.idle_arg = arg;
  for (int i = 0; i < tm.ndecl; i++) uv_timer_stop(&tm.decl[i].h);
  /* The timers pending now, each run once, prematurely; those their runs create (a delay of
   * 0 is still allowed) run when due. */
  int n = tm.npending;
  if (!n) return;
  lua_timer_t **due = mg_malloc(sizeof *due * (size_t)n), *t = tm.head;
  for (int i = 0; i < n; i++, t = t->next) due[i] = t;
  for (int i = 0; i < n; i++) timer_fire(due[i], 1);
  free(due);
}

/* ---- runs detached from their connection ------------------------------------------------- */

int mg_lua_detached_begin(const char *what, const char *req_id) {
  if ((uint64_t)tm.nrunning >= tm.max_running) {
    mg_log_error(MG_LOG_ERROR, req_id, "%s waits but %llu lua_max_running_timers are not enough: it was ended", what,
                 (unsigned long long)tm.max_running);
    return 0;
  }
  tm.nrunning++;
  return 1;
}

void mg_lua_detached_end(void) {
  tm.nrunning--;
  maybe_idle();
}
