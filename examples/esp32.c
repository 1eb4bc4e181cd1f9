/* esp32.c - an ESP32's memory map on a PC, traced by heaptrace.
 *
 * Registers three regions named and capped like an ESP32's (ESP-IDF's own
 * priority tables): DRAM 320 KiB and IRAM 128 KiB from static arrays,
 * external SPIRAM 4 MiB from mmap. Then it does what firmware does: DMA
 * buffers, executable memory, "SPIRAM if there is some" through the prefer
 * calls, a buffer that outgrows internal RAM and moves to SPIRAM with its
 * contents, aligned descriptors, typed objects, and one request that cannot
 * be served (the failed-alloc hook reports it). It prints the heaps per
 * capability and leaks five blocks on purpose, one per heap and two typed:
 *
 *   heaptraced &          # once
 *   ./esp32
 *   heapctl leaks --by heap
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <heaptrace/heaptrace.h>

#define KIB 1024u

typedef struct {
  uint32_t flags;
  uint32_t length;
  void *buffer;
  void *next;
} dma_desc_t;

typedef struct {
  char ssid[33];
  int8_t rssi;
  uint8_t channel;
} wifi_ap_record_t;

static uint8_t dram[320 * KIB] __attribute__((aligned(16)));
static uint8_t iram[128 * KIB] __attribute__((aligned(16)));

static int failures;

static void on_alloc_failed(size_t size, uint32_t caps, const char *function_name) {
  failures++;
  printf("allocation failed: %zu bytes with caps 0x%x in %s\n", size, caps, function_name);
}

/* ESP-IDF's ESP32 memory types: DRAM, IRAM and SPIRAM priority masks. */
static int add_regions(void) {
  const uint32_t dram_caps[3] = {HT_CAP_8BIT | HT_CAP_DEFAULT,
                                 HT_CAP_INTERNAL | HT_CAP_DMA | HT_CAP_32BIT, 0};
  const uint32_t iram_caps[3] = {HT_CAP_EXEC | HT_CAP_32BIT | HT_CAP_INTERNAL, 0, 0};
  const uint32_t spiram_caps[3] = {HT_CAP_SPIRAM | HT_CAP_DEFAULT, 0, HT_CAP_8BIT | HT_CAP_32BIT};
  size_t spiram_len = 4096 * KIB;
  void *spiram = mmap(NULL, spiram_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (spiram == MAP_FAILED)
    return HT_ENOMEM;
  int rc = ht_heap_add_region_with_caps_named("DRAM", dram_caps, (intptr_t)dram,
                                              (intptr_t)(dram + sizeof dram));
  if (rc == 0)
    rc = ht_heap_add_region_with_caps_named("IRAM", iram_caps, (intptr_t)iram,
                                            (intptr_t)(iram + sizeof iram));
  if (rc == 0)
    rc = ht_heap_add_region_with_caps_named("SPIRAM", spiram_caps, (intptr_t)spiram,
                                            (intptr_t)((char *)spiram + spiram_len));
  return rc;
}

/* DMA descriptors chained over one DMA buffer, as an SPI driver sets up. */
static dma_desc_t *make_dma_chain(uint8_t **buf_out) {
  uint8_t *buf = ht_caps_malloc(4092, HT_CAP_DMA);
  dma_desc_t *d = ht_caps_aligned_calloc(16, 4, sizeof *d, HT_CAP_DMA | HT_CAP_INTERNAL);
  for (int i = 0; i < 4; i++) {
    d[i].buffer = buf + i * 1023;
    d[i].length = 1023;
    d[i].next = i < 3 ? &d[i + 1] : NULL;
  }
  *buf_out = buf;
  return d;
}

/* A log buffer that grows past what internal RAM should hold: moved to
 * SPIRAM by realloc with new caps, contents kept. */
static char *grow_log(void) {
  char *log = ht_caps_malloc(2048, HT_CAP_INTERNAL | HT_CAP_8BIT);
  snprintf(log, 2048, "boot: %s", "ok");
  char *big = ht_caps_realloc(log, 256 * KIB, HT_CAP_SPIRAM);
  printf("log moved from DRAM to SPIRAM (heap %u), still reads \"%s\"\n",
         ht_heap_id(ht_heap_containing(big)), big);
  return big;
}

static void churn(void) {
  for (int i = 0; i < 200; i++) {
    void *frame = ht_caps_malloc_prefer(1536, 2, HT_CAP_SPIRAM, HT_CAP_DEFAULT);
    void *scratch = ht_caps_calloc(1, (size_t)(i % 50 + 1) * 16, HT_CAP_DEFAULT);
    void *tmp = ht_malloc((size_t)(i + 1) * 8);
    tmp = ht_realloc(tmp, (size_t)(i + 1) * 24);
    ht_free(tmp);
    ht_caps_free(scratch);
    ht_caps_free(frame);
  }
}

static void print_heaps(void) {
  static const uint32_t each[] = {HT_CAP_DEFAULT, HT_CAP_DMA, HT_CAP_EXEC, HT_CAP_SPIRAM};
  for (size_t i = 0; i < sizeof each / sizeof *each; i++)
    ht_caps_print_heap_info(each[i]);
}

int main(void) {
  int rc = add_regions();
  if (rc != 0) {
    fprintf(stderr, "esp32: cannot register the regions: %s\n", ht_strerror(rc));
    return 1;
  }
  ht_caps_register_failed_alloc_callback(on_alloc_failed);

  uint8_t *dma_buf;
  dma_desc_t *chain = make_dma_chain(&dma_buf);
  void *isr_code = ht_caps_malloc(3000, HT_CAP_EXEC); /* leaked: IRAM */
  memset(isr_code, 0, 3000);
  char *log = grow_log(); /* leaked: SPIRAM */
  churn();

  wifi_ap_record_t *aps = HT_CAPS_NEW(wifi_ap_record_t, 20, HT_CAP_SPIRAM); /* leaked, typed */
  dma_desc_t *spare = HT_NEW(dma_desc_t, 8);         /* leaked, typed: system heap */
  void *dram_leak = ht_caps_malloc(777, HT_CAP_DMA); /* leaked: DRAM */

  /* No region is this big and EXEC memory never comes from glibc. */
  void *too_big = ht_caps_malloc(1024 * KIB, HT_CAP_EXEC);

  ht_caps_free(chain);
  ht_caps_free(dma_buf);
  print_heaps();
  ht_print_total_memory_usage();
  printf("heaps intact: %s; failed allocations: %d; leaked on purpose: %p %p %p %p %p\n",
         ht_caps_check_integrity_all(true) ? "yes" : "NO", failures, isr_code, (void *)log,
         (void *)aps, (void *)spare, dram_leak);
  return too_big == NULL && failures == 1 ? 0 : 1;
}
