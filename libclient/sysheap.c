/* sysheap.c - traced allocation from the system heap (glibc malloc).
 *
 * The system heap is heap 0 with caps HT_SYSTEM_HEAP_CAPS. Each entry
 * point serves the request from libc and records one event. The event of
 * an allocation is taken after libc returns and the event of a free before
 * the block goes back, so that when another thread gets the same address
 * its event is later in time than the free that released it. For the same
 * reason a realloc that must move is done as allocate, record, copy, free.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* Fills the fields every event has and appends it to the thread's stream.
 * delta_bytes/delta_blocks/new_bytes update the stream's running totals. */
static void record(ht_stream_t *s, ht_event_t *ev, const char *file, int line,
                   const char *func, int64_t delta_bytes, int64_t delta_blocks,
                   uint64_t new_bytes) {
  ev->time_ns = ht__now_ns();
  ev->site = ht__site_id(s, file, line, func, NULL);
  ev->heap = 0;
  s->cur_bytes += delta_bytes;
  s->cur_blocks += delta_blocks;
  s->total_bytes += new_bytes;
  ev->cur_bytes = s->cur_bytes;
  ev->cur_blocks = s->cur_blocks;
  ev->total_bytes = s->total_bytes;
  ht__stream_append(s, ev);
}

/* The stream to record into, or NULL when tracing is off. */
static inline ht_stream_t *tracer(void) {
  ht_stream_t *s = ht__stream_get();
  if (HT_UNLIKELY(!s || !atomic_load_explicit(&ht__tracing, memory_order_relaxed)))
    return NULL;
  return s;
}

static void record_failure(ht_stream_t *s, uint32_t op, uint64_t old_ptr, size_t size,
                           const char *file, int line, const char *func) {
  ht_event_t ev = {0};
  ev.op = HT_OP_FAILED;
  ev.failed_op = op;
  ev.old_ptr = old_ptr;
  ev.size = size;
  ev.caps = HT_SYSTEM_HEAP_CAPS;
  record(s, &ev, file, line, func, 0, 0, 0);
}

static void *alloc_common(uint32_t op, void *p, size_t size, const char *file, int line,
                          const char *func) {
  ht_stream_t *s = tracer();
  if (!s)
    return p;
  if (!p) {
    record_failure(s, op, 0, size, file, line, func);
    return NULL;
  }
  size_t usable = malloc_usable_size(p);
  ht_event_t ev = {0};
  ev.op = op;
  ev.caps = HT_SYSTEM_HEAP_CAPS;
  ev.ptr = (uintptr_t)p;
  ev.size = size;
  ev.usable = usable;
  record(s, &ev, file, line, func, (int64_t)usable, 1, usable);
  return p;
}

void *ht__malloc(size_t size, const char *file, int line, const char *func) {
  return alloc_common(HT_OP_MALLOC, malloc(size), size, file, line, func);
}

void *ht__calloc(size_t n, size_t size, const char *file, int line, const char *func) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total))
    total = SIZE_MAX;
  return alloc_common(HT_OP_CALLOC, calloc(n, size), total, file, line, func);
}

void ht__free(void *ptr, const char *file, int line, const char *func) {
  if (!ptr)
    return;
  ht_stream_t *s = tracer();
  if (s) {
    size_t usable = malloc_usable_size(ptr);
    ht_event_t ev = {0};
    ev.op = HT_OP_FREE;
    ev.caps = HT_SYSTEM_HEAP_CAPS;
    ev.ptr = (uintptr_t)ptr;
    ev.size = usable;
    ev.usable = usable;
    record(s, &ev, file, line, func, -(int64_t)usable, -1, 0);
  }
  free(ptr);
}

void *ht__realloc(void *ptr, size_t size, const char *file, int line, const char *func) {
  if (!ptr)
    return alloc_common(HT_OP_MALLOC, malloc(size), size, file, line, func);
  if (size == 0) {
    ht__free(ptr, file, line, func);
    return NULL;
  }
  ht_stream_t *s = tracer();
  if (!s)
    return realloc(ptr, size);
  size_t old_usable = malloc_usable_size(ptr);
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
    record_failure(s, HT_OP_REALLOC, (uintptr_t)ptr, size, file, line, func);
    return NULL;
  }
  size_t usable = malloc_usable_size(np);
  ht_event_t ev = {0};
  ev.op = HT_OP_REALLOC;
  ev.caps = HT_SYSTEM_HEAP_CAPS;
  ev.ptr = (uintptr_t)np;
  ev.old_ptr = (uintptr_t)ptr;
  ev.size = size;
  ev.usable = usable;
  ev.old_usable = old_usable;
  record(s, &ev, file, line, func, (int64_t)usable - (int64_t)old_usable, 0,
         usable > old_usable ? usable - old_usable : 0);
  if (np != ptr && size > old_usable)
    free(ptr);
  return np;
}
