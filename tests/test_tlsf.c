/*
 * test_tlsf.c - Criterion unit tests for the TLSF region allocator
 * (libclient/tlsf.c).
 *
 * Each test builds a heap in a static buffer (Criterion runs every test in
 * its own process, so buffers start zeroed), drives the public API and
 * compares the heap against what a walk of its blocks and ht__tlsf_check()
 * find. The stress tests keep a shadow model of live blocks: an owner map
 * with one entry per 16-byte granule catches overlaps, and a per-block fill
 * byte verified on free catches anything that writes into live memory.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "tlsf.h"

/* Criterion's cr_assert() stores an int into a 1-bit bit-field, which gcc's
 * -Wconversion reports at every use site; nothing in this file is affected. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wconversion"
#endif

#define REGION_BYTES ((size_t)1 << 20)
#define HDR HT_TLSF_BLOCK_OVERHEAD

static _Alignas(4096) unsigned char buf[REGION_BYTES + 4096];

/* ---- helpers ------------------------------------------------------------ */

typedef struct {
  size_t free_bytes, used_bytes, free_blocks, used_blocks, biggest_free;
  uintptr_t last;
  int unordered, misaligned;
} tally_t;

static int tally_block(void *ptr, size_t size, int used, void *user) {
  tally_t *w = user;
  uintptr_t a = (uintptr_t)ptr;
  if (a <= w->last)
    w->unordered = 1;
  if (a % HT_TLSF_ALIGN)
    w->misaligned = 1;
  w->last = a;
  if (used) {
    w->used_bytes += size;
    w->used_blocks++;
  } else {
    w->free_bytes += size;
    w->free_blocks++;
    if (size > w->biggest_free)
      w->biggest_free = size;
  }
  return 0;
}

static tally_t walk_tally(const ht_tlsf_t *t) {
  tally_t w;
  memset(&w, 0, sizeof w);
  ht__tlsf_walk(t, tally_block, &w);
  return w;
}

/* check() passes, the stats counters equal a walk, and the area adds up. */
static void assert_consistent(const ht_tlsf_t *t) {
  char err[256];
  int rc = ht__tlsf_check(t, err, sizeof err);
  cr_assert(eq(int, rc, 0), "ht__tlsf_check: %s", err);

  ht_tlsf_stats_t st;
  ht__tlsf_stats(t, &st);
  tally_t w = walk_tally(t);
  cr_assert(eq(int, w.unordered, 0));
  cr_assert(eq(int, w.misaligned, 0));
  cr_assert(eq(sz, st.total_free_bytes, w.free_bytes));
  cr_assert(eq(sz, st.total_allocated_bytes, w.used_bytes));
  cr_assert(eq(sz, st.free_blocks, w.free_blocks));
  cr_assert(eq(sz, st.allocated_blocks, w.used_blocks));
  cr_assert(eq(sz, st.total_blocks, w.free_blocks + w.used_blocks));
  cr_assert(eq(sz, st.total_free_bytes + st.total_allocated_bytes + HDR * (st.total_blocks - 1),
               ht__tlsf_total_bytes(t)));
  cr_assert(le(sz, st.largest_free_block, w.biggest_free));
  cr_assert(le(sz, st.largest_free_block, st.total_free_bytes));
}

static ht_tlsf_stats_t stats_of(const ht_tlsf_t *t) {
  ht_tlsf_stats_t st;
  ht__tlsf_stats(t, &st);
  return st;
}

/* The heap is back to its empty state: one free block of the whole area. */
static void assert_empty(const ht_tlsf_t *t) {
  assert_consistent(t);
  ht_tlsf_stats_t st = stats_of(t);
  cr_assert(eq(sz, st.free_blocks, 1));
  cr_assert(eq(sz, st.allocated_blocks, 0));
  cr_assert(eq(sz, st.total_free_bytes, ht__tlsf_total_bytes(t)));
  cr_assert(eq(sz, st.largest_free_block, ht__tlsf_total_bytes(t)));
}

static ht_tlsf_t *make_heap(size_t bytes) {
  ht_tlsf_t *t = ht__tlsf_create(buf, bytes);
  cr_assert(not(zero(ptr, t)));
  return t;
}

