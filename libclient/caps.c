/* caps.c - allocation in capability heaps (ESP-IDF heap_caps_*).
 *
 * A request picks heaps by ESP-IDF's rule (caps.h, heaptrace.h): priority
 * level 0 across all regions, then 1, then 2, and the system heap last for
 * requests it can serve. In a region, the block is carved and sealed
 * (poison.c) and the transaction committed while the heap's lock is held,
 * so that the order of a heap's events is the order of its operations; the
 * daemon rebuilds each heap's free space from them.
 *
 * realloc follows ESP-IDF too: when the block's heap has the new caps, it
 * grows or shrinks in place if TLSF can, else moves inside that heap under
 * one lock hold; otherwise, or when that heap is full, it moves to any heap
 * with the caps: allocate there, copy, commit the one REALLOC event, and
 * only then give the old block back (so that nobody can be handed the old
 * address before the event that released it).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"

_Atomic size_t ht__extmem_limit = HT_CAPS_EXTMEM_DISABLED;

/* A block that a realloc moves to another place. */
typedef struct {
  void *ptr;
  ht_heap_t *heap; /* NULL: the system heap */
  size_t copy;     /* bytes to copy: requested size, or glibc's usable size */
  size_t usable;
  uint16_t type;
} move_t;

/* ======================================================================
 * Inside one heap (h->lock held)
 * ==================================================================== */

/* Carves and seals a block of `size` bytes whose pointer is aligned to
 * align (0: 16). Returns the pointer and its usable bytes, or NULL. */
static void *carve(ht_heap_t *h, ht_call_t *c, size_t size, size_t align, uint32_t caps,
                   uint16_t type, size_t *usable) {
  size_t lead = align > HT_BLK_BYTES ? align : HT_BLK_BYTES;
  /* Both bounds keep size + lead + tail from overflowing. */
  if (size > h->total || lead > h->total)
    return NULL;
  size_t need = size + lead + HT_BLK_TAIL;
  void *payload = align > HT_TLSF_ALIGN ? ht__tlsf_memalign(h->tlsf, align, need)
                                        : ht__tlsf_malloc(h->tlsf, need);
  if (!payload)
    return NULL;
  char *ptr = (char *)payload + lead;
  ht__blk_init(ptr, size, ht__call_site(c), caps, type, (unsigned)__builtin_ctzll(lead));
  *usable = ht__tlsf_usable_size(payload) - lead - HT_BLK_TAIL;
  h->used += *usable;
  ht__heap_low_water(h);
  return ptr;
}

/* Gives the block at ptr back to TLSF. */
static void give_back(ht_heap_t *h, void *ptr) {
  size_t lead = ht__blk_lead(ht__blk(ptr));
  h->used -= ht__blk_usable(ptr);
  ht__blk_retire(ptr);
  ht__tlsf_free(h->tlsf, (char *)ptr - lead);
}

/* The align field of an event about the block at ptr: what the daemon
 * needs to find the block's start (docs/allocator.md). */
static uint64_t event_align(void *ptr, size_t asked) {
  size_t lead = ht__blk_lead(ht__blk(ptr));
  return lead > HT_BLK_BYTES ? lead : asked;
}

/* Carves a block, fills it (zero or the moved block's bytes) and commits
 * the transaction: op, or REALLOC from mv. Returns the pointer or NULL. */
static void *alloc_in(ht_heap_t *h, ht_call_t *c, uint32_t op, size_t size, size_t align,
                      uint32_t caps, int zero, const move_t *mv) {
  size_t usable;
  uint16_t type = mv ? mv->type : c->type_idx;
  void *p = carve(h, c, size, align, caps, type, &usable);
  if (!p)
    return NULL;
  if (zero)
    memset(p, 0, size);
  if (mv)
    memcpy(p, mv->ptr, mv->copy < size ? mv->copy : size);
  ht_txn_t x = {mv ? HT_OP_REALLOC : op, h->id, caps,   p,
                mv ? mv->ptr : NULL,     size,  usable, mv ? mv->usable : 0,
                event_align(p, align)};
  ht__commit(c, &x, type, mv ? (int64_t)usable - (int64_t)mv->usable : (int64_t)usable, mv ? 0 : 1);
  return p;
}

/* Resizes the block at ptr in place, or moves it inside h. Returns the
 * block or NULL (then unchanged). A block with a lead above 32 (aligned
 * beyond 32) always moves to a normal block: only ALIGNED events carry the
 * alignment on the wire, and the daemon needs the lead of every block a
 * REALLOC event creates (docs/allocator.md); C's realloc does not keep an
 * alignment either. */
