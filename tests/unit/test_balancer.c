/* Member selection: byrequests' exact distribution, bybusyness, stickiness, standbys. */
#include <stdlib.h>

#include "balancer.h"
#include "check.h"

static mg_balancer_t *make(int method, const int *weights, int n) {
  mg_balancer_t *b = calloc(1, sizeof *b);
  b->name = strdup("t");
  b->method = method;
  b->nmembers = n;
  b->maxattempts = n;
  b->members = calloc((size_t)n, sizeof(mg_member_t));
  for (int i = 0; i < n; i++) {
    b->members[i].lbfactor = weights[i];
    b->members[i].index = i + 1;
    b->members[i].retry_ms = 60000;
    b->members[i].addr.url = strdup("scgi://x");
  }
  return b;
}

int main(void) {
  int w[] = {1, 2, 5};
  mg_balancer_t *b = make(MG_LB_BYREQUESTS, w, 3);
  int counts[3] = {0};
  for (int i = 0; i < 8 * 100; i++) counts[mg_balancer_pick(b, NULL, 0, NULL)->index - 1]++;
  CHECK(counts[0] == 100 && counts[1] == 200 && counts[2] == 500);
  /* Smooth: within any window of Σlbfactor picks, every member appears lbfactor times. */
  int window[3] = {0};
  for (int i = 0; i < 8; i++) window[mg_balancer_pick(b, NULL, 0, NULL)->index - 1]++;
  CHECK(window[0] == 1 && window[1] == 2 && window[2] == 5);

  /* A member in error is skipped until its retry expires. */
  mg_member_failed(&b->members[2], 1000, "refused");
  for (int i = 0; i < 30; i++) CHECK(mg_balancer_pick(b, NULL, 2000, NULL)->index != 3);
  int back = 0;
  for (int i = 0; i < 30; i++) back += mg_balancer_pick(b, NULL, 1000 + 60000, NULL)->index == 3;
  CHECK(back > 0);

  /* Sticky routes win when usable. */
  b->members[1].route = strdup("b");
  for (int i = 0; i < 10; i++) CHECK(mg_balancer_pick(b, "b", 100000, NULL)->index == 2);
  const char *route;
  size_t rl;
  b->stickysession = strdup("ROUTEID");
  rl = mg_balancer_sticky_route(b, "x=1; ROUTEID=abc.b", NULL, &route);
  CHECK(rl == 1 && route[0] == 'b');
  rl = mg_balancer_sticky_route(b, NULL, "q=1&ROUTEID=zz.b", &route);
  CHECK(rl == 1 && route[0] == 'b');
  CHECK(mg_balancer_sticky_route(b, "ROUTEID=nodot", NULL, &route) == 0);

  /* A draining member (+N) takes only sticky requests. */
  b->members[1].flags = MG_MEMBER_DRAINING;
  for (int i = 0; i < 10; i++) CHECK(mg_balancer_pick(b, NULL, 100000, NULL)->index != 2);
  CHECK(mg_balancer_pick(b, "b", 100000, NULL)->index == 2);
  b->members[1].flags = 0;

  /* Hot standby only when nothing else is usable; all tried: NULL. */
  b->members[2].flags = MG_MEMBER_HOT_STANDBY;
  unsigned char tried[3] = {1, 1, 0};
  CHECK(mg_balancer_pick(b, NULL, 100000, tried)->index == 3);
  for (int i = 0; i < 10; i++) CHECK(mg_balancer_pick(b, NULL, 100000, NULL)->index != 3);
  tried[2] = 1;
  CHECK(mg_balancer_pick(b, NULL, 100000, tried) == NULL);
  mg_balancer_free(b);

  int e[] = {1, 1};
  b = make(MG_LB_BYBUSYNESS, e, 2);
  b->members[0].local.inflight = 3;
  for (int i = 0; i < 5; i++) CHECK(mg_balancer_pick(b, NULL, 0, NULL)->index == 2);
  mg_balancer_free(b);
  CHECK_DONE();
}
