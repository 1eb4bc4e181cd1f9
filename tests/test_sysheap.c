/* test_sysheap.c - usable sizes of glibc blocks (libclient/sysheap.c), and
 * the call sites the macros keep.
 *
 * The client reads a glibc block's usable size from its chunk header
 * instead of calling malloc_usable_size(), once a start-up check has shown
 * that glibc allocates and that the two agree. These suites prove that the
 * two agree on blocks of every kind, that the fast path is on where it
 * should be, that the check refuses a formula wrong for any one kind of
 * block, and that with the check failed malloc_usable_size() answers.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#include "caps.h"
#include "client.h"
#include "programs/grow.h"
#include "test_rand.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1 /* the sanitizer's malloc, not glibc's */
#else
#define SANITIZED 0
#endif

/* Where the fast path exists, and where the start-up check must turn it on. */
#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#define GLIBC_CHUNKS 1
#else
#define GLIBC_CHUNKS 0
#endif
#define FAST_EXPECTED (GLIBC_CHUNKS && !SANITIZED)

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
}

TestSuite(sysheap_usable, .init = setup, .timeout = 60);

/* The first call of the process runs the start-up check. */
static void start_client(void) {
  ht_free(ht_malloc(1));
}

/* A size from 0 to 2^max_log2 bytes, spread over the powers of two. */
static size_t random_size(unsigned max_log2) {
  unsigned bits = (unsigned)(test_rand() % (max_log2 + 1));
  return (size_t)(test_rand() & (((uint64_t)1 << bits) - 1));
}

/* A block of a random kind: malloc, calloc, posix_memalign, realloc'ed. */
static void *random_block(void) {
  size_t size = random_size(19); /* up to 512 KiB: past the mmap threshold */
  void *p = NULL;
  switch (test_rand() % 4) {
  case 0:
    return malloc(size);
  case 1:
    return calloc(1, size);
  case 2:
    return posix_memalign(&p, (size_t)16 << (test_rand() % 9), size) == 0 ? p : NULL;
  default: /* realloc to 0 would free it */
    p = malloc(random_size(19));
    void *np = p ? realloc(p, size + 1) : NULL;
    if (!np)
      free(p);
    return np;
  }
}

#define LIVE 256 /* blocks held at once, so that neighbours are in use */

Test(sysheap_usable, agrees_with_malloc_usable_size_on_thousands_of_random_blocks) {
  start_client();
  cr_assert(eq(int, ht__sys_usable_fast(), FAST_EXPECTED));
  void *live[LIVE] = {0};
  for (int i = 0; i < 20000; i++) {
    unsigned k = (unsigned)(test_rand() % LIVE);
    free(live[k]);
    live[k] = random_block();
    cr_assert(ne(ptr, live[k], NULL));
    cr_assert(eq(sz, ht__sys_usable(live[k]), malloc_usable_size(live[k])), "block %d", i);
  }
  for (unsigned k = 0; k < LIVE; k++)
    free(live[k]);
}

Test(sysheap_usable, the_traced_entry_points_account_malloc_usable_size) {
  start_client();
  ht_totals_t before, after;
  ht_get_totals(&before);
  void *p = ht_malloc(777), *q = ht_calloc(3, 70000);
  ht_get_totals(&after);
  cr_assert(eq(i64, after.cur_bytes - before.cur_bytes,
               (int64_t)(malloc_usable_size(p) + malloc_usable_size(q))));
  ht_free(p);
  ht_free(q);
  ht_get_totals(&after);
  cr_assert(eq(i64, after.cur_bytes, before.cur_bytes));
}

/* ---- the start-up check refuses what is wrong for any kind of block ---- */

static size_t libc_usable(const void *p) {
  return malloc_usable_size((void *)p);
}

static size_t wrong_for_mmapped(const void *p) {
  size_t u = libc_usable(p);
  return u >= ((size_t)32 << 20) ? u + 16 : u; /* only mmap'd blocks are this big */
}

