/* malloc_count: an LD_PRELOAD shim for tests/e2e/test_syscalls.py. Counts the calls to malloc,
 * calloc, realloc and the aligned allocators of every process it is loaded into, in one 8-byte
 * counter in the file named by $MG_MALLOC_COUNT (a shared mapping, so a forked worker adds to
 * the same counter and the test reads it while the server runs). The allocations themselves
 * are glibc's (__libc_*), so nothing else changes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static unsigned long *counter;

__attribute__((constructor)) static void open_counter(void) {
  const char *path = getenv("MG_MALLOC_COUNT");
  if (!path) return;
  int fd = open(path, O_RDWR | O_CREAT, 0600);
  if (fd < 0) return;
  if (ftruncate(fd, sizeof *counter) == 0) {
    void *p = mmap(NULL, sizeof *counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) counter = p;
  }
  close(fd);
}

static void count(void) {
  if (counter) __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) {
  count();
  return __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
  count();
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
  count();
  return __libc_realloc(p, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
  count();
  void *p = __libc_memalign(align, n);
  if (!p) return 12; /* ENOMEM */
  *out = p;
  return 0;
}

void *aligned_alloc(size_t align, size_t n) {
  count();
  return __libc_memalign(align, n);
}
