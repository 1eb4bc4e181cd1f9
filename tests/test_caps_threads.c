/* test_caps_threads.c - the caps heaps, the alloc callback, typed blocks
 * and the process totals under concurrency, as a plain program.
 *
 * Criterion cannot run under ThreadSanitizer (see tests/CMakeLists.txt), so
 * this one is a main() that ctest runs in every build, TSan included: a
 * data race makes TSan fail the run (exit status), a broken invariant
 * makes the program fail it. Six threads hammer three regions and the
 * system heap with every kind of call - caps and plain, realloc across
 * heaps, typed blocks - with an alloc callback installed, while the main
 * thread checks integrity, reads info, takes and restores state. Worker
 * threads exit before the end, so their counters must have been folded.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define KIB 1024
#define THREADS 6
#define STEPS 20000
#define SLOTS 64

static _Alignas(64) unsigned char dram[256 * KIB];
static _Alignas(64) unsigned char iram[64 * KIB];
static _Alignas(64) unsigned char spiram[1024 * KIB];

static int failed;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "test_caps_threads: %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      failed = 1;                                                                                  \
    }                                                                                              \
  } while (0)

typedef struct {
  char name[24];
  int v[6];
} item_t;

static _Atomic long callback_calls;

static void on_alloc(const char *file, unsigned line, const char *action, int64_t current_bytes,
                     int64_t total_blocks, int64_t total_bytes) {
  (void)file;
  (void)line;
  (void)current_bytes;
  (void)total_blocks;
  (void)total_bytes;
  if (action[0] == 'm' && atomic_fetch_add(&callback_calls, 1) % 997 == 0) {
    void *p = ht_malloc(16); /* allocates: must neither recurse nor deadlock */
    ht_free(p);
  }
}

typedef struct {
  unsigned char *p;
  size_t size;
  unsigned char fill;
} slot_t;

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  static const uint32_t caps[] = {HT_CAP_DMA, HT_CAP_EXEC, HT_CAP_SPIRAM, HT_CAP_DEFAULT};
  slot_t s[SLOTS] = {{0}};
  long bad = 0;
  uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
  for (int step = 0; step < STEPS; step++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    slot_t *x = &s[r % SLOTS];
    uint32_t c = caps[(r >> 8) % 4];
    size_t size = (r >> 20) % 2500 + 1;
    if (x->p) {
      for (size_t k = 0; k < x->size; k++)
        bad += x->p[k] != x->fill;
      if (r & 0x100) {
        ht_free(x->p);
        x->p = NULL;
        continue;
      }
      unsigned char *q = (r & 0x200) ? ht_caps_realloc(x->p, size, c) : ht_realloc(x->p, size);
      if (!q)
        continue;
      x->p = q;
    } else {
      switch ((r >> 12) % 4) {
      case 0:
        x->p = ht_caps_malloc(size, c);
        break;
      case 1:
        x->p = ht_caps_aligned_alloc((size_t)32 << (r % 4), size, c);
        break;
      case 2:
        x->p = (unsigned char *)HT_CAPS_NEW(item_t, size / sizeof(item_t) + 1, c);
        size = (size / sizeof(item_t) + 1) * sizeof(item_t);
        break;
      default:
        x->p = (r & 0x400) ? (unsigned char *)HT_NEW(item_t, 2) : ht_malloc(size);
        if (r & 0x400)
          size = 2 * sizeof(item_t);
      }
      if (!x->p)
        continue;
    }
    x->size = size;
    x->fill = (unsigned char)(id * 32 + step % 31 + 1);
    memset(x->p, x->fill, size);
  }
  for (int i = 0; i < SLOTS; i++)
    ht_free(s[i].p);
  return (void *)bad;
}

/* The main thread reads while the workers write. */
static void observe(void) {
  for (int i = 0; i < 40; i++) {
    CHECK(ht_caps_check_integrity_all(true), "round %d", i);
    ht_heap_info_t info;
    ht_caps_get_info(&info, HT_CAP_INVALID);
    CHECK(info.minimum_free_bytes <= info.total_free_bytes, "round %d", i);
    CHECK(info.total_blocks == info.allocated_blocks + info.free_blocks, "round %d", i);
    ht_totals_t t;
    ht_get_totals(&t);
    CHECK(t.cur_blocks >= 0, "round %d: %lld live blocks", i, (long long)t.cur_blocks);
    void *st = ht_get_state();
    CHECK(st != NULL, "round %d", i);
    ht_free_state(st);
    usleep(2000);
  }
}

int main(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
  const uint32_t d[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT | HT_CAP_DMA | HT_CAP_INTERNAL,
                         0, 0};
  const uint32_t i[3] = {HT_CAP_EXEC | HT_CAP_32BIT | HT_CAP_INTERNAL, 0, 0};
  const uint32_t s[3] = {HT_CAP_SPIRAM | HT_CAP_DEFAULT, 0, HT_CAP_8BIT | HT_CAP_32BIT};
  CHECK(ht_heap_add_region_with_caps_named("DRAM", d, (intptr_t)dram,
                                           (intptr_t)dram + sizeof dram) == HT_OK,
        "DRAM");
  CHECK(ht_heap_add_region_with_caps_named("IRAM", i, (intptr_t)iram,
                                           (intptr_t)iram + sizeof iram) == HT_OK,
        "IRAM");
  CHECK(ht_heap_add_region_with_caps_named("SPIRAM", s, (intptr_t)spiram,
                                           (intptr_t)spiram + sizeof spiram) == HT_OK,
        "SPIRAM");
  ht_set_alloc_callback(on_alloc);
  pthread_t th[THREADS];
  for (int k = 0; k < THREADS; k++)
    pthread_create(&th[k], NULL, worker, (void *)(intptr_t)k);
  observe();
  for (int k = 0; k < THREADS; k++) {
    void *bad;
    pthread_join(th[k], &bad);
    CHECK(bad == NULL, "thread %d saw %ld changed bytes", k, (long)(intptr_t)bad);
  }
  ht_set_alloc_callback(NULL);
  CHECK(ht_caps_check_integrity_all(true), "after");
  CHECK(ht_caps_get_free_size(HT_CAP_INVALID) == ht_caps_get_total_size(HT_CAP_INVALID),
        "every block freed");
  ht_totals_t t;
  ht_get_totals(&t);
  CHECK(t.cur_blocks == 0 && t.cur_bytes == 0, "%lld blocks, %lld bytes left",
        (long long)t.cur_blocks, (long long)t.cur_bytes);
  CHECK(t.allocs - t.frees == 0, "allocs %llu frees %llu", (unsigned long long)t.allocs,
        (unsigned long long)t.frees);
  CHECK((uint64_t)callback_calls + 0 > 0, "the callback ran");
  ht_type_stats_t st;
  CHECK(ht_type_stats(item_t, &st) == HT_OK && st.cur_blocks == 0 && st.cur_bytes == 0,
        "typed blocks balance");
  if (!failed)
    printf("test_caps_threads: ok (%ld callback calls, %llu allocations)\n", (long)callback_calls,
           (unsigned long long)t.allocs);
  return failed;
}
