/* esp_heap_caps.h - ESP-IDF's heap_caps_*, multi_heap_* and MALLOC_CAP_*
 * names on top of heaptrace, so that code written for esp_heap_caps.h and
 * multi_heap.h ports by changing its #include.
 *
 * Same bit values, same argument order, same return conventions: functions
 * returning esp_err_t give ESP_OK / ESP_ERR_INVALID_ARG / ESP_ERR_NO_MEM /
 * ESP_ERR_INVALID_SIZE / ESP_ERR_NOT_FOUND / ESP_FAIL (overlap) as ESP-IDF
 * does. The allocation names are macros, so every call site is traced with
 * its file and line. Differences, all documented in docs/allocator.md:
 * heap_caps_add_region() gives a region HT_REGION_DEFAULT_CAPS (a host has
 * no SoC memory map); a region overlapping a registered one in any way is
 * refused; the failed-alloc hook's function_name is heaptrace's entry point
 * ("ht_caps_malloc"); heap_caps_get_minimum_free_size() stays the lifetime
 * minimum while a low-water window is open (ht_caps_get_local_...).
 */
#ifndef HEAPTRACE_ESP_HEAP_CAPS_H
#define HEAPTRACE_ESP_HEAP_CAPS_H

#include <heaptrace/heaptrace.h>

#define MALLOC_CAP_EXEC HT_CAP_EXEC
#define MALLOC_CAP_32BIT HT_CAP_32BIT
#define MALLOC_CAP_8BIT HT_CAP_8BIT
#define MALLOC_CAP_DMA HT_CAP_DMA
#define MALLOC_CAP_PID2 HT_CAP_PID2
#define MALLOC_CAP_PID3 HT_CAP_PID3
#define MALLOC_CAP_PID4 HT_CAP_PID4
#define MALLOC_CAP_PID5 HT_CAP_PID5
#define MALLOC_CAP_PID6 HT_CAP_PID6
#define MALLOC_CAP_PID7 HT_CAP_PID7
#define MALLOC_CAP_SPIRAM HT_CAP_SPIRAM
#define MALLOC_CAP_INTERNAL HT_CAP_INTERNAL
#define MALLOC_CAP_DEFAULT HT_CAP_DEFAULT
#define MALLOC_CAP_IRAM_8BIT HT_CAP_IRAM_8BIT
#define MALLOC_CAP_RETENTION HT_CAP_RETENTION
#define MALLOC_CAP_RTCRAM HT_CAP_RTCRAM
#define MALLOC_CAP_INVALID HT_CAP_INVALID

/* esp_err.h's subset, unless the real one came first. */
#ifndef ESP_OK
typedef int esp_err_t;
#define ESP_OK 0
#define ESP_FAIL -1
#define ESP_ERR_NO_MEM 0x101
#define ESP_ERR_INVALID_ARG 0x102
#define ESP_ERR_INVALID_SIZE 0x104
#define ESP_ERR_NOT_FOUND 0x105
#endif

#define SOC_MEMORY_TYPE_NO_PRIOS HT_CAPS_PRIOS

typedef ht_alloc_failed_hook_t esp_alloc_failed_hook_t;
typedef ht_heap_info_t multi_heap_info_t;
typedef ht_heap_handle_t multi_heap_handle_t;
typedef ht_walker_heap_info_t walker_heap_into_t;
typedef ht_walker_block_info_t walker_block_info_t;
typedef ht_caps_walker_cb_t heap_caps_walker_cb_t;

/* An HT_E* code as the esp_err_t ESP-IDF returns for the same failure. */
static inline esp_err_t ht_esp_err(int rc) {
  switch (rc) {
  case HT_OK:
    return ESP_OK;
  case HT_EINVAL:
    return ESP_ERR_INVALID_ARG;
  case HT_ENOMEM:
    return ESP_ERR_NO_MEM;
  case HT_ESIZE:
    return ESP_ERR_INVALID_SIZE;
  case HT_ENOTFOUND:
    return ESP_ERR_NOT_FOUND;
  default:
    return ESP_FAIL;
  }
}

/* ---- initialisation and regions ---- */
#define heap_caps_init() ((void)0)
#define heap_caps_enable_nonos_stack_heaps() ((void)0)

static inline esp_err_t heap_caps_add_region(intptr_t start, intptr_t end) {
  return ht_esp_err(ht_heap_add_region(start, end));
}

static inline esp_err_t heap_caps_add_region_with_caps(const uint32_t caps[], intptr_t start,
                                                       intptr_t end) {
  return ht_esp_err(ht_heap_add_region_with_caps(caps, start, end));
}

