/* The phase engine (core/phase.h) with a fake hooks table and a fake handler: the order in
 * which a request meets its hooks, routing and its handler; what a hook that answers or waits
 * does to the rest; and the answers routing gives on its own (404, internal routes, 413).
 *
 * Hook references are plain integers; the fake run() appends "<phase> <ref> <route>" to a
 * trace and returns what the script says for that reference. The handler appends
 * "handler <route>" and answers 200 "ok" (or, for the query "redirect", restarts the request
 * at an internal location). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "log_capture.h"
#include "hooks.h"
#include "log.h"
#include "loop.h"
#include "phase.h"
#include "request.h"

static char trace[512];
static void note(const char *what, const mg_req_t *req) {
  size_t n = strlen(trace);
  snprintf(trace + n, sizeof trace - n, "%s%s %s", n ? ", " : "", what, req->route ? req->route->match : "-");
}

/* ---- the fake hooks ---- */

static int script[16];      /* per hook reference: MG_OK (0), MG_ENDED or MG_WAITS */
static const char *rewrite_to; /* hook 2 sets the request's path to this */

static int hook_run(mg_req_t *req, int phase, int ref) {
  char what[32];
  snprintf(what, sizeof what, "%s %d", mg_phase_name(phase), ref);
  note(what, req);
  if (ref == 2 && rewrite_to) {
    req->path = mg_pool_strdup(&req->pool, rewrite_to);
    req->path_len = strlen(rewrite_to);
  }
  if (script[ref] == MG_ENDED) mg_req_error(req, 403, NULL); /* the hook answered */
  if (script[ref] == MG_WAITS) req->thread = &script;        /* a Lua thread waits */
  return script[ref];
}
static int abandoned;
static void hook_abandon(mg_req_t *req) {
  (void)req;
  abandoned++;
}
static const mg_hooks_table_t fake_hooks = {.run = hook_run, .abandon = hook_abandon};

/* ---- the fake handler ---- */

static int started;
static void handler_start(mg_req_t *req) {
  started++;
  note("handler", req);
  if (req->query && strcmp(req->query, "redirect") == 0) {
    mg_phase_restart(req, "/app/again?redirect");
    return;
  }
  mg_req_respond(req, 200, "text/plain", "ok", 2);
}
static const mg_handler_t fake_handler = {.name = "fake", .start = handler_start};

/* ---- the fake sink: the status and body the client gets ---- */

typedef struct {
  int heads, status, ends, kicks;
  char body[128];
} rec_t;
static void on_head(mg_req_t *req) {
  rec_t *r = req->transport;
  r->heads++, r->status = req->status;
}
static void on_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  rec_t *r = req->transport;
  size_t n = strlen(r->body);
  if (n + len < sizeof r->body) memcpy(r->body + n, data, len), r->body[n + len] = 0;
  mg_block_put(block);
  free(heap);
}
static void on_end(mg_req_t *req) { ((rec_t *)req->transport)->ends++; }
static void on_abort(mg_req_t *req) { (void)req; }
static void on_kick(void *transport) { ((rec_t *)transport)->kicks++; }
static const mg_sink_t sink = {
    .name = "fake", .head = on_head, .body = on_body, .end = on_end, .abort = on_abort, .kick = on_kick};

static mg_config_t cfg;
static mg_server_t server;

/* A client request for `target`, its trace and script cleared. */
static mg_req_t *new_req(rec_t *r, const char *target) {
  memset(r, 0, sizeof *r);
  memset(script, 0, sizeof script);
  trace[0] = 0;
  started = 0;
  mg_req_t *req = mg_req_new(&server, &sink, r);
  req->remote = mg_pool_strdup(&req->pool, "203.0.113.9");
  req->method = req->orig_method = "GET";
  req->target = mg_pool_strdup(&req->pool, target);
  CHECK(mg_req_set_target(req, target) == 0);
  return req;
}

static void done(mg_req_t *req) {
  mg_req_finish(req);
  mg_req_free(req);
}

