/* test_caps.c - the capability heaps through their public API
 * (libclient/registry.c, caps.c, capsinfo.c, poison.c).
 *
 * Every test runs in its own process (Criterion), so each starts with an
 * empty registry and registers its regions from static arrays. Tracing is
 * off (HEAPTRACE_DISABLE=1): the allocator must work fully without a
 * daemon. Information calls are cross-checked against a walk of the heaps;
 * the stress tests keep a shadow model of every live block (address, size,
 * fill byte) and verify contents, overlap and integrity as they go.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define KIB 1024
#define DRAM_CAPS (HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT | HT_CAP_DMA | HT_CAP_INTERNAL)
#define IRAM_CAPS (HT_CAP_EXEC | HT_CAP_32BIT | HT_CAP_INTERNAL)
#define SPIRAM_CAPS (HT_CAP_SPIRAM | HT_CAP_8BIT | HT_CAP_32BIT | HT_CAP_DEFAULT)
#define BLOCK_EXTRA 36 /* header + tail canary, on top of TLSF's 16 */

static _Alignas(64) unsigned char dram[128 * KIB];
static _Alignas(64) unsigned char iram[64 * KIB];
static _Alignas(64) unsigned char spiram[256 * KIB];

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
}

TestSuite(caps, .init = setup, .timeout = 60);

/* ---- helpers ------------------------------------------------------------ */

static int add(const char *name, unsigned char *mem, size_t len, uint32_t c0, uint32_t c1,
               uint32_t c2) {
  const uint32_t caps[3] = {c0, c1, c2};
  return ht_heap_add_region_with_caps_named(name, caps, (intptr_t)mem, (intptr_t)(mem + len));
}

/* The three ESP32-like regions: DRAM (1), IRAM (2), SPIRAM (3). */
static void add_esp32(void) {
  cr_assert(eq(int, add("DRAM", dram, sizeof dram, DRAM_CAPS, 0, 0), HT_OK));
  cr_assert(eq(int, add("IRAM", iram, sizeof iram, IRAM_CAPS, 0, 0), HT_OK));
  cr_assert(eq(int, add("SPIRAM", spiram, sizeof spiram, SPIRAM_CAPS, 0, 0), HT_OK));
}

static uint32_t heap_of(const void *p) {
  return ht_heap_id(ht_heap_containing(p));
}

typedef struct {
  size_t free_bytes, used_bytes, free_blocks, used_blocks, largest_free;
  int corrupt, unordered;
  uintptr_t last;
} walk_sum_t;

static bool sum_block(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  (void)heap;
  walk_sum_t *w = user;
  if ((uintptr_t)b.ptr <= w->last)
    w->unordered = 1;
  w->last = (uintptr_t)b.ptr;
  w->corrupt |= b.corrupt;
  if (b.used) {
    w->used_bytes += b.size;
    w->used_blocks++;
  } else {
    w->free_bytes += b.size;
    w->free_blocks++;
    if (b.size > w->largest_free)
      w->largest_free = b.size;
  }
  return true;
}

/* Checks every info call for caps against a walk of the same heaps. */
static void cross_check(uint32_t caps) {
  walk_sum_t w = {0};
  ht_caps_walk(caps, sum_block, &w);
  ht_heap_info_t info;
  ht_caps_get_info(&info, caps);
  cr_assert(eq(int, w.corrupt, 0));
  cr_assert(eq(sz, info.total_free_bytes, w.free_bytes));
  cr_assert(eq(sz, info.total_allocated_bytes, w.used_bytes));
  cr_assert(eq(sz, info.free_blocks, w.free_blocks));
  cr_assert(eq(sz, info.allocated_blocks, w.used_blocks));
  cr_assert(eq(sz, info.total_blocks, w.free_blocks + w.used_blocks));
  cr_assert(le(sz, info.largest_free_block + BLOCK_EXTRA, w.largest_free + BLOCK_EXTRA));
  cr_assert(le(sz, info.largest_free_block, info.total_free_bytes));
  cr_assert(le(sz, info.minimum_free_bytes, info.total_free_bytes));
  cr_assert(eq(sz, ht_caps_get_free_size(caps), info.total_free_bytes));
  cr_assert(eq(sz, ht_caps_get_minimum_free_size(caps), info.minimum_free_bytes));
  cr_assert(eq(sz, ht_caps_get_largest_free_block(caps), info.largest_free_block));
}

/* Captures what is written to fd (stdout or stderr) between begin and end. */
typedef struct {
  int fd, saved, rd;
} capture_t;

static void capture_begin(capture_t *c, int fd) {
  int p[2];
  cr_assert(eq(int, pipe(p), 0));
  fflush(NULL);
  c->fd = fd;
  c->saved = dup(fd);
  dup2(p[1], fd);
  close(p[1]);
  c->rd = p[0];
}

