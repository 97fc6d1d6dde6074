/* proto/h2_fields: an HTTP/2 request's fields from its decoded header block (RFC 9113 8.2-8.3:
 * what is malformed, the limits at their exact edges, cookie crumbs, Host and :authority) and a
 * response's header block (:status first, names lowercased, connection-specific fields gone). */
#include <stdlib.h>

#include "check.h"
#include "h2_fields.h"

static const mg_h2f_limits_t lim = {16384, 8192, 100};

typedef struct {
  mg_pool_t pool;
  mg_fields_t f;
  mg_h2f_t h;
} blk_t;

static void blk_init(blk_t *b) {
  mg_pool_init(&b->pool);
  memset(&b->f, 0, sizeof b->f);
  memset(&b->h, 0, sizeof b->h);
}

static int add(blk_t *b, const char *n, const char *v) {
  return mg_h2f_add(&b->h, &b->pool, &b->f, &lim, n, strlen(n), v, strlen(v));
}

static void base(blk_t *b) {
  add(b, ":method", "GET");
  add(b, ":scheme", "https");
  add(b, ":authority", "Example.test:8443");
  add(b, ":path", "/a?b");
}

/* A block of base() plus one field: its result (add's, or finish's when add's was OK). */
static int one(const char *n, const char *v) {
  blk_t b;
  blk_init(&b);
  base(&b);
  int rc = add(&b, n, v);
  if (rc == MG_H2F_OK) rc = mg_h2f_finish(&b.h, &b.pool, &b.f);
  mg_pool_free(&b.pool);
  return rc;
}

