/* The request's response API (core/request.h) over a fake sink: what a transport is asked to
 * frame and send for each way a handler answers. The sink records every call; a case builds a
 * request, answers it as a handler would, and asserts what the client would get: the head's
 * status and fields, the body bytes, and whether the response ended whole or was cut. The
 * header_filter and body_filter hooks are a fake hooks table. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "log_capture.h"
#include "hooks.h"
#include "log.h"
#include "loop.h"
#include "request.h"

/* What the sink was asked to do, in order: H head, B body, E end, A abort, R retract, F flush. */
typedef struct {
  char events[32];
  int heads, head_status;
  int64_t head_length;
  char head_fields[512]; /* "Name: value\n" for each field of the last head */
  char body[256];
  size_t body_len;
  int can_retract;
} rec_t;

static void event(rec_t *r, char c) {
  size_t n = strlen(r->events);
  if (n + 1 < sizeof r->events) r->events[n] = c, r->events[n + 1] = 0;
}

static void on_head(mg_req_t *req) {
  rec_t *r = req->transport;
  event(r, 'H');
  r->heads++;
  r->head_status = req->status;
  r->head_length = req->resp_length;
  r->head_fields[0] = 0;
  for (int i = 0; i < req->resp_headers.n; i++) {
    size_t n = strlen(r->head_fields);
    snprintf(r->head_fields + n, sizeof r->head_fields - n, "%s: %s\n", req->resp_headers.v[i].name,
             req->resp_headers.v[i].value);
  }
}

static void on_body(mg_req_t *req, char *block, char *heap, const char *data, size_t len) {
  rec_t *r = req->transport;
  event(r, 'B');
  if (r->body_len + len < sizeof r->body) memcpy(r->body + r->body_len, data, len), r->body_len += len;
  r->body[r->body_len] = 0;
  mg_block_put(block);
  free(heap);
}

static void on_end(mg_req_t *req) {
  CHECK(req->resp_ended);
  event(req->transport, 'E');
}
static void on_abort(mg_req_t *req) { event(req->transport, 'A'); }
static int on_retract(mg_req_t *req) {
  rec_t *r = req->transport;
  event(r, 'R');
  return r->can_retract;
}
static void on_flush(mg_req_t *req) { event(req->transport, 'F'); }

/* A sink that leaves every optional call but retract and flush NULL. */
static const mg_sink_t sink = {
    .name = "fake", .head = on_head, .body = on_body, .end = on_end, .abort = on_abort, .retract = on_retract,
    .flush = on_flush};

static size_t full_queued(const mg_req_t *req) {
  (void)req;
  return 1000;
}
static int full_socket_fd(const mg_req_t *req) {
  (void)req;
  return 7;
}
static int full_local(const mg_req_t *req, char *addr, size_t n, int *port) {
  (void)req;
  snprintf(addr, n, "192.0.2.1");
  *port = 8080;
  return 0;
}
/* A sink with the transport's facts: its write queue, socket and local address. */
static const mg_sink_t sink_full = {.name = "full", .head = on_head, .body = on_body, .end = on_end,
                                    .abort = on_abort, .queued = full_queued, .socket_fd = full_socket_fd,
                                    .local = full_local};

static mg_config_t cfg;
static mg_server_t server;

static mg_req_t *new_req(const mg_sink_t *s, rec_t *r) {
  memset(r, 0, sizeof *r);
  r->can_retract = 1;
  mg_req_t *req = mg_req_new(&server, s, r);
  req->remote = mg_pool_strdup(&req->pool, "203.0.113.9"); /* as a transport fills it in */
  req->method = req->orig_method = "GET";
  req->http_major = req->http_minor = 1;
  return req;
}

static void done(mg_req_t *req) {
  mg_req_finish(req);
  mg_req_free(req);
}

static void set_field(mg_req_t *req, const char *name, const char *value) {
  mg_fields_set(&req->pool, &req->resp_headers, name, value);
}

/* ---- the fake hooks table ---------------------------------------------------------------- */

static struct {
  int header_filter, header_filter_heads, header_filter_fail;
  int body_filter, body_filter_fail_at;
  int log, abandon;
} calls;

