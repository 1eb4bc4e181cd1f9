/* test_esp_port.c - ESP-IDF code compiled against heaptrace/esp_heap_caps.h
 * unchanged but for the #include: the heap_caps_*, multi_heap_* and
 * MALLOC_CAP_* names, esp_err_t returns, multi_heap_info_t, and the
 * failed-alloc hook type. The snippets below are written the way ESP-IDF
 * applications and components write them.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdlib.h>
#include <string.h>

#include <heaptrace/esp_heap_caps.h>

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
}

TestSuite(esp_port, .init = setup, .timeout = 60);

/* ---- an ESP-IDF-style component, verbatim but for the include ---- */

static uint8_t ext_ram[128 * 1024] __attribute__((aligned(16)));
static uint8_t int_ram[64 * 1024] __attribute__((aligned(16)));
static size_t hook_size;
static uint32_t hook_caps;

static void alloc_failed_hook(size_t size, uint32_t caps, const char *function_name) {
  (void)function_name;
  hook_size = size;
  hook_caps = caps;
}

static esp_err_t board_heaps_init(void) {
  const uint32_t int_caps[SOC_MEMORY_TYPE_NO_PRIOS] = {
      MALLOC_CAP_8BIT | MALLOC_CAP_DEFAULT, MALLOC_CAP_INTERNAL | MALLOC_CAP_DMA | MALLOC_CAP_32BIT,
      0};
  const uint32_t ext_caps[SOC_MEMORY_TYPE_NO_PRIOS] = {
      MALLOC_CAP_SPIRAM, 0, MALLOC_CAP_8BIT | MALLOC_CAP_32BIT | MALLOC_CAP_DEFAULT};
  heap_caps_init();
  esp_err_t err = heap_caps_add_region_with_caps(int_caps, (intptr_t)int_ram,
                                                 (intptr_t)int_ram + sizeof(int_ram));
  if (err != ESP_OK)
    return err;
  err = heap_caps_add_region_with_caps(ext_caps, (intptr_t)ext_ram,
                                       (intptr_t)ext_ram + sizeof(ext_ram));
  if (err != ESP_OK)
    return err;
  heap_caps_malloc_extmem_enable(4096);
  return heap_caps_register_failed_alloc_callback(alloc_failed_hook);
}

static uint8_t *dma_buffer_new(size_t len) {
  uint8_t *buf = heap_caps_aligned_calloc(32, 1, len, MALLOC_CAP_DMA | MALLOC_CAP_INTERNAL);
  if (buf == NULL)
    buf = heap_caps_malloc_prefer(len, 2, MALLOC_CAP_DMA, MALLOC_CAP_DEFAULT);
  return buf;
}

static void report(void) {
  multi_heap_info_t info;
  heap_caps_get_info(&info, MALLOC_CAP_INTERNAL);
  cr_assert(eq(sz, info.total_free_bytes, heap_caps_get_free_size(MALLOC_CAP_INTERNAL)));
  cr_assert(le(sz, info.minimum_free_bytes, info.total_free_bytes));
  cr_assert(le(sz, info.largest_free_block, info.total_free_bytes));
  cr_assert(eq(sz, info.total_blocks, info.allocated_blocks + info.free_blocks));
  cr_assert(heap_caps_check_integrity_all(true));
}

/* ---- the tests ---- */

Test(esp_port, an_esp_idf_component_builds_and_runs_unchanged) {
  cr_assert(eq(int, board_heaps_init(), ESP_OK));
  uint8_t *dma = dma_buffer_new(1500);
  cr_assert(ne(ptr, dma, NULL));
  cr_assert(eq(u64, (uintptr_t)dma % 32, 0));
  cr_assert(eq(sz, heap_caps_get_allocated_size(dma), 1500));
  void *ext = heap_caps_malloc(10000, MALLOC_CAP_SPIRAM);
  cr_assert(ge(u64, (uintptr_t)ext, (uintptr_t)ext_ram));
  cr_assert(lt(u64, (uintptr_t)ext, (uintptr_t)ext_ram + sizeof ext_ram));
  ext = heap_caps_realloc(ext, 20000, MALLOC_CAP_SPIRAM);
  cr_assert(ne(ptr, ext, NULL));
  char *small = heap_caps_calloc(4, 4, MALLOC_CAP_8BIT);
  cr_assert(eq(i8, small[15], 0));
  report();
  cr_assert(eq(ptr, heap_caps_malloc(1 << 20, MALLOC_CAP_EXEC), NULL));
  cr_assert(eq(sz, hook_size, 1 << 20));
  cr_assert(eq(u32, hook_caps, MALLOC_CAP_EXEC));
  heap_caps_free(small);
  heap_caps_free(ext);
  heap_caps_aligned_free(dma);
  cr_assert(eq(sz, heap_caps_get_free_size(MALLOC_CAP_INVALID),
               heap_caps_get_total_size(MALLOC_CAP_INVALID)));
}

