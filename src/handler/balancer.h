/* balancer: balancer:// clusters and member selection (docs/balancer.md), no I/O.
 *
 * A balancer owns its members. Selection is a pure function of the members' counters and
 * flags: byrequests is smooth weighted round robin, bytraffic the least bytes per lbfactor,
 * bybusyness the fewest requests in flight with byrequests among ties. Stickiness, error
 * windows (`retry`), health state and hot standbys decide which members are usable. The
 * upstream code reports back with mg_member_done() and mg_member_failed(). Counters are
 * per worker; the shared copy that the status page sums lives in mg_member_t.shared. */
#ifndef MG_BALANCER_H
#define MG_BALANCER_H

#include <stdint.h>
#include <sys/socket.h>

#include "caps.h"
#include "config.h"

enum {
  MG_MEMBER_DISABLED = 1,    /* +D */
  MG_MEMBER_HOT_STANDBY = 2, /* +H */
  MG_MEMBER_STOPPED = 4,     /* +S */
  MG_MEMBER_DRAINING = 8,    /* +N: only sticky requests */
};

enum { MG_LB_BYREQUESTS, MG_LB_BYTRAFFIC, MG_LB_BYBUSYNESS, MG_LB_LUA };

/* SPEC 20: passive health and retries (passive.h). */
typedef struct mg_passive_s mg_passive_t;
typedef struct mg_passive_member_s mg_passive_member_t;

/* Counters every worker adds to, in memory shared with the master (see status.c). */
typedef struct {
  uint64_t requests, bytes, errors;
  int64_t inflight;
  uint64_t error_until_ms; /* in error (failed connect) until then */
  int health_down;         /* taken out by health checks */
  char last_error[96];
  /* SPEC 20: live control (mg.manager_handler, `moongate member`). An operator's status flags
   * and lbfactor, in place of the configured ones while live_set / live_lbfactor say so; the
   * slot is the member's by balancer and URL, so they are kept across reloads. live_gen grows
   * with every change (written last, release order): workers copy the values when it moves. */
  uint32_t live_gen;
  uint32_t live_set;
  uint32_t live_flags;
  int32_t live_lbfactor; /* 0: the configured one */
  uint32_t live_max_set;  /* live_max_conns replaces the configured max_conns */
  int32_t live_max_conns; /* 0: no limit */
  /* SPEC 20: the address of a member that is one address of a host name (mg_member_name_t),
   * written by the master's resolver (handler/resolve.c) like a seqlock: dns_gen is odd while
   * it writes, and workers copy the address when it has moved to a new even value. */
  uint32_t dns_gen;
  uint32_t dns_set; /* 0: the slot holds no address now */
  uint32_t dns_salen;
  struct sockaddr_storage dns_sa;
} mg_member_stats_t;

typedef struct mg_member_name_s mg_member_name_t;

typedef struct {
  mg_addr_t addr;
  char *route;
  int lbfactor;
  unsigned flags;
  uint64_t retry_ms, connect_timeout_ms; /* connect_timeout 0: the route's */
  uint64_t timeout_ms;                  /* backend inactivity (Apache's member timeout=); 0: the route's */
  int64_t score;                          /* smooth round robin weight */
  mg_member_stats_t local;                /* this worker's */
  mg_member_stats_t *shared;              /* summed over workers, or NULL */
  int index;                              /* 1-based, as Lua sees it */
  unsigned cfg_flags;                     /* as init.lua gave them (flags may be an operator's) */
  int cfg_lbfactor;
  uint32_t live_seen;                     /* the shared live_gen last copied */
  int health_fails, health_passes;        /* consecutive, health checker only */
  int max_conns;                          /* SPEC 20: 0 for no limit (the configured value) */
  mg_cap_t *cap;                          /* its slots, shared by the workers (shm/caps.h), or NULL */
  mg_passive_member_t *passive;           /* shared passive health state, NULL when off */
  /* SPEC 20: names re-resolved. `key` names the member's slots in shared memory: its URL, or
   * for one address of a host name "URL#k" (k its place among the name's members, so the
   * slots stay the same whatever the address). */
  char *key;
  mg_member_name_t *name; /* the host name this member is an address of, or NULL */
  uint32_t dns_seen;      /* the shared dns_gen last copied */
  int unresolved;         /* a slot of a name that holds no address: never picked, not shown */
} mg_member_t;

/* A member given by host name (not an IP address, not localhost): `n` members in a row,
 * b->members[first .. first + n), each holding one of its addresses or none (handler/resolve.h). */
struct mg_member_name_s {
  char *host;
  int port;
  int first, n;
  int resolve;      /* resolve = true: it may have no address at load */
  mg_balancer_t *b;
  const mg_settings_t *set; /* resolve_every, the resolver's servers */
  uint64_t next_ms; /* the master's next lookup */
  int asking;       /* a lookup is under way */
  int failing;      /* lookups have failed since the last good one */
};