static uint64_t rng_next(uint64_t *s) {
  /* splitmix64: fixed seeds give reproducible runs */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static size_t rng_below(uint64_t *s, size_t n) {
  return (size_t)(rng_next(s) % n);
}

static void assert_err_names(const char *err, const void *p) {
  char addr[32];
  snprintf(addr, sizeof addr, "%p", p);
  cr_assert(not(zero(ptr, (void *)strstr(err, addr))), "message \"%s\" does not name %s", err,
            addr);
}

/* ---- create ------------------------------------------------------------- */

Test(tlsf_create, rejects_null_memory_and_regions_too_small_for_one_block) {
  cr_assert(zero(ptr, ht__tlsf_create(NULL, 4096)));
  cr_assert(zero(ptr, ht__tlsf_create(buf, 0)));
  cr_assert(zero(ptr, ht__tlsf_create(buf, 15)));
  cr_assert(zero(ptr, ht__tlsf_create(buf + 1, 14)));

  /* The smallest region that works holds control + header + 16 + sentinel. */
  size_t min = ht__tlsf_overhead_for(4096) + 2 * HDR + HT_TLSF_MIN_BLOCK;
  size_t n = 0;
  while (!ht__tlsf_create(buf, n))
    n++;
  cr_assert(le(sz, n, min));
  cr_assert(eq(sz, n, ht__tlsf_overhead_for(n) + 2 * HDR + HT_TLSF_MIN_BLOCK));
  ht_tlsf_t *t = ht__tlsf_create(buf, n);
  cr_assert(eq(sz, ht__tlsf_total_bytes(t), HT_TLSF_MIN_BLOCK));
  assert_empty(t);
  void *p = ht__tlsf_malloc(t, 1);
  cr_assert(not(zero(ptr, p)));
  cr_assert(zero(ptr, ht__tlsf_malloc(t, 1)));
  ht__tlsf_free(t, p);
  assert_empty(t);
}

Test(tlsf_create, aligns_an_unaligned_start_and_stays_inside_the_region) {
  for (size_t off = 1; off < 32; off++) {
    size_t bytes = 4000 + off;
    memset(buf, 0xA5, sizeof buf);
    unsigned char *mem = buf + 64 + off;
    ht_tlsf_t *t = ht__tlsf_create(mem, bytes);
    cr_assert(not(zero(ptr, t)));
    cr_assert(eq(sz, (uintptr_t)t % HT_TLSF_ALIGN, 0));
    cr_assert(ge(ptr, (void *)t, (void *)mem));
    assert_empty(t);

    size_t total = ht__tlsf_total_bytes(t);
    cr_assert(le(sz, ht__tlsf_overhead_for(bytes) + total + 2 * HDR, bytes));
    unsigned char *p = ht__tlsf_malloc(t, total);
    cr_assert(not(zero(ptr, p)));
    cr_assert(ge(ptr, p, mem));
    cr_assert(le(ptr, p + total, mem + bytes));
    memset(p, 0x11, total);
    /* Nothing outside [mem, mem + bytes) was touched. */
    for (size_t i = 0; i < 64 + off; i++)
      cr_assert(eq(u8, buf[i], 0xA5));
    for (size_t i = 64 + off + bytes; i < 64 + off + bytes + 64; i++)
      cr_assert(eq(u8, buf[i], 0xA5));
    ht__tlsf_free(t, p);
    assert_empty(t);
  }
}

Test(tlsf_create, handles_a_1kib_region) {
  ht_tlsf_t *t = make_heap(1024);
  assert_empty(t);
  cr_assert(ge(sz, ht__tlsf_total_bytes(t), 256));
  void *a = ht__tlsf_malloc(t, 100), *b = ht__tlsf_malloc(t, 100);
  cr_assert(not(zero(ptr, a)));
  cr_assert(not(zero(ptr, b)));
  assert_consistent(t);
  ht__tlsf_free(t, a);
  ht__tlsf_free(t, b);
  assert_empty(t);
}

Test(tlsf_create, overhead_bounds_the_control_structure_for_any_region) {
  cr_assert(eq(sz, ht__tlsf_block_overhead(), HDR));
  cr_assert(eq(sz, ht__tlsf_overhead() % HT_TLSF_ALIGN, 0));
  for (size_t bytes = 1024; bytes && bytes <= SIZE_MAX / 2; bytes *= 2)
    cr_assert(le(sz, ht__tlsf_overhead_for(bytes), ht__tlsf_overhead()));
  ht_tlsf_t *t = make_heap(REGION_BYTES);
  cr_assert(eq(sz, ht__tlsf_overhead_for(REGION_BYTES) + 2 * HDR + ht__tlsf_total_bytes(t),
               REGION_BYTES));
}

Test(tlsf_create, manages_a_region_larger_than_4gib) {
  size_t bytes = ((size_t)5 << 30) + 12345;
  void *mem =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED)
    cr_skip_test("cannot reserve 5 GiB of address space");
  ht_tlsf_t *t = ht__tlsf_create((char *)mem + 3, bytes - 3);
  cr_assert(not(zero(ptr, t)));
  assert_empty(t);
  cr_assert(lt(sz, (size_t)4 << 30, ht__tlsf_total_bytes(t)));

  void *small = ht__tlsf_malloc(t, 100);
  void *big = ht__tlsf_malloc(t, (size_t)4 << 30);
  void *aligned = ht__tlsf_memalign(t, 4096, (size_t)1 << 28);
  cr_assert(not(zero(ptr, small)));
  cr_assert(not(zero(ptr, big)));
  cr_assert(not(zero(ptr, aligned)));
  cr_assert(eq(sz, (uintptr_t)aligned % 4096, 0));
  cr_assert(ge(sz, ht__tlsf_usable_size(big), (size_t)4 << 30));
  assert_consistent(t);
  cr_assert(zero(ptr, ht__tlsf_malloc(t, (size_t)4 << 30)));
  ht__tlsf_free(t, big);
  ht__tlsf_free(t, small);
  ht__tlsf_free(t, aligned);
  assert_empty(t);
  munmap(mem, bytes);
}

