/* grower.c - a buffer grown a page at a time with ht_realloc, as a
 * program reading input of unknown length does, for
 * tests/test_e2e_order.c.
 *
 *   grower MIB
 *
 * Grows one block from 4 KiB to MIB MiB in 4 KiB steps with realloc(),
 * untraced, then another with ht_realloc; each time it writes the last
 * byte and checks that the bytes written before came along; then frees
 * the block. Prints what the daemon should report, and how often each
 * block's address changed:
 *   reallocs=R moves=M plain_moves=P
 */
#include <stdio.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#define STEP 4096u

/* Grows a block to top bytes, with ht_realloc when traced; returns how
 * often it moved, or -1 on failure. */
static long grow(size_t top, int traced, unsigned long *reallocs) {
  unsigned char *p = traced ? ht_malloc(STEP) : malloc(STEP);
  if (!p)
    return -1;
  p[STEP - 1] = 1;
  long moves = 0;
  for (size_t n = 2 * STEP; n <= top; n += STEP) {
    unsigned char *np = traced ? ht_realloc(p, n) : realloc(p, n);
    if (!np || np[n - STEP - 1] != (unsigned char)(n / STEP - 1))
      return -1;
    moves += np != p;
    ++*reallocs;
    np[n - 1] = (unsigned char)(n / STEP);
    p = np;
  }
  if (traced)
    ht_free(p);
  else
    free(p);
  return moves;
}

int main(int argc, char **argv) {
  if (argc != 2 || atoi(argv[1]) < 1) {
    fprintf(stderr, "usage: grower MIB\n");
    return 2;
  }
  size_t top = (size_t)atoi(argv[1]) << 20;
  unsigned long reallocs = 0, untraced = 0;
  long plain = grow(top, 0, &untraced);
  long moves = grow(top, 1, &reallocs);
  if (plain < 0 || moves < 0)
    return 1;
  printf("reallocs=%lu moves=%ld plain_moves=%ld\n", reallocs, moves, plain);
  return 0;
}
