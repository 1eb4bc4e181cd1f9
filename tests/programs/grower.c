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

#include "grow.h"

int main(int argc, char **argv) {
  if (argc != 2 || atoi(argv[1]) < 1) {
    fprintf(stderr, "usage: grower MIB\n");
    return 2;
  }
  size_t top = (size_t)atoi(argv[1]) << 20;
  unsigned long reallocs = 0, untraced = 0;
  long plain = grow_block(top, 0, &untraced);
  long moves = grow_block(top, 1, &reallocs);
  if (plain < 0 || moves < 0)
    return 1;
  printf("reallocs=%lu moves=%ld plain_moves=%ld\n", reallocs, moves, plain);
  return 0;
}