/* ---- malloc / memalign -------------------------------------------------- */

Test(tlsf_malloc, returns_16_byte_aligned_blocks_of_at_least_the_requested_size) {
  ht_tlsf_t *t = make_heap(REGION_BYTES);
  for (size_t size = 0; size <= 2000; size += 7) {
    unsigned char *p = ht__tlsf_malloc(t, size);
    cr_assert(not(zero(ptr, p)));
    cr_assert(eq(sz, (uintptr_t)p % HT_TLSF_ALIGN, 0));
    cr_assert(ge(sz, ht__tlsf_usable_size(p), size));
    cr_assert(ge(sz, ht__tlsf_usable_size(p), HT_TLSF_MIN_BLOCK));
    cr_assert(eq(sz, ht__tlsf_usable_size(p) % HT_TLSF_ALIGN, 0));
    cr_assert(eq(int, ht__tlsf_contains(t, p), 1));
    cr_assert(eq(int, ht__tlsf_contains(t, p + ht__tlsf_usable_size(p) - 1), 1));
  }
  assert_consistent(t);
}

Test(tlsf_malloc, size_zero_returns_distinct_minimum_blocks) {
  ht_tlsf_t *t = make_heap(4096);
  void *a = ht__tlsf_malloc(t, 0), *b = ht__tlsf_malloc(t, 0);
  cr_assert(not(zero(ptr, a)));
  cr_assert(not(zero(ptr, b)));
  cr_assert(ne(ptr, a, b));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), HT_TLSF_MIN_BLOCK));
  ht__tlsf_free(t, a);
  ht__tlsf_free(t, b);
  assert_empty(t);
}

Test(tlsf_memalign, returns_pointers_aligned_to_every_power_of_two_from_16_to_4096) {
  ht_tlsf_t *t = make_heap(REGION_BYTES);
  void *ptrs[64];
  size_t n = 0;
  const size_t sizes[] = {1, 100, 5000};
  for (size_t align = 16; align <= 4096; align *= 2) {
    for (size_t i = 0; i < 3; i++) {
      /* A small odd block first so the next free block is misaligned. */
      ptrs[n++] = ht__tlsf_malloc(t, 16 * (i + 1));
      unsigned char *p = ht__tlsf_memalign(t, align, sizes[i]);
      cr_assert(not(zero(ptr, p)));
      cr_assert(eq(sz, (uintptr_t)p % align, 0), "align %zu size %zu", align, sizes[i]);
      cr_assert(ge(sz, ht__tlsf_usable_size(p), sizes[i]));
      memset(p, 0x5A, ht__tlsf_usable_size(p));
      ptrs[n++] = p;
      assert_consistent(t);
    }
  }
  for (size_t i = 0; i < n; i += 2)
    ht__tlsf_free(t, ptrs[i]);
  assert_consistent(t);
  for (size_t i = 1; i < n; i += 2)
    ht__tlsf_free(t, ptrs[i]);
  assert_empty(t);
}

Test(tlsf_memalign, rejects_alignments_that_are_not_powers_of_two) {
  ht_tlsf_t *t = make_heap(8192);
  cr_assert(zero(ptr, ht__tlsf_memalign(t, 0, 16)));
  cr_assert(zero(ptr, ht__tlsf_memalign(t, 24, 16)));
  cr_assert(zero(ptr, ht__tlsf_memalign(t, 3, 16)));
  cr_assert(zero(ptr, ht__tlsf_memalign(t, (size_t)1 << 20, 16)));
  cr_assert(zero(ptr, ht__tlsf_memalign(t, 64, SIZE_MAX)));
  void *p = ht__tlsf_memalign(t, 8, 16); /* <= 16 behaves like malloc */
  cr_assert(not(zero(ptr, p)));
  ht__tlsf_free(t, p);
  assert_empty(t);
}

Test(tlsf_malloc, exhaustion_returns_null_and_freeing_everything_restores_one_free_block) {
  ht_tlsf_t *t = make_heap(64 * 1024);
  size_t initial = stats_of(t).total_free_bytes;
  cr_assert(zero(ptr, ht__tlsf_malloc(t, ht__tlsf_total_bytes(t) + 1)));
  cr_assert(zero(ptr, ht__tlsf_malloc(t, SIZE_MAX)));
  assert_empty(t);

  static void *ptrs[4096];
  size_t n = 0;
  while ((ptrs[n] = ht__tlsf_malloc(t, 40 + (n % 5) * 48)) != NULL)
    n++;
  cr_assert(lt(sz, 100, n));
  assert_consistent(t);
  /* Fill the remaining holes with minimum blocks until nothing is left. */
  while ((ptrs[n] = ht__tlsf_malloc(t, 1)) != NULL)
    n++;
  cr_assert(zero(ptr, ht__tlsf_malloc(t, 0)));
  cr_assert(eq(sz, stats_of(t).free_blocks, 0));
  cr_assert(eq(sz, stats_of(t).largest_free_block, 0));
  assert_consistent(t);

  uint64_t seed = 7;
  for (size_t i = n; i > 1; i--) { /* shuffle the free order */
    size_t j = rng_below(&seed, i);
    void *tmp = ptrs[i - 1];
    ptrs[i - 1] = ptrs[j];
    ptrs[j] = tmp;
  }
  for (size_t i = 0; i < n; i++) {
    ht__tlsf_free(t, ptrs[i]);
    if (i % 64 == 0)
      assert_consistent(t);
  }
  assert_empty(t);
  cr_assert(eq(sz, stats_of(t).total_free_bytes, initial));
}

