/* request: the request every layer works on, its life, and the response API over a sink.
 *
 * The request is what the engine, the handlers and the Lua binding work on: routing, hooks,
 * the SCGI upstream, static files, Lua content handlers, subrequests. It owns a pool for its
 * strings and is freed when its response is complete. Where the response goes is the
 * request's sink: the client connection's protocol (http/http1.c), or a subrequest's capture
 * (lua/lua_subrequest.c). This file never asks which one it has; every transport-specific act (framing
 * the head, writing a body piece, pausing the client's body, the descriptor for sendfile)
 * is a call through the sink, and what the sink does not do, it leaves NULL.
 *
 * The response API is the same for every handler: mg_req_send_head() once, then
 * mg_req_send_body() any number of times, then mg_req_send_end(); or mg_req_abort() to cut the
 * response so that a truncated body is never passed off as whole. mg_req_error() sends a
 * short text response with a status and writes the error-log line. The header_filter and
 * body_filter hooks run inside these calls, through the hooks table (hooks.h). */
#ifndef MG_REQUEST_H
#define MG_REQUEST_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "fields.h"
#include "pool.h"
#include "scgi.h"
#include "timeq.h"

typedef struct mg_server_s mg_server_t;
typedef struct mg_sink_s mg_sink_t;
typedef struct mg_req_s mg_req_t;
typedef struct mg_upstream_s mg_upstream_t;

typedef void (*mg_body_cb)(mg_req_t *req, const char *data, size_t len);

/* A request body held whole by the gateway: in memory up to 64 KiB, beyond that in an unlinked
 * temporary file (req:read_body(), req:set_body(), a subrequest's body). */
typedef struct {
  mg_buf_t mem;
  int fd; /* -1: in memory */
  uint64_t len;
} mg_body_t;

/* A sink: where a request's response goes, and the transport's side of the request. The
 * response calls come in order: head once, body any number of times, then end or abort.
 * `block` (from mg_block_get) or `heap` (malloc'd) owns a body piece, and the sink releases
 * it when done with it; with neither, the bytes are static or outlive the write. */
struct mg_sink_s {
  const char *name;
  /* The head is final (status, fields, req->resp_length; header_filter has run): frame it. */
  void (*head)(mg_req_t *req);
  void (*body)(mg_req_t *req, char *block, char *heap, const char *data, size_t len);
  /* The body is complete (req->resp_ended is set). */
  void (*end)(mg_req_t *req);
  /* The response is cut: the peer must not take what it got for a whole response. */
  void (*abort)(mg_req_t *req);
  /* Optional. The head has not left yet: it is dropped and 1 returned (a body_filter failed
   * before the first byte, and the client can still get a clean 500). */
  int (*retract)(mg_req_t *req);
  /* Optional. A head held back for the first body bytes goes now (before sendfile). */
  void (*flush)(mg_req_t *req);
  /* Optional. Bytes accepted and not yet sent: handlers stop their source above
   * MG_WRITE_HIGH and go on from req->on_drain. */
  size_t (*queued)(const mg_req_t *req);
  /* Optional. 1 while the client takes no bytes now: its socket is full or (HTTP/2) its
   * flow-control window for the response is closed. Without it, always 1. */
  int (*client_blocked)(const mg_req_t *req);
  /* Optional. The request body: stop reading the client, read again, send "100 Continue". */
  void (*pause_body)(mg_req_t *req);
  void (*resume_body)(mg_req_t *req);
  void (*send_continue)(mg_req_t *req);
  /* Optional. Parse what the transport holds for its request (a held body may flow now).
   * Takes the transport, not the request: the request may have ended meanwhile. */
  void (*kick)(void *transport);
  /* Optional. 0 while the client is still there to read the response. */
  int (*peer_gone)(const mg_req_t *req);
  /* Optional. The socket's descriptor for sendfile(2), or -1. */
  int (*socket_fd)(const mg_req_t *req);
  /* Optional. Local address and port (SERVER_ADDR, SERVER_PORT): 0, or -1 for none. */
  int (*local)(const mg_req_t *req, char *addr, size_t n, int *port);
};

