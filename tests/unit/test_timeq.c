/* The timeout queues of base/timeq.h on a real libuv loop: entries of several queues, each
 * with its own duration, expire in deadline order, never before their deadline; an entry set
 * again expires only at its new deadline, a removed one never; the one timer never keeps the
 * loop alive, and closes cleanly.
 *
 * The queue's timer is unreferenced, so while entries wait the test keeps the loop alive with
 * a guard timer of its own: it is stopped once every expected entry has expired (uv_run then
 * returns at once), and otherwise ends the run after GUARD_MS (or the case's own bound) so
 * that a timeout that never fires fails the checks instead of hanging the test. */
#include <stdint.h>

#include "check.h"
#include "timeq.h"

#define GUARD_MS 300

typedef struct {
  mg_timeq_entry_t entry;
  const char *name;
  int fired, queue;
  uint64_t at; /* loop time of the last expiry, ms since the start of the case */
  int rearm;   /* set again for 10 ms in queue 4 this many more times */
} owner_t;

static uv_loop_t loop;
static uv_timer_t guard;
static uint64_t start;
static char order[64]; /* the names of the expired entries, in order */
static int expired, expected;

static void on_guard(uv_timer_t *t) { uv_stop(t->loop); }

static void on_expired(mg_timeq_t *q, mg_timeq_entry_t *e, int queue) {
  owner_t *o = (owner_t *)((char *)e - offsetof(owner_t, entry));
  CHECK(e->queue == 0); /* already out of its queue */
  o->fired++, o->queue = queue;
  o->at = uv_now(&loop) - start;
  strncat(order, o->name, sizeof order - strlen(order) - 1);
  if (o->rearm) o->rearm--, mg_timeq_set(q, e, 4, 10);
  if (++expired == expected) uv_timer_stop(&guard);
}

/* Starts a case: the loop's clock is read now, so that durations count from here. */
static void begin(int n) {
  uv_update_time(&loop);
  start = uv_now(&loop);
  order[0] = 0;
  expired = 0, expected = n;
}

