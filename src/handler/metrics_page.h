/* metrics_page: the SPEC 20 families of mg.status_handler()'s pages, and the glue between a
 * configuration and shm/metrics.c.
 *
 * mg_metrics_bind maps a configuration's counters (the master, at load and at every reload,
 * beside mg_status_bind): one row per route, per (route, upstream member), per balancer and
 * per balancer member, labelled by what init.lua wrote. mg_metrics_observe is what the
 * program sets as core's mg_req_observer: a finished client request adds one to its route and
 * status class and its time to the route's histogram (two atomic adds). The page functions
 * write the Prometheus text families (each with # HELP and # TYPE) and the JSON "metrics"
 * object, both summed over the workers since they share the cells. */
#ifndef MG_METRICS_PAGE_H
#define MG_METRICS_PAGE_H

#include "buf.h"
#include "config.h"
#include "request.h"

/* Binds cfg->metrics (the rows of the routes and members it shares with earlier
 * configurations are theirs). 0 or -errno. */
int mg_metrics_bind(mg_config_t *cfg);
/* The route row of a request (cfg->nroutes: none, or one outside the table). */
int mg_metrics_route_of(const mg_req_t *req);
/* A client request ended (core's mg_req_observer). */
void mg_metrics_observe(const mg_req_t *req);
/* The SPEC 20 Prometheus families. */
void mg_metrics_prometheus(const mg_config_t *cfg, mg_buf_t *b);
/* `,"metrics":{...}` for the JSON page. */
void mg_metrics_json(const mg_config_t *cfg, mg_buf_t *b);

#endif