/* The routes' handlers (the target kinds of docs/reference.md, "Routes") behind one interface: the engine starts the
 * route's handler and never names a kind. */
struct mg_handler_s {
  const char *name;
  void (*start)(mg_req_t *req);
};

/* Body helpers: 0 or -errno. */
void mg_body_init(mg_body_t *b);
int mg_body_add(mg_body_t *b, const char *data, size_t len);
void mg_body_reset(mg_body_t *b);
/* A new unlinked temporary file (O_TMPFILE in $TMPDIR or /tmp), read-write: its descriptor,
 * or -errno. What the gateway spools to disk never outlives its descriptor. */
int mg_tmpfile(void);

struct mg_req_s {
  const mg_sink_t *sink;
  void *transport; /* the sink's own state: the connection, or the capture */
  mg_server_t *server;
  const mg_config_t *cfg;
  char id[40]; /* 32 hex digits (nginx's $request_id), a subrequest's with a suffix */
  uint64_t start_ns;

  /* The request as received. */
  const char *method; /* "GET" ... (may be changed to GET by an internal redirect) */
  int http_major, http_minor;
  char *target;      /* request target as received: REQUEST_URI, raw_uri */
  char *orig_method; /* for the access log */
  mg_fields_t headers;
  char *host;        /* Host without port, lower case; NULL when absent */
  int64_t content_length; /* -1: none */
  /* chunked: the body's length is known only at its end (HTTP/1.1 chunked, an HTTP/2 stream
   * without content-length); keepalive is HTTP/1.1's (HTTP/2 streams ignore it). */
  unsigned chunked : 1, expect_continue : 1, keepalive : 1, is_head : 1, continue_sent : 1;
  unsigned head_done : 1; /* the head is parsed: fields from here on are trailers, dropped */
  uint32_t ntrailers;     /* trailer fields seen (they count against max_headers) */

  /* The path being served: normalized (req.uri) and its query; change on internal redirect. */
  char *path;
  size_t path_len;
  char *query; /* NULL: no '?' */
  const mg_route_t *route;
  int redirects;
  char *redirect_url, *redirect_query, *redirect_method; /* previous hop */

  /* The script binding's state of this request (lua/lua_request.h), opaque here: NULL until
   * Lua touches the request, then from the pool, released by a cleanup of the pool. */
  void *lua;

  /* The phase engine (phase.c): where the request is in its life, and the Lua thread it waits
   * on, if any. While a hook waits before the handler has started, the client's body is held
   * (not parsed) so that no byte of it is lost. */
  uint8_t stage;
  uint16_t hook_i;
  unsigned hold_body : 1, handler_started : 1, is_subrequest : 1, body_ready : 1, body_reading : 1;
  void *thread;       /* the suspended mg_thread_t of a hook or content handler */
  unsigned queued : 1; /* SPEC 20: waiting in a balancer's queue; a client's FIN then means it left */
  mg_kv_t *env_list;  /* req.env as plain data, for cgi_env.c (exported before the SCGI head) */
  int nenv_list;
  int env_pathinfo;   /* req.env["proxy-scgi-pathinfo"] was set */
  mg_body_t body;     /* valid when body_ready */
  mg_req_t *parent;   /* a subrequest's parent */
  int depth;          /* subrequest depth */
  /* A client request's count of subrequests (nested ones too) and the bytes of their bodies,
   * against subrequest_limit and subrequest_max_total_body (lua/lua_subrequest.c). */
  uint32_t subrequests;
  uint8_t subrequest_capped; /* the cap's log line is written once per request */
  uint64_t subrequest_bytes;

  /* Body of the request, as the parser delivers it. */
  mg_body_cb on_body;         /* NULL: discard */
  void (*on_body_end)(mg_req_t *req);
  uint64_t body_received;
  uint64_t request_length; /* bytes of the request as received, head and body (nginx's $request_length) */
  unsigned msg_done : 1; /* the whole request, body included, has been read */

