/* shm/metrics.c: the region's shape, counting by route and class, histograms cumulated on
 * reading, out-of-range indices ignored, gauges, and rows shared by key across reloads. */
#include "check.h"
#include "metrics.h"

int main(void) {
  const char *rkeys[] = {"/a", "/b"};
  int rmem[] = {2, 0};
  const char *m0[] = {"scgi://x:1", "scgi://x:2"};
  const char **mkeys[] = {m0, NULL};
  const char *bkeys[] = {"pool"};
  int bmem[] = {2};
  const char **bmkeys[] = {m0};
  double buckets[] = {0.01, 0.1, 1};
  mg_metrics_shape_t s = {2, rkeys, rmem, mkeys, 1, bkeys, bmem, bmkeys, 3, buckets};
  mg_metrics_t *m = mg_metrics_map(&s);
  CHECK(m != NULL);
  mg_metrics_use(m);
  mg_metrics_request(0, 200, 5000);    /* 5 ms */
  mg_metrics_request(0, 204, 50000);   /* 50 ms */
  mg_metrics_request(0, 503, 2000000); /* 2 s: +Inf */
  mg_metrics_request(1, 404, 10000);   /* exactly 10 ms: le="0.01" */
  mg_metrics_request(7, 200, 1);       /* out of range: "no route" */
  mg_metrics_request(-1, 99, 1);       /* odd status: 5xx */
  CHECK(mg_metrics_requests(m, 0, 1) == 2 && mg_metrics_requests(m, 0, 4) == 1);
  CHECK(mg_metrics_requests(m, 1, 3) == 1);
  CHECK(mg_metrics_requests(m, 2, 1) == 1 && mg_metrics_requests(m, 2, 4) == 1);
  mg_metrics_hist_t h;
  mg_metrics_request_hist(m, 0, &h);
  CHECK(h.buckets[0] == 1 && h.buckets[1] == 2 && h.buckets[2] == 2 && h.buckets[3] == 3 && h.count == 3);
  CHECK(h.sum > 2.054 && h.sum < 2.056);
  mg_metrics_request_hist(m, 1, &h);
  CHECK(h.buckets[0] == 1);
  mg_metrics_upstream(0, 1, 3000);
  mg_metrics_upstream(0, 2, 3000); /* no such member: ignored */
  mg_metrics_upstream(1, 0, 3000); /* route without members */
  mg_metrics_upstream_hist(m, 0, 1, &h);
  CHECK(h.count == 1 && h.buckets[0] == 1);
  mg_metrics_upstream_hist(m, 0, 0, &h);
  CHECK(h.count == 0);
  mg_metrics_conn(3, 1), mg_metrics_conn(3, 1), mg_metrics_conn(3, -1), mg_metrics_conn(9, 1);
  CHECK(mg_metrics_conns(m, 3) == 1 && mg_metrics_conns(m, 0) == 0);
  mg_metrics_queue(0, MG_QUEUE_ENTER, 0), mg_metrics_queue(0, MG_QUEUE_ENTER, 0);
  mg_metrics_queue(0, MG_QUEUE_SERVED, 20000), mg_metrics_queue(0, MG_QUEUE_FULL, 0);
  CHECK(mg_metrics_queue_get(m, 0, MG_QUEUE_ENTER) == 1 && mg_metrics_queue_get(m, 0, MG_QUEUE_SERVED) == 1);
  CHECK(mg_metrics_queue_get(m, 0, MG_QUEUE_FULL) == 1 && mg_metrics_queue_get(m, 0, MG_QUEUE_TIMEOUT) == 0);
  mg_metrics_queue_wait_hist(m, 0, &h);
  CHECK(h.count == 1 && h.buckets[0] == 0 && h.buckets[1] == 1);
  mg_metrics_ejection(0, 1), mg_metrics_ejection(0, 5), mg_metrics_retry(0, 0), mg_metrics_retry(0, 1), mg_metrics_retry(3, 0);
  CHECK(mg_metrics_ejections(m, 0, 1) == 1 && mg_metrics_ejections(m, 0, 0) == 0);
  CHECK(mg_metrics_retries(m, 0, 0) == 1 && mg_metrics_retries(m, 0, 1) == 1);
  mg_metrics_lua(1, 1500);
  CHECK(mg_metrics_lua_calls(m, 1) == 1 && mg_metrics_lua_seconds(m, 1) > 0.0014);

  /* A reload: route /b gone, /c new, /a moved to the second row; member 2 of /a kept. The
   * rows of what stays are the same cells: both generations add to them. */
  const char *rkeys2[] = {"/c", "/a"};
  int rmem2[] = {0, 1};
  const char *m2[] = {"scgi://x:2"};
  const char **mkeys2[] = {NULL, m2};
  mg_metrics_shape_t s2 = {2, rkeys2, rmem2, mkeys2, 1, bkeys, bmem, bmkeys, 3, buckets};
  mg_metrics_t *n = mg_metrics_map(&s2);
  CHECK(n != NULL);
  CHECK(mg_metrics_requests(n, 1, 1) == 2 && mg_metrics_requests(n, 0, 3) == 0);
  CHECK(mg_metrics_requests(n, 2, 1) == 1); /* "no route" is one row */
  mg_metrics_upstream_hist(n, 1, 0, &h);
  CHECK(h.count == 1);
  CHECK(mg_metrics_conns(n, 3) == 1); /* connections: every generation's */
  CHECK(mg_metrics_queue_get(n, 0, MG_QUEUE_ENTER) == 1 && mg_metrics_queue_get(n, 0, MG_QUEUE_FULL) == 1);
  CHECK(mg_metrics_ejections(n, 0, 1) == 1 && mg_metrics_lua_calls(n, 1) == 1);
  mg_metrics_request(0, 200, 1); /* the old generation still counts (current is m) ... */
  mg_metrics_use(n);
  mg_metrics_request(1, 200, 1); /* ... and the new one */
  CHECK(mg_metrics_requests(n, 1, 1) == 4 && mg_metrics_requests(m, 0, 1) == 4);
  mg_metrics_use(m);
  /* Other buckets: the histograms start again, the counters do not. */
  double other[] = {0.5};
  mg_metrics_shape_t s3 = {2, rkeys2, rmem2, mkeys2, 1, bkeys, bmem, bmkeys, 1, other};
  mg_metrics_t *o = mg_metrics_map(&s3);
  mg_metrics_request_hist(o, 1, &h);
  CHECK(h.count == 0 && mg_metrics_requests(o, 1, 1) == 4);
  mg_metrics_unmap(m), mg_metrics_unmap(n), mg_metrics_unmap(o);
  CHECK(mg_metrics_current() == NULL);
  mg_metrics_request(0, 200, 1); /* no handle: a no-op */
  /* Many routes (the directory grows): each its own row, found again by key. */
  enum { N = 3000 };
  static char names[N][16];
  static const char *many[N];
  static int none[N];
  for (int i = 0; i < N; i++) snprintf(names[i], sizeof names[i], "/r%d", i), many[i] = names[i];
  mg_metrics_shape_t s5 = {N, many, none, NULL, 0, NULL, NULL, NULL, 3, buckets};
  mg_metrics_t *p = mg_metrics_map(&s5), *q = mg_metrics_map(&s5);
  mg_metrics_use(p);
  for (int i = 0; i < N; i++) mg_metrics_request(i, 200 + (i % 4) * 100, 1);
  int same = 1;
  for (int i = 0; i < N; i++) same &= mg_metrics_requests(q, i, 1 + i % 4) == 1 && mg_metrics_requests(q, i, 1 + (i + 1) % 4) == 0;
  CHECK(same);
  mg_metrics_unmap(p), mg_metrics_unmap(q);
  double bad[33] = {0};
  mg_metrics_shape_t s4 = {0, NULL, NULL, NULL, 0, NULL, NULL, NULL, 33, bad};
  CHECK(mg_metrics_map(&s4) == NULL);
  CHECK_DONE();
}