Test(tlsf_malloc, splits_off_every_remainder_that_can_hold_a_minimum_block) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64);
  void *guard = ht__tlsf_malloc(t, 16);
  ht__tlsf_free(t, a);
  /* 64 = 32 + header + 16: exactly enough for a minimum free block. */
  cr_assert(eq(ptr, ht__tlsf_malloc(t, 32), a));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 32));
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  cr_assert(eq(ptr, ht__tlsf_malloc(t, 16), (char *)a + 32 + HDR));
  ht__tlsf_free(t, a);
  /* 32 - 16 leaves no room for header + 16: the block is handed out whole. */
  cr_assert(eq(ptr, ht__tlsf_malloc(t, 16), a));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 32));
  (void)guard;
  assert_consistent(t);
}

Test(tlsf_free, null_is_a_no_op) {
  ht_tlsf_t *t = make_heap(4096);
  ht__tlsf_free(t, NULL);
  assert_empty(t);
}

/* ---- coalescing --------------------------------------------------------- */

/* Four 64-byte blocks a b c d followed by the free tail; d shields the tail. */
static ht_tlsf_t *four_blocks(void *p[4]) {
  ht_tlsf_t *t = make_heap(8192);
  for (int i = 0; i < 4; i++) {
    p[i] = ht__tlsf_malloc(t, 64);
    cr_assert(not(zero(ptr, p[i])));
  }
  cr_assert(eq(sz, stats_of(t).free_blocks, 1));
  return t;
}

typedef struct {
  void *ptr;
  size_t size;
  int used;
} first_block_t;

static int grab_first(void *ptr, size_t size, int used, void *user) {
  first_block_t *f = user;
  f->ptr = ptr;
  f->size = size;
  f->used = used;
  return 1; /* stop after the first block */
}

static void assert_first_block_free(const ht_tlsf_t *t, void *ptr, size_t size) {
  first_block_t f = {NULL, 0, 1};
  ht__tlsf_walk(t, grab_first, &f);
  cr_assert(eq(ptr, f.ptr, ptr));
  cr_assert(eq(sz, f.size, size));
  cr_assert(eq(int, f.used, 0));
}