typedef struct {
  char *uri;
  uint64_t interval_ms, timeout_ms;
  int fails, passes, expect;
} mg_health_t;

struct mg_balancer_s {
  char *name;
  int index; /* in cfg->balancers: its rows in the metrics (shm/metrics.h) */
  int method;
  int method_ref; /* MG_LB_LUA: registry reference of the function */
  char *stickysession;
  int maxattempts;
  mg_member_t *members;
  int nmembers;
  mg_health_t *health;
  char *decl;
  /* SPEC 20: the queue (handler/queue.c): size 0 for none; its shared state; this worker's
   * waiters, oldest first */
  int queue_size;
  uint64_t queue_timeout_ms;
  mg_capq_t *q;
  struct mg_waiter_s *wait_head, *wait_tail;
  mg_passive_t *passive; /* passive health and retries, NULL when neither is declared */
  mg_member_name_t *names; /* SPEC 20: its members given by host name */
  int nnames;
};

/* Picks a member. `sticky` is the route wanted by the request or NULL; `tried` marks members
 * this request already failed on (nmembers bytes, may be NULL). Returns NULL when no member is
 * usable. */
mg_member_t *mg_balancer_pick(mg_balancer_t *b, const char *sticky, uint64_t now_ms, const unsigned char *tried);

/* Whether m may take a request now (not disabled, stopped, in error, down or ejected). */
int mg_member_usable(const mg_member_t *m, uint64_t now_ms);
/* Whether m is at its max_conns (all workers together). */
static inline int mg_member_full(const mg_member_t *m) { return m->cap && mg_cap_full(m->cap); }
/* Whether a member that a request not yet tried on it could use is only at its max_conns (the
 * request may wait for it), as opposed to none being usable at all. */
int mg_balancer_any_full(const mg_balancer_t *b, uint64_t now_ms, const unsigned char *tried);

/* Extracts the sticky route from a Cookie header or query string: the value of NAME is
 * "anything.ROUTE". Returns the ROUTE length and sets *route, or 0. */
size_t mg_balancer_sticky_route(const mg_balancer_t *b, const char *cookie, const char *query, const char **route);

/* SPEC 20: brings m->flags and m->lbfactor to what an operator set in shared memory (the
 * configured ones when nothing is set). One atomic load when nothing changed. */
void mg_member_sync(mg_member_t *m);
/* Applies an operator's change to a member's shared slot: `status` a list of +F / -F (F one of
 * D, S, H, N; NULL for no change; "=" back to init.lua's flags), `lbfactor` 1..100 (0: no
 * change, -1: back to init.lua's), `max_conns` 0.. (0: no limit; -1: no change; -2: back to
 * init.lua's). 0, or -1 with why in err. */
int mg_member_live_apply(mg_member_t *m, const char *status, int lbfactor, int max_conns, char *err, size_t errlen);
/* The max_conns an operator set for m, into its shared slot counter (a reload's load has put
 * init.lua's back there): the master, after binding a configuration. */
void mg_member_live_max(mg_member_t *m);
/* The member with URL `url` of the balancer named `bname` in cfg, or NULL with why in err: for a
 * host name, its first member (the others follow it: mg_member_siblings). */
mg_member_t *mg_balancer_find_member(const mg_config_t *cfg, const char *bname, const char *url, char *err, size_t errlen);
/* The name of m's slots in shared memory and its Prometheus label (its URL unless it is an
 * address of a host name). */
static inline const char *mg_member_key(const mg_member_t *m) { return m->key ? m->key : m->addr.url; }
/* The members m stands for when an operator names its URL: m alone, or every address of its
 * host name. Sets *n and returns the first. */
mg_member_t *mg_member_siblings(mg_member_t *m, int *n);
/* Whether a status page or a member list shows m: not a slot of a name that holds no address
 * (after bringing the worker's copy up to date). */
int mg_member_shown(mg_member_t *m);
/* SPEC 20: puts an address (NULL: none) into a slot of a name, in shared memory when bound,
 * and into this process's copy. */
void mg_member_set_address(mg_member_t *m, const struct sockaddr *sa, socklen_t salen);

/* The member's status letters (D, H, S, N) into buf (at least 5 bytes). */
const char *mg_member_flags_text(unsigned flags, char *buf);

void mg_member_start(mg_member_t *m);
void mg_member_done(mg_member_t *m, uint64_t bytes);
void mg_member_failed(mg_member_t *m, uint64_t now_ms, const char *why);

void mg_balancer_free(mg_balancer_t *b);

#endif
