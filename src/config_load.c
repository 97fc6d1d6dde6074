/* config_load: runs init.lua and maps its declarations to a mg_config_t.
 *
 * lua/moongate.lua has already validated every argument and converted sizes and times, so
 * this file only copies values into C structures, resolves backend addresses, opens static
 * and sendfile roots, and keeps Lua functions as registry references. The errors it can still
 * raise are the ones only C can see (a host that does not resolve, a root that is not a
 * directory); they name the init.lua line of the declaration too. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <lua.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balancer.h"
#include "buf.h"
#include "config.h"
#include "config_passive.h"
#include "dns.h"
#include "errpage.h"
#include "handler.h"
#include "lua_api.h"
#include "lua_hooks.h"
#include "lua_vm.h"
#include "phase.h"
#include "resolve.h"
#include "route_re.h"
#include "lua_shdict.h"
#include "metrics.h"
#include "tls.h"

typedef struct {
  mg_config_t *cfg;
  lua_State *L;
  char *err;
  size_t err_len;
} loader_t;

static int fail(loader_t *ld, const char *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(loader_t *ld, const char *at, const char *fmt, ...) {
  int n = snprintf(ld->err, ld->err_len, "%s: ", at ? at : ld->cfg->file);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < ld->err_len) vsnprintf(ld->err + n, ld->err_len - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* Field readers for the table on top of the stack. */
static char *get_str(lua_State *L, const char *key) {
  lua_getfield(L, -1, key);
  char *s = lua_type(L, -1) == LUA_TSTRING ? mg_strdup(lua_tostring(L, -1)) : NULL;
  lua_pop(L, 1);
  return s;
}

