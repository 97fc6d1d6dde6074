/* master: the master process (see master.c for the design). */
#ifndef MG_MASTER_H
#define MG_MASTER_H

#include "config.h"

/* Runs the master until it is stopped; takes ownership of cfg. Returns the exit status. */
int mg_master_run(mg_config_t *cfg, const char *pid_file);

/* The owner of log files the master creates: the workers' user and group (mg.set). */
void mg_master_set_log_owner(const mg_config_t *cfg);

#endif
