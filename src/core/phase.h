/* phase: the request's life as one resumable engine (docs/lua-api.md, "Phases" and "Waiting:
 * coroutines, cosockets, subrequests").
 *
 * rewrite hooks → routing (404, internal routes, client_max_body_size) → access hooks → the
 * route's handler. The engine runs each hook through the hooks table (hooks.h); when one
 * waits, the engine returns to the loop and goes on from the next hook when the binding calls
 * mg_phase_resume. The engine names no handler and no Lua function: it starts route->handler
 * (handler.h) and the handler produces the response. Phases after the handler (balancer,
 * header_filter, body_filter, log) cannot wait and run where the response is produced.
 *
 * While a hook waits before the handler has started, the client's request body is held in the
 * connection (not parsed), so a handler that streams it loses no byte. */
#ifndef MG_PHASE_H
#define MG_PHASE_H

#include "request.h"

/* "rewrite", "access", ... for MG_PHASE_* (config.h); "init" for MG_PHASE_INIT. */
const char *mg_phase_name(int phase);

/* The head is parsed and checked: run the request. */
void mg_phase_start(mg_req_t *req);
/* Restarts the request at a local URL (internal redirect, req:redirect): REDIRECT_*
 * bookkeeping, then rewrite and routing again. Ends the request with 500 beyond
 * internal_redirect_limit. */
void mg_phase_restart(mg_req_t *req, const char *location);
/* Serves the request with `route`'s handler at once, its URI unchanged and no hook run again
 * (an error page's function, errpage.c). */
void mg_phase_handler(mg_req_t *req, const mg_route_t *route);
/* The route's handler declines the request and hands it, as it is (method, URI, body, the
 * REDIRECT_* of earlier hops), to `route`: that route's limits and its own access hooks, then
 * its handler (a static route's `fallback`, nginx's `try_files ... @app`). Called from a
 * handler's start, before it has answered or read the body. */
void mg_phase_handover(mg_req_t *req, const mg_route_t *route);
/* A hook that waited has ended with `result` (MG_OK: the engine goes on; MG_ENDED: it
 * handled the request, which may already be freed: the engine does not touch it, so the
 * binding clears req->thread itself before answering). */
void mg_phase_resume(mg_req_t *req, int result);

#endif
