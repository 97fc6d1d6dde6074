/* HTTP_* naming and the SCRIPT_NAME / PATH_INFO split, with the round-trip invariant. */
#include "cgi_env.h"
#include "check.h"
#include "path.h"

static void split(const char *path, const char *prefix, int pathinfo, const char **s, const char **p, mg_pool_t *pool) {
  mg_cgi_split_path(pool, path, strlen(path), prefix, strlen(prefix), pathinfo, s, p);
}

int main(void) {
  char out[64];
  CHECK(mg_cgi_header_name("X-Forwarded-For", out) == 0 && strcmp(out, "HTTP_X_FORWARDED_FOR") == 0);
  CHECK(mg_cgi_header_name("x-lower", out) == 0 && strcmp(out, "HTTP_X_LOWER") == 0);
  CHECK(mg_cgi_header_name("X_Forwarded_For", out) == -1);
  CHECK(mg_cgi_header_name("Proxy", out) == -1);
  CHECK(mg_cgi_header_name("proxy", out) == -1);
  CHECK(mg_cgi_header_name("Content-Length", out) == -1);
  CHECK(mg_cgi_header_name("Content-Type", out) == -1);
  CHECK(mg_cgi_header_name("X.Dot", out) == -1);

  mg_pool_t pool;
  mg_pool_init(&pool);
  const char *s, *p;
  split("/pi/a%20b/c", "/pi/", 0, &s, &p, &pool);
  CHECK_STR(s, "/pi/a b/c");
  CHECK(p == NULL);
  split("/pi/a%20b/c", "/pi/", 1, &s, &p, &pool);
  CHECK_STR(s, "/pi");
  CHECK_STR(p, "/a b/c");
  split("/x/y", "/", 1, &s, &p, &pool);
  CHECK_STR(s, "");
  CHECK_STR(p, "/x/y");
  split("/app", "/app", 1, &s, &p, &pool);
  CHECK_STR(s, "/app");
  CHECK_STR(p, "");
  /* Invariant: encode(SCRIPT_NAME + PATH_INFO) gives back the normalized path. */
  const char *paths[] = {"/pi/a%20b/c", "/pi/caf%C3%A9/x+y", "/pi/%25/%3F", "/pi/"};
  for (int i = 0; i < 4; i++) {
    split(paths[i], "/pi/", 1, &s, &p, &pool);
    char joined[256], enc[800];
    snprintf(joined, sizeof joined, "%s%s", s, p);
    mg_path_encode(joined, strlen(joined), enc);
    CHECK_STR(enc, paths[i]);
  }
  mg_pool_free(&pool);
  CHECK_DONE();
}
