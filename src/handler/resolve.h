/* resolve: balancer members given by host name, looked up again while moongate runs (SPEC 20;
 * docs/balancer.md, "Names resolved again").
 *
 * A member written with a host name (not an IP address, not localhost) becomes a row of
 * max_addresses members of its balancer (mg_member_name_t), each holding one address of the
 * name or none; an empty one is never picked and not shown. The configuration's load looks the
 * name up once and waits for the answer. Afterwards only the master looks names up, on its
 * poll loop, without blocking (base/dns.h): again at the answer's TTL, at least every second
 * and at most every `resolve_every`; a failed lookup keeps the addresses it had, logs why, and
 * is tried again within 5 s. An answer is placed so that an address keeps its member (its
 * counters, slots and passive health stay with it); the members of addresses gone are
 * emptied and new addresses fill empty ones. The master writes each member's address into
 * its slot in shared memory (mg_member_set_address), and every worker copies it at its next
 * pick (mg_member_sync). */
#ifndef MG_RESOLVE_H
#define MG_RESOLVE_H

#include <poll.h>

#include "balancer.h"
#include "config.h"
#include "dns.h"

/* Whether a member's host is a name to look up (not an IP address, not localhost). */
int mg_resolve_is_name(const char *host);

/* At load: looks nm up through *dns (made from the settings when NULL) and waits for the
 * answer; fills its members. 0, or -1 with why in err when the name does not resolve and the
 * member does not have resolve = true. */
int mg_resolve_load(mg_dns_t **dns, const mg_settings_t *s, mg_member_name_t *nm, char *err, size_t errlen);

/* The master, once cfg's members are bound to their shared slots: the load's addresses placed
 * against what the slots held before a reload, and written there. */
void mg_resolve_bind(mg_config_t *cfg);

/* The master's poll loop: starts the lookups that are due and gives the descriptors to poll
 * (at most max; returns how many), lowering *timeout_ms (-1: none) to the next thing to do. */
int mg_resolve_pollfds(mg_config_t *cfg, struct pollfd *p, int max, int *timeout_ms);
/* After poll: the answers that came (p[0..n) as mg_resolve_pollfds gave them). */
void mg_resolve_process(mg_config_t *cfg, const struct pollfd *p, int n);

/* Ends cfg's lookups (their answers are dropped). */
void mg_resolve_free(mg_config_t *cfg);

#endif
