/* W3C traceparent parsing (version 00 exact, later versions' extension, the invalid forms) and
 * the text moongate sends. */
#include "check.h"
#include "traceparent.h"

#define T "4bf92f3577b34da6a3ce929d0e0e4736"
#define P "00f067aa0ba902b7"

static int ok(const char *v) {
  mg_traceparent_t tp;
  return mg_traceparent_parse(v, strlen(v), &tp) == 0;
}

int main(void) {
  mg_traceparent_t tp;
  const char *v = "00-" T "-" P "-01";
  CHECK(mg_traceparent_parse(v, strlen(v), &tp) == 0);
  CHECK_STR(tp.trace_id, T);
  CHECK_STR(tp.parent_id, P);
  CHECK(tp.flags == 1);
  CHECK(ok("  00-" T "-" P "-00\t")); /* OWS around a field value */
  CHECK(ok("00-" T "-" P "-ff"));     /* unknown flags are kept, not refused */
  CHECK(ok("01-" T "-" P "-01"));
  CHECK(ok("cc-" T "-" P "-01-what-ever")); /* a later version: more after a '-' */
  CHECK(!ok("cc-" T "-" P "-01what"));
  CHECK(!ok("00-" T "-" P "-01-"));   /* version 00 is exactly 55 characters */
  CHECK(!ok("ff-" T "-" P "-01"));    /* version ff is invalid */
  CHECK(!ok("0g-" T "-" P "-01"));
  CHECK(!ok("00-00000000000000000000000000000000-" P "-01"));
  CHECK(!ok("00-" T "-0000000000000000-01"));
  CHECK(!ok("00-4BF92F3577B34DA6A3CE929D0E0E4736-" P "-01")); /* upper case */
  CHECK(!ok("00-" T "-" P "-1"));
  CHECK(!ok("00-" T "-" P "-0x"));
  CHECK(!ok("00-" T "x" P "-01"));
  CHECK(!ok("00-" T "-" P));
  CHECK(!ok(""));
  char out[56];
  mg_traceparent_format(out, T, "a1b2c3d4e5f60718", 0x01);
  CHECK_STR(out, "00-" T "-a1b2c3d4e5f60718-01");
  mg_traceparent_format(out, T, P, 0xa0);
  CHECK_STR(out, "00-" T "-" P "-a0");
  CHECK(ok(out));
  CHECK_DONE();
}