Test(tlsf_coalesce, freed_block_merges_with_free_previous_neighbour) {
  void *p[4];
  ht_tlsf_t *t = four_blocks(p);
  ht__tlsf_free(t, p[0]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  ht__tlsf_free(t, p[1]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  assert_first_block_free(t, p[0], 64 + HDR + 64);
  assert_consistent(t);
}

Test(tlsf_coalesce, freed_block_merges_with_free_next_neighbour) {
  void *p[4];
  ht_tlsf_t *t = four_blocks(p);
  ht__tlsf_free(t, p[1]);
  ht__tlsf_free(t, p[0]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  assert_first_block_free(t, p[0], 64 + HDR + 64);
  assert_consistent(t);
  /* Freeing d merges it with the free tail after it; used c keeps it apart. */
  size_t tail = stats_of(t).total_free_bytes - (64 + HDR + 64);
  ht__tlsf_free(t, p[3]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  cr_assert(eq(sz, stats_of(t).largest_free_block, tail + HDR + 64));
  assert_consistent(t);
}

Test(tlsf_coalesce, freed_block_merges_with_both_free_neighbours) {
  void *p[4];
  ht_tlsf_t *t = four_blocks(p);
  ht__tlsf_free(t, p[0]);
  ht__tlsf_free(t, p[2]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 3));
  ht__tlsf_free(t, p[1]);
  cr_assert(eq(sz, stats_of(t).free_blocks, 2));
  assert_first_block_free(t, p[0], 3 * 64 + 2 * HDR);
  assert_consistent(t);
  ht__tlsf_free(t, p[3]);
  assert_empty(t);
}

/* ---- largest_free_block ------------------------------------------------- */

Test(tlsf_stats, largest_free_block_is_always_mallocable_and_at_most_total_free) {
  ht_tlsf_t *t = make_heap(256 * 1024);
  static void *ptrs[2048];
  size_t n = 0;
  uint64_t seed = 42;
  for (int round = 0; round < 400; round++) {
    if (n < 2048 && rng_below(&seed, 3)) {
      ptrs[n] = ht__tlsf_malloc(t, rng_below(&seed, 3000));
      if (ptrs[n])
        n++;
    } else if (n) {
      size_t i = rng_below(&seed, n);
      ht__tlsf_free(t, ptrs[i]);
      ptrs[i] = ptrs[--n];
    }
    ht_tlsf_stats_t st = stats_of(t);
    cr_assert(le(sz, st.largest_free_block, st.total_free_bytes));
    if (st.largest_free_block) {
      void *p = ht__tlsf_malloc(t, st.largest_free_block);
      cr_assert(not(zero(ptr, p)), "round %d: malloc(largest %zu) failed", round,
                st.largest_free_block);
      ht__tlsf_free(t, p);
    }
    assert_consistent(t);
  }
}

Test(tlsf_stats, largest_free_block_can_be_below_the_biggest_free_block_of_the_same_list) {
  /* Two free blocks in the list [4096, 4352): 4096 at its head, 4336 behind
   * it. Only the head is O(1)-visible, so 4096 is what is guaranteed, and
   * requests above it round up past the highest populated list. */
  ht_tlsf_t *t = make_heap(64 * 1024);
  void *x = ht__tlsf_malloc(t, 4096);
  void *g1 = ht__tlsf_malloc(t, 16);
  void *y = ht__tlsf_malloc(t, 4336);
  void *g2 = ht__tlsf_malloc(t, 16);
  cr_assert(not(zero(ptr, g2)));
  ht_tlsf_stats_t st;
  while ((st = stats_of(t)).largest_free_block)
    cr_assert(not(zero(ptr, ht__tlsf_malloc(t, st.largest_free_block))));
  cr_assert(eq(sz, st.free_blocks, 0));

  ht__tlsf_free(t, y);
  ht__tlsf_free(t, x); /* inserted last: head of the list */
  st = stats_of(t);
  tally_t w = walk_tally(t);
  cr_assert(eq(sz, w.biggest_free, 4336));
  cr_assert(eq(sz, st.largest_free_block, 4096));
  cr_assert(zero(ptr, ht__tlsf_malloc(t, st.largest_free_block + HT_TLSF_ALIGN)));
  cr_assert(zero(ptr, ht__tlsf_malloc(t, w.biggest_free)));
  assert_consistent(t);
  void *p = ht__tlsf_malloc(t, st.largest_free_block);
  cr_assert(eq(ptr, p, x));
  /* Now 4336 heads the list and is itself guaranteed. */
  cr_assert(eq(sz, stats_of(t).largest_free_block, 4336));
  cr_assert(eq(ptr, ht__tlsf_malloc(t, 4336), y));
  (void)g1;
  assert_consistent(t);
}

Test(tlsf_stats, empty_heap_reports_its_whole_area_as_largest_free_block) {
  ht_tlsf_t *t = make_heap(REGION_BYTES);
  ht_tlsf_stats_t st = stats_of(t);
  cr_assert(eq(sz, st.largest_free_block, ht__tlsf_total_bytes(t)));
  void *p = ht__tlsf_malloc(t, st.largest_free_block);
  cr_assert(not(zero(ptr, p)));
  cr_assert(eq(sz, stats_of(t).total_free_bytes, 0));
  ht__tlsf_free(t, p);
  assert_empty(t);
}

/* ---- resize in place ---------------------------------------------------- */

static void fill(unsigned char *p, size_t n, unsigned char v) {
  memset(p, v, n);
}

/* Every byte of [p, p + n) still holds v (one assertion: this is hot). */
static void assert_filled(const unsigned char *p, size_t n, unsigned char v) {
  size_t i = 0;
  while (i < n && p[i] == v)
    i++;
  cr_assert(eq(sz, i, n), "byte %zu of block %p is 0x%02x, expected 0x%02x", i, (const void *)p,
            i < n ? p[i] : 0, v);
}

Test(tlsf_resize, grows_into_a_free_next_block_and_fails_against_a_used_one) {
  ht_tlsf_t *t = make_heap(8192);
  unsigned char *a = ht__tlsf_malloc(t, 64);
  void *b = ht__tlsf_malloc(t, 64);
  void *c = ht__tlsf_malloc(t, 64);
  fill(a, 64, 0xAA);
  ht__tlsf_free(t, b);

  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 64 + HDR + 64 + 1), -1));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 64));
  assert_consistent(t);

  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 100), 0));
  cr_assert(ge(sz, ht__tlsf_usable_size(a), 100));
  assert_filled(a, 64, 0xAA);
  assert_consistent(t);

  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 64 + HDR + 64), 0));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 64 + HDR + 64));
  cr_assert(eq(sz, stats_of(t).free_blocks, 1)); /* only the tail remains */
  assert_filled(a, 64, 0xAA);
  assert_consistent(t);

  /* c is the last block before the tail: it can grow into it. */
  cr_assert(eq(int, ht__tlsf_resize_inplace(t, c, 4000), 0));
  cr_assert(ge(sz, ht__tlsf_usable_size(c), 4000));
  assert_consistent(t);
  cr_assert(eq(int, ht__tlsf_resize_inplace(t, c, ht__tlsf_total_bytes(t)), -1));
  cr_assert(eq(int, ht__tlsf_resize_inplace(t, NULL, 16), -1));
}

