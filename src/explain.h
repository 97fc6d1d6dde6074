/* explain: `moongate --explain` (docs/lua-api.md, "Testing a policy") -- a request run through
 * routing and the rewrite, access and balancer hooks of a configuration without contacting any
 * backend, reported as text or JSON. */
#ifndef MG_EXPLAIN_H
#define MG_EXPLAIN_H

#include "config.h"

/* Explains `request_line` ("METHOD /path?query") with the given "Name: value" headers against
 * cfg, printing to stdout (json: one JSON object). Returns the exit status: 0 explained, 1 the
 * request could not be made or did not finish. */
int mg_explain_run(mg_config_t *cfg, const char *request_line, const char *const *headers, int nheaders, int json);

#endif
