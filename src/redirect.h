/* redirect: the internal redirect policy (ProxySCGIInternalRedirect, SPEC 7).
 *
 * upstream.c decides when a response asks for one (status 200 and the route's header holding
 * a local URL); this file restarts the request there: GET (HEAD stays HEAD) without body,
 * the REDIRECT_* variables of the previous hop recorded, routing and every phase run again.
 * After internal_redirect_limit hops the request ends with 500. */
#ifndef MG_REDIRECT_H
#define MG_REDIRECT_H

#include "http.h"

/* `location` starts with '/' and lives in the request's pool. */
void mg_redirect_start(mg_req_t *req, const char *location);

#endif
