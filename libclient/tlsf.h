/*
 * tlsf.h - internal interface of heaptrace's TLSF (Two-Level Segregated Fit)
 * allocator for a caller-supplied memory region.
 *
 * Data flow: the caller hands ht__tlsf_create() a region; the control
 * structure is placed at its (16-byte aligned) start and the rest becomes one
 * free block followed by a zero-size "sentinel" header. malloc/memalign carve
 * blocks out of free blocks found through a two-level bitmap of segregated
 * free lists (O(1)); free returns them and merges them with free physical
 * neighbours at once (O(1)), so no two free blocks are ever adjacent.
 *
 * Block layout (every block header is 16-byte aligned):
 *
 *     [prev_phys pointer][size|flags]  <- HT_TLSF_BLOCK_OVERHEAD (16) bytes
 *     [payload: usable_size bytes, a multiple of 16, at least 16]
 *
 * The module is NOT thread-safe: the caller (the capability heap layer) must
 * serialise every call on the same ht_tlsf_t. It never calls any allocator;
 * it touches only the memory it was given.
 */
#ifndef HT_TLSF_H
#define HT_TLSF_H

#include <stddef.h>

/* Every pointer returned by malloc/memalign is aligned to this. */
#define HT_TLSF_ALIGN 16

/* Bytes of header in front of every block's payload (see ht__tlsf_block_overhead). */
#define HT_TLSF_BLOCK_OVERHEAD 16

/* Smallest payload a block can have; smaller requests are rounded up to it. */
#define HT_TLSF_MIN_BLOCK 16

typedef struct ht_tlsf ht_tlsf_t;

typedef struct {
  size_t total_free_bytes;      /* sum of payload bytes of all free blocks */
  size_t total_allocated_bytes; /* sum of usable bytes of all live blocks */
  size_t largest_free_block;    /* largest size malloc is guaranteed to satisfy now */
  size_t allocated_blocks;      /* live blocks */
  size_t free_blocks;           /* free blocks (never two adjacent) */
  size_t total_blocks;          /* allocated_blocks + free_blocks */
} ht_tlsf_stats_t;

/* Return nonzero to stop the walk. */
typedef int (*ht_tlsf_walker_t)(void *ptr, size_t size, int used, void *user);

/*
 * Returns the largest number of bytes the control structure can take at the
 * start of a region (the value for the biggest possible region). The control
 * structure is sized to the region, so small regions use less: see
 * ht__tlsf_overhead_for(). Alignment padding of an unaligned start (< 16
 * bytes) comes on top.
 */
size_t ht__tlsf_overhead(void);

/*
 * Returns the exact number of bytes the control structure takes in a
 * 16-byte aligned region of `bytes` bytes. A region is then laid out as
 * control + block header + free payload + sentinel header (16) + < 16 bytes
 * of tail slack; ht__tlsf_total_bytes() tells the payload after creation.
 */
size_t ht__tlsf_overhead_for(size_t bytes);

/*
 * Returns the per-block header size, HT_TLSF_BLOCK_OVERHEAD (16 bytes): each
 * allocation consumes its usable size (request rounded up to a multiple of
 * 16, minimum 16) plus these 16 bytes of the region.
 */
size_t ht__tlsf_block_overhead(void);

/*
 * Turns [mem, mem + bytes) into an empty heap and returns its control
 * structure, which lives at the start of that memory (the caller keeps
 * ownership of the region; there is nothing to destroy, just stop using it).
 * An unaligned start is aligned up internally and the tail is trimmed to a
 * multiple of 16. Returns NULL if mem is NULL or the region cannot hold the
 * control structure plus one minimum block (256 aligned bytes on LP64). The
 * control structure grows with the region: 480 bytes for 1 KiB, 1792 for
 * 1 MiB, 3376 for 4 GiB, so regions below ~4 KiB lose a large share to it.
 */
ht_tlsf_t *ht__tlsf_create(void *mem, size_t bytes);

