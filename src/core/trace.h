/* trace: W3C Trace Context per request (SPEC 20, `tracing = true` by default in mg.set).
 *
 * A client request continues the trace of a valid `traceparent` field (proto/traceparent.h;
 * a request with two of them, or an invalid one, starts a new trace instead) or starts one
 * with a random 128-bit trace id; either way moongate's own span gets a random 64-bit id.
 * The backend then gets HTTP_TRACEPARENT = 00-<trace id>-<moongate's span id>-<flags>
 * (handler/cgi_env.c): the client's parent-id becomes moongate's parent and moongate the
 * backend's; tracestate passes unchanged. A subrequest is a span of its own under its parent's.
 * The JSON access log, and ngx.var.trace_id / span_id / parent_span_id / traceparent in Lua,
 * read the request's fields.
 *
 * Ids come from a per-worker splitmix64 generator seeded once from getrandom(2): no system
 * call, lock or allocation per request. */
#ifndef MG_TRACE_H
#define MG_TRACE_H

#include "request.h"

/* A client request's trace: from its traceparent field, or a new one (if tracing is on). */
void mg_trace_begin(mg_req_t *req);
/* A subrequest's: the parent's trace, a new span whose parent is the parent's span. */
void mg_trace_child(mg_req_t *child, const mg_req_t *parent);

#endif
