/* lua_request: the Lua state of one request, and the checks every request API makes.
 *
 * A request enters Lua only when a hook or handler is configured for it: the engine asks
 * mg_req_hook_count() first, which reads two counters and touches no Lua state, and a request
 * that never enters Lua costs the binding nothing (req->lua stays NULL). The first time Lua
 * touches a request (its `req` object is made, a subrequest is given an env), one
 * mg_lua_req_t is taken from the request's pool and a cleanup of that pool is registered: the
 * Lua side of the request (references, cosockets, a waiting thread) is released with it.
 *
 * The API around the request is split by what it owns: the req object (lua_req.c), the res
 * object (lua_res.c), the header proxies and the one rule for a table of header fields
 * (lua_headers.c), the request body (lua_body.c), the hook points of the core (lua_hooks.c),
 * a worker's start: init_worker and timers (lua_worker.c). This file is the lowest of them:
 * it calls none. */
#ifndef MG_LUA_REQUEST_H
#define MG_LUA_REQUEST_H

#include <lua.h>

#include "lua_thread.h"
#include "request.h"

/* The metatables of the request's objects, made once per worker (mg_lua_worker_prepare). */
#define MG_LUA_REQ_MT "moongate.req"
#define MG_LUA_RES_MT "moongate.res"
#define MG_LUA_HDR_MT "moongate.headers"
#define MG_LUA_FIELDS_MT "moongate.fields" /* req:headers() copies: read case-insensitively */

/* A userdata of the request (req, res, a headers proxy) starts with its request pointer: the
 * release clears it, so an object kept past its request raises an error, never reads freed
 * memory. */
typedef struct {
  mg_req_t *req;
} mg_lua_box_t;

/* What req:exit() / req:redirect() asked for, kept until the hook or handler returns. */
typedef struct {
  int status; /* 0: no req:exit */
  int drop;   /* no answer at all, logged with status (ngx.exit(ngx.ERROR)) */
  char *body;
  size_t body_len;
  int redirect;
  char *location;
} mg_lua_exit_t;

/* The request's Lua state, hung on req->lua (from its pool) by mg_lua_req_attach. */
typedef struct mg_lua_req_s {
  /* Registry references (LUA_NOREF until made): the req, res and headers userdata, req.env
   * and req.ctx. */
  int self_ref, res_ref, hdr_ref[2], env_ref, ctx_ref;
  int phase;                      /* MG_PH_* the request's Lua code runs in now, 0 between */
  void *sockets;                  /* the cosockets its Lua code opened (lua_socket.c) */
  mg_thread_t *body_waiter;       /* the thread waiting in req:read_body() */
  mg_thread_t *flush_waiter;      /* the thread waiting in ngx.flush(true) */
  mg_lua_exit_t exit;
  /* ngx.say/print/flush wrote output (the response is under way: the hook or handler ends it
   * when it returns), ngx.eof was called, ngx.status was assigned (before it, ngx.status reads 0
   * as in OpenResty). */
  unsigned ngx_output : 1, ngx_eof : 1, ngx_status_set : 1;
} mg_lua_req_t;

/* Ends a response Lua started with ngx.say/print/flush (once the hook or handler that wrote
 * has returned or called ngx.exit): 1 when it did so, 0 when Lua wrote no output. */
int mg_lua_end_output(mg_req_t *req);

/* The request's Lua state, made on first use: its references set to LUA_NOREF and the pool
 * cleanup that releases it registered. Then the same state on every call. Never fails (out
 * of memory aborts). */
mg_lua_req_t *mg_lua_req_attach(mg_req_t *req);

/* The request the running Lua code serves (mg_lua_req_now), attached; raises OpenResty's
 * "no request found" in a timer, init_worker or init.lua. For the API without a req argument. */
mg_req_t *mg_lua_req_running(lua_State *L);

/* Pushes the request's `req` userdata, made on first use (and attaching the request). */
/* Pushes the request's userdata, creating it on first use. */
void mg_lua_push_req(lua_State *L, mg_req_t *req);
/* The userdata cached in *ref (a registry reference the release detaches), or a new one of
 * `size` bytes with metatable `mt`, cached there: returns the new one for its owner to fill
 * (it starts with the request pointer), NULL when it was cached. */
void *mg_lua_push_box(lua_State *L, int *ref, size_t size, const char *mt);
/* The request behind the req userdata at idx; raises when it has ended. */
mg_req_t *mg_lua_check_req(lua_State *L, int idx);
/* Raises "API disabled in the context of <phase>: <what>" unless the request's Lua code runs
 * in one of the `allowed` phases (MG_PH_* bits), as lua-nginx-module does. */
void mg_lua_check_phase(lua_State *L, mg_req_t *req, int allowed, const char *what);
/* Inside a Lua thread, raises unless `req` is that thread's own request: what a waiting call
 * starts for it (a subrequest, a body read) would not end with it. */
void mg_lua_check_own(lua_State *L, mg_req_t *req, const char *what);
/* For a waiting call on `req` (req:subrequest): the running thread, after mg_thread_check and
 * mg_lua_check_own (a req kept from another request, or used from a timer, is refused). */
mg_thread_t *mg_lua_check_own_req(lua_State *L, mg_req_t *req, const char *what);

/* What req:exit() / req:redirect() will do once the hook or handler has returned. */
mg_lua_exit_t *mg_lua_exit_of(mg_req_t *req);
/* What they asked for, taken once the hook or handler has returned: MG_LUA_EXIT_NONE;
 * MG_LUA_EXIT_RESPONDED (the response is under way); MG_LUA_EXIT_REDIRECT with the local URI
 * in *redirect (the caller restarts the request). */
enum { MG_LUA_EXIT_NONE, MG_LUA_EXIT_RESPONDED, MG_LUA_EXIT_REDIRECT };
int mg_lua_take_exit(mg_req_t *req, const char **redirect);
/* Forgets what they asked for (the hook failed: its 500 wins). */
void mg_lua_exit_clear(mg_req_t *req);

/* A response status from Lua (a return value, req:exit, res.status) must be a final status:
 * a whole number from 200 to 599 (1xx would be sent as the final response while the client
 * waits for another). 1 with it in *status, 0 for anything else. */
int mg_lua_final_status(lua_State *L, int idx, int *status);
/* The value at idx as text for an error message ("101", "'abc'", "nil"); may push a string. */
const char *mg_lua_status_text(lua_State *L, int idx);

#endif
