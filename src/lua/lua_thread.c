/* lua_thread: see lua_thread.h.
 *
 * The coroutine pool: lua_newthread costs an allocation and a registry slot, so a coroutine
 * that returned normally is kept (its stack emptied) and handed to the next hook. LuaJIT lets a
 * coroutine whose function returned be started again with a new function; one that failed, or
 * was abandoned while suspended, is dropped and collected. The pool is per Lua state, so per
 * worker (a reload makes new workers). */
#include "lua_thread.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "lua_request.h"
#include "lua_vm.h"
#include "phase.h"

#define POOL_MAX 256
#define THREAD_MT "moongate.thread"

int mg_lua_phase_now;

const char *mg_lua_phase_name(int phase_bit) {
  for (int p = 1; p < MG_PHASE_COUNT; p++)
    if (phase_bit == 1 << p) return mg_phase_name(p);
  return mg_phase_name(MG_PHASE_INIT);
}

mg_req_t *mg_lua_req_now;

static uv_loop_t *loop;
static mg_thread_t *running;
static struct {
  lua_State *L;
  lua_State *co[POOL_MAX];
  int ref[POOL_MAX];
  int n;
} pool;
static mg_thread_t *qhead, *qtail;
/* Released thread structs, reused: a hook that does not wait allocates nothing. */
static mg_thread_t *free_threads;
static int nfree_threads;
static uv_timer_t wake_timer;
static int wake_timer_inited;

/* Set by lua_socket.c: closes the cosockets a thread without a request owned. */
void (*mg_thread_release_hook)(mg_thread_t *t);

void mg_thread_init(uv_loop_t *l) { loop = l; }

uv_loop_t *mg_thread_loop(void) { return loop; }

mg_thread_t *mg_thread_current(void) { return running; }