/* Runs the loop until `expected` entries expired, or `ms` passed. */
static void run_for(uint64_t ms) {
  uv_timer_start(&guard, on_guard, ms, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_timer_stop(&guard);
}
static void run(void) { run_for(GUARD_MS); }

static int closed;
static void on_close(uv_handle_t *h) {
  (void)h;
  closed++;
}

int main(void) {
  uint64_t t0 = mg_now_ms();
  CHECK(uv_loop_init(&loop) == 0);
  uv_timer_init(&loop, &guard);
  mg_timeq_t q;
  mg_timeq_init(&q, &loop, on_expired);
  CHECK(mg_timeq_first(&q, 1) == NULL && mg_timeq_first(&q, 4) == NULL);

  /* Three queues with durations 40, 10 and 25 ms, filled in no particular order: they expire
   * by deadline across the queues, in FIFO order within one, and not before their time. */
  owner_t a = {.name = "a"}, b = {.name = "b"}, c = {.name = "c"}, d = {.name = "d"}, e = {.name = "e"};
  begin(5);
  mg_timeq_set(&q, &a.entry, 1, 40);
  mg_timeq_set(&q, &b.entry, 2, 10);
  mg_timeq_set(&q, &c.entry, 3, 25);
  mg_timeq_set(&q, &d.entry, 2, 10);
  mg_timeq_set(&q, &e.entry, 1, 40);
  CHECK(mg_timeq_first(&q, 1) == &a.entry);
  CHECK(mg_timeq_first(&q, 2) == &b.entry);
  CHECK(mg_timeq_first(&q, 3) == &c.entry);
  CHECK(mg_timeq_first(&q, 4) == NULL);
  run();
  CHECK_STR(order, "bdcae");
  CHECK(a.fired == 1 && b.fired == 1 && c.fired == 1 && d.fired == 1 && e.fired == 1);
  CHECK(a.queue == 1 && b.queue == 2 && c.queue == 3);
  CHECK(b.at >= 10 && d.at >= 10 && c.at >= 25 && a.at >= 40 && e.at >= 40);
  CHECK(a.at < GUARD_MS);
  CHECK(mg_timeq_first(&q, 1) == NULL && mg_timeq_first(&q, 2) == NULL && mg_timeq_first(&q, 3) == NULL);

  /* The queues are empty: the timer does not keep the loop alive, uv_run returns at once. */
  uint64_t before = mg_now_ms();
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(mg_now_ms() - before < 20);

  /* Nor while an entry waits: the loop's life is its owners' (connections), not the
   * timeouts'. The entry has not expired when uv_run returns, and waits on. */
  owner_t idle = {.name = "i"};
  begin(1);
  mg_timeq_set(&q, &idle.entry, 1, 30);
  before = mg_now_ms();
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(mg_now_ms() - before < 20);
  CHECK(idle.fired == 0 && mg_timeq_first(&q, 1) == &idle.entry);
  run(); /* with the guard, it expires */
  CHECK(idle.fired == 1 && idle.at >= 30);

  /* An entry set again moves: to another queue and deadline, or to the tail of its own. */
  owner_t x = {.name = "x"}, y = {.name = "y"}, p = {.name = "p"}, r = {.name = "r"};
  begin(4);
  mg_timeq_set(&q, &x.entry, 2, 10);
  mg_timeq_set(&q, &y.entry, 3, 20);
  mg_timeq_set(&q, &p.entry, 4, 5);
  mg_timeq_set(&q, &r.entry, 4, 5);
  mg_timeq_set(&q, &x.entry, 1, 40); /* x leaves queue 2 */
  mg_timeq_set(&q, &p.entry, 4, 5);  /* p goes behind r */
  CHECK(mg_timeq_first(&q, 2) == NULL);
  CHECK(mg_timeq_first(&q, 1) == &x.entry);
  CHECK(mg_timeq_first(&q, 4) == &r.entry);
  run();
  CHECK_STR(order, "rpyx");
  CHECK(x.fired == 1 && x.queue == 1 && x.at >= 40);
  CHECK(y.at >= 20 && r.at >= 5 && p.at >= 5);

  /* A later deadline set while the timer waits for an earlier one: the entry waits for the
   * later one (the timer fires early, finds nothing due, and waits again). */
  owner_t late = {.name = "l"};
  begin(1);
  mg_timeq_set(&q, &late.entry, 2, 5);
  uv_update_time(&loop);
  mg_timeq_set(&q, &late.entry, 2, 45);
  run();
  CHECK(late.fired == 1 && late.at >= 45);

  /* Removed entries never expire; removing one that waits nowhere does nothing. */
  owner_t z = {.name = "z"}, w = {.name = "w"}, v = {.name = "v"}, u = {.name = "u"};
  begin(1);
  mg_timeq_set(&q, &z.entry, 1, 10);
  mg_timeq_set(&q, &w.entry, 1, 20);
  mg_timeq_set(&q, &v.entry, 2, 10);
  mg_timeq_set(&q, &u.entry, 3, 10);
  mg_timeq_remove(&q, &z.entry);
  CHECK(mg_timeq_first(&q, 1) == &w.entry);
  mg_timeq_remove(&q, &z.entry);
  CHECK(mg_timeq_first(&q, 1) == &w.entry);
  /* Queue 0, or 0 ms, only takes an entry out. */
  mg_timeq_set(&q, &v.entry, 0, 10);
  mg_timeq_set(&q, &u.entry, 3, 0);
  CHECK(v.entry.queue == 0 && u.entry.queue == 0);
  CHECK(mg_timeq_first(&q, 2) == NULL && mg_timeq_first(&q, 3) == NULL);
  run();
  CHECK_STR(order, "w");
  /* Time for the removed ones to fire, were they still queued. */
  begin(99);
  run_for(30);
  CHECK(z.fired == 0 && v.fired == 0 && u.fired == 0 && w.fired == 1);

  /* Removed from the middle of a queue, the others keep their places and links: the last,
   * moved to the tail again, still follows the first. */
  owner_t m1 = {.name = "1"}, m2 = {.name = "2"}, m3 = {.name = "3"};
  begin(2);
  mg_timeq_set(&q, &m1.entry, 2, 10);
  mg_timeq_set(&q, &m2.entry, 2, 10);
  mg_timeq_set(&q, &m3.entry, 2, 10);
  mg_timeq_remove(&q, &m2.entry);
  mg_timeq_set(&q, &m3.entry, 2, 10);
  CHECK(mg_timeq_first(&q, 2) == &m1.entry);
  run();
  CHECK_STR(order, "13");
  CHECK(m2.fired == 0);

  /* The last of a queue removed while it is the timer's next: the timer stops, nothing fires. */
  owner_t s = {.name = "s"};
  begin(99);
  mg_timeq_set(&q, &s.entry, 1, 5);
  mg_timeq_remove(&q, &s.entry);
  run_for(30);
  CHECK(s.fired == 0 && order[0] == 0);

  /* An owner that sets its entry again from the expiry (a keep-alive that goes on). */
  owner_t k = {.name = "k", .rearm = 2};
  begin(3);
  mg_timeq_set(&q, &k.entry, 4, 10);
  run();
  CHECK(k.fired == 3 && k.queue == 4 && k.at >= 30);
  CHECK(mg_timeq_first(&q, 4) == NULL);

  /* Closing: the timer's close callback runs once, a second close does nothing, and the loop
   * then has no handle left but the test's guard. */
  mg_timeq_close(&q, on_close);
  mg_timeq_close(&q, on_close);
  uv_close((uv_handle_t *)&guard, on_close);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(closed == 2);
  CHECK(uv_loop_close(&loop) == 0);

  /* A queue whose timer never started has nothing to close. */
  uv_loop_t other;
  uv_loop_init(&other);
  mg_timeq_t unused;
  mg_timeq_init(&unused, &other, on_expired);
  mg_timeq_close(&unused, on_close);
  uv_run(&other, UV_RUN_DEFAULT);
  CHECK(closed == 2);
  CHECK(uv_loop_close(&other) == 0);

  CHECK(mg_now_ms() - t0 < 2000);
  CHECK_DONE();
}
