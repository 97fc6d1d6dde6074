/* stream: the libuv stream handle every socket owner embeds (client connections, backend
 * connections, listeners, health probes): TCP or a unix socket, seen as a handle or a stream.
 * Each owner embeds it and sets handle.data to itself, so callbacks find their owner. */
#ifndef MG_STREAM_H
#define MG_STREAM_H

#include <uv.h>

typedef union {
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_handle_t handle;
  uv_stream_t stream;
} mg_stream_t;

#endif
