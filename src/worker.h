/* server: one worker's event loop, its listeners and its connections.
 *
 * The master binds the listening sockets (mg_listen_bind) and every worker serves them from
 * its own loop (mg_server_start). The server counts connections against max_connections,
 * keeps the list of open connections so a drain can close the idle ones, and runs the
 * configuration's init_worker hooks and timers. */
#ifndef MG_WORKER_H
#define MG_WORKER_H

#include <uv.h>

#include "config.h"
#include "loop.h"
#include "stream.h"

/* Binds a listener: TCP with SO_REUSEADDR (and SO_REUSEPORT when reuseport), or a unix
 * socket (a stale socket file is replaced). Returns the listening fd or -errno, with a
 * message in err. */
int mg_listen_bind(const mg_listen_t *l, int reuseport, char *err, size_t err_len);

/* Serves the given listening fds (one per cfg->listens entry) until stopped. Runs
 * init_worker hooks first, then writes the worker's pid to ready_fd (when not -1) and closes
 * it: the master's sign that this worker accepts. Returns 0 on a clean stop. */
int mg_server_run(mg_config_t *cfg, const int *fds, int slot, int ready_fd);


#endif
