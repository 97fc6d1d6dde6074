/* lua_thread: Lua code that can wait (docs/lua-api.md, "Waiting: coroutines, cosockets, subrequests"), lua-nginx-module's model.
 *
 * Every hook and content handler runs in a coroutine taken from a per-worker pool (a
 * coroutine that returned normally is reused; one that failed or was abandoned is dropped).
 * A waiting API (mg.sleep, a cosocket operation, a subrequest, req:read_body, mg.wait)
 * records what it waits on with mg_thread_wait() and yields. When the I/O is done, its
 * callback pushes the results onto the coroutine's stack and calls mg_thread_resume() (from a
 * libuv callback, where nothing else is under way) or mg_thread_wake() (from anywhere: the
 * resume then happens on the next loop turn). Only this file resumes coroutines.
 *
 * Phases: the phase a thread runs in decides which APIs it may call. Waiting is allowed in
 * rewrite, access, content, log, timers and init_worker; in balancer, header_filter and
 * body_filter (which run as plain protected calls) a waiting call raises
 * "API disabled in the context of <phase>: <what>". A log hook runs after the response, so
 * there it may wait only on what is not its request's (mg.sleep, cosockets, light threads):
 * req:subrequest and the like raise the same error.
 *
 * Abort: mg_thread_abort() cancels the thread's current wait (the wait's cancel function
 * closes or stops what it holds and never resumes), aborts the light threads it spawned and
 * drops the coroutine without resuming it. */
#ifndef MG_LUA_THREAD_H
#define MG_LUA_THREAD_H

#include <lua.h>
#include <uv.h>

#include "request.h"

/* Phases as bits (1 << MG_PHASE_*, config.h), for the checks of where an API may run. */
enum {
  MG_PH_REWRITE = 1 << MG_PHASE_REWRITE,
  MG_PH_ACCESS = 1 << MG_PHASE_ACCESS,
  MG_PH_BALANCER = 1 << MG_PHASE_BALANCER,
  MG_PH_HEADER_FILTER = 1 << MG_PHASE_HEADER_FILTER,
  MG_PH_LOG = 1 << MG_PHASE_LOG,
  MG_PH_BODY_FILTER = 1 << MG_PHASE_BODY_FILTER,
  MG_PH_CONTENT = 1 << MG_PHASE_CONTENT,
  MG_PH_TIMER = 1 << MG_PHASE_TIMER,
  MG_PH_INIT_WORKER = 1 << MG_PHASE_INIT_WORKER,
};
#define MG_PH_WAITABLE (MG_PH_REWRITE | MG_PH_ACCESS | MG_PH_CONTENT | MG_PH_LOG | MG_PH_TIMER | MG_PH_INIT_WORKER)

/* The name of a phase given as its bit ("init" for 0: loading init.lua). */
const char *mg_lua_phase_name(int phase_bit);

/* The phase Lua code runs in right now (0 outside any). Set by whoever calls into Lua. */
extern int mg_lua_phase_now;
/* The request the running Lua code serves, NULL in a timer, init_worker or init.lua. Set by
 * whoever calls into Lua (a thread's resume, a plain hook call) and restored after, as
 * mg_lua_phase_now. The `ngx` API (lua_ngx.c) finds its request here. */
extern mg_req_t *mg_lua_req_now;

/* A thread's result is in the tree's vocabulary (request.h): MG_OK (the coroutine returned),
 * MG_WAITS (it waits: on_done follows), or MG_THREAD_ERROR, a failure and so negative: the
 * Lua code raised an error (t->error). */
enum { MG_THREAD_ERROR = -1 };

typedef struct mg_thread_s mg_thread_t;
typedef void (*mg_thread_done_cb)(mg_thread_t *t, int rc);

struct mg_thread_s {
  lua_State *co;
  int ref;           /* registry reference anchoring co */
  lua_State *L;      /* the configuration's main state */
  mg_req_t *req;     /* NULL for timers and init_worker */
  int phase;         /* MG_PH_* */
  mg_thread_done_cb on_done; /* a thread that waited and then ended: MG_OK or MG_THREAD_ERROR */
  void *data;        /* the owner's */
  /* The current wait: what to call to give it up on abort. */
  void (*cancel)(mg_thread_t *t);
  void *wait;
  /* Light threads (mg.spawn): children hang off the thread that spawned them. */
  mg_thread_t *parent, *children, *sibling;
  mg_thread_t *waiter; /* a thread blocked in mg.wait on this one */
  int handle_ref;      /* its userdata handle, LUA_NOREF when none */
  mg_thread_t *qnext;  /* the wake queue */
  int wake_nargs;
  void *sockets;       /* cosockets owned by a thread without a request (timers) */
  char *error;         /* message and traceback of a failed thread (malloc'd) */
  size_t message_len;  /* the message alone: error[0..message_len), what mg.wait returns */
  unsigned done : 1, failed : 1, queued : 1, waiting : 1, released : 1, exited : 1;
};

/* Sets the loop the wake queue runs on (once per worker). */
void mg_thread_init(uv_loop_t *loop);
uv_loop_t *mg_thread_loop(void);

/* A thread ready to run: push the function and its arguments onto t->co, then call
 * mg_thread_start. `req` may be NULL. Never fails (out of memory aborts). */
mg_thread_t *mg_thread_new(lua_State *L, mg_req_t *req, int phase);
/* Runs until the coroutine returns (MG_OK: its results are on t->co), fails
 * (MG_THREAD_ERROR: t->error) or waits (MG_WAITS: on_done is called when it has ended). */
int mg_thread_start(mg_thread_t *t, int nargs);
/* Gives the thread back: a finished coroutine returns to the pool. Aborts what still waits. */
void mg_thread_release(mg_thread_t *t);
/* Abandons a waiting thread (client gone, request ended): cancels its wait, never resumes it. */
void mg_thread_abort(mg_thread_t *t);

/* For waiting APIs, called from the lua_CFunction: checks that L may wait here (raising
 * "API disabled in the context of <phase>: <what>" otherwise) and returns the thread. */
mg_thread_t *mg_thread_check(lua_State *L, const char *what);
/* Under --explain a waiting call does not wait: `if (mg_explain) return mg_thread_explained(L);`
 * after mg_thread_check pushes nil, "explain" and returns 2. */
int mg_thread_explained(lua_State *L);
/* Records the wait and yields: `return mg_thread_wait(L, t, cancel, w);` */
int mg_thread_wait(lua_State *L, mg_thread_t *t, void (*cancel)(mg_thread_t *t), void *w);
/* The wait is over and its nargs results are pushed onto t->co: resume now / next turn. */
void mg_thread_resume(mg_thread_t *t, int nargs);
void mg_thread_wake(mg_thread_t *t, int nargs);

/* ngx.exit: ends the running thread `t` (L must be its own coroutine) as if its function had
 * returned: `return mg_thread_exit(L, t);`. */
int mg_thread_exit(lua_State *L, mg_thread_t *t);

/* The Lua thread running now, NULL in a plain protected call. */
mg_thread_t *mg_thread_current(void);

/* mg.sleep, mg.spawn, mg.wait into the table at the top of the stack. */
void mg_thread_open(lua_State *L);

#endif
