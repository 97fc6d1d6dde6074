/* metrics_page: see metrics_page.h. */
#include "metrics_page.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "metrics.h"
#include "phase.h"

/* ---- labels --------------------------------------------------------------------------------- */

/* A route's label: its match as the access log names it; when two routes share a match (other
 * hosts, exact and prefix), each also names its mg.route line, so label sets stay unique. */
static const char *route_label(const mg_config_t *cfg, int i, char *buf, size_t n) {
  if (i < 0 || i >= cfg->nroutes) return "(none)";
  const mg_route_t *r = &cfg->routes[i];
  for (int k = 0; k < cfg->nroutes; k++) {
    if (k != i && strcmp(cfg->routes[k].match, r->match) == 0) {
      snprintf(buf, n, "%s (%s)", r->match, r->decl ? r->decl : "?");
      return buf;
    }
  }
  return r->match;
}

/* The upstream members a route may use: its balancer's, or its one SCGI address. */
static int route_nmembers(const mg_route_t *r) {
  if (r->kind == MG_TARGET_BALANCER && r->balancer) return r->balancer->nmembers;
  return r->kind == MG_TARGET_SCGI ? 1 : 0;
}

static const char *route_member(const mg_route_t *r, int k) {
  if (r->kind == MG_TARGET_BALANCER && r->balancer) return mg_member_key(&r->balancer->members[k]);
  return r->addr.url ? r->addr.url : "";
}

/* ---- binding -------------------------------------------------------------------------------- */

int mg_metrics_bind(mg_config_t *cfg) {
  int nr = cfg->nroutes, nb = cfg->nbalancers;
  const char **rkeys = calloc((size_t)nr + 1, sizeof *rkeys);
  int *rmem = calloc((size_t)nr + 1, sizeof *rmem);
  const char ***mkeys = calloc((size_t)nr + 1, sizeof *mkeys);
  const char **bkeys = calloc((size_t)nb + 1, sizeof *bkeys);
  int *bmem = calloc((size_t)nb + 1, sizeof *bmem);
  const char ***bmkeys = calloc((size_t)nb + 1, sizeof *bmkeys);
  char (*labels)[300] = calloc((size_t)nr + 1, sizeof *labels);
  int rc = 0;
  if (!rkeys || !rmem || !mkeys || !bkeys || !bmem || !bmkeys || !labels) {
    rc = -ENOMEM;
    goto done;
  }
  for (int i = 0; i < nr; i++) {
    const mg_route_t *r = &cfg->routes[i];
    /* The key across reloads: the label, with the host (a route moving line keeps its row). */
    snprintf(labels[i], sizeof labels[i], "%s\t%s\t%d", r->host ? r->host : "", r->match, r->exact);
    rkeys[i] = labels[i];
    rmem[i] = route_nmembers(r);
    mkeys[i] = calloc((size_t)rmem[i] + 1, sizeof(char *));
    if (!mkeys[i]) {
      rc = -ENOMEM;
      goto done;
    }
    for (int k = 0; k < rmem[i]; k++) mkeys[i][k] = route_member(r, k);
  }
  for (int i = 0; i < nb; i++) {
    const mg_balancer_t *bl = cfg->balancers[i];
    bkeys[i] = bl->name;
    bmem[i] = bl->nmembers;
    bmkeys[i] = calloc((size_t)bmem[i] + 1, sizeof(char *));
    if (!bmkeys[i]) {
      rc = -ENOMEM;
      goto done;
    }
    for (int k = 0; k < bmem[i]; k++) bmkeys[i][k] = mg_member_key(&bl->members[k]);
  }
  mg_metrics_shape_t shape = {
      .nroutes = nr, .route_keys = rkeys, .route_members = rmem, .member_keys = mkeys,
      .nbalancers = nb, .balancer_keys = bkeys, .balancer_members = bmem, .bmember_keys = bmkeys,
      .nbuckets = cfg->set.nhistogram_buckets, .buckets = cfg->set.histogram_buckets,
  };
  mg_metrics_t *m = mg_metrics_map(&shape);
  if (!m) {
    rc = -errno;
    goto done;
  }
  cfg->metrics = m;
done:
  for (int i = 0; mkeys && i < nr; i++) free(mkeys[i]);
  for (int i = 0; bmkeys && i < nb; i++) free(bmkeys[i]);
  free(rkeys), free(rmem), free(mkeys), free(bkeys), free(bmem), free(bmkeys), free(labels);
  return rc;
}

