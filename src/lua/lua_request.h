/* lua_request: the request phases run in Lua, and the `req` and `res` objects (SPEC 4).
 *
 * A request enters Lua only when a hook or handler is configured for it: the engine asks
 * mg_req_hook_count() first, which reads two counters and touches no Lua state. rewrite and
 * access hooks run in Lua threads started by the engine (phase.c), so they may wait;
 * balancer, header_filter and log hooks run here in one protected call each and cannot. A Lua
 * error ends the request with 500 (or cuts the connection when the head is already sent) and
 * logs the traceback; the worker goes on. */
#ifndef MG_LUA_REQUEST_H
#define MG_LUA_REQUEST_H

#include <lua.h>

#include "request.h"
#include "lua_thread.h"

/* A Lua thread ready to run hook `ref` as fn(req) in phase `phase_bit` (MG_PH_*). */
mg_thread_t *mg_lua_hook_thread(mg_req_t *req, int ref, int phase_bit);
/* What req:exit()/req:redirect() asked for, once the hook or handler has returned:
 * MG_LUA_EXIT_NONE; MG_LUA_EXIT_RESPONDED (the response is under way); MG_LUA_EXIT_REDIRECT
 * with the local URI in *redirect (the caller restarts the request). */
enum { MG_LUA_EXIT_NONE, MG_LUA_EXIT_RESPONDED, MG_LUA_EXIT_REDIRECT };
int mg_lua_take_exit(mg_req_t *req, const char **redirect);
void mg_lua_exit_clear(mg_req_t *req);
void mg_lua_push_req(lua_State *L, mg_req_t *req);
/* A plain table of header fields (lowercase names, lists for repeats), as req:headers(). */
void mg_lua_push_fields(lua_State *L, const mg_fields_t *f);
/* A response status from Lua (a return value, req:exit, res.status) must be a final status:
 * a whole number from 200 to 599 (1xx would be sent as the final response while the client
 * waits for another). 1 with it in *status, 0 for anything else. */
int mg_lua_final_status(lua_State *L, int idx, int *status);
/* The value at idx as text for an error message ("101", "'abc'", "nil"); may push a string. */
const char *mg_lua_status_text(lua_State *L, int idx);
/* The request behind the req userdata at idx; raises when it has ended. */
mg_req_t *mg_lua_check_req(lua_State *L, int idx);
/* For a waiting call on `req` (req:subrequest, req:read_body): the running thread, after
 * mg_thread_check; raises when req is not that thread's own request (a req kept from another
 * request, or used from a timer): what waits for it would not end with it. */
mg_thread_t *mg_lua_check_own_req(lua_State *L, mg_req_t *req, const char *what);
void mg_lua_header_filter(mg_req_t *req);
void mg_lua_log_phase(mg_req_t *req);
/* Runs the body_filter hooks on a chunk (eof on the last call). Returns 0 with the chunk to
 * send in *out (malloc'd, owned by the caller), or -1 after logging a Lua error. */
int mg_lua_body_filter(mg_req_t *req, const char *data, size_t len, int eof, char **out, size_t *out_len);
/* Runs the balancer hooks and a Lua method. Returns the chosen 1-based member index, 0 to
 * leave the choice to the balancer, or -1 when the request was ended. */
int mg_lua_balancer(mg_req_t *req, mg_balancer_t *b, int method);
/* Copies req.env into req->env_list / req->env_pathinfo, the plain data cgi_env.c reads. */
void mg_lua_env_export(mg_req_t *req);
/* Lua has a hold on req (a reference, a cosocket, a waiting thread): what it holds is
 * released by a cleanup of the request's pool. Once per request; push_req calls it. */
void mg_lua_req_attach(mg_req_t *req);
/* Runs init_worker hooks and starts mg.timer timers in a worker's loop. */
int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop);
/* What a worker's Lua state needs before it serves, without init_worker or timers (--explain). */
void mg_lua_worker_prepare(mg_config_t *cfg, uv_loop_t *loop);

/* req:subrequest is implemented in subrequest.c. */
void mg_lua_set_subrequest(lua_CFunction fn);

#endif
