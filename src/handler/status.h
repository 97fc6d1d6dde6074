/* status: mg.status_handler(), the balancer status page, and the shared counters behind it.
 *
 * The master maps one shared memory region before it forks workers; every balancer member
 * gets a slot there, keyed by balancer name and member URL, so workers add to the same
 * counters and a reload keeps the counters of members whose URL did not change. The page is
 * JSON by default and Prometheus text exposition with ?format=prometheus; SPEC 20's families
 * (requests, times, connections, Lua, queues, retries) come from metrics_page.c. */
#ifndef MG_STATUS_H
#define MG_STATUS_H

#include "request.h"

#include "config.h"

/* Maps the region (once, in the master) and binds every member of cfg to its slot, and
 * cfg's SPEC 20 counters (mg_metrics_bind). Returns 0 or -errno. */
int mg_status_bind(mg_config_t *cfg);

/* The mg.status_handler() route handler's start. */
void mg_status_serve(mg_req_t *req);

#endif
