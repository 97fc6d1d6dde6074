/* config: the runtime configuration a worker serves with, built from init.lua.
 *
 * A mg_config_t is immutable once loaded: workers serve one configuration for their whole
 * life, and a reload replaces the workers (see master.c), so no request ever sees a
 * configuration change under it. The Lua state that ran init.lua belongs to the configuration:
 * hooks and handlers are registry references into it. src/config_load.c fills this structure
 * from the declarations lua/moongate.lua recorded (resolving backend addresses with base/addr.h)
 * and frees it; this file owns the types and the phase numbering. */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "cidr.h"

typedef struct lua_State lua_State;

/* The phases, the one numbering of the tree (names: mg_phase_name in phase.c). The ones
 * before MG_PHASE_HOOKED have hook lists in a route and in the configuration; Lua code tells
 * where it runs by the same numbers (as bits, 1 << phase, where several are allowed). */
enum {
  MG_PHASE_INIT, /* loading init.lua, or outside any phase */
  MG_PHASE_REWRITE,
  MG_PHASE_ACCESS,
  MG_PHASE_BALANCER,
  MG_PHASE_HEADER_FILTER,
  MG_PHASE_LOG,
  MG_PHASE_BODY_FILTER,
  MG_PHASE_HOOKED,
  MG_PHASE_CONTENT = MG_PHASE_HOOKED,
  MG_PHASE_TIMER,
  MG_PHASE_INIT_WORKER,
  MG_PHASE_COUNT
};

typedef enum { MG_TARGET_SCGI, MG_TARGET_BALANCER, MG_TARGET_STATIC, MG_TARGET_LUA, MG_TARGET_STATUS } mg_target_kind_t;

typedef struct {
  char *name;
  char *value; /* NULL removes the variable */
} mg_kv_t;

typedef struct {
  int *refs; /* Lua registry references, in call order */
  int n;
} mg_hooks_t;

typedef struct mg_balancer_s mg_balancer_t;
typedef struct mg_handler_s mg_handler_t; /* request.h */

/* SPEC 19: compression. A setting of mg.set and of a route (a route's own table replaces the
 * global one; `compress = false` turns it off there). */
typedef struct {
  int on;
  char *types; /* ",text/html,text/css," (lower case), or NULL for every type ("*") */
  uint64_t min_length;
  int level_gzip, level_br, level_zstd;
} mg_compress_cfg_t;

/* SPEC 19: a static route's `expires` (nginx's forms). */
typedef enum { MG_EXPIRES_OFF, MG_EXPIRES_AFTER, MG_EXPIRES_EPOCH, MG_EXPIRES_MAX } mg_expires_t;

/* SPEC 19: error pages. A status's page is a local URI (served by an internal redirect, the
 * status kept) or a Lua function called as a content handler fn(req, status); `fn` is then a
 * route of its own (kind MG_TARGET_LUA, errpage_fn set) that no URI reaches. */
typedef struct mg_route_s mg_route_t;
typedef struct {
  int status;
  char *uri;
  mg_route_t *fn;
} mg_errpage_t;

typedef struct {
  mg_errpage_t *v;
  int n;
} mg_errpages_t;

struct mg_route_s {
  char *match;
  size_t match_len;
  int exact;
  void *re;   /* a regex route ("~" or "~*"): its compiled pattern (route_re.h); else NULL */
  int caseless; /* "~*" */
  char *host; /* lower case; NULL for every host */
  mg_target_kind_t kind;
  const mg_handler_t *handler; /* what serves the route (one per kind) */
  int internal;            /* answers only subrequests and internal redirects (404 otherwise) */
  mg_addr_t addr;          /* MG_TARGET_SCGI */
  mg_balancer_t *balancer; /* MG_TARGET_BALANCER */
  char *root;              /* MG_TARGET_STATIC */
  int root_fd;
  int handler_ref;         /* MG_TARGET_LUA */
  char *internal_redirect; /* header name, NULL when off */
  char *sendfile;          /* header name, NULL when off */
  char **sendfile_roots;
  int *sendfile_root_fds;
  int nsendfile_roots;
  int sendfile_missing;    /* 500 or 404 */
  int pathinfo;
  int pass_authorization;
  mg_kv_t *env;
  int nenv;
  mg_hooks_t hooks[MG_PHASE_HOOKED];
  uint64_t connect_timeout, timeout; /* ms */
  uint64_t client_max_body_size;
  /* SPEC 19: buffering. request_buffering: the body is read whole before the backend is
   * contacted; response_buffering: what the client has not taken yet goes to a temporary
   * file past response_buffer_size, up to response_temp_max, so the backend is freed. */
  int request_buffering, response_buffering;
  uint64_t response_buffer_size, response_temp_max;
  char *decl; /* "file:line" of the mg.route call */
  /* SPEC 19: compression (the global setting unless the route has its own); precompressed
   * siblings of a static route. */
  mg_compress_cfg_t compress;
  int precompressed;
  /* SPEC 19: error pages (the route's own table, or the global one) and whether the
   * backend's error answers are replaced by them; errpage_fn: this is an error page's
   * function, called fn(req, status). */
  const mg_errpages_t *error_pages;
  mg_errpages_t own_error_pages;
  int intercept_errors;
  int errpage_fn;
  /* SPEC 19: a static route's caching headers (on 200, 206, 301, 304 and 416 answers),
   * index files tried for a directory, and the route that answers when no file matches
   * (NULL: 404/403). The fallback chain never loops (moongate.lua checks it). */
  mg_expires_t expires_mode;
  int64_t expires; /* seconds from now, MG_EXPIRES_AFTER; negative: in the past, no-cache */
  char *cache_control;
  char **index;
  int nindex;
  const struct mg_route_s *fallback;
};

