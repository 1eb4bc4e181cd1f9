/*
 * tlsf.c - TLSF (Two-Level Segregated Fit) allocator over a caller-supplied
 * region, used by the capability heap layer (ESP-IDF multi_heap style).
 *
 * Data flow: ht__tlsf_create() writes the control structure at the aligned
 * start of the region (sized to the region: one row of 16 list heads per
 * power-of-two size class the region can hold), then one free block spanning
 * the rest and a zero-size used sentinel header that stops coalescing at the
 * end. Free blocks live in segregated doubly linked lists indexed by
 * (fl, sl): fl is the power-of-two class, sl one of 16 linear subdivisions of
 * it; sizes below 256 bytes have exact 16-byte classes in row 0. A bit per
 * list and a bit per row make finding a non-empty list O(1).
 *
 * malloc rounds the request up to the next list boundary (good fit: any block
 * in that list or above fits), takes the first block found, and splits off
 * the unused tail as a new free block. free marks the block free, merges it
 * with a free previous and/or next physical neighbour (prev_phys is kept in
 * every header so both directions are O(1)), and inserts the result. Thus no
 * two free blocks are ever adjacent, which ht__tlsf_check() verifies.
 *
 * Stats are counters updated where blocks enter/leave the free lists and
 * where blocks are handed out/returned, so they are O(1) to read.
 */
#include "tlsf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum {
  ALIGN_LOG2 = 4,
  SL_LOG2 = 4,
  SL_COUNT = 1 << SL_LOG2,
  /* Row 0 holds sizes below SMALL_BLOCK in exact 16-byte steps. */
  FL_SHIFT = SL_LOG2 + ALIGN_LOG2,
  SMALL_BLOCK = 1 << FL_SHIFT,
  /* Rows needed for the largest size_t: fls(SIZE_MAX) - FL_SHIFT + 2. */
  FL_COUNT_MAX = (int)(sizeof(size_t) * 8) - FL_SHIFT + 1,
};

#define HDR ((size_t)HT_TLSF_BLOCK_OVERHEAD)
#define MIN_BLOCK ((size_t)HT_TLSF_MIN_BLOCK)
#define FLAG_FREE ((size_t)1)
/* Sizes are multiples of 16, so the low 4 bits are free for flags. */
#define FLAG_MASK ((size_t)HT_TLSF_ALIGN - 1)
#define TLSF_MAGIC 0x544c5346u /* "TLSF" */

/*
 * A block header. prev_phys and size form the 16-byte header of every block;
 * next_free/prev_free overlay the payload and are valid only while free.
 * The _Alignas keeps the payload at offset 16 on 32-bit targets too.
 */
typedef struct block {
  struct block *prev_phys; /* physically previous block, NULL for the first */
  size_t size;             /* payload bytes | FLAG_FREE */
  _Alignas(HT_TLSF_ALIGN) struct block *next_free;
  struct block *prev_free;
} block_t;

_Static_assert(offsetof(block_t, next_free) == HT_TLSF_BLOCK_OVERHEAD,
               "payload must start right after the 16-byte header");
_Static_assert(2 * sizeof(block_t *) <= HT_TLSF_MIN_BLOCK,
               "a minimum free block must hold its list links");
_Static_assert(FL_COUNT_MAX <= 64, "first-level bitmap is 64 bits");

struct ht_tlsf {
  uint32_t magic;
  uint32_t fl_count;  /* rows of list heads actually present */
  uint64_t fl_bitmap; /* bit fl set iff row fl has a non-empty list */
  block_t *first;     /* header of the first block */
  block_t *sentinel;  /* zero-size used header ending the area */
  size_t total;       /* payload of the single block of an empty heap */
  size_t free_bytes;  /* counters mirrored by ht__tlsf_stats() */
  size_t alloc_bytes;
  size_t free_blocks;
  size_t alloc_blocks;
  block_t *heads[]; /* fl_count * SL_COUNT, then uint32_t sl_bitmap[fl_count] */
};

/* ---- small helpers ------------------------------------------------------ */

/* Index of the highest / lowest set bit; x must be nonzero. */
static inline unsigned fls_u64(uint64_t x) {
  return 63u - (unsigned)__builtin_clzll((unsigned long long)x);
}

