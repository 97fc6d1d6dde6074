/* dns: see dns.h. */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "timeq.h"

struct mg_dns_s {
  ares_channel ch;
  int pending;
};

typedef struct {
  mg_dns_t *d;
  int port;
  mg_dns_cb cb;
  void *arg;
} lookup_t;

mg_dns_t *mg_dns_new(const char *const *servers, int n, char *err, size_t errlen) {
  static int ready;
  if (!ready) {
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) return snprintf(err, errlen, "c-ares: %s", ares_strerror(rc)), NULL;
    ready = 1;
  }
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.timeout = 1000, o.tries = 2;
  /* With servers of its own, DNS only (nginx's `resolver`); otherwise as the system: the hosts
   * file, then the servers of resolv.conf. */
  o.lookups = n > 0 ? (char *)"b" : (char *)"fb";
  mg_dns_t *d = mg_calloc(1, sizeof *d);
  int rc = ares_init_options(&d->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS);
  if (rc != ARES_SUCCESS) {
    snprintf(err, errlen, "cannot start a DNS resolver: %s", ares_strerror(rc));
    free(d);
    return NULL;
  }
  if (n > 0) {
    mg_buf_t csv;
    mg_buf_init(&csv);
    for (int i = 0; i < n; i++) {
      if (i) mg_buf_append(&csv, ",", 1);
      mg_buf_append(&csv, servers[i], strlen(servers[i]));
    }
    mg_buf_append(&csv, "", 1);
    rc = ares_set_servers_ports_csv(d->ch, csv.data);
    mg_buf_free(&csv);
    if (rc != ARES_SUCCESS) {
      snprintf(err, errlen, "resolver: cannot use the servers given: %s", ares_strerror(rc));
      ares_destroy(d->ch);
      free(d);
      return NULL;
    }
  }
  return d;
}

void mg_dns_free(mg_dns_t *d) {
  if (!d) return;
  ares_destroy(d->ch); /* answers what is pending with ARES_EDESTRUCTION */
  free(d);
}

