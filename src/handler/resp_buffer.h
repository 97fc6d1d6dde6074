/* resp_buffer: a backend's response read as fast as it comes (SPEC 19, response_buffering).
 *
 * Pre-fork SCGI servers have a handful of workers; a client that downloads slowly must not
 * hold one. The upstream hands each body piece to mg_rbuf_put instead of the response API:
 * while the client keeps up (fewer than the route's response_buffer_size bytes wait in the
 * sink) the piece goes straight on, without a copy; beyond that it is appended to an unlinked
 * temporary file, and the file is fed to the client a block at a time as it drains. The
 * backend is read on until the file holds response_temp_max bytes, so with the default 1 GiB
 * it is released as soon as its response is in, long before the client has it. Memory per
 * request stays bounded by the sink's queue whatever the response's size.
 *
 * A buffer is made by the upstream (mg_rbuf_new) and owned by it until mg_rbuf_end, when the
 * backend's body is complete and the upstream closes: from then on the request owns it (its
 * handler_cancel and handler_data), and it ends the response when the file is empty. */
#ifndef MG_RESP_BUFFER_H
#define MG_RESP_BUFFER_H

#include "request.h"

typedef struct mg_rbuf_s mg_rbuf_t;

/* A buffer for req's response body; on_space(arg) is called when a backend that was told to
 * stop (mg_rbuf_put returned 1) may be read again. */
mg_rbuf_t *mg_rbuf_new(mg_req_t *req, void (*on_space)(void *arg), void *arg);
/* A body piece from the backend, in `block` (a pooled block, owned from here on) or in memory
 * that stays valid until the call returns. Returns 0; 1 when the backend should not be read
 * until on_space (the file is full, or the client is taking what waits in memory); -errno
 * when the file could not be written (logged; the caller cuts the response). The request may have finished when it returns (the client went
 * away): the caller checks its own link to it. */
int mg_rbuf_put(mg_rbuf_t *rb, char *block, const char *data, size_t len);
/* The backend's body is complete and its upstream is closing: the client gets the rest, then
 * the end of the response. The buffer belongs to the request from here on. */
void mg_rbuf_end(mg_rbuf_t *rb);
/* Drops the buffer and what it holds (the upstream failed, or the request ended). */
void mg_rbuf_free(mg_rbuf_t *rb);

#endif
