/* worker: see worker.h.
 *
 * Stopping: TERM/INT close the listeners, close idle connections, let busy ones finish their
 * response, and exit at the latest after shutdown_timeout; QUIT does the same without a
 * deadline. The listening sockets themselves stay open in the master, so a stopping worker
 * never refuses a connection another worker could take. */
#include "worker.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "fdio.h"
#include "health.h"
#include "passive.h"
#include "http2.h"
#include "listen.h"
#include "log.h"
#include "hooks.h"
#include "lua_timer.h"
#include "metrics.h"
#include "metrics_page.h"

static void server_maybe_done(mg_server_t *s);

static void on_conn_closed(mg_server_t *s) {
  if (s->draining) server_maybe_done(s);
}

static void on_signal_closed(uv_handle_t *h) { (void)h; }

/* A stopping worker also waits for its Lua timers (run prematurely when it began to stop) and
 * its log hooks that wait, until they end or shutdown_timeout passes. */
static void on_lua_idle(void *arg) {
  mg_server_t *s = arg;
  if (s->draining) server_maybe_done(s);
}

static void server_maybe_done(mg_server_t *s) {
  /* Reached twice when closing the idle connections ends the last one (from its close, then
   * from the drain that closed it): the handles are closed once. */
  if (s->nconns > 0 || mg_lua_timers_busy() > 0 || uv_is_closing((uv_handle_t *)&s->sig_term)) return;
  uv_close((uv_handle_t *)&s->sig_term, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_quit, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_hup, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_usr1, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_int, on_signal_closed);
  uv_close((uv_handle_t *)&s->shutdown_timer, on_signal_closed);
  mg_listeners_close(s, on_signal_closed);
  mg_timeq_close(&s->timeouts, on_signal_closed);
  mg_timeq_close(&s->h2_timeouts, on_signal_closed);
  uv_stop(s->loop);
}

static void on_shutdown_timeout(uv_timer_t *t) {
  mg_server_t *s = t->data;
  mg_log(MG_LOG_WARN, "shutdown_timeout: closing %llu connections still open", (unsigned long long)s->nconns);
  _exit(0);
}

static void server_drain(mg_server_t *s, uint64_t deadline_ms, int close_idle) {
  if (!s->draining) {
    s->draining = 1;
    mg_listeners_stop(s);
    /* mg.worker.exiting() is true from now; pending timers run at once, premature. */
    mg_lua_timers_exit(on_lua_idle, s);
  }
  /* Busy connections see `draining` when their response head is made and close after it.
   * When stopping, idle keep-alive connections close now; on QUIT (a reload) they stay until
   * their next request, since closing them would race with a request the client is sending. */
  mg_h2_server_drain(s);
  if (close_idle) {
    s->stopping = 1;
    mg_server_close_idle(s);
  }
  if (deadline_ms) uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, deadline_ms, 0);
  server_maybe_done(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  mg_server_t *s = h->data;
  if (signum == SIGHUP) return; /* the master reloads by replacing workers */
  if (signum == SIGUSR1) {
    int rc = mg_log_reopen();
    if (rc < 0) mg_log(MG_LOG_ERROR, "reopening the log files failed: %s", strerror(-rc));
    return;
  }
  /* QUIT (also how a reload retires old workers) keeps idle keep-alive connections until
   * their next request; TERM and INT close them at once. */
  server_drain(s, signum == SIGQUIT ? 0 : s->cfg->set.shutdown_timeout, signum != SIGQUIT);
}

/* After a burst of requests the allocator keeps the freed memory of every request that was in
 * flight at the peak; idle keep-alive connections would then look as if each held kilobytes.
 * Once a second, when requests have finished since the last look and none is in flight, the
 * free pages go back to the kernel. */
static void on_trim(uv_timer_t *t) {
  mg_server_t *s = t->data;
  static uint64_t last_trimmed;
  if (s->nfinished == last_trimmed || s->nfinished != s->nreqs) return;
  last_trimmed = s->nfinished;
  malloc_trim(0);
}

/* Tells the master that this worker accepts (it retires an old generation only then): the
 * pid in one write, which a pipe keeps whole. */
static void server_report_ready(int fd) {
  if (fd < 0) return;
  int32_t pid = (int32_t)getpid();
  ssize_t w = write(fd, &pid, sizeof pid);
  (void)w;
  close(fd);
}

int mg_server_run(mg_config_t *cfg, const int *fds, int slot, int nslots, int ready_fd) {
  mg_server_t s;
  memset(&s, 0, sizeof s);
  s.on_conn_closed = on_conn_closed;
  s.loop = uv_default_loop();
  s.cfg = cfg;
  /* SPEC 20: this configuration's shared counters (mapped by the master before the fork). */
  mg_metrics_use(cfg->metrics);
  mg_req_observer = cfg->metrics ? mg_metrics_observe : NULL;
  signal(SIGPIPE, SIG_IGN);
  uv_signal_t *sigs[] = {&s.sig_term, &s.sig_quit, &s.sig_hup, &s.sig_int, &s.sig_usr1};
  int nums[] = {SIGTERM, SIGQUIT, SIGHUP, SIGINT, SIGUSR1};
  for (int i = 0; i < 5; i++) {
    uv_signal_init(s.loop, sigs[i]);
    sigs[i]->data = &s;
    uv_signal_start(sigs[i], on_signal, nums[i]);
  }
  uv_timer_init(s.loop, &s.shutdown_timer);
  s.shutdown_timer.data = &s;
  uv_timer_t trim;
  uv_timer_init(s.loop, &trim);
  trim.data = &s;
  uv_timer_start(&trim, on_trim, 1000, 1000);
  uv_unref((uv_handle_t *)&trim);
  /* libuv keeps a spare descriptor (/dev/null) per loop, opened when the loop's first stream
   * is made. The listeners are polls, so that would be on the first connection; made now, a
   * worker holds the same descriptors before and after its first client. */
  static uv_pipe_t first_stream;
  uv_pipe_init(s.loop, &first_stream, 0);
  uv_close((uv_handle_t *)&first_stream, NULL);
  if (mg_listeners_start(&s, fds) < 0) return 1;
  if (mg_fdio_init(s.loop) < 0) {
    mg_log(MG_LOG_ERROR, "cannot create the upstream epoll set: %s", strerror(errno));
    return 1;
  }
  mg_lua_worker_identity(slot, nslots); /* mg.worker.id(), stable across reloads */
  if (mg_hooks && mg_hooks->worker_start(cfg, s.loop) < 0) return 1;
  if (slot == 0) mg_health_start(cfg, s.loop);
  if (slot == 0) mg_passive_start(cfg, s.loop); /* logs ejected members' returns */
  server_report_ready(ready_fd);
  uv_run(s.loop, UV_RUN_DEFAULT);
  return 0;
}