static int64_t get_num(lua_State *L, const char *key, int64_t dflt) {
  lua_getfield(L, -1, key);
  int64_t v = lua_type(L, -1) == LUA_TNUMBER ? (int64_t)lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* A list of strings (NULL-terminated, *n of them), or NULL when the field is not a table. */
static char **get_str_list(lua_State *L, const char *key, int *n) {
  lua_getfield(L, -1, key);
  char **v = NULL;
  if (lua_istable(L, -1)) {
    *n = (int)lua_objlen(L, -1);
    v = mg_calloc((size_t)*n + 1, sizeof(char *));
    for (int i = 0; i < *n; i++) {
      lua_rawgeti(L, -1, i + 1);
      v[i] = mg_strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return v;
}

static int get_bool(lua_State *L, const char *key, int dflt) {
  lua_getfield(L, -1, key);
  int v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* SPEC 19: the `compress` field of the table on top (false, or moongate.lua's normalised table
 * { types, min_length, gzip, br, zstd }); absent: a copy of dflt. */
static void get_compress(lua_State *L, mg_compress_cfg_t *c, const mg_compress_cfg_t *dflt) {
  lua_getfield(L, -1, "compress");
  if (lua_istable(L, -1)) {
    c->on = 1;
    c->types = get_str(L, "types");
    if (c->types && strcmp(c->types, "*") == 0) free(c->types), c->types = NULL;
    c->min_length = (uint64_t)get_num(L, "min_length", 256);
    c->level_gzip = (int)get_num(L, "gzip", 1);
    c->level_br = (int)get_num(L, "br", 4);
    c->level_zstd = (int)get_num(L, "zstd", 3);
  } else if (lua_isboolean(L, -1) || !dflt) {
    memset(c, 0, sizeof *c);
  } else {
    *c = *dflt;
    if (dflt->types) c->types = mg_strdup(dflt->types);
  }
  lua_pop(L, 1);
}

/* A path relative to the folder of init.lua. */
static char *resolve_path(const mg_config_t *cfg, const char *p) {
  if (p[0] == '/') return mg_strdup(p);
  mg_buf_t b;
  mg_buf_init(&b);
  mg_buf_printf(&b, "%s/%s", cfg->dir, p);
  return mg_buf_steal(&b);
}

static int backend_addr(loader_t *ld, const char *at, mg_addr_t *addr) {
  /* stack: ... backend-table */
  lua_State *L = ld->L;
  addr->url = get_str(L, "url");
  char *kind = get_str(L, "kind");
  int rc;
  if (strcmp(kind, "unix") == 0) {
    char *path = get_str(L, "path");
    rc = mg_addr_set_unix(addr, path);
    if (rc < 0) fail(ld, at, "unix socket path too long: %s", path);
    free(path);
  } else {
    char *host = get_str(L, "host");
    rc = mg_addr_resolve_tcp(addr, host, (int)get_num(L, "port", 4000));
    if (rc != 0) fail(ld, at, "cannot resolve backend host %s: %s", host, gai_strerror(rc));
    free(host);
  }
  free(kind);
  return rc == 0 ? 0 : -1;
}

static void hooks_add(lua_State *L, mg_hooks_t *h) {
  /* stack: ... function */
  h->refs = mg_realloc(h->refs, sizeof(int) * (size_t)(h->n + 1));
  h->refs[h->n++] = luaL_ref(L, LUA_REGISTRYINDEX);
}


static int open_dir(loader_t *ld, const char *at, const char *what, const char *path, int *fd) {
  *fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (*fd < 0) return fail(ld, at, "%s %s: %s", what, path, strerror(errno));
  return 0;
}

/* SPEC 19: the error pages normalised by moongate.lua (the table on top of the stack: { at =
 * "file:line", { status, uri | fn }, ... }) into *eps. A function becomes a route of its own
 * that no URI reaches, a Lua content handler called fn(req, status). */
/* A route's own function pages take its compression, timeouts and pass_authorization (`base`);
 * the configuration's take the settings' (base NULL). */
static void load_error_pages(loader_t *ld, mg_errpages_t *eps, const mg_route_t *base) {
  lua_State *L = ld->L;
  const mg_settings_t *s = &ld->cfg->set;
  eps->n = (int)lua_objlen(L, -1);
  eps->v = mg_calloc((size_t)eps->n + 1, sizeof(mg_errpage_t));
  char *at = get_str(L, "at");
  for (int i = 0; i < eps->n; i++) {
    mg_errpage_t *ep = &eps->v[i];
    lua_rawgeti(L, -1, i + 1);
    ep->status = (int)get_num(L, "status", 0);
    ep->uri = get_str(L, "uri");
    lua_getfield(L, -1, "fn");
    if (lua_isfunction(L, -1)) {
      mg_route_t *r = ep->fn = mg_calloc(1, sizeof(mg_route_t));
      r->kind = MG_TARGET_LUA;
      r->handler = &mg_handler_lua;
      r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      r->errpage_fn = 1;
      r->root_fd = -1;
      char name[32];
      snprintf(name, sizeof name, "error_pages[%d]", ep->status);
      r->match = mg_strdup(name);
      r->match_len = strlen(name);
      r->decl = mg_strdup(at ? at : ld->cfg->file);
      r->pass_authorization = base ? base->pass_authorization : s->pass_authorization;
      r->timeout = base ? base->timeout : s->timeout;
      r->connect_timeout = base ? base->connect_timeout : s->connect_timeout;
      r->compress = base ? base->compress : s->compress; /* shared: freed with its owner */
      r->error_pages = NULL;     /* one page per request: a page has none */
    } else {
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  free(at);
}

static void free_error_pages(mg_errpages_t *eps) {
  for (int i = 0; i < eps->n; i++) {
    free(eps->v[i].uri);
    if (eps->v[i].fn) free(eps->v[i].fn->match), free(eps->v[i].fn->decl), free(eps->v[i].fn);
  }
  free(eps->v);
  eps->v = NULL, eps->n = 0;
}
/* SPEC 19: the realip options of the table on top (mg.set's settings or a listener's), each
 * over the copy of `base` (NULL: the defaults). moongate.lua has checked every CIDR. */
static void get_realip(lua_State *L, mg_realip_cfg_t *r, const mg_realip_cfg_t *base) {
  if (base) {
    *r = *base;
    r->header = mg_strdup(base->header);
    r->from = base->nfrom ? mg_malloc((size_t)base->nfrom * sizeof *r->from) : NULL;
    if (base->nfrom) memcpy(r->from, base->from, (size_t)base->nfrom * sizeof *r->from);
  } else {
    memset(r, 0, sizeof *r);
    r->header = mg_strdup("X-Real-IP");
  }
  lua_getfield(L, -1, "real_ip_from");
  if (lua_istable(L, -1)) {
    free(r->from);
    r->nfrom = (int)lua_objlen(L, -1);
    r->from = r->nfrom ? mg_calloc((size_t)r->nfrom, sizeof *r->from) : NULL;
    for (int i = 0; i < r->nfrom; i++) {
      lua_rawgeti(L, -1, i + 1);
      size_t len;
      const char *c = lua_tolstring(L, -1, &len);
      if (c) mg_cidr_parse(c, len, &r->from[i]);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  char *h = get_str(L, "real_ip_header");
  if (h) free(r->header), r->header = h;
  r->kind = strcasecmp(r->header, "X-Real-IP") == 0         ? MG_REALIP_X_REAL_IP
            : strcasecmp(r->header, "X-Forwarded-For") == 0 ? MG_REALIP_XFF
            : strcasecmp(r->header, "Forwarded") == 0       ? MG_REALIP_FORWARDED
                                                            : MG_REALIP_OTHER;
  r->recursive = get_bool(L, "real_ip_recursive", r->recursive);
}

static void free_realip(mg_realip_cfg_t *r) { free(r->from), free(r->header); }

static int load_settings(loader_t *ld) {
  lua_State *L = ld->L;
  mg_settings_t *s = &ld->cfg->set;
  /* stack: state */
  lua_getfield(L, -1, "settings");
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  s->server_name = get_str(L, "server_name");
  if (!s->server_name) s->server_name = mg_strdup(host);
  s->client_header_timeout = (uint64_t)get_num(L, "client_header_timeout", 0);
  s->client_body_timeout = (uint64_t)get_num(L, "client_body_timeout", 0);
  s->keepalive_timeout = (uint64_t)get_num(L, "keepalive_timeout", 0);
  s->keepalive_requests = (uint64_t)get_num(L, "keepalive_requests", 0);
  s->max_request_line = (uint64_t)get_num(L, "max_request_line", 0);
  s->max_header_size = (uint64_t)get_num(L, "max_header_size", 0);
  s->max_headers = (uint64_t)get_num(L, "max_headers", 0);
  s->client_max_body_size = (uint64_t)get_num(L, "client_max_body_size", 0);
  s->max_connections = (uint64_t)get_num(L, "max_connections", 0);
  s->connect_timeout = (uint64_t)get_num(L, "connect_timeout", 0);
  s->timeout = (uint64_t)get_num(L, "timeout", 0);
  s->internal_redirect_limit = (uint64_t)get_num(L, "internal_redirect_limit", 0);
  s->max_backend_header_size = (uint64_t)get_num(L, "max_backend_header_size", 0);
  s->shutdown_timeout = (uint64_t)get_num(L, "shutdown_timeout", 0);
  s->access_log = get_str(L, "access_log");
  s->error_log = get_str(L, "error_log");
  s->log_level = get_str(L, "log_level");
  s->user = get_str(L, "user");
  s->group = get_str(L, "group");
  char *fmt = get_str(L, "access_log_format");
  s->access_log_json = fmt && strcmp(fmt, "json") == 0;
  free(fmt);
  s->pid = get_str(L, "pid");
  s->pass_authorization = get_bool(L, "pass_authorization", 1);
  s->allow_encoded_slashes = get_bool(L, "allow_encoded_slashes", 0);
  s->watch = get_bool(L, "watch", 0);
  s->sendfile_missing = (int)get_num(L, "sendfile_missing", 500);
  s->subrequest_max_body = (uint64_t)get_num(L, "subrequest_max_body", 1 << 20);
  s->lua_body_max = (uint64_t)get_num(L, "lua_body_max", 1 << 20);
  s->subrequest_limit = (uint64_t)get_num(L, "subrequest_limit", 1000);
  s->subrequest_max_total_body = (uint64_t)get_num(L, "subrequest_max_total_body", 16 << 20);
  s->lua_max_run_time = (uint64_t)get_num(L, "lua_max_run_time", 5000);
  s->lua_socket_timeout = (uint64_t)get_num(L, "lua_socket_timeout", 60000);
  s->regex_cache_max_entries = (uint64_t)get_num(L, "regex_cache_max_entries", 1024);
  s->lua_ssl_trusted_certificate = get_str(L, "lua_ssl_trusted_certificate");
  s->lua_ssl_verify_depth = (uint64_t)get_num(L, "lua_ssl_verify_depth", 1);
  /* SPEC 19: buffering */
  s->request_buffering = get_bool(L, "request_buffering", 1);
  s->response_buffering = get_bool(L, "response_buffering", 1);
  s->response_buffer_size = (uint64_t)get_num(L, "response_buffer_size", 256 << 10);
  s->response_temp_max = (uint64_t)get_num(L, "response_temp_max", (int64_t)1 << 30);
  s->lua_max_pending_timers = (uint64_t)get_num(L, "lua_max_pending_timers", 1024);
  s->lua_max_running_timers = (uint64_t)get_num(L, "lua_max_running_timers", 256);
  s->http2_max_concurrent_streams = (uint64_t)get_num(L, "http2_max_concurrent_streams", 128);
  s->http2_max_header_list_size = (uint64_t)get_num(L, "http2_max_header_list_size", 16384);
  s->http2_initial_window_size = (uint64_t)get_num(L, "http2_initial_window_size", 65536);
  s->send_timeout = (uint64_t)get_num(L, "send_timeout", 60000);
  get_compress(L, &s->compress, NULL); /* SPEC 19 */
  s->intercept_errors = get_bool(L, "intercept_errors", 0);
  lua_getfield(L, -1, "error_pages");
  if (lua_istable(L, -1)) load_error_pages(ld, &s->error_pages, NULL);
  lua_pop(L, 1);
  get_realip(L, &s->realip, NULL);
  /* SPEC 20: moongate.lua checked the buckets (numbers, increasing, at most 32). */
  s->tracing = get_bool(L, "tracing", 1);
  lua_getfield(L, -1, "histogram_buckets");
  for (int i = 0; lua_istable(L, -1) && i < (int)lua_objlen(L, -1) && i < 32; i++) {
    lua_rawgeti(L, -1, i + 1);
    s->histogram_buckets[s->nhistogram_buckets++] = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* SPEC 20: names looked up again (handler/resolve.c). */
  s->resolve_every_ms = (uint64_t)get_num(L, "resolve_every", 30000);
  s->resolvers = get_str_list(L, "resolver", &s->nresolvers);
  /* Log files named relative to init.lua live beside it. */
  char **paths[] = {&s->access_log, &s->error_log, &s->pid, &s->lua_ssl_trusted_certificate};
  for (int i = 0; i < 4; i++) {
    char *p = *paths[i];
    if (p && strcmp(p, "off") && strcmp(p, "stdout") && strcmp(p, "stderr") && p[0] != '/') {
      *paths[i] = resolve_path(ld->cfg, p);
      free(p);
    }
  }
  lua_pop(L, 1);
  return 0;
}

static int load_listens(loader_t *ld) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  lua_getfield(L, -1, "listens");
  cfg->nlistens = (int)lua_objlen(L, -1);
  cfg->listens = mg_calloc((size_t)cfg->nlistens, sizeof(mg_listen_t));
  for (int i = 0; i < cfg->nlistens; i++) {
    lua_rawgeti(L, -1, i + 1);
    mg_listen_t *l = &cfg->listens[i];
    char *kind = get_str(L, "kind");
    l->unix_socket = strcmp(kind, "unix") == 0;
    free(kind);
    if (l->unix_socket) {
      char *p = get_str(L, "path");
      l->host = resolve_path(cfg, p);
      free(p);
    } else {
      l->host = get_str(L, "host");
      l->port = (int)get_num(L, "port", 0);
    }
    l->text = get_str(L, "text");
    lua_getfield(L, -1, "http2");
    int h2 = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : -1;
    lua_pop(L, 1);
    lua_getfield(L, -1, "tls");
    if (lua_istable(L, -1)) {
      /* The certificates are read now: a bad one fails the load with the mg.listen line. */
      int n = (int)lua_objlen(L, -1);
      char **certs = mg_calloc((size_t)n, sizeof(char *)), **keys = mg_calloc((size_t)n, sizeof(char *));
      for (int k = 0; k < n; k++) {
        lua_rawgeti(L, -1, k + 1);
        char *c = get_str(L, "cert"), *key = get_str(L, "key");
        certs[k] = resolve_path(cfg, c), keys[k] = resolve_path(cfg, key);
        free(c), free(key);
        lua_pop(L, 1);
      }
      char err[512];
      l->tls = mg_tls_ctx_new((const char *const *)certs, (const char *const *)keys, n, h2 != 0, err, sizeof err);
      for (int k = 0; k < n; k++) free(certs[k]), free(keys[k]);
      free(certs), free(keys);
      if (!l->tls) {
        lua_pop(L, 1);
        char *at = get_str(L, "at");
        fail(ld, at, "mg.listen: %s", err);
        free(at);
        lua_pop(L, 2);
        return -1;
      }
    }
    lua_pop(L, 1);
    l->http2 = l->tls ? h2 != 0 : h2 == 1;
    l->proxy_protocol = get_bool(L, "proxy_protocol", 0);
    get_realip(L, &l->realip, &cfg->set.realip);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* SPEC 20: the host name of the member table on top when it is one to look up again
 * (handler/resolve.h), else NULL. */
static char *member_host_name(lua_State *L) {
  char *kind = get_str(L, "kind"), *host = get_str(L, "host");
  int name = kind && strcmp(kind, "tcp") == 0 && host && mg_resolve_is_name(host);
  free(kind);
  if (!name) free(host);
  return name ? host : NULL;
}

static int load_balancers(loader_t *ld) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  mg_dns_t *dns = NULL; /* SPEC 20: made for the first member given by host name */
  lua_getfield(L, -1, "balancer_order");
  lua_getfield(L, -2, "balancers");
  /* stack: state, order, balancers */
  cfg->nbalancers = (int)lua_objlen(L, -2);
  cfg->balancers = mg_calloc((size_t)cfg->nbalancers, sizeof(mg_balancer_t *));
  for (int i = 0; i < cfg->nbalancers; i++) {
    lua_rawgeti(L, -2, i + 1);
    lua_rawget(L, -2);
    /* stack: state, order, balancers, b */
    mg_balancer_t *b = mg_calloc(1, sizeof *b);
    cfg->balancers[i] = b;
    b->index = i; /* the metrics' row (shm/metrics.h) */
    b->name = get_str(L, "name");
    b->decl = get_str(L, "at");
    b->stickysession = get_str(L, "stickysession");
    char *method = get_str(L, "method");
    b->method = strcmp(method, "bytraffic") == 0   ? MG_LB_BYTRAFFIC
                : strcmp(method, "bybusyness") == 0 ? MG_LB_BYBUSYNESS
                : strcmp(method, "lua") == 0        ? MG_LB_LUA
                                                    : MG_LB_BYREQUESTS;
    free(method);
    b->method_ref = LUA_NOREF;
    if (b->method == MG_LB_LUA) {
      lua_getfield(L, -1, "method_fn");
      b->method_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_getfield(L, -1, "members");
    int nlua = (int)lua_objlen(L, -1), total = 0, nnames = 0;
    /* SPEC 20: a member given by host name is a row of max_addresses members (handler/resolve.h). */
    for (int k = 0; k < nlua; k++) {
      lua_rawgeti(L, -1, k + 1);
      char *host = member_host_name(L);
      total += host ? (int)get_num(L, "max_addresses", 8) : 1;
      nnames += host != NULL;
      free(host);
      lua_pop(L, 1);
    }
    b->nmembers = total;
    b->members = mg_calloc((size_t)total, sizeof(mg_member_t));
    b->names = mg_calloc((size_t)nnames + 1, sizeof(mg_member_name_t));
    b->maxattempts = (int)get_num(L, "maxattempts", total);
    for (int k = 0, at = 0; k < nlua; k++) {
      lua_rawgeti(L, -1, k + 1);
      mg_member_t *m = &b->members[at];
      char *host = member_host_name(L);
      int name = host != NULL;
      if (!name) {
        if (backend_addr(ld, b->decl, &m->addr) < 0) return mg_dns_free(dns), lua_pop(L, 5), -1;
      } else {
        m->addr.url = get_str(L, "url");
      }
      m->route = get_str(L, "route");
      m->lbfactor = (int)get_num(L, "lbfactor", 1);
      m->retry_ms = (uint64_t)get_num(L, "retry", 60000);
      m->connect_timeout_ms = (uint64_t)get_num(L, "connect_timeout", 0);
      m->timeout_ms = (uint64_t)get_num(L, "timeout", 0);
      m->max_conns = (int)get_num(L, "max_conns", 0);
      char *st = get_str(L, "status");
      for (char *c = st; c && *c; c++)
        m->flags |= *c == 'D' ? MG_MEMBER_DISABLED : *c == 'H' ? MG_MEMBER_HOT_STANDBY : *c == 'S' ? MG_MEMBER_STOPPED : MG_MEMBER_DRAINING;
      free(st);
      m->cfg_flags = m->flags, m->cfg_lbfactor = m->lbfactor; /* SPEC 20: what a reset goes back to */
      if (!name) {
        m->key = mg_strdup(m->addr.url);
        m->index = ++at;
        lua_pop(L, 1);
        continue;
      }
      mg_member_name_t *nm = &b->names[b->nnames++];
      nm->host = host, nm->port = (int)get_num(L, "port", 4000), nm->resolve = get_bool(L, "resolve", 0);
      nm->first = at, nm->n = (int)get_num(L, "max_addresses", 8), nm->b = b, nm->set = &cfg->set;
      for (int j = 0; j < nm->n; j++) {
        mg_member_t *s = &b->members[at + j];
        if (j) *s = *m, s->addr.url = mg_strdup(m->addr.url), s->route = m->route ? mg_strdup(m->route) : NULL;
        char key[300];
        snprintf(key, sizeof key, "%s#%d", m->addr.url, j + 1);
        s->key = mg_strdup(key);
        s->name = nm;
        s->index = at + j + 1;
      }
      at += nm->n;
      lua_pop(L, 1);
      if (mg_resolve_load(&dns, &cfg->set, nm, ld->err, ld->err_len) < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", ld->err);
        mg_dns_free(dns);
        return fail(ld, b->decl, "%s", why), lua_pop(L, 4), -1;
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "maxattempts");
    if (lua_isnumber(L, -1)) b->maxattempts = (int)lua_tonumber(L, -1);
    lua_pop(L, 1);
    b->queue_size = (int)get_num(L, "queue_size", 0); /* SPEC 20 */
    b->queue_timeout_ms = (uint64_t)get_num(L, "queue_timeout", 5000);
    mg_config_passive_load(L, b); /* SPEC 20 */
    lua_getfield(L, -1, "health");
    if (lua_istable(L, -1)) {
      mg_health_t *h = b->health = mg_calloc(1, sizeof *h);
      h->uri = get_str(L, "uri");
      h->interval_ms = (uint64_t)get_num(L, "interval", 5000);
      h->timeout_ms = (uint64_t)get_num(L, "timeout", 1000);
      h->fails = (int)get_num(L, "fails", 3);
      h->passes = (int)get_num(L, "passes", 2);
      h->expect = (int)get_num(L, "expect", 200);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
  mg_dns_free(dns);
  return 0;
}

static mg_balancer_t *find_balancer(mg_config_t *cfg, const char *name) {
  for (int i = 0; i < cfg->nbalancers; i++)
    if (strcmp(cfg->balancers[i]->name, name) == 0) return cfg->balancers[i];
  return NULL;
}

/* SPEC 19: a static route's expires, cache_control, index and fallback, as moongate.lua
 * checked them (fallback_index: the target's place in cfg->routes, counted from 1; the array
 * is allocated whole before any route is loaded, so the pointer is valid at once). */
static void load_static_options(lua_State *L, mg_config_t *cfg, mg_route_t *r) {
  /* stack: ... route-table */
  char *mode = get_str(L, "expires_mode");
  if (mode) {
    r->expires_mode = strcmp(mode, "epoch") == 0 ? MG_EXPIRES_EPOCH : strcmp(mode, "max") == 0 ? MG_EXPIRES_MAX : MG_EXPIRES_AFTER;
    r->expires = get_num(L, "expires", 0);
    free(mode);
  }
  r->cache_control = get_str(L, "cache_control");
  r->index = get_str_list(L, "index", &r->nindex);
  if (!r->index && r->kind == MG_TARGET_STATIC) {
    r->nindex = 1;
    r->index = mg_calloc(2, sizeof(char *));
    r->index[0] = mg_strdup("index.html");
  }
  int64_t fb = get_num(L, "fallback_index", 0);
  if (fb > 0 && fb <= cfg->nroutes) r->fallback = &cfg->routes[fb - 1];
}

static int load_route(loader_t *ld, mg_route_t *r) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  /* stack: ... route-table */
  r->root_fd = -1;
  r->handler_ref = LUA_NOREF;
  r->decl = get_str(L, "at");
  r->match = get_str(L, "match");
  r->match_len = strlen(r->match);
  r->exact = get_bool(L, "exact", 0);
  r->host = get_str(L, "host");
  if (get_bool(L, "regex", 0)) {
    char err[300];
    r->caseless = get_bool(L, "caseless", 0);
    if (mg_route_re_compile(r, r->caseless, err, sizeof err) < 0)
      return fail(ld, r->decl, "mg.route: bad regular expression \"%s\": %s", r->match, err);
  }
  char *kind = get_str(L, "kind");
  int rc = 0;
  if (strcmp(kind, "scgi") == 0) {
    r->kind = MG_TARGET_SCGI;
    r->handler = &mg_handler_scgi;
    lua_getfield(L, -1, "backend");
    rc = backend_addr(ld, r->decl, &r->addr);
    lua_pop(L, 1);
  } else if (strcmp(kind, "balancer") == 0) {
    r->kind = MG_TARGET_BALANCER;
    r->handler = &mg_handler_scgi;
    char *name = get_str(L, "balancer");
    r->balancer = find_balancer(cfg, name);
    free(name);
  } else if (strcmp(kind, "static") == 0) {
    r->kind = MG_TARGET_STATIC;
    r->handler = &mg_handler_static;
    char *root = get_str(L, "root");
    r->root = resolve_path(cfg, root);
    free(root);
    rc = open_dir(ld, r->decl, "static root", r->root, &r->root_fd);
  } else if (strcmp(kind, "lua") == 0) {
    r->kind = MG_TARGET_LUA;
    r->handler = &mg_handler_lua;
    lua_getfield(L, -1, "handler");
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    r->kind = MG_TARGET_STATUS;
    r->handler = &mg_handler_status;
  }
  free(kind);
  if (rc < 0) return -1;
  r->internal_redirect = get_str(L, "internal_redirect");
  r->sendfile = get_str(L, "sendfile");
  r->sendfile_missing = (int)get_num(L, "sendfile_missing", cfg->set.sendfile_missing);
  r->pathinfo = get_bool(L, "pathinfo", 0);
  r->internal = get_bool(L, "internal", 0);
  r->pass_authorization = get_bool(L, "pass_authorization", cfg->set.pass_authorization);
  r->connect_timeout = (uint64_t)get_num(L, "connect_timeout", (int64_t)cfg->set.connect_timeout);
  r->timeout = (uint64_t)get_num(L, "timeout", (int64_t)cfg->set.timeout);
  r->client_max_body_size = (uint64_t)get_num(L, "client_max_body_size", (int64_t)cfg->set.client_max_body_size);
  /* SPEC 19: buffering */
  r->request_buffering = get_bool(L, "request_buffering", cfg->set.request_buffering);
  r->response_buffering = get_bool(L, "response_buffering", cfg->set.response_buffering);
  r->response_buffer_size = (uint64_t)get_num(L, "response_buffer_size", (int64_t)cfg->set.response_buffer_size);
  r->response_temp_max = (uint64_t)get_num(L, "response_temp_max", (int64_t)cfg->set.response_temp_max);
  /* SPEC 19: compression, precompressed siblings. */
  get_compress(L, &r->compress, &cfg->set.compress);
  r->precompressed = get_bool(L, "precompressed", 0);
  /* SPEC 19: error pages: the route's own table (false: none), or the configuration's. */
  r->intercept_errors = get_bool(L, "intercept_errors", cfg->set.intercept_errors);
  r->error_pages = &cfg->set.error_pages;
  lua_getfield(L, -1, "error_pages");
  if (lua_istable(L, -1)) load_error_pages(ld, &r->own_error_pages, r);
  if (!lua_isnil(L, -1)) r->error_pages = &r->own_error_pages;
  lua_pop(L, 1);
  load_static_options(L, cfg, r);
  lua_getfield(L, -1, "sendfile_roots");
  if (lua_istable(L, -1)) {
    r->nsendfile_roots = (int)lua_objlen(L, -1);
    r->sendfile_roots = mg_calloc((size_t)r->nsendfile_roots, sizeof(char *));
    r->sendfile_root_fds = mg_calloc((size_t)r->nsendfile_roots, sizeof(int));
    for (int i = 0; i < r->nsendfile_roots; i++) r->sendfile_root_fds[i] = -1;
    for (int i = 0; i < r->nsendfile_roots; i++) {
      lua_rawgeti(L, -1, i + 1);
      char real[PATH_MAX];
      char *p = resolve_path(cfg, lua_tostring(L, -1));
      lua_pop(L, 1);
      /* Roots are kept canonical so the confinement check compares real paths. */
      if (!realpath(p, real)) {
        fail(ld, r->decl, "sendfile_roots: %s: %s", p, strerror(errno));
        free(p);
        lua_pop(L, 1);
        return -1;
      }
      free(p);
      r->sendfile_roots[i] = mg_strdup(real);
      if (open_dir(ld, r->decl, "sendfile root", real, &r->sendfile_root_fds[i]) < 0) return lua_pop(L, 1), -1;
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "env");
  if (lua_istable(L, -1)) {
    r->nenv = (int)lua_objlen(L, -1);
    r->env = mg_calloc((size_t)r->nenv, sizeof(mg_kv_t));
    for (int i = 0; i < r->nenv; i++) {
      lua_rawgeti(L, -1, i + 1);
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      r->env[i].name = mg_strdup(lua_tostring(L, -2));
      r->env[i].value = lua_type(L, -1) == LUA_TSTRING ? mg_strdup(lua_tostring(L, -1)) : NULL;
      lua_pop(L, 3);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "hooks");
  if (lua_istable(L, -1)) {
    for (int p = MG_PHASE_REWRITE; p < MG_PHASE_HOOKED; p++) {
      lua_getfield(L, -1, mg_phase_name(p));
      if (lua_isfunction(L, -1)) hooks_add(L, &r->hooks[p]);
      else lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return 0;
}

static int load_routes(loader_t *ld) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  lua_getfield(L, -1, "routes");
  cfg->nroutes = (int)lua_objlen(L, -1);
  cfg->routes = mg_calloc((size_t)cfg->nroutes, sizeof(mg_route_t));
  for (int i = 0; i < cfg->nroutes; i++) {
    lua_rawgeti(L, -1, i + 1);
    int rc = load_route(ld, &cfg->routes[i]);
    lua_pop(L, 1);
    if (rc < 0) {
      cfg->nroutes = i + 1; /* free what was built */
      lua_pop(L, 1);
      return -1;
    }
  }
  lua_pop(L, 1);
  return 0;
}

static int load_hooks(loader_t *ld) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  lua_getfield(L, -1, "hooks");
  for (int p = MG_PHASE_REWRITE; p <= MG_PHASE_HOOKED; p++) {
    /* The hook phases, then init_worker. */
    lua_getfield(L, -1, mg_phase_name(p < MG_PHASE_HOOKED ? p : MG_PHASE_INIT_WORKER));
    mg_hooks_t *h = p < MG_PHASE_HOOKED ? &cfg->hooks[p] : &cfg->init_worker;
    int n = (int)lua_objlen(L, -1);
    for (int k = 1; k <= n; k++) {
      lua_rawgeti(L, -1, k);
      hooks_add(L, h);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "timers");
  cfg->ntimers = (int)lua_objlen(L, -1);
  cfg->timers = mg_calloc((size_t)cfg->ntimers, sizeof(mg_timer_decl_t));
  for (int i = 0; i < cfg->ntimers; i++) {
    lua_rawgeti(L, -1, i + 1);
    cfg->timers[i].ms = (int)get_num(L, "ms", 1000);
    lua_getfield(L, -1, "fn");
    cfg->timers[i].ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/* Every Lua file init.lua pulled in with require, for `watch`. */
static void collect_watched(loader_t *ld) {
  lua_State *L = ld->L;
  mg_config_t *cfg = ld->cfg;
  cfg->watched = mg_calloc(64, sizeof(char *));
  cfg->watched[cfg->nwatched++] = mg_strdup(cfg->file);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0 && cfg->nwatched < 64) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    lua_getfield(L, -3, "searchpath");
    lua_pushvalue(L, -2);
    lua_getfield(L, -5, "path");
    if (lua_pcall(L, 2, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING)
      cfg->watched[cfg->nwatched++] = mg_strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

mg_config_t *mg_config_load(const char *file, char *err, size_t err_len) {
  mg_config_t *cfg = mg_calloc(1, sizeof *cfg);
  char abs[PATH_MAX];
  cfg->file = mg_strdup(realpath(file, abs) ? abs : file);
  char *tmp = mg_strdup(cfg->file);
  cfg->dir = mg_strdup(dirname(tmp));
  free(tmp);
  loader_t ld = {cfg, NULL, err, err_len};
  lua_State *L = cfg->L = mg_lua_new(cfg->dir);
  if (!L) return fail(&ld, NULL, "cannot create a Lua state"), mg_config_free(cfg), NULL;
  ld.L = L;
  /* The request-time API (mg.sleep, mg.socket, ...) is in the module before init.lua runs, so
   * a script may keep a local reference to it. */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moongate");
  lua_call(L, 1, 1);
  mg_lua_api_open(L);
  mg_lua_hooks_install();
  mg_req_errpage = mg_errpage_try; /* SPEC 19 */
  lua_pop(L, 1);
  if (luaL_loadfile(L, cfg->file) != 0) {
    /* Syntax errors already carry file:line; a missing file does not. */
    snprintf(err, err_len, "%s", lua_tostring(L, -1));
    mg_config_free(cfg);
    return NULL;
  }
  mg_lua_shdict_declaring = 1;
  int ran = mg_lua_call(L, 0, 0, err, err_len);
  mg_lua_shdict_declaring = 0;
  if (ran < 0) {
    /* Keep the first line: the message with file:line; the traceback is noise here. */
    char *nl = strstr(err, "\nstack traceback:");
    if (nl) *nl = 0;
    mg_config_free(cfg);
    return NULL;
  }
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moongate");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "_finish");
  lua_pushstring(L, file); /* the file as the user named it, for "FILE: no listener" */
  if (mg_lua_call(L, 1, 1, err, err_len) < 0) {
    char *nl = strstr(err, "\nstack traceback:");
    if (nl) *nl = 0;
    mg_config_free(cfg);
    return NULL;
  }
  /* stack: moongate, state */
  cfg->workers = (int)get_num(L, "workers", 1);
  int rc = load_settings(&ld);
  if (rc == 0) rc = load_listens(&ld);
  if (rc == 0) rc = load_balancers(&ld);
  if (rc == 0) rc = load_routes(&ld);
  if (rc == 0) rc = load_hooks(&ld);
  lua_pop(L, 2);
  if (rc < 0) {
    mg_config_free(cfg);
    return NULL;
  }
  collect_watched(&ld);
  mg_lua_lock_globals(L);
  return cfg;
}

static void hooks_free(mg_hooks_t *h) {
  free(h->refs);
  h->refs = NULL, h->n = 0;
}

void mg_config_free(mg_config_t *cfg) {
  if (!cfg) return;
  mg_resolve_free(cfg); /* before the members its lookups point to */
  mg_metrics_unmap(cfg->metrics);
  for (int i = 0; i < cfg->nroutes; i++) {
    mg_route_t *r = &cfg->routes[i];
    free(r->match), free(r->host), free(r->addr.url), free(r->root), free(r->internal_redirect);
    free(r->sendfile), free(r->decl);
    free(r->compress.types); /* SPEC 19 */
    free_error_pages(&r->own_error_pages);
    free(r->cache_control);
    for (int k = 0; k < r->nindex; k++) free(r->index[k]);
    free(r->index);
    mg_route_re_free(r);
    if (r->root_fd >= 0) close(r->root_fd);
    for (int k = 0; k < r->nsendfile_roots; k++) {
      free(r->sendfile_roots[k]);
      if (r->sendfile_root_fds[k] >= 0) close(r->sendfile_root_fds[k]);
    }
    free(r->sendfile_roots), free(r->sendfile_root_fds);
    for (int k = 0; k < r->nenv; k++) free(r->env[k].name), free(r->env[k].value);
    free(r->env);
    for (int p = MG_PHASE_REWRITE; p < MG_PHASE_HOOKED; p++) hooks_free(&r->hooks[p]);
  }
  free(cfg->routes);
  for (int i = 0; i < cfg->nbalancers; i++) mg_balancer_free(cfg->balancers[i]);
  free(cfg->balancers);
  for (int i = 0; i < cfg->nlistens; i++)
    free(cfg->listens[i].host), free(cfg->listens[i].text), mg_tls_ctx_free(cfg->listens[i].tls),
        free_realip(&cfg->listens[i].realip);
  free(cfg->listens);
  for (int p = MG_PHASE_REWRITE; p < MG_PHASE_HOOKED; p++) hooks_free(&cfg->hooks[p]);
  hooks_free(&cfg->init_worker);
  free(cfg->timers);
  for (int i = 0; i < cfg->nwatched; i++) free(cfg->watched[i]);
  free(cfg->watched);
  mg_settings_t *s = &cfg->set;
  free(s->server_name), free(s->access_log), free(s->error_log), free(s->log_level), free(s->pid);
  free(s->user), free(s->group), free(s->lua_ssl_trusted_certificate);
  free(s->compress.types); /* SPEC 19 */
  free_error_pages(&s->error_pages);
  free_realip(&s->realip);
  for (int i = 0; i < s->nresolvers; i++) free(s->resolvers[i]);
  free(s->resolvers);
  if (cfg->L) mg_shdict_release_all(cfg->L), lua_close(cfg->L);
  free(cfg->file), free(cfg->dir);
  free(cfg);
}
