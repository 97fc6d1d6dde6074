/* dns: host names looked up without blocking, with c-ares (libc-ares-dev), for a process that
 * runs its own poll loop (the master re-resolving balancer members, SPEC 20) or that may block
 * (loading a configuration).
 *
 * A resolver is a c-ares channel: the servers given ("127.0.0.1:53", "[::1]:5353"; DNS only,
 * as nginx's `resolver`) or, with none, those of /etc/resolv.conf, /etc/hosts first as the
 * system does. A lookup asks for A and AAAA at once and answers with every address and the
 * smallest TTL of the records. */
#ifndef MG_DNS_H
#define MG_DNS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MG_DNS_MAX_ADDRS 64

typedef struct {
  struct sockaddr_storage sa; /* the port set as asked */
  socklen_t salen;
} mg_dns_addr_t;

typedef struct mg_dns_s mg_dns_t;

/* The answer: n addresses (0 on failure, with `why` in plain words), ttl in seconds. */
typedef void (*mg_dns_cb)(void *arg, const char *why, const mg_dns_addr_t *addrs, int n, uint32_t ttl);

/* A resolver on `servers` (n of them, may be 0), or NULL with why in err. */
mg_dns_t *mg_dns_new(const char *const *servers, int n, char *err, size_t errlen);
void mg_dns_free(mg_dns_t *d); /* pending lookups are answered with "resolver closed" */

/* Starts a lookup of host; cb is called from mg_dns_process (or at once for a literal). */
void mg_dns_lookup(mg_dns_t *d, const char *host, int port, mg_dns_cb cb, void *arg);
/* The lookup, waited for (at most timeout_ms): loading a configuration. Returns the number of
 * addresses put in out (at most max) and sets *ttl, or -1 with why in err. */
int mg_dns_lookup_wait(mg_dns_t *d, const char *host, int port, mg_dns_addr_t *out, int max, uint32_t *ttl,
                       uint64_t timeout_ms, char *err, size_t errlen);

/* The descriptors to poll (at most max; returns how many) and the longest the caller may wait
 * (ms, at most max_ms; -1 passes through when nothing is pending). */
int mg_dns_pollfds(mg_dns_t *d, struct pollfd *p, int max);
int mg_dns_timeout(mg_dns_t *d, int max_ms);
/* After poll: the ready descriptors among p[0..n), then the timeouts that expired. */
void mg_dns_process(mg_dns_t *d, const struct pollfd *p, int n);
/* Whether lookups are under way. */
int mg_dns_busy(const mg_dns_t *d);

#endif