static char *capture_end(capture_t *c) {
  static char buf[65536];
  fflush(NULL);
  dup2(c->saved, c->fd);
  close(c->saved);
  size_t len = 0;
  ssize_t n;
  while (len < sizeof buf - 1 && (n = read(c->rd, buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = '\0';
  close(c->rd);
  return buf;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* ---- registration --------------------------------------------------------- */

Test(caps, add_region_rejects_bad_arguments_overlap_and_small_regions) {
  const uint32_t caps[3] = {HT_CAP_DEFAULT, 0, 0};
  cr_assert(eq(int, ht_heap_add_region_with_caps(NULL, (intptr_t)dram, (intptr_t)dram + 4096),
               HT_EINVAL));
  cr_assert(eq(int, ht_heap_add_region_with_caps(caps, 0, 4096), HT_EINVAL));
  cr_assert(eq(int, ht_heap_add_region_with_caps(caps, (intptr_t)dram, (intptr_t)dram), HT_EINVAL));
  cr_assert(
      eq(int, ht_heap_add_region_with_caps(caps, (intptr_t)dram, (intptr_t)dram + 64), HT_ESIZE));
  cr_assert(eq(int, add("a", dram, 8 * KIB, HT_CAP_DEFAULT, 0, 0), HT_OK));
  /* start inside, end inside, and a region that swallows it: all overlap */
  cr_assert(eq(int, add("b", dram + 100, 100, HT_CAP_DEFAULT, 0, 0), HT_EOVERLAP));
  cr_assert(eq(int, add("c", dram + 4 * KIB, 8 * KIB, HT_CAP_DEFAULT, 0, 0), HT_EOVERLAP));
  cr_assert(eq(int, add("d", dram, 16 * KIB, HT_CAP_DEFAULT, 0, 0), HT_EOVERLAP));
  cr_assert(eq(int, add("e", dram + 8 * KIB, 8 * KIB, HT_CAP_DEFAULT, 0, 0), HT_OK));
  cr_assert(eq(u32, ht_heap_id(ht_heap_by_name("e")), 2));
}

Test(caps, registry_is_full_after_heap_max_regions) {
  size_t each = sizeof spiram / (HT_HEAP_MAX + 1);
  for (int i = 0; i < HT_HEAP_MAX; i++)
    cr_assert(eq(int, add(NULL, spiram + i * each, each, HT_CAP_DEFAULT, 0, 0), HT_OK));
  cr_assert(eq(int, add(NULL, spiram + HT_HEAP_MAX * each, each, HT_CAP_DEFAULT, 0, 0), HT_ENOMEM));
  cr_assert(eq(str, (char *)ht_heap_name(ht_heap_by_id(HT_HEAP_MAX)), "heap64"));
}

Test(caps, add_region_without_caps_gives_default_internal_ram) {
  cr_assert(eq(int, ht_heap_add_region((intptr_t)dram, (intptr_t)dram + sizeof dram), HT_OK));
  void *p = ht_caps_malloc(100, HT_CAP_DEFAULT | HT_CAP_INTERNAL | HT_CAP_8BIT);
  cr_assert(eq(u32, heap_of(p), 1));
  cr_assert(eq(ptr, ht_caps_malloc(100, HT_CAP_DMA), NULL));
  ht_caps_free(p);
}

/* ---- allocation basics ------------------------------------------------------ */

Test(caps, every_block_is_16_byte_aligned_and_aligned_alloc_honours_alignment) {
  add_esp32();
  for (size_t size = 0; size < 300; size += 7) {
    void *p = ht_caps_malloc(size, HT_CAP_DEFAULT);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(eq(u64, (uintptr_t)p % 16, 0));
    ht_caps_free(p);
  }
  for (size_t align = 1; align <= 8 * KIB; align *= 2) {
    void *p = ht_caps_aligned_alloc(align, 200, HT_CAP_DMA);
    cr_assert(ne(ptr, p, NULL), "alignment %zu", align);
    cr_assert(eq(u64, (uintptr_t)p % align, 0), "alignment %zu", align);
    cr_assert(eq(u32, heap_of(p), 1));
    memset(p, 0x5a, 200);
    cr_assert(ht_caps_check_integrity_all(true));
    ht_caps_aligned_free(p);
  }
  cr_assert(eq(ptr, ht_caps_aligned_alloc(24, 100, HT_CAP_DEFAULT), NULL));
  cr_assert(eq(ptr, ht_caps_aligned_alloc(0, 100, HT_CAP_DEFAULT), NULL));
  cross_check(HT_CAP_INVALID);
}

Test(caps, calloc_and_aligned_calloc_return_zeroed_memory_over_dirty_blocks) {
  add_esp32();
  unsigned char *dirty = ht_caps_malloc(4000, HT_CAP_DMA);
  memset(dirty, 0xAA, 4000);
  ht_caps_free(dirty);
  unsigned char *p = ht_caps_calloc(100, 40, HT_CAP_DMA);
  cr_assert(eq(ptr, p, dirty), "the dirty block is reused");
  for (int i = 0; i < 4000; i++)
    cr_assert(eq(u8, p[i], 0));
  memset(p, 0xAA, 4000);
  ht_caps_free(p);
  unsigned char *q = ht_caps_aligned_calloc(64, 10, 300, HT_CAP_DMA);
  cr_assert(eq(u64, (uintptr_t)q % 64, 0));
  for (int i = 0; i < 3000; i++)
    cr_assert(eq(u8, q[i], 0));
  ht_caps_free(q);
  cr_assert(eq(ptr, ht_caps_calloc(SIZE_MAX / 2, 4, HT_CAP_DMA), NULL), "overflow fails");
}

Test(caps, get_allocated_size_is_the_requested_size_and_usable_covers_it) {
  add_esp32();
  for (size_t size = 1; size < 2000; size = size * 3 + 1) {
    void *p = ht_caps_malloc(size, HT_CAP_SPIRAM);
    cr_assert(eq(sz, ht_caps_get_allocated_size(p), size));
    walk_sum_t w = {0};
    ht_caps_walk(HT_CAP_SPIRAM, sum_block, &w);
    cr_assert(ge(sz, w.used_bytes, size));
    cr_assert(lt(sz, w.used_bytes, size + 16 + 16), "slack is below one TLSF granule + split");
    ht_caps_free(p);
  }
  void *s = malloc(100);
  cr_assert(ge(sz, ht_caps_get_allocated_size(s), 100), "system heap: malloc_usable_size");
  free(s);
}

Test(caps, freeing_coalesces_neighbours_back_into_one_free_block) {
  add_esp32();
  ht_heap_info_t empty, info;
  ht_caps_get_info(&empty, HT_CAP_SPIRAM);
  cr_assert(eq(sz, empty.free_blocks, 1));
  void *a = ht_caps_malloc(1000, HT_CAP_SPIRAM);
  void *b = ht_caps_malloc(1000, HT_CAP_SPIRAM);
  void *c = ht_caps_malloc(1000, HT_CAP_SPIRAM);
  ht_caps_free(b);
  ht_caps_get_info(&info, HT_CAP_SPIRAM);
  cr_assert(eq(sz, info.free_blocks, 2), "a hole and the tail");
  cr_assert(eq(sz, info.allocated_blocks, 2));
  ht_caps_free(a);
  ht_caps_get_info(&info, HT_CAP_SPIRAM);
  cr_assert(eq(sz, info.free_blocks, 2), "a merged with the hole");
  ht_caps_free(c);
  ht_caps_get_info(&info, HT_CAP_SPIRAM);
  cr_assert(eq(sz, info.free_blocks, 1));
  cr_assert(eq(sz, info.total_free_bytes, empty.total_free_bytes));
  cr_assert(eq(sz, info.total_allocated_bytes, 0));
  cr_assert(eq(sz, info.minimum_free_bytes,
               empty.total_free_bytes - 3 * (1004 + HT_CAPS_BLOCK_OVERHEAD)));
}

static size_t fails;
static size_t fail_size;
static uint32_t fail_caps;
static char fail_func[64];

static void on_failed(size_t size, uint32_t caps, const char *function_name) {
  fails++;
  fail_size = size;
  fail_caps = caps;
  snprintf(fail_func, sizeof fail_func, "%s", function_name);
}

Test(caps, exhaustion_returns_null_and_calls_the_failed_alloc_hook) {
  add_esp32();
  cr_assert(eq(int, ht_caps_register_failed_alloc_callback(NULL), HT_EINVAL));
  cr_assert(eq(int, ht_caps_register_failed_alloc_callback(on_failed), HT_OK));
  size_t n = 0;
  while (ht_caps_malloc(1000, HT_CAP_EXEC))
    n++;
  cr_assert(lt(sz, 50, n));
  cr_assert(lt(sz, n, sizeof iram / 1000));
  cr_assert(eq(sz, fails, 1));
  cr_assert(eq(sz, fail_size, 1000));
  cr_assert(eq(u32, fail_caps, HT_CAP_EXEC));
  cr_assert(eq(str, fail_func, "ht_caps_malloc"));
  cr_assert(eq(ptr, ht_caps_calloc(10, 1000, HT_CAP_EXEC), NULL));
  cr_assert(eq(sz, fail_size, 10000));
  cr_assert(eq(str, fail_func, "ht_caps_calloc"));
  cr_assert(eq(ptr, ht_caps_aligned_alloc(4096, 5000, HT_CAP_EXEC), NULL));
  cr_assert(eq(str, fail_func, "ht_caps_aligned_alloc"));
  cr_assert(eq(ptr, ht_caps_malloc(10, HT_CAP_RTCRAM), NULL), "no heap has RTCRAM");
  cr_assert(eq(u32, fail_caps, HT_CAP_RTCRAM));
  cr_assert(eq(ptr, ht_malloc((size_t)1 << 62), NULL));
  cr_assert(eq(str, fail_func, "ht_malloc"));
  cr_assert(eq(u32, fail_caps, HT_SYSTEM_HEAP_CAPS));
  cr_assert(eq(sz, fails, 5));
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(u64, t.failures, 5));
}

/* ---- region choice ---------------------------------------------------------- */

Test(caps, priority_level_zero_of_every_heap_comes_before_level_one) {
  /* A serves DEFAULT only at level 1; B at level 0. */
  cr_assert(
      eq(int, add("A", dram, 32 * KIB, HT_CAP_32BIT, HT_CAP_DEFAULT | HT_CAP_8BIT, 0), HT_OK));
  cr_assert(eq(int, add("B", spiram, 32 * KIB, HT_CAP_DEFAULT | HT_CAP_8BIT, 0, 0), HT_OK));
  void *d = ht_caps_malloc(100, HT_CAP_DEFAULT);
  cr_assert(eq(u32, heap_of(d), 2));
  void *w = ht_caps_malloc(100, HT_CAP_32BIT);
  cr_assert(eq(u32, heap_of(w), 1));
  while (heap_of(d) == 2)
    d = ht_caps_malloc(1000, HT_CAP_DEFAULT);
  cr_assert(eq(u32, heap_of(d), 1), "B full: A at level 1");
}

Test(caps, a_level_needs_one_shared_bit_and_the_heap_all_requested_bits) {
  /* ESP-IDF's DRAM shape: the caps split over two levels. */
  cr_assert(eq(int,
               add("DRAM", dram, sizeof dram, HT_CAP_8BIT | HT_CAP_DEFAULT,
                   HT_CAP_INTERNAL | HT_CAP_DMA | HT_CAP_32BIT, 0),
               HT_OK));
  void *p = ht_caps_malloc(64, HT_CAP_DEFAULT | HT_CAP_32BIT | HT_CAP_DMA);
  cr_assert(eq(u32, heap_of(p), 1));
  void *q = ht_caps_malloc(64, HT_CAP_DMA | HT_CAP_SPIRAM);
  cr_assert(eq(ptr, q, NULL), "SPIRAM is in no level");
}

Test(caps, the_system_heap_serves_default_requests_no_region_can) {
  cr_assert(eq(int, add("S", spiram, 16 * KIB, SPIRAM_CAPS, 0, 0), HT_OK));
  void *p = ht_caps_malloc(64 * KIB, HT_CAP_DEFAULT | HT_CAP_8BIT);
  cr_assert(ne(ptr, p, NULL));
  cr_assert(eq(u32, heap_of(p), 0), "too big for S: glibc");
  ht_caps_free(p);
  cr_assert(eq(ptr, ht_caps_malloc(64 * KIB, HT_CAP_SPIRAM), NULL), "glibc is not SPIRAM");
  cr_assert(eq(ptr, ht_caps_malloc(10, HT_CAP_DEFAULT | HT_CAP_INVALID), NULL));
  void *q = ht_caps_malloc(10, HT_CAP_DEFAULT);
  cr_assert(eq(u32, heap_of(q), 1), "a region that fits comes first");
  ht_free(q);
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_SPIRAM), ht_caps_get_total_size(HT_CAP_SPIRAM)));
}

