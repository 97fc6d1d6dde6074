/* http1_parse: reading an HTTP/1.1 request, over llhttp, and the checks of its head.
 *
 * HTTP/1.1 (http1.c) feeds the bytes its connection read to mg_h1_execute, which runs llhttp
 * on as many of them as may go in one call and pauses at two points: the end of a request head
 * (event MG_H1_HEAD, so the request is routed before any body byte is delivered) and the end
 * of a message (MG_H1_MESSAGE, so a pipelined request waits). The request's strings go into
 * its pool; the head's fields into req->headers; body bytes to req->on_body. A request the
 * parser refuses ends the execution with an error and a status (mg_h1_error): the reason is in
 * words, for the error log, never llhttp's error name. */
#ifndef MG_HTTP1_PARSE_H
#define MG_HTTP1_PARSE_H

#include <llhttp.h>

#include "request.h"

enum { MG_H1_NONE, MG_H1_HEAD, MG_H1_MESSAGE };

typedef struct mg_h1_parser_s mg_h1_parser_t;

struct mg_h1_parser_s {
  llhttp_t llhttp;
  mg_req_t *req; /* the request being read; NULL between requests */
  const mg_settings_t *set;
  /* Set by the connection: a message begins (it makes the request, from then on in req);
   * body bytes arrived (a body timeout starts again). */
  mg_req_t *(*begin)(mg_h1_parser_t *hp);
  void (*body_seen)(mg_h1_parser_t *hp);
  uint8_t event;               /* MG_H1_*: where the last execution paused */
  uint16_t error_status;       /* set by a callback that refuses the request */
  const char *error_reason;    /* and why (llhttp keeps its own reason for *_complete callbacks) */
  uint8_t in_length_value : 1; /* inside a request's Content-Length value */
  /* The last byte other than SP/HT that the parser consumed before the buffer it is executing
   * now (exec_start): how an obs-fold is told from a value split across reads. */
  char last_nonws;
  char tail[8]; /* the last 8 bytes consumed before exec_start, in order: [7] is the last */
  const char *exec_start;
};

void mg_h1_init(mg_h1_parser_t *hp, const mg_settings_t *set);
/* Parses what it may of data[0..avail) (*ran bytes): HPE_OK, HPE_PAUSED at an event, or an
 * error. A tab inside a Content-Length's trailing white space may be rewritten as a space. */
llhttp_errno_t mg_h1_execute(mg_h1_parser_t *hp, char *data, size_t avail, size_t *ran);
/* Why the parser refused the request, and the status to answer (400 unless a limit said). */
const char *mg_h1_error(const mg_h1_parser_t *hp, int *status);
/* The head is complete: what llhttp leaves to a server (the version, CONNECT, Transfer-Encoding
 * in HTTP/1.0, Host, Expect, the target) checked and set on req. 0, or -1 after answering. */
int mg_h1_check_head(mg_h1_parser_t *hp, mg_req_t *req);

#endif