static inline unsigned fls_size(size_t x) {
  return fls_u64((uint64_t)x);
}

static inline unsigned ffs_u64(uint64_t x) {
  return (unsigned)__builtin_ctzll((unsigned long long)x);
}

static inline size_t align_up(size_t x, size_t a) {
  return (x + (a - 1)) & ~(a - 1);
}

static inline size_t bsize(const block_t *b) {
  return b->size & ~FLAG_MASK;
}

static inline int bfree(const block_t *b) {
  return (b->size & FLAG_FREE) != 0;
}

static inline void *payload(const block_t *b) {
  return (char *)b + HDR;
}

static inline block_t *from_payload(const void *p) {
  return (block_t *)((char *)p - HDR);
}

static inline block_t *next_phys(const block_t *b) {
  return (block_t *)((char *)b + HDR + bsize(b));
}

static inline uint32_t *sl_bitmap(const ht_tlsf_t *t) {
  return (uint32_t *)(void *)((block_t **)t->heads + (size_t)t->fl_count * SL_COUNT);
}

static inline block_t **head_slot(ht_tlsf_t *t, unsigned fl, unsigned sl) {
  return &t->heads[fl * SL_COUNT + sl];
}

/* ---- size class mapping ------------------------------------------------- */

/* The list (fl, sl) whose size range contains size. */
static inline void mapping_insert(size_t size, unsigned *fl, unsigned *sl) {
  if (size < SMALL_BLOCK) {
    *fl = 0;
    *sl = (unsigned)(size >> ALIGN_LOG2);
  } else {
    unsigned f = fls_size(size);
    *sl = (unsigned)(size >> (f - SL_LOG2)) ^ SL_COUNT;
    *fl = f - FL_SHIFT + 1;
  }
}

/*
 * The first list all of whose blocks are >= size: round size up to the next
 * list boundary. Returns -1 if that overflows (no such list).
 */
static inline int mapping_search(size_t size, unsigned *fl, unsigned *sl) {
  if (size >= SMALL_BLOCK) {
    size_t round = ((size_t)1 << (fls_size(size) - SL_LOG2)) - 1;
    if (size > SIZE_MAX - round)
      return -1;
    size += round;
  }
  mapping_insert(size, fl, sl);
  return 0;
}

/* Rows of list heads needed for blocks of up to max_payload bytes. */
static uint32_t fl_count_for(size_t max_payload) {
  unsigned fl, sl;
  mapping_insert(max_payload, &fl, &sl);
  return fl + 1;
}

static size_t ctrl_size(uint32_t fl_count) {
  size_t bytes = offsetof(struct ht_tlsf, heads) + (size_t)fl_count * SL_COUNT * sizeof(block_t *) +
                 (size_t)fl_count * sizeof(uint32_t);
  return align_up(bytes, HT_TLSF_ALIGN);
}

/*
 * Rows for an aligned region of `bytes`: start from the bound given by the
 * whole region, then drop rows the resulting largest block cannot reach
 * (the saving can matter for 1-2 KiB heaps).
 */
static uint32_t layout_fl_count(size_t bytes) {
  uint32_t fc = fl_count_for(bytes);
  while (fc > 1) {
    size_t c = ctrl_size(fc - 1);
    if (c + 2 * HDR + MIN_BLOCK > bytes || fl_count_for(bytes - c - 2 * HDR) > fc - 1)
      break;
    fc--;
  }
  return fc;
}

/* ---- free lists (hot path) ---------------------------------------------- */

static void insert_free(ht_tlsf_t *t, block_t *b) {
  unsigned fl, sl;
  mapping_insert(bsize(b), &fl, &sl);
  block_t **head = head_slot(t, fl, sl);
  b->next_free = *head;
  b->prev_free = NULL;
  if (*head)
    (*head)->prev_free = b;
  *head = b;
  sl_bitmap(t)[fl] |= 1u << sl;
  t->fl_bitmap |= (uint64_t)1 << fl;
  t->free_blocks++;
  t->free_bytes += bsize(b);
}

