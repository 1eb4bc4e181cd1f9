/* test_leaks.c - a model's live blocks grouped into the parts of its leaks
 * (htq_model_leaks, daemon/model.c). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "model.h"

static void put(htq_model_t *m, uint64_t ptr, uint64_t size, uint32_t site, uint32_t heap,
                uint32_t caps, uint64_t t, uint32_t stream, uint64_t seq) {
  htq_block_t b = {ptr, size, size, t, seq, site, heap, caps, stream};
  cr_assert(ge(int, htq_livemap_put(&m->live, &b), 0));
}

/* One part per (site, heap, caps), in that order, counting its blocks and
 * bytes, with its oldest block (time, then stream, then seq) as sample. */
Test(leaks, live_blocks_are_counted_by_site_heap_and_caps_with_the_oldest_as_sample) {
  htq_model_t m = {0};
  htq_livemap_init(&m.live);
  put(&m, 0x1000, 10, 2, 0, 7, 50, 1, 5);
  put(&m, 0x2000, 20, 1, 0, 7, 40, 1, 4);
  put(&m, 0x3000, 30, 2, 0, 7, 30, 2, 1); /* site 2's oldest: t 30 */
  put(&m, 0x4000, 40, 2, 1, 7, 10, 1, 1); /* another heap */
  put(&m, 0x5000, 50, 2, 0, 9, 20, 1, 2); /* other caps */
  put(&m, 0x6000, 60, 2, 0, 7, 30, 1, 3); /* t 30 too, stream 1: older than stream 2's */
  cr_assert(eq(int, htq_model_leaks(&m), 0));
  cr_assert(eq(sz, m.nleaks, 4));
  const uint32_t key[4][3] = {{1, 0, 7}, {2, 0, 7}, {2, 0, 9}, {2, 1, 7}};
  const uint64_t blocks[4] = {1, 3, 1, 1}, bytes[4] = {20, 100, 50, 40};
  const uint64_t sample[4] = {0x2000, 0x6000, 0x5000, 0x4000};
  for (size_t i = 0; i < 4; i++) {
    const htq_leak_t *g = &m.leaks[i];
    cr_assert(eq(u32, g->oldest.site, key[i][0]), "part %zu", i);
    cr_assert(eq(u32, g->oldest.heap, key[i][1]), "part %zu", i);
    cr_assert(eq(u32, g->oldest.caps, key[i][2]), "part %zu", i);
    cr_assert(eq(u64, g->blocks, blocks[i]), "part %zu", i);
    cr_assert(eq(u64, g->bytes, bytes[i]), "part %zu", i);
    cr_assert(eq(u64, g->oldest.ptr, sample[i]), "part %zu", i);
  }
  htq_model_free(&m);
}

/* A block at address 0 (only a damaged or hostile stream makes one) is
 * counted by the table but never listed: no part, and no table of parts
 * left behind freed (a realloc to 0 bytes freed it, and the summary
 * thread wrote through it). */
Test(leaks, a_block_at_address_zero_makes_no_part_and_leaves_no_freed_table) {
  htq_model_t m = {0};
  htq_livemap_init(&m.live);
  put(&m, 0, 16, 1, 0, 7, 1, 1, 1);
  cr_assert(eq(sz, m.live.count, 1));
  cr_assert(eq(int, htq_model_leaks(&m), 0));
  cr_assert(eq(sz, m.nleaks, 0));
  cr_assert(eq(ptr, m.leaks, NULL));
  htq_model_free(&m);
}
