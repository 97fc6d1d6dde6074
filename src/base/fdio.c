/* fdio: see fdio.h. */
#include "fdio.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

/* One set per process: a worker has one loop (and --explain one). */
static int epfd = -1;
static uv_poll_t poll_handle;
static uv_idle_t idle_handle;
static mg_fdio_t *again_head;

static void on_ready(uv_poll_t *h, int status, int events) {
  (void)h, (void)status, (void)events;
  struct epoll_event ev[64];
  int n = epoll_wait(epfd, ev, 64, 0);
  for (int i = 0; i < n; i++) {
    mg_fdio_t *io = ev[i].data.ptr;
    if (io->fd < 0) continue; /* closed by an earlier callback of this batch */
    unsigned e = 0, k = ev[i].events;
    if (k & EPOLLIN) e |= MG_FDIO_IN;
    if (k & EPOLLOUT) e |= MG_FDIO_OUT;
    if (k & (EPOLLRDHUP | EPOLLHUP)) e |= MG_FDIO_HUP;
    if (k & EPOLLERR) e |= MG_FDIO_ERR;
    io->cb(io, e);
  }
}

static void on_idle(uv_idle_t *h) {
  mg_fdio_t *list = again_head;
  again_head = NULL;
  uv_idle_stop(h);
  while (list) {
    mg_fdio_t *io = list;
    list = io->again_next;
    io->again = 0;
    if (io->fd >= 0) io->cb(io, MG_FDIO_AGAIN);
  }
}

int mg_fdio_init(uv_loop_t *loop) {
  if (epfd >= 0) return 0;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return -errno;
  uv_poll_init(loop, &poll_handle, epfd);
  uv_poll_start(&poll_handle, UV_READABLE, on_ready);
  /* Neither keeps the loop alive on its own: the owners' timers and requests do. */
  uv_unref((uv_handle_t *)&poll_handle);
  uv_idle_init(loop, &idle_handle);
  uv_unref((uv_handle_t *)&idle_handle);
  return 0;
}

int mg_fdio_open(uv_loop_t *loop, mg_fdio_t *io, int fd, mg_fdio_cb cb, void *data) {
  io->fd = -1, io->cb = cb, io->data = data, io->again = 0, io->again_next = NULL;
  int rc = mg_fdio_init(loop);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  io->fd = fd;
  return 0;
}

void mg_fdio_close(mg_fdio_t *io) {
  if (io->fd < 0) return;
  close(io->fd); /* the last reference: epoll forgets it */
  io->fd = -1;
  if (io->again) {
    for (mg_fdio_t **p = &again_head; *p; p = &(*p)->again_next)
      if (*p == io) {
        *p = io->again_next;
        break;
      }
    io->again = 0;
  }
}

void mg_fdio_again(mg_fdio_t *io) {
  if (io->again || io->fd < 0) return;
  io->again = 1;
  io->again_next = again_head;
  again_head = io;
  uv_idle_start(&idle_handle, on_idle);
}