static void *realloc_here(ht_heap_t *h, ht_call_t *c, void *ptr, size_t size, uint32_t caps) {
  ht_blk_t *b = ht__blk(ptr);
  size_t lead = ht__blk_lead(b);
  size_t old_usable = ht__blk_usable(ptr);
  if (size <= h->total && lead == HT_BLK_BYTES &&
      ht__tlsf_resize_inplace(h->tlsf, (char *)ptr - lead, lead + size + HT_BLK_TAIL) == 0) {
    size_t usable = ht__blk_usable(ptr);
    h->used = h->used - old_usable + usable;
    ht__heap_low_water(h);
    ht__blk_resize(ptr, size, ht__call_site(c), caps);
    ht_txn_t x = {HT_OP_REALLOC, h->id, caps, ptr, ptr, size, usable, old_usable, 0};
    ht__commit(c, &x, b->type, (int64_t)usable - (int64_t)old_usable, 0);
    return ptr;
  }
  move_t mv = {ptr, h, b->size, old_usable, b->type};
  void *np = alloc_in(h, c, HT_OP_REALLOC, size, 0, caps, 0, &mv);
  if (np)
    give_back(h, ptr);
  return np;
}

/* Checks the block at ptr before free or realloc touches it. A damaged
 * block is reported; returns 0 when it may still be handled (canaries hit
 * but header and allocator structure intact), -1 when it must be left
 * alone. */
static int vet(ht_heap_t *h, void *ptr, const char *who) {
  int bad = ht__blk_verify(ptr);
  if (HT_LIKELY(bad == HT_BLK_OK))
    return 0;
  ht__blk_report(h, ptr, bad, who);
  if (bad & HT_BLK_BAD_HEADER)
    return -1;
  /* An overrun may have reached the next block's TLSF header. */
  char msg[256];
  if (ht__tlsf_check(h->tlsf, msg, sizeof msg) != 0) {
    ht__warn("heaptrace: heap %u '%s' is damaged (%s); block %p is left in place", h->id, h->name,
             msg, ptr);
    return -1;
  }
  return 0;
}

/* ======================================================================
 * Across heaps
 * ==================================================================== */

/* Serves a request from the first heap that can: by priority level across
 * the regions, then the system heap. mv: a realloc moving a block. */
static void *alloc_any(ht_call_t *c, uint32_t op, size_t size, size_t align, uint32_t caps,
                       int zero, const move_t *mv) {
  if (caps & HT_CAP_INVALID)
    return NULL;
  unsigned n = ht__nheaps();
  uint64_t tried = 0;
  for (int prio = 0; prio < HT_CAPS_PRIOS; prio++) {
    for (unsigned i = 0; i < n; i++) {
      ht_heap_t *h = &ht__heaps[i];
      if (((tried >> i) & 1) || !(h->caps[prio] & caps) || !ht__heap_has(h, caps))
        continue;
      tried |= (uint64_t)1 << i;
      pthread_mutex_lock(&h->lock);
      void *p = alloc_in(h, c, op, size, align, caps, zero, mv);
      pthread_mutex_unlock(&h->lock);
      if (p)
        return p;
    }
  }
  if (caps & ~HT_SYSTEM_HEAP_CAPS)
    return NULL;
  if (mv)
    return ht__sys_take_over(c, mv->ptr, mv->copy, mv->usable, mv->type, size, caps);
  return ht__sys_alloc(c, op, size, align, zero, caps);
}

void *ht__caps_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, uint32_t caps,
                     int zero) {
  return alloc_any(c, op, size, align, caps, zero, NULL);
}

/* Gives back the old block of a completed move (its event is committed). */
static void drop_moved(const move_t *mv) {
  if (mv->heap) {
    pthread_mutex_lock(&mv->heap->lock);
    give_back(mv->heap, mv->ptr);
    pthread_mutex_unlock(&mv->heap->lock);
  } else {
    if (mv->type)
      ht__typed_take(mv->ptr);
    free(mv->ptr);
  }
}

/* realloc of a region block: in its heap when it has caps; otherwise *mv
 * describes it for a move. Returns the block, NULL to move, or sets *stop
 * when the block is too damaged to touch. */