/*
 * Returns a 16-byte aligned block of at least `size` usable bytes, or NULL if
 * no free block fits. Size 0 is treated as HT_TLSF_MIN_BLOCK and returns a
 * distinct minimum block (free it like any other). The search is good-fit:
 * the request is rounded up to the next segregated list so that any block
 * found there fits, and if no such list is populated, the head block of the
 * request's own list is tried.
 */
void *ht__tlsf_malloc(ht_tlsf_t *t, size_t size);

/*
 * Returns a block of at least `size` usable bytes whose address is a multiple
 * of `align`, or NULL if align is not a power of two (0 included) or no free
 * block is large enough for size + align + 16 bytes (the worst-case
 * alignment gap). Alignments up to 16 behave exactly like ht__tlsf_malloc.
 * Any leading alignment gap is returned to the heap as a free block.
 */
void *ht__tlsf_memalign(ht_tlsf_t *t, size_t align, size_t size);

/*
 * Returns the block at p (which must come from this heap and be live) to the
 * heap, merging it with free neighbours. p NULL is a no-op. Freeing a
 * foreign or already freed pointer is undefined (caught by assert()).
 */
void ht__tlsf_free(ht_tlsf_t *t, void *p);

/*
 * Changes the usable size of live block p to at least `size` without moving
 * it: shrinking always succeeds (the tail becomes a free block when it is big
 * enough to hold one); growing succeeds only when the physically following
 * block is free and large enough. Returns 0 on success, -1 if the block
 * cannot grow in place (then it is unchanged). Size 0 shrinks to the minimum
 * block; it does not free.
 */
int ht__tlsf_resize_inplace(ht_tlsf_t *t, void *p, size_t size);

/*
 * Returns the usable bytes of live block p (>= the size requested, a
 * multiple of 16), or 0 for NULL.
 */
size_t ht__tlsf_usable_size(const void *p);

/*
 * Returns 1 if p lies inside the block area (first block header up to the
 * end of the sentinel), 0 otherwise (NULL, control structure, foreign).
 */
int ht__tlsf_contains(const ht_tlsf_t *t, const void *p);

/*
 * Fills *out in O(1) from counters kept by every operation.
 * total_free_bytes counts payload bytes of free blocks (headers excluded);
 * total_allocated_bytes counts usable bytes of live blocks. Hence
 * total_free_bytes + total_allocated_bytes
 *   + HT_TLSF_BLOCK_OVERHEAD * (total_blocks - 1) == ht__tlsf_total_bytes().
 * largest_free_block is the size of the first block of the highest
 * populated free list (0 when nothing is free): malloc of that size or less
 * is guaranteed to succeed. It can be smaller than the biggest free block,
 * because a list spans a size range (1/16 of its class) and only its head is
 * examined in O(1); a request between largest_free_block and the real
 * biggest block rounds up past the highest list and may fail, so do not
 * assume malloc(largest_free_block + HT_TLSF_ALIGN) works.
 */
void ht__tlsf_stats(const ht_tlsf_t *t, ht_tlsf_stats_t *out);

/* Returns the usable bytes of the heap when it is empty (one free block). */
size_t ht__tlsf_total_bytes(const ht_tlsf_t *t);

/*
 * Calls fn(payload, usable_size, used, user) for every block in address
 * order until fn returns nonzero. fn must not modify the heap. It trusts the
 * headers: run ht__tlsf_check() first on a heap that may be corrupted.
 */
void ht__tlsf_walk(const ht_tlsf_t *t, ht_tlsf_walker_t fn, void *user);

/*
 * Verifies every structure: the physical chain (sizes sum to the area,
 * prev_phys links, flags, no two adjacent free blocks, sentinel), the free
 * lists (each entry is a real free block in the list matching its size,
 * doubly linked correctly, every free block listed once), the bitmaps against
 * list emptiness, and the stats counters against the walk. Every pointer is
 * bounds-checked before it is followed, so a corrupted header cannot crash it.
 * Returns 0 if consistent; otherwise -1 and, if err is non-NULL and errlen > 0,
 * a NUL-terminated message naming the block (its payload address) and the
 * fault.
 */
int ht__tlsf_check(const ht_tlsf_t *t, char *err, size_t errlen);

#endif /* HT_TLSF_H */
