/* caps: see caps.h. */
#include "caps.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  int32_t pids[MG_CAPS_PROCS];
  mg_cap_t members[MG_CAPS_MEMBERS];
  mg_capq_t queues[MG_CAPS_QUEUES];
} page_t;

static page_t *page;
static int self = -1, self_known;

/* A forked child is a new process: its index is claimed again at its first use (the parent's
 * is not its own). Kept so, a slot costs no getpid() per request. */
static void forget_self(void) { self = -1, self_known = 0; }

int mg_caps_map(void) {
  if (page) return 0;
  void *p = mmap(NULL, sizeof(page_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -errno;
  page = p;
  pthread_atfork(NULL, NULL, forget_self);
  return 0;
}

mg_cap_t *mg_caps_member(const char *balancer, const char *url, int max_conns) {
  if (!page) return NULL;
  char key[sizeof page->members[0].key];
  snprintf(key, sizeof key, "%s\t%s", balancer, url);
  mg_cap_t *free_entry = NULL;
  for (int i = 0; i < MG_CAPS_MEMBERS; i++) {
    mg_cap_t *c = &page->members[i];
    if (!c->key[0]) {
      if (!free_entry) free_entry = c;
    } else if (strcmp(c->key, key) == 0) {
      __atomic_store_n(&c->max, max_conns, __ATOMIC_RELAXED);
      return c;
    }
  }
  if (!free_entry) return NULL;
  memset(free_entry, 0, sizeof *free_entry);
  free_entry->max = max_conns;
  snprintf(free_entry->key, sizeof free_entry->key, "%s", key);
  return free_entry;
}

mg_capq_t *mg_caps_queue(const char *balancer) {
  if (!page) return NULL;
  mg_capq_t *free_entry = NULL;
  for (int i = 0; i < MG_CAPS_QUEUES; i++) {
    mg_capq_t *q = &page->queues[i];
    if (!q->key[0]) {
      if (!free_entry) free_entry = q;
    } else if (strcmp(q->key, balancer) == 0) {
      return q;
    }
  }
  if (!free_entry) return NULL;
  memset(free_entry, 0, sizeof *free_entry);
  free_entry->ticket = 1;
  snprintf(free_entry->key, sizeof free_entry->key, "%s", balancer);
  return free_entry;
}

int mg_caps_self(void) {
  if (!page) return -1;
  if (self_known) return self;
  self_known = 1;
  int pid = (int)getpid();
  for (int i = 0; i < MG_CAPS_PROCS; i++) {
    int32_t expect = 0;
    if (__atomic_compare_exchange_n(&page->pids[i], &expect, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
      self = i;
      break;
    }
  }
  return self;
}

int mg_cap_acquire(mg_cap_t *c) {
  int32_t max = __atomic_load_n(&c->max, __ATOMIC_RELAXED);
  int32_t cur = __atomic_load_n(&c->busy, __ATOMIC_RELAXED);
  for (;;) {
    if (max > 0 && cur >= max) return 0;
    if (__atomic_compare_exchange_n(&c->busy, &cur, cur + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) break;
  }
  int me = mg_caps_self();
  if (me >= 0) __atomic_add_fetch(&c->held[me], 1, __ATOMIC_RELAXED);
  return 1;
}

void mg_cap_release(mg_cap_t *c) {
  int me = mg_caps_self();
  if (me >= 0) __atomic_sub_fetch(&c->held[me], 1, __ATOMIC_RELAXED);
  __atomic_sub_fetch(&c->busy, 1, __ATOMIC_RELEASE);
}

void mg_caps_reap(int pid) {
  if (!page || pid <= 0) return;
  for (int p = 0; p < MG_CAPS_PROCS; p++) {
    if (__atomic_load_n(&page->pids[p], __ATOMIC_ACQUIRE) != pid) continue;
    for (int i = 0; i < MG_CAPS_MEMBERS; i++) {
      mg_cap_t *c = &page->members[i];
      int32_t h = __atomic_exchange_n(&c->held[p], 0, __ATOMIC_ACQ_REL);
      if (h) __atomic_sub_fetch(&c->busy, h, __ATOMIC_RELEASE);
    }
    for (int i = 0; i < MG_CAPS_QUEUES; i++) {
      mg_capq_t *q = &page->queues[i];
      int32_t n = __atomic_exchange_n(&q->proc[p].n, 0, __ATOMIC_ACQ_REL);
      if (n) __atomic_sub_fetch(&q->waiting, n, __ATOMIC_RELEASE), __atomic_add_fetch(&q->gone, (uint64_t)n, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&page->pids[p], 0, __ATOMIC_RELEASE);
  }
}