static void *realloc_region(ht_heap_t *h, ht_call_t *c, void *ptr, size_t size, uint32_t caps,
                            move_t *mv, int *stop) {
  void *np = NULL;
  pthread_mutex_lock(&h->lock);
  if (vet(h, ptr, "realloc") != 0) {
    *stop = 1;
  } else {
    ht_blk_t *b = ht__blk(ptr);
    ht__call_set_type(c, b->type);
    if (ht__heap_has(h, caps) && !(caps & HT_CAP_INVALID))
      np = realloc_here(h, c, ptr, size, caps);
    if (!np) /* untouched: describe it for a move */
      *mv = (move_t){ptr, h, b->size, ht__blk_usable(ptr), b->type};
  }
  pthread_mutex_unlock(&h->lock);
  return np;
}

void *ht__caps_realloc_core(ht_call_t *c, void *ptr, size_t size, uint32_t caps) {
  ht_heap_t *h = ht__nheaps() ? ht__heap_of(ptr) : NULL;
  move_t mv;
  if (h) {
    int stop = 0;
    void *np = realloc_region(h, c, ptr, size, caps, &mv, &stop);
    if (np || stop)
      return np;
  } else {
    uint16_t type = ht__typed_peek(ptr);
    ht__call_set_type(c, type);
    if (!(caps & ~HT_SYSTEM_HEAP_CAPS)) {
      void *np = ht__sys_realloc(c, ptr, size, caps);
      if (np)
        return np;
    }
    size_t usable = ht__sys_usable(ptr);
    mv = (move_t){ptr, NULL, usable, usable, type};
  }
  void *np = alloc_any(c, HT_OP_REALLOC, size, 0, caps, 0, &mv);
  if (np)
    drop_moved(&mv);
  return np;
}

/* Records a free that was refused because the block is damaged: it stays
 * allocated, and the daemon sees a failed free. */
static void refuse_free(ht_call_t *c, void *ptr) {
  ht__acct_failure();
  if (ht__tracing_on()) {
    ht_event_t ev = {0};
    ev.op = HT_OP_FAILED;
    ev.failed_op = HT_OP_FREE;
    ev.ptr = (uintptr_t)ptr; /* the block whose free was refused */
    ht__trace(c, &ev, 0, 0);
  }
}

void ht__heap_free_block(ht_call_t *c, ht_heap_t *h, void *ptr) {
  pthread_mutex_lock(&h->lock);
  if (vet(h, ptr, "free") != 0) {
    refuse_free(c, ptr);
  } else {
    ht_blk_t *b = ht__blk(ptr);
    size_t usable = ht__blk_usable(ptr);
    ht_txn_t x = {HT_OP_FREE, h->id, b->caps, ptr, NULL, usable, usable, 0, event_align(ptr, 0)};
    ht__commit(c, &x, b->type, -(int64_t)usable, -1);
    give_back(h, ptr);
  }
  pthread_mutex_unlock(&h->lock);
}

/* ======================================================================
 * Plain allocations routed by ht_caps_malloc_extmem_enable()
 * ==================================================================== */

void ht_caps_malloc_extmem_enable(size_t limit) {
  atomic_store_explicit(&ht__extmem_limit, limit, memory_order_relaxed);
}

/* The caps a plain request of size tries first. */
static uint32_t default_caps(size_t size) {
  size_t limit = atomic_load_explicit(&ht__extmem_limit, memory_order_relaxed);
  return size < limit ? HT_CAP_DEFAULT | HT_CAP_INTERNAL : HT_CAP_DEFAULT | HT_CAP_SPIRAM;
}

void *ht__default_alloc(ht_call_t *c, uint32_t op, size_t size, int zero) {
  void *p = alloc_any(c, op, size, 0, default_caps(size), zero, NULL);
  if (!p)
    p = alloc_any(c, op, size, 0, HT_CAP_DEFAULT, zero, NULL);
  if (!p)
    ht__fail(c, op, NULL, size, HT_CAP_DEFAULT, 0);
  return p;
}

void *ht__default_realloc(ht_call_t *c, void *ptr, size_t size) {
  void *p = ht__caps_realloc_core(c, ptr, size, default_caps(size));
  if (!p)
    p = ht__caps_realloc_core(c, ptr, size, HT_CAP_DEFAULT);
  if (!p)
    ht__fail(c, HT_OP_REALLOC, ptr, size, HT_CAP_DEFAULT, 0);
  return p;
}

/* ======================================================================
 * Public entry points
 * ==================================================================== */

