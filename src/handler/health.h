/* health: active SCGI health checks of balancer members (see health.c). */
#ifndef MG_HEALTH_H
#define MG_HEALTH_H

#include <uv.h>

#include "config.h"

/* Starts the checks of every balancer that has `health`, in this worker's loop. */
void mg_health_start(mg_config_t *cfg, uv_loop_t *loop);

#endif