Test(tlsf_resize, shrinking_splits_off_a_free_tail_that_merges_with_the_next_block) {
  ht_tlsf_t *t = make_heap(8192);
  unsigned char *a = ht__tlsf_malloc(t, 512);
  void *guard = ht__tlsf_malloc(t, 16);
  fill(a, 512, 0x3C);

  /* A tail too small for a free block (16 < header + 16) stays with a. */
  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 496), 0));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 512));

  size_t free_before = stats_of(t).free_blocks;
  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 100), 0));
  cr_assert(eq(sz, ht__tlsf_usable_size(a), 112));
  cr_assert(eq(sz, stats_of(t).free_blocks, free_before + 1)); /* guard keeps it separate */
  assert_filled(a, 100, 0x3C);
  assert_consistent(t);

  cr_assert(eq(int, ht__tlsf_resize_inplace(t, a, 0), 0)); /* 0 shrinks, does not free */
  cr_assert(eq(sz, ht__tlsf_usable_size(a), HT_TLSF_MIN_BLOCK));
  cr_assert(eq(sz, stats_of(t).free_blocks, free_before + 1)); /* merged with the freed tail */
  cr_assert(eq(sz, stats_of(t).allocated_blocks, 2));
  assert_consistent(t);

  ht__tlsf_free(t, guard);
  ht__tlsf_free(t, a);
  assert_empty(t);
}

/* ---- contains / usable_size / walk -------------------------------------- */

Test(tlsf_contains, accepts_block_pointers_and_rejects_outside_ones) {
  ht_tlsf_t *t = make_heap(8192);
  unsigned char *p = ht__tlsf_malloc(t, 100);
  int local = 0;
  cr_assert(eq(int, ht__tlsf_contains(t, p), 1));
  cr_assert(eq(int, ht__tlsf_contains(t, p + 99), 1));
  cr_assert(eq(int, ht__tlsf_contains(t, t), 0)); /* control structure */
  cr_assert(eq(int, ht__tlsf_contains(t, &local), 0));
  cr_assert(eq(int, ht__tlsf_contains(t, NULL), 0));
  cr_assert(eq(int, ht__tlsf_contains(t, buf + 8192), 0));
  cr_assert(eq(sz, ht__tlsf_usable_size(NULL), 0));
}

static int stop_after_two(void *ptr, size_t size, int used, void *user) {
  (void)ptr;
  (void)size;
  (void)used;
  return ++*(int *)user == 2;
}

Test(tlsf_walk, visits_blocks_in_address_order_and_stops_on_nonzero) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 32), *b = ht__tlsf_malloc(t, 32), *c = ht__tlsf_malloc(t, 32);
  ht__tlsf_free(t, b);
  tally_t w = walk_tally(t);
  cr_assert(eq(int, w.unordered, 0));
  cr_assert(eq(sz, w.used_blocks, 2));
  cr_assert(eq(sz, w.free_blocks, 2));
  int calls = 0;
  ht__tlsf_walk(t, stop_after_two, &calls);
  cr_assert(eq(int, calls, 2));
  (void)a;
  (void)c;
}

/* ---- check() on corruption ---------------------------------------------- */

/* Header layout: prev_phys pointer, then the size field (payload | flags). */
static size_t *size_field(void *p) {
  return (size_t *)(void *)((char *)p - HDR + sizeof(void *));
}

static void **prev_phys_field(void *p) {
  return (void **)(void *)((char *)p - HDR);
}

Test(tlsf_check, detects_a_size_field_running_past_the_area_and_names_the_block) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64), *b = ht__tlsf_malloc(t, 64);
  (void)a;
  char err[256];
  size_t saved = *size_field(b);
  *size_field(b) = (size_t)1 << 40;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, b);
  cr_assert(not(zero(ptr, (void *)strstr(err, "past the end"))), "%s", err);
  *size_field(b) = saved;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), 0), "%s", err);
}

Test(tlsf_check, detects_garbage_flag_bits_and_a_size_below_minimum) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64);
  char err[256];
  size_t saved = *size_field(a);
  *size_field(a) = saved | 4;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, a);
  *size_field(a) = 0;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, a);
  *size_field(a) = saved;
  cr_assert(eq(int, ht__tlsf_check(t, NULL, 0), 0));
}

Test(tlsf_check, detects_a_broken_prev_phys_link) {
  ht_tlsf_t *t = make_heap(8192);
  ht__tlsf_malloc(t, 64);
  void *b = ht__tlsf_malloc(t, 64);
  char err[256];
  void *saved = *prev_phys_field(b);
  *prev_phys_field(b) = (char *)saved + 16;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, b);
  cr_assert(not(zero(ptr, (void *)strstr(err, "prev_phys"))), "%s", err);
  *prev_phys_field(b) = saved;
  assert_consistent(t);
}

