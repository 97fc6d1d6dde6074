/* errpage: see errpage.h. */
#include "errpage.h"

#include "hooks.h"
#include "log.h"
#include "phase.h"

const mg_errpage_t *mg_errpage_find(const mg_req_t *req, int status) {
  const mg_errpages_t *eps = req->route ? req->route->error_pages : &req->cfg->set.error_pages;
  if (!eps) return NULL;
  for (int i = 0; i < eps->n; i++)
    if (eps->v[i].status == status) return &eps->v[i];
  return NULL;
}

int mg_errpage_intercepts(const mg_req_t *req, int status) {
  return req->route && req->route->intercept_errors && status >= 300 && !req->errpage_status &&
         !req->is_subrequest && mg_errpage_find(req, status) != NULL;
}

/* The client's conditions were about the URI it asked for, not about the page: a page
 * answered 304 or 206 would make the client keep a wrong body. */
static const char *const conditions[] = {"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since",
                                         "If-Range", "Range"};

int mg_errpage_try(mg_req_t *req, int status) {
  /* Not for an error found while the head was read (400, 408, 414, 431, 505 ...): the request
   * never started, and has no method or path a page could be served for. */
  if (!req->phased || req->head_sent || req->errpage_status || req->is_subrequest || req->handler_cancel) return 0;
  if (mg_hooks && mg_hooks->running(req)) return 0;
  const mg_errpage_t *ep = mg_errpage_find(req, status);
  if (!ep) return 0;
  req->errpage_status = status;
  req->errpage_of = req->route; /* SPEC 20: the page's answer counts for this route */
  /* What the error says of when to come back (a full queue's 503) goes out with its page. */
  const char *ra = mg_fields_get(&req->resp_headers, "Retry-After");
  req->errpage_retry_after = ra ? mg_pool_strdup(&req->pool, ra) : NULL;
  mg_req_unread_body_closes(req);
  /* A hook or handler waiting (for the body, say, when it timed out) is abandoned: the page
   * serves the request from here on. */
  if (req->thread && mg_hooks) mg_hooks->abandon(req);
  req->thread = NULL;
  for (size_t i = 0; i < sizeof conditions / sizeof conditions[0]; i++)
    mg_fields_set(&req->pool, &req->headers, conditions[i], NULL);
  if (ep->uri) {
    req->errpage_uri = 1;
    mg_phase_restart(req, ep->uri);
    return 1;
  }
  /* A function: the request keeps its URI and is answered by it at once, with no hook run
   * again (as nginx's named location). What the body of the request still holds is dropped. */
  req->on_body = NULL;
  req->on_body_end = NULL;
  req->status = status; /* what ngx.status reads, and the head's status if ngx.say writes first */
  req->resp_headers.n = 0;
  req->upstream_name = NULL;
  mg_phase_handler(req, ep->fn);
  return 1;
}