/* malloc/calloc/aligned family: serve, report a failure, deliver. */
static void *serve(ht_call_t *c, uint32_t op, size_t size, size_t align, uint32_t caps, int zero) {
  void *p = alloc_any(c, op, size, align, caps, zero, NULL);
  if (!p)
    ht__fail(c, op, NULL, size, caps, align);
  ht__deliver();
  return p;
}

/* A request that cannot be valid (overflow, bad alignment): reported. */
static void *refuse(ht_call_t *c, uint32_t op, size_t size, uint32_t caps, size_t align) {
  ht__fail(c, op, NULL, size, caps, align);
  return NULL;
}

/* Each public entry point below comes in the two forms sysheap.c
 * describes: file, line and function, or the macros' static call site
 * (_at), which looks the site up by its address. */

static void *caps_malloc(ht_call_t *c, size_t size, uint32_t caps) {
  return serve(c, HT_OP_MALLOC, size, 0, caps, 0);
}

void *ht__caps_malloc(size_t size, uint32_t caps, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_malloc", file, line, func, NULL);
  return caps_malloc(&c, size, caps);
}

void *ht__caps_malloc_at(size_t size, uint32_t caps, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_malloc", where);
  return caps_malloc(&c, size, caps);
}

static void *caps_calloc(ht_call_t *c, size_t n, size_t size, uint32_t caps) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total))
    return refuse(c, HT_OP_CALLOC, SIZE_MAX, caps, 0);
  return serve(c, HT_OP_CALLOC, total, 0, caps, 1);
}

void *ht__caps_calloc(size_t n, size_t size, uint32_t caps, const char *file, int line,
                      const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_calloc", file, line, func, NULL);
  return caps_calloc(&c, n, size, caps);
}

void *ht__caps_calloc_at(size_t n, size_t size, uint32_t caps, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_calloc", where);
  return caps_calloc(&c, n, size, caps);
}

static void *caps_aligned_alloc(ht_call_t *c, size_t alignment, size_t size, uint32_t caps) {
  if (alignment == 0 || (alignment & (alignment - 1)))
    return refuse(c, HT_OP_ALIGNED, size, caps, alignment);
  return serve(c, HT_OP_ALIGNED, size, alignment, caps, 0);
}

void *ht__caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps, const char *file,
                             int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_aligned_alloc", file, line, func, NULL);
  return caps_aligned_alloc(&c, alignment, size, caps);
}

void *ht__caps_aligned_alloc_at(size_t alignment, size_t size, uint32_t caps,
                                const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_aligned_alloc", where);
  return caps_aligned_alloc(&c, alignment, size, caps);
}

static void *caps_aligned_calloc(ht_call_t *c, size_t alignment, size_t n, size_t size,
                                 uint32_t caps) {
  size_t total = SIZE_MAX;
  if (alignment == 0 || (alignment & (alignment - 1)) || __builtin_mul_overflow(n, size, &total))
    return refuse(c, HT_OP_ALIGNED, total, caps, alignment);
  return serve(c, HT_OP_ALIGNED, total, alignment, caps, 1);
}

void *ht__caps_aligned_calloc(size_t alignment, size_t n, size_t size, uint32_t caps,
                              const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_aligned_calloc", file, line, func, NULL);
  return caps_aligned_calloc(&c, alignment, n, size, caps);
}

void *ht__caps_aligned_calloc_at(size_t alignment, size_t n, size_t size, uint32_t caps,
                                 const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_aligned_calloc", where);
  return caps_aligned_calloc(&c, alignment, n, size, caps);
}

void ht__caps_free(void *ptr, const char *file, int line, const char *func) {
  if (!ptr)
    return;
  ht_call_t c;
  ht__call_init(&c, "ht_caps_free", file, line, func, NULL);
  ht__free_any(&c, ptr);
  ht__deliver();
}

void ht__caps_free_at(void *ptr, const ht_where_t *where) {
  if (!ptr)
    return;
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_free", where);
  ht__free_any(&c, ptr);
  ht__deliver();
}

/* realloc with caps; one event, one report on failure. */
static void *realloc_caps(ht_call_t *c, void *ptr, size_t size, uint32_t caps) {
  if (!ptr)
    return serve(c, HT_OP_MALLOC, size, 0, caps, 0);
  void *np = NULL;
  if (size == 0)
    ht__free_any(c, ptr);
  else if (!(np = ht__caps_realloc_core(c, ptr, size, caps)))
    ht__fail(c, HT_OP_REALLOC, ptr, size, caps, 0);
  ht__deliver();
  return np;
}

