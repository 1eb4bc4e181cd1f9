/* consumer.c - proves that an installed heaptrace links and runs, and that
 * its macros compile where a program's headers may put them. */
#include <heaptrace/heaptrace.h>
#include <stdio.h>
#include <string.h>

/* A wrapper as a header may define it: an inline function with external
 * linkage may hold no modifiable static object, and the static call site
 * the macros define is constant (C11 6.7.4p3; GCC warns otherwise). */
inline void *consumer_alloc(size_t n) {
  return ht_malloc(n);
}
extern void *consumer_alloc(size_t n); /* its external definition is here */

int main(void) {
  char *p = consumer_alloc(32);
  if (!p)
    return 1;
  strcpy(p, "installed");
  printf("%s %s\n", p, ht_strerror(HT_EINVAL));
  ht_free(p);
  return 0;
}