static void remove_free(ht_tlsf_t *t, block_t *b) {
  unsigned fl, sl;
  mapping_insert(bsize(b), &fl, &sl);
  if (b->next_free)
    b->next_free->prev_free = b->prev_free;
  if (b->prev_free) {
    b->prev_free->next_free = b->next_free;
  } else {
    block_t **head = head_slot(t, fl, sl);
    *head = b->next_free;
    if (!*head) {
      uint32_t *slm = sl_bitmap(t);
      slm[fl] &= ~(1u << sl);
      if (!slm[fl])
        t->fl_bitmap &= ~((uint64_t)1 << fl);
    }
  }
  t->free_blocks--;
  t->free_bytes -= bsize(b);
}

/* First block of the first non-empty list at or after (fl, sl), or NULL. */
static block_t *find_suitable(ht_tlsf_t *t, unsigned fl, unsigned sl) {
  if (fl >= t->fl_count)
    return NULL;
  uint32_t slm = sl_bitmap(t)[fl] & (~0u << sl);
  if (!slm) {
    uint64_t flm = t->fl_bitmap & (~(uint64_t)0 << (fl + 1));
    if (!flm)
      return NULL;
    fl = ffs_u64(flm);
    slm = sl_bitmap(t)[fl];
  }
  return *head_slot(t, fl, ffs_u64(slm));
}

/*
 * Unlinks and returns a free block of at least size bytes, or NULL. Good fit
 * first; failing that, the head of size's own list (which is what makes the
 * head of the highest list a guaranteed largest_free_block).
 */
static block_t *locate_free(ht_tlsf_t *t, size_t size) {
  unsigned fl, sl;
  block_t *b = NULL;
  if (mapping_search(size, &fl, &sl) == 0)
    b = find_suitable(t, fl, sl);
  if (!b) {
    mapping_insert(size, &fl, &sl);
    if (fl < t->fl_count && *head_slot(t, fl, sl) && bsize(*head_slot(t, fl, sl)) >= size)
      b = *head_slot(t, fl, sl);
  }
  if (b)
    remove_free(t, b);
  return b;
}

/* ---- block surgery ------------------------------------------------------ */

/*
 * Cuts b (payload >= size + HDR + MIN_BLOCK) after `size` payload bytes and
 * returns the remainder as a block with cleared flags (i.e. marked used).
 */
static block_t *split(block_t *b, size_t size) {
  block_t *rest = (block_t *)((char *)payload(b) + size);
  rest->size = bsize(b) - size - HDR;
  rest->prev_phys = b;
  next_phys(rest)->prev_phys = rest;
  b->size = size | (b->size & FLAG_MASK);
  return rest;
}

/*
 * Makes b free: merges it with a free previous and/or next neighbour and
 * inserts the result into its list. b's neighbours that are being handed out
 * must already be marked used, or they would be swallowed.
 */
static void release(ht_tlsf_t *t, block_t *b) {
  block_t *prev = b->prev_phys;
  block_t *next = next_phys(b);
  if (prev && bfree(prev)) {
    remove_free(t, prev);
    prev->size = bsize(prev) + HDR + bsize(b);
    b = prev;
  }
  if (bfree(next)) {
    remove_free(t, next);
    b->size = bsize(b) + HDR + bsize(next);
  }
  b->size |= FLAG_FREE;
  next_phys(b)->prev_phys = b;
  insert_free(t, b);
}

/* Hands out free-list-detached block b trimmed to size; returns its payload. */
static void *use_block(ht_tlsf_t *t, block_t *b, size_t size) {
  b->size &= ~FLAG_FREE;
  if (bsize(b) >= size + HDR + MIN_BLOCK)
    release(t, split(b, size));
  t->alloc_blocks++;
  t->alloc_bytes += bsize(b);
  return payload(b);
}

/* Request rounded to a block size, or 0 if it can never fit this heap. */
static size_t adjust_request(const ht_tlsf_t *t, size_t size) {
  if (size > t->total)
    return 0;
  size = align_up(size, HT_TLSF_ALIGN);
  return size < MIN_BLOCK ? MIN_BLOCK : size;
}

/* ---- public API --------------------------------------------------------- */

size_t ht__tlsf_overhead(void) {
  return ctrl_size(FL_COUNT_MAX);
}

size_t ht__tlsf_overhead_for(size_t bytes) {
  return ctrl_size(layout_fl_count(bytes & ~FLAG_MASK));
}

size_t ht__tlsf_block_overhead(void) {
  return HDR;
}

