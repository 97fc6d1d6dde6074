/* fuzz_harness.h: what fuzz_http.c and fuzz_h2.c share, included by each (one translation
 * unit per target): the server and loop the connection runs on, an in-process SCGI backend on
 * a unix socket that checks the policy invariant (docs/reliability.md, "The policy invariant")
 * on every request it receives, and the start of a worker from a configuration text.
 *
 * The including file defines backend_answer(): what the backend sends back for a request
 * whose variables passed the check (it sets bc->answered and writes, or leaves the request
 * unanswered). */
#ifndef MG_FUZZ_HARNESS_H
#define MG_FUZZ_HARNESS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "hooks.h"
#include "log.h"
#include "loop.h"
#include "scgi.h"


/* The policy the harness checks, in the configuration of both targets: a global access hook
 * that edits headers and env as a policy would (and may wait), and the /scgi route whose last
 * access hook writes in MG_EXPECT the HTTP_* variables its view implies (docs/reference.md,
 * "What the backend receives"). */
#define MG_FUZZ_POLICY_LUA \
    "mg.on('access', function(req)\n" \
    "  if req.headers['w'] then mg.sleep(0) end\n" \
    "  if req.headers['a'] then req.headers['x-user'] = 'alice' end\n" \
    "  req.headers['authorization'] = nil\n" \
    "  if req.headers['b'] then req.env.HTTP_B = false end\n" \
    "  if req.headers['c'] then req.env.HTTP_C = 'env' end\n" \
    "end)\n" \
    "mg.route('/scgi', 'unix:' .. BACKEND .. '|scgi://', { hooks = { access = function(req)\n" \
    "  local want = {}\n" \
    "  for name, v in pairs(req:headers()) do\n" \
    "    if name:match('^[%w-]+$') and name ~= 'content-length' and name ~= 'content-type' and name ~= 'proxy' then\n" \
    "      if type(v) == 'table' then v = table.concat(v, name == 'cookie' and '; ' or ', ') end\n" \
    "      want['HTTP_' .. name:upper():gsub('-', '_')] = v\n" \
    "    end\n" \
    "  end\n" \
    "  if ngx.var.traceparent then want.HTTP_TRACEPARENT = ngx.var.traceparent end\n" \
    "  for name, v in pairs(req.env) do want[name] = v or nil end\n" \
    "  local lines = {}\n" \
    "  for name, v in pairs(want) do lines[#lines + 1] = name .. '=' .. v end\n" \
    "  table.sort(lines)\n" \
    "  req.env.MG_EXPECT = table.concat(lines, '\\n')\n" \
    "end } })\n"

static mg_server_t server;
static uv_loop_t loop;
static uv_pipe_t backend;
static char backend_path[108];
static unsigned backend_events; /* callbacks of the backend so far: the loop is not idle */

typedef struct {
  uv_pipe_t h;
  uv_write_t w;
  mg_buf_t in;
  int answered;
} backend_conn_t;

static void backend_answer(backend_conn_t *bc, uv_stream_t *s, const mg_vars_t *vars);

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The HTTP_* variables received, "NAME=value" sorted and joined by newlines, against MG_EXPECT. */
static void check_invariant(const mg_vars_t *vars) {
  const mg_var_t *expect = mg_vars_get(vars, "MG_EXPECT");
  if (!expect) return; /* a request the access hook never saw (an internal redirect target) */
  char **lines = calloc((size_t)vars->n + 1, sizeof *lines);
  int n = 0;
  for (int i = 0; i < vars->n; i++) {
    const mg_var_t *v = &vars->v[i];
    if (v->name_len < 5 || memcmp(v->name, "HTTP_", 5) != 0) continue;
    lines[n] = malloc(v->name_len + v->value_len + 2);
    memcpy(lines[n], v->name, v->name_len);
    lines[n][v->name_len] = '=';
    memcpy(lines[n] + v->name_len + 1, v->value, v->value_len);
    lines[n][v->name_len + v->value_len + 1] = 0;
    n++;
  }
  qsort(lines, (size_t)n, sizeof *lines, cmp_str);
  mg_buf_t got;
  mg_buf_init(&got);
  for (int i = 0; i < n; i++) {
    if (i) mg_buf_append(&got, "\n", 1);
    mg_buf_puts(&got, lines[i]);
    free(lines[i]);
  }
  free(lines);
  if (got.len != expect->value_len || memcmp(got.data ? got.data : "", expect->value, got.len) != 0) {
    fprintf(stderr, "policy invariant broken: the backend received\n%.*s\nthe last access hook left\n%.*s\n",
            (int)got.len, got.data ? got.data : "", (int)expect->value_len, expect->value);
    abort();
  }
  mg_buf_free(&got);
}

