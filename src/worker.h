/* worker: one worker process's event loop.
 *
 * The master binds the listening sockets (http/listen.c) and forks the workers; each serves
 * them from its own loop (mg_server_run): signals (TERM/INT stop, QUIT drains, USR1 reopens
 * the logs), the drain that lets busy connections finish, the readiness report to the
 * master, the configuration's init_worker hooks and timers (through the hooks table) and the
 * health checks of worker 0. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <uv.h>

#include "config.h"
#include "loop.h"
#include "stream.h"

/* Serves the given listening fds (one per cfg->listens entry) until stopped, as worker `slot`
 * of `nslots` (mg.worker.id() and count(); a reload's new worker takes its old one's slot).
 * Runs init_worker hooks first, then writes the worker's pid to ready_fd (when not -1) and closes
 * it: the master's sign that this worker accepts. Returns 0 on a clean stop. */
int mg_server_run(mg_config_t *cfg, const int *fds, int slot, int nslots, int ready_fd);


#endif