Test(caps, prefer_variants_try_each_caps_in_turn) {
  add_esp32();
  ht_caps_register_failed_alloc_callback(on_failed);
  void *p = ht_caps_malloc_prefer(100, 2, HT_CAP_SPIRAM, HT_CAP_DMA);
  cr_assert(eq(u32, heap_of(p), 3));
  void *q = ht_caps_malloc_prefer(100, 2, HT_CAP_RTCRAM, HT_CAP_DMA);
  cr_assert(eq(u32, heap_of(q), 1));
  unsigned char *z = ht_caps_calloc_prefer(10, 10, 2, HT_CAP_RTCRAM, HT_CAP_EXEC);
  cr_assert(eq(u32, heap_of(z), 2));
  for (int i = 0; i < 100; i++)
    cr_assert(eq(u8, z[i], 0));
  memset(q, 7, 100);
  unsigned char *r = ht_caps_realloc_prefer(q, 3000, 2, HT_CAP_RTCRAM, HT_CAP_SPIRAM);
  cr_assert(eq(u32, heap_of(r), 3));
  cr_assert(eq(u8, r[99], 7));
  cr_assert(eq(ptr, ht_caps_malloc_prefer(100, 2, HT_CAP_RTCRAM, HT_CAP_RETENTION), NULL));
  cr_assert(eq(sz, fails, 1));
  cr_assert(eq(u32, fail_caps, HT_CAP_RETENTION), "reported with the last caps");
  cr_assert(eq(str, fail_func, "ht_caps_malloc_prefer"));
  ht_caps_free(p);
  ht_caps_free(z);
  ht_caps_free(r);
}

