/* cgi_env: the SCGI variables a backend receives for a request (docs/reference.md, "What the
 * backend receives"), no I/O.
 *
 * The order is fixed: CONTENT_LENGTH and SCGI first, then the request variables, then one
 * HTTP_* per header field name, then the route's `env` and the hooks' req.env, which may
 * override any earlier variable in place except CONTENT_LENGTH and SCGI, or remove it with
 * false. Nothing of the gateway's own process environment is ever added. */
#ifndef MG_CGI_ENV_H
#define MG_CGI_ENV_H

#include "request.h"
#include "scgi.h"

/* Fills vars for req with a body of content_length bytes. Strings live in req's pool. */
void mg_cgi_env_build(mg_req_t *req, uint64_t content_length, mg_vars_t *vars);

/* The HTTP_* name of a header field into out (name length + 6 bytes). Returns 0, or -1 when
 * the field is never forwarded: a name with a character other than letters, digits and '-',
 * Content-Length, Content-Type, Proxy. */
int mg_cgi_header_name(const char *field, char *out);

/* SCRIPT_NAME and PATH_INFO for a normalized path matched by a route prefix: with pathinfo,
 * SCRIPT_NAME is the decoded prefix without its trailing slash and PATH_INFO the decoded
 * rest starting with '/'; without, SCRIPT_NAME is the whole decoded path and PATH_INFO NULL. */
void mg_cgi_split_path(mg_pool_t *pool, const char *path, size_t path_len, const char *prefix, size_t prefix_len,
                       int pathinfo, const char **script_name, const char **path_info);

#endif