mg_thread_t *mg_thread_new(lua_State *L, mg_req_t *req, int phase) {
  mg_thread_t *t = free_threads;
  if (t) {
    free_threads = t->qnext;
    nfree_threads--;
    memset(t, 0, sizeof *t);
  } else {
    t = mg_calloc(1, sizeof *t);
  }
  t->L = L, t->req = req, t->phase = phase;
  t->handle_ref = LUA_NOREF;
  if (pool.L == L && pool.n > 0) {
    pool.n--;
    t->co = pool.co[pool.n], t->ref = pool.ref[pool.n];
  } else {
    t->co = lua_newthread(L);        /* L: co */
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return t;
}

/* Runs the coroutine until it returns, fails or waits. */
static int thread_run(mg_thread_t *t, int nargs) {
  mg_thread_t *saved = running;
  int saved_phase = mg_lua_phase_now;
  /* A thread with a request runs its Lua code, so the request is attached (mg_lua_push_req). */
  mg_lua_req_t *lr = t->req ? t->req->lua : NULL;
  int saved_req_phase = lr ? lr->phase : 0;
  mg_req_t *saved_req = mg_lua_req_now;
  running = t;
  mg_lua_phase_now = t->phase;
  mg_lua_req_now = t->req;
  if (lr) lr->phase = t->phase;
  t->cancel = NULL, t->wait = NULL, t->waiting = 0;
  mg_lua_calls++;
  int outer = mg_lua_depth == 0;
  uint64_t t0 = outer ? uv_hrtime() : 0;
  mg_lua_enter();
  int rc = lua_resume(t->co, nargs);
  mg_lua_leave();
  if (outer && t->phase) mg_metrics_lua(__builtin_ctz((unsigned)t->phase), (uv_hrtime() - t0) / 1000); /* SPEC 20 */
  running = saved;
  mg_lua_phase_now = saved_phase;
  mg_lua_req_now = saved_req;
  if (lr) lr->phase = saved_req_phase;
  if (rc == LUA_YIELD) {
    if (t->waiting) return MG_WAITS;
    if (t->exited) { /* ngx.exit: the coroutine stays suspended and is dropped, never resumed */
      t->done = 1;
      return MG_OK;
    }
    /* A bare coroutine.yield() in a hook: nothing would ever resume it. */
    t->error = mg_strdup("coroutine.yield() called outside a waiting call (use mg.sleep, cosockets, mg.wait)");
    t->message_len = strlen(t->error);
    t->failed = 1;
    return MG_THREAD_ERROR;
  }
  if (rc == 0) {
    t->done = 1;
    return MG_OK;
  }
  const char *msg = lua_tostring(t->co, -1);
  if (!msg) msg = "(error object is not a string)";
  t->message_len = strlen(msg);
  luaL_traceback(t->L, t->co, msg, 0);
  t->error = mg_strdup(lua_tostring(t->L, -1));
  lua_pop(t->L, 1);
  t->done = 1, t->failed = 1;
  return MG_THREAD_ERROR;
}

int mg_thread_start(mg_thread_t *t, int nargs) { return thread_run(t, nargs); }

void mg_thread_resume(mg_thread_t *t, int nargs) {
  /* The response may end while the thread runs (a body_filter hook failing under ngx.say
   * answers 500 at once, a client gone during a write): the request is held until the run is
   * over, and the thread is kept out of req->thread meanwhile so that the request's end does
   * not release it under its own feet. */
  mg_req_t *req = t->req;
  int was_finished = req ? req->finished : 0;
  void *waiting_on = NULL;
  if (req) {
    mg_req_hold(req);
    waiting_on = req->thread;
    req->thread = NULL;
  }
  int rc = thread_run(t, nargs);
  if (req && !was_finished && req->finished) {
    mg_thread_release(t); /* nothing is left to answer: its results and any new wait are dropped */
  } else {
    if (req) req->thread = waiting_on;
    if (rc != MG_WAITS) t->on_done(t, rc);
  }
  if (req) mg_req_unhold(req);
}

static void unqueue(mg_thread_t *t) {
  mg_thread_t **pp = &qhead, *prev = NULL;
  while (*pp && *pp != t) prev = *pp, pp = &(*pp)->qnext;
  if (!*pp) return;
  *pp = t->qnext;
  if (qtail == t) qtail = prev;
  t->queued = 0;
}

static void on_wake_timer(uv_timer_t *tm) {
  (void)tm;
  /* Threads woken while this runs wait for the next turn: a thread that keeps waking itself
   * (mg.sleep(0) in a loop) cannot starve the loop. */
  mg_thread_t *last = qtail;
  while (qhead) {
    mg_thread_t *t = qhead;
    qhead = t->qnext;
    if (!qhead) qtail = NULL;
    t->queued = 0;
    mg_thread_resume(t, t->wake_nargs);
    if (t == last) break;
  }
  if (qhead) uv_timer_start(&wake_timer, on_wake_timer, 0, 0);
}

void mg_thread_wake(mg_thread_t *t, int nargs) {
  t->wake_nargs = nargs;
  t->cancel = NULL, t->wait = NULL;
  t->queued = 1;
  t->qnext = NULL;
  if (qtail) qtail->qnext = t;
  else qhead = t;
  qtail = t;
  if (!wake_timer_inited) {
    uv_timer_init(loop, &wake_timer);
    uv_unref((uv_handle_t *)&wake_timer);
    wake_timer_inited = 1;
  }
  if (!uv_is_active((uv_handle_t *)&wake_timer)) uv_timer_start(&wake_timer, on_wake_timer, 0, 0);
}

static void detach_child(mg_thread_t *c) {
  if (!c->parent) return;
  mg_thread_t **pp = &c->parent->children;
  while (*pp && *pp != c) pp = &(*pp)->sibling;
  if (*pp) *pp = c->sibling;
  c->parent = NULL;
}

void mg_thread_release(mg_thread_t *t) {
  if (t->released) return;
  t->released = 1;
  /* Light threads not waited for end with the thread that spawned them. */
  while (t->children) {
    mg_thread_t *c = t->children;
    detach_child(c);
    mg_thread_release(c);
  }
  if (t->waiting && t->cancel) t->cancel(t);
  t->cancel = NULL;
  if (t->queued) unqueue(t);
  if (t->parent) detach_child(t);
  if (t->handle_ref != LUA_NOREF) {
    lua_rawgeti(t->L, LUA_REGISTRYINDEX, t->handle_ref);
    *(mg_thread_t **)lua_touserdata(t->L, -1) = NULL;
    lua_pop(t->L, 1);
    luaL_unref(t->L, LUA_REGISTRYINDEX, t->handle_ref);
  }
  if (mg_thread_release_hook) mg_thread_release_hook(t);
  if (t->done && !t->failed && lua_status(t->co) == 0 && pool.n < POOL_MAX && (pool.L == t->L || pool.n == 0)) {
    lua_settop(t->co, 0);
    pool.L = t->L;
    pool.co[pool.n] = t->co, pool.ref[pool.n] = t->ref;
    pool.n++;
  } else {
    luaL_unref(t->L, LUA_REGISTRYINDEX, t->ref);
  }
  free(t->error);
#ifndef MG_NO_POOLS
  if (nfree_threads < POOL_MAX) {
    t->qnext = free_threads;
    free_threads = t;
    nfree_threads++;
    return;
  }
#endif
  free(t);
}

void mg_thread_abort(mg_thread_t *t) { mg_thread_release(t); }

/* A wait that works on the request itself (its body, a subrequest): none once the response is
 * complete, in a log hook. */
static int waits_on_request(const char *what) {
  return strncmp(what, "req:", 4) == 0 || strncmp(what, "ngx.req.", 8) == 0 || strncmp(what, "ngx.location.", 13) == 0;
}

mg_thread_t *mg_thread_check(lua_State *L, const char *what) {
  mg_thread_t *t = running;
  if (!t || !(mg_lua_phase_now & MG_PH_WAITABLE) || (mg_lua_phase_now == MG_PH_LOG && waits_on_request(what)))
    luaL_error(L, "API disabled in the context of %s: %s", mg_lua_phase_name(mg_lua_phase_now), what);
  if (t->co != L) luaL_error(L, "%s: cannot wait inside a coroutine the script created itself", what);
  return t;
}

int mg_thread_exit(lua_State *L, mg_thread_t *t) {
  t->exited = 1;
  return lua_yield(L, 0);
}

int mg_thread_explained(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "explain");
  return 2;
}