void *ht__caps_realloc(void *ptr, size_t size, uint32_t caps, const char *file, int line,
                       const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_realloc", file, line, func, NULL);
  return realloc_caps(&c, ptr, size, caps);
}

void *ht__caps_realloc_at(void *ptr, size_t size, uint32_t caps, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_caps_realloc", where);
  return realloc_caps(&c, ptr, size, caps);
}

/* ---- prefer variants: each caps in turn, one report with the last ---- */

static void *alloc_prefer(ht_call_t *c, uint32_t op, size_t size, int zero, size_t num,
                          va_list ap) {
  uint32_t caps = HT_CAP_DEFAULT;
  void *p = NULL;
  while (num-- > 0 && !p) {
    caps = va_arg(ap, uint32_t);
    p = alloc_any(c, op, size, 0, caps, zero, NULL);
  }
  if (!p)
    ht__fail(c, op, NULL, size, caps, 0);
  ht__deliver();
  return p;
}

void *ht__caps_malloc_prefer(const char *file, int line, const char *func, size_t size, size_t num,
                             ...) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_malloc_prefer", file, line, func, NULL);
  va_list ap;
  va_start(ap, num);
  void *p = alloc_prefer(&c, HT_OP_MALLOC, size, 0, num, ap);
  va_end(ap);
  return p;
}

void *ht__caps_calloc_prefer(const char *file, int line, const char *func, size_t n, size_t size,
                             size_t num, ...) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_calloc_prefer", file, line, func, NULL);
  size_t total;
  if (__builtin_mul_overflow(n, size, &total))
    return refuse(&c, HT_OP_CALLOC, SIZE_MAX, HT_CAP_DEFAULT, 0);
  va_list ap;
  va_start(ap, num);
  void *p = alloc_prefer(&c, HT_OP_CALLOC, total, 1, num, ap);
  va_end(ap);
  return p;
}

void *ht__caps_realloc_prefer(const char *file, int line, const char *func, void *ptr, size_t size,
                              size_t num, ...) {
  ht_call_t c;
  ht__call_init(&c, "ht_caps_realloc_prefer", file, line, func, NULL);
  va_list ap;
  va_start(ap, num);
  void *np = NULL;
  if (!ptr) {
    np = alloc_prefer(&c, HT_OP_MALLOC, size, 0, num, ap);
  } else if (size == 0) {
    ht__free_any(&c, ptr);
    ht__deliver();
  } else {
    uint32_t caps = HT_CAP_DEFAULT;
    while (num-- > 0 && !np) {
      caps = va_arg(ap, uint32_t);
      np = ht__caps_realloc_core(&c, ptr, size, caps);
    }
    if (!np)
      ht__fail(&c, HT_OP_REALLOC, ptr, size, caps, 0);
    ht__deliver();
  }
  va_end(ap);
  return np;
}

/* ---- one given heap (multi_heap) ---- */

void *ht__heap_malloc(ht_heap_handle_t heap, size_t size, size_t alignment, const char *file,
                      int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_heap_malloc", file, line, func, NULL);
  uint32_t op = alignment ? HT_OP_ALIGNED : HT_OP_MALLOC;
  void *p = NULL;
  if (heap && !(alignment & (alignment - 1))) {
    pthread_mutex_lock(&heap->lock);
    p = alloc_in(heap, &c, op, size, alignment, 0, 0, NULL);
    pthread_mutex_unlock(&heap->lock);
  }
  if (!p)
    ht__fail(&c, op, NULL, size, 0, alignment);
  ht__deliver();
  return p;
}

void *ht__heap_realloc(ht_heap_handle_t heap, void *p, size_t size, const char *file, int line,
                       const char *func) {
  if (!p)
    return ht__heap_malloc(heap, size, 0, file, line, func);
  ht_call_t c;
  ht__call_init(&c, "ht_heap_realloc", file, line, func, NULL);
  void *np = NULL;
  if (size == 0) {
    ht__free_any(&c, p);
  } else if (heap && ht__heap_of(p) == heap) {
    pthread_mutex_lock(&heap->lock);
    if (vet(heap, p, "realloc") == 0) {
      ht__call_set_type(&c, ht__blk(p)->type);
      np = realloc_here(heap, &c, p, size, ht__blk(p)->caps);
    }
    pthread_mutex_unlock(&heap->lock);
    if (!np)
      ht__fail(&c, HT_OP_REALLOC, p, size, 0, 0);
  } else {
    ht__fail(&c, HT_OP_REALLOC, p, size, 0, 0);
  }
  ht__deliver();
  return np;
}
