/* passive: passive health (outlier ejection) and retries of a balancer (SPEC 20, docs/balancer.md
 * "Passive health" and "Retries").
 *
 * Passive health watches the answers real requests get: `fails` failures in a row (a status of
 * `statuses`, or a timeout) within `window` eject the member for `eject`, doubled for each of
 * its ejections in the last 10 minutes (at most 10 x `eject`), never more than `max_ejected` of
 * the balancer's members at once. Retries send a request whose answer was a failure of
 * `retries.on` to another member, when its method is allowed, its body can be sent again, it
 * has made fewer than `tries` attempts and the retry budget allows one more.
 *
 * The state is shared by every worker: one zone of shared memory (shm/zone.h), mapped by the
 * master before it forks, holds a slot per member of a balancer with `passive` and per
 * balancer with either, keyed by names, so a reload keeps them. A failure is counted and an
 * ejection decided under the zone's lock (so `max_ejected` is exact across workers); a success
 * and the budget's counters are single atomic stores and adds, without the lock. The return of
 * an ejected member needs no event: it is usable again once `ejected_until_ms` is past, and the
 * first worker to notice logs it (a request that picks in the balancer, the status page, or
 * worker 0's one-second sweep). */
#ifndef MG_PASSIVE_H
#define MG_PASSIVE_H

#include <stdint.h>

#include "balancer.h"
#include "buf.h"
#include "config.h"
#include <uv.h>

#define MG_PASSIVE_MAX_STATUSES 16
#define MG_RETRY_MAX_METHODS 16

/* A member's shared state. */
struct mg_passive_member_s {
  char key[200];              /* "balancer\tmember-url" */
  uint64_t ejected_until_ms;  /* out until then (mg_now_ms clock) */
  uint64_t first_fail_ms;     /* the first failure of the current run */
  int fails;                  /* failures in a row */
  int ejected;                /* 1 from an ejection until a worker logs the return */
  uint64_t history[4];        /* when its last ejections began, newest first */
  uint64_t ejections;         /* ever */
};

/* A balancer's shared state: the retry budget's window of ten one-second buckets, counters. */
typedef struct {
  char key[128];
  struct {
    uint64_t sec;               /* the second (mg_now_ms / 1000) the bucket counts */
    uint64_t requests, retries; /* requests (first attempts) and retries in that second */
  } win[10];
  uint64_t retries, refused; /* retries made, and refused by the budget, ever */
} mg_passive_bal_t;

typedef struct {
  int fails;
  uint64_t window_ms, eject_ms;
  int statuses[MG_PASSIVE_MAX_STATUSES], nstatuses;
  int timeouts;
  int max_ejected_pct;   /* -1: max_ejected_count is used */
  int max_ejected_count;
} mg_passive_eject_t;

typedef struct {
  int on_connect, on_timeout;
  int statuses[MG_PASSIVE_MAX_STATUSES], nstatuses;
  int tries;                       /* attempts in all, the first included */
  char *methods[MG_RETRY_MAX_METHODS];
  int nmethods;
  int budget_pct;
} mg_retries_t;

/* A balancer's `passive` and `retries` (either may be off). */
struct mg_passive_s {
  int eject_on, retries_on;
  mg_passive_eject_t eject;
  mg_retries_t retry;
  mg_passive_bal_t *shared; /* NULL until bound (or without shared memory) */
};

/* Maps the zone (once, in the master) and binds the members and balancers of cfg that have
 * passive health or retries to their slots. Returns 0 or -1 (logged: they then do nothing). */
int mg_passive_bind(mg_config_t *cfg);

/* Frees a balancer's settings (not its shared slots, which stay for a reload). */
void mg_passive_free(mg_passive_t *p);

/* The outcome of an attempt on member m of b: the status the client would get from it (the
 * backend's, or 502 when its answer was unreadable) and whether it was a timeout (then status
 * is 504). Counts a failure, ejects the member when it has failed enough, or resets its count. */
void mg_passive_report(mg_balancer_t *b, mg_member_t *m, int status, int timeout, uint64_t now_ms);

/* A request starts on b (counted by the retry budget). */
void mg_passive_request(mg_balancer_t *b, uint64_t now_ms);

/* Whether a request that made `attempts` attempts and got `status` (timeout: no answer within
 * `timeout`) is tried again on another member: `on`, the method, a body that can be sent again
 * (`resendable`), `tries`, then the budget. A yes is counted as a retry, a no by the budget alone
 * as a refusal. */
int mg_passive_retry(mg_balancer_t *b, const char *method, int resendable, int status, int timeout, int attempts,
                     uint64_t now_ms);

/* Whether a failed connect is tried on another member (`maxattempts` aside): always without
 * `retries`, with it only when "connect" is in `on`. */
int mg_passive_retry_connect(const mg_balancer_t *b);

/* Logs the return of b's members whose ejection is over (the first worker to see it). */
void mg_passive_sweep(mg_balancer_t *b, uint64_t now_ms);

/* Worker 0 sweeps every balancer with passive health once a second, so a return is logged
 * without traffic. */
void mg_passive_start(mg_config_t *cfg, uv_loop_t *loop);

/* Milliseconds m stays ejected from now, 0 when it is not. */
static inline uint64_t mg_passive_ejected_ms(const mg_member_t *m, uint64_t now_ms) {
  uint64_t until = m->passive ? __atomic_load_n(&m->passive->ejected_until_ms, __ATOMIC_RELAXED) : 0;
  return until > now_ms ? until - now_ms : 0;
}

/* The status page's additions: a member's and a balancer's JSON fields (appended after the
 * others, each starting with a comma), and the Prometheus families (with `label` escaping a
 * label value). */
void mg_passive_json_member(mg_buf_t *out, const mg_member_t *m, uint64_t now_ms);
void mg_passive_json_balancer(mg_buf_t *out, const mg_balancer_t *b);
void mg_passive_prometheus(mg_buf_t *out, const mg_config_t *cfg, uint64_t now_ms, void (*label)(mg_buf_t *, const char *));

#endif