ht_tlsf_t *ht__tlsf_create(void *mem, size_t bytes) {
  if (!mem)
    return NULL;
  size_t pad = (size_t)(-(uintptr_t)mem) & FLAG_MASK;
  if (bytes < pad)
    return NULL;
  bytes = (bytes - pad) & ~FLAG_MASK;

  uint32_t fc = layout_fl_count(bytes);
  size_t ctrl = ctrl_size(fc);
  if (bytes < ctrl || bytes - ctrl < 2 * HDR + MIN_BLOCK)
    return NULL;

  ht_tlsf_t *t = (ht_tlsf_t *)(void *)((char *)mem + pad);
  memset(t, 0, ctrl);
  t->magic = TLSF_MAGIC;
  t->fl_count = fc;
  t->total = bytes - ctrl - 2 * HDR;
  t->first = (block_t *)(void *)((char *)t + ctrl);
  t->first->prev_phys = NULL;
  t->first->size = t->total | FLAG_FREE;
  t->sentinel = next_phys(t->first);
  t->sentinel->prev_phys = t->first;
  t->sentinel->size = 0;
  insert_free(t, t->first);
  return t;
}

void *ht__tlsf_malloc(ht_tlsf_t *t, size_t size) {
  size_t adj = adjust_request(t, size);
  if (!adj)
    return NULL;
  block_t *b = locate_free(t, adj);
  return b ? use_block(t, b, adj) : NULL;
}

void *ht__tlsf_memalign(ht_tlsf_t *t, size_t align, size_t size) {
  if (align == 0 || (align & (align - 1)))
    return NULL;
  if (align <= HT_TLSF_ALIGN)
    return ht__tlsf_malloc(t, size);
  size_t adj = adjust_request(t, size);
  if (!adj || align > t->total || adj > t->total - align)
    return NULL;
  /* Worst-case gap is align + HDR: a 16-byte gap cannot hold a free block,
   * so it is widened by one more alignment step. */
  block_t *b = locate_free(t, adj + align + HDR);
  if (!b)
    return NULL;

  uintptr_t p = (uintptr_t)payload(b);
  size_t gap = (size_t)(((p + align - 1) & ~(uintptr_t)(align - 1)) - p);
  if (gap && gap < HDR + MIN_BLOCK)
    gap += align;
  if (gap) {
    block_t *lead = b;
    b = split(lead, gap - HDR); /* b comes back marked used */
    release(t, lead);
  }
  return use_block(t, b, adj);
}

void ht__tlsf_free(ht_tlsf_t *t, void *p) {
  if (!p)
    return;
  block_t *b = from_payload(p);
  assert(ht__tlsf_contains(t, p) && !bfree(b) && "free of a foreign or freed pointer");
  t->alloc_blocks--;
  t->alloc_bytes -= bsize(b);
  release(t, b);
}

int ht__tlsf_resize_inplace(ht_tlsf_t *t, void *p, size_t size) {
  size_t adj = adjust_request(t, size);
  if (!p || !adj)
    return -1;
  block_t *b = from_payload(p);
  size_t cur = bsize(b);
  if (adj > cur) {
    block_t *next = next_phys(b);
    if (!bfree(next) || cur + HDR + bsize(next) < adj)
      return -1;
    remove_free(t, next);
    b->size = cur + HDR + bsize(next);
    next_phys(b)->prev_phys = b;
  }
  if (bsize(b) >= adj + HDR + MIN_BLOCK)
    release(t, split(b, adj));
  t->alloc_bytes = t->alloc_bytes - cur + bsize(b);
  return 0;
}

size_t ht__tlsf_usable_size(const void *p) {
  return p ? bsize(from_payload(p)) : 0;
}

int ht__tlsf_contains(const ht_tlsf_t *t, const void *p) {
  uintptr_t a = (uintptr_t)p;
  return a >= (uintptr_t)t->first && a < (uintptr_t)t->sentinel + HDR;
}

void ht__tlsf_stats(const ht_tlsf_t *t, ht_tlsf_stats_t *out) {
  out->total_free_bytes = t->free_bytes;
  out->total_allocated_bytes = t->alloc_bytes;
  out->allocated_blocks = t->alloc_blocks;
  out->free_blocks = t->free_blocks;
  out->total_blocks = t->alloc_blocks + t->free_blocks;
  out->largest_free_block = 0;
  if (t->fl_bitmap) {
    /* Head of the highest non-empty list: see locate_free(). */
    unsigned fl = fls_u64(t->fl_bitmap);
    unsigned sl = fls_u64(sl_bitmap(t)[fl]);
    out->largest_free_block = bsize(t->heads[fl * SL_COUNT + sl]);
  }
}