  /* The response. */
  int status;
  mg_fields_t resp_headers;
  int64_t resp_length; /* Content-Length being sent, -1: chunked or close-delimited */
  unsigned head_sent : 1, resp_chunked : 1, resp_close : 1, resp_ended : 1, aborted : 1, finished : 1,
      observed : 1;
  uint16_t dropped; /* the status of mg_req_drop (444, 408, 499), 0: not dropped */
  /* Holds of a layer above that keeps the request past its end (a log hook that waits,
   * lua/lua_hooks.c): mg_req_free then waits for the last mg_req_unhold. */
  uint16_t holds;
  unsigned free_deferred : 1;
  unsigned body_filtered : 1, body_filter_off : 1; /* the body goes through body_filter hooks */
  uint64_t bytes_sent; /* body bytes (compressed ones when compressing) */
  void *compress;      /* SPEC 19: compress.c's state; NULL: the body goes as is */
  mg_upstream_t *up;
  void *handler_data; /* static/sendfile state */
  char *remote;       /* the client's address, formatted (after realip: core/realip.h) */
  uint16_t remote_port;
  /* SPEC 19: the peer's own address and port (the socket's, or the PROXY header's source),
   * what real_ip_from is matched against; remote is the client realip found, or the same. */
  char *peer;
  uint16_t peer_port;
  unsigned remote_no_port : 1; /* realip took an address without a port: REMOTE_PORT is empty */
  const mg_realip_cfg_t *realip; /* the listener's realip; NULL: the settings' */
  unsigned is_tls : 1; /* the client's connection is TLS (HTTPS=on, req.scheme) */
  void (*on_drain)(mg_req_t *req);
  int scratch_kind;   /* 0 none, 1 url, 2 field, 3 value, 4 version (nothing kept) */
  char *pending_field;
  int filter_failed;  /* a header_filter hook raised an error */
  void (*handler_cancel)(mg_req_t *req); /* stops the handler when the client goes away */
  const char *upstream_name; /* from the pool: outlives the upstream */
  int upstream_status;       /* the backend's status, for the JSON access log */
  /* SPEC 19: the status an error page is answering (0: none; one page per request, as
   * nginx's without recursive_error_pages); errpage_uri: a URI page, whose own 2xx status
   * becomes errpage_status when its head goes out. */
  int errpage_status;
  const char *errpage_retry_after; /* the error's Retry-After, sent with its page */
  unsigned errpage_uri : 1;
  unsigned phased : 1; /* the phase engine has started it (phase.c): it has a method and path */
  uint64_t upstream_start_ns, upstream_usec;
  /* SPEC 20: W3C trace context (core/trace.h): ids in lower-case hex; parent_span_id is the
   * client's span ("" when moongate started the trace). */
  char trace_id[33], span_id[17], parent_span_id[17];
  uint8_t trace_flags;
  unsigned traced : 1;
  const mg_route_t *errpage_of; /* SPEC 20: with errpage_status, the route whose error the page answers (NULL: none) */

  /* Last: a new request zeroes every field above; the parser's scratch buffer stays with the
   * struct when it is reused (mg_req_new), and the pool's 2 KiB of inline storage needs no
   * clearing. */
  mg_buf_t scratch; /* the URL or header piece being assembled by the parser */
#define MG_SCRATCH_KEEP 4096 /* a scratch buffer larger than this is not kept past the head */
  mg_pool_t pool;
};

/* `moongate --explain` (explain.c) sets mg_explain: the engine, the balancer and the SCGI
 * handler report to it, and no backend is contacted; the waiting Lua APIs answer
 * nil, "explain". NULL when serving (every check is one pointer test). */
