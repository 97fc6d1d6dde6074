/* Header field lists and the RFC 9110 rules of proto/fields.h: what a handler, the parser
 * and the Lua API see when they read, join and replace fields, and which bytes may stand in
 * a name or a value. */
#include "check.h"
#include "fields.h"

#define ADD(f, n, v) mg_fields_add(&pool, (f), (n), strlen(n), (v), strlen(v))

int main(void) {
  mg_pool_t pool;
  mg_pool_init(&pool);

  /* Lookup ignores case and finds the first of repeated fields. */
  mg_fields_t f = {0};
  CHECK(mg_fields_get(&f, "Host") == NULL);
  ADD(&f, "Host", "example.com");
  ADD(&f, "Accept", "text/html");
  ADD(&f, "accept", "text/plain");
  ADD(&f, "X-Empty", "");
  CHECK_STR(mg_fields_get(&f, "host"), "example.com");
  CHECK_STR(mg_fields_get(&f, "HOST"), "example.com");
  CHECK_STR(mg_fields_get(&f, "ACCEPT"), "text/html");
  CHECK_STR(mg_fields_get(&f, "x-empty"), "");
  CHECK(mg_fields_get(&f, "Accept-Language") == NULL);
  CHECK(mg_fields_count(&f, "Accept") == 2);
  CHECK(mg_fields_count(&f, "host") == 1);
  CHECK(mg_fields_count(&f, "Cookie") == 0);

  /* Repeats keep their order, and the names keep the case they were added with. */
  CHECK(f.n == 4);
  CHECK_STR(f.v[1].name, "Accept");
  CHECK_STR(f.v[2].name, "accept");
  CHECK_STR(f.v[2].value, "text/plain");

  /* add copies its strings: the caller's buffer may change afterwards. */
  char name[] = "X-Copy", value[] = "before";
  mg_fields_add(&pool, &f, name, strlen(name), value, strlen(value));
  name[0] = 'Y', value[0] = 'B';
  CHECK_STR(mg_fields_get(&f, "x-copy"), "before");
  /* add takes lengths, not the strings' ends. */
  mg_fields_add(&pool, &f, "X-Partial: ignored", 9, "abcdef", 3);
  CHECK_STR(mg_fields_get(&f, "X-Partial"), "abc");

  /* join: one field is its value, several are joined in order, none is NULL. */
  CHECK_STR(mg_fields_join(&pool, &f, "host", ", "), "example.com");
  CHECK_STR(mg_fields_join(&pool, &f, "Accept", ", "), "text/html, text/plain");
  CHECK(mg_fields_join(&pool, &f, "Cookie", "; ") == NULL);
  mg_fields_t e = {0};
  ADD(&e, "Cookie", "");
  ADD(&e, "Cookie", "a=1");
  ADD(&e, "Cookie", "");
  ADD(&e, "Cookie", "");
  CHECK_STR(mg_fields_join(&pool, &e, "cookie", "; "), "; a=1; ; ");
  mg_fields_t blanks = {0};
  ADD(&blanks, "Via", "");
  ADD(&blanks, "Via", "");
  CHECK_STR(mg_fields_join(&pool, &blanks, "via", ","), ",");

  /* push keeps the caller's strings (the parser's, already in the pool). */
  mg_fields_t p = {0};
  char *pn = mg_pool_strdup(&pool, "Content-Type"), *pv = mg_pool_strdup(&pool, "text/css");
  mg_fields_push(&pool, &p, pn, pv);
  CHECK(p.n == 1 && p.v[0].name == pn && p.v[0].value == pv);

  /* A list grows past its first capacity and keeps every field in order. */
  mg_fields_t many = {0};
  char nb[16], vb[16];
  for (int i = 0; i < 40; i++) {
    int nl = snprintf(nb, sizeof nb, "X-%d", i % 3), vl = snprintf(vb, sizeof vb, "%d", i);
    mg_fields_add(&pool, &many, nb, (size_t)nl, vb, (size_t)vl);
  }
  CHECK(many.n == 40);
  CHECK(mg_fields_count(&many, "x-0") == 14 && mg_fields_count(&many, "X-2") == 13);
  CHECK_STR(many.v[39].value, "39");
  CHECK_STR(mg_fields_get(&many, "x-1"), "1");

  /* set removes every instance, whatever its case, and adds one at the end. */
  mg_fields_set(&pool, &f, "ACCEPT", "*/*");
  CHECK(mg_fields_count(&f, "accept") == 1);
  CHECK_STR(mg_fields_get(&f, "Accept"), "*/*");
  CHECK_STR(f.v[f.n - 1].value, "*/*");
  CHECK_STR(f.v[0].name, "Host");
  CHECK(f.n == 5);
  /* set with NULL only removes. */
  mg_fields_set(&pool, &f, "host", NULL);
  CHECK(mg_fields_get(&f, "Host") == NULL);
  CHECK(f.n == 4);
  mg_fields_set(&pool, &f, "Not-There", NULL);
  CHECK(f.n == 4);
  mg_fields_set(&pool, &many, "x-0", "only");
  CHECK(many.n == 27 && mg_fields_count(&many, "X-0") == 1);
  CHECK_STR(mg_fields_get(&many, "X-0"), "only");
  CHECK_STR(many.v[0].value, "1"); /* the others keep their order */

  /* Tokens (RFC 9110 5.6.2): field names and methods. */
  const char *tokens[] = {"GET", "Content-Type", "x_y", "a.b", "!#$%&'*+-.^_`|~", "0"};
  for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++) CHECK(mg_http_is_token(tokens[i], strlen(tokens[i])));
  const char *not_tokens[] = {"", "a b", "a:b", "a\"b", "(x)", "a,b", "a/b", "a\tb", "x\x7f", "caf\xc3\xa9", "a@b",
                              "[x]", "a=b", "{}", "a;b", "a\\b", "a?b"};
  for (size_t i = 0; i < sizeof not_tokens / sizeof *not_tokens; i++)
    CHECK(!mg_http_is_token(not_tokens[i], strlen(not_tokens[i])));
  CHECK(!mg_http_is_token("ab\0cd", 5)); /* a NUL inside the length is not a token byte */
  CHECK(mg_http_is_token("ab\0cd", 2));

  /* Field values (RFC 9110 5.5): visible bytes, obs-text, SP and HTAB; no other control. */
  const char *values[] = {"", "text/html; q=0.9", "a\tb", " padded ", "caf\xc3\xa9", "\x80\xff", "~!@#"};
  for (size_t i = 0; i < sizeof values / sizeof *values; i++)
    CHECK(mg_http_is_field_value(values[i], strlen(values[i])));
  const char *not_values[] = {"a\rb", "a\nb", "a\r\nX-Evil: 1", "\x01", "a\x7f", "\x1b[31m", "\x0b"};
  for (size_t i = 0; i < sizeof not_values / sizeof *not_values; i++)
    CHECK(!mg_http_is_field_value(not_values[i], strlen(not_values[i])));
  CHECK(!mg_http_is_field_value("a\0b", 3));

  /* A value safe to set from Lua or pass on from a client: only CR, LF and NUL are refused. */
  CHECK(mg_http_value_is_safe("plain value", 11));
  CHECK(mg_http_value_is_safe("a\tb\x01\x7f", 5));
  CHECK(mg_http_value_is_safe("", 0));
  CHECK(!mg_http_value_is_safe("a\rb", 3));
  CHECK(!mg_http_value_is_safe("a\nb", 3));
  CHECK(!mg_http_value_is_safe("a\0b", 3));
  CHECK(!mg_http_value_is_safe("x\r\nSet-Cookie: a=1", 18));

  /* Reason phrases: the standard ones, and a class name for a code without one. */
  CHECK_STR(mg_http_reason(200), "OK");
  CHECK_STR(mg_http_reason(204), "No Content");
  CHECK_STR(mg_http_reason(304), "Not Modified");
  CHECK_STR(mg_http_reason(404), "Not Found");
  CHECK_STR(mg_http_reason(413), "Content Too Large");
  CHECK_STR(mg_http_reason(431), "Request Header Fields Too Large");
  CHECK_STR(mg_http_reason(500), "Internal Server Error");
  CHECK_STR(mg_http_reason(502), "Bad Gateway");
  CHECK_STR(mg_http_reason(504), "Gateway Timeout");
  CHECK_STR(mg_http_reason(299), "OK");
  CHECK_STR(mg_http_reason(399), "Redirect");
  CHECK_STR(mg_http_reason(418), "Client Error");
  CHECK_STR(mg_http_reason(599), "Server Error");
  CHECK_STR(mg_http_reason(999), "Server Error");

  /* HTTP dates (RFC 9110 5.6.7, IMF-fixdate). */
  char date[64];
  CHECK_STR(mg_http_date(date, sizeof date, 784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK_STR(mg_http_date(date, sizeof date, 0), "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK_STR(mg_http_date(date, sizeof date, 951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
  CHECK_STR(mg_http_date(date, sizeof date, 4102444799LL), "Thu, 31 Dec 2099 23:59:59 GMT");
  const char *now = mg_http_date_now();
  CHECK(strlen(now) == 29 && strcmp(now + 25, " GMT") == 0);

  mg_pool_free(&pool);
  CHECK_DONE();
}
