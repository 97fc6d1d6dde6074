/* control: `moongate member drain|enable|disable BALANCER URL [--wait]` (docs/balancer.md, "Live
 * control"; SPEC 20), both ends.
 *
 * The master listens on a unix socket beside its pid file (PID_FILE.ctl, mode 0600: whoever may
 * write there is the operator; no other authentication). A request is one line, "ACTION
 * BALANCER URL [wait]"; the master changes the member's slot in shared memory (the same change
 * as the manager page's, handler/balancer.c), which every worker follows at its next pick, and
 * answers one line, "ok ..." or "error ...". With wait, the answer comes when the member has
 * nothing in flight in any worker (the shared in-flight count is zero). */
#ifndef MG_CONTROL_H
#define MG_CONTROL_H

#include "config.h"

/* The master's side. mg_control_open makes the socket (replacing a stale one): its descriptor,
 * or -1 (logged; the master runs without it). */
int mg_control_open(const char *pid_file);
/* The socket is readable: takes one request. */
void mg_control_accept(mg_config_t *cfg);
/* Answers the waiters whose member is idle; returns the poll timeout (ms) the master should
 * use at most (-1: no waiter). */
int mg_control_tick(mg_config_t *cfg);
void mg_control_close(void);
/* In a forked worker: the master's descriptors are closed, the socket left to the master. */
void mg_control_forget(void);

/* The command's side: sends `line` to the master of pid_file, prints its answer; the exit
 * status (0 ok, 1 refused or unreachable). */
int mg_control_request(const char *pid_file, const char *line);

#endif
