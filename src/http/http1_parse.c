/* http1_parse: see http1_parse.h.
 *
 * llhttp does the framing; the callbacks here add what a gateway must refuse that llhttp lets
 * through (also in strict mode): a request line with more than one space, an obs-fold, a
 * control character in a value, a Transfer-Encoding whose last coding is not chunked, limits
 * on the line, the fields and their count. Trailers are counted and dropped. The parser
 * remembers the last bytes it consumed across reads (tail, last_nonws), so a rule that looks
 * back holds also when the client's bytes arrive split at any point. */
#include "http1_parse.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int refuse(mg_h1_parser_t *hp, int status, const char *why) {
  hp->error_status = (uint16_t)status;
  hp->error_reason = why;
  llhttp_set_error_reason(&hp->llhttp, why);
  return HPE_USER;
}

static int on_message_begin(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  hp->req = hp->begin(hp);
  return 0;
}

static int scratch_add(mg_h1_parser_t *hp, int kind, const char *at, size_t len, uint64_t limit, int status,
                       const char *why) {
  mg_req_t *req = hp->req;
  if (req->scratch_kind != kind) req->scratch.len = 0, req->scratch_kind = kind;
  if (req->scratch.len + len > limit) return refuse(hp, status, why);
  mg_buf_append(&req->scratch, at, len);
  return 0;
}

/* The byte k (1 to 8) places before `at`, also when it was consumed in an earlier read. */
static char byte_before(const mg_h1_parser_t *hp, const char *at, int k) {
  ptrdiff_t in = at - hp->exec_start;
  return in >= k ? at[-k] : hp->tail[sizeof hp->tail - (size_t)(k - in)];
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  mg_h1_parser_t *hp = p->data;
  /* RFC 9112 3: method SP request-target, one space. llhttp (also in strict mode) skips any
   * number of them, and a hop that splits the line differently reads another target. */
  if (hp->req->scratch_kind != 1 && byte_before(hp, at, 2) == ' ')
    return refuse(hp, 400, "more than one space in the request line");
  return scratch_add(hp, 1, at, len, hp->set->max_request_line, 414, "request line too long");
}

/* The version's digits follow "HTTP/" (or "RTSP/", "ICE/"), which follows one space. */
static int on_version(llhttp_t *p, const char *at, size_t len) {
  mg_h1_parser_t *hp = p->data;
  (void)len;
  if (hp->req->scratch_kind == 4) return 0;
  hp->req->scratch_kind = 4;
  int k = 2;
  while (k < 7 && byte_before(hp, at, k) != ' ') k++;
  if (byte_before(hp, at, k) == ' ' && byte_before(hp, at, k + 1) == ' ')
    return refuse(hp, 400, "more than one space in the request line");
  return 0;
}

static int on_url_complete(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  mg_req_t *req = hp->req;
  req->target = mg_pool_strndup(&req->pool, req->scratch.data ? req->scratch.data : "", req->scratch.len);
  req->scratch_kind = 0;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  mg_h1_parser_t *hp = p->data;
  return scratch_add(hp, 2, at, len, hp->set->max_header_size, 431, "header field too large");
}

static int on_header_field_complete(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  mg_req_t *req = hp->req;
  if ((uint64_t)req->headers.n + req->ntrailers >= hp->set->max_headers)
    return refuse(hp, 431, req->head_done ? "too many header and trailer fields" : "too many header fields");
  /* A trailer field is counted against the limits, then dropped (on_header_value_complete). */
  if (req->head_done) req->ntrailers++;
  else hp->in_length_value = req->scratch.len == 14 && strncasecmp(req->scratch.data, "Content-Length", 14) == 0;
  req->pending_field = mg_pool_strndup(&req->pool, req->scratch.data ? req->scratch.data : "", req->scratch.len);
  req->scratch_kind = 0;
  return 0;
}

/* True when the value piece at `at` follows a line break: an obs-fold continuation. llhttp
 * joins those into the value; whatever precedes a value piece is otherwise the colon, optional
 * white space, or (for a value split across reads) the value's own previous byte. */