Test(caps, extmem_limit_routes_plain_mallocs_by_size) {
  add_esp32();
  void *before = ht_malloc(100);
  cr_assert(eq(u32, heap_of(before), 0), "off: the system heap");
  ht_caps_malloc_extmem_enable(1024);
  void *small = ht_malloc(100);
  void *edge = ht_malloc(1024);
  void *big = ht_calloc(1, 5000);
  cr_assert(eq(u32, heap_of(small), 1), "below the limit: internal");
  cr_assert(eq(u32, heap_of(edge), 3), "at the limit: SPIRAM");
  cr_assert(eq(u32, heap_of(big), 3));
  void *grown = ht_realloc(small, 4000);
  cr_assert(eq(u32, heap_of(grown), 3), "realloc follows the limit too");
  void *huge = ht_malloc(1024 * KIB);
  cr_assert(eq(u32, heap_of(huge), 0), "nothing fits: plain DEFAULT ends at glibc");
  ht_caps_malloc_extmem_enable(HT_CAPS_EXTMEM_DISABLED);
  void *after = ht_malloc(100);
  cr_assert(eq(u32, heap_of(after), 0));
  ht_free(before);
  ht_free(edge);
  ht_free(big);
  ht_free(grown);
  ht_free(huge);
  ht_free(after);
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_INVALID), ht_caps_get_total_size(HT_CAP_INVALID)));
}

/* ---- realloc ------------------------------------------------------------------ */

Test(caps, realloc_moves_between_caps_and_keeps_the_contents) {
  add_esp32();
  unsigned char *p = ht_caps_malloc(3000, HT_CAP_DMA);
  for (int i = 0; i < 3000; i++)
    p[i] = (unsigned char)(i * 7);
  unsigned char *q = ht_caps_realloc(p, 5000, HT_CAP_SPIRAM);
  cr_assert(eq(u32, heap_of(q), 3));
  for (int i = 0; i < 3000; i++)
    cr_assert(eq(u8, q[i], (unsigned char)(i * 7)));
  unsigned char *r = ht_caps_realloc(q, 1000, HT_CAP_EXEC);
  cr_assert(eq(u32, heap_of(r), 2));
  for (int i = 0; i < 1000; i++)
    cr_assert(eq(u8, r[i], (unsigned char)(i * 7)));
  unsigned char *s = ht_caps_realloc(r, 800, HT_CAP_32BIT);
  cr_assert(eq(ptr, s, r), "IRAM has 32BIT: shrinks in place");
  cr_assert(eq(sz, ht_caps_get_allocated_size(s), 800));
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_DMA), ht_caps_get_total_size(HT_CAP_DMA)));
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_SPIRAM), ht_caps_get_total_size(HT_CAP_SPIRAM)));
  cr_assert(ht_caps_check_integrity_all(true));
  cross_check(HT_CAP_INVALID);
  ht_caps_free(s);
}

Test(caps, realloc_grows_in_place_when_the_next_block_is_free) {
  add_esp32();
  char *p = ht_caps_malloc(100, HT_CAP_SPIRAM);
  memset(p, 'a', 100);
  char *q = ht_caps_realloc(p, 10000, HT_CAP_SPIRAM);
  cr_assert(eq(ptr, q, p));
  cr_assert(eq(sz, ht_caps_get_allocated_size(q), 10000));
  cr_assert(eq(chr, q[99], 'a'));
  char *guard = ht_caps_malloc(16, HT_CAP_SPIRAM);
  char *r = ht_caps_realloc(q, 20000, HT_CAP_SPIRAM);
  cr_assert(ne(ptr, r, q), "the next block is taken: moves within the heap");
  cr_assert(eq(u32, heap_of(r), 3));
  cr_assert(eq(chr, r[0], 'a'));
  cr_assert(ht_caps_check_integrity_all(true));
  ht_caps_free(guard);
  ht_caps_free(r);
}

Test(caps, realloc_of_null_allocates_and_to_zero_frees) {
  add_esp32();
  void *p = ht_caps_realloc(NULL, 100, HT_CAP_DMA);
  cr_assert(eq(u32, heap_of(p), 1));
  cr_assert(eq(ptr, ht_caps_realloc(p, 0, HT_CAP_DMA), NULL));
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_DMA), ht_caps_get_total_size(HT_CAP_DMA)));
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(u64, t.allocs, 1));
  cr_assert(eq(u64, t.frees, 1));
  cr_assert(eq(i64, t.cur_blocks, 0));
}

