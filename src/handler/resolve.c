/* resolve: see resolve.h. */
#include "resolve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"
#include "timeq.h"

#define RETRY_FAILED_MS 5000 /* a failed lookup is tried again within this */

struct mg_resolver_s {
  mg_dns_t *dns;
  int broken; /* the resolver could not be made: said once */
};

int mg_resolve_is_name(const char *host) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) return 0;
  size_t n = strlen(host);
  /* RFC 6761: localhost names are the loopback, never asked of DNS. */
  if (strcasecmp(host, "localhost") == 0 || (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0)) return 0;
  return 1;
}

static int same(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* The name's addresses now, as text, into out. */
static void list_addresses(const mg_member_name_t *nm, mg_buf_t *out) {
  int any = 0;
  for (int i = 0; i < nm->n; i++) {
    const mg_member_t *m = &nm->b->members[nm->first + i];
    if (m->unresolved) continue;
    if (any++) mg_buf_puts(out, ", ");
    mg_buf_puts(out, m->addr.text);
  }
  if (!any) mg_buf_puts(out, "no address");
  mg_buf_append(out, "", 1);
}

/* Places the answer (see resolve.h) and writes every member of the name. Returns the number of
 * addresses left out for want of members. */
static int assign(mg_member_name_t *nm, const mg_dns_addr_t *a, int n) {
  mg_member_t *slots = &nm->b->members[nm->first];
  int taken[MG_DNS_MAX_ADDRS] = {0};
  const mg_dns_addr_t *to[nm->n > 0 ? nm->n : 1];
  for (int i = 0; i < nm->n; i++) {
    to[i] = NULL;
    if (slots[i].unresolved) continue;
    for (int j = 0; j < n && !to[i]; j++)
      if (!taken[j] && same(&slots[i].addr.sa, &a[j].sa)) taken[j] = 1, to[i] = &a[j];
  }
  int left = 0;
  for (int j = 0; j < n; j++) {
    if (taken[j]) continue;
    int i = 0;
    while (i < nm->n && to[i]) i++;
    if (i == nm->n) {
      left++;
      continue;
    }
    to[i] = &a[j];
  }
  for (int i = 0; i < nm->n; i++)
    mg_member_set_address(&slots[i], to[i] ? (const struct sockaddr *)&to[i]->sa : NULL, to[i] ? to[i]->salen : 0);
  return left;
}

static uint64_t next_after(const mg_settings_t *s, uint32_t ttl) {
  uint64_t every = s->resolve_every_ms ? s->resolve_every_ms : 30000, ms = (uint64_t)ttl * 1000;
  if (ttl == 0 || ms > every) ms = every; /* the hosts file has no TTL */
  return ms < 1000 ? 1000 : ms;
}

int mg_resolve_load(mg_dns_t **dns, const mg_settings_t *s, mg_member_name_t *nm, char *err, size_t errlen) {
  for (int i = 0; i < nm->n; i++) nm->b->members[nm->first + i].unresolved = 1;
  if (!*dns) *dns = mg_dns_new((const char *const *)s->resolvers, s->nresolvers, err, errlen);
  if (!*dns) return -1;
  mg_dns_addr_t addrs[MG_DNS_MAX_ADDRS];
  uint32_t ttl = 0;
  char why[200];
  int n = mg_dns_lookup_wait(*dns, nm->host, nm->port, addrs, MG_DNS_MAX_ADDRS, &ttl, 10000, why, sizeof why);
  uint64_t now = mg_now_ms();
  if (n < 0) {
    if (!nm->resolve)
      return snprintf(err, errlen, "cannot resolve backend host %s: %s (with resolve = true the member starts without an address and is looked up again)",
                      nm->host, why),
             -1;
    mg_log(MG_LOG_NOTICE, "balancer %s: %s does not resolve yet (%s); its members wait for an address (resolve = true)", nm->b->name, nm->host, why);
    nm->failing = 1;
    nm->next_ms = now;
    return 0;
  }
  int left = assign(nm, addrs, n);
  if (left)
    mg_log(MG_LOG_WARN, "balancer %s: %s has %d addresses; its members take the first %d (max_addresses)", nm->b->name, nm->host, n, nm->n);
  nm->next_ms = now + next_after(s, ttl);
  return 0;
}

void mg_resolve_bind(mg_config_t *cfg) {
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    for (int k = 0; k < b->nnames; k++) {
      mg_member_name_t *nm = &b->names[k];
      mg_dns_addr_t load[MG_DNS_MAX_ADDRS];
      int n = 0;
      for (int j = 0; j < nm->n && n < MG_DNS_MAX_ADDRS; j++) {
        mg_member_t *m = &b->members[nm->first + j];
        if (m->unresolved) continue;
        memcpy(&load[n].sa, &m->addr.sa, sizeof load[n].sa);
        load[n++].salen = m->addr.salen;
      }
      /* What the slots held (a reload): an address found again stays in its member. */
      for (int j = 0; j < nm->n; j++) mg_member_sync(&b->members[nm->first + j]);
      if (n || !nm->failing) assign(nm, load, n);
    }
  }
}

