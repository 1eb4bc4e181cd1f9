/* sysheap.c - traced allocation from the system heap (glibc malloc).
 *
 * The system heap is heap 0 with caps HT_SYSTEM_HEAP_CAPS. Each entry
 * point serves the request from libc and commits one transaction. The
 * event of an allocation is taken after libc returns and the event of a
 * free before the block goes back, so that when another thread gets the
 * same address its event is later in time than the free that released it.
 * For the same reason a realloc that must move is done as allocate, record,
 * copy, free.
 *
 * The plain entry points (ht_malloc & co.) also take blocks of the caps
 * heaps: ht_free and ht_realloc find a region block by its address, and
 * after ht_caps_malloc_extmem_enable() plain allocations are routed
 * through the caps allocator (caps.c). A typed glibc block (HT_NEW) has its
 * type kept in the typed set (typed.c), since it has no header.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"

size_t ht__sys_usable(void *p) {
  return malloc_usable_size(p);
}

/* An allocated glibc block enters the typed set if c is typed. Returns the
 * type the block is accounted under (0 when the set is full). */
static uint16_t adopt_type(ht_call_t *c, const void *p, uint16_t type) {
  if (type && ht__typed_put(p, ht__call_site(c), type) != 0)
    return 0;
  return type;
}

void *ht__sys_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, int zero, uint32_t caps) {
  void *p = NULL;
  if (align > 16) {
    if (posix_memalign(&p, align, size) != 0)
      p = NULL;
    else if (zero)
      memset(p, 0, size);
  } else {
    p = zero ? calloc(1, size) : malloc(size);
  }
  if (!p)
    return NULL;
  size_t usable = malloc_usable_size(p);
  uint16_t type = adopt_type(c, p, c->type_idx);
  ht_txn_t x = {op, 0, caps, p, NULL, size, usable, 0, align};
  ht__commit(c, &x, type, (int64_t)usable, 1);
  return p;
}

void ht__sys_free(ht_call_t *c, void *ptr, uint32_t caps) {
  size_t usable = malloc_usable_size(ptr);
  uint16_t type = ht__typed_take(ptr);
  ht_txn_t x = {HT_OP_FREE, 0, caps, ptr, NULL, usable, usable, 0, 0};
  ht__commit(c, &x, type, -(int64_t)usable, -1);
  free(ptr);
}

void *ht__sys_realloc(ht_call_t *c, void *ptr, size_t size, uint32_t caps) {
  size_t old_usable = malloc_usable_size(ptr);
  /* Out of the typed set first: once libc has the old address back,
   * another thread may enter it again. */
  uint16_t type = ht__typed_take(ptr);
  void *np;
  if (size <= old_usable) {
    /* glibc shrinks in place. Only an mmap'd chunk may move here, and
     * its old address goes back to the kernel, not to another malloc, so
     * the free-before-reuse order of events still holds. */
    np = realloc(ptr, size);
  } else {
    np = malloc(size);
    if (np)
      memcpy(np, ptr, old_usable);
  }
  if (!np) {
    adopt_type(c, ptr, type);
    return NULL;
  }
  uint16_t kept = adopt_type(c, np, type);
  if (type && !kept) /* the set is full: the old block leaves the type's numbers */
    ht__type_account(type, -(int64_t)old_usable, -1, 0);
  size_t usable = malloc_usable_size(np);
  ht_txn_t x = {HT_OP_REALLOC, 0, caps, np, ptr, size, usable, old_usable, 0};
  ht__commit(c, &x, kept, (int64_t)usable - (int64_t)old_usable, 0);
  if (np != ptr && size > old_usable)
    free(ptr);
  return np;
}

void *ht__sys_take_over(ht_call_t *c, const void *old, size_t copy, size_t old_usable,
                        uint16_t type, size_t size, uint32_t caps) {
  void *np = malloc(size);
  if (!np)
    return NULL;
  memcpy(np, old, copy < size ? copy : size);
  uint16_t kept = adopt_type(c, np, type);
  if (type && !kept)
    ht__type_account(type, -(int64_t)old_usable, -1, 0);
  size_t usable = malloc_usable_size(np);
  ht_txn_t x = {HT_OP_REALLOC, 0, caps, np, old, size, usable, old_usable, 0};
  ht__commit(c, &x, kept, (int64_t)usable - (int64_t)old_usable, 0);
  return np;
}

/* ======================================================================
 * Public entry points
 * ==================================================================== */

/* A plain allocation: the system heap, or the extmem routing when on. */
static void *plain_alloc(ht_call_t *c, uint32_t op, size_t size, int zero) {
  void *p;
  if (HT_UNLIKELY(ht__extmem_on()))
    p = ht__default_alloc(c, op, size, zero);
  else if (!(p = ht__sys_alloc(c, op, size, 0, zero, HT_SYSTEM_HEAP_CAPS)))
    ht__fail(c, op, NULL, size, HT_SYSTEM_HEAP_CAPS, 0);
  ht__deliver();
  return p;
}

void *ht__malloc(size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_malloc", file, line, func, NULL);
  return plain_alloc(&c, HT_OP_MALLOC, size, 0);
}

void *ht__calloc(size_t n, size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_calloc", file, line, func, NULL);
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    ht__fail(&c, HT_OP_CALLOC, NULL, SIZE_MAX, HT_SYSTEM_HEAP_CAPS, 0);
    return NULL;
  }
  return plain_alloc(&c, HT_OP_CALLOC, total, 1);
}

/* Frees a block of any heap. */
static void free_block(ht_call_t *c, void *ptr) {
  ht_heap_t *h = ht__nheaps() ? ht__heap_of(ptr) : NULL;
  if (h)
    ht__heap_free_block(c, h, ptr);
  else
    ht__sys_free(c, ptr, HT_SYSTEM_HEAP_CAPS);
}

void ht__free(void *ptr, const char *file, int line, const char *func) {
  if (!ptr)
    return;
  ht_call_t c;
  ht__call_init(&c, "ht_free", file, line, func, NULL);
  free_block(&c, ptr);
  ht__deliver();
}

/* A realloc of a non-NULL block to a non-zero size: a region block keeps
 * the caps it was allocated with (it may still move to another heap that
 * has them); a glibc block stays with glibc. */
static void *plain_realloc(ht_call_t *c, void *ptr, size_t size) {
  if (HT_UNLIKELY(ht__extmem_on()))
    return ht__default_realloc(c, ptr, size);
  ht_heap_t *h = ht__nheaps() ? ht__heap_of(ptr) : NULL;
  uint32_t caps = h ? ht__blk(ptr)->caps : HT_SYSTEM_HEAP_CAPS;
  void *np;
  if (h) {
    np = ht__caps_realloc_core(c, ptr, size, caps);
  } else {
    ht__call_set_type(c, ht__typed_peek(ptr));
    np = ht__sys_realloc(c, ptr, size, caps);
  }
  if (!np)
    ht__fail(c, HT_OP_REALLOC, ptr, size, caps, 0);
  return np;
}

void *ht__realloc(void *ptr, size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_realloc", file, line, func, NULL);
  if (!ptr)
    return plain_alloc(&c, HT_OP_MALLOC, size, 0);
  void *np = NULL;
  if (size == 0)
    free_block(&c, ptr);
  else
    np = plain_realloc(&c, ptr, size);
  ht__deliver();
  return np;
}