typedef struct {
  void (*hook_begin)(mg_req_t *req, int phase, int ref); /* a hook is about to run */
  void (*hook_end)(mg_req_t *req, const char *error);    /* it returned (error: it failed) */
  void (*restart)(mg_req_t *req, const char *location);  /* req:redirect or an internal redirect */
  /* The route's handler is about to start: returns 1 when explain answers instead (every
   * kind but SCGI), 0 to let the SCGI handler choose its member and report with backend(). */
  int (*handler)(mg_req_t *req);
  /* What the SCGI backend would receive: member NULL for a plain scgi:// route. */
  void (*backend)(mg_req_t *req, const void *member, const mg_vars_t *vars);
} mg_explain_t;
extern const mg_explain_t *mg_explain;

/* SPEC 20: called once per request (the program sets it to handler/metrics_page.c's counter),
 * before the response's last bytes go to the transport, so that a scrape the client sends
 * after its answer counts it; at mg_req_finish for a request that ended otherwise. NULL:
 * nothing counts. */
extern void (*mg_req_observer)(const mg_req_t *req);

/* A new request served by `sink` over `transport`, with an id, from the worker's free list.
 * The transport fills in what it knows of the client (remote and peer, their ports, is_tls,
 * realip). */
mg_req_t *mg_req_new(mg_server_t *server, const mg_sink_t *sink, void *transport);
/* The response is complete, or the client is gone: stops what still works for it (a waiting
 * hook, the handler), runs the log hooks, writes the access log line. Once. */
void mg_req_finish(mg_req_t *req);
/* A request that never started (an HTTP/2 stream reset before its head was taken, a refused
 * one): counted as finished, with no log hook and no access-log line, and freed. */
void mg_req_discard(mg_req_t *req);
/* Gives the request's memory back (after mg_req_finish), or, while it is held, once the last
 * hold is dropped: its transport is gone then (req->transport is NULL). */
void mg_req_free(mg_req_t *req);
/* Keeps a finished request's memory (its pool, its fields) past mg_req_free until as many
 * mg_req_unhold: what a log hook still running after the connection moved on reads. */
void mg_req_hold(mg_req_t *req);
void mg_req_unhold(mg_req_t *req);
/* Stops the handler producing the response (its cancel function), e.g. a capture that has
 * seen enough, or a client that went away. */
void mg_req_stop(mg_req_t *req);
/* A request created for a subrequest: pool, id, the client's facts copied from the parent.
 * Released with mg_req_release. */
mg_req_t *mg_req_new_child(mg_req_t *parent, const mg_sink_t *sink, void *transport);
void mg_req_release(mg_req_t *req);

/* The target as received, split and normalised into req->path and req->query (nginx's $uri
 * and $args). 0, or -1 after answering 400 (or 404 for an encoded slash when
 * allow_encoded_slashes is off). */
int mg_req_set_target(mg_req_t *req, const char *target);
/* The Host field or :authority: checked, port dropped, lower-cased into req->host. 0, or -1
 * when it is not a valid host (the caller answers 400). */
int mg_req_set_host(mg_req_t *req, const char *host);

/* Local address and port of the request's connection (SERVER_ADDR, SERVER_PORT); -1 when
 * there is none (a unix socket). */
int mg_req_local(const mg_req_t *req, char *addr, size_t n, int *port);
/* The client socket's descriptor, for zero-copy senders (sendfile(2)); -1 when the bytes must
 * go through the response API: a subrequest's capture, body_filter hooks, TLS. */
int mg_req_socket_fd(const mg_req_t *req);
/* The client can no longer read the response. */
int mg_req_peer_gone(const mg_req_t *req);

/* Flow control of the request body: pause reading the client while the backend is slow. */
void mg_req_pause_body(mg_req_t *req);
void mg_req_resume_body(mg_req_t *req);
/* Sends "100 Continue" if the client asked for it and has not been answered yet. */
void mg_req_continue(mg_req_t *req);
/* The body held while a hook waited may be parsed now (req:read_body(), the handler). */
void mg_req_read_body(mg_req_t *req);