static void on_backend_closed(uv_handle_t *h) {
  backend_events++;
  backend_conn_t *bc = h->data;
  mg_buf_free(&bc->in);
  free(bc);
}

static void on_backend_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, on_backend_closed);
}

static void on_backend_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  static char block[65536];
  *buf = uv_buf_init(block, sizeof block);
}

static void on_backend_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  backend_conn_t *bc = s->data;
  backend_events++;
  if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, on_backend_closed);
    return;
  }
  if (bc->answered) return;
  mg_buf_append(&bc->in, buf->base, (size_t)nread);
  mg_vars_t vars;
  mg_vars_init(&vars);
  long used = mg_scgi_decode(bc->in.data, bc->in.len, &vars);
  if (used == 0) {
    mg_vars_free(&vars);
    return;
  }
  if (used < 0) abort(); /* moongate sent a malformed netstring */
  check_invariant(&vars);
  backend_answer(bc, s, &vars);
  mg_vars_free(&vars);
}

static void on_backend_connection(uv_stream_t *listener, int status) {
  backend_events++;
  if (status < 0) return;
  backend_conn_t *bc = calloc(1, sizeof *bc);
  mg_buf_init(&bc->in);
  uv_pipe_init(&loop, &bc->h, 0);
  bc->h.data = bc;
  if (uv_accept(listener, (uv_stream_t *)&bc->h) < 0) {
    uv_close((uv_handle_t *)&bc->h, on_backend_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&bc->h, on_backend_alloc, on_backend_read);
}

/* Loads config_src (after `local BACKEND = '<socket>'`), opens the backend and starts the Lua
 * side of a worker on the loop, as a worker does. `name` names the socket and the file. */
static mg_config_t *harness_start(const char *name, const char *config_src, size_t len) {
  /* As a worker does (mg_server_run): a peer that closed is an EPIPE, not a signal. The
   * harness's backend can answer a connection the gateway has already given up. */
  signal(SIGPIPE, SIG_IGN);
  snprintf(backend_path, sizeof backend_path, "/tmp/mg-fuzz-%s-%d.sock", name, (int)getpid());
  char path[64];
  snprintf(path, sizeof path, "/tmp/mg-fuzz-%s-XXXXXX.lua", name);
  int fd = mkstemps(path, 4);
  char prelude[160];
  int pl = snprintf(prelude, sizeof prelude, "local BACKEND = '%s'\n", backend_path);
  if (fd < 0 || write(fd, prelude, (size_t)pl) < 0 || write(fd, config_src, len) < 0) abort();
  close(fd);
  char err[1024];
  mg_config_t *cfg = mg_config_load(path, err, sizeof err);
  unlink(path);
  if (!cfg) {
    fprintf(stderr, "fuzz config: %s\n", err);
    abort();
  }
  /* Every refused input logs a line; the fuzzer needs none of them. */
  mg_log_open("/dev/null", NULL, "error");
  uv_loop_init(&loop);
  unlink(backend_path);
  if (uv_pipe_init(&loop, &backend, 0) < 0 || uv_pipe_bind(&backend, backend_path) < 0 ||
      uv_listen((uv_stream_t *)&backend, 64, on_backend_connection) < 0)
    abort();
  uv_unref((uv_handle_t *)&backend);
  server.loop = &loop;
  /* The Lua threads' wake queue and timers run on this loop. */
  if (mg_hooks->worker_start(cfg, &loop) < 0) abort();
  server.cfg = cfg;
  return cfg;
}

#endif