Test(esp_port, esp_error_codes_match_esp_idf) {
  const uint32_t caps[3] = {MALLOC_CAP_8BIT, 0, 0};
  cr_assert(eq(int, heap_caps_add_region_with_caps(caps, 0, 100), ESP_ERR_INVALID_ARG));
  cr_assert(eq(int, heap_caps_add_region_with_caps(caps, (intptr_t)int_ram, (intptr_t)int_ram + 32),
               ESP_ERR_INVALID_SIZE));
  cr_assert(eq(int, heap_caps_add_region((intptr_t)int_ram, (intptr_t)int_ram + 4096), ESP_OK));
  cr_assert(
      eq(int, heap_caps_add_region((intptr_t)int_ram + 16, (intptr_t)int_ram + 8192), ESP_FAIL));
  cr_assert(eq(int, heap_caps_register_failed_alloc_callback(NULL), ESP_ERR_INVALID_ARG));
  cr_assert(eq(int, heap_caps_monitor_local_minimum_free_size_start(), ESP_OK));
  cr_assert(eq(int, heap_caps_monitor_local_minimum_free_size_stop(), ESP_OK));
  cr_assert(eq(int, heap_caps_monitor_local_minimum_free_size_stop(), ESP_FAIL));
}

Test(esp_port, caps_bits_have_esp_idf_values) {
  cr_assert(eq(u32, MALLOC_CAP_EXEC, 1u << 0));
  cr_assert(eq(u32, MALLOC_CAP_32BIT, 1u << 1));
  cr_assert(eq(u32, MALLOC_CAP_8BIT, 1u << 2));
  cr_assert(eq(u32, MALLOC_CAP_DMA, 1u << 3));
  cr_assert(eq(u32, MALLOC_CAP_PID2, 1u << 4));
  cr_assert(eq(u32, MALLOC_CAP_PID7, 1u << 9));
  cr_assert(eq(u32, MALLOC_CAP_SPIRAM, 1u << 10));
  cr_assert(eq(u32, MALLOC_CAP_INTERNAL, 1u << 11));
  cr_assert(eq(u32, MALLOC_CAP_DEFAULT, 1u << 12));
  cr_assert(eq(u32, MALLOC_CAP_IRAM_8BIT, 1u << 13));
  cr_assert(eq(u32, MALLOC_CAP_RETENTION, 1u << 14));
  cr_assert(eq(u32, MALLOC_CAP_RTCRAM, 1u << 15));
  cr_assert(eq(u32, MALLOC_CAP_INVALID, 1u << 31));
}

static bool count_used(walker_heap_into_t heap, walker_block_info_t block, void *user) {
  (void)heap;
  *(int *)user += block.used;
  return true;
}

Test(esp_port, multi_heap_api_runs_on_a_registered_region) {
  static uint8_t pool[32 * 1024] __attribute__((aligned(16)));
  multi_heap_handle_t heap = multi_heap_register(pool, sizeof(pool));
  cr_assert(ne(ptr, heap, NULL));
  multi_heap_set_lock(heap, NULL);
  void *a = multi_heap_malloc(heap, 200);
  void *b = multi_heap_aligned_alloc(heap, 64, 256);
  a = multi_heap_realloc(heap, a, 400);
  cr_assert(eq(sz, multi_heap_get_allocated_size(heap, a), 400));
  multi_heap_info_t info;
  multi_heap_get_info(heap, &info);
  cr_assert(eq(sz, info.allocated_blocks, 2));
  cr_assert(eq(sz, multi_heap_free_size(heap), info.total_free_bytes));
  cr_assert(le(sz, multi_heap_minimum_free_size(heap), info.total_free_bytes));
  cr_assert(multi_heap_check(heap, true));
  int used = 0;
  multi_heap_walk(heap, count_used, &used);
  cr_assert(eq(int, used, 2));
  multi_heap_aligned_free(heap, b);
  multi_heap_free(heap, a);
  multi_heap_get_info(heap, &info);
  cr_assert(eq(sz, info.allocated_blocks, 0));
}