static size_t wrong_for_page_aligned(const void *p) {
  return libc_usable(p) + ((uintptr_t)p % 4096 == 0 ? 8 : 0);
}

static size_t wrong_for_small(const void *p) {
  size_t u = libc_usable(p);
  return u < 32 ? u + 8 : u;
}

Test(sysheap_usable, the_check_passes_malloc_usable_size_itself) {
  cr_assert(eq(int, ht__sys_usable_agrees(libc_usable), GLIBC_CHUNKS));
}

Test(sysheap_usable, the_check_refuses_a_formula_wrong_for_one_kind_of_block) {
  cr_assert(eq(int, ht__sys_usable_agrees(wrong_for_mmapped), 0));
  cr_assert(eq(int, ht__sys_usable_agrees(wrong_for_page_aligned), 0));
  cr_assert(eq(int, ht__sys_usable_agrees(wrong_for_small), 0));
}

/* ---- with the check failed, malloc_usable_size() answers ---- */

#if FAST_EXPECTED
/* A chunk no allocator made: header {prev_size, size 32 | PREV_INUSE},
 * then the next chunk's header with PREV_INUSE clear. The chunk header
 * says 24 usable bytes; malloc_usable_size() looks at the next chunk, sees
 * this one free, and says 0: which of the two answered shows. */
static _Alignas(16) size_t fake[8] = {0, 32 | 1, 0, 0, 0, 32, 0, 0};

Test(sysheap_usable, a_failed_check_leaves_malloc_usable_size_in_charge) {
  start_client();
  void *p = &fake[2];
  cr_assert(eq(int, ht__sys_usable_fast(), 1));
  cr_assert(eq(sz, ht__sys_usable(p), 24)); /* the chunk header */
  ht__sys_usable_setup(0);
  cr_assert(eq(int, ht__sys_usable_fast(), 0));
  cr_assert(eq(sz, ht__sys_usable(p), 0)); /* malloc_usable_size() */
  ht__sys_usable_setup(1);
  cr_assert(eq(int, ht__sys_usable_fast(), 1));
}
#endif

/* ---- the static call site of a macro keeps its accounting index ---- */

/* Calls counted at accounting site idx, over every thread. */
static uint64_t calls_at(uint32_t idx) {
  static uint64_t calls[HT_ACCT_SITES], bytes[HT_ACCT_SITES];
  ht__acct_site_totals(calls, bytes, HT_ACCT_SITES);
  return calls[idx];
}

Test(sysheap_sites, a_call_site_learns_its_index_on_its_first_call) {
  start_client();
  static const ht_where_t w = {__FILE__, __func__, 100001};
  void *p = ht__malloc_at(10, &w);
  uint32_t idx = ht__acct_site_find(__FILE__, 100001, __func__, NULL);
  cr_assert(ne(u32, idx, 0));
  cr_assert(eq(u32, ht__where_site(&w), idx));
  void *q = ht__calloc_at(2, 20, &w);
  p = ht__realloc_at(p, 30, &w);
  cr_assert(eq(u64, calls_at(idx), 3));
  ht__free_at(p, &w);
  ht__free_at(q, &w);
  cr_assert(eq(u64, calls_at(idx), 3), "frees are not counted at a site");
  cr_assert(eq(u32, ht__where_site(&w), idx));
}

Test(sysheap_sites, the_plain_entry_points_intern_file_line_and_function) {
  start_client(); /* the forms other compilers' macros reach */
  void *p = ht__malloc(10, __FILE__, 100003, __func__);
  p = ht__realloc(p, 20, __FILE__, 100003, __func__);
  void *q = ht__calloc(1, 5, __FILE__, 100003, __func__);
  uint32_t idx = ht__acct_site_find(__FILE__, 100003, __func__, NULL);
  cr_assert(ne(u32, idx, 0));
  cr_assert(eq(u64, calls_at(idx), 3));
  ht__free(p, __FILE__, 100003, __func__);
  ht__free(q, __FILE__, 100003, __func__);
}

