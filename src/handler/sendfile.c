/* sendfile: see sendfile.h. */
#include "sendfile.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "static.h"

void mg_sendfile_start(mg_req_t *req, const char *path) {
  const mg_route_t *r = req->route;
  if (path[0] != '/') {
    mg_req_error(req, 403, "sendfile path \"%s\" from the backend is not absolute", path);
    return;
  }
  int fd = -EXDEV;
  for (int i = 0; i < r->nsendfile_roots && fd == -EXDEV; i++) {
    const char *root = r->sendfile_roots[i];
    size_t rl = strlen(root);
    if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && !(rl == 1 && root[0] == '/'))) continue;
    fd = mg_static_open_beneath(r->sendfile_root_fds[i], path + rl);
  }
  if (fd == -EXDEV || fd == -ELOOP) {
    mg_req_error(req, 403, "sendfile path \"%s\" is outside sendfile_roots of route %s", path, r->match);
    return;
  }
  if (fd < 0) {
    mg_req_error(req, r->sendfile_missing, "sendfile path \"%s\": %s", path, strerror(-fd));
    return;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    mg_req_error(req, 403, "sendfile path \"%s\" is not a regular file", path);
    return;
  }
  /* The backend's Content-Length described the body it did not send. */
  mg_fields_set(&req->pool, &req->resp_headers, "Content-Length", NULL);
  mg_file_send(req, fd, &st, 0, NULL);
}
