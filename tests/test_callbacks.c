/* test_callbacks.c - the alloc callback (LibHTTP semantics), the process
 * totals behind it, and how it behaves when it allocates itself
 * (libclient/callbacks.c, account.c).
 *
 * The callback records every call into a table; tests compare the table
 * with what the allocations must have reported: the action, the file and
 * line of the call, the signed change of bytes (usable bytes, which
 * ht_caps_get_allocated_size / malloc_usable_size let us predict), and the
 * live blocks and bytes of the whole process after it.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <heaptrace/heaptrace.h>

static _Alignas(64) unsigned char dram[64 * 1024];
static _Alignas(64) unsigned char big[1024 * 1024];

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
}

TestSuite(callbacks, .init = setup, .timeout = 60);

typedef struct {
  char file[64];
  unsigned line;
  char action[16];
  int64_t bytes, blocks, total;
} call_t;

static call_t calls[256];
static int ncalls;

static void record(const char *file, unsigned line, const char *action, int64_t current_bytes,
                   int64_t total_blocks, int64_t total_bytes) {
  if (ncalls >= 256)
    return;
  call_t *c = &calls[ncalls++];
  const char *slash = strrchr(file, '/');
  snprintf(c->file, sizeof c->file, "%s", slash ? slash + 1 : file);
  c->line = line;
  snprintf(c->action, sizeof c->action, "%s", action);
  c->bytes = current_bytes;
  c->blocks = total_blocks;
  c->total = total_bytes;
}

static void expect(int i, const char *action, unsigned line, int64_t bytes, int64_t blocks,
                   int64_t total) {
  cr_assert(lt(int, i, ncalls), "call %d missing", i);
  cr_assert(eq(str, calls[i].action, (char *)action), "call %d", i);
  cr_assert(eq(str, calls[i].file, "test_callbacks.c"), "call %d", i);
  cr_assert(eq(uint, calls[i].line, line), "call %d", i);
  cr_assert(eq(i64, calls[i].bytes, bytes), "call %d", i);
  cr_assert(eq(i64, calls[i].blocks, blocks), "call %d", i);
  cr_assert(eq(i64, calls[i].total, total), "call %d", i);
}

Test(callbacks, system_heap_transactions_report_action_signed_bytes_and_totals) {
  ht_set_alloc_callback(record);
  unsigned l1 = __LINE__ + 1;
  char *a = ht_malloc(100);
  int64_t ua = (int64_t)malloc_usable_size(a);
  unsigned l2 = __LINE__ + 1;
  char *b = ht_calloc(10, 30);
  int64_t ub = (int64_t)malloc_usable_size(b);
  unsigned l3 = __LINE__ + 1;
  char *a2 = ht_realloc(a, 5000);
  int64_t ua2 = (int64_t)malloc_usable_size(a2);
  unsigned l4 = __LINE__ + 1;
  char *a3 = ht_realloc(a2, 10);
  int64_t ua3 = (int64_t)malloc_usable_size(a3);
  unsigned l5 = __LINE__ + 1;
  char *c = ht_realloc(NULL, 64);
  int64_t uc = (int64_t)malloc_usable_size(c);
  unsigned l6 = __LINE__ + 1;
  ht_realloc(c, 0);
  unsigned l7 = __LINE__ + 1;
  ht_free(b);
  unsigned l8 = __LINE__ + 1;
  ht_free(a3);
  expect(0, "malloc", l1, ua, 1, ua);
  expect(1, "malloc", l2, ub, 2, ua + ub);
  expect(2, "realloc", l3, ua2 - ua, 2, ua2 + ub);
  expect(3, "realloc", l4, ua3 - ua2, 2, ua3 + ub);
  cr_assert(lt(i64, calls[3].bytes, 0), "a shrinking realloc is negative");
  expect(4, "malloc", l5, uc, 3, ua3 + ub + uc);
  expect(5, "free", l6, -uc, 2, ua3 + ub);
  expect(6, "free", l7, -ub, 1, ua3);
  expect(7, "free", l8, -ua3, 0, 0);
  cr_assert(eq(int, ncalls, 8));
}

Test(callbacks, caps_heap_transactions_are_reported_too) {
  const uint32_t caps[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_DMA, 0, 0};
  cr_assert(eq(int,
               ht_heap_add_region_with_caps(caps, (intptr_t)dram, (intptr_t)dram + sizeof dram),
               HT_OK));
  ht_set_alloc_callback(record);
  unsigned l1 = __LINE__ + 1;
  void *p = ht_caps_aligned_alloc(128, 100, HT_CAP_DMA);
  unsigned l2 = __LINE__ + 1;
  void *q = HT_CAPS_NEW(double, 4, HT_CAP_DMA);
  unsigned l3 = __LINE__ + 1;
  ht_caps_free(p);
  cr_assert(eq(int, ncalls, 3));
  cr_assert(eq(str, calls[0].action, "malloc"), "aligned is a malloc");
  cr_assert(eq(uint, calls[0].line, l1));
  cr_assert(ge(i64, calls[0].bytes, 100));
  cr_assert(eq(str, calls[1].action, "malloc"));
  cr_assert(eq(uint, calls[1].line, l2));
  expect(2, "free", l3, -calls[0].bytes, 1, calls[1].bytes);
  ht_caps_free(q);
}

Test(callbacks, null_removes_the_callback_and_failures_are_not_transactions) {
  ht_set_alloc_callback(record);
  void *p = ht_malloc(10);
  ht_set_alloc_callback(NULL);
  ht_free(p);
  cr_assert(eq(int, ncalls, 1));
  ht_set_alloc_callback(record);
  cr_assert(eq(ptr, ht_malloc((size_t)1 << 62), NULL));
  cr_assert(eq(ptr, ht_caps_malloc(10, HT_CAP_RTCRAM), NULL));
  cr_assert(eq(int, ncalls, 1));
}

static int depth, max_depth, reentered;

/* Allocates through the library from inside the callback. */
static void allocating(const char *file, unsigned line, const char *action, int64_t current_bytes,
                       int64_t total_blocks, int64_t total_bytes) {
  (void)file;
  (void)line;
  (void)action;
  (void)current_bytes;
  (void)total_blocks;
  (void)total_bytes;
  if (++depth > max_depth)
    max_depth = depth;
  reentered++;
  void *p = ht_malloc(32);
  void *q = ht_caps_malloc(32, HT_CAP_DMA); /* the heap of the outer call */
  ht_caps_free(q);
  ht_free(p);
  depth--;
}