int main(void) {
  /* A well-formed request: pseudo-headers kept apart, host from :authority. */
  blk_t b;
  blk_init(&b);
  base(&b);
  CHECK(add(&b, "accept", "*/*") == MG_H2F_OK);
  CHECK(add(&b, "cookie", "a=1") == MG_H2F_OK);
  CHECK(add(&b, "cookie", "b=2") == MG_H2F_OK);
  CHECK(add(&b, "te", "trailers") == MG_H2F_OK);
  CHECK(mg_h2f_finish(&b.h, &b.pool, &b.f) == MG_H2F_OK);
  CHECK_STR(b.h.method, "GET");
  CHECK_STR(b.h.path, "/a?b");
  CHECK_STR(mg_fields_get(&b.f, "host"), "Example.test:8443");
  CHECK_STR(mg_fields_get(&b.f, "cookie"), "a=1; b=2");
  CHECK(mg_fields_count(&b.f, "cookie") == 1);
  CHECK(mg_fields_get(&b.f, ":path") == NULL);
  mg_pool_free(&b.pool);

  /* Malformed, each alone. */
  CHECK(one("X-Upper", "1") == MG_H2F_MALFORMED);
  CHECK(one("connection", "close") == MG_H2F_MALFORMED);
  CHECK(one("keep-alive", "1") == MG_H2F_MALFORMED);
  CHECK(one("proxy-connection", "1") == MG_H2F_MALFORMED);
  CHECK(one("transfer-encoding", "chunked") == MG_H2F_MALFORMED);
  CHECK(one("upgrade", "h2c") == MG_H2F_MALFORMED);
  CHECK(one("te", "gzip") == MG_H2F_MALFORMED);
  CHECK(one("x", "a\x01" "b") == MG_H2F_MALFORMED);
  CHECK(one("x", "a\rb") == MG_H2F_MALFORMED);
  CHECK(one("x", " edge") == MG_H2F_MALFORMED);
  CHECK(one("x", "tab\tinside") == MG_H2F_OK);
  CHECK(one(":path", "/again") == MG_H2F_MALFORMED);
  CHECK(one(":protocol", "websocket") == MG_H2F_MALFORMED);
  CHECK(one("host", "other.test") == MG_H2F_MALFORMED);
  CHECK(one("host", "EXAMPLE.test:8443") == MG_H2F_OK);
  CHECK(one("a b", "1") == MG_H2F_MALFORMED);

  /* A pseudo-header after a regular field; missing ones; an empty or absolute :path. */
  blk_init(&b);
  add(&b, ":method", "GET");
  add(&b, "x", "1");
  CHECK(add(&b, ":path", "/") == MG_H2F_MALFORMED);
  mg_pool_free(&b.pool);
  const char *missing[][2] = {{":scheme", "http"}, {":path", ""}, {":path", "http://x/"}};
  for (int i = 0; i < 3; i++) {
    blk_init(&b);
    add(&b, ":method", "GET");
    add(&b, ":authority", "x");
    add(&b, missing[i][0], missing[i][1]);
    CHECK(mg_h2f_finish(&b.h, &b.pool, &b.f) == MG_H2F_MALFORMED);
    mg_pool_free(&b.pool);
  }
  blk_init(&b);
  add(&b, ":method", "OPTIONS");
  add(&b, ":scheme", "http");
  add(&b, ":path", "*");
  CHECK(mg_h2f_finish(&b.h, &b.pool, &b.f) == MG_H2F_OK);
  mg_pool_free(&b.pool);

  /* The limits at their edges: 100 fields pass, 101 do not; a field of max_field bytes passes. */
  blk_init(&b);
  base(&b);
  int rc = MG_H2F_OK;
  for (int i = 0; i < 100 && rc == MG_H2F_OK; i++) rc = add(&b, "x", "y");
  CHECK(rc == MG_H2F_OK);
  CHECK(add(&b, "x", "y") == MG_H2F_TOO_LARGE);
  CHECK(b.f.n == 100);
  mg_pool_free(&b.pool);
  char *v = malloc(8193);
  memset(v, 'v', 8192);
  v[8191] = 0; /* name "x" + 8191 = 8192 */
  CHECK(one("x", v) == MG_H2F_OK);
  v[8191] = 'v', v[8192] = 0;
  CHECK(one("x", v) == MG_H2F_TOO_LARGE);
  free(v);
  /* The list size counts name + value + 32 per field, pseudo-headers included. */
  blk_init(&b);
  base(&b);
  uint64_t used = b.h.list_size;
  CHECK(used == (7 + 3 + 32) + (7 + 5 + 32) + (10 + 17 + 32) + (5 + 4 + 32));
  char big[4096];
  rc = MG_H2F_OK;
  while (rc == MG_H2F_OK && b.h.list_size + 4000 + 1 + 32 <= lim.max_list) {
    memset(big, 'b', 4000);
    big[4000] = 0;
    rc = add(&b, "x", big);
  }
  CHECK(rc == MG_H2F_OK);
  size_t left = lim.max_list - b.h.list_size - 33;
  memset(big, 'c', left);
  big[left] = 0;
  CHECK(add(&b, "y", big) == MG_H2F_OK && b.h.list_size == lim.max_list);
  CHECK(add(&b, "z", "") == MG_H2F_TOO_LARGE);
  mg_pool_free(&b.pool);

  /* Random field lists against a model: malformed exactly when a name is not a lowercase
   * token or a value holds a control byte. */
  srand(7);
  for (int iter = 0; iter < 20000; iter++) {
    blk_init(&b);
    base(&b);
    int expect_bad = 0, got = MG_H2F_OK;
    int n = rand() % 6;
    for (int k = 0; k < n && got == MG_H2F_OK; k++) {
      char name[8], val[8];
      int nl = 1 + rand() % 6, vl = rand() % 6;
      const char nalpha[] = "abcxyz-_A:", valpha[] = {'a', 'b', 'c', ' ', '\t', 1, 127, '9', 'e', 0};
      for (int j = 0; j < nl; j++) name[j] = nalpha[rand() % 10];
      for (int j = 0; j < vl; j++) val[j] = valpha[rand() % 9];
      name[nl] = val[vl] = 0;
      int bad = 0;
      for (int j = 0; j < nl; j++) bad |= name[j] == 'A' || name[j] == ':';
      for (int j = 0; j < vl; j++) bad |= val[j] == '\x01' || val[j] == '\x7f';
      if (vl && (val[0] == ' ' || val[0] == '\t' || val[vl - 1] == ' ' || val[vl - 1] == '\t')) bad = 1;
      if (!strcmp(name, "te") || !strcmp(name, "upgrade")) bad = 1;
      got = add(&b, name, val);
      expect_bad |= bad;
      if (bad) break;
    }
    CHECK((got == MG_H2F_MALFORMED) == expect_bad);
    mg_pool_free(&b.pool);
  }

  /* The response: :status first, names lowercased, connection-specific fields dropped, server
   * and date added unless present. */
  mg_pool_t p;
  mg_pool_init(&p);
  mg_fields_t r = {0};
  mg_fields_add(&p, &r, "Content-Type", 12, "text/html", 9);
  mg_fields_add(&p, &r, "Connection", 10, "close", 5);
  mg_fields_add(&p, &r, "Transfer-Encoding", 17, "chunked", 7);
  mg_fields_add(&p, &r, "x-ok", 4, "1", 1);
  nghttp2_nv *nv;
  size_t k = mg_h2f_response(&p, 404, &r, "moongate/x", "Thu, 01 Jan 1970 00:00:00 GMT", &nv);
  CHECK(k == 5);
  CHECK(nv[0].namelen == 7 && !memcmp(nv[0].name, ":status", 7) && !memcmp(nv[0].value, "404", 3));
  CHECK(nv[1].namelen == 12 && !memcmp(nv[1].name, "content-type", 12));
  CHECK(nv[2].namelen == 4 && !memcmp(nv[2].name, "x-ok", 4));
  CHECK(!memcmp(nv[3].name, "server", 6) && !memcmp(nv[4].name, "date", 4));
  k = mg_h2f_response(&p, 299, &r, NULL, NULL, &nv);
  CHECK(k == 3 && !memcmp(nv[0].value, "299", 3));
  mg_pool_free(&p);
  CHECK_DONE();
}