int mg_thread_wait(lua_State *L, mg_thread_t *t, void (*cancel)(mg_thread_t *t), void *w) {
  t->cancel = cancel, t->wait = w, t->waiting = 1;
  return lua_yield(L, 0);
}

/* ---- mg.sleep --------------------------------------------------------------------------------- */

typedef struct {
  uv_timer_t timer;
  mg_thread_t *t;
} sleep_t;

static void on_sleep_closed(uv_handle_t *h) { free(h->data); }

static void on_sleep(uv_timer_t *tm) {
  sleep_t *s = tm->data;
  mg_thread_t *t = s->t;
  uv_close((uv_handle_t *)tm, on_sleep_closed);
  mg_thread_resume(t, 0);
}

static void sleep_cancel(mg_thread_t *t) {
  sleep_t *s = t->wait;
  uv_close((uv_handle_t *)&s->timer, on_sleep_closed);
}

/* mg.sleep(seconds): waits without blocking the worker; 0 yields to the loop once. NaN, an
 * infinity or a negative time is a bad argument; one above 2^31 - 1 ms is capped to it. */
static int l_sleep(lua_State *L) {
  uint64_t ms;
  if (mg_lua_timeout_ms(luaL_checknumber(L, 1), 1000, 0, &ms) < 0)
    return luaL_argerror(L, 1, "seconds must be a finite number from 0");
  mg_thread_t *t = mg_thread_check(L, "mg.sleep");
  if (mg_explain) return mg_thread_explained(L);
  sleep_t *s = mg_malloc(sizeof *s);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->t = t;
  mg_timer_start(&s->timer, on_sleep, ms, 0);
  return mg_thread_wait(L, t, sleep_cancel, s);
}

/* ---- mg.spawn / mg.wait ---------------------------------------------------------------------- */

/* Pushes `true, results...` or `false, err` of a finished light thread onto L and releases it. */
static int take_result(lua_State *L, mg_thread_t *c) {
  int n;
  if (c->failed) {
    lua_pushboolean(L, 0);
    /* The message, as ngx.thread.wait gives it; the traceback is for the error log. */
    if (c->error) lua_pushlstring(L, c->error, c->message_len);
    else lua_pushliteral(L, "failed");
    n = 2;
  } else {
    int nres = lua_gettop(c->co);
    lua_pushboolean(L, 1);
    lua_xmove(c->co, L, nres);
    n = nres + 1;
  }
  detach_child(c);
  mg_thread_release(c);
  return n;
}