size_t ht__tlsf_total_bytes(const ht_tlsf_t *t) {
  return t->total;
}

void ht__tlsf_walk(const ht_tlsf_t *t, ht_tlsf_walker_t fn, void *user) {
  for (const block_t *b = t->first; b != t->sentinel; b = next_phys(b)) {
    if (fn(payload(b), bsize(b), !bfree(b), user))
      break;
  }
}

/* ---- consistency check -------------------------------------------------- */

typedef struct {
  size_t nfree, nused, free_bytes, used_bytes;
} tally_t;

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

#define FAIL(...) return fail(err, errlen, __VA_ARGS__)

/* 1 if b is a 16-aligned address of a header strictly before the sentinel. */
static int in_area(const ht_tlsf_t *t, const block_t *b) {
  uintptr_t a = (uintptr_t)b;
  return (a & FLAG_MASK) == 0 && a >= (uintptr_t)t->first && a < (uintptr_t)t->sentinel;
}

/*
 * 1 if b, already known to be in the area, is linked into the physical chain
 * (first block, or the successor of its in-area prev_phys). Relies on the
 * chain itself having been verified.
 */
static int on_chain(const ht_tlsf_t *t, const block_t *b) {
  const block_t *pp = b->prev_phys;
  if (!pp)
    return b == t->first;
  return in_area(t, pp) && (uintptr_t)pp < (uintptr_t)b &&
         (uintptr_t)pp + HDR + bsize(pp) == (uintptr_t)b;
}

static int check_chain(const ht_tlsf_t *t, tally_t *w, char *err, size_t errlen) {
  const block_t *b = t->first, *prev = NULL;
  uintptr_t end = (uintptr_t)t->sentinel;
  /* Every b here is 16-aligned and <= end - HDR: sizes are checked below. */
  while ((uintptr_t)b < end) {
    size_t sz = bsize(b), flags = b->size & FLAG_MASK;
    if (flags & ~FLAG_FREE)
      FAIL("block %p: unknown flag bits 0x%zx in size field 0x%zx", payload(b), flags, b->size);
    if (sz < MIN_BLOCK)
      FAIL("block %p: size %zu below the minimum %zu", payload(b), sz, MIN_BLOCK);
    if (sz > end - (uintptr_t)b - HDR)
      FAIL("block %p: size %zu runs past the end of the area (%zu bytes left)", payload(b), sz,
           (size_t)(end - (uintptr_t)b - HDR));
    if (b->prev_phys != prev)
      FAIL("block %p: prev_phys is %p, expected %p", payload(b), (void *)b->prev_phys,
           (void *)prev);
    if (bfree(b)) {
      if (prev && bfree(prev))
        FAIL("block %p: free and adjacent to free block %p (not coalesced)", payload(b),
             payload(prev));
      w->nfree++;
      w->free_bytes += sz;
    } else {
      w->nused++;
      w->used_bytes += sz;
    }
    prev = b;
    b = next_phys(b);
  }
  if (t->sentinel->size != 0)
    FAIL("sentinel %p: size field 0x%zx, expected 0", (void *)t->sentinel, t->sentinel->size);
  if (t->sentinel->prev_phys != prev)
    FAIL("sentinel %p: prev_phys is %p, expected last block %p", (void *)t->sentinel,
         (void *)t->sentinel->prev_phys, (void *)prev);
  return 0;
}

