/* redirect: the internal redirect policy (ProxySCGIInternalRedirect; `internal_redirect` in
 * docs/reference.md, "Routes").
 *
 * upstream.c decides when a response asks for one (status 200 and the route's header holding
 * a local URL); this file restarts the request there: GET (HEAD stays HEAD) without body,
 * the REDIRECT_* variables of the previous hop recorded, routing and every phase run again.
 * After internal_redirect_limit hops the request ends with 500. */
#ifndef MG_REDIRECT_H
#define MG_REDIRECT_H

#include "request.h"

/* `location` starts with '/' and lives in the request's pool. */
/* The REDIRECT_* bookkeeping of a restart at `location`: the method becomes GET (HEAD
 * stays HEAD), the body is dropped, the route is forgotten. Returns 0, or -1 after answering
 * 500 (bad location, internal_redirect_limit reached). phase.c then runs the request again. */
int mg_redirect_prepare(mg_req_t *req, const char *location);

#endif
