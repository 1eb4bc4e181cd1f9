/* caps_frag.c - a caps heap whose low-water mark and fragmentation are
 * known by construction, for the query service's end-to-end tests.
 *
 * A 64 KiB static region (caps DMA|8BIT, name "frag64") is filled with
 * 1000-byte blocks until the allocator refuses one, then every other
 * block is freed. Before that, a second region "spare" (caps 8BIT|32BIT)
 * had one 4000-byte block, freed again: the two heaps reach their minima
 * at different moments, so for caps 8BIT (both heaps) the true minimum of
 * the sum is not the sum of the minima. The program prints, from the
 * allocator itself (ht_heap_get_info and a walk), what heapctl must say:
 *   blocks=N min_free=M free=F free_blocks=B largest=L spare_free=S
 *   spare_min=P
 * where largest is the payload of the largest free block (the walk's),
 * and min_free the heap's lifetime minimum of free bytes.
 */
#include <stdio.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#define REGION (64 * 1024)
#define BLOCK 1000
#define MAX_BLOCKS 128

static _Alignas(64) unsigned char frag64[REGION];
static _Alignas(64) unsigned char spare[16 * 1024];

static bool largest_free(ht_walker_heap_info_t heap, ht_walker_block_info_t block, void *user) {
  (void)heap;
  size_t *largest = user;
  if (!block.used && block.size > *largest)
    *largest = block.size;
  return true;
}

int main(void) {
  const uint32_t caps[3] = {HT_CAP_DMA | HT_CAP_8BIT, 0, 0};
  const uint32_t spare_caps[3] = {HT_CAP_8BIT | HT_CAP_32BIT, 0, 0};
  if (ht_heap_add_region_with_caps_named("frag64", caps, (intptr_t)frag64,
                                         (intptr_t)(frag64 + REGION)) != HT_OK ||
      ht_heap_add_region_with_caps_named("spare", spare_caps, (intptr_t)spare,
                                         (intptr_t)(spare + sizeof spare)) != HT_OK)
    return 1;
  ht_caps_free(ht_caps_malloc(4000, HT_CAP_32BIT));
  void *blocks[MAX_BLOCKS];
  int n = 0;
  while (n < MAX_BLOCKS && (blocks[n] = ht_caps_malloc(BLOCK, HT_CAP_DMA)) != NULL)
    n++;
  for (int i = 1; i < n; i += 2)
    ht_caps_free(blocks[i]);
  ht_heap_handle_t h = ht_heap_by_name("frag64");
  ht_heap_info_t info, sinfo;
  ht_heap_get_info(h, &info);
  ht_heap_get_info(ht_heap_by_name("spare"), &sinfo);
  size_t largest = 0;
  ht_heap_walk(h, largest_free, &largest);
  printf("blocks=%d min_free=%zu free=%zu free_blocks=%zu largest=%zu spare_free=%zu "
         "spare_min=%zu\n",
         n, info.minimum_free_bytes, info.total_free_bytes, info.free_blocks, largest,
         sinfo.total_free_bytes, sinfo.minimum_free_bytes);
  return 0;
}
