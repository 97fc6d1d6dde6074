/* route: see route.h. A linear scan: route tables are tens of entries, and the scan touches
 * only the match strings. */
#include "route.h"

#include <string.h>

#include "route_re.h"

int mg_route_matches(const mg_route_t *r, const char *path, size_t len) {
  if (r->re) {
    long ov[2];
    return mg_route_re_match(r, path, len, ov, 1) > 0;
  }
  if (r->exact) return len == r->match_len && memcmp(path, r->match, len) == 0;
  if (len < r->match_len || memcmp(path, r->match, r->match_len) != 0) return 0;
  return r->match[r->match_len - 1] == '/' || len == r->match_len || path[r->match_len] == '/';
}

const mg_route_t *mg_route_find(const mg_config_t *cfg, const char *host, const char *path, size_t len) {
  const mg_route_t *best = NULL;
  int best_rank = -1;
  for (int i = 0; i < cfg->nroutes; i++) {
    const mg_route_t *r = &cfg->routes[i];
    if (r->host && (!host || strcmp(r->host, host) != 0)) continue;
    /* rank: host-specific, then exact, then regex (the first declared, so all rank the
     * same), then prefix length; a regex is run only when it could win */
    int rank = (r->host ? 1 << 30 : 0) + (r->exact ? 1 << 29 : r->re ? 1 << 28 : (int)r->match_len);
    if (rank <= best_rank || !mg_route_matches(r, path, len)) continue;
    best = r, best_rank = rank;
  }
  return best;
}
