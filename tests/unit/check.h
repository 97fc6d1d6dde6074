/* check.h: the unit tests' assertions. Each test binary ends with CHECK_DONE(), which prints
 * "N passed, N failed" and exits non-zero on a failure. */
#ifndef MG_CHECK_H
#define MG_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_pass, check_fail;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) check_pass++;                                                      \
    else check_fail++, fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
  } while (0)
#define CHECK_STR(a, b)                                                                          \
  do {                                                                                           \
    const char *a_ = (a), *b_ = (b);                                                             \
    if (a_ && b_ && strcmp(a_, b_) == 0) check_pass++;                                           \
    else check_fail++, fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
  } while (0)
#define CHECK_DONE()                                               \
  do {                                                             \
    printf("%d passed, %d failed\n", check_pass, check_fail);      \
    return check_fail ? 1 : 0;                                     \
  } while (0)
#endif
