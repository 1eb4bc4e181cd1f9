/* registry.c - the table of capability heaps.
 *
 * A static table of HT_HEAP_MAX entries: registering never calls malloc,
 * the TLSF control structure lives inside the region itself. Entries are
 * only ever appended: a writer fills the next entry under reg_lock and then
 * publishes the new count with a release store, so readers (every free has
 * to find the heap of its pointer) scan [0, count) without a lock.
 *
 * A new heap is announced to heaptraced with a HEAP record. The transport
 * is started first: tracing starts lazily on first use, and a region added
 * before the first allocation must still reach the daemon before the events
 * that name it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "caps.h"

ht_heap_t ht__heaps[HT_HEAP_MAX];
_Atomic unsigned ht__heap_count;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* fork: every lock, in the lock order of caps.h, then released again. */
static void fork_prepare(void) {
  pthread_mutex_lock(&reg_lock);
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++)
    pthread_mutex_lock(&ht__heaps[i].lock);
  ht__acct_sites_hold(1);
  ht__types_hold(1);
  ht__acct_list_hold(1);
}

static void fork_release(void) {
  ht__acct_list_hold(0);
  ht__types_hold(0);
  ht__acct_sites_hold(0);
  unsigned n = ht__nheaps();
  for (unsigned i = n; i-- > 0;)
    pthread_mutex_unlock(&ht__heaps[i].lock);
  pthread_mutex_unlock(&reg_lock);
}

static void install_fork_handlers(void) {
  pthread_atfork(fork_prepare, fork_release, fork_release);
}

void ht__fork_guard(void) {
  pthread_once(&fork_once, install_fork_handlers);
}

ht_heap_t *ht__heap_of(const void *p) {
  unsigned n = ht__nheaps();
  uintptr_t a = (uintptr_t)p;
  for (unsigned i = 0; i < n; i++) {
    ht_heap_t *h = &ht__heaps[i];
    if (a >= h->area && a < h->area_end)
      return h;
  }
  return NULL;
}

size_t ht__heap_free_locked(const ht_heap_t *h) {
  ht_tlsf_stats_t st;
  ht__tlsf_stats(h->tlsf, &st);
  return st.total_free_bytes;
}

void ht__heap_low_water(ht_heap_t *h) {
  size_t f = ht__heap_free_locked(h);
  if (f < h->min_free)
    h->min_free = f;
  if (f < h->win_min_free && atomic_load_explicit(&ht__window_open, memory_order_relaxed))
    h->win_min_free = f;
}

/* 1 if [start, end) overlaps a registered region. Called with reg_lock. */
static int overlaps(uintptr_t start, uintptr_t end) {
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++)
    if (start < ht__heaps[i].end && ht__heaps[i].start < end)
      return 1;
  return 0;
}

/* Finds the block area TLSF laid out: the first block header follows the
 * control structure, and the empty heap is one block of h->total bytes. */
static void locate_area(ht_heap_t *h) {
  uintptr_t aligned = (h->start + HT_TLSF_ALIGN - 1) & ~(uintptr_t)(HT_TLSF_ALIGN - 1);
  size_t bytes = (h->end - aligned) & ~(size_t)(HT_TLSF_ALIGN - 1);
  h->area = aligned + ht__tlsf_overhead_for(bytes);
  h->area_end = h->area + HT_TLSF_BLOCK_OVERHEAD + h->total;
}

/* Encodes h's HEAP record: start/size describe the block area, which used
 * and free blocks (each with its 16-byte TLSF header) tile exactly.
 * Returns its length, 0 if it does not fit. */
static size_t heap_record(const ht_heap_t *h, uint8_t *buf, size_t cap) {
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, cap);
  ht_heap_rec_t rec = {
      h->id, {h->caps[0], h->caps[1], h->caps[2]}, h->area, h->area_end - h->area, ht_str(h->name)};
  ht_proto_put_heap(&w, &rec);
  return w.overflow ? 0 : w.len;
}

size_t ht__heap_record(unsigned i, uint8_t *buf, size_t cap) {
  return i < ht__nheaps() ? heap_record(&ht__heaps[i], buf, cap) : 0;
}

unsigned ht__heap_regions(void) {
  return ht__nheaps();
}

/* Announces a new region on the current connection (every new connection
 * announces all regions again, see transport.c). */
static void announce(const ht_heap_t *h) {
  ht__transport_init();
  if (!atomic_load_explicit(&ht__tracing, memory_order_relaxed))
    return;
  uint8_t buf[128];
  size_t len = heap_record(h, buf, sizeof buf);
  if (len)
    ht__transport_send_record(buf, len);
}