static int same_addr(const mg_dns_addr_t *a, const struct sockaddr *sa) {
  if (a->sa.ss_family != sa->sa_family) return 0;
  if (sa->sa_family == AF_INET)
    return memcmp(&((const struct sockaddr_in *)&a->sa)->sin_addr, &((const struct sockaddr_in *)sa)->sin_addr, 4) == 0;
  return memcmp(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res) {
  (void)timeouts;
  lookup_t *lk = arg;
  lk->d->pending--;
  mg_dns_addr_t addrs[MG_DNS_MAX_ADDRS];
  int n = 0;
  uint32_t ttl = UINT32_MAX;
  if (status == ARES_SUCCESS && res) {
    for (struct ares_addrinfo_node *ai = res->nodes; ai && n < MG_DNS_MAX_ADDRS; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
      int dup = 0;
      for (int i = 0; i < n && !dup; i++) dup = same_addr(&addrs[i], ai->ai_addr);
      if (dup) continue;
      memset(&addrs[n], 0, sizeof addrs[n]);
      memcpy(&addrs[n].sa, ai->ai_addr, ai->ai_addrlen);
      addrs[n].salen = ai->ai_addrlen;
      if (ai->ai_family == AF_INET) ((struct sockaddr_in *)&addrs[n].sa)->sin_port = htons((uint16_t)lk->port);
      else ((struct sockaddr_in6 *)&addrs[n].sa)->sin6_port = htons((uint16_t)lk->port);
      if (ai->ai_ttl >= 0 && (uint32_t)ai->ai_ttl < ttl) ttl = (uint32_t)ai->ai_ttl;
      n++;
    }
  }
  if (res) ares_freeaddrinfo(res);
  if (ttl == UINT32_MAX) ttl = 0;
  const char *why = NULL;
  if (status != ARES_SUCCESS) why = status == ARES_EDESTRUCTION ? "resolver closed" : ares_strerror(status);
  else if (n == 0) why = "the name has no IPv4 or IPv6 address";
  lk->cb(lk->arg, why, addrs, n, ttl);
  free(lk);
}

void mg_dns_lookup(mg_dns_t *d, const char *host, int port, mg_dns_cb cb, void *arg) {
  lookup_t *lk = mg_calloc(1, sizeof *lk);
  lk->d = d, lk->port = port, lk->cb = cb, lk->arg = arg;
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ARES_AI_NOSORT; /* sorting connects a UDP socket per address: a blocking step */
  d->pending++;
  ares_getaddrinfo(d->ch, host, NULL, &hints, on_addrinfo, lk);
}

typedef struct {
  int done, n;
  mg_dns_addr_t *out;
  int max;
  uint32_t ttl;
  char why[160];
} wait_t;

static void on_wait(void *arg, const char *why, const mg_dns_addr_t *addrs, int n, uint32_t ttl) {
  wait_t *w = arg;
  w->done = 1, w->ttl = ttl;
  if (why) snprintf(w->why, sizeof w->why, "%s", why);
  for (int i = 0; i < n && w->n < w->max; i++) w->out[w->n++] = addrs[i];
}

int mg_dns_lookup_wait(mg_dns_t *d, const char *host, int port, mg_dns_addr_t *out, int max, uint32_t *ttl,
                       uint64_t timeout_ms, char *err, size_t errlen) {
  wait_t w = {.out = out, .max = max};
  uint64_t end = mg_now_ms() + timeout_ms;
  mg_dns_lookup(d, host, port, on_wait, &w);
  while (!w.done) {
    uint64_t now = mg_now_ms();
    if (now >= end) {
      /* The answer comes with ARES_ECANCELLED, into w, before ares_cancel returns. */
      ares_cancel(d->ch);
      snprintf(err, errlen, "no answer within %llu ms", (unsigned long long)timeout_ms);
      return -1;
    }
    struct pollfd p[ARES_GETSOCK_MAXNUM];
    int n = mg_dns_pollfds(d, p, ARES_GETSOCK_MAXNUM);
    int t = mg_dns_timeout(d, (int)(end - now));
    poll(p, (nfds_t)n, t < 0 ? (int)(end - now) : t);
    mg_dns_process(d, p, n);
  }
  if (w.why[0]) return snprintf(err, errlen, "%s", w.why), -1;
  *ttl = w.ttl;
  return w.n;
}

int mg_dns_pollfds(mg_dns_t *d, struct pollfd *p, int max) {
  ares_socket_t socks[ARES_GETSOCK_MAXNUM];
  int bits = ares_getsock(d->ch, socks, ARES_GETSOCK_MAXNUM), n = 0;
  for (int i = 0; i < ARES_GETSOCK_MAXNUM && n < max; i++) {
    /* c-ares's own ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit for the last socket */
    unsigned u = (unsigned)bits;
    short ev = (short)((((u >> i) & 1u) ? POLLIN : 0) | (((u >> (i + ARES_GETSOCK_MAXNUM)) & 1u) ? POLLOUT : 0));
    if (!ev) continue;
    p[n].fd = socks[i], p[n].events = ev, p[n].revents = 0;
    n++;
  }
  return n;
}

int mg_dns_timeout(mg_dns_t *d, int max_ms) {
  if (!d->pending) return max_ms;
  struct timeval cap = {max_ms / 1000, (max_ms % 1000) * 1000}, tv, *t = ares_timeout(d->ch, max_ms >= 0 ? &cap : NULL, &tv);
  if (!t) return max_ms;
  return (int)(t->tv_sec * 1000 + (t->tv_usec + 999) / 1000);
}

void mg_dns_process(mg_dns_t *d, const struct pollfd *p, int n) {
  for (int i = 0; i < n; i++) {
    if (!p[i].revents) continue;
    ares_socket_t r = (p[i].revents & (POLLIN | POLLERR | POLLHUP)) ? p[i].fd : ARES_SOCKET_BAD;
    ares_socket_t w = (p[i].revents & (POLLOUT | POLLERR | POLLHUP)) ? p[i].fd : ARES_SOCKET_BAD;
    ares_process_fd(d->ch, r, w);
  }
  ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
}

int mg_dns_busy(const mg_dns_t *d) { return d->pending > 0; }