static int hook_run(mg_req_t *req, int phase, int ref) {
  (void)req, (void)phase, (void)ref;
  return MG_OK;
}
static void hook_abandon(mg_req_t *req) {
  (void)req;
  calls.abandon++;
}
static void hook_header_filter(mg_req_t *req) {
  rec_t *r = req->transport;
  calls.header_filter++;
  calls.header_filter_heads = r->heads; /* heads framed before the filter ran */
  set_field(req, "X-Filtered", "1");
  if (calls.header_filter_fail) req->filter_failed = 1;
}
/* Upper-cases each piece; the last call adds "!". Fails on call number body_filter_fail_at. */
static int hook_body_filter(mg_req_t *req, const char *data, size_t len, int eof, char **out, size_t *out_len) {
  (void)req;
  if (++calls.body_filter == calls.body_filter_fail_at) return -1;
  char *o = malloc(len + 2);
  for (size_t i = 0; i < len; i++) o[i] = (char)(data[i] >= 'a' && data[i] <= 'z' ? data[i] - 32 : data[i]);
  if (eof) o[len++] = '!';
  *out = o, *out_len = len;
  return 0;
}
static void hook_log(mg_req_t *req) {
  (void)req;
  calls.log++;
}
static const mg_hooks_table_t fake_hooks = {.run = hook_run, .abandon = hook_abandon,
                                            .header_filter = hook_header_filter,
                                            .body_filter = hook_body_filter, .log = hook_log};

static int cancelled;
static void on_cancel(mg_req_t *req) {
  (void)req;
  cancelled++;
}

