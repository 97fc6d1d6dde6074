/* route: the routing table lookup (docs/reference.md, "Routes"), no I/O.
 *
 * Host routes are tried before host-less ones; within each, an exact route ("=/path") beats a
 * regular expression ("~re", "~*re"), the first one declared that matches, which beats a
 * prefix, and the longest prefix wins. A prefix that ends in "/" matches every path under it;
 * one that does not matches itself and the paths under it at a segment boundary ("/app"
 * matches "/app" and "/app/x", never "/apple"), as Apache's ProxyPass and Alias do. */
#ifndef MG_ROUTE_H
#define MG_ROUTE_H

#include <stddef.h>

#include "config.h"

/* `host` is the request's host without port, lower case, or NULL. Returns NULL when no
 * route matches. */
const mg_route_t *mg_route_find(const mg_config_t *cfg, const char *host, const char *path, size_t path_len);

/* 1 when route r matches path (its host aside). A request handed to a route by another one
 * (a static route's fallback, phase.h) may lie outside it: its handler asks this first. */
int mg_route_matches(const mg_route_t *r, const char *path, size_t len);

#endif
