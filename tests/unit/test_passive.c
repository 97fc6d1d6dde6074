/* Passive health and retries with an explicit clock: consecutive failures in a window, the
 * ejection's doubling and its cap, the 10-minute memory, max_ejected, the retry conditions and
 * the budget's floor and share. */
#include <stdlib.h>

#include "check.h"
#include "passive.h"

static mg_balancer_t *make(const char *name, int n) {
  mg_balancer_t *b = calloc(1, sizeof *b);
  b->name = strdup(name);
  b->nmembers = n;
  b->maxattempts = n;
  b->members = calloc((size_t)n, sizeof(mg_member_t));
  for (int i = 0; i < n; i++) {
    char url[64];
    snprintf(url, sizeof url, "scgi://10.0.0.%d:4000", i + 1);
    b->members[i].addr.url = strdup(url);
    b->members[i].index = i + 1;
    b->members[i].lbfactor = 1;
  }
  mg_passive_t *p = b->passive = calloc(1, sizeof *p);
  p->eject_on = p->retries_on = 1;
  p->eject = (mg_passive_eject_t){.fails = 3, .window_ms = 10000, .eject_ms = 1000, .statuses = {502, 503, 504}, .nstatuses = 3,
                                  .timeouts = 1, .max_ejected_pct = 50};
  p->retry = (mg_retries_t){.on_connect = 1, .on_timeout = 1, .statuses = {503}, .nstatuses = 1, .tries = 2, .nmethods = 1, .budget_pct = 20};
  p->retry.methods[0] = strdup("GET");
  return b;
}

