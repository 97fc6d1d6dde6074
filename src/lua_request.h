/* lua_request: the request phases run in Lua, and the `req` and `res` objects (SPEC 4).
 *
 * A request enters Lua only when a hook or handler is configured for it: http.c asks
 * mg_lua_has_phase() first, which reads two counters and touches no Lua state. Each phase
 * runs the global hooks, then the route's, in one protected call per hook; req:exit() ends the
 * chain. A Lua error ends the request with 500 (or cuts the connection when the head is
 * already sent) and logs the traceback; the worker goes on. */
#ifndef MG_LUA_REQUEST_H
#define MG_LUA_REQUEST_H

#include "http.h"

int mg_lua_has_phase(const mg_req_t *req, int phase);
/* These return 0 when the request goes on, 1 when a hook ended it (a response is under way). */
int mg_lua_rewrite(mg_req_t *req);
int mg_lua_access(mg_req_t *req);
void mg_lua_header_filter(mg_req_t *req);
void mg_lua_log_phase(mg_req_t *req);
/* Runs the balancer hooks and a Lua method. Returns the chosen 1-based member index, 0 to
 * leave the choice to the balancer, or -1 when the request was ended. */
int mg_lua_balancer(mg_req_t *req, mg_balancer_t *b, int method);
/* The route's Lua content handler. */
void mg_lua_content(mg_req_t *req);
/* Applies req.env to the SCGI variables (see cgi_env.c). Strings stay valid until the
 * request is released. */
void mg_lua_apply_env(mg_req_t *req, mg_vars_t *vars);
int mg_lua_env_pathinfo(mg_req_t *req);
/* Drops the request's Lua references. */
void mg_lua_req_release(mg_req_t *req);
/* Runs init_worker hooks and starts mg.timer timers in a worker's loop. */
int mg_lua_worker_init(mg_config_t *cfg, uv_loop_t *loop);

/* Route kinds implemented elsewhere, dispatched by http.c. */
void mg_static_serve(mg_req_t *req);
void mg_status_serve(mg_req_t *req);

#endif
