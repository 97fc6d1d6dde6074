/* pids: see pids.h. */
#include "pids.h"

#include <stdint.h>
#include <sys/mman.h>

static int32_t *page; /* MG_PIDS_MAX entries, shared with every worker forked after the map */

int mg_pids_map(void) {
  if (page) return 0;
  void *p = mmap(NULL, sizeof(int32_t) * MG_PIDS_MAX, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  page = p;
  return 0;
}

void mg_pids_set(int slot, int pid) {
  if (page && slot >= 0 && slot < MG_PIDS_MAX) __atomic_store_n(&page[slot], (int32_t)pid, __ATOMIC_RELEASE);
}

int mg_pids_get(int slot) {
  if (!page) return -1;
  if (slot < 0 || slot >= MG_PIDS_MAX) return 0;
  return (int)__atomic_load_n(&page[slot], __ATOMIC_ACQUIRE);
}
