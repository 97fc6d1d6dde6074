/* fdio: descriptors watched edge-triggered beside libuv, for the upstream path.
 *
 * libuv's streams re-arm epoll whenever reading or writing starts or stops and ask the kernel
 * for SO_ERROR after every connect: three syscalls per backend connection that change nothing.
 * Here a descriptor is registered once, for its whole life, in an epoll set of the worker's own
 * (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET), and closing it removes it; that set is itself
 * one descriptor in libuv's loop (a uv_poll), so everything still runs on the worker's one
 * loop, in its turn. Edge-triggered means the owner reads and writes until EAGAIN and keeps
 * what it learnt (readable, writable) until then.
 *
 * A callback gets the events that arrived (MG_FDIO_IN, OUT, HUP -- the peer closed its
 * side --, ERR) or MG_FDIO_AGAIN when the owner asked with mg_fdio_again() to be called on the
 * next loop turn (to go on reading after a pause, without a new edge). After mg_fdio_close()
 * no callback comes; the owner's memory must stay valid until the loop's close callbacks run
 * (events of the current batch may still name it; they are skipped). */
#ifndef MG_FDIO_H
#define MG_FDIO_H

#include <uv.h>

enum { MG_FDIO_IN = 1, MG_FDIO_OUT = 2, MG_FDIO_HUP = 4, MG_FDIO_ERR = 8, MG_FDIO_AGAIN = 16 };

typedef struct mg_fdio_s mg_fdio_t;
typedef void (*mg_fdio_cb)(mg_fdio_t *io, unsigned events);

struct mg_fdio_s {
  int fd; /* -1 when closed */
  mg_fdio_cb cb;
  void *data;
  mg_fdio_t *again_next;
  unsigned again : 1;
};

/* Makes the worker's epoll set (once; mg_fdio_open does it when needed). 0 or -errno. */
int mg_fdio_init(uv_loop_t *loop);
/* Watches fd (non-blocking, owned from here on: mg_fdio_close closes it). Returns 0 or -errno
 * (the fd is then closed). */
int mg_fdio_open(uv_loop_t *loop, mg_fdio_t *io, int fd, mg_fdio_cb cb, void *data);
/* Closes the descriptor; no callback comes after. Safe to call twice. */
void mg_fdio_close(mg_fdio_t *io);
/* Calls cb(io, MG_FDIO_AGAIN) on the next loop turn (once, however often it is asked). */
void mg_fdio_again(mg_fdio_t *io);

#endif
