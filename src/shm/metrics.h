/* metrics: the counters behind the Prometheus page (SPEC 20), in shared memory, summed over
 * the workers by construction: every worker adds to the same cells.
 *
 * The region's shape is fixed when a configuration loads (mg_metrics_map, in the master,
 * before the workers fork): a row per route (and one for requests no route took), a
 * histogram per route and per (route, upstream member), a row per balancer and per member.
 * Nothing grows with traffic: statuses are counted by class, times by bucket. Every update is
 * one or two relaxed atomic adds on a cell; no lock, no allocation, no system call. A
 * histogram keeps per-bucket counts (not cumulative) and a sum in microseconds; the reader
 * cumulates, so the +Inf bucket always equals the count even while workers write.
 *
 * The cells live in one pool mapped once by the master and never unmapped, as rows found by
 * key (the route's match, host and exactness; the balancer's name; the member's URL; for a
 * histogram also its buckets). Each configuration has a handle (mg_config_t.metrics) saying
 * where its rows are; a reload binds the new configuration's rows by key, so a route or
 * member that stays keeps its row: the old generation's workers, still finishing requests,
 * and the new one's add to the same cells, and no counter ever goes back. A worker counts with
 * the handle of its configuration, set once with mg_metrics_use. Out-of-range indices are
 * ignored: a caller never has to check. (A row no configuration uses any more stays: 4 MiB
 * hold tens of thousands; past that, new rows count nowhere, with one warning.)
 *
 * The API for the balancer's queue, passive health and retries (SPEC 20) is here so that
 * their units only add a call: mg_metrics_queue, mg_metrics_ejection, mg_metrics_retry. */
#ifndef MG_METRICS_H
#define MG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define MG_METRICS_MAX_BUCKETS 32
/* Status classes: 1xx .. 5xx (a status outside 100..599 counts as 5xx). */
#define MG_METRICS_CLASSES 5
/* Connections by protocol: http1 or h2, plain or TLS (index: h2 * 2 + tls). */
#define MG_METRICS_PROTOS 4
/* Lua time by phase (core/config.h's MG_PHASE_* numbering). */
#define MG_METRICS_PHASES 12

/* What the caller (handler/status.c) knows of a configuration, as plain data. Keys name a
 * row across reloads; the strings are copied. */
typedef struct {
  int nroutes;
  const char **route_keys;     /* nroutes */
  const int *route_members;    /* nroutes: the upstream members a route may use (0, 1, or its balancer's) */
  const char ***member_keys;   /* nroutes arrays of route_members[i] keys */
  int nbalancers;
  const char **balancer_keys;  /* nbalancers */
  const int *balancer_members; /* nbalancers */
  const char ***bmember_keys;  /* nbalancers arrays */
  int nbuckets;
  const double *buckets;       /* nbuckets upper bounds in seconds, increasing */
} mg_metrics_shape_t;

typedef struct mg_metrics_s mg_metrics_t;

/* The handle of a configuration of that shape, its rows bound by key (the pool mapped on the
 * first call). Returns it, or NULL with errno set. The master only. */
mg_metrics_t *mg_metrics_map(const mg_metrics_shape_t *shape);
/* Frees the handle (the rows stay for the configurations that share them). */
void mg_metrics_unmap(mg_metrics_t *m);
/* The region this process counts in (a worker, once, before it serves); NULL: none. */
void mg_metrics_use(mg_metrics_t *m);
mg_metrics_t *mg_metrics_current(void);

/* ---- the request path: one or two atomic adds each -------------------------------------- */

/* A client request ended: route row (nroutes for "no route"), its status and its time. */
void mg_metrics_request(int route, int status, uint64_t usec);
/* The backend part of a request: route and the member's index in it (0 for a plain scgi
 * route, a balancer member's index from 0), from the first connect to its end. */
void mg_metrics_upstream(int route, int member, uint64_t usec);
/* A connection opened (+1) or closed (-1) with protocol slot proto (h2 * 2 + tls). */
void mg_metrics_conn(int proto, int delta);
/* Lua ran for usec microseconds in a phase (one call in, counted once). */
void mg_metrics_lua(int phase, uint64_t usec);

/* ---- for the balancer's queue, passive health and retries ------------------------------- */

/* Balancer `b` (its index in the configuration): a request starts waiting in its queue
 * (MG_QUEUE_ENTER), leaves it for a slot (MG_QUEUE_SERVED, with the time it waited), or is
 * refused (MG_QUEUE_FULL: never entered; MG_QUEUE_TIMEOUT: left after its wait), or its client
 * went away (MG_QUEUE_GONE: only the length goes down). ENTER adds
 * one to the queue length, SERVED and TIMEOUT take it away. */
enum { MG_QUEUE_ENTER, MG_QUEUE_SERVED, MG_QUEUE_FULL, MG_QUEUE_TIMEOUT, MG_QUEUE_GONE };
void mg_metrics_queue(int b, int event, uint64_t wait_usec);
/* Member m (index from 0) of balancer b was ejected by passive health. */
void mg_metrics_ejection(int b, int m);
/* A request of balancer b is tried again on another member; budget_refused: the retry
 * budget said no (counted apart, not retried). */
void mg_metrics_retry(int b, int budget_refused);

/* ---- reading (the status page) ---------------------------------------------------------- */

typedef struct {
  uint64_t buckets[MG_METRICS_MAX_BUCKETS + 1]; /* cumulative; [nbuckets] is +Inf == count */
  uint64_t count;
  double sum; /* seconds */
} mg_metrics_hist_t;

int mg_metrics_nbuckets(const mg_metrics_t *m);
double mg_metrics_bucket(const mg_metrics_t *m, int i); /* upper bound, seconds */
uint64_t mg_metrics_requests(const mg_metrics_t *m, int route, int cls);
void mg_metrics_request_hist(const mg_metrics_t *m, int route, mg_metrics_hist_t *h);
void mg_metrics_upstream_hist(const mg_metrics_t *m, int route, int member, mg_metrics_hist_t *h);
int64_t mg_metrics_conns(const mg_metrics_t *m, int proto);
/* Lua: seconds and calls in a phase. */
double mg_metrics_lua_seconds(const mg_metrics_t *m, int phase);
uint64_t mg_metrics_lua_calls(const mg_metrics_t *m, int phase);
/* Queue: what == MG_QUEUE_ENTER gives the current length; SERVED, FULL, TIMEOUT the counts. */
int64_t mg_metrics_queue_get(const mg_metrics_t *m, int b, int what);
void mg_metrics_queue_wait_hist(const mg_metrics_t *m, int b, mg_metrics_hist_t *h);
uint64_t mg_metrics_ejections(const mg_metrics_t *m, int b, int member);
uint64_t mg_metrics_retries(const mg_metrics_t *m, int b, int budget_refused);

#endif