Test(tlsf_check, detects_a_grown_size_that_swallows_the_next_header) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64);
  unsigned char *b = ht__tlsf_malloc(t, 64);
  ht__tlsf_malloc(t, 64);
  memset(b, 0, 64);
  char err[256];
  *size_field(a) += 32; /* lands inside b's payload, where zeros are a bad header */
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, b + 32);
}

Test(tlsf_check, detects_a_used_block_marked_free_next_to_a_free_block) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64), *b = ht__tlsf_malloc(t, 64);
  ht__tlsf_malloc(t, 64);
  ht__tlsf_free(t, a);
  char err[256];
  *size_field(b) |= 1; /* free flag without being in a list, next to free a */
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, b);
  cr_assert(not(zero(ptr, (void *)strstr(err, "coalesced"))), "%s", err);
}

Test(tlsf_check, detects_a_wild_free_list_link_without_crashing) {
  ht_tlsf_t *t = make_heap(8192);
  void *a = ht__tlsf_malloc(t, 64), *b = ht__tlsf_malloc(t, 64);
  ht__tlsf_malloc(t, 64);
  ht__tlsf_free(t, a);
  char err[256];
  void **next_free = (void **)a;
  void *wild[] = {(void *)(uintptr_t)0xdeadbeef0, (char *)b + 16, b, (char *)b - HDR, (void *)buf};
  for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
    *next_free = wild[i];
    cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1), "wild link %p accepted", wild[i]);
  }
  *next_free = NULL;
  assert_consistent(t);
}

Test(tlsf_check, detects_a_free_block_missing_from_its_list) {
  ht_tlsf_t *t = make_heap(8192);
  void *p[4];
  for (int i = 0; i < 4; i++)
    p[i] = ht__tlsf_malloc(t, 64);
  ht__tlsf_free(t, p[0]);
  ht__tlsf_free(t, p[2]); /* same list: p[2] -> p[0] */
  char err[256];
  void **next_free = (void **)p[2];
  cr_assert(eq(ptr, *next_free, (char *)p[0] - HDR));
  *next_free = NULL; /* p[0] is still free in the chain but no longer listed */
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  cr_assert(not(zero(ptr, (void *)strstr(err, "free lists"))), "%s", err);
  *next_free = (char *)p[0] - HDR;
  assert_consistent(t);

  void **prev_free = (void **)p[0] + 1; /* p[0] must point back at p[2] */
  *prev_free = NULL;
  cr_assert(eq(int, ht__tlsf_check(t, err, sizeof err), -1));
  assert_err_names(err, p[0]);
  cr_assert(not(zero(ptr, (void *)strstr(err, "prev_free"))), "%s", err);
  *prev_free = (char *)p[2] - HDR;
  assert_consistent(t);
}

/* ---- randomized stress against a shadow model --------------------------- */

typedef struct {
  unsigned char *p;
  size_t usable;
  unsigned char pat;
} live_t;

#define MAX_LIVE 4096
static live_t live[MAX_LIVE];
static uint32_t owner[REGION_BYTES / 16 + 512];

static size_t granule(const void *p) {
  return (size_t)((const unsigned char *)p - buf) / 16;
}

/* Claims [p, p + n) for id in the owner map; any overlap fails the test. */
static void claim(const unsigned char *p, size_t n, uint32_t id) {
  size_t g = granule(p), e = granule(p + n);
  while (g < e && owner[g] == 0)
    owner[g++] = id;
  cr_assert(eq(sz, g, e), "block %p overlaps live block %u at %p", (const void *)p,
            g < e ? owner[g] : 0, (void *)(buf + g * 16));
}

static void unclaim(const unsigned char *p, size_t n) {
  for (size_t g = granule(p), e = granule(p + n); g < e; g++)
    owner[g] = 0;
}

typedef struct {
  ht_tlsf_t *t;
  unsigned char *lo, *hi; /* region bounds */
  size_t n, live_bytes;
  uint64_t seed;
  size_t max_size;
  size_t allocs, alloc_fails, frees, resizes, resize_fails, max_live; /* coverage */
} stress_t;

static size_t pick_size(stress_t *s) {
  size_t r = rng_below(&s->seed, 100);
  size_t cap = r < 70 ? 128 : r < 95 ? 2048 : s->max_size;
  return rng_below(&s->seed, (cap < s->max_size ? cap : s->max_size) + 1);
}

static void adopt(stress_t *s, unsigned char *p) {
  size_t u = ht__tlsf_usable_size(p);
  cr_assert(eq(sz, (uintptr_t)p % HT_TLSF_ALIGN, 0));
  cr_assert(ge(ptr, p, s->lo));
  cr_assert(le(ptr, p + u, s->hi));
  live_t *l = &live[s->n++];
  s->allocs++;
  if (s->n > s->max_live)
    s->max_live = s->n;
  l->p = p;
  l->usable = u;
  l->pat = (unsigned char)(1 + rng_below(&s->seed, 255));
  claim(p, u, (uint32_t)s->n);
  memset(p, l->pat, u);
  s->live_bytes += u;
}

