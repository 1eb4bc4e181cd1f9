/* test_livemap.c - the daemon's set of live blocks (daemon/livemap.c).
 *
 * Random puts, takes and look-ups against a plain array of what must be
 * live, through many growths and backward-shift deletions.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"
#include "test_rand.h"

#define KEYS 5000 /* addresses in play */

/* The i-th address: scattered, 16-aligned, never 0. */
static uint64_t addr(size_t i) {
  return 0x7f0000000000ull + ((i * 0x9E3779B1u) & 0xffffffu) * 16 + 16;
}

static htq_block_t block(size_t i, uint64_t size) {
  return (htq_block_t){.ptr = addr(i), .size = size, .usable = size + 8, .seq = i, .site = 7};
}

Test(livemap, random_puts_takes_and_lookups_agree_with_a_plain_array) {
  static uint64_t live_size[KEYS]; /* 0: not live */
  memset(live_size, 0, sizeof live_size);
  htq_livemap_t m;
  htq_livemap_init(&m);
  size_t count = 0;
  for (int op = 0; op < 400000; op++) {
    size_t i = test_rand() % KEYS;
    /* Mostly grow until half the keys are live, then churn. */
    int put = count < KEYS / 2 ? test_rand() % 4 != 0 : test_rand() % 2 == 0;
    if (put) {
      uint64_t size = 1 + test_rand() % 4096;
      htq_block_t b = block(i, size);
      int replaced = htq_livemap_put(&m, &b);
      cr_assert(eq(int, replaced, live_size[i] != 0), "put %zu", i);
      count += !live_size[i];
      live_size[i] = size;
    } else {
      htq_block_t out;
      int was = htq_livemap_take(&m, addr(i), &out);
      cr_assert(eq(int, was, live_size[i] != 0), "take %zu", i);
      if (was)
        cr_assert(eq(u64, out.size, live_size[i]));
      count -= live_size[i] != 0;
      live_size[i] = 0;
    }
    cr_assert(eq(sz, m.count, count));
    size_t probe = test_rand() % KEYS;
    cr_assert(eq(int, htq_livemap_has(&m, addr(probe)), live_size[probe] != 0), "has %zu", probe);
  }
  size_t seen = 0;
  for (size_t s = 0; s < m.cap; s++) {
    if (!m.slots[s].ptr)
      continue;
    size_t i = (size_t)m.slots[s].seq;
    cr_assert(eq(u64, m.slots[s].ptr, addr(i)));
    cr_assert(eq(u64, m.slots[s].size, live_size[i]));
    seen++;
  }
  cr_assert(eq(sz, seen, count));
  htq_livemap_free(&m);
}