/* ---- the request path ----------------------------------------------------------------------- */

int mg_metrics_route_of(const mg_req_t *req) {
  const mg_config_t *cfg = req->cfg;
  const mg_route_t *r = req->route;
  /* An error page (a URI served by an internal redirect, or a function, a route that no URI
   * reaches) counts for the route whose error it answers, or for none. */
  if (req->errpage_status) r = req->errpage_of;
  if (r && r >= cfg->routes && r < cfg->routes + cfg->nroutes) return (int)(r - cfg->routes);
  return cfg->nroutes;
}

void mg_metrics_observe(const mg_req_t *req) {
  if (req->is_subrequest) return;
  int status = mg_req_logged_status(req);
  mg_metrics_request(mg_metrics_route_of(req), status, (uv_hrtime() - req->start_ns) / 1000);
}

/* ---- the Prometheus text -------------------------------------------------------------------- */

static void family(mg_buf_t *b, const char *name, const char *type, const char *help) {
  mg_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void label(mg_buf_t *b, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') mg_buf_append(b, "\\", 1);
    if (*s == '\n') mg_buf_puts(b, "\\n");
    else mg_buf_append(b, s, 1);
  }
}

/* The shortest text that reads back as the same double (Prometheus' le="0.005"). */
static void num(mg_buf_t *b, double v) {
  char t[40];
  if (v == (double)(long long)v && v > -1e15 && v < 1e15) { /* 10, not 1e+01 */
    mg_buf_printf(b, "%lld", (long long)v);
    return;
  }
  for (int p = 1; p <= 17; p++) {
    snprintf(t, sizeof t, "%.*g", p, v);
    if (strtod(t, NULL) == v) break;
  }
  mg_buf_puts(b, t);
}

/* A histogram's series; `labels` is the label text before le (`route="/",` or ""). */
static void hist(mg_buf_t *b, const mg_metrics_t *m, const char *name, const char *labels, const mg_metrics_hist_t *h) {
  int nb = mg_metrics_nbuckets(m);
  for (int i = 0; i <= nb; i++) {
    mg_buf_printf(b, "%s_bucket{%sle=\"", name, labels);
    if (i < nb) num(b, mg_metrics_bucket(m, i));
    else mg_buf_puts(b, "+Inf");
    mg_buf_printf(b, "\"} %llu\n", (unsigned long long)h->buckets[i]);
  }
  size_t n = strlen(labels);
  /* _sum and _count carry the same labels, without the trailing comma. */
  mg_buf_printf(b, "%s_sum{%.*s} ", name, (int)(n ? n - 1 : 0), labels);
  num(b, h->sum);
  mg_buf_printf(b, "\n%s_count{%.*s} %llu\n", name, (int)(n ? n - 1 : 0), labels, (unsigned long long)h->count);
}

static void labels_of(mg_buf_t *l, const char *k1, const char *v1, const char *k2, const char *v2) {
  l->len = 0;
  mg_buf_printf(l, "%s=\"", k1);
  label(l, v1);
  mg_buf_puts(l, "\",");
  if (k2) {
    mg_buf_printf(l, "%s=\"", k2);
    label(l, v2);
    mg_buf_puts(l, "\",");
  }
  mg_buf_append(l, "", 1);
  l->len--;
}

