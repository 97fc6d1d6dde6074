/* handler: the producers of responses behind routes (the target kinds of docs/reference.md,
 * "Routes"), one per kind.
 *
 * The engine (phase.c) starts route->handler and never names a kind; only the configuration
 * mapping (config_load.c) picks the handler of a route. A handler answers through the response
 * API of request.h (mg_req_send_head/body/end, mg_req_respond, mg_req_error), sets
 * req->handler_cancel when it holds anything that must stop if the client goes away, and may
 * restart the request with mg_phase_restart (internal redirect). */
#ifndef MG_HANDLER_H
#define MG_HANDLER_H

#include "request.h"

extern const mg_handler_t mg_handler_scgi;   /* scgi:// and balancer:// (upstream.c) */
extern const mg_handler_t mg_handler_static; /* { root = DIR } (static.c) */
extern const mg_handler_t mg_handler_lua;    /* a Lua function (lua_content.c) */
extern const mg_handler_t mg_handler_status; /* mg.status_handler() (status.c) */

#endif
