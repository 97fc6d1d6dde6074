/* If-None-Match's weak comparison: lists, W/ on either side, "*", malformed fields. */
#include "check.h"
#include "etag.h"

int main(void) {
  const char *t = "\"5f-3\"";
  CHECK(mg_etag_match_weak("\"5f-3\"", t));
  CHECK(mg_etag_match_weak("W/\"5f-3\"", t));          /* a compressed answer's tag comes back */
  CHECK(mg_etag_match_weak("\"5f-3\"", "W/\"5f-3\"")); /* the current tag is weak */
  CHECK(mg_etag_match_weak("W/\"5f-3\"", "W/\"5f-3\""));
  CHECK(mg_etag_match_weak("\"a\", \"5f-3\"", t));
  CHECK(mg_etag_match_weak("\"a\",W/\"5f-3\" , \"b\"", t));
  CHECK(mg_etag_match_weak(" , \"a\",, \"5f-3\"", t));   /* empty members */
  CHECK(mg_etag_match_weak("*", t));
  CHECK(mg_etag_match_weak("  *  ", t));
  CHECK(!mg_etag_match_weak(NULL, t));
  CHECK(!mg_etag_match_weak("", t));
  CHECK(!mg_etag_match_weak("\"a\"", t));
  CHECK(!mg_etag_match_weak("\"15f-3\"", t));        /* no substring matches */
  CHECK(!mg_etag_match_weak("\"5f-3", t));           /* unterminated */
  CHECK(!mg_etag_match_weak("5f-3", t));             /* not quoted */
  CHECK(!mg_etag_match_weak("w/\"5f-3\"", t));       /* the prefix is case-sensitive */
  CHECK(!mg_etag_match_weak("\"a\" x, \"5f-3\"", t)); /* a bad member ends the scan */
  CHECK(!mg_etag_match_weak("*, \"a\"", t));         /* "*" is the whole field or nothing */
  CHECK(!mg_etag_match_weak("\"\"", t));
  CHECK(mg_etag_match_weak("\"\"", "\"\""));
  CHECK_DONE();
}
