/* phase: the request's life as one resumable engine (SPEC 4 and 12).
 *
 * rewrite hooks → routing (404, internal routes, client_max_body_size) → access hooks → the
 * route's handler. Each hook runs in its own Lua thread (lua_thread.c); when one waits, the
 * engine returns to the loop and goes on from the same hook when the thread has ended. A hook
 * that never waits costs a coroutine resume instead of a protected call. The engine names no
 * handler: it starts route->handler (handler.h) and the handler produces the response. Phases
 * after the handler (balancer, header_filter, body_filter, log) cannot wait and run where the
 * response is produced.
 *
 * While a hook waits before the handler has started, the client's request body is held in the
 * connection (not parsed), so a handler that streams it loses no byte. */
#ifndef MG_PHASE_H
#define MG_PHASE_H

#include "request.h"

/* The head is parsed and checked: run the request. */
void mg_phase_start(mg_req_t *req);
/* Restarts the request at a local URL (internal redirect, req:redirect): REDIRECT_*
 * bookkeeping, then rewrite and routing again. Ends the request with 500 beyond
 * internal_redirect_limit. */
void mg_phase_restart(mg_req_t *req, const char *location);
/* The request ends before its engine did (client gone): abandons a waiting Lua thread. */
void mg_phase_abort(mg_req_t *req);

#endif