int main(void) {
  CHECK(log_capture_start() == 0);

  /* Global rewrite hooks 1 and 2; the route /app has access hooks 3 and 4; /internal answers
   * only subrequests and internal redirects; /upload takes bodies of 100 bytes at most. */
  int rewrite_refs[] = {1, 2}, access_refs[] = {3, 4};
  mg_route_t routes[3] = {
      {.match = "/app", .match_len = 4, .handler = &fake_handler},
      {.match = "/internal", .match_len = 9, .handler = &fake_handler, .internal = 1},
      {.match = "/upload", .match_len = 7, .handler = &fake_handler, .client_max_body_size = 100},
  };
  routes[0].hooks[MG_PHASE_ACCESS] = (mg_hooks_t){access_refs, 2};
  cfg.routes = routes, cfg.nroutes = 3;
  cfg.hooks[MG_PHASE_REWRITE] = (mg_hooks_t){rewrite_refs, 2};
  cfg.set.internal_redirect_limit = 2;
  server.cfg = &cfg;
  mg_hooks = &fake_hooks;
  rec_t r;
  mg_req_t *req;

  CHECK_STR(mg_phase_name(MG_PHASE_REWRITE), "rewrite");
  CHECK_STR(mg_phase_name(MG_PHASE_ACCESS), "access");
  CHECK_STR(mg_phase_name(MG_PHASE_CONTENT), "content");
  CHECK_STR(mg_phase_name(MG_PHASE_INIT), "init");
  CHECK_STR(mg_phase_name(MG_PHASE_COUNT), "?");
  CHECK_STR(mg_phase_name(-1), "?");

  /* The order: rewrite hooks before routing, then the route's access hooks, then its handler. */
  req = new_req(&r, "/app/x");
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app");
  CHECK(started == 1 && r.status == 200 && r.ends == 1);
  CHECK_STR(r.body, "ok");
  done(req);

  /* What a rewrite hook makes of the path is what routing sees. */
  rewrite_to = "/app/rewritten";
  req = new_req(&r, "/elsewhere");
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app");
  CHECK(r.status == 200);
  done(req);
  rewrite_to = NULL;

  /* A hook that answers ends the request: no hook after it runs, the handler never starts. */
  req = new_req(&r, "/app/x");
  script[1] = MG_ENDED;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -");
  CHECK(started == 0 && r.status == 403 && r.ends == 1);
  done(req);
  req = new_req(&r, "/app/x");
  script[3] = MG_ENDED;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app");
  CHECK(started == 0 && r.status == 403 && r.heads == 1);
  done(req);
  /* A failure (a negative errno) ends it the same way. */
  req = new_req(&r, "/app/x");
  script[4] = -5;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app");
  CHECK(started == 0);
  mg_req_error(req, 500, NULL); /* the binding answers a failed hook */
  done(req);

  /* A hook that waits: the engine returns with the client's body held; resumed with MG_OK it
   * goes on from the next hook, and the handler's start lets the held body flow. */
  req = new_req(&r, "/app/x");
  script[3] = MG_WAITS;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app");
  CHECK(req->hold_body == 1 && started == 0 && r.heads == 0 && r.kicks == 0);
  mg_phase_resume(req, MG_OK);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app");
  CHECK(started == 1 && req->hold_body == 0 && req->thread == NULL);
  CHECK(r.kicks == 1 && r.status == 200 && r.ends == 1);
  done(req);
  /* The same from a rewrite hook: routing and the access hooks follow the resume. */
  req = new_req(&r, "/app/x");
  script[1] = MG_WAITS;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -");
  CHECK(req->hold_body == 1);
  mg_phase_resume(req, MG_OK);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app");
  CHECK(started == 1 && r.status == 200);
  done(req);
  /* Two waits in a row, each resumed. */
  req = new_req(&r, "/app/x");
  script[2] = MG_WAITS, script[4] = MG_WAITS;
  mg_phase_start(req);
  mg_phase_resume(req, MG_OK);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app");
  CHECK(started == 0 && req->hold_body == 1);
  mg_phase_resume(req, MG_OK);
  CHECK(started == 1 && r.status == 200 && r.kicks == 1);
  done(req);
  /* Resumed with MG_ENDED (the hook answered after its wait): nothing more runs. */
  req = new_req(&r, "/app/x");
  script[3] = MG_WAITS;
  mg_phase_start(req);
  /* The binding's part (lua_hooks.c): the thread is cleared before the answer, since the
   * request may be gone once it is answered; the engine then touches nothing of it. */
  req->thread = NULL;
  mg_req_error(req, 403, NULL);
  mg_phase_resume(req, MG_ENDED);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app");
  CHECK(started == 0 && r.status == 403 && r.heads == 1 && req->thread == NULL);
  done(req);
  CHECK(abandoned == 0);
  /* A hook that waits for the request body itself does not hold it. */
  req = new_req(&r, "/app/x");
  script[3] = MG_WAITS;
  req->body_reading = 1;
  mg_phase_start(req);
  CHECK(req->hold_body == 0);
  /* The client goes away during the wait: the wait is abandoned, nothing more runs. */
  done(req);
  CHECK(abandoned == 1 && started == 0);

  /* No route: 404 through the sink, after the rewrite hooks, before any access hook. */
  req = new_req(&r, "/nothing");
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -");
  CHECK(started == 0 && r.status == 404 && r.ends == 1 && req->route == NULL);
  CHECK_STR(r.body, "404 Not Found\n");
  done(req);
  /* A prefix matches at a segment boundary only. */
  req = new_req(&r, "/apple");
  mg_phase_start(req);
  CHECK(started == 0 && r.status == 404);
  done(req);

  /* An internal route does not exist for a client... */
  req = new_req(&r, "/internal/page");
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -");
  CHECK(started == 0 && r.status == 404 && req->route == NULL);
  done(req);
  /* ...but answers a subrequest, which runs no global hook and never holds a body. */
  mg_req_t *parent = new_req(&r, "/app/x");
  rec_t rc;
  memset(&rc, 0, sizeof rc);
  mg_req_t *child = mg_req_new_child(parent, &sink, &rc);
  CHECK(mg_req_set_target(child, "/internal/page") == 0);
  mg_phase_start(child);
  CHECK_STR(trace, "handler /internal");
  CHECK(rc.status == 200 && rc.ends == 1 && r.heads == 0);
  mg_req_release(child);
  trace[0] = 0;
  child = mg_req_new_child(parent, &sink, &rc);
  CHECK(mg_req_set_target(child, "/app/sub") == 0);
  script[3] = MG_WAITS;
  mg_phase_start(child);
  CHECK_STR(trace, "access 3 /app");
  CHECK(child->hold_body == 0);
  mg_phase_resume(child, MG_OK);
  CHECK_STR(trace, "access 3 /app, access 4 /app, handler /app");
  mg_req_release(child);
  done(parent);

  /* ...and an internal redirect: the request starts over (rewrite hooks, routing) at the new
   * location, up to internal_redirect_limit hops, then ends with 500. */
  req = new_req(&r, "/app/x?redirect");
  req->method = "POST";
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app, "
                   "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app, "
                   "rewrite 1 -, rewrite 2 -, access 3 /app, access 4 /app, handler /app");
  CHECK(started == 3 && req->redirects == 2);
  CHECK_STR(req->method, "GET");
  CHECK(r.status == 500 && r.heads == 1 && r.ends == 1);
  CHECK(strstr(log_take(), "internal redirect to \"/app/again?redirect\" exceeds internal_redirect_limit (2)"));
  done(req);

  /* client_max_body_size: a declared body over the route's limit is 413 before any access
   * hook, and the connection closes after it. */
  req = new_req(&r, "/upload");
  req->content_length = 101, req->keepalive = 1;
  mg_phase_start(req);
  CHECK_STR(trace, "rewrite 1 -, rewrite 2 -");
  CHECK(started == 0 && r.status == 413 && !req->keepalive);
  CHECK_STR(r.body, "413 Content Too Large\n");
  CHECK(strstr(log_take(), "request body of 101 bytes exceeds client_max_body_size 100 of route /upload"));
  done(req);
  req = new_req(&r, "/upload");
  req->content_length = 100;
  mg_phase_start(req);
  CHECK(started == 1 && r.status == 200);
  done(req);
  /* No declared length (a chunked body) is not refused here. */
  req = new_req(&r, "/upload");
  req->chunked = 1;
  mg_phase_start(req);
  CHECK(started == 1 && r.status == 200);
  done(req);

  /* A configuration without Lua has no hooks and no hooks table: the engine routes and
   * serves. */
  mg_hooks = NULL;
  cfg.hooks[MG_PHASE_REWRITE].n = 0;
  routes[0].hooks[MG_PHASE_ACCESS].n = 0;
  req = new_req(&r, "/app/x");
  mg_phase_start(req);
  CHECK_STR(trace, "handler /app");
  CHECK(r.status == 200);
  done(req);

  mg_log_close();
  log_capture_end();
  CHECK_DONE();
}