static const char *const classes[MG_METRICS_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

void mg_metrics_prometheus(const mg_config_t *cfg, mg_buf_t *b) {
  const mg_metrics_t *m = cfg->metrics;
  char rb[400];
  mg_buf_t l;
  mg_buf_init(&l);
  mg_metrics_hist_t h;

  family(b, "moongate_requests_total", "counter", "Client requests finished, by route and status class.");
  for (int r = 0; r <= cfg->nroutes; r++)
    for (int c = 0; c < MG_METRICS_CLASSES; c++) {
      labels_of(&l, "route", route_label(cfg, r, rb, sizeof rb), "class", classes[c]);
      mg_buf_printf(b, "moongate_requests_total{%.*s} %llu\n", (int)l.len - 1, l.data,
                    (unsigned long long)mg_metrics_requests(m, r, c));
    }

  family(b, "moongate_request_duration_seconds", "histogram",
         "Time from a request's first byte to its last response byte, by route.");
  for (int r = 0; r <= cfg->nroutes; r++) {
    labels_of(&l, "route", route_label(cfg, r, rb, sizeof rb), NULL, NULL);
    mg_metrics_request_hist(m, r, &h);
    hist(b, m, "moongate_request_duration_seconds", l.data, &h);
  }

  family(b, "moongate_upstream_duration_seconds", "histogram",
         "Time from the first connect to a backend to the end of its response, by route and member.");
  for (int r = 0; r < cfg->nroutes; r++) {
    const mg_route_t *rt = &cfg->routes[r];
    for (int k = 0; k < route_nmembers(rt); k++) {
      if (rt->kind == MG_TARGET_BALANCER && rt->balancer && rt->balancer->members[k].unresolved) continue;
      labels_of(&l, "route", route_label(cfg, r, rb, sizeof rb), "member", route_member(rt, k));
      mg_metrics_upstream_hist(m, r, k, &h);
      hist(b, m, "moongate_upstream_duration_seconds", l.data, &h);
    }
  }

  family(b, "moongate_connections", "gauge", "Client connections open, by protocol (http1, h2) and TLS.");
  for (int p = 0; p < MG_METRICS_PROTOS; p++)
    mg_buf_printf(b, "moongate_connections{protocol=\"%s\",tls=\"%s\"} %lld\n", p >= 2 ? "h2" : "http1",
                  p & 1 ? "true" : "false", (long long)mg_metrics_conns(m, p));

  static const int phases[] = {MG_PHASE_REWRITE, MG_PHASE_ACCESS, MG_PHASE_BALANCER, MG_PHASE_HEADER_FILTER,
                               MG_PHASE_BODY_FILTER, MG_PHASE_LOG, MG_PHASE_CONTENT, MG_PHASE_TIMER,
                               MG_PHASE_INIT_WORKER};
  int nph = (int)(sizeof phases / sizeof phases[0]);
  family(b, "moongate_lua_seconds_total", "counter", "Time spent running Lua, by phase.");
  for (int i = 0; i < nph; i++) {
    mg_buf_printf(b, "moongate_lua_seconds_total{phase=\"%s\"} ", mg_phase_name(phases[i]));
    num(b, mg_metrics_lua_seconds(m, phases[i]));
    mg_buf_puts(b, "\n");
  }
  family(b, "moongate_lua_calls_total", "counter", "Entries from C into Lua (a hook, a resumed thread), by phase.");
  for (int i = 0; i < nph; i++)
    mg_buf_printf(b, "moongate_lua_calls_total{phase=\"%s\"} %llu\n", mg_phase_name(phases[i]),
                  (unsigned long long)mg_metrics_lua_calls(m, phases[i]));

  family(b, "moongate_queue_length", "gauge", "Requests waiting in a balancer's queue for a free member.");
  for (int i = 0; i < cfg->nbalancers; i++) {
    labels_of(&l, "balancer", cfg->balancers[i]->name, NULL, NULL);
    mg_buf_printf(b, "moongate_queue_length{%.*s} %lld\n", (int)l.len - 1, l.data,
                  (long long)mg_metrics_queue_get(m, i, MG_QUEUE_ENTER));
  }
  family(b, "moongate_queue_requests_total", "counter",
         "Requests that met a balancer's queue, by outcome: served after waiting, full, timeout.");
  static const char *const outcomes[] = {NULL, "served", "full", "timeout"};
  for (int i = 0; i < cfg->nbalancers; i++)
    for (int o = 1; o <= 3; o++) {
      labels_of(&l, "balancer", cfg->balancers[i]->name, "outcome", outcomes[o]);
      mg_buf_printf(b, "moongate_queue_requests_total{%.*s} %lld\n", (int)l.len - 1, l.data,
                    (long long)mg_metrics_queue_get(m, i, o));
    }
  family(b, "moongate_queue_wait_seconds", "histogram", "Time a served request waited in a balancer's queue.");
  for (int i = 0; i < cfg->nbalancers; i++) {
    labels_of(&l, "balancer", cfg->balancers[i]->name, NULL, NULL);
    mg_metrics_queue_wait_hist(m, i, &h);
    hist(b, m, "moongate_queue_wait_seconds", l.data, &h);
  }
  family(b, "moongate_ejections_total", "counter", "Members taken out by passive health (outlier ejection).");
  for (int i = 0; i < cfg->nbalancers; i++)
    for (int k = 0; k < cfg->balancers[i]->nmembers; k++) {
      if (cfg->balancers[i]->members[k].unresolved) continue;
      labels_of(&l, "balancer", cfg->balancers[i]->name, "member", mg_member_key(&cfg->balancers[i]->members[k]));
      mg_buf_printf(b, "moongate_ejections_total{%.*s} %llu\n", (int)l.len - 1, l.data,
                    (unsigned long long)mg_metrics_ejections(m, i, k));
    }
  family(b, "moongate_retries_total", "counter", "Requests tried again on another member of a balancer.");
  for (int i = 0; i < cfg->nbalancers; i++) {
    labels_of(&l, "balancer", cfg->balancers[i]->name, NULL, NULL);
    mg_buf_printf(b, "moongate_retries_total{%.*s} %llu\n", (int)l.len - 1, l.data,
                  (unsigned long long)mg_metrics_retries(m, i, 0));
  }
  family(b, "moongate_retries_budget_exhausted_total", "counter",
         "Retries a balancer's retry budget refused (the request's answer stood).");
  for (int i = 0; i < cfg->nbalancers; i++) {
    labels_of(&l, "balancer", cfg->balancers[i]->name, NULL, NULL);
    mg_buf_printf(b, "moongate_retries_budget_exhausted_total{%.*s} %llu\n", (int)l.len - 1, l.data,
                  (unsigned long long)mg_metrics_retries(m, i, 1));
  }
  mg_buf_free(&l);
}

/* ---- the JSON page -------------------------------------------------------------------------- */

void mg_metrics_json(const mg_config_t *cfg, mg_buf_t *b) {
  const mg_metrics_t *m = cfg->metrics;
  char rb[400];
  mg_metrics_hist_t h;
  mg_buf_puts(b, ",\"metrics\":{\"routes\":[");
  for (int r = 0; r <= cfg->nroutes; r++) {
    mg_buf_puts(b, r ? ",{\"route\":" : "{\"route\":");
    mg_buf_json_str(b, route_label(cfg, r, rb, sizeof rb));
    mg_buf_puts(b, ",\"requests\":{");
    for (int c = 0; c < MG_METRICS_CLASSES; c++)
      mg_buf_printf(b, "%s\"%s\":%llu", c ? "," : "", classes[c], (unsigned long long)mg_metrics_requests(m, r, c));
    mg_metrics_request_hist(m, r, &h);
    mg_buf_printf(b, "},\"time_sum\":%.6f}", h.sum);
  }
  mg_buf_puts(b, "],\"connections\":{");
  for (int p = 0; p < MG_METRICS_PROTOS; p++)
    mg_buf_printf(b, "%s\"%s%s\":%lld", p ? "," : "", p >= 2 ? "h2" : "http1", p & 1 ? "_tls" : "",
                  (long long)mg_metrics_conns(m, p));
  mg_buf_puts(b, "},\"lua\":{");
  int first = 1;
  for (int ph = 1; ph < MG_PHASE_COUNT && ph < MG_METRICS_PHASES; ph++) {
    mg_buf_printf(b, "%s\"%s\":{\"seconds\":%.6f,\"calls\":%llu}", first ? "" : ",", mg_phase_name(ph),
                  mg_metrics_lua_seconds(m, ph), (unsigned long long)mg_metrics_lua_calls(m, ph));
    first = 0;
  }
  mg_buf_puts(b, "},\"balancers\":[");
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
    mg_buf_json_str(b, cfg->balancers[i]->name);
    uint64_t ej = 0;
    for (int k = 0; k < cfg->balancers[i]->nmembers; k++) ej += mg_metrics_ejections(m, i, k);
    mg_buf_printf(b, ",\"queue_length\":%lld,\"queue_served\":%lld,\"queue_full\":%lld,\"queue_timeout\":%lld,"
                     "\"retries\":%llu,\"retries_budget_exhausted\":%llu,\"ejections\":%llu}",
                  (long long)mg_metrics_queue_get(m, i, MG_QUEUE_ENTER), (long long)mg_metrics_queue_get(m, i, MG_QUEUE_SERVED),
                  (long long)mg_metrics_queue_get(m, i, MG_QUEUE_FULL), (long long)mg_metrics_queue_get(m, i, MG_QUEUE_TIMEOUT),
                  (unsigned long long)mg_metrics_retries(m, i, 0), (unsigned long long)mg_metrics_retries(m, i, 1),
                  (unsigned long long)ej);
  }
  mg_buf_puts(b, "]}");
}
