/* phase: see phase.h. */
#include "phase.h"

#include "hooks.h"
#include "realip.h"
#include "redirect.h"
#include "route.h"
#include "trace.h"

enum { ST_REWRITE, ST_ROUTE, ST_ACCESS, ST_HANDLER, ST_RUNNING };

static const char *const phase_names[MG_PHASE_COUNT] = {
    [MG_PHASE_INIT] = "init",
    [MG_PHASE_REWRITE] = "rewrite",
    [MG_PHASE_ACCESS] = "access",
    [MG_PHASE_BALANCER] = "balancer",
    [MG_PHASE_HEADER_FILTER] = "header_filter",
    [MG_PHASE_LOG] = "log",
    [MG_PHASE_BODY_FILTER] = "body_filter",
    [MG_PHASE_CONTENT] = "content",
    [MG_PHASE_TIMER] = "timer",
    [MG_PHASE_INIT_WORKER] = "init_worker",
};

const char *mg_phase_name(int phase) { return phase >= 0 && phase < MG_PHASE_COUNT ? phase_names[phase] : "?"; }

static void engine_run(mg_req_t *req);

/* Runs the hooks of `phase` from req->hook_i on: MG_OK when all ran, MG_ENDED when the
 * request was handled, MG_WAITS when a hook waits (the engine goes on in mg_phase_resume). */
static int run_hooks(mg_req_t *req, int phase) {
  int n = mg_req_hook_count(req, phase);
  while (req->hook_i < n) {
    int ref = mg_req_hook_at(req, phase, req->hook_i++);
    int rc = mg_hooks->run(req, phase, ref);
    if (rc == MG_WAITS) {
      /* Hold the client's body while the hook waits, unless it waits for that body. */
      if (!req->handler_started && !req->is_subrequest && !req->body_reading) req->hold_body = 1;
      return MG_WAITS;
    }
    if (rc != MG_OK) return MG_ENDED;
  }
  req->hook_i = 0;
  return MG_OK;
}

/* The limits of the route the request has reached: MG_OK, or MG_ENDED after answering. */
static int route_admit(mg_req_t *req) {
  const mg_route_t *r = req->route;
  uint64_t limit = r->client_max_body_size;
  /* After an internal redirect (an error page's too) the body is read and dropped, not
   * passed on: no route's limit applies to it any more. */
  if (limit && !req->redirects && req->content_length > 0 && (uint64_t)req->content_length > limit) {
    req->keepalive = 0;
    mg_req_error(req, 413, "request body of %lld bytes exceeds client_max_body_size %llu of route %s",
                 (long long)req->content_length, (unsigned long long)limit, r->match);
    return MG_ENDED;
  }
  return MG_OK;
}

static int route_request(mg_req_t *req) {
  req->route = mg_route_find(req->cfg, req->host, req->path, req->path_len);
  const mg_route_t *r = req->route;
  if (!r || (r->internal && !req->is_subrequest && !req->redirects)) {
    /* An internal route does not exist for clients (nginx's `internal;`). */
    req->route = NULL;
    mg_req_error(req, 404, NULL);
    return MG_ENDED;
  }
  return route_admit(req);
}

static void engine_run(mg_req_t *req) {
  for (;;) {
    switch (req->stage) {
      case ST_REWRITE:
        if (run_hooks(req, MG_PHASE_REWRITE) != MG_OK) return;
        req->stage = ST_ROUTE;
        break;
      case ST_ROUTE:
        if (route_request(req) != MG_OK) return;
        req->stage = ST_ACCESS;
        break;
      case ST_ACCESS:
        if (run_hooks(req, MG_PHASE_ACCESS) != MG_OK) return;
        req->stage = ST_HANDLER;
        break;
      default: {
        req->stage = ST_RUNNING;
        req->handler_started = 1;
        int held = req->hold_body;
        req->hold_body = 0;
        /* The handler may finish the request at once; its transport is still valid memory
         * until the loop runs its close callbacks, so the held body is kicked through it. */
        const mg_sink_t *sink = req->sink;
        void *transport = req->transport;
        if (mg_explain && mg_explain->handler(req)) return;
        req->route->handler->start(req);
        if (held && sink->kick) sink->kick(transport);
        return;
      }
    }
  }
}

void mg_phase_start(mg_req_t *req) {
  /* nginx's realip runs in the post-read phase: before every hook, once per client request
   * (a subrequest inherits its parent's address). */
  if (!req->is_subrequest) mg_realip_apply(req);
  /* SPEC 20: the request's trace, from its traceparent or new (a subrequest's is made with it). */
  if (!req->is_subrequest && !req->traced) mg_trace_begin(req);
  req->phased = 1;
  req->stage = ST_REWRITE;
  req->hook_i = 0;
  engine_run(req);
}

void mg_phase_resume(mg_req_t *req, int result) {
  /* MG_ENDED: the hook answered the request, whose memory may be gone already (a response
   * that completed at once finished it): nothing of it is touched. */
  if (result != MG_OK) return;
  req->thread = NULL;
  engine_run(req);
}

void mg_phase_restart(mg_req_t *req, const char *location) {
  if (mg_explain) mg_explain->restart(req, location);
  if (mg_redirect_prepare(req, location) < 0) return;
  req->stage = ST_REWRITE;
  req->hook_i = 0;
  req->handler_started = 0;
  engine_run(req);
}

void mg_phase_handler(mg_req_t *req, const mg_route_t *route) {
  req->route = route;
  req->stage = ST_HANDLER;
  req->hook_i = 0;
  req->handler_started = 0;
  engine_run(req);
}

void mg_phase_handover(mg_req_t *req, const mg_route_t *route) {
  req->route = route;
  req->status = 200;
  req->resp_headers.n = 0;
  req->handler_started = 0;
  if (route_admit(req) != MG_OK) return;
  /* The global access hooks ran for this request already (a limit_req in one must not count
   * it twice): only the new route's own run, from the first one after the global ones. */
  req->stage = ST_ACCESS;
  req->hook_i = (uint16_t)(mg_req_hook_count(req, MG_PHASE_ACCESS) - route->hooks[MG_PHASE_ACCESS].n);
  engine_run(req);
}