int main(void) {
  mg_balancer_t *b = make("t", 4), *r = make("r", 2);
  mg_balancer_t *list[] = {b, r};
  mg_config_t cfg = {.balancers = list, .nbalancers = 2};
  CHECK(mg_passive_bind(&cfg) == 0);
  CHECK(b->members[0].passive && b->members[3].passive && b->passive->shared && r->passive->shared);
  CHECK(b->members[0].passive != r->members[0].passive); /* keyed by balancer and member */
  mg_member_t *m = &b->members[0];

  /* Three failures in a row eject; a success between them restarts the count. */
  uint64_t t = 1000000;
  mg_passive_report(b, m, 503, 0, t);
  mg_passive_report(b, m, 503, 0, t + 1);
  mg_passive_report(b, m, 200, 0, t + 2);
  mg_passive_report(b, m, 502, 0, t + 3);
  mg_passive_report(b, m, 500, 0, t + 4); /* not in statuses: a success */
  mg_passive_report(b, m, 504, 0, t + 5);
  CHECK(mg_member_usable(m, t + 6));
  /* ... and they must fall within the window, counted from the first. */
  mg_passive_report(b, m, 503, 0, t + 20000);
  mg_passive_report(b, m, 503, 0, t + 20001);
  mg_passive_report(b, m, 503, 0, t + 30002); /* 10002 ms after the first: a new run */
  CHECK(mg_member_usable(m, t + 30003));
  mg_passive_report(b, m, 503, 0, t + 30004);
  mg_passive_report(b, m, 0, 1, t + 30005); /* a timeout, the third */
  CHECK(!mg_member_usable(m, t + 30006));
  CHECK(mg_passive_ejected_ms(m, t + 30005) == 1000);
  CHECK(m->passive->ejections == 1 && m->passive->fails == 0);
  /* Failures while it is out count for nothing; it is back after `eject`. */
  mg_passive_report(b, m, 503, 0, t + 30100);
  CHECK(m->passive->fails == 0);
  CHECK(mg_member_usable(m, t + 31005));

  /* Doubling: 1, 2, 4, 8, then 10 times, for ejections within 10 minutes of each other. */
  uint64_t lengths[6], now = t + 40000;
  for (int k = 0; k < 6; k++) {
    for (int i = 0; i < 3; i++) mg_passive_report(b, m, 503, 0, now);
    lengths[k] = mg_passive_ejected_ms(m, now);
    now += lengths[k] + 1;
  }
  /* The first of these is the second ejection within 10 minutes of the one above. */
  CHECK(lengths[0] == 2000 && lengths[1] == 4000 && lengths[2] == 8000 && lengths[3] == 10000 && lengths[4] == 10000 &&
        lengths[5] == 10000);
  /* After 10 quiet minutes, back to 1 time. */
  now += 600001;
  for (int i = 0; i < 3; i++) mg_passive_report(b, m, 503, 0, now);
  CHECK(mg_passive_ejected_ms(m, now) == 1000);

  /* max_ejected 50% of 4: a second member may go, a third may not. */
  mg_member_t *m2 = &b->members[1], *m3 = &b->members[2];
  for (int i = 0; i < 3; i++) mg_passive_report(b, m2, 503, 0, now);
  for (int i = 0; i < 3; i++) mg_passive_report(b, m3, 503, 0, now);
  CHECK(!mg_member_usable(m2, now) && mg_member_usable(m3, now));
  /* Once one is back, the next failure of the one kept in ejects it. */
  now += 1001;
  CHECK(mg_member_usable(m, now));
  mg_passive_report(b, m3, 503, 0, now);
  CHECK(!mg_member_usable(m3, now));
  b->passive->eject.max_ejected_pct = -1, b->passive->eject.max_ejected_count = 0;
  for (int i = 0; i < 3; i++) mg_passive_report(b, &b->members[3], 503, 0, now);
  CHECK(mg_member_usable(&b->members[3], now)); /* a count of 0: never */

  /* Retries: on, methods, a body that can be sent again, tries. */
  uint64_t s = 5000000;
  for (int i = 0; i < 100; i++) mg_passive_request(r, s);
  CHECK(mg_passive_retry(r, "GET", 1, 503, 0, 1, s) == 1);
  CHECK(mg_passive_retry(r, "GET", 1, 502, 0, 1, s) == 0); /* not in on */
  CHECK(mg_passive_retry(r, "GET", 1, 0, 1, 1, s) == 1);   /* a timeout */
  CHECK(mg_passive_retry(r, "POST", 1, 503, 0, 1, s) == 0);
  CHECK(mg_passive_retry(r, "GET", 0, 503, 0, 1, s) == 0); /* a streamed body */
  CHECK(mg_passive_retry(r, "GET", 1, 503, 0, 2, s) == 0); /* tries spent */
  CHECK(r->passive->shared->retries == 2 && r->passive->shared->refused == 0);
  /* The budget: 20 % of 100 requests in the window is 20 retries; 2 are made. */
  int made = 0;
  for (int i = 0; i < 40; i++) made += mg_passive_retry(r, "GET", 1, 503, 0, 1, s);
  CHECK(made == 18 && r->passive->shared->refused == 22);
  /* Within the window the share holds over seconds; 3 a second are always allowed. */
  made = 0;
  for (int i = 0; i < 10; i++) made += mg_passive_retry(r, "GET", 1, 503, 0, 1, s + 1000);
  CHECK(made == 3);
  /* Ten seconds later the old requests and retries are out of the window. */
  made = 0;
  for (int i = 0; i < 10; i++) made += mg_passive_retry(r, "GET", 1, 503, 0, 1, s + 11000);
  CHECK(made == 3);
  for (int i = 0; i < 50; i++) mg_passive_request(r, s + 12000);
  made = 0;
  for (int i = 0; i < 20; i++) made += mg_passive_retry(r, "GET", 1, 503, 0, 1, s + 12000);
  /* The window holds 50 requests and 3 retries: 3 more by the floor, then the share, up to
   * 10 in the window (20 % of 50). */
  CHECK(made == 7);
  /* A connect failure fails over without retries, or with "connect" in on. */
  CHECK(mg_passive_retry_connect(r));
  r->passive->retry.on_connect = 0;
  CHECK(!mg_passive_retry_connect(r));
  mg_balancer_t plain = {0};
  CHECK(mg_passive_retry_connect(&plain));

  /* A reload binds the same names to the same slots. */
  mg_balancer_t *b2 = make("t", 4);
  mg_balancer_t *list2[] = {b2};
  mg_config_t cfg2 = {.balancers = list2, .nbalancers = 1};
  CHECK(mg_passive_bind(&cfg2) == 0);
  CHECK(b2->members[0].passive == b->members[0].passive && b2->passive->shared == b->passive->shared);

  mg_balancer_free(b), mg_balancer_free(r), mg_balancer_free(b2);
  CHECK_DONE();
}
