/* test_bufpool.c - the loop's buffers for batches (daemon/bufpool.c). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <string.h>

#include "bufpool.h"
#include "test_rand.h"

#define BIG (HTD_BUFPOOL_SLAB / 4) /* four of these fill a slab but for its headers */

/* Buffers of random sizes, given back in random order, hold what was
 * written into them: no two overlap, and each is aligned for any type. */
Test(bufpool, buffers_hold_their_bytes_apart_and_aligned) {
  enum { SLOTS = 64, ROUNDS = 4000 };
  htd_bufpool_t p;
  htd_bufpool_init(&p, 4 * HTD_BUFPOOL_SLAB, 10);
  struct {
    uint8_t *b;
    size_t len;
    uint8_t fill;
  } slot[SLOTS] = {{0}};
  for (int r = 0; r < ROUNDS; r++) {
    unsigned i = (unsigned)(test_rand() % SLOTS);
    if (slot[i].b) {
      size_t k = 0;
      while (k < slot[i].len && slot[i].b[k] == slot[i].fill)
        k++;
      cr_assert(eq(sz, k, slot[i].len), "buffer %u overwritten at byte %zu", i, k);
      htd_bufpool_put(&p, slot[i].b);
      slot[i].b = NULL;
      continue;
    }
    /* mostly batch-sized, now and then larger than a slab */
    size_t len = r % 97 == 0 ? HTD_BUFPOOL_SLAB + 1 : (size_t)(test_rand() % (512 * 1024)) + 1;
    slot[i].b = htd_bufpool_get(&p, len);
    cr_assert(not(eq(ptr, slot[i].b, NULL)));
    cr_assert(eq(u64, (uintptr_t)slot[i].b % _Alignof(max_align_t), 0));
    slot[i].len = len;
    slot[i].fill = (uint8_t)r;
    memset(slot[i].b, slot[i].fill, len);
  }
  for (unsigned i = 0; i < SLOTS; i++)
    htd_bufpool_put(&p, slot[i].b);
  htd_bufpool_release(&p);
}

/* Fills slabs with four BIG buffers each; returns the first buffer's
 * address of each slab in first[]. */
static void fill_slabs(htd_bufpool_t *p, int slabs, void *bufs[][4], void **first) {
  for (int s = 0; s < slabs; s++) {
    for (int k = 0; k < 4; k++)
      bufs[s][k] = htd_bufpool_get(p, BIG - 64);
    first[s] = bufs[s][0];
  }
}

/* A slab all of whose buffers came back is kept, and the next slab needed
 * is that one: the next program's batches land in memory already there. */
Test(bufpool, an_emptied_slab_is_cut_again_instead_of_a_new_one) {
  htd_bufpool_t p;
  htd_bufpool_init(&p, 4 * HTD_BUFPOOL_SLAB, 10);
  void *bufs[3][4], *first[3];
  fill_slabs(&p, 2, bufs, first);
  cr_assert(eq(i64, (char *)bufs[0][1] - (char *)bufs[0][0], BIG - 48),
            "buffers are cut one after the other");
  for (int k = 0; k < 4; k++)
    htd_bufpool_put(&p, bufs[0][k]);
  cr_assert(eq(sz, p.kept_bytes, HTD_BUFPOOL_SLAB), "the first slab is kept");
  void *next = htd_bufpool_get(&p, BIG - 64); /* the second slab is full */
  cr_assert(eq(ptr, next, first[0]), "the kept slab is cut again, from its start");
  cr_assert(eq(sz, p.kept_bytes, 0));
  htd_bufpool_put(&p, next);
  for (int k = 0; k < 4; k++)
    htd_bufpool_put(&p, bufs[1][k]);
  /* the current slab, emptied, is cut from its start again */
  void *again = htd_bufpool_get(&p, 100);
  cr_assert(eq(ptr, again, first[0]));
  htd_bufpool_put(&p, again);
  htd_bufpool_release(&p);
}

Test(bufpool, slabs_past_the_limit_go_back_to_the_system) {
  htd_bufpool_t p;
  htd_bufpool_init(&p, HTD_BUFPOOL_SLAB, 10);
  void *bufs[3][4], *first[3];
  fill_slabs(&p, 3, bufs, first);
  for (int s = 0; s < 3; s++)
    for (int k = 0; k < 4; k++)
      htd_bufpool_put(&p, bufs[s][k]);
  cr_assert(eq(sz, p.kept_bytes, HTD_BUFPOOL_SLAB), "one slab kept, the other freed");
  htd_bufpool_release(&p);
  cr_assert(eq(sz, p.kept_bytes, 0));
  cr_assert(eq(ptr, p.cur, NULL), "the empty current slab is freed too");
}

/* The kept slabs go after idle_max ticks without a get; a get starts the
 * count again. */
Test(bufpool, idle_ticks_let_the_kept_slabs_go) {
  htd_bufpool_t p;
  htd_bufpool_init(&p, 4 * HTD_BUFPOOL_SLAB, 5);
  void *bufs[3][4], *first[3];
  fill_slabs(&p, 2, bufs, first);
  for (int k = 0; k < 4; k++)
    htd_bufpool_put(&p, bufs[0][k]);
  for (int i = 0; i < 4; i++)
    htd_bufpool_tick(&p);
  cr_assert(eq(sz, p.kept_bytes, HTD_BUFPOOL_SLAB), "four ticks: still kept");
  void *b = htd_bufpool_get(&p, 10); /* from the current slab: kept stays */
  for (int i = 0; i < 4; i++)
    htd_bufpool_tick(&p);
  cr_assert(eq(sz, p.kept_bytes, HTD_BUFPOOL_SLAB), "the get restarted the count");
  htd_bufpool_tick(&p);
  cr_assert(eq(sz, p.kept_bytes, 0), "five ticks without a get");
  cr_assert(not(eq(ptr, p.cur, NULL)), "the current slab has buffers out: it stays");
  htd_bufpool_put(&p, b);
  for (int k = 0; k < 4; k++)
    htd_bufpool_put(&p, bufs[1][k]);
  for (int i = 0; i < 5; i++)
    htd_bufpool_tick(&p);
  cr_assert(eq(ptr, p.cur, NULL), "emptied, the current slab goes too");
}

Test(bufpool, a_buffer_larger_than_a_slab_is_allocated_alone_and_never_kept) {
  htd_bufpool_t p;
  htd_bufpool_init(&p, 4 * HTD_BUFPOOL_SLAB, 5);
  uint8_t *b = htd_bufpool_get(&p, 3 * HTD_BUFPOOL_SLAB);
  cr_assert(not(eq(ptr, b, NULL)));
  memset(b, 0xa5, 3 * HTD_BUFPOOL_SLAB);
  cr_assert(eq(ptr, p.cur, NULL), "no slab was cut for it");
  htd_bufpool_put(&p, b);
  cr_assert(eq(sz, p.kept_bytes, 0));
}