Test(callbacks, a_callback_that_allocates_neither_recurses_nor_deadlocks) {
  const uint32_t caps[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_DMA, 0, 0};
  ht_heap_add_region_with_caps(caps, (intptr_t)dram, (intptr_t)dram + sizeof dram);
  ht_set_alloc_callback(allocating);
  void *a = ht_caps_malloc(100, HT_CAP_DMA);
  void *b = ht_malloc(100);
  ht_caps_free(a);
  ht_free(b);
  cr_assert(eq(int, reentered, 4), "one call per outer transaction");
  cr_assert(eq(int, max_depth, 1));
  ht_set_alloc_callback(NULL);
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(i64, t.cur_blocks, 0), "the callback's own blocks are counted and freed");
  cr_assert(eq(u64, t.allocs, 2 + 4 * 2));
}

static _Atomic int64_t seen;

static void counting(const char *file, unsigned line, const char *action, int64_t current_bytes,
                     int64_t total_blocks, int64_t total_bytes) {
  (void)file;
  (void)line;
  (void)action;
  (void)current_bytes;
  (void)total_bytes;
  (void)total_blocks;
  seen++;
}

static void *churn(void *arg) {
  (void)arg;
  void *keep[100];
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 100; i++)
      keep[i] = (i % 2) ? ht_malloc((size_t)i * 8) : ht_caps_malloc((size_t)i * 8, HT_CAP_DMA);
    for (int i = 0; i < 100; i++)
      keep[i] = ht_realloc(keep[i], (size_t)i * 8 + 100);
    for (int i = 0; i < 100; i++)
      ht_free(keep[i]);
  }
  void *leak = ht_malloc(1000); /* outlives the thread */
  return leak;
}

Test(callbacks, process_totals_sum_over_threads_and_survive_thread_exit) {
  const uint32_t caps[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_DMA, 0, 0};
  cr_assert(eq(int, ht_heap_add_region_with_caps(caps, (intptr_t)big, (intptr_t)big + sizeof big),
               HT_OK));
  ht_set_alloc_callback(counting);
  enum { T = 4 };
  pthread_t th[T];
  void *left[T];
  for (int i = 0; i < T; i++)
    cr_assert(eq(int, pthread_create(&th[i], NULL, churn, NULL), 0));
  for (int i = 0; i < T; i++)
    pthread_join(th[i], &left[i]);
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(i64, t.cur_blocks, T));
  cr_assert(eq(u64, t.allocs, (uint64_t)T * (20 * 100 + 1)));
  cr_assert(eq(u64, t.reallocs, (uint64_t)T * 20 * 100));
  cr_assert(eq(u64, t.frees, (uint64_t)T * 20 * 100));
  cr_assert(eq(i64, seen, (int64_t)(t.allocs + t.reallocs + t.frees)));
  int64_t live = 0;
  for (int i = 0; i < T; i++)
    live += (int64_t)malloc_usable_size(left[i]);
  cr_assert(eq(i64, t.cur_bytes, live));
  for (int i = 0; i < T; i++)
    ht_free(left[i]); /* freed by another thread than the one that allocated */
  ht_get_totals(&t);
  cr_assert(eq(i64, t.cur_blocks, 0));
  cr_assert(eq(i64, t.cur_bytes, 0));
  cr_assert(ge(u64, t.total_bytes, (uint64_t)live));
}
