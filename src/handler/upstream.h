/* upstream: the SCGI backend connection of one request.
 *
 * mg_upstream_start() picks the backend (the route's, or a balancer member), connects, sends
 * the SCGI head and streams the request body with backpressure in both directions; it reads
 * the CGI-style response head, applies the internal-redirect and sendfile policies, and
 * streams the body to the client. Connect failures on a balancer route fail over to another
 * member, which is safe because nothing has been sent yet. Errors end the request with
 * 503 (connect), 504 (inactivity) or 502 (malformed response), each with a log line naming the
 * backend. */
#ifndef MG_UPSTREAM_H
#define MG_UPSTREAM_H

#include "request.h"

void mg_upstream_start(mg_req_t *req);

#endif