static int follows_line_break(const mg_h1_parser_t *hp, const char *at) {
  const char *q = at;
  while (q > hp->exec_start && (q[-1] == ' ' || q[-1] == '\t')) q--;
  return (q > hp->exec_start ? q[-1] : hp->last_nonws) == '\n';
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  mg_h1_parser_t *hp = p->data;
  mg_req_t *req = hp->req;
  /* An empty value is reported as a zero-length piece after its line break: not a fold. */
  if (len > 0 && follows_line_break(hp, at)) {
    /* A fold, read differently by different hops, is a smuggling vector (on
     * Transfer-Encoding above all): refused as nginx and Apache's strict mode do. */
    char why[128];
    snprintf(why, sizeof why, "obsolete line folding in header \"%.64s\"", req->pending_field ? req->pending_field : "-");
    return refuse(hp, 400, mg_pool_strdup(&req->pool, why));
  }
  return scratch_add(hp, 3, at, len, hp->set->max_header_size, 431, "header field too large");
}

static int on_header_value_complete(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  mg_req_t *req = hp->req;
  hp->in_length_value = 0;
  const char *v = req->scratch_kind == 3 ? req->scratch.data : "";
  size_t vl = req->scratch_kind == 3 ? req->scratch.len : 0;
  /* llhttp passes an obs-fold continuation through inside the value; RFC 9112 lets a server
   * refuse it, and a gateway should: the next hop may read the fold differently. */
  if (!mg_http_value_is_safe(v, vl)) return refuse(hp, 400, "obsolete line folding or control character in a header value");
  if (req->head_done) {
    /* Trailer fields are never merged into the request's fields (RFC 9110 6.5.1): the hooks
     * have already decided on the head, and nothing sent after it may change what the backend
     * receives. nginx drops them too. */
    req->scratch_kind = 0;
    return 0;
  }
  while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
  mg_fields_push(&req->pool, &req->headers, req->pending_field, mg_pool_strndup(&req->pool, v, vl));
  req->scratch_kind = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  /* llhttp raises a Transfer-Encoding whose last coding is not chunked only after this
   * callback, when the request would already have been routed and forwarded: refused here,
   * before anything leaves for a backend (RFC 9112 6.3: the length cannot be determined). */
  if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED) && !hp->req->head_done)
    return refuse(hp, 400, "Transfer-Encoding whose last coding is not chunked");
  /* The head is frozen from here on: fields that follow the body (trailers) are dropped. The
   * scratch buffer is emptied (it stays with the request struct for the next one, unless a
   * large head made it grow). */
  if (hp->req->scratch.cap > MG_SCRATCH_KEEP && !(p->flags & F_CHUNKED)) mg_buf_free(&hp->req->scratch);
  hp->req->scratch.len = 0;
  hp->req->scratch_kind = 0;
  hp->req->head_done = 1;
  hp->event = MG_H1_HEAD;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  mg_h1_parser_t *hp = p->data;
  mg_req_t *req = hp->req;
  req->body_received += len;
  if (req->chunked && req->route && req->route->client_max_body_size && !req->redirects &&
      req->body_received > req->route->client_max_body_size && !req->head_sent)
    return refuse(hp, 413, "chunked request body exceeds client_max_body_size");
  if (hp->body_seen) hp->body_seen(hp);
  if (req->on_body && !req->finished) req->on_body(req, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  mg_h1_parser_t *hp = p->data;
  hp->event = MG_H1_MESSAGE;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Remembers the last byte other than SP/HT that the parser consumed (see follows_line_break). */
static void note_last_byte(mg_h1_parser_t *hp, const char *start, const char *end) {
  if (!end || end < start) return;
  size_t m = (size_t)(end - start);
  if (m >= sizeof hp->tail) {
    memcpy(hp->tail, end - sizeof hp->tail, sizeof hp->tail);
  } else if (m) {
    memmove(hp->tail, hp->tail + m, sizeof hp->tail - m);
    memcpy(hp->tail + sizeof hp->tail - m, end - m, m);
  }
  while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
  if (end > start) hp->last_nonws = end[-1];
}

/* How many of the n bytes at p the parser is given in one go. RFC 9110 5.5 lets a field value
 * end in spaces and tabs (OWS), but llhttp refuses a tab after a Content-Length's digits; so
 * within a request head the parser stops before each tab, and a tab that turns out to be part
 * of a Content-Length's trailing white space is made a space, which means the same. The tab's
 * line must end in this read (else it is refused as before). */
static size_t head_run(mg_h1_parser_t *hp, char *p, size_t n) {
  if (hp->req && hp->req->head_done) return n;
  if (n && p[0] == '\t' && hp->in_length_value) {
    size_t k = 0;
    while (k < n && (p[k] == ' ' || p[k] == '\t')) k++;
    if (k < n && p[k] == '\r')
      for (size_t j = 0; j < k; j++) p[j] = ' ';
  }
  const char *tab = n > 1 ? memchr(p + 1, '\t', n - 1) : NULL;
  return tab ? (size_t)(tab - p) : n;
}

void mg_h1_init(mg_h1_parser_t *hp, const mg_settings_t *set) {
  llhttp_init(&hp->llhttp, HTTP_REQUEST, &parser_settings);
  hp->llhttp.data = hp;
  hp->set = set;
}

llhttp_errno_t mg_h1_execute(mg_h1_parser_t *hp, char *data, size_t avail, size_t *ran) {
  size_t n = head_run(hp, data, avail);
  hp->exec_start = data;
  llhttp_errno_t err = llhttp_execute(&hp->llhttp, data, n);
  note_last_byte(hp, data, err == HPE_OK ? data + n : llhttp_get_error_pos(&hp->llhttp));
  *ran = n;
  return err;
}

const char *mg_h1_error(const mg_h1_parser_t *hp, int *status) {
  *status = hp->error_status ? hp->error_status : 400;
  /* llhttp stops at the HTTP/2 preface ("PRI * HTTP/2.0"): this listener was not given it. */
  if (llhttp_get_errno(&hp->llhttp) == HPE_PAUSED_H2_UPGRADE) return "HTTP/2 is not enabled on this listener";
  return hp->error_reason ? hp->error_reason : llhttp_get_error_reason(&hp->llhttp);
}

int mg_h1_check_head(mg_h1_parser_t *hp, mg_req_t *req) {
  llhttp_t *p = &hp->llhttp;
  req->http_major = llhttp_get_http_major(p);
  req->http_minor = llhttp_get_http_minor(p);
  req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
  req->orig_method = (char *)req->method;
  req->is_head = llhttp_get_method(p) == HTTP_HEAD;
  req->keepalive = llhttp_should_keep_alive(p);
  if (p->flags & F_CHUNKED) req->chunked = 1;
  else if (p->flags & F_CONTENT_LENGTH) req->content_length = (int64_t)p->content_length;
  if (req->http_major != 1) {
    req->keepalive = 0;
    mg_req_error(req, 505, "unsupported HTTP version %d.%d", req->http_major, req->http_minor);
    return -1;
  }
  if (llhttp_get_method(p) == HTTP_CONNECT) {
    req->keepalive = 0;
    mg_req_error(req, 405, "CONNECT refused: moongate is not a forward proxy");
    return -1;
  }
  if (req->http_minor == 0 && mg_fields_get(&req->headers, "Transfer-Encoding")) {
    /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the body's
     * length cannot be trusted, so the connection closes after the answer. */
    req->keepalive = 0;
    mg_req_error(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
    return -1;
  }
  int nhost = mg_fields_count(&req->headers, "Host");
  if (nhost > 1 || (nhost == 0 && req->http_minor >= 1)) {
    req->keepalive = 0;
    mg_req_error(req, 400, nhost ? "several Host fields" : "HTTP/1.1 request without Host");
    return -1;
  }
  const char *host = mg_fields_get(&req->headers, "Host");
  if (host && mg_req_set_host(req, host) < 0) {
    /* RFC 9112 3.2: 400 for an invalid Host. Forwarded, it would reach the backend as
     * SERVER_NAME and HTTP_HOST, where "x@evil" or "a, b" builds links to another site. */
    req->keepalive = 0;
    mg_req_error(req, 400, "invalid Host \"%.64s\"", host);
    return -1;
  }
  const char *expect = mg_fields_get(&req->headers, "Expect");
  if (expect) {
    if (strcasecmp(expect, "100-continue") != 0) {
      req->keepalive = 0;
      mg_req_error(req, 417, "unsupported Expect: %s", expect);
      return -1;
    }
    if (req->http_minor >= 1) req->expect_continue = 1;
  }
  return mg_req_set_target(req, req->target);
}