/* The head, ready to leave with the first body bytes (one write for a small response), or at
 * mg_req_send_end / mg_req_flush. */
void mg_req_send_head(mg_req_t *req);
void mg_req_flush(mg_req_t *req);
/* Sends len bytes at data; `block` (from mg_block_get, may be NULL when data is static or
 * owned elsewhere until the write completes) is returned to the pool when the write is done. */
void mg_req_send_body(mg_req_t *req, char *block, const char *data, size_t len);
/* Sends len malloc'd bytes at heap, which the response API frees (Lua's ngx.say output). */
void mg_req_send_heap(mg_req_t *req, char *heap, size_t len);
/* Where up to *room body bytes may be written in place, or NULL: a response compressed at once
 * collects its body in one buffer (compress.h), which a file read can fill without a copy.
 * The bytes count as sent by mg_req_commit_body(req, n). */
char *mg_req_body_space(mg_req_t *req, size_t *room);
void mg_req_commit_body(mg_req_t *req, size_t n);
void mg_req_send_end(mg_req_t *req);
void mg_req_abort(mg_req_t *req, const char *why);
/* 1 for the statuses nginx answers with nothing at all: 444 (`return 444`), 408 and 499. */
int mg_status_answers_nothing(int status);
/* Ends the request with no answer at all, as nginx's ngx.exit(444), 408 and 499 do: the
 * HTTP/1.1 connection closes, an HTTP/2 stream is reset; logged with `status` (after its head
 * went out: cut there, and logged with the status sent). A response already whole or already
 * cut is left as it is. Like a response that completes at once, it may free the request
 * before it returns. */
void mg_req_drop(mg_req_t *req, int status);
/* The status the logs and metrics give the request: a drop's status, 499 for one cut before
 * its head went out, else its status. */
int mg_req_logged_status(const mg_req_t *req);
/* A complete short response: status, text body, error-log line `fmt` (NULL for none). */
void mg_req_error(mg_req_t *req, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An error response the server makes itself (mg_req_error, Lua's ngx.exit) ends the HTTP/1.1
 * connection after it when its request's body is unread (mg_req_unread_body_closes) or its
 * status is 400, 413, 414, 500 or 501, as nginx's does. */
void mg_req_error_closes(mg_req_t *req, int status);
/* A request answered before its body was read cannot be followed by another on the same
 * connection: keepalive is dropped (the transport reads and drops the rest, lingering). */
void mg_req_unread_body_closes(mg_req_t *req);
/* The error-page step of mg_req_error (errpage.c's mg_errpage_try, set by the program; the
 * pointer keeps the units below errpage.c free of a cycle): 1 when a page took the request. */
extern int (*mg_req_errpage)(mg_req_t *req, int status);
/* A complete response with a body from memory (copied). */
void mg_req_respond(mg_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Bytes queued for the client and not yet written: handlers stop reading their source above
 * MG_WRITE_HIGH and resume from the callback passed to mg_req_on_drain. */
size_t mg_req_write_queue(const mg_req_t *req);
int mg_req_client_blocked(const mg_req_t *req);
void mg_req_on_drain(mg_req_t *req, void (*cb)(mg_req_t *req));

/* The number of hooks of `phase` that run for req: the global ones (mg.on; client requests
 * only), then the route's. Reads two counters. */
int mg_req_hook_count(const mg_req_t *req, int phase);
/* The i-th of them (a Lua registry reference, opaque here). */
int mg_req_hook_at(const mg_req_t *req, int phase, int i);

#define MG_WRITE_HIGH (256 * 1024)
#define MG_WRITE_LOW (64 * 1024)

/* The result of a step that may wait, across the tree: MG_OK (done, go on), MG_WAITS (it goes
 * on from a callback), MG_ENDED (the request was answered or ended: the caller stops
 * touching it); a negative errno is a failure. */
enum { MG_OK = 0, MG_WAITS = 1, MG_ENDED = 2 };

#endif
