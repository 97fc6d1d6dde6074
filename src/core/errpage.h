/* errpage: error pages (SPEC 19; docs/reference.md, "Error pages"): nginx's error_page with
 * *_intercept_errors, Apache's ErrorDocument with ProxyErrorOverride.
 *
 * mg_req_error() (moongate's own errors, a Lua ngx.exit(status) without a body) and the SCGI
 * handler (a backend's answer, when the route intercepts errors) ask this file first. When the
 * route, or the configuration for a request not routed yet, has a page for the status, the
 * request is served again by it: a local URI through an internal redirect (any route kind;
 * GET, HEAD stays HEAD; the status kept), or a Lua function as a content handler
 * fn(req, status). One page per request: an error while serving a page is answered with the
 * plain page. */
#ifndef MG_ERRPAGE_H
#define MG_ERRPAGE_H

#include "request.h"

/* The page for `status` of req's route (the configuration's before routing), or NULL. */
const mg_errpage_t *mg_errpage_find(const mg_req_t *req, int status);
/* Serves `status` with its error page when there is one and the request can still be served
 * again (no head sent, no handler holding state, no Lua of the request running, not a
 * subrequest, no page served yet). Returns 1 when the page took the request over, 0 when the
 * caller answers. */
int mg_errpage_try(mg_req_t *req, int status);
/* A backend answered `status`: 1 when the route intercepts it (intercept_errors and a page
 * for that status). */
int mg_errpage_intercepts(const mg_req_t *req, int status);

#endif