Test(caps, failed_realloc_leaves_the_block_untouched) {
  add_esp32();
  char *p = ht_caps_malloc(100, HT_CAP_EXEC);
  memset(p, 'z', 100);
  cr_assert(eq(ptr, ht_caps_realloc(p, 1024 * KIB, HT_CAP_EXEC), NULL));
  cr_assert(eq(chr, p[99], 'z'));
  cr_assert(eq(sz, ht_caps_get_allocated_size(p), 100));
  cr_assert(ht_caps_check_integrity_all(true));
  ht_caps_free(p);
}

Test(caps, plain_free_and_realloc_take_caps_blocks) {
  add_esp32();
  char *p = ht_caps_malloc(100, HT_CAP_EXEC);
  memset(p, 'q', 100);
  char *q = ht_realloc(p, 2000);
  cr_assert(eq(u32, heap_of(q), 2), "keeps its caps: IRAM");
  cr_assert(eq(chr, q[50], 'q'));
  ht_free(q);
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_EXEC), ht_caps_get_total_size(HT_CAP_EXEC)));
  void *s = ht_malloc(100);
  void *t = ht_caps_realloc(s, 200, HT_CAP_SPIRAM);
  cr_assert(eq(u32, heap_of(t), 3), "a glibc block moves into a region");
  ht_caps_free(t);
}

/* ---- information ------------------------------------------------------------ */

Test(caps, info_calls_agree_with_a_walk_and_totals_add_up) {
  add_esp32();
  void *p[40];
  for (int i = 0; i < 40; i++)
    p[i] = ht_caps_malloc(50 + 97 * i, i % 3 == 0 ? HT_CAP_EXEC : HT_CAP_DEFAULT);
  for (int i = 0; i < 40; i += 3)
    ht_caps_free(p[i]);
  cross_check(HT_CAP_INVALID);
  cross_check(HT_CAP_DEFAULT);
  cross_check(HT_CAP_EXEC);
  cross_check(HT_CAP_SPIRAM);
  cr_assert(eq(sz, ht_caps_get_total_size(HT_CAP_32BIT),
               ht_caps_get_total_size(HT_CAP_DMA) + ht_caps_get_total_size(HT_CAP_EXEC) +
                   ht_caps_get_total_size(HT_CAP_SPIRAM)));
  cr_assert(lt(sz, ht_caps_get_total_size(HT_CAP_DMA), sizeof dram));
  cr_assert(lt(sz, sizeof dram - 2 * KIB, ht_caps_get_total_size(HT_CAP_DMA)));
  cr_assert(eq(sz, ht_caps_get_total_size(HT_CAP_RTCRAM), 0));
  ht_heap_info_t none;
  ht_caps_get_info(&none, HT_CAP_RTCRAM);
  cr_assert(eq(sz, none.total_blocks, 0));
}

Test(caps, minimum_free_size_never_rises_and_is_the_lowest_free_size_seen) {
  add_esp32();
  size_t lowest = ht_caps_get_free_size(HT_CAP_SPIRAM);
  size_t last_min = ht_caps_get_minimum_free_size(HT_CAP_SPIRAM);
  cr_assert(eq(sz, last_min, lowest));
  void *live[64] = {0};
  for (int step = 0; step < 3000; step++) {
    int k = (int)(rnd() % 64);
    if (live[k]) {
      ht_caps_free(live[k]);
      live[k] = NULL;
    } else {
      live[k] = ht_caps_malloc(rnd() % 6000, HT_CAP_SPIRAM);
    }
    size_t f = ht_caps_get_free_size(HT_CAP_SPIRAM);
    if (f < lowest)
      lowest = f;
    size_t m = ht_caps_get_minimum_free_size(HT_CAP_SPIRAM);
    cr_assert(le(sz, m, last_min), "step %d: the minimum rose", step);
    cr_assert(eq(sz, m, lowest), "step %d", step);
    last_min = m;
  }
  for (int k = 0; k < 64; k++)
    ht_caps_free(live[k]);
}

Test(caps, local_minimum_window_restarts_and_freezes) {
  add_esp32();
  void *a = ht_caps_malloc(50 * KIB, HT_CAP_SPIRAM);
  ht_caps_free(a);
  size_t lifetime = ht_caps_get_minimum_free_size(HT_CAP_SPIRAM);
  cr_assert(eq(sz, ht_caps_get_local_minimum_free_size(HT_CAP_SPIRAM), lifetime),
            "no window yet: the lifetime minimum");
  cr_assert(eq(int, ht_caps_monitor_local_minimum_free_size_stop(), HT_EINVAL));
  cr_assert(eq(int, ht_caps_monitor_local_minimum_free_size_start(), HT_OK));
  size_t total = ht_caps_get_total_size(HT_CAP_SPIRAM);
  cr_assert(eq(sz, ht_caps_get_local_minimum_free_size(HT_CAP_SPIRAM), total));
  void *b = ht_caps_malloc(10 * KIB, HT_CAP_SPIRAM);
  size_t in_window = ht_caps_get_free_size(HT_CAP_SPIRAM);
  ht_caps_free(b);
  cr_assert(eq(sz, ht_caps_get_local_minimum_free_size(HT_CAP_SPIRAM), in_window));
  cr_assert(eq(int, ht_caps_monitor_local_minimum_free_size_stop(), HT_OK));
  void *c = ht_caps_malloc(20 * KIB, HT_CAP_SPIRAM);
  cr_assert(eq(sz, ht_caps_get_local_minimum_free_size(HT_CAP_SPIRAM), in_window),
            "stopped: frozen");
  cr_assert(eq(sz, ht_caps_get_minimum_free_size(HT_CAP_SPIRAM), lifetime),
            "the lifetime minimum is untouched");
  ht_caps_free(c);
}

