/* Path normalization and request-target parsing, including hostile inputs. */
#include <stdlib.h>

#include "check.h"
#include "path.h"

static const char *norm(const char *in, int allow) {
  static char out[4096];
  int n = mg_path_normalize(in, strlen(in), out, allow);
  if (n == MG_PATH_BAD) return "BAD";
  if (n == MG_PATH_ENCODED_SLASH) return "SLASH";
  return out;
}

int main(void) {
  CHECK_STR(norm("/", 0), "/");
  CHECK_STR(norm("/a/b/c", 0), "/a/b/c");
  CHECK_STR(norm("/a//b///c/", 0), "/a/b/c/");
  CHECK_STR(norm("/a/./b/../c", 0), "/a/c");
  CHECK_STR(norm("/a/b/..", 0), "/a/");
  CHECK_STR(norm("/a/b/.", 0), "/a/b/");
  CHECK_STR(norm("/..", 0), "BAD");
  CHECK_STR(norm("/a/../..", 0), "BAD");
  CHECK_STR(norm("/%2e%2e/etc", 0), "BAD");
  CHECK_STR(norm("/a/%2E%2e/b", 0), "/b");
  CHECK_STR(norm("/%61%62%7e", 0), "/ab~");
  CHECK_STR(norm("/a%20b", 0), "/a%20b");
  CHECK_STR(norm("/a%c3%a9", 0), "/a%C3%A9");
  CHECK_STR(norm("/a%2Fb", 0), "SLASH");
  CHECK_STR(norm("/a%2fb", 1), "/a%2Fb");
  CHECK_STR(norm("/a%00b", 0), "BAD");
  CHECK_STR(norm("/a%", 0), "BAD");
  CHECK_STR(norm("/a%4", 0), "BAD");
  CHECK_STR(norm("/a%zz", 0), "BAD");
  CHECK_STR(norm("relative", 0), "BAD");
  CHECK_STR(norm("/...", 0), "/...");
  CHECK_STR(norm("/a.b/..c", 0), "/a.b/..c");

  char dec[64];
  mg_path_decode("/a%20b/%C3%A9+", 14, dec);
  CHECK_STR(dec, "/a b/\xc3\xa9+");
  char enc[64];
  mg_path_encode("/a b/\xc3\xa9+", strlen("/a b/\xc3\xa9+"), enc);
  CHECK_STR(enc, "/a%20b/%C3%A9+");

  const char *p, *q;
  size_t pl, ql;
  CHECK(mg_target_split("/x?y=1", 6, &p, &pl, &q, &ql) == 0 && pl == 2 && ql == 3);
  CHECK(mg_target_split("http://evil/x?q", 15, &p, &pl, &q, &ql) == 0 && pl == 2 && strncmp(p, "/x", 2) == 0);
  CHECK(mg_target_split("http://evil", 11, &p, &pl, &q, &ql) == 0 && pl == 1 && q == NULL);
  CHECK(mg_target_split("*", 1, &p, &pl, &q, &ql) == MG_PATH_BAD);
  CHECK(mg_target_split("evil.com:443", 12, &p, &pl, &q, &ql) == MG_PATH_BAD);

  /* Host values (RFC 9112 3.2): what another hop would read as another host is refused. */
  const char *hosts_ok[] = {"example.com", "example.com:8080", "EXAMPLE.com:", "[::1]", "[::1]:443", "127.0.0.1",
                            "a-b_c~d.e", "x%41y", "!$&'()*+;=", ""};
  for (size_t i = 0; i < sizeof hosts_ok / sizeof *hosts_ok; i++) CHECK(mg_host_valid(hosts_ok[i], strlen(hosts_ok[i])));
  const char *hosts_bad[] = {"a b", "a,b", "x@evil", "evil/../x", "a, b", "x:80x", "x:-1", "[::1", "[]", "[::1]x",
                             "ex%zzample", "x%4", "a\tb", "h?q", "h#f", "a\\b", "[g::1]", "x:1:2"};
  for (size_t i = 0; i < sizeof hosts_bad / sizeof *hosts_bad; i++) CHECK(!mg_host_valid(hosts_bad[i], strlen(hosts_bad[i])));

  /* Random bytes never crash and never yield a path that climbs or holds "//". */
  srand(1);
  for (int i = 0; i < 20000; i++) {
    char in[64], out[80];
    int n = 1 + rand() % 40;
    in[0] = '/';
    const char alphabet[] = "/.%2eEfF0a";
    for (int k = 1; k < n; k++) in[k] = alphabet[rand() % (sizeof alphabet - 1)];
    int r = mg_path_normalize(in, (size_t)n, out, 0);
    if (r >= 0) CHECK(out[0] == '/' && strstr(out, "//") == NULL && strstr(out, "/../") == NULL);
  }
  CHECK_DONE();
}
