/* grow.h - a buffer grown a page at a time, as a program reading input
 * of unknown length grows it: the loop of tests/programs/grower.c and of
 * tests/test_sysheap.c. */
#ifndef HT_TEST_GROW_H
#define HT_TEST_GROW_H

#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#define GROW_STEP 4096u

/* Grows one block from GROW_STEP to top bytes, GROW_STEP at a time, with
 * ht_malloc/ht_realloc/ht_free when traced, else libc's; writes its last
 * byte at each step and checks that the bytes written before came along.
 * *reallocs counts the reallocs. Returns how often the block's address
 * changed, or -1 when an allocation failed or the bytes did not come
 * along. */
static inline long grow_block(size_t top, int traced, unsigned long *reallocs) {
  unsigned char *p = traced ? ht_malloc(GROW_STEP) : malloc(GROW_STEP);
  if (!p)
    return -1;
  p[GROW_STEP - 1] = 1;
  long moves = 0;
  for (size_t n = 2 * GROW_STEP; n <= top; n += GROW_STEP) {
    unsigned char *np = traced ? ht_realloc(p, n) : realloc(p, n);
    if (!np || np[n - GROW_STEP - 1] != (unsigned char)(n / GROW_STEP - 1))
      return -1;
    moves += np != p;
    ++*reallocs;
    np[n - 1] = (unsigned char)(n / GROW_STEP);
    p = np;
  }
  if (traced)
    ht_free(p);
  else
    free(p);
  return moves;
}

#endif