Test(caps, largest_free_block_is_at_most_the_free_size_and_can_be_allocated) {
  add_esp32();
  void *live[200] = {0};
  for (int round = 0; round < 30; round++) {
    for (int i = 0; i < 200; i++) {
      if (live[i] && rnd() % 2) {
        ht_caps_free(live[i]);
        live[i] = NULL;
      } else if (!live[i] && rnd() % 3 == 0) {
        live[i] = ht_caps_malloc(rnd() % 2000, HT_CAP_EXEC);
      }
    }
    size_t largest = ht_caps_get_largest_free_block(HT_CAP_EXEC);
    cr_assert(le(sz, largest, ht_caps_get_free_size(HT_CAP_EXEC)));
    if (largest == 0)
      continue;
    void *p = ht_caps_malloc(largest, HT_CAP_EXEC);
    cr_assert(ne(ptr, p, NULL), "round %d: largest %zu", round, largest);
    ht_caps_free(p);
  }
  for (int i = 0; i < 200; i++)
    ht_caps_free(live[i]);
  ht_heap_info_t info;
  ht_caps_get_info(&info, HT_CAP_EXEC);
  cr_assert(eq(sz, info.largest_free_block, info.total_free_bytes - BLOCK_EXTRA),
            "empty: one block, all of it");
}

static bool stop_after_two(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  (void)heap;
  (void)b;
  return ++*(int *)user < 2;
}

typedef struct {
  int line;
  const char *func;
} site_t;

static bool find_site(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  site_t *want = user;
  if (b.used) {
    cr_assert(eq(str, (char *)heap.name, "IRAM"));
    cr_assert(eq(u32, heap.id, 2));
    cr_assert(eq(u64, b.requested, 77));
    cr_assert(eq(u32, b.caps, HT_CAP_EXEC));
    cr_assert(ne(ptr, strstr(b.file, "test_caps.c"), NULL));
    cr_assert(eq(str, (char *)b.func, (char *)want->func));
    cr_assert(eq(int, b.line, want->line));
    cr_assert(eq(ptr, (void *)b.type, NULL));
    void *p = ht_caps_malloc(10, HT_CAP_EXEC); /* no lock is held: allowed */
    ht_caps_free(p);
    want->line = -1;
  }
  return true;
}

Test(caps, walk_reports_blocks_with_their_site_and_stops_when_asked) {
  add_esp32();
  site_t want = {__LINE__ + 1, __func__};
  void *p = ht_caps_malloc(77, HT_CAP_EXEC);
  ht_caps_walk(HT_CAP_EXEC, find_site, &want);
  cr_assert(eq(int, want.line, -1), "the block was seen");
  int calls = 0;
  void *q = ht_caps_malloc(77, HT_CAP_EXEC);
  ht_caps_walk_all(stop_after_two, &calls);
  cr_assert(eq(int, calls, 2));
  ht_caps_free(p);
  ht_caps_free(q);
}

Test(caps, print_heap_info_and_dump_show_every_heap_and_block) {
  add_esp32();
  void *p = ht_caps_malloc(123, HT_CAP_SPIRAM);
  capture_t c;
  capture_begin(&c, STDOUT_FILENO);
  ht_caps_print_heap_info(HT_CAP_DEFAULT);
  ht_caps_dump(HT_CAP_SPIRAM);
  char *out = capture_end(&c);
  cr_assert(ne(ptr, strstr(out, "Heap summary for capabilities 0x00001000"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "'DRAM'"), NULL));
  cr_assert(ne(ptr, strstr(out, "'SPIRAM'"), NULL));
  cr_assert(eq(ptr, strstr(out, "'IRAM'"), NULL), "IRAM has no DEFAULT");
  cr_assert(ne(ptr, strstr(out, "Totals:"), NULL));
  cr_assert(ne(ptr, strstr(out, "requested 123 at"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "test_caps.c"), NULL));
  ht_caps_free(p);
}

/* ---- poisoning ------------------------------------------------------------------ */

/* Asserts that a report names the block, its size and its site. */
static void assert_report(const char *out, void *p, size_t size, int line, const char *what) {
  char addr[32], sz[48], site[64];
  snprintf(addr, sizeof addr, "%p", p);
  snprintf(sz, sizeof sz, "(%zu bytes", size);
  snprintf(site, sizeof site, "test_caps.c:%d", line);
  cr_assert(ne(ptr, strstr(out, what), NULL), "no '%s' in: %s", what, out);
  cr_assert(ne(ptr, strstr(out, addr), NULL), "no address %s in: %s", addr, out);
  cr_assert(ne(ptr, strstr(out, sz), NULL), "no size in: %s", out);
  cr_assert(ne(ptr, strstr(out, site), NULL), "no site %s in: %s", site, out);
  cr_assert(eq(int, (int)(strchr(out, '\n') - out + 1), (int)strlen(out)), "one line: %s", out);
}

Test(caps, integrity_check_catches_a_damaged_tail_canary_and_names_the_site) {
  add_esp32();
  int line = __LINE__ + 1;
  unsigned char *p = ht_caps_malloc(100, HT_CAP_DMA);
  cr_assert(ht_caps_check_integrity(HT_CAP_DMA, true));
  p[100] ^= 0xff; /* one byte past the end */
  capture_t c;
  capture_begin(&c, STDERR_FILENO);
  bool ok = ht_caps_check_integrity(HT_CAP_DMA, true);
  char *out = capture_end(&c);
  cr_assert(not(ok));
  assert_report(out, p, 100, line, "tail canary");
  cr_assert(ne(ptr, strstr(out, "past the end"), NULL));
  cr_assert(not(ht_caps_check_integrity_addr((intptr_t)p, false)));
  cr_assert(ht_caps_check_integrity(HT_CAP_EXEC, false), "other heaps are fine");
  cr_assert(not(ht_caps_check_integrity_all(false)));
  p[100] ^= 0xff;
  cr_assert(ht_caps_check_integrity_all(true));
  ht_caps_free(p);
}

Test(caps, integrity_check_catches_a_damaged_head_canary) {
  add_esp32();
  int line = __LINE__ + 1;
  unsigned char *p = ht_caps_aligned_alloc(256, 40, HT_CAP_SPIRAM);
  p[-1] = 0; /* one byte before the start */
  capture_t c;
  capture_begin(&c, STDERR_FILENO);
  bool ok = ht_caps_check_integrity_addr((intptr_t)p, true);
  char *out = capture_end(&c);
  cr_assert(not(ok));
  assert_report(out, p, 40, line, "head canary");
  cr_assert(ne(ptr, strstr(out, "before the start"), NULL));
}

