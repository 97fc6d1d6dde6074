/* status: see status.h. */
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "balancer.h"
#include "buf.h"
#include "handler.h"
#include "request.h"
#include "hooks.h"
#include "loop.h"
#include "metrics_page.h"
#include "queue.h"
#include "passive.h"
#include <unistd.h>

#define SLOTS 4096

typedef struct {
  char key[200]; /* "balancer\tmember-url" */
  mg_member_stats_t stats;
} slot_t;

static slot_t *slots;

int mg_status_bind(mg_config_t *cfg) {
  mg_passive_bind(cfg); /* SPEC 20: passive health and retries have their own zone */
  if (!slots) {
    void *p = mmap(NULL, sizeof(slot_t) * SLOTS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -errno;
    slots = p;
  }
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    for (int k = 0; k < b->nmembers; k++) {
      char key[200];
      snprintf(key, sizeof key, "%s\t%s", b->name, mg_member_key(&b->members[k]));
      slot_t *free_slot = NULL, *found = NULL;
      for (int s = 0; s < SLOTS && !found; s++) {
        if (!slots[s].key[0]) {
          if (!free_slot) free_slot = &slots[s];
        } else if (strcmp(slots[s].key, key) == 0) {
          found = &slots[s];
        }
      }
      if (!found && free_slot) {
        found = free_slot;
        memset(found, 0, sizeof *found);
        snprintf(found->key, sizeof found->key, "%s", key);
      }
      b->members[k].shared = found ? &found->stats : NULL;
      /* Requests in flight belong to workers that no longer exist after a restart. */
      if (found && found->stats.inflight < 0) found->stats.inflight = 0;
    }
  }
  int rc = mg_metrics_bind(cfg);
  int rq = mg_queue_bind(cfg); /* SPEC 20: member slots and queues */
  /* An operator's max_conns outlives the reload that has just put init.lua's back. */
  for (int i = 0; i < cfg->nbalancers; i++)
    for (int k = 0; k < cfg->balancers[i]->nmembers; k++) mg_member_live_max(&cfg->balancers[i]->members[k]);
  return rc < 0 ? rc : rq;
}

static const char *state_of(const mg_member_t *m, uint64_t now) {
  if (m->flags & MG_MEMBER_STOPPED) return "stopped";
  if (m->flags & MG_MEMBER_DISABLED) return "disabled";
  const mg_member_stats_t *s = m->shared ? m->shared : &m->local;
  if (s->health_down) return "down";
  if (mg_passive_ejected_ms(m, now)) return "ejected";
  if (!mg_member_usable(m, now)) return "error";
  if (m->flags & MG_MEMBER_DRAINING) return "draining";
  if (m->flags & MG_MEMBER_HOT_STANDBY) return "standby";
  return "ok";
}

static void prom_label(mg_buf_t *b, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') mg_buf_append(b, "\\", 1);
    if (*s == '\n') mg_buf_puts(b, "\\n");
    else mg_buf_append(b, s, 1);
  }
}