static inline esp_err_t heap_caps_register_failed_alloc_callback(esp_alloc_failed_hook_t cb) {
  return ht_esp_err(ht_caps_register_failed_alloc_callback(cb));
}

/* ---- allocation ---- */
#define heap_caps_malloc(size, caps) ht_caps_malloc((size), (caps))
#define heap_caps_calloc(n, size, caps) ht_caps_calloc((n), (size), (caps))
#define heap_caps_realloc(ptr, size, caps) ht_caps_realloc((ptr), (size), (caps))
#define heap_caps_free(ptr) ht_caps_free(ptr)
#define heap_caps_aligned_alloc(alignment, size, caps)                                             \
  ht_caps_aligned_alloc((alignment), (size), (caps))
#define heap_caps_aligned_calloc(alignment, n, size, caps)                                         \
  ht_caps_aligned_calloc((alignment), (n), (size), (caps))
#define heap_caps_aligned_free(ptr) ht_caps_aligned_free(ptr)
#define heap_caps_malloc_prefer(...) ht_caps_malloc_prefer(__VA_ARGS__)
#define heap_caps_calloc_prefer(...) ht_caps_calloc_prefer(__VA_ARGS__)
#define heap_caps_realloc_prefer(...) ht_caps_realloc_prefer(__VA_ARGS__)
#define heap_caps_malloc_extmem_enable(limit) ht_caps_malloc_extmem_enable(limit)

/* ---- information ---- */
#define heap_caps_get_allocated_size(ptr) ht_caps_get_allocated_size(ptr)
#define heap_caps_get_free_size(caps) ht_caps_get_free_size(caps)
#define heap_caps_get_minimum_free_size(caps) ht_caps_get_minimum_free_size(caps)
#define heap_caps_get_largest_free_block(caps) ht_caps_get_largest_free_block(caps)
#define heap_caps_get_total_size(caps) ht_caps_get_total_size(caps)
#define heap_caps_get_info(info, caps) ht_caps_get_info((info), (caps))
#define heap_caps_print_heap_info(caps) ht_caps_print_heap_info(caps)
#define heap_caps_dump(caps) ht_caps_dump(caps)
#define heap_caps_dump_all() ht_caps_dump_all()
#define heap_caps_walk(caps, fn, user) ht_caps_walk((caps), (fn), (user))
#define heap_caps_walk_all(fn, user) ht_caps_walk_all((fn), (user))
#define heap_caps_check_integrity(caps, print) ht_caps_check_integrity((caps), (print))
#define heap_caps_check_integrity_all(print) ht_caps_check_integrity_all(print)
#define heap_caps_check_integrity_addr(addr, print) ht_caps_check_integrity_addr((addr), (print))

static inline esp_err_t heap_caps_monitor_local_minimum_free_size_start(void) {
  return ht_esp_err(ht_caps_monitor_local_minimum_free_size_start());
}

static inline esp_err_t heap_caps_monitor_local_minimum_free_size_stop(void) {
  return ht_caps_monitor_local_minimum_free_size_stop() == HT_OK ? ESP_OK : ESP_FAIL;
}

/* ---- multi_heap (one given heap) ---- */
#define multi_heap_register(start, size) ht_heap_register((start), (size))
#define multi_heap_set_lock(heap, lock) ((void)(heap), (void)(lock)) /* heaps lock themselves */
#define multi_heap_malloc(heap, size) ht_heap_malloc((heap), (size))
#define multi_heap_aligned_alloc(heap, size, alignment)                                            \
  ht_heap_aligned_alloc((heap), (size), (alignment))
#define multi_heap_realloc(heap, p, size) ht_heap_realloc((heap), (p), (size))
#define multi_heap_free(heap, p) ht_heap_free((heap), (p))
#define multi_heap_aligned_free(heap, p) ht_heap_free((heap), (p))
#define multi_heap_get_allocated_size(heap, p) ht_heap_get_allocated_size((heap), (p))
#define multi_heap_free_size(heap) ht_heap_free_size(heap)
#define multi_heap_minimum_free_size(heap) ht_heap_minimum_free_size(heap)
#define multi_heap_get_info(heap, info) ht_heap_get_info((heap), (info))
#define multi_heap_dump(heap) ht_heap_dump(heap)
#define multi_heap_check(heap, print_errors) ht_heap_check((heap), (print_errors))
#define multi_heap_walk(heap, fn, user) ht_heap_walk((heap), (fn), (user))

#endif /* HEAPTRACE_ESP_HEAP_CAPS_H */