Test(sysheap_sites, the_macros_count_each_expansion_at_its_own_site) {
  start_client();
  void *p = ht_malloc(1); /* the next line must be the second site */
  void *q = ht_malloc(2);
  uint32_t first = ht__acct_site_find(__FILE__, __LINE__ - 2, __func__, NULL);
  uint32_t second = ht__acct_site_find(__FILE__, __LINE__ - 2, __func__, NULL);
  cr_assert(ne(u32, first, 0));
  cr_assert(ne(u32, second, 0));
  cr_assert(ne(u32, first, second));
  for (int i = 0; i < 3; i++)
    ht_free(ht_malloc(3)); /* one site, three calls */
  uint32_t loop = ht__acct_site_find(__FILE__, __LINE__ - 1, __func__, NULL);
  cr_assert(eq(u64, calls_at(loop), 3));
  cr_assert(eq(u64, calls_at(first), 1));
  ht_free(p);
  ht_free(q);
}

Test(sysheap_sites, a_cached_site_is_checked_against_the_line_at_its_address) {
  start_client();
  /* As if a library were unloaded and another loaded at its address: the
   * object at the address the cache knows now names another line. */
  static ht_where_t w = {__FILE__, __func__, 100004};
  ht__free_at(ht__malloc_at(1, &w), &w);
  uint32_t first = ht__acct_site_find(__FILE__, 100004, __func__, NULL);
  cr_assert(eq(u32, ht__where_site(&w), first));
  w.line = 100005;
  cr_assert(eq(u32, ht__where_site(&w), 0));
  ht__free_at(ht__malloc_at(1, &w), &w);
  uint32_t second = ht__acct_site_find(__FILE__, 100005, __func__, NULL);
  cr_assert(ne(u32, second, 0));
  cr_assert(ne(u32, second, first));
  cr_assert(eq(u64, calls_at(first), 1));
  cr_assert(eq(u64, calls_at(second), 1));
  cr_assert(eq(u32, ht__where_site(&w), second));
}

Test(sysheap_sites, the_caps_entry_points_learn_their_call_site_too) {
  start_client(); /* no region: the system heap serves the default caps */
  static const ht_where_t w = {__FILE__, __func__, 100006};
  void *a = ht__caps_malloc_at(10, HT_CAP_DEFAULT, &w);
  uint32_t idx = ht__acct_site_find(__FILE__, 100006, __func__, NULL);
  cr_assert(ne(u32, idx, 0));
  cr_assert(eq(u32, ht__where_site(&w), idx));
  void *b = ht__caps_calloc_at(2, 8, HT_CAP_DEFAULT, &w);
  a = ht__caps_realloc_at(a, 40, HT_CAP_DEFAULT, &w);
  void *d = ht__caps_aligned_alloc_at(64, 10, HT_CAP_DEFAULT, &w);
  void *e = ht__caps_aligned_calloc_at(64, 2, 8, HT_CAP_DEFAULT, &w);
  cr_assert(a && b && d && e);
  cr_assert(eq(u64, calls_at(idx), 5));
  ht__caps_free_at(a, &w);
  ht__caps_free_at(b, &w);
  ht_caps_aligned_free(d);
  ht_caps_free(e);
  cr_assert(eq(u64, calls_at(idx), 5), "frees are not counted at a site");
  void *m = ht_caps_malloc(1, HT_CAP_DEFAULT);
  uint32_t macro = ht__acct_site_find(__FILE__, __LINE__ - 1, __func__, NULL);
  cr_assert(ne(u32, macro, 0));
  cr_assert(eq(u64, calls_at(macro), 1));
  ht_caps_free(m);
}

typedef struct {
  int x, y;
} point_t;

