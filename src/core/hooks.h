/* hooks: the table through which the core reaches the layer above it (the Lua binding).
 *
 * core/, http/ and handler/ never name a Lua function: the binding fills this table once,
 * before a worker serves (lua/lua_hooks.c), and they call through it. A NULL table (the unit
 * tests, a configuration without Lua) means no hooks run. Each entry is one of the points
 * where a request meets policy; the phase engine (phase.c) runs the waiting ones. */
#ifndef MG_HOOKS_H
#define MG_HOOKS_H

#include <stddef.h>
#include <uv.h>

#include "request.h"

typedef struct {
  /* Runs hook `ref` (from mg_req_hook_at) of a rewrite or access phase. MG_OK: it returned
   * and the request goes on; MG_ENDED: it answered, redirected or failed, and the request is
   * handled; MG_WAITS: it waits, and mg_phase_resume(req, result) follows later. */
  int (*run)(mg_req_t *req, int phase, int ref);
  /* The request ends while a hook or handler waits (req->thread): that wait is abandoned. */
  void (*abandon)(mg_req_t *req);
  /* The header_filter hooks, before the head is framed; an error sets req->filter_failed. */
  void (*header_filter)(mg_req_t *req);
  /* The body_filter hooks on a piece (eof on the last call): MG_OK with the piece to send in
   * *out (malloc'd, the caller's), or a negative value (a failure) after logging the error. */
  int (*body_filter)(mg_req_t *req, const char *data, size_t len, int eof, char **out, size_t *out_len);
  /* The log hooks, once the response is complete. */
  void (*log)(mg_req_t *req);
  /* The balancer hooks and a Lua method: MG_OK with the chosen 1-based member in *member (0
   * to let the balancer choose), or MG_ENDED when a hook failed (500) or answered. */
  int (*balancer)(mg_req_t *req, mg_balancer_t *b, int method, int *member);
  /* req.env into req->env_list and req->env_pathinfo, for the SCGI environment; needed only
   * for a request the binding has touched (req->lua). */
  void (*env_export)(mg_req_t *req);
  /* A worker starts serving cfg in loop: init_worker hooks and timers. 0 or -1. */
  int (*worker_start)(mg_config_t *cfg, uv_loop_t *loop);
  /* 1 while Lua code of req runs (a coroutine or a hook's call): an error answered from
   * inside it cannot restart the request on an error page. */
  int (*running)(const mg_req_t *req);
  /* Calls into Lua so far (the status page). */
  uint64_t (*calls)(void);
} mg_hooks_table_t;

extern const mg_hooks_table_t *mg_hooks;

#endif