static void clear_waiters(mg_thread_t *w) {
  for (mg_thread_t *c = w->children; c; c = c->sibling)
    if (c->waiter == w) c->waiter = NULL;
}

static void on_child_done(mg_thread_t *c, int rc) {
  if (rc == MG_THREAD_ERROR)
    mg_log_error(MG_LOG_ERROR, c->req ? c->req->id : NULL, "Lua error in a light thread: %s", c->error);
  mg_thread_t *w = c->waiter;
  if (!w) return; /* kept until mg.wait takes its result, or its parent ends */
  clear_waiters(w);
  int n = take_result(w->co, c);
  /* Inside the child's resume: the waiter runs on the next loop turn. */
  mg_thread_wake(w, n);
}

static mg_thread_t *check_handle(lua_State *L, int idx) {
  mg_thread_t **b = luaL_checkudata(L, idx, THREAD_MT);
  if (!*b) luaL_argerror(L, idx, "a light thread that was already waited for");
  return *b;
}

/* mg.spawn(fn, ...) → a light thread running fn(...) in a new coroutine of the same request.
 * It runs at once, until it first waits. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  mg_thread_t *p = mg_thread_check(L, "mg.spawn");
  int n = lua_gettop(L);
  mg_thread_t *c = mg_thread_new(p->L, p->req, p->phase);
  c->parent = p;
  c->sibling = p->children;
  p->children = c;
  c->on_done = on_child_done;
  lua_xmove(L, c->co, n); /* L: (empty); co: fn args... */
  mg_thread_t **box = lua_newuserdata(L, sizeof *box);
  *box = c;
  luaL_getmetatable(L, THREAD_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  c->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int rc = mg_thread_start(c, n - 1);
  if (rc != MG_WAITS) on_child_done(c, rc);
  return 1;
}

static void wait_cancel(mg_thread_t *w) { clear_waiters(w); }

/* mg.wait(t1[, t2, ...]) → true, results... of the first to finish, or false, err. */
static int l_wait(lua_State *L) {
  mg_thread_t *w = mg_thread_check(L, "mg.wait");
  int n = lua_gettop(L);
  if (n == 0) return luaL_argerror(L, 1, "a light thread from mg.spawn expected");
  for (int i = 1; i <= n; i++) {
    mg_thread_t **b = luaL_checkudata(L, i, THREAD_MT);
    if (!*b) { /* OpenResty's result, not an error */
      lua_pushnil(L);
      lua_pushliteral(L, "already waited or killed");
      return 2;
    }
    if ((*b)->parent != w) return luaL_argerror(L, i, "only the thread that spawned it can wait for it");
  }
  for (int i = 1; i <= n; i++) {
    mg_thread_t *c = check_handle(L, i);
    if (c->done) {
      lua_settop(L, 0);
      return take_result(L, c);
    }
  }
  for (int i = 1; i <= n; i++) check_handle(L, i)->waiter = w;
  lua_settop(L, 0);
  return mg_thread_wait(L, w, wait_cancel, NULL);
}

/* mg.kill(t) (ngx.thread.kill): ends a light thread the caller spawned, with what it waits on.
 * 1, or nil and OpenResty's error: "already waited or killed", "killer not parent". */
static int l_kill(lua_State *L) {
  mg_thread_t *k = mg_thread_check(L, "mg.kill");
  mg_thread_t **b = luaL_checkudata(L, 1, THREAD_MT);
  if (!*b) {
    lua_pushnil(L);
    lua_pushliteral(L, "already waited or killed");
    return 2;
  }
  mg_thread_t *c = *b;
  if (c->parent != k) {
    lua_pushnil(L);
    lua_pushliteral(L, "killer not parent");
    return 2;
  }
  detach_child(c);
  mg_thread_release(c);
  lua_pushinteger(L, 1);
  return 1;
}

void mg_thread_open(lua_State *L) {
  if (luaL_newmetatable(L, THREAD_MT)) {
    lua_pushliteral(L, "light thread");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"sleep", l_sleep}, {"spawn", l_spawn}, {"wait", l_wait}, {"kill", l_kill}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