Test(caps, free_reports_an_overrun_and_still_frees_a_block_whose_header_is_intact) {
  add_esp32();
  int line = __LINE__ + 1;
  char *p = ht_caps_malloc(20, HT_CAP_EXEC);
  memcpy(p, "exactly twenty bytes!", 21); /* the NUL lands on the canary */
  capture_t c;
  capture_begin(&c, STDERR_FILENO);
  ht_caps_free(p);
  char *out = capture_end(&c);
  assert_report(out, p, 20, line, "found by free: tail canary");
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_EXEC), ht_caps_get_total_size(HT_CAP_EXEC)));
  cr_assert(ht_caps_check_integrity_all(true));
}

Test(caps, a_damaged_header_is_reported_and_the_block_is_left_alone) {
  add_esp32();
  unsigned char *p = ht_caps_malloc(64, HT_CAP_EXEC);
  p[-16] ^= 0x40; /* inside the header: its site field */
  capture_t c;
  capture_begin(&c, STDERR_FILENO);
  bool ok = ht_caps_check_integrity(HT_CAP_EXEC, true);
  ht_caps_free(p);
  char *out = capture_end(&c);
  cr_assert(not(ok));
  cr_assert(ne(ptr, strstr(out, "header of block"), NULL), "%s", out);
  cr_assert(ne(ptr, strstr(out, "found by free"), NULL), "%s", out);
  ht_heap_info_t info;
  ht_caps_get_info(&info, HT_CAP_EXEC);
  cr_assert(eq(sz, info.allocated_blocks, 1), "a free that cannot be trusted is refused");
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(u64, t.failures, 1));
  cr_assert(eq(sz, ht_caps_get_allocated_size(p), 0));
}

Test(caps, a_double_free_is_reported_not_followed) {
  add_esp32();
  void *keep = ht_caps_malloc(64, HT_CAP_EXEC);
  void *p = ht_caps_malloc(64, HT_CAP_EXEC);
  void *guard = ht_caps_malloc(64, HT_CAP_EXEC);
  ht_caps_free(p);
  capture_t c;
  capture_begin(&c, STDERR_FILENO);
  ht_caps_free(p);
  char *out = capture_end(&c);
  cr_assert(ne(ptr, strstr(out, "freed twice"), NULL), "%s", out);
  cr_assert(ht_caps_check_integrity_all(true));
  ht_caps_free(keep);
  ht_caps_free(guard);
}

/* ---- single heaps (multi_heap) ---------------------------------------------- */

Test(caps, a_registered_heap_is_reached_through_its_handle_only) {
  add_esp32();
  static _Alignas(16) unsigned char mh[16 * KIB];
  ht_heap_handle_t h = ht_heap_register(mh, sizeof mh);
  cr_assert(ne(ptr, h, NULL));
  cr_assert(eq(str, (char *)ht_heap_name(h), "multi_heap"));
  char *p = ht_heap_malloc(h, 100);
  cr_assert(eq(ptr, ht_heap_containing(p), h));
  memset(p, 3, 100);
  char *q = ht_heap_realloc(h, p, 4000);
  cr_assert(eq(ptr, ht_heap_containing(q), h));
  cr_assert(eq(u8, (unsigned char)q[99], 3));
  cr_assert(eq(sz, ht_heap_get_allocated_size(h, q), 4000));
  void *a = ht_heap_aligned_alloc(h, 10, 512);
  cr_assert(eq(u64, (uintptr_t)a % 512, 0));
  ht_heap_info_t info;
  ht_heap_get_info(h, &info);
  cr_assert(eq(sz, info.allocated_blocks, 2));
  cr_assert(eq(sz, ht_heap_free_size(h), info.total_free_bytes));
  cr_assert(le(sz, ht_heap_minimum_free_size(h), info.total_free_bytes));
  cr_assert(ht_heap_check(h, true));
  for (int i = 0; i < 50; i++)
    cr_assert(ne(u32, heap_of(ht_caps_malloc(200, HT_CAP_DEFAULT)), ht_heap_id(h)));
  ht_heap_free(h, q);
  ht_heap_free(h, a);
  ht_heap_get_info(h, &info);
  cr_assert(eq(sz, info.allocated_blocks, 0));
}

/* ---- stress ---------------------------------------------------------------------- */

typedef struct {
  unsigned char *p;
  size_t size;
  unsigned char fill;
} shadow_t;

static void check_shadow(shadow_t *s, int n) {
  for (int i = 0; i < n; i++) {
    if (!s[i].p)
      continue;
    for (size_t k = 0; k < s[i].size; k++)
      cr_assert(eq(u8, s[i].p[k], s[i].fill), "block %d byte %zu", i, k);
  }
}

static int by_address(const void *a, const void *b) {
  const shadow_t *x = a, *y = b;
  return (uintptr_t)x->p < (uintptr_t)y->p ? -1 : (uintptr_t)x->p > (uintptr_t)y->p;
}

static void check_no_overlap(const shadow_t *s, int n) {
  static shadow_t sorted[512];
  int m = 0;
  for (int i = 0; i < n; i++)
    if (s[i].p)
      sorted[m++] = s[i];
  qsort(sorted, (size_t)m, sizeof *sorted, by_address);
  for (int i = 1; i < m; i++)
    cr_assert(le(u64, (uintptr_t)sorted[i - 1].p + sorted[i - 1].size, (uintptr_t)sorted[i].p));
}

