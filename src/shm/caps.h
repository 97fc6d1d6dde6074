/* caps: member slots (max_conns) and balancer queue state in shared memory (SPEC 20).
 *
 * One page of shared memory, mapped by the master before it forks, holds per balancer member
 * a slot counter and per balancer the queue's shared state, found by name at load (a reload
 * keeps the entries whose names stay, so old and new workers count against one number).
 *
 * A slot is taken with a compare-and-swap on the member's `busy` (taken only while it is under
 * `max`), so workers together never exceed max_conns; each process also counts what it holds
 * in `held[its index]`, and the master gives back a dead worker's slots and waiters
 * (mg_caps_reap), so a crash leaks nothing. Processes are numbered by the first
 * MG_CAPS_PROCS that use the page at once; a process beyond them still counts exactly but its
 * slots are not given back if it dies, and it cannot queue.
 *
 * The queue entry counts waiters over all workers (`waiting`, bounded by the queue's size with
 * one atomic add), hands out tickets in arrival order, and shows per process the ticket of its
 * oldest waiter and when it last looked (`seen_ms`), which is how a worker tells whether an
 * older waiter in another worker should get a free slot first (handler/queue.c). */
#ifndef MG_CAPS_H
#define MG_CAPS_H

#include <stdint.h>

#define MG_CAPS_PROCS 64
#define MG_CAPS_MEMBERS 2048
#define MG_CAPS_QUEUES 512

typedef struct {
  char key[200];   /* "balancer\tmember-url"; empty: a free entry */
  int32_t busy;    /* slots taken, all workers */
  int32_t max;     /* max_conns; 0: no limit. Set at load; a store here (atomic) changes it
                    * at once for every worker, which is how a live change would apply */
  int32_t held[MG_CAPS_PROCS];
} mg_cap_t;

typedef struct {
  int32_t n;        /* this process's waiters */
  int32_t pid;
  uint64_t head;    /* ticket of its oldest waiter (valid while n > 0) */
  uint64_t seen_ms; /* when it last looked at the queue */
} mg_capq_proc_t;

typedef struct {
  char key[128]; /* the balancer's name; empty: a free entry */
  int32_t waiting; /* waiters now, all workers */
  int32_t pad;
  uint64_t ticket; /* the next waiter's */
  /* counters, all workers: requests that waited; of them served by a member, timed out,
   * gone (the client left); refused (the queue was full, or no queue); wait time of those
   * served, in ms */
  uint64_t waits, served, timeouts, gone, refused, wait_ms;
  mg_capq_proc_t proc[MG_CAPS_PROCS];
} mg_capq_t;

/* Maps the page (once; the master, before any fork). 0, or -errno. */
int mg_caps_map(void);
/* The entry of member URL of balancer NAME (made if new), with max set to max_conns; or NULL
 * without the page or when the table is full. At load, in the master. */
mg_cap_t *mg_caps_member(const char *balancer, const char *url, int max_conns);
/* The queue entry of balancer NAME (made if new), or NULL. */
mg_capq_t *mg_caps_queue(const char *balancer);

/* This process's index in the page (claimed at its first call), or -1. */
int mg_caps_self(void);

/* Takes a slot of c if it has one free. 1: taken; 0: the member is at its max. */
int mg_cap_acquire(mg_cap_t *c);
void mg_cap_release(mg_cap_t *c);
static inline int mg_cap_full(const mg_cap_t *c) {
  int max = __atomic_load_n(&c->max, __ATOMIC_RELAXED);
  return max > 0 && __atomic_load_n(&c->busy, __ATOMIC_RELAXED) >= max;
}

/* The master: process `pid` is gone; its slots and waiters are given back. */
void mg_caps_reap(int pid);

#endif
