/* pids: the process ids of the workers, by slot, in a page of shared memory (mg.worker.pids,
 * ngx.worker.pids).
 *
 * The master maps the page before it forks the first worker, so every worker sees it. A slot
 * holds the pid of its newest worker that was not told to stop (0: none right now); the master
 * writes it after every turn of its loop, so right after a fork (before the new worker can
 * serve) and after every stop, death or reload. Each entry is one atomic store, read with one
 * atomic load: no lock. */
#ifndef MG_PIDS_H
#define MG_PIDS_H

#include <stddef.h>

/* The most slots the page holds (the master's worker limit). */
#define MG_PIDS_MAX 256

/* Maps the page (once; the master, before any fork). Returns 0, or -1 with errno set. */
int mg_pids_map(void);
/* Slot `slot` now shows `pid` (0: no worker). A no-op without a page or for a slot past it. */
void mg_pids_set(int slot, int pid);
/* The pid slot `slot` shows: 0 for none. Returns -1 without a page (not under a master). */
int mg_pids_get(int slot);

#endif