static void on_answer(void *arg, const char *why, const mg_dns_addr_t *addrs, int n, uint32_t ttl) {
  mg_member_name_t *nm = arg;
  nm->asking = 0;
  if (why && strcmp(why, "resolver closed") == 0) return;
  uint64_t now = mg_now_ms();
  const mg_settings_t *s = nm->set;
  if (why) {
    if (!nm->failing) {
      mg_buf_t was;
      mg_buf_init(&was);
      list_addresses(nm, &was);
      mg_log(MG_LOG_WARN, "balancer %s: looking up %s again failed (%s); keeping %s", nm->b->name, nm->host, why, was.data);
      mg_buf_free(&was);
    }
    nm->failing = 1;
    uint64_t every = s->resolve_every_ms ? s->resolve_every_ms : 30000;
    nm->next_ms = now + (every < RETRY_FAILED_MS ? every : RETRY_FAILED_MS);
    return;
  }
  mg_buf_t was, is;
  mg_buf_init(&was), mg_buf_init(&is);
  list_addresses(nm, &was);
  int left = assign(nm, addrs, n);
  list_addresses(nm, &is);
  if (strcmp(was.data, is.data) != 0)
    mg_log(MG_LOG_NOTICE, "balancer %s: %s now resolves to %s (was %s)", nm->b->name, nm->host, is.data, was.data);
  else if (nm->failing)
    mg_log(MG_LOG_NOTICE, "balancer %s: %s resolves again (%s)", nm->b->name, nm->host, is.data);
  if (left && (strcmp(was.data, is.data) != 0 || nm->failing))
    mg_log(MG_LOG_WARN, "balancer %s: %s has %d addresses; its members take %d of them (max_addresses)", nm->b->name, nm->host, n, nm->n);
  mg_buf_free(&was), mg_buf_free(&is);
  nm->failing = 0;
  nm->next_ms = now + next_after(s, ttl);
}

int mg_resolve_pollfds(mg_config_t *cfg, struct pollfd *p, int max, int *timeout_ms) {
  int any = 0;
  for (int i = 0; i < cfg->nbalancers && !any; i++) any = cfg->balancers[i]->nnames > 0;
  if (!any) return 0;
  struct mg_resolver_s *r = cfg->resolver;
  if (!r) r = cfg->resolver = mg_calloc(1, sizeof *r);
  if (!r->dns && !r->broken) {
    char err[256];
    r->dns = mg_dns_new((const char *const *)cfg->set.resolvers, cfg->set.nresolvers, err, sizeof err);
    if (!r->dns) {
      mg_log(MG_LOG_ERROR, "members given by host name are not looked up again: %s", err);
      r->broken = 1;
    }
  }
  if (!r->dns) return 0;
  uint64_t now = mg_now_ms();
  int wait = *timeout_ms;
  for (int i = 0; i < cfg->nbalancers; i++)
    for (int k = 0; k < cfg->balancers[i]->nnames; k++) {
      mg_member_name_t *nm = &cfg->balancers[i]->names[k];
      if (nm->asking) continue;
      if (nm->next_ms <= now) {
        nm->asking = 1;
        mg_dns_lookup(r->dns, nm->host, nm->port, on_answer, nm);
        continue;
      }
      int in = (int)(nm->next_ms - now);
      if (wait < 0 || in < wait) wait = in;
    }
  *timeout_ms = mg_dns_timeout(r->dns, wait);
  return mg_dns_pollfds(r->dns, p, max);
}

void mg_resolve_process(mg_config_t *cfg, const struct pollfd *p, int n) {
  if (cfg->resolver && cfg->resolver->dns) mg_dns_process(cfg->resolver->dns, p, n);
}

void mg_resolve_free(mg_config_t *cfg) {
  if (!cfg->resolver) return;
  mg_dns_free(cfg->resolver->dns);
  free(cfg->resolver);
  cfg->resolver = NULL;
}
