/* Unit test of the member slots in shared memory (src/shm/caps.c) and of how the balancer
 * passes over full members (src/handler/balancer.c): four forked processes take and give back
 * slots of one member as fast as they can, each checking with its own shared counter that no
 * more than max are ever held at once; a process that dies holding slots has them given back by
 * mg_caps_reap; entries are found again by name (a reload), with the new max; a full member is
 * not picked, bybusyness counts the shared slots, and a hot standby does not stand in for a
 * member that is only full. */
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "balancer.h"
#include "caps.h"
#include "check.h"

#define PROCS 4
#define ROUNDS 200000
#define MAX 3

static void hammer(void) {
  int rc = mg_caps_map();
  CHECK(rc == 0);
  mg_cap_t *c = mg_caps_member("b", "scgi://x:1", MAX);
  CHECK(c && c->max == MAX && c->busy == 0);
  int32_t *inside = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  int32_t *over = inside + 1, *taken = inside + 2;
  pid_t kids[PROCS];
  for (int p = 0; p < PROCS; p++) {
    if ((kids[p] = fork()) == 0) {
      for (int i = 0; i < ROUNDS; i++) {
        if (!mg_cap_acquire(c)) continue;
        int now = __atomic_add_fetch(inside, 1, __ATOMIC_ACQ_REL);
        if (now > MAX) __atomic_add_fetch(over, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(taken, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(inside, 1, __ATOMIC_ACQ_REL);
        mg_cap_release(c);
      }
      _exit(0);
    }
  }
  for (int p = 0; p < PROCS; p++) waitpid(kids[p], NULL, 0);
  CHECK(*over == 0);
  CHECK(*taken > ROUNDS / 10); /* they did take slots, often */
  CHECK(c->busy == 0);

  /* A child that dies holding two slots: the master's reap gives them back. */
  pid_t k = fork();
  if (k == 0) {
    mg_cap_acquire(c), mg_cap_acquire(c);
    _exit(0);
  }
  waitpid(k, NULL, 0);
  CHECK(c->busy == 2);
  CHECK(mg_cap_full(c) == 0);
  mg_cap_acquire(c);
  CHECK(mg_cap_full(c) == 1 && mg_cap_acquire(c) == 0);
  mg_cap_release(c);
  mg_caps_reap((int)k);
  CHECK(c->busy == 0);
  for (int i = 0; i < PROCS; i++) mg_caps_reap((int)kids[i]);

  /* A reload finds the entry by name, with its count, and the new max. */
  mg_cap_acquire(c);
  mg_cap_t *again = mg_caps_member("b", "scgi://x:1", 5);
  CHECK(again == c && c->busy == 1 && c->max == 5);
  mg_cap_release(c);
  CHECK(mg_caps_member("b", "scgi://x:2", 0) != c);
  mg_capq_t *q = mg_caps_queue("b");
  CHECK(q && q == mg_caps_queue("b") && q->ticket == 1 && q != mg_caps_queue("other"));
}

static mg_balancer_t *make(int n, int method) {
  mg_balancer_t *b = calloc(1, sizeof *b);
  b->nmembers = n;
  b->method = method;
  b->members = calloc((size_t)n, sizeof(mg_member_t));
  for (int i = 0; i < n; i++) {
    b->members[i].lbfactor = 1;
    b->members[i].index = i + 1;
    char url[32];
    snprintf(url, sizeof url, "scgi://pick:%d", i);
    b->members[i].cap = mg_caps_member("pick", url, 1);
  }
  return b;
}

static void picks(void) {
  mg_balancer_t *b = make(3, MG_LB_BYREQUESTS);
  mg_member_t *m = b->members;
  mg_cap_acquire(m[0].cap);
  for (int i = 0; i < 20; i++) CHECK(mg_balancer_pick(b, NULL, 0, NULL) != &m[0]);
  mg_cap_acquire(m[1].cap), mg_cap_acquire(m[2].cap);
  CHECK(mg_balancer_pick(b, NULL, 0, NULL) == NULL);
  CHECK(mg_balancer_any_full(b, 0, NULL) == 1);
  /* A hot standby does not stand in for full members... */
  m[2].flags = MG_MEMBER_HOT_STANDBY;
  mg_cap_release(m[2].cap);
  CHECK(mg_balancer_pick(b, NULL, 0, NULL) == NULL);
  /* ...but does for members that are out. */
  m[0].flags = m[1].flags = MG_MEMBER_DISABLED;
  CHECK(mg_balancer_pick(b, NULL, 0, NULL) == &m[2]);
  CHECK(mg_balancer_any_full(b, 0, NULL) == 0);
  m[0].flags = m[1].flags = m[2].flags = 0;
  mg_cap_release(m[0].cap), mg_cap_release(m[1].cap);
  /* A sticky request whose member is full goes to another. */
  m[1].route = "r";
  mg_cap_acquire(m[1].cap);
  for (int i = 0; i < 10; i++) CHECK(mg_balancer_pick(b, "r", 0, NULL) != &m[1]);
  mg_cap_release(m[1].cap);
  CHECK(mg_balancer_pick(b, "r", 0, NULL) == &m[1]);
  m[1].route = NULL;

  /* bybusyness reads the shared slots: the member with the fewest taken (any worker's). */
  mg_balancer_t *bb = make(3, MG_LB_BYBUSYNESS);
  for (int i = 0; i < 3; i++) __atomic_store_n(&bb->members[i].cap->max, 10, __ATOMIC_RELAXED);
  mg_cap_acquire(bb->members[0].cap), mg_cap_acquire(bb->members[0].cap), mg_cap_acquire(bb->members[2].cap);
  for (int i = 0; i < 5; i++) CHECK(mg_balancer_pick(bb, NULL, 0, NULL) == &bb->members[1]);
  mg_balancer_free(b);
  mg_balancer_free(bb);
}

int main(void) {
  hammer();
  picks();
  CHECK_DONE();
}
