/* heapmodel.h - free space of one bounded heap, rebuilt from its events.
 *
 * A heap region is known by its bounds (HEAP record); every allocation
 * event names the block's address and usable size. The model keeps the
 * live blocks in address order (a treap) with, in every subtree, the
 * largest gap between neighbouring blocks, so that after each event the
 * heap's free bytes, largest free block and number of free blocks are
 * known exactly in O(log n) -- at every instant, not by sampling.
 *
 * Layout (libclient's caps heaps, docs/allocator.md): a block occupies
 * [ptr - pre, ptr + usable + post) of the area, where pre depends on the
 * block (its alignment) and post does not; a free gap of g bytes is one
 * free block (free blocks are coalesced) whose payload is g - pre_free.
 */
#ifndef HTQ_HEAPMODEL_H
#define HTQ_HEAPMODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct htq_tnode htq_tnode_t;

typedef struct {
  uint64_t area_start, area_end; /* managed bytes */
  uint64_t post;                 /* bytes of a live block after its usable bytes */
  uint64_t pre_free;             /* header bytes of a free block */
  htq_tnode_t *root;
  size_t blocks;
  uint64_t used; /* footprint bytes of live blocks */
  int overlaps;  /* events that did not fit the model (counted, skipped) */
  uint64_t prio_state;
} htq_heapmodel_t;

typedef struct {
  uint64_t free_bytes;   /* payload bytes in free blocks */
  uint64_t largest_free; /* payload of the largest free block */
  uint64_t free_blocks;
  uint64_t used_bytes; /* footprint of live blocks */
} htq_heapview_t;

void htq_heapmodel_init(htq_heapmodel_t *m, uint64_t start, uint64_t size, uint64_t post,
                        uint64_t pre_free);
void htq_heapmodel_free(htq_heapmodel_t *m);
/* Adds a live block that starts pre bytes before ptr; returns 0, or -1
 * (counted in overlaps) when it lies outside the area or overlaps a live
 * block. */
int htq_heapmodel_add(htq_heapmodel_t *m, uint64_t ptr, uint64_t usable, uint64_t pre);
/* Removes the live block at ptr; returns 0 or -1 if there is none. */
int htq_heapmodel_remove(htq_heapmodel_t *m, uint64_t ptr);
void htq_heapmodel_view(const htq_heapmodel_t *m, htq_heapview_t *v);

#endif
