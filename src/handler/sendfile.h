/* sendfile: the X-Sendfile policy (ProxySCGISendfile; the route options in docs/reference.md,
 * "Routes").
 *
 * When a route enables it and the backend names a file in the route's header, the file is
 * sent by the gateway instead of the backend's body, keeping the backend's status and other
 * headers. The path must be absolute and resolve, symlinks included, inside one of the
 * route's sendfile_roots: the kernel checks it (openat2 with RESOLVE_BENEATH from the root's
 * descriptor). Outside: 403. Missing or unreadable: 500, or 404 with sendfile_missing = 404. */
#ifndef MG_SENDFILE_H
#define MG_SENDFILE_H

#include "request.h"

void mg_sendfile_start(mg_req_t *req, const char *path);

#endif
