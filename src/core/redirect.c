/* redirect: see redirect.h. */
#include "redirect.h"

#include <string.h>

#include "path.h"

int mg_redirect_prepare(mg_req_t *req, const char *location) {
  const mg_settings_t *s = &req->cfg->set;
  if ((uint64_t)req->redirects >= s->internal_redirect_limit) {
    mg_req_error(req, 500, "internal redirect to \"%s\" exceeds internal_redirect_limit (%llu)", location,
                 (unsigned long long)s->internal_redirect_limit);
    return -1;
  }
  char *path, *query;
  size_t path_len;
  if (location[0] != '/' ||
      mg_target_parse(&req->pool, location, strlen(location), s->allow_encoded_slashes, &path, &path_len, &query) < 0) {
    mg_req_error(req, 500, "internal redirect to a bad location \"%s\"", location);
    return -1;
  }
  req->redirect_url = req->path;
  req->redirect_query = req->query;
  req->redirect_method = (char *)req->method;
  req->path = path;
  req->path_len = path_len;
  req->query = query;
  if (!req->is_head) req->method = "GET";
  req->redirects++;
  /* The original body, if any is still coming, is read and dropped. */
  req->on_body = NULL;
  req->on_body_end = NULL;
  req->status = 200;
  req->resp_headers.n = 0;
  req->route = NULL;
  req->upstream_name = NULL;
  /* A body read whole by req:read_body() belongs to the first hop only. */
  req->body_ready = 0;
  mg_body_reset(&req->body);
  return 0;
}