void mg_status_serve(mg_req_t *req) {
  const mg_config_t *cfg = req->cfg;
  uint64_t now = mg_now_ms();
  int prom = req->query && strstr(req->query, "format=prometheus") != NULL;
  for (int i = 0; i < cfg->nbalancers; i++) /* an operator's changes (SPEC 20) */
    for (int k = 0; k < cfg->balancers[i]->nmembers; k++) mg_member_sync(&cfg->balancers[i]->members[k]);
  mg_buf_t b;
  mg_buf_init(&b);
  if (prom) {
    static const char *metrics[][3] = {
        {"requests_total", "counter", "Requests a balancer member answered."},
        {"bytes_total", "counter", "Response bytes a balancer member sent."},
        {"inflight", "gauge", "Requests a balancer member is answering now."},
        {"errors_total", "counter", "Failures of a balancer member (connect errors, timeouts)."},
        {"up", "gauge", "1 while a balancer member is usable (ok, standby or draining), else 0."},
        {"lbfactor", "gauge", "A balancer member's load factor."}};
    for (int mi = 0; mi < 6; mi++) {
      mg_buf_printf(&b, "# HELP moongate_member_%s %s\n# TYPE moongate_member_%s %s\n", metrics[mi][0], metrics[mi][2],
                    metrics[mi][0], metrics[mi][1]);
      for (int i = 0; i < cfg->nbalancers; i++) {
        const mg_balancer_t *bl = cfg->balancers[i];
        for (int k = 0; k < bl->nmembers; k++) {
          const mg_member_t *m = &bl->members[k];
          if (m->unresolved) continue; /* SPEC 20: a name's slot without an address */
          const mg_member_stats_t *s = m->shared ? m->shared : &m->local;
          mg_buf_printf(&b, "moongate_member_%s{balancer=\"", metrics[mi][0]);
          prom_label(&b, bl->name);
          mg_buf_puts(&b, "\",member=\"");
          prom_label(&b, mg_member_key(m));
          uint64_t v = mi == 0 ? s->requests : mi == 1 ? s->bytes : mi == 2 ? (uint64_t)(s->inflight > 0 ? s->inflight : 0)
                     : mi == 3 ? s->errors : mi == 4 ? (uint64_t)(strcmp(state_of(m, now), "ok") == 0 || strcmp(state_of(m, now), "standby") == 0 || strcmp(state_of(m, now), "draining") == 0)
                               : (uint64_t)m->lbfactor;
          mg_buf_printf(&b, "\"} %llu\n", (unsigned long long)v);
        }
      }
    }
    mg_metrics_prometheus(cfg, &b);
    mg_queue_prom(&b, cfg); /* SPEC 20 */
    mg_passive_prometheus(&b, cfg, now, prom_label);
    mg_req_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len);
  } else {
    mg_buf_puts(&b, "{\"balancers\":[");
    for (int i = 0; i < cfg->nbalancers; i++) {
      const mg_balancer_t *bl = cfg->balancers[i];
      static const char *methods[] = {"byrequests", "bytraffic", "bybusyness", "lua"};
      mg_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
      mg_buf_json_str(&b, bl->name);
      mg_buf_printf(&b, ",\"method\":\"%s\",\"members\":[", methods[bl->method]);
      for (int k = 0, shown = 0; k < bl->nmembers; k++) {
        const mg_member_t *m = &bl->members[k];
        if (m->unresolved) continue; /* SPEC 20: a name's slot without an address */
        const mg_member_stats_t *s = m->shared ? m->shared : &m->local;
        mg_buf_puts(&b, shown++ ? ",{\"url\":" : "{\"url\":");
        mg_buf_json_str(&b, m->addr.url);
        mg_buf_puts(&b, ",\"address\":");
        mg_buf_json_str(&b, m->addr.text);
        if (m->name) mg_buf_puts(&b, ",\"key\":"), mg_buf_json_str(&b, mg_member_key(m));
        mg_buf_puts(&b, ",\"route\":");
        if (m->route) mg_buf_json_str(&b, m->route);
        else mg_buf_puts(&b, "null");
        mg_buf_printf(&b, ",\"lbfactor\":%d,\"status\":\"%s\",\"requests\":%llu,\"bytes\":%llu,\"inflight\":%lld,\"errors\":%llu,\"last_error\":",
                      m->lbfactor, state_of(m, now), (unsigned long long)s->requests, (unsigned long long)s->bytes,
                      (long long)(s->inflight > 0 ? s->inflight : 0), (unsigned long long)s->errors);
        mg_buf_json_str(&b, s->last_error);
        mg_queue_json_member(&b, m);
        mg_passive_json_member(&b, m, now);
        mg_buf_puts(&b, "}");
      }
      mg_buf_puts(&b, "]");
      mg_queue_json_balancer(&b, bl);
      mg_passive_json_balancer(&b, bl);
      mg_buf_puts(&b, "}");
    }
    mg_buf_puts(&b, "]");
    mg_metrics_json(cfg, &b);
    mg_buf_printf(&b, ",\"worker\":{\"pid\":%d,\"requests\":%llu,\"connections\":%llu,\"lua_calls\":%llu}}\n",
                  (int)getpid(), (unsigned long long)req->server->nreqs, (unsigned long long)req->server->nconns,
                  (unsigned long long)(mg_hooks ? mg_hooks->calls() : 0));
    mg_req_respond(req, 200, "application/json", b.data, b.len);
  }
  mg_buf_free(&b);
}

const mg_handler_t mg_handler_status = {"status", mg_status_serve};
