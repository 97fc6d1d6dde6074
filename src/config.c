/* config: see config.h. Address resolution and freeing; loading is in lua_config.c. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lua.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "balancer.h"

int mg_addr_resolve_tcp(mg_addr_t *addr, const char *host, int port) {
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", port);
  int rc = getaddrinfo(host, portstr, &hints, &res);
  if (rc != 0) return rc;
  struct addrinfo *pick = res;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET) {
      pick = ai;
      break;
    }
  memcpy(&addr->sa, pick->ai_addr, pick->ai_addrlen);
  addr->salen = pick->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

int mg_addr_set_unix(mg_addr_t *addr, const char *path) {
  struct sockaddr_un *un = (struct sockaddr_un *)&addr->sa;
  if (strlen(path) >= sizeof un->sun_path) return -ENAMETOOLONG;
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  strcpy(un->sun_path, path);
  addr->salen = sizeof *un;
  return 0;
}

void mg_addr_format(const mg_addr_t *addr, char *out, size_t n) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr->sa.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&addr->sa;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    snprintf(out, n, "%s:%d", ip, ntohs(in->sin_port));
  } else if (addr->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr->sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    snprintf(out, n, "[%s]:%d", ip, ntohs(in6->sin6_port));
  } else {
    snprintf(out, n, "unix:%s", ((const struct sockaddr_un *)&addr->sa)->sun_path);
  }
}

static void hooks_free(mg_hooks_t *h) {
  free(h->refs);
  h->refs = NULL, h->n = 0;
}

void mg_config_free(mg_config_t *cfg) {
  if (!cfg) return;
  for (int i = 0; i < cfg->nroutes; i++) {
    mg_route_t *r = &cfg->routes[i];
    free(r->match), free(r->host), free(r->addr.url), free(r->root), free(r->internal_redirect);
    free(r->sendfile), free(r->decl);
    if (r->root_fd >= 0) close(r->root_fd);
    for (int k = 0; k < r->nsendfile_roots; k++) {
      free(r->sendfile_roots[k]);
      if (r->sendfile_root_fds[k] >= 0) close(r->sendfile_root_fds[k]);
    }
    free(r->sendfile_roots), free(r->sendfile_root_fds);
    for (int k = 0; k < r->nenv; k++) free(r->env[k].name), free(r->env[k].value);
    free(r->env);
    for (int p = 0; p < MG_PHASE_COUNT; p++) hooks_free(&r->hooks[p]);
  }
  free(cfg->routes);
  for (int i = 0; i < cfg->nbalancers; i++) mg_balancer_free(cfg->balancers[i]);
  free(cfg->balancers);
  for (int i = 0; i < cfg->nlistens; i++) free(cfg->listens[i].host), free(cfg->listens[i].text);
  free(cfg->listens);
  for (int p = 0; p < MG_PHASE_COUNT; p++) hooks_free(&cfg->hooks[p]);
  hooks_free(&cfg->init_worker);
  free(cfg->timers);
  for (int i = 0; i < cfg->nwatched; i++) free(cfg->watched[i]);
  free(cfg->watched);
  mg_settings_t *s = &cfg->set;
  free(s->server_name), free(s->access_log), free(s->error_log), free(s->log_level), free(s->pid);
  if (cfg->L) lua_close(cfg->L);
  free(cfg->file), free(cfg->dir);
  free(cfg);
}
