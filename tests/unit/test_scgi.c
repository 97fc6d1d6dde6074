/* The SCGI codec and the CGI response parser, including hostile inputs. */
#include <stdlib.h>

#include "check.h"
#include "scgi.h"

int main(void) {
  mg_vars_t v;
  mg_vars_init(&v);
  mg_vars_add(&v, "CONTENT_LENGTH", 14, "27", 2);
  mg_vars_add(&v, "SCGI", 4, "1", 1);
  mg_vars_add(&v, "REQUEST_METHOD", 14, "POST", 4);
  mg_vars_add(&v, "REQUEST_URI", 11, "/deepthought", 12);
  mg_buf_t b;
  mg_buf_init(&b);
  mg_scgi_encode(&v, &b);
  /* The example of the SCGI specification, byte for byte. */
  static const char spec[] = "70:CONTENT_LENGTH\0" "27\0SCGI\0" "1\0REQUEST_METHOD\0POST\0REQUEST_URI\0/deepthought\0,";
  CHECK(b.len == sizeof spec - 1 && memcmp(b.data, spec, b.len) == 0);
  mg_vars_t d;
  mg_vars_init(&d);
  CHECK(mg_scgi_decode(b.data, b.len, &d) == (long)b.len && d.n == 4);
  CHECK(mg_scgi_decode(b.data, b.len - 1, &d) == 0);
  CHECK(mg_scgi_decode("x:", 2, &d) == -1);
  mg_vars_free(&d);

  mg_vars_set(&v, "REQUEST_METHOD", 14, "GET", 3);
  CHECK(v.n == 4 && strncmp(mg_vars_get(&v, "REQUEST_METHOD")->value, "GET", 3) == 0);
  mg_vars_set(&v, "SCGI", 4, NULL, 0);
  CHECK(v.n == 3 && mg_vars_get(&v, "SCGI") == NULL);
  mg_vars_free(&v);
  mg_buf_free(&b);

  mg_cgi_head_t *h = malloc(sizeof *h);
  const char ok[] = "Status: 404 Gone Fishing\r\nContent-Type: text/plain\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
  CHECK(mg_cgi_parse(ok, sizeof ok - 1, h) == MG_CGI_DONE);
  CHECK(h->status == 404 && h->content_length == 5 && h->nheaders == 2);
  CHECK(h->head_len == sizeof ok - 1 - 5);
  CHECK(mg_cgi_parse(ok, 20, h) == MG_CGI_MORE);
  const char *bad[] = {
      "no colon here\r\n\r\n", "Bad Name: x\r\n\r\n", "X: a\rb\r\n\r\n", " folded: x\r\n\r\n",
      "Status: abc\r\n\r\n", "Status: 99\r\n\r\n", "Content-Length: -1\r\n\r\n",
      "Content-Length: 1\r\nContent-Length: 2\r\n\r\n", ": empty\r\n\r\n",
      /* A 1xx is not a final answer; control bytes other than HTAB are not field content. */
      "Status: 100 Continue\r\n\r\n", "Status: 101\r\n\r\n", "Status: 103 Early Hints\r\n\r\n",
      "X: a\x01b\r\n\r\n", "X: a\x1b[31m\r\n\r\n", "X: a\x7f\r\n\r\n", "Status: 200 O\x0cK\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK(mg_cgi_parse(bad[i], strlen(bad[i]), h) == MG_CGI_ERROR);
  const char nul[] = "X: a\0b\r\n\r\n";
  CHECK(mg_cgi_parse(nul, sizeof nul - 1, h) == MG_CGI_ERROR);
  /* HTAB and obs-text are field content. */
  const char tab[] = "X: a\tb\xe9\r\n\r\n";
  CHECK(mg_cgi_parse(tab, sizeof tab - 1, h) == MG_CGI_DONE && h->nheaders == 1 && h->headers[0].value_len == 4);
  /* What Connection names is for one hop: dropped, wherever it stands; Content-Length with it. */
  const char conn[] = "X-A: 1\r\nConnection: close, x-a ,Content-Length\r\nX-B: 2\r\nContent-Length: 3\r\n"
                      "Keep-Alive: 5\r\nX-C: 3\r\nConnection: X-C\r\n\r\nabc";
  CHECK(mg_cgi_parse(conn, sizeof conn - 1, h) == MG_CGI_DONE);
  CHECK(h->nheaders == 1 && strncmp(h->headers[0].name, "X-B", 3) == 0 && h->content_length == -1);
  const char dflt[] = "Content-Type: x\n\n";
  CHECK(mg_cgi_parse(dflt, sizeof dflt - 1, h) == MG_CGI_DONE && h->status == 200 && h->content_length == -1);
  /* Random bytes: the parser never reads past what it is given (ASan checks this). */
  srand(2);
  for (int i = 0; i < 20000; i++) {
    int n = rand() % 200;
    char *in = malloc((size_t)n + 1);
    const char alphabet[] = "ab:\r\n \t\0Status5";
    for (int k = 0; k < n; k++) in[k] = alphabet[rand() % (sizeof alphabet - 1)];
    mg_cgi_parse(in, (size_t)n, h);
    free(in);
  }
  free(h);
  CHECK_DONE();
}
