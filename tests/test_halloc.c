/* test_halloc.c - typed allocation (HT_NEW, heaptrace/halloc.h) and its
 * per-type statistics (libclient/typed.c).
 *
 * Statistics count usable bytes, which malloc_usable_size() (system heap)
 * and the walk (caps heaps) let a test predict exactly.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <heaptrace/halloc.h>

typedef struct {
  char name[25];
  long values[10];
} typeX;

struct node {
  struct node *next;
  int v;
};

static _Alignas(64) unsigned char spiram[256 * 1024];

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
}

TestSuite(halloc, .init = setup, .timeout = 60);

static char *capture_stdout(void (*fn)(void)) {
  static char buf[65536];
  int p[2];
  cr_assert(eq(int, pipe(p), 0));
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  dup2(p[1], STDOUT_FILENO);
  close(p[1]);
  fn();
  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = '\0';
  close(p[0]);
  return buf;
}

Test(halloc, ht_new_returns_zeroed_objects_and_counts_them_under_the_type_name) {
  typeX *dirty = malloc(10 * sizeof(typeX));
  memset(dirty, 0xee, 10 * sizeof(typeX));
  free(dirty);
  typeX *p = HT_NEW(typeX, 10);
  cr_assert(ne(ptr, p, NULL));
  for (size_t i = 0; i < 10 * sizeof(typeX); i++)
    cr_assert(eq(u8, ((unsigned char *)p)[i], 0));
  int64_t u = (int64_t)malloc_usable_size(p);
  ht_type_stats_t st;
  cr_assert(eq(int, ht_type_stats(typeX, &st), HT_OK));
  cr_assert(eq(str, (char *)st.name, "typeX"));
  cr_assert(eq(u64, st.allocs, 1));
  cr_assert(eq(u64, st.bytes, (uint64_t)u));
  cr_assert(eq(i64, st.cur_blocks, 1));
  cr_assert(eq(i64, st.cur_bytes, u));
  struct node *n1 = HT_NEW(struct node, 1);
  struct node *n2 = HT_NEW(struct node, 1);
  ht_free(n1);
  cr_assert(eq(int, ht_type_stats(struct node, &st), HT_OK));
  cr_assert(eq(str, (char *)st.name, "struct node"));
  cr_assert(eq(u64, st.allocs, 2));
  cr_assert(eq(i64, st.cur_blocks, 1));
  cr_assert(eq(i64, st.peak_blocks, 2));
  cr_assert(eq(i64, st.peak_bytes, 2 * (int64_t)malloc_usable_size(n2)));
  ht_free(n2);
  ht_free(p);
  cr_assert(eq(int, ht_type_stats(typeX, &st), HT_OK));
  cr_assert(eq(i64, st.cur_blocks, 0));
  cr_assert(eq(i64, st.cur_bytes, 0));
  cr_assert(eq(i64, st.peak_bytes, u));
  cr_assert(eq(int, ht_get_type_stats("never used", &st), HT_ENOTFOUND));
}

Test(halloc, a_plain_block_is_not_counted_under_any_type) {
  typeX *p = HT_NEW(typeX, 1);
  void *q = ht_malloc(sizeof(typeX));
  ht_free(q);
  ht_type_stats_t st;
  ht_type_stats(typeX, &st);
  cr_assert(eq(i64, st.cur_blocks, 1));
  ht_free(p);
  ht_type_stats(typeX, &st);
  cr_assert(eq(i64, st.cur_blocks, 0));
}

Test(halloc, realloc_keeps_the_type_across_heaps) {
  const uint32_t caps[3] = {HT_CAP_SPIRAM | HT_CAP_8BIT, 0, 0};
  ht_heap_add_region_with_caps(caps, (intptr_t)spiram, (intptr_t)spiram + sizeof spiram);
  long *v = HT_NEW(long, 4);
  v[3] = 42;
  v = ht_realloc(v, 4000 * sizeof(long));
  ht_type_stats_t st;
  ht_type_stats(long, &st);
  cr_assert(eq(i64, st.cur_blocks, 1));
  cr_assert(eq(i64, st.cur_bytes, (int64_t)malloc_usable_size(v)));
  v = ht_caps_realloc(v, 100 * sizeof(long), HT_CAP_SPIRAM);
  cr_assert(eq(u32, ht_heap_id(ht_heap_containing(v)), 1));
  cr_assert(eq(i64, v[3], 42));
  ht_heap_info_t info;
  ht_caps_get_info(&info, HT_CAP_SPIRAM);
  ht_type_stats(long, &st);
  cr_assert(eq(i64, st.cur_blocks, 1));
  cr_assert(eq(i64, st.cur_bytes, (int64_t)info.total_allocated_bytes));
  cr_assert(eq(u64, st.allocs, 1), "a realloc is not a new allocation");
  ht_free(v);
  ht_type_stats(long, &st);
  cr_assert(eq(i64, st.cur_blocks, 0));
  cr_assert(eq(i64, st.cur_bytes, 0));
}

static bool find_typed(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  (void)heap;
  if (b.used && b.type && strcmp(b.type, "typeX") == 0)
    ++*(int *)user;
  return true;
}

Test(halloc, caps_new_puts_the_type_in_the_block_header) {
  const uint32_t caps[3] = {HT_CAP_SPIRAM | HT_CAP_8BIT, 0, 0};
  ht_heap_add_region_with_caps(caps, (intptr_t)spiram, (intptr_t)spiram + sizeof spiram);
  typeX *p = HT_CAPS_NEW(typeX, 3, HT_CAP_SPIRAM);
  cr_assert(eq(u32, ht_heap_id(ht_heap_containing(p)), 1));
  for (size_t i = 0; i < 3 * sizeof(typeX); i++)
    cr_assert(eq(u8, ((unsigned char *)p)[i], 0));
  int found = 0;
  ht_caps_walk_all(find_typed, &found);
  cr_assert(eq(int, found, 1));
  ht_type_stats_t st;
  ht_type_stats(typeX, &st);
  cr_assert(eq(i64, st.cur_blocks, 1));
  ht_caps_free(p);
  ht_type_stats(typeX, &st);
  cr_assert(eq(i64, st.cur_blocks, 0));
}

static typeX *items[2];

static void print_all(void) {
  halloc_print_saved_page_items();
  halloc_print_total_memory_usage();
  halloc_print_type_memory_usage(typeX);
  halloc_print_type_memory_usage(struct node);
}

Test(halloc, halloc_names_print_totals_types_and_the_live_typed_items) {
  const uint32_t caps[3] = {HT_CAP_SPIRAM | HT_CAP_8BIT, 0, 0};
  ht_heap_add_region_with_caps(caps, (intptr_t)spiram, (intptr_t)spiram + sizeof spiram);
  items[0] = halloc(typeX, 10);
  items[1] = HT_CAPS_NEW(typeX, 2, HT_CAP_SPIRAM);
  char *out = capture_stdout(print_all);
  char addr[32];
  snprintf(addr, sizeof addr, "%p", (void *)items[0]);
  cr_assert(ne(ptr, strstr(out, addr), NULL), "%s", out);
  snprintf(addr, sizeof addr, "%p", (void *)items[1]);
  cr_assert(ne(ptr, strstr(out, addr), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "2 items"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "test_halloc.c:"), NULL));
  cr_assert(ne(ptr, strstr(out, "memory usage: 2 live blocks"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "heaptrace type typeX: 2 live blocks"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "heaptrace type struct node: no allocations"), NULL), "%s", out);
  hfree(items[0]);
  hfree(items[1]);
}

Test(halloc, overflowing_counts_fail) {
  cr_assert(eq(ptr, HT_NEW(typeX, SIZE_MAX / 8), NULL));
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(u64, t.failures, 1));
}

static void *typed_churn(void *arg) {
  (void)arg;
  struct node *keep[64];
  for (int round = 0; round < 200; round++) {
    for (int i = 0; i < 64; i++)
      keep[i] = HT_NEW(struct node, (size_t)i + 1);
    for (int i = 0; i < 64; i++)
      ht_free(keep[i]);
  }
  return NULL;
}

Test(halloc, typed_blocks_from_many_threads_balance_out) {
  enum { T = 4 };
  pthread_t th[T];
  for (int i = 0; i < T; i++)
    pthread_create(&th[i], NULL, typed_churn, NULL);
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  ht_type_stats_t st;
  cr_assert(eq(int, ht_type_stats(struct node, &st), HT_OK));
  cr_assert(eq(u64, st.allocs, (uint64_t)T * 200 * 64));
  cr_assert(eq(i64, st.cur_blocks, 0));
  cr_assert(eq(i64, st.cur_bytes, 0));
  cr_assert(ge(i64, st.peak_blocks, 64));
  cr_assert(le(i64, st.peak_blocks, T * 64));
}

/* Blocks each thread of held_together holds at once. */
#define HELD 100