/* Fills and publishes entry n. Called with reg_lock. Returns 0 or HT_ESIZE. */
static int publish(unsigned n, const char *name, const uint32_t caps[HT_CAPS_PRIOS],
                   uintptr_t start, uintptr_t end) {
  ht_heap_t *h = &ht__heaps[n];
  ht_tlsf_t *t = ht__tlsf_create((void *)start, end - start);
  /* The smallest block must hold a header, a tail canary and a byte. */
  if (!t || ht__tlsf_total_bytes(t) < HT_BLK_BYTES + HT_BLK_TAIL + 1)
    return HT_ESIZE;
  pthread_mutex_init(&h->lock, NULL);
  h->tlsf = t;
  h->id = n + 1;
  h->all_caps = 0;
  for (int i = 0; i < HT_CAPS_PRIOS; i++) {
    h->caps[i] = caps[i];
    h->all_caps |= caps[i];
  }
  h->start = start;
  h->end = end;
  h->total = ht__tlsf_total_bytes(t);
  h->used = 0;
  h->min_free = h->win_min_free = h->total;
  if (name && name[0])
    snprintf(h->name, sizeof h->name, "%s", name);
  else
    snprintf(h->name, sizeof h->name, "heap%u", h->id);
  locate_area(h);
  atomic_store_explicit(&ht__heap_count, n + 1, memory_order_release);
  return 0;
}

/* Registers a region; *id gets its heap id. Returns 0 or an HT_E* code. */
static int add_region(const char *name, const uint32_t caps[HT_CAPS_PRIOS], intptr_t start,
                      intptr_t end, uint32_t *id) {
  if (!caps || start == 0 || end <= start)
    return HT_EINVAL;
  /* It registers the fork handlers too, its own and then ours, so that
   * ours run first and take the heap locks before its io lock (a heap
   * lock holder may wait for the io lock, never the reverse). */
  ht__transport_init();
  pthread_mutex_lock(&reg_lock);
  unsigned n = ht__nheaps();
  int rc = 0;
  if (overlaps((uintptr_t)start, (uintptr_t)end))
    rc = HT_EOVERLAP;
  else if (n >= HT_HEAP_MAX)
    rc = HT_ENOMEM;
  else
    rc = publish(n, name, caps, (uintptr_t)start, (uintptr_t)end);
  pthread_mutex_unlock(&reg_lock);
  if (rc == 0) {
    *id = n + 1;
    announce(&ht__heaps[n]);
  }
  return rc;
}

int ht_heap_add_region_with_caps_named(const char *name, const uint32_t caps[HT_CAPS_PRIOS],
                                       intptr_t start, intptr_t end) {
  uint32_t id;
  return add_region(name, caps, start, end, &id);
}

int ht_heap_add_region_with_caps(const uint32_t caps[HT_CAPS_PRIOS], intptr_t start, intptr_t end) {
  return ht_heap_add_region_with_caps_named(NULL, caps, start, end);
}

int ht_heap_add_region(intptr_t start, intptr_t end) {
  static const uint32_t caps[HT_CAPS_PRIOS] = {HT_REGION_DEFAULT_CAPS, 0, 0};
  return ht_heap_add_region_with_caps_named(NULL, caps, start, end);
}

ht_heap_handle_t ht_heap_register(void *start, size_t size) {
  static const uint32_t none[HT_CAPS_PRIOS] = {0, 0, 0};
  if (!start || size > (size_t)INTPTR_MAX - (size_t)(uintptr_t)start)
    return NULL;
  intptr_t s = (intptr_t)(uintptr_t)start;
  uint32_t id;
  if (add_region("multi_heap", none, s, s + (intptr_t)size, &id) != 0)
    return NULL;
  return ht_heap_by_id(id);
}

ht_heap_handle_t ht_heap_containing(const void *p) {
  return ht__heap_of(p);
}

ht_heap_handle_t ht_heap_by_id(uint32_t id) {
  unsigned n = ht__nheaps();
  return id >= 1 && id <= n ? &ht__heaps[id - 1] : NULL;
}

ht_heap_handle_t ht_heap_by_name(const char *name) {
  unsigned n = ht__nheaps();
  for (unsigned i = 0; name && i < n; i++)
    if (strcmp(ht__heaps[i].name, name) == 0)
      return &ht__heaps[i];
  return NULL;
}

uint32_t ht_heap_id(ht_heap_handle_t heap) {
  return heap ? heap->id : 0;
}

const char *ht_heap_name(ht_heap_handle_t heap) {
  return heap ? heap->name : "system";
}