Test(caps, randomized_stress_against_a_shadow_model_of_several_heaps) {
  add_esp32();
  static const uint32_t caps[] = {HT_CAP_DMA,     HT_CAP_EXEC,  HT_CAP_SPIRAM,
                                  HT_CAP_DEFAULT, HT_CAP_32BIT, HT_CAP_8BIT | HT_CAP_INTERNAL};
  enum { N = 400, STEPS = 20000 };
  static shadow_t s[N];
  for (int step = 0; step < STEPS; step++) {
    int i = (int)(rnd() % N);
    uint32_t c = caps[rnd() % 6];
    size_t size = rnd() % 4 == 0 ? rnd() % 20000 : rnd() % 500;
    unsigned char fill = (unsigned char)(step | 1);
    if (!s[i].p) {
      int kind = (int)(rnd() % 3);
      if (kind == 0)
        s[i].p = ht_caps_malloc(size, c);
      else if (kind == 1)
        s[i].p = ht_caps_calloc(1, size, c);
      else
        s[i].p = ht_caps_aligned_alloc((size_t)16 << (rnd() % 7), size, c);
      if (!s[i].p)
        continue;
      if (kind == 1)
        for (size_t k = 0; k < size; k++)
          cr_assert(eq(u8, s[i].p[k], 0));
    } else if (rnd() % 2) {
      ht_caps_free(s[i].p);
      s[i].p = NULL;
      continue;
    } else {
      unsigned char *q = ht_caps_realloc(s[i].p, size ? size : 1, c);
      if (!q)
        continue;
      size_t keep = s[i].size < size ? s[i].size : size;
      for (size_t k = 0; k < keep; k++)
        cr_assert(eq(u8, q[k], s[i].fill), "realloc lost byte %zu", k);
      s[i].p = q;
      size = size ? size : 1;
    }
    s[i].size = size;
    s[i].fill = fill;
    memset(s[i].p, fill, size);
    if (step % 500 == 0) {
      check_shadow(s, N);
      check_no_overlap(s, N);
      cross_check(HT_CAP_INVALID);
      cr_assert(ht_caps_check_integrity_all(true));
    }
  }
  for (int i = 0; i < N; i++)
    ht_caps_free(s[i].p);
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_INVALID), ht_caps_get_total_size(HT_CAP_INVALID)));
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(i64, t.cur_blocks, 0));
  cr_assert(eq(i64, t.cur_bytes, 0));
}

typedef struct {
  int id;
  int bad;
} worker_t;

static void *hammer(void *arg) {
  worker_t *w = arg;
  static const uint32_t caps[] = {HT_CAP_DMA, HT_CAP_EXEC, HT_CAP_SPIRAM, HT_CAP_DEFAULT};
  enum { N = 64 };
  shadow_t s[N] = {{0}};
  uint64_t r = 0x1234567ull * (uint64_t)(w->id + 1);
  for (int step = 0; step < 20000; step++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    int i = (int)(r % N);
    unsigned char fill = (unsigned char)(w->id * 16 + step % 16 + 1);
    if (s[i].p) {
      for (size_t k = 0; k < s[i].size; k++)
        w->bad |= s[i].p[k] != s[i].fill;
      if (r & 0x100) {
        ht_caps_free(s[i].p);
        s[i].p = NULL;
        continue;
      }
      size_t size = (r >> 20) % 3000 + 1;
      unsigned char *q = (r & 0x200) ? ht_realloc(s[i].p, size)
                                     : ht_caps_realloc(s[i].p, size, caps[(r >> 12) % 4]);
      if (!q)
        continue;
      s[i].p = q;
      s[i].size = size;
    } else {
      size_t size = (r >> 20) % 3000;
      s[i].p = (r & 0x400) ? ht_malloc(size) : ht_caps_malloc(size, caps[(r >> 12) % 4]);
      if (!s[i].p)
        continue;
      s[i].size = size;
    }
    s[i].fill = fill;
    memset(s[i].p, fill, s[i].size);
  }
  for (int i = 0; i < N; i++)
    ht_free(s[i].p);
  return NULL;
}

Test(caps, threads_hammering_several_heaps_and_the_system_heap_stay_consistent) {
  add_esp32();
  enum { T = 6 };
  pthread_t th[T];
  worker_t w[T];
  for (int i = 0; i < T; i++) {
    w[i] = (worker_t){i, 0};
    cr_assert(eq(int, pthread_create(&th[i], NULL, hammer, &w[i]), 0));
  }
  for (int i = 0; i < 50; i++) {
    cr_assert(ht_caps_check_integrity_all(true));
    ht_heap_info_t info;
    ht_caps_get_info(&info, HT_CAP_INVALID);
    cr_assert(le(sz, info.minimum_free_bytes, info.total_free_bytes));
    usleep(1000);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    cr_assert(eq(int, w[i].bad, 0), "thread %d saw its data change", i);
  }
  cr_assert(ht_caps_check_integrity_all(true));
  cr_assert(eq(sz, ht_caps_get_free_size(HT_CAP_INVALID), ht_caps_get_total_size(HT_CAP_INVALID)));
  cross_check(HT_CAP_INVALID);
  ht_totals_t t;
  ht_get_totals(&t);
  cr_assert(eq(i64, t.cur_blocks, 0), "threads exited: their counters were folded");
  cr_assert(eq(i64, t.cur_bytes, 0));
  cr_assert(eq(i64, (int64_t)(t.allocs - t.frees), t.cur_blocks));
}

static void *hold_heaps(void *arg) {
  _Atomic int *stop = arg;
  while (!*stop) {
    void *p = ht_caps_malloc(100, HT_CAP_DMA);
    void *q = HT_NEW(long, 3);
    ht_free(p);
    ht_free(q);
  }
  return NULL;
}

Test(caps, fork_while_other_threads_allocate_leaves_the_child_a_working_allocator) {
  add_esp32();
  _Atomic int stop = 0;
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&th[i], NULL, hold_heaps, &stop);
  for (int round = 0; round < 20; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      void *p = ht_caps_malloc(100, HT_CAP_DMA);
      void *q = HT_NEW(long, 3);
      ht_free(p);
      ht_free(q);
      _exit(ht_caps_check_integrity_all(true) ? 0 : 1);
    }
    int status = -1;
    cr_assert(eq(int, waitpid(pid, &status, 0), pid));
    cr_assert(eq(int, status, 0), "round %d: the child failed or hung", round);
  }
  stop = 1;
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
}
