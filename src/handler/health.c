/* health: active health checks that speak SCGI (docs/balancer.md, "Health checks").
 *
 * Every `interval`, each member of a balancer with `health` gets a real SCGI GET for
 * `health.uri`; the check passes when the response's status is `expect` within `timeout`.
 * `fails` failures in a row take the member out, `passes` successes bring it back. One worker
 * (slot 0) runs the checks and writes the verdict into the member's shared counters, so every
 * worker sees it and the backends get one check per interval, not one per worker. */
#include "health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "balancer.h"
#include "buf.h"
#include "log.h"
#include "scgi.h"
#include "stream.h"

typedef struct {
  mg_stream_t h;
  uv_connect_t connect;
  uv_timer_t timer;
  uv_write_t write;
  mg_balancer_t *b;
  mg_member_t *m;
  mg_buf_t out, in;
  int handles, done;
} probe_t;

typedef struct {
  uv_timer_t timer;
  mg_balancer_t *b;
} checker_t;

static void on_probe_closed(uv_handle_t *h) {
  probe_t *p = h->data;
  if (--p->handles > 0) return;
  mg_buf_free(&p->out);
  mg_buf_free(&p->in);
  free(p);
}

static void verdict(probe_t *p, int ok, const char *why) {
  if (p->done) return;
  p->done = 1;
  mg_member_t *m = p->m;
  const mg_health_t *hc = p->b->health;
  mg_member_stats_t *s = m->shared ? m->shared : &m->local;
  if (ok) {
    m->health_fails = 0;
    if (s->health_down && ++m->health_passes >= hc->passes) {
      s->health_down = 0;
      m->local.health_down = 0;
      mg_log(MG_LOG_NOTICE, "health: member %s of balancer %s is back after %d passed checks", m->addr.url, p->b->name, hc->passes);
    }
  } else {
    m->health_passes = 0;
    if (!s->health_down && ++m->health_fails >= hc->fails) {
      s->health_down = 1;
      m->local.health_down = 1;
      snprintf(s->last_error, sizeof s->last_error, "health check: %s", why);
      mg_log(MG_LOG_WARN, "health: member %s of balancer %s taken out after %d failed checks: %s", m->addr.url,
             p->b->name, hc->fails, why);
    }
  }
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, on_probe_closed);
  uv_close(&p->h.handle, on_probe_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  probe_t *p = h->data;
  (void)hint;
  mg_buf_reserve(&p->in, 4096);
  buf->base = p->in.data + p->in.len;
  buf->len = p->in.cap - p->in.len - 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  probe_t *p = s->data;
  (void)buf;
  if (p->done) return;
  if (n < 0) {
    verdict(p, 0, n == UV_EOF ? "closed before a response header" : uv_strerror((int)n));
    return;
  }
  p->in.len += (size_t)n;
  mg_cgi_head_t *h = mg_malloc(sizeof *h);
  int rc = mg_cgi_parse(p->in.data, p->in.len, h);
  if (rc == MG_CGI_DONE) {
    char why[64];
    snprintf(why, sizeof why, "status %d, expected %d", h->status, p->b->health->expect);
    verdict(p, h->status == p->b->health->expect, why);
  } else if (rc == MG_CGI_ERROR || p->in.len > 65536) {
    verdict(p, 0, "malformed response");
  }
  free(h);
}

static void on_write(uv_write_t *w, int status) {
  probe_t *p = w->data;
  if (status < 0) verdict(p, 0, uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status) {
  probe_t *p = c->data;
  if (p->done) return;
  if (status < 0) {
    verdict(p, 0, uv_strerror(status));
    return;
  }
  uv_buf_t b = uv_buf_init(p->out.data, (unsigned)p->out.len);
  p->write.data = p;
  uv_write(&p->write, &p->h.stream, &b, 1, on_write);
  uv_read_start(&p->h.stream, on_alloc, on_read);
}

static void on_probe_timeout(uv_timer_t *t) { verdict(t->data, 0, "timed out"); }

static void probe_start(uv_loop_t *loop, mg_balancer_t *b, mg_member_t *m) {
  probe_t *p = mg_calloc(1, sizeof *p);
  p->b = b, p->m = m;
  mg_buf_init(&p->out);
  mg_buf_init(&p->in);
  const char *uri = b->health->uri;
  const char *q = strchr(uri, '?');
  size_t pl = q ? (size_t)(q - uri) : strlen(uri);
  mg_vars_t v;
  mg_vars_init(&v);
  mg_vars_add(&v, "CONTENT_LENGTH", 14, "0", 1);
  mg_vars_add(&v, "SCGI", 4, "1", 1);
  mg_vars_add(&v, "REQUEST_METHOD", 14, "GET", 3);
  mg_vars_add(&v, "REQUEST_URI", 11, uri, strlen(uri));
  mg_vars_add(&v, "QUERY_STRING", 12, q ? q + 1 : "", q ? strlen(q + 1) : 0);
  mg_vars_add(&v, "SCRIPT_NAME", 11, uri, pl);
  mg_vars_add(&v, "SERVER_PROTOCOL", 15, "HTTP/1.1", 8);
  mg_vars_add(&v, "SERVER_NAME", 11, "localhost", 9);
  mg_vars_add(&v, "SERVER_PORT", 11, "0", 1);
  mg_vars_add(&v, "SERVER_SOFTWARE", 15, "moongate/" MG_VERSION, strlen("moongate/" MG_VERSION));
  mg_vars_add(&v, "REMOTE_ADDR", 11, "127.0.0.1", 9);
  mg_vars_add(&v, "REQUEST_SCHEME", 14, "http", 4);
  mg_vars_add(&v, "HTTP_USER_AGENT", 15, "moongate-health-check", 21);
  mg_scgi_encode(&v, &p->out);
  mg_vars_free(&v);
  p->handles = 2;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->connect.data = p;
  int rc;
  if (m->addr.sa.ss_family == AF_UNIX) {
    uv_pipe_init(loop, &p->h.pipe, 0);
    p->h.handle.data = p;
    uv_pipe_connect(&p->connect, &p->h.pipe, ((struct sockaddr_un *)&m->addr.sa)->sun_path, on_connect);
    rc = 0;
  } else {
    uv_tcp_init(loop, &p->h.tcp);
    p->h.handle.data = p;
    rc = uv_tcp_connect(&p->connect, &p->h.tcp, (struct sockaddr *)&m->addr.sa, on_connect);
  }
  uv_timer_start(&p->timer, on_probe_timeout, b->health->timeout_ms, 0);
  if (rc < 0) verdict(p, 0, uv_strerror(rc));
}

static void on_interval(uv_timer_t *t) {
  checker_t *c = t->data;
  for (int i = 0; i < c->b->nmembers; i++) {
    mg_member_t *m = &c->b->members[i];
    if (!mg_member_shown(m)) continue; /* a name's slot without an address */
    if (m->flags & (MG_MEMBER_DISABLED | MG_MEMBER_STOPPED)) continue;
    probe_start(t->loop, c->b, m);
  }
}

void mg_health_start(mg_config_t *cfg, uv_loop_t *loop) {
  for (int i = 0; i < cfg->nbalancers; i++) {
    mg_balancer_t *b = cfg->balancers[i];
    if (!b->health) continue;
    checker_t *c = mg_calloc(1, sizeof *c);
    c->b = b;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_interval, 0, b->health->interval_ms);
    /* The checks alone must not keep a draining worker alive. */
    uv_unref((uv_handle_t *)&c->timer);
  }
}