int main(void) {
  CHECK(log_capture_start() == 0);
  CHECK(!mg_log_access_enabled());
  server.cfg = &cfg;
  rec_t r;
  mg_req_t *req;

  /* respond: head, body, end, with Content-Length and Content-Type. */
  req = new_req(&sink, &r);
  mg_req_respond(req, 200, "text/html", "hello", 5);
  CHECK_STR(r.events, "HBE");
  CHECK(r.head_status == 200 && r.head_length == 5);
  CHECK_STR(r.head_fields, "Content-Type: text/html\nContent-Length: 5\n");
  CHECK_STR(r.body, "hello");
  CHECK(req->bytes_sent == 5 && req->resp_ended && !req->aborted);
  done(req);
  CHECK(server.nfinished == 1);

  /* A handler's own fields stay; respond sets Content-Length once, whatever was there. */
  req = new_req(&sink, &r);
  set_field(req, "X-App", "1");
  set_field(req, "Content-Length", "999");
  mg_req_respond(req, 201, NULL, "{}", 2);
  CHECK_STR(r.head_fields, "X-App: 1\nContent-Length: 2\n");
  CHECK(r.head_status == 201 && r.head_length == 2);
  CHECK_STR(r.events, "HBE");
  done(req);

  /* mg_req_error: a short text page that replaces what the handler had prepared. */
  req = new_req(&sink, &r);
  set_field(req, "X-App", "1");
  req->keepalive = 1, req->msg_done = 1;
  mg_req_error(req, 404, NULL);
  CHECK_STR(r.events, "HBE");
  CHECK(r.head_status == 404 && r.head_length == 14);
  CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 14\n");
  CHECK_STR(r.body, "404 Not Found\n");
  CHECK(req->keepalive); /* the whole request was read: the connection may go on */
  CHECK_STR(log_take(), ""); /* no message, no log line */
  done(req);

  /* An error before the request's body was read closes the connection after it, and its
   * message is logged with the client and the request line. */
  req = new_req(&sink, &r);
  req->keepalive = 1;
  req->content_length = 100; /* a body, not read */
  req->target = mg_pool_strdup(&req->pool, "/upload");
  mg_req_error(req, 502, "backend %s refused", "127.0.0.1:9000");
  CHECK_STR(r.body, "502 Bad Gateway\n");
  CHECK(!req->keepalive);
  const char *line = log_take();
  CHECK(strstr(line, "[error]") && strstr(line, req->id));
  CHECK(strstr(line, "backend 127.0.0.1:9000 refused, client 203.0.113.9, request \"GET /upload\""));
  done(req);

  /* An error once the head is out cannot be a page: the response is cut. */
  req = new_req(&sink, &r);
  set_field(req, "Content-Length", "10");
  mg_req_send_head(req);
  mg_req_send_body(req, NULL, "abc", 3);
  mg_req_error(req, 502, NULL);
  CHECK_STR(r.events, "HBA");
  CHECK(r.heads == 1 && r.head_status == 200 && req->aborted);
  done(req);

  /* A body longer than its Content-Length is cut to it, pooled blocks included. */
  req = new_req(&sink, &r);
  set_field(req, "Content-Length", "5");
  mg_req_send_head(req);
  CHECK(r.head_length == 5);
  mg_req_send_body(req, NULL, "hello world", 11);
  char *block = mg_block_get();
  memcpy(block, "more", 4);
  mg_req_send_body(req, block, block, 4); /* past the length: dropped, the block released */
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBE");
  CHECK_STR(r.body, "hello");
  CHECK(req->bytes_sent == 5);
  done(req);

  /* The body in pieces of pooled blocks, up to its length exactly. */
  req = new_req(&sink, &r);
  set_field(req, "Content-Length", "6");
  for (int i = 0; i < 3; i++) {
    char *b = mg_block_get();
    memcpy(b, "ab", 2);
    mg_req_send_body(req, b, b, 2);
  }
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBBBE");
  CHECK_STR(r.body, "ababab");
  done(req);

  /* Ending before the Content-Length is reached cuts the response (abort, never end). */
  req = new_req(&sink, &r);
  set_field(req, "Content-Length", "10");
  mg_req_send_body(req, NULL, "abc", 3); /* sends the head first */
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBA");
  CHECK(req->aborted && !req->resp_ended);
  CHECK(strstr(log_take(), "response aborted: response shorter than its Content-Length, client 203.0.113.9"));
  /* Nothing more reaches the sink once the response is cut: no second abort, no end. */
  mg_req_send_body(req, NULL, "defg", 4);
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBA");
  CHECK(strstr(log_take(), "response aborted") == NULL);
  done(req);

  /* A response without a Content-Length cut by its handler: its end after that is not sent. */
  req = new_req(&sink, &r);
  mg_req_send_body(req, NULL, "abc", 3);
  mg_req_abort(req, NULL);
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBA");
  CHECK(!req->resp_ended);
  done(req);

  /* Without a Content-Length (chunked or close-delimited) any length ends whole. */
  req = new_req(&sink, &r);
  mg_req_send_head(req);
  CHECK(r.head_length == -1);
  mg_req_send_body(req, NULL, "abc", 3);
  mg_req_send_body(req, NULL, "", 0); /* an empty piece is not a write */
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBE");
  done(req);

  /* A 1xx (or a status past 999) as the final status: the last guard makes it a 500 page. */
  int bad_statuses[] = {101, 100, 1000};
  for (int i = 0; i < 3; i++) {
    req = new_req(&sink, &r);
    set_field(req, "X-App", "1");
    req->keepalive = 1;
    req->status = bad_statuses[i];
    mg_req_send_head(req);
    mg_req_send_body(req, NULL, "switching", 9);
    mg_req_send_end(req);
    CHECK_STR(r.events, "HBE");
    CHECK(r.head_status == 500 && r.head_length == 26);
    CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 26\n");
    CHECK_STR(r.body, "500 Internal Server Error\n");
    CHECK(r.body_len == 26 && !req->keepalive);
    char expect[80];
    snprintf(expect, sizeof expect, "response status %d is not a final status: answered 500", bad_statuses[i]);
    CHECK(strstr(log_take(), expect));
    done(req);
  }

  /* HEAD: the head of the GET, no body, ended whole. */
  req = new_req(&sink, &r);
  req->is_head = 1;
  mg_req_respond(req, 200, "text/plain", "hello", 5);
  CHECK_STR(r.events, "HE");
  CHECK(r.head_length == 5);
  CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 5\n");
  CHECK(r.body_len == 0 && !req->aborted);
  done(req);
  req = new_req(&sink, &r);
  req->is_head = 1;
  set_field(req, "Content-Length", "100");
  mg_req_send_body(req, NULL, "partial", 7);
  mg_req_send_end(req); /* not short: a HEAD has no body to be short of */
  CHECK_STR(r.events, "HE");
  done(req);
  req = new_req(&sink, &r);
  req->is_head = 1;
  mg_req_error(req, 404, NULL);
  CHECK_STR(r.events, "HE");
  CHECK(r.head_status == 404 && r.head_length == 14);
  done(req);

  /* 204 and 304 have no body, whatever the handler gives, and no length. */
  int bodiless[] = {204, 304};
  for (int i = 0; i < 2; i++) {
    req = new_req(&sink, &r);
    mg_req_respond(req, bodiless[i], "text/html", "abc", 3);
    CHECK_STR(r.events, "HE");
    CHECK(r.head_status == bodiless[i] && r.head_length == 0 && req->resp_length == 0);
    CHECK(req->bytes_sent == 0);
    done(req);
    req = new_req(&sink, &r);
    req->status = bodiless[i];
    mg_req_send_head(req);
    mg_req_send_body(req, NULL, "abc", 3);
    mg_req_send_end(req);
    CHECK_STR(r.events, "HE");
    CHECK(r.head_length == 0);
    done(req);
  }

  /* What the sink leaves NULL has a fallback: nothing queued, no socket, no local address. */
  req = new_req(&sink, &r);
  char addr[64] = "junk";
  int port = 99;
  CHECK(mg_req_write_queue(req) == 0);
  CHECK(mg_req_socket_fd(req) == -1);
  CHECK(mg_req_local(req, addr, sizeof addr, &port) == -1);
  CHECK_STR(addr, "");
  CHECK(port == 0);
  CHECK(mg_req_peer_gone(req) == 0);
  mg_req_pause_body(req), mg_req_resume_body(req); /* no flow control: nothing happens */
  mg_req_flush(req);
  CHECK_STR(r.events, "F");
  mg_req_respond(req, 200, NULL, "", 0);
  CHECK(r.head_length == 0);
  CHECK_STR(r.events, "FHE"); /* an empty body is no body call */
  CHECK(mg_req_peer_gone(req) == 0);
  done(req);
  /* A sink that has them answers; an aborted response's client is gone for the handler. */
  req = new_req(&sink_full, &r);
  CHECK(mg_req_write_queue(req) == 1000);
  CHECK(mg_req_socket_fd(req) == 7);
  CHECK(mg_req_local(req, addr, sizeof addr, &port) == 0);
  CHECK_STR(addr, "192.0.2.1");
  CHECK(port == 8080);
  mg_req_flush(req); /* no flush: nothing happens */
  CHECK_STR(r.events, "");
  /* A subrequest's local address is its parent's connection's. */
  rec_t rc;
  memset(&rc, 0, sizeof rc);
  mg_req_t *child = mg_req_new_child(req, &sink, &rc);
  port = 0;
  CHECK(mg_req_local(child, addr, sizeof addr, &port) == 0);
  CHECK_STR(addr, "192.0.2.1");
  CHECK(port == 8080);
  CHECK(mg_req_socket_fd(child) == -1);
  CHECK_STR(child->remote, "203.0.113.9");
  mg_req_release(child);
  mg_req_abort(req, NULL);
  CHECK(mg_req_peer_gone(req) == 1);
  CHECK_STR(r.events, "A");
  done(req);

  /* The target, normalised into path and query (nginx's $uri and $args). */
  req = new_req(&sink, &r);
  CHECK(mg_req_set_target(req, "/a/./b/../c?x=1") == 0);
  CHECK(req->path_len == 4 && strncmp(req->path, "/a/c", 4) == 0);
  CHECK_STR(req->query, "x=1");
  CHECK(mg_req_set_target(req, "/p%41th") == 0);
  CHECK(req->path_len == 5 && strncmp(req->path, "/pAth", 5) == 0 && req->query == NULL);
  CHECK(mg_req_set_target(req, "/q?") == 0);
  CHECK_STR(req->query, "");
  CHECK_STR(r.events, ""); /* nothing answered */
  done(req);
  const char *bad_targets[] = {"relative", "/../etc/passwd", "/a%zz", "/a%00b", "*"};
  for (int i = 0; i < 5; i++) {
    req = new_req(&sink, &r);
    CHECK(mg_req_set_target(req, bad_targets[i]) == -1);
    CHECK_STR(r.events, "HBE");
    CHECK(r.head_status == 400);
    CHECK_STR(r.body, "400 Bad Request\n");
    done(req);
  }
  line = log_take();
  CHECK(strstr(line, "bad path") && strstr(line, "bad request target"));
  /* An encoded slash is 404 unless allow_encoded_slashes. */
  req = new_req(&sink, &r);
  CHECK(mg_req_set_target(req, "/a%2Fb") == -1);
  CHECK(r.head_status == 404);
  CHECK(strstr(log_take(), "encoded slash in path (allow_encoded_slashes is off)"));
  done(req);
  cfg.set.allow_encoded_slashes = 1;
  req = new_req(&sink, &r);
  CHECK(mg_req_set_target(req, "/a%2fb") == 0);
  CHECK(req->path_len == 6 && strncmp(req->path, "/a%2Fb", 6) == 0);
  CHECK_STR(r.events, "");
  done(req);
  cfg.set.allow_encoded_slashes = 0;

  /* The host: lower case, no port; what is not a host is refused and left unset. */
  req = new_req(&sink, &r);
  CHECK(mg_req_set_host(req, "Example.COM:8080") == 0);
  CHECK_STR(req->host, "example.com");
  CHECK(mg_req_set_host(req, "[::1]:443") == 0);
  CHECK_STR(req->host, "[::1]");
  CHECK(mg_req_set_host(req, "WWW.example.org") == 0);
  CHECK_STR(req->host, "www.example.org");
  req->host = NULL;
  CHECK(mg_req_set_host(req, "a@b") == -1);
  CHECK(mg_req_set_host(req, "a b") == -1);
  CHECK(mg_req_set_host(req, "x:80x") == -1);
  CHECK(req->host == NULL);
  CHECK_STR(r.events, ""); /* the caller answers 400, not this */
  done(req);

  /* Hook counts: the global hooks (client requests only), then the route's. */
  int global_refs[] = {11, 12}, route_refs[] = {21};
  mg_route_t route = {.match = "/", .match_len = 1};
  route.hooks[MG_PHASE_REWRITE] = (mg_hooks_t){route_refs, 1};
  cfg.hooks[MG_PHASE_REWRITE] = (mg_hooks_t){global_refs, 2};
  req = new_req(&sink, &r);
  CHECK(mg_req_hook_count(req, MG_PHASE_REWRITE) == 2); /* before routing: the global ones */
  CHECK(mg_req_hook_count(req, MG_PHASE_ACCESS) == 0);
  req->route = &route;
  CHECK(mg_req_hook_count(req, MG_PHASE_REWRITE) == 3);
  CHECK(mg_req_hook_at(req, MG_PHASE_REWRITE, 0) == 11);
  CHECK(mg_req_hook_at(req, MG_PHASE_REWRITE, 1) == 12);
  CHECK(mg_req_hook_at(req, MG_PHASE_REWRITE, 2) == 21);
  child = mg_req_new_child(req, &sink, &rc);
  child->route = &route;
  CHECK(mg_req_hook_count(child, MG_PHASE_REWRITE) == 1);
  CHECK(mg_req_hook_at(child, MG_PHASE_REWRITE, 0) == 21);
  mg_req_release(child);
  done(req);
  cfg.hooks[MG_PHASE_REWRITE] = (mg_hooks_t){NULL, 0};

  /* ---- with a hooks table ---- */
  mg_hooks = &fake_hooks;
  int one_ref[] = {1};

  /* No hooks configured: the table is not called. */
  req = new_req(&sink, &r);
  mg_req_respond(req, 200, NULL, "x", 1);
  done(req);
  CHECK(calls.header_filter == 0 && calls.body_filter == 0 && calls.log == 0);

  /* header_filter runs once, before the head is framed: what it sets is in the head. */
  cfg.hooks[MG_PHASE_HEADER_FILTER] = (mg_hooks_t){one_ref, 1};
  req = new_req(&sink, &r);
  mg_req_respond(req, 200, "text/plain", "hi", 2);
  mg_req_send_head(req);
  CHECK(calls.header_filter == 1 && calls.header_filter_heads == 0);
  CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 2\nX-Filtered: 1\n");
  CHECK_STR(r.events, "HBE");
  done(req);
  /* A header_filter that fails: a 500 page, without the handler's fields or body. */
  calls.header_filter_fail = 1;
  req = new_req(&sink, &r);
  mg_req_respond(req, 200, "text/html", "<p>secret</p>", 13);
  CHECK_STR(r.events, "HBE");
  CHECK(r.head_status == 500);
  CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 26\n");
  CHECK_STR(r.body, "500 Internal Server Error\n");
  done(req);
  calls.header_filter_fail = 0;
  cfg.hooks[MG_PHASE_HEADER_FILTER] = (mg_hooks_t){NULL, 0};

  /* body_filter: the length may change, so the Content-Length goes; each piece and the end
   * pass through the filter; the socket is not offered for sendfile. */
  cfg.hooks[MG_PHASE_BODY_FILTER] = (mg_hooks_t){one_ref, 1};
  calls.body_filter = 0;
  req = new_req(&sink_full, &r);
  set_field(req, "Content-Length", "8");
  mg_req_send_head(req);
  CHECK(r.head_length == -1);
  CHECK(strstr(r.head_fields, "Content-Length") == NULL);
  CHECK(mg_req_socket_fd(req) == -1);
  mg_req_send_body(req, NULL, "hell", 4);
  mg_req_send_body(req, NULL, "o wo", 4);
  mg_req_send_end(req);
  CHECK_STR(r.body, "HELLO WO!");
  CHECK_STR(r.events, "HBBBE");
  CHECK(calls.body_filter == 3);
  done(req);
  /* A response without a body does not go through body_filter. */
  calls.body_filter = 0;
  req = new_req(&sink, &r);
  mg_req_respond(req, 204, NULL, "", 0);
  done(req);
  req = new_req(&sink, &r);
  req->is_head = 1;
  mg_req_respond(req, 200, NULL, "abc", 3);
  CHECK(calls.body_filter == 0);
  CHECK(r.head_length == 3);
  done(req);

  /* A body_filter that fails before the first byte: the held head is retracted, the handler
   * stopped, and the client gets a clean 500. */
  calls.body_filter = 0, calls.body_filter_fail_at = 1, cancelled = 0;
  req = new_req(&sink, &r);
  req->keepalive = 1, req->msg_done = 1;
  req->handler_cancel = on_cancel;
  set_field(req, "Content-Type", "text/html");
  mg_req_send_head(req);
  mg_req_send_body(req, NULL, "<p>", 3);
  CHECK_STR(r.events, "HRHBE");
  CHECK(r.heads == 2 && r.head_status == 500 && req->status == 500);
  CHECK_STR(r.head_fields, "Content-Type: text/plain\nContent-Length: 26\n");
  CHECK(r.head_length == 26);
  CHECK_STR(r.body, "500 Internal Server Error\n");
  CHECK(cancelled == 1 && !req->keepalive && !req->aborted);
  CHECK(calls.body_filter == 1); /* the 500 page is not filtered again */
  done(req);
  /* The same when the sink cannot retract (the head is on the wire): the response is cut. */
  calls.body_filter = 0;
  req = new_req(&sink, &r);
  r.can_retract = 0;
  mg_req_send_body(req, NULL, "<p>", 3);
  CHECK_STR(r.events, "HRA");
  CHECK(req->aborted && r.head_status == 200);
  CHECK(strstr(log_take(), "response aborted: body_filter hook failed"));
  done(req);
  /* And when bytes have gone already: no retract, the response is cut. */
  calls.body_filter = 0, calls.body_filter_fail_at = 2;
  req = new_req(&sink, &r);
  mg_req_send_body(req, NULL, "one", 3);
  mg_req_send_body(req, NULL, "two", 3);
  CHECK_STR(r.events, "HBA");
  CHECK_STR(r.body, "ONE");
  CHECK(req->aborted);
  /* The handler's own end after the cut: nothing more reaches the sink (no eof filter call,
   * no end after the abort). */
  mg_req_send_end(req);
  CHECK_STR(r.events, "HBA");
  CHECK(!req->resp_ended);
  done(req);
  /* A failure on the last call (eof) cuts the response too, rather than end it. */
  calls.body_filter = 0, calls.body_filter_fail_at = 2;
  req = new_req(&sink, &r);
  mg_req_respond(req, 200, NULL, "abc", 3);
  CHECK_STR(r.events, "HBA");
  CHECK(!req->resp_ended);
  done(req);
  calls.body_filter_fail_at = 0;
  cfg.hooks[MG_PHASE_BODY_FILTER] = (mg_hooks_t){NULL, 0};

  /* mg_req_finish, once: abandons a wait, stops the handler, runs the log hooks. */
  cfg.hooks[MG_PHASE_LOG] = (mg_hooks_t){one_ref, 1};
  cancelled = 0;
  uint64_t finished = server.nfinished;
  req = new_req(&sink, &r);
  req->thread = &r; /* a hook waits */
  req->handler_cancel = on_cancel;
  mg_req_finish(req);
  mg_req_finish(req);
  CHECK(calls.abandon == 1 && req->thread == NULL);
  CHECK(cancelled == 1 && calls.log == 1);
  CHECK(server.nfinished == finished + 1);
  mg_req_free(req);
  cfg.hooks[MG_PHASE_LOG] = (mg_hooks_t){NULL, 0};
  mg_hooks = NULL;

  /* Request ids are unique per worker. */
  req = new_req(&sink, &r);
  mg_req_t *other = new_req(&sink, &rc);
  CHECK(strcmp(req->id, other->id) != 0);
  done(other);
  done(req);

  mg_log_close();
  log_capture_end();
  CHECK_DONE();
}