static void op_malloc(stress_t *s) {
  size_t size = pick_size(s);
  size_t guaranteed = stats_of(s->t).largest_free_block;
  unsigned char *p = ht__tlsf_malloc(s->t, size);
  if (guaranteed && size <= guaranteed)
    cr_assert(not(zero(ptr, p)), "malloc(%zu) failed with largest_free_block %zu", size,
              guaranteed);
  if (p) {
    cr_assert(ge(sz, ht__tlsf_usable_size(p), size));
    adopt(s, p);
  } else {
    s->alloc_fails++;
  }
}

static void op_memalign(stress_t *s) {
  size_t align = (size_t)32 << rng_below(&s->seed, 6);
  size_t size = pick_size(s);
  unsigned char *p = ht__tlsf_memalign(s->t, align, size);
  if (p) {
    cr_assert(eq(sz, (uintptr_t)p % align, 0));
    cr_assert(ge(sz, ht__tlsf_usable_size(p), size));
    adopt(s, p);
  }
}

static void op_free(stress_t *s, size_t i) {
  live_t *l = &live[i];
  assert_filled(l->p, l->usable, l->pat);
  unclaim(l->p, l->usable);
  s->live_bytes -= l->usable;
  s->frees++;
  ht__tlsf_free(s->t, l->p);
  *l = live[--s->n];
  /* the moved entry keeps its owner id: ids are only tested for non-zero */
}

static void op_resize(stress_t *s, size_t i) {
  live_t *l = &live[i];
  size_t size = pick_size(s), old = l->usable;
  int rc = ht__tlsf_resize_inplace(s->t, l->p, size);
  size_t now = ht__tlsf_usable_size(l->p);
  if (rc != 0) {
    cr_assert(eq(sz, now, old));
    s->resize_fails++;
    return;
  }
  s->resizes++;
  cr_assert(ge(sz, now, size));
  assert_filled(l->p, now < old ? now : old, l->pat);
  unclaim(l->p, old);
  claim(l->p, now, (uint32_t)(i + 1));
  memset(l->p, l->pat, now);
  s->live_bytes = s->live_bytes - old + now;
  l->usable = now;
}

static void stress(size_t offset, size_t bytes, uint64_t seed, long ops, size_t max_size,
                   long check_every) {
  memset(owner, 0, sizeof owner);
  stress_t s;
  memset(&s, 0, sizeof s);
  s.lo = buf + offset;
  s.hi = buf + offset + bytes;
  s.seed = seed;
  s.max_size = max_size;
  s.t = ht__tlsf_create(buf + offset, bytes);
  cr_assert(not(zero(ptr, s.t)));
  size_t initial = stats_of(s.t).total_free_bytes;
  for (long op = 0; op < ops; op++) {
    size_t r = rng_below(&s.seed, 100);
    if (s.n == MAX_LIVE || (s.n && r >= 55 && r < 90))
      op_free(&s, rng_below(&s.seed, s.n));
    else if (s.n && r >= 90)
      op_resize(&s, rng_below(&s.seed, s.n));
    else if (r < 45 || r >= 55)
      op_malloc(&s);
    else
      op_memalign(&s);
    ht_tlsf_stats_t st = stats_of(s.t);
    cr_assert(eq(sz, st.allocated_blocks, s.n));
    cr_assert(eq(sz, st.total_allocated_bytes, s.live_bytes));
    if (op % check_every == 0)
      assert_consistent(s.t);
  }
  assert_consistent(s.t);
  cr_log_info(
      "stress %zu bytes seed %llu: %zu allocs (%zu failed), %zu frees, %zu/%zu resizes ok/failed, "
      "max %zu live",
      bytes, (unsigned long long)seed, s.allocs, s.alloc_fails, s.frees, s.resizes, s.resize_fails,
      s.max_live);
  /* The run must have reached exhaustion and exercised every path. */
  cr_assert(lt(sz, (size_t)ops / 4, s.allocs));
  cr_assert(lt(sz, 0, s.alloc_fails));
  cr_assert(lt(sz, 0, s.resizes));
  cr_assert(lt(sz, 0, s.resize_fails));
  while (s.n)
    op_free(&s, s.n - 1);
  assert_empty(s.t);
  cr_assert(eq(sz, stats_of(s.t).total_free_bytes, initial));
}

Test(tlsf_stress, random_ops_on_1mib_region_match_shadow_model_seed_1, .timeout = 120) {
  stress(0, REGION_BYTES, 1, 200000, 64 * 1024, 500);
}

Test(tlsf_stress, random_ops_on_unaligned_1mib_region_match_shadow_model_seed_2, .timeout = 120) {
  stress(7, REGION_BYTES - 7, 2, 200000, 16 * 1024, 500);
}

Test(tlsf_stress, random_ops_on_2kib_region_match_shadow_model_checked_every_step, .timeout = 120) {
  stress(0, 2048, 3, 50000, 700, 1);
  stress(5, 2048, 4, 50000, 300, 1);
}