struct held {
  long v[3];
};

static pthread_barrier_t held_barrier;
static _Atomic long held_usable;

/* Allocates HELD typed blocks, waits until every thread holds its own,
 * then frees them. */
static void *hold_together(void *arg) {
  (void)arg;
  struct held *p[HELD];
  long usable = 0;
  for (int i = 0; i < HELD; i++) {
    p[i] = HT_NEW(struct held, 1 + i % 5);
    usable += (long)malloc_usable_size(p[i]);
  }
  held_usable += usable;
  pthread_barrier_wait(&held_barrier);
  pthread_barrier_wait(&held_barrier);
  for (int i = 0; i < HELD; i++)
    ht_free(p[i]);
  return NULL;
}

/* The type's counters take no lock: its peak is still exact when threads
 * allocate at once - every block of every thread, live at the barrier. */
Test(halloc, a_types_peak_is_exact_when_threads_allocate_at_once) {
  enum { T = 4 };
  pthread_barrier_init(&held_barrier, NULL, T + 1);
  pthread_t th[T];
  for (int i = 0; i < T; i++)
    pthread_create(&th[i], NULL, hold_together, NULL);
  pthread_barrier_wait(&held_barrier);
  ht_type_stats_t st;
  cr_assert(eq(int, ht_type_stats(struct held, &st), HT_OK));
  cr_assert(eq(i64, st.cur_blocks, T * HELD));
  cr_assert(eq(i64, st.cur_bytes, held_usable));
  pthread_barrier_wait(&held_barrier);
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&held_barrier);
  cr_assert(eq(int, ht_type_stats(struct held, &st), HT_OK));
  cr_assert(eq(u64, st.allocs, (uint64_t)T * HELD));
  cr_assert(eq(i64, st.cur_blocks, 0));
  cr_assert(eq(i64, st.cur_bytes, 0));
  cr_assert(eq(i64, st.peak_blocks, T * HELD));
  cr_assert(eq(i64, st.peak_bytes, held_usable));
}