static int check_list(const ht_tlsf_t *t, unsigned fl, unsigned sl, size_t *listed,
                      const tally_t *w, char *err, size_t errlen) {
  const block_t *prev = NULL;
  for (const block_t *b = t->heads[fl * SL_COUNT + sl]; b; b = b->next_free) {
    unsigned bfl, bsl;
    if (++*listed > w->nfree)
      FAIL("free list [%u][%u]: more entries than the %zu free blocks (cycle or stale entry %p)",
           fl, sl, w->nfree, payload(b));
    if (!in_area(t, b) || !on_chain(t, b))
      FAIL("free list [%u][%u]: entry %p (after %p) is not a block of this heap", fl, sl, (void *)b,
           prev ? payload(prev) : NULL);
    if (!bfree(b))
      FAIL("block %p: in free list [%u][%u] but marked used", payload(b), fl, sl);
    mapping_insert(bsize(b), &bfl, &bsl);
    if (bfl != fl || bsl != sl)
      FAIL("block %p: size %zu belongs in free list [%u][%u] but is in [%u][%u]", payload(b),
           bsize(b), bfl, bsl, fl, sl);
    if (b->prev_free != prev)
      FAIL("block %p: prev_free is %p, expected %p", payload(b), (void *)b->prev_free,
           (void *)prev);
    prev = b;
  }
  return 0;
}

static int check_lists(const ht_tlsf_t *t, const tally_t *w, char *err, size_t errlen) {
  const uint32_t *slm = sl_bitmap(t);
  size_t listed = 0;
  if (t->fl_count < 64 && (t->fl_bitmap >> t->fl_count))
    FAIL("free-list bitmap: bits set beyond row %u: 0x%llx", t->fl_count - 1,
         (unsigned long long)t->fl_bitmap);
  for (unsigned fl = 0; fl < t->fl_count; fl++) {
    int row_bit = (int)((t->fl_bitmap >> fl) & 1);
    if (row_bit != (slm[fl] != 0))
      FAIL("free-list bitmap: row bit %u is %d but the row mask is 0x%x", fl, row_bit, slm[fl]);
    if (slm[fl] >> (SL_COUNT - 1) >> 1)
      FAIL("free-list bitmap: row %u mask 0x%x has bits beyond list %d", fl, slm[fl], SL_COUNT - 1);
    for (unsigned sl = 0; sl < SL_COUNT; sl++) {
      int bit = (int)((slm[fl] >> sl) & 1);
      const block_t *h = t->heads[fl * SL_COUNT + sl];
      if (bit != (h != NULL))
        FAIL("free list [%u][%u]: bitmap bit is %d but the list is %s", fl, sl, bit,
             h ? "non-empty" : "empty");
      if (check_list(t, fl, sl, &listed, w, err, errlen))
        return -1;
    }
  }
  if (listed != w->nfree)
    FAIL("%zu free blocks in the physical chain but %zu in the free lists", w->nfree, listed);
  return 0;
}

static int check_counters(const ht_tlsf_t *t, const tally_t *w, char *err, size_t errlen) {
  if (t->free_blocks != w->nfree || t->free_bytes != w->free_bytes)
    FAIL("stats: counters say %zu free blocks / %zu bytes, walk found %zu / %zu", t->free_blocks,
         t->free_bytes, w->nfree, w->free_bytes);
  if (t->alloc_blocks != w->nused || t->alloc_bytes != w->used_bytes)
    FAIL("stats: counters say %zu used blocks / %zu bytes, walk found %zu / %zu", t->alloc_blocks,
         t->alloc_bytes, w->nused, w->used_bytes);
  return 0;
}

int ht__tlsf_check(const ht_tlsf_t *t, char *err, size_t errlen) {
  if (!t)
    FAIL("control structure is NULL");
  if (t->magic != TLSF_MAGIC || t->fl_count == 0 || t->fl_count > FL_COUNT_MAX)
    FAIL("control structure %p: bad magic 0x%x or row count %u", (const void *)t, t->magic,
         t->fl_count);
  uintptr_t first = (uintptr_t)t + ctrl_size(t->fl_count);
  if ((uintptr_t)t->first != first || (uintptr_t)t->sentinel < first + HDR + MIN_BLOCK ||
      ((uintptr_t)t->sentinel & FLAG_MASK) || t->total != (uintptr_t)t->sentinel - first - HDR)
    FAIL("control structure %p: area bounds corrupted (first %p, sentinel %p, total %zu)",
         (const void *)t, (void *)t->first, (void *)t->sentinel, t->total);

  tally_t w = {0, 0, 0, 0};
  if (check_chain(t, &w, err, errlen) || check_lists(t, &w, err, errlen) ||
      check_counters(t, &w, err, errlen))
    return -1;
  if (err && errlen)
    err[0] = '\0';
  return 0;
}