/* SPEC 19: the real client address, nginx's realip (core/realip.c). Off while nfrom is 0. */
enum { MG_REALIP_X_REAL_IP, MG_REALIP_XFF, MG_REALIP_FORWARDED, MG_REALIP_OTHER };
typedef struct {
  mg_cidr_t *from; /* real_ip_from: the peers whose header is believed */
  int nfrom;
  char *header;    /* real_ip_header, as written ("X-Real-IP" by default) */
  int kind;        /* MG_REALIP_*: how the header's value is read */
  int recursive;   /* real_ip_recursive */
} mg_realip_cfg_t;

typedef struct {
  int unix_socket;
  char *host; /* or the socket path */
  int port;
  char *text;
  struct mg_tls_ctx_s *tls; /* NULL: plain HTTP (tls.h) */
  /* HTTP/2 (SPEC 18): on TLS, offered by ALPN unless `http2 = false`; on a plain listener,
   * prior knowledge (h2c) only with `http2 = true`. */
  int http2;
  /* SPEC 19: a PROXY protocol header (v1 or v2) precedes every connection's bytes. */
  int proxy_protocol;
  /* SPEC 19: realip for this listener: the settings' with the listener's own options over
   * them (each of real_ip_from, real_ip_header, real_ip_recursive on its own). */
  mg_realip_cfg_t realip;
} mg_listen_t;

typedef struct {
  char *server_name;
  uint64_t client_header_timeout, client_body_timeout, keepalive_timeout; /* ms */
  uint64_t keepalive_requests;
  uint64_t max_request_line, max_header_size, max_headers;
  uint64_t client_max_body_size;
  uint64_t max_connections;
  uint64_t connect_timeout, timeout;
  uint64_t internal_redirect_limit;
  uint64_t max_backend_header_size;
  uint64_t shutdown_timeout;
  char *access_log, *error_log, *log_level, *pid;
  int access_log_json; /* access_log_format = "json" */
  char *user, *group;  /* workers drop to them (the master keeps root to bind and open logs) */
  int pass_authorization, allow_encoded_slashes, watch;
  int sendfile_missing;
  uint64_t subrequest_max_body, lua_body_max;
  uint64_t subrequest_limit, subrequest_max_total_body; /* per client request */
  uint64_t lua_max_run_time, lua_socket_timeout;       /* ms; lua_max_run_time 0: no limit */
  /* SPEC 17: the ngx.re cache, cosockets' TLS verification, one-shot timers. */
  uint64_t regex_cache_max_entries;
  char *lua_ssl_trusted_certificate; /* a CA file; absolute after loading */
  uint64_t lua_ssl_verify_depth;
  uint64_t lua_max_pending_timers, lua_max_running_timers;
  /* SPEC 18: HTTP/2's limits; send_timeout (ms) bounds a stream or connection whose queued
   * response makes no progress. */
  uint64_t http2_max_concurrent_streams, http2_max_header_list_size, http2_initial_window_size;
  uint64_t send_timeout;
  /* SPEC 19: buffering (the routes' defaults) */
  int request_buffering, response_buffering;
  uint64_t response_buffer_size, response_temp_max;
  /* SPEC 19: compression (off unless set). */
  mg_compress_cfg_t compress;
  /* SPEC 19: error pages (the routes' defaults). */
  mg_errpages_t error_pages;
  int intercept_errors;
  mg_realip_cfg_t realip; /* SPEC 19: real_ip_from, real_ip_header, real_ip_recursive */
  /* SPEC 20: the histograms' upper bounds in seconds (increasing, at most 32), and W3C trace
   * context (core/trace.c) on or off. */
  double histogram_buckets[32];
  int nhistogram_buckets;
  int tracing;
  /* SPEC 20: balancer members given by host name are looked up again at most this often, through
   * these DNS servers ("ip[:port]"; none: /etc/resolv.conf's). */
  uint64_t resolve_every_ms;
  char **resolvers;
  int nresolvers;
} mg_settings_t;

typedef struct {
  int ms;
  int ref;
} mg_timer_decl_t;

typedef struct mg_config_s {
  lua_State *L;
  char *file; /* init.lua as given */
  char *dir;  /* its folder: relative paths in it resolve here */
  mg_settings_t set;
  mg_listen_t *listens;
  int nlistens;
  int workers; /* 0 means one per core */
  mg_route_t *routes;
  int nroutes;
  mg_balancer_t **balancers;
  int nbalancers;
  mg_hooks_t hooks[MG_PHASE_HOOKED]; /* global hooks */
  mg_hooks_t init_worker;
  mg_timer_decl_t *timers;
  int ntimers;
  char **watched; /* Lua files loaded, for `watch` */
  int nwatched;
  struct mg_metrics_s *metrics; /* SPEC 20: this configuration's shared counters (shm/metrics.h) */
  struct mg_resolver_s *resolver; /* SPEC 20: the master's lookups of members' names (handler/resolve.h) */
} mg_config_t;

/* Loads init.lua into a new configuration. Returns it, or NULL with a message naming
 * file:line in err (err_len bytes). Defined in config_load.c. */
mg_config_t *mg_config_load(const char *file, char *err, size_t err_len);
void mg_config_free(mg_config_t *cfg);

#endif