Test(sysheap_sites, a_typed_realloc_counts_at_the_typed_site_and_leaves_the_macro_its_own) {
  start_client();
  static const ht_where_t w = {__FILE__, __func__, 100002};
  point_t *pt = HT_NEW(point_t, 2);
  cr_assert(not(zero(ptr, pt)));
  /* A realloc gives the call the block's type: another site, not kept. */
  void *r = ht__realloc_at(pt, 100, &w);
  uint32_t typed = ht__acct_site_find(__FILE__, 100002, __func__, "point_t");
  cr_assert(ne(u32, typed, 0));
  cr_assert(eq(u32, ht__where_site(&w), 0));
  cr_assert(eq(u64, calls_at(typed), 1));
  /* An untyped call from the same place gets and keeps the plain site. */
  void *u = ht__malloc_at(5, &w);
  uint32_t plain = ht__acct_site_find(__FILE__, 100002, __func__, NULL);
  cr_assert(ne(u32, plain, 0));
  cr_assert(ne(u32, plain, typed));
  cr_assert(eq(u32, ht__where_site(&w), plain));
  /* With the index kept, a typed realloc still goes to the typed site. */
  r = ht__realloc_at(r, 200, &w);
  cr_assert(eq(u64, calls_at(typed), 2));
  cr_assert(eq(u64, calls_at(plain), 1));
  cr_assert(eq(u32, ht__where_site(&w), plain));
  ht_free(r);
  ht_free(u);
}

/* ---- a traced realloc is glibc's own ---- */

TestSuite(sysheap_realloc, .init = setup, .timeout = 60);

#define GROW_TOP ((size_t)4 << 20) /* past the mmap threshold: mremap's ground */

/* Untraced, glibc grows a block in place, or moves an mmap'd one with
 * mremap, and seldom copies: a program that grows a buffer a little at a
 * time runs in linear time. Traced, it must too: a realloc that always
 * moved copied the whole block at every step, 2 GiB here, and a program
 * growing a 16 MiB buffer by pages ran 1000 times as long. The same
 * rule holds under a sanitizer, whose realloc always moves. */
Test(sysheap_realloc, a_growing_block_moves_no_more_often_than_with_glibcs_realloc) {
  start_client();
  unsigned long steps = 0, untraced = 0;
  long plain = grow_block(GROW_TOP, 0, &untraced), traced = grow_block(GROW_TOP, 1, &steps);
  cr_assert(ge(long, plain, 0), "untraced: an allocation failed or the bytes did not come along");
  cr_assert(ge(long, traced, 0), "traced: an allocation failed or the bytes did not come along");
  cr_assert(le(long, traced, plain + (long)steps / 16),
            "traced: %ld moves in %lu steps; untraced %ld", traced, steps, plain);
}

Test(sysheap_realloc, a_traced_realloc_accounts_the_usable_sizes_before_and_after) {
  start_client();
  ht_totals_t before, mid, after;
  ht_get_totals(&before);
  void *p = ht_malloc(100);
  ht_get_totals(&mid);
  void *q = ht_realloc(p, 300000); /* a heap chunk becomes an mmap'd one */
  cr_assert(ne(ptr, q, NULL));
  ht_get_totals(&after);
  cr_assert(eq(i64, after.cur_bytes - mid.cur_bytes,
               (int64_t)malloc_usable_size(q) - (int64_t)(mid.cur_bytes - before.cur_bytes)));
  cr_assert(eq(i64, after.cur_blocks, mid.cur_blocks));
  q = ht_realloc(q, 20); /* and back */
  ht_get_totals(&mid);
  cr_assert(eq(i64, mid.cur_bytes - before.cur_bytes, (int64_t)malloc_usable_size(q)));
  ht_free(q);
  ht_get_totals(&after);
  cr_assert(eq(i64, after.cur_bytes, before.cur_bytes));
  cr_assert(eq(i64, after.cur_blocks, before.cur_blocks));
}
