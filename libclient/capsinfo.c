/* capsinfo.c - what the capability heaps can tell: sizes, minima, info,
 * walks, dumps and integrity checks.
 *
 * Numbers come from TLSF's O(1) counters and the heap's own (usable bytes,
 * minima) under the heap's lock. Walks, dumps and the walk API first take
 * a snapshot of a heap's blocks under its lock into mmap'd scratch memory
 * and then run the user's callback (or print) without any lock: a
 * callback may allocate, even from the heap being walked.
 *
 * A heap whose TLSF structure is damaged is never walked (a walk trusts the
 * headers); the integrity check, which does not, reports it instead.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "caps.h"

_Atomic int ht__window_open;
static _Atomic int window_used; /* a window was ever opened */

/* 1 if h is one of "the heaps with caps"; HT_CAP_INVALID means all. */
static int selected(const ht_heap_t *h, uint32_t caps) {
  return caps == HT_CAP_INVALID || ht__heap_has(h, caps);
}

void ht__heap_info_locked(const ht_heap_t *h, ht_heap_info_t *out) {
  ht_tlsf_stats_t st;
  ht__tlsf_stats(h->tlsf, &st);
  /* TLSF guarantees a request of its largest_free_block; ours adds the
   * header and the tail canary to the size asked for. */
  size_t extra = HT_BLK_BYTES + HT_BLK_TAIL;
  out->total_free_bytes = st.total_free_bytes;
  out->total_allocated_bytes = h->used;
  out->largest_free_block = st.largest_free_block > extra ? st.largest_free_block - extra : 0;
  out->minimum_free_bytes = h->min_free;
  out->allocated_blocks = st.allocated_blocks;
  out->free_blocks = st.free_blocks;
  out->total_blocks = st.total_blocks;
}

void ht_heap_get_info(ht_heap_handle_t heap, ht_heap_info_t *info) {
  memset(info, 0, sizeof *info);
  if (!heap)
    return;
  pthread_mutex_lock(&heap->lock);
  ht__heap_info_locked(heap, info);
  pthread_mutex_unlock(&heap->lock);
}

void ht_caps_get_info(ht_heap_info_t *info, uint32_t caps) {
  memset(info, 0, sizeof *info);
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++) {
    if (!selected(&ht__heaps[i], caps))
      continue;
    ht_heap_info_t one;
    ht_heap_get_info(&ht__heaps[i], &one);
    info->total_free_bytes += one.total_free_bytes;
    info->total_allocated_bytes += one.total_allocated_bytes;
    if (one.largest_free_block > info->largest_free_block)
      info->largest_free_block = one.largest_free_block;
    info->minimum_free_bytes += one.minimum_free_bytes;
    info->allocated_blocks += one.allocated_blocks;
    info->free_blocks += one.free_blocks;
    info->total_blocks += one.total_blocks;
  }
}

size_t ht_caps_get_free_size(uint32_t caps) {
  ht_heap_info_t info;
  ht_caps_get_info(&info, caps);
  return info.total_free_bytes;
}

size_t ht_caps_get_minimum_free_size(uint32_t caps) {
  ht_heap_info_t info;
  ht_caps_get_info(&info, caps);
  return info.minimum_free_bytes;
}

size_t ht_caps_get_largest_free_block(uint32_t caps) {
  ht_heap_info_t info;
  ht_caps_get_info(&info, caps);
  return info.largest_free_block;
}

size_t ht_caps_get_total_size(uint32_t caps) {
  size_t total = 0;
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++)
    if (selected(&ht__heaps[i], caps))
      total += ht__heaps[i].total; /* immutable */
  return total;
}

size_t ht_heap_free_size(ht_heap_handle_t heap) {
  ht_heap_info_t info;
  ht_heap_get_info(heap, &info);
  return info.total_free_bytes;
}

size_t ht_heap_minimum_free_size(ht_heap_handle_t heap) {
  ht_heap_info_t info;
  ht_heap_get_info(heap, &info);
  return info.minimum_free_bytes;
}

size_t ht_caps_get_allocated_size(void *ptr) {
  if (!ptr)
    return 0;
  if (!ht__nheaps() || !ht__heap_of(ptr))
    return ht__sys_usable(ptr);
  if (ht__blk_verify(ptr) & HT_BLK_BAD_HEADER)
    return 0;
  return ht__blk(ptr)->size;
}

size_t ht_heap_get_allocated_size(ht_heap_handle_t heap, void *p) {
  return heap && ht__heap_of(p) == heap ? ht_caps_get_allocated_size(p) : 0;
}

/* ======================================================================
 * Low-water window
 * ==================================================================== */

int ht_caps_monitor_local_minimum_free_size_start(void) {
  atomic_store(&ht__window_open, 1);
  atomic_store(&window_used, 1);
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++) {
    ht_heap_t *h = &ht__heaps[i];
    pthread_mutex_lock(&h->lock);
    h->win_min_free = ht__heap_free_locked(h);
    pthread_mutex_unlock(&h->lock);
  }
  return HT_OK;
}

int ht_caps_monitor_local_minimum_free_size_stop(void) {
  return atomic_exchange(&ht__window_open, 0) ? HT_OK : HT_EINVAL;
}

size_t ht_caps_get_local_minimum_free_size(uint32_t caps) {
  if (!atomic_load(&window_used))
    return ht_caps_get_minimum_free_size(caps);
  size_t sum = 0;
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++) {
    ht_heap_t *h = &ht__heaps[i];
    if (!selected(h, caps))
      continue;
    pthread_mutex_lock(&h->lock);
    sum += h->win_min_free;
    pthread_mutex_unlock(&h->lock);
  }
  return sum;
}

/* ======================================================================
 * Snapshots and walks
 * ==================================================================== */

typedef struct {
  ht_walker_block_info_t *v;
  size_t n, cap;
  int overflow;
} snap_t;

/* Describes the used TLSF block at payload (usable u). */
static ht_walker_block_info_t describe_used(void *payload, size_t u) {
  ht_walker_block_info_t b = {.ptr = payload, .size = u, .used = true, .corrupt = true};
  void *ptr = ht__blk_from_payload(payload, u);
  if (!ptr || (ht__blk_verify(ptr) & HT_BLK_BAD_HEADER))
    return b;
  const ht_blk_t *hd = ht__blk(ptr);
  b.ptr = ptr;
  b.size = u - ht__blk_lead(hd) - HT_BLK_TAIL;
  b.requested = hd->size;
  b.caps = hd->caps;
  b.corrupt = ht__blk_verify(ptr) != HT_BLK_OK;
  ht_site_info_t si;
  if (ht__acct_site_info(hd->site, &si) == 0) {
    b.file = si.file;
    b.line = si.line;
    b.func = si.func;
  }
  b.type = ht__type_name(hd->type);
  return b;
}

static int snap_block(void *payload, size_t size, int used, void *user) {
  snap_t *s = user;
  if (s->n == s->cap) {
    s->overflow = 1;
    return 1;
  }
  ht_walker_block_info_t b = {.ptr = payload, .size = size};
  if (used)
    b = describe_used(payload, size);
  s->v[s->n++] = b;
  return 0;
}

/* Takes a snapshot of h's blocks into s (mmap'd; release with
 * snap_free). Returns 0, or -1 if h is damaged or memory is short. */
static int snapshot(ht_heap_t *h, snap_t *s) {
  memset(s, 0, sizeof *s);
  for (size_t want = 64;;) {
    size_t bytes = want * sizeof *s->v;
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return -1;
    *s = (snap_t){m, 0, want, 0};
    pthread_mutex_lock(&h->lock);
    int damaged = ht__tlsf_check(h->tlsf, NULL, 0) != 0;
    ht_tlsf_stats_t st;
    ht__tlsf_stats(h->tlsf, &st);
    if (!damaged && st.total_blocks <= want)
      ht__tlsf_walk(h->tlsf, snap_block, s);
    pthread_mutex_unlock(&h->lock);
    if (!damaged && st.total_blocks <= want && !s->overflow)
      return 0;
    munmap(m, bytes);
    s->v = NULL;
    if (damaged) {
      ht__warn("heaptrace: heap %u '%s' is damaged and cannot be walked; run "
               "ht_caps_check_integrity() for details",
               h->id, h->name);
      return -1;
    }
    want = st.total_blocks * 2 + 64;
  }
}

static void snap_free(snap_t *s) {
  if (s->v)
    munmap(s->v, s->cap * sizeof *s->v);
}

static ht_walker_heap_info_t heap_info_of(const ht_heap_t *h) {
  return (ht_walker_heap_info_t){(intptr_t)h->start, (intptr_t)h->end, h->id, h->name};
}

/* Walks one heap; returns false if the walker asked to stop. */
static bool walk_heap(ht_heap_t *h, ht_caps_walker_cb_t walker, void *user_data) {
  snap_t s;
  if (snapshot(h, &s) != 0)
    return true;
  bool go_on = true;
  for (size_t i = 0; i < s.n && go_on; i++)
    go_on = walker(heap_info_of(h), s.v[i], user_data);
  snap_free(&s);
  return go_on;
}

void ht_caps_walk(uint32_t caps, ht_caps_walker_cb_t walker, void *user_data) {
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n && walker; i++)
    if (selected(&ht__heaps[i], caps) && !walk_heap(&ht__heaps[i], walker, user_data))
      return;
}

void ht_caps_walk_all(ht_caps_walker_cb_t walker, void *user_data) {
  ht_caps_walk(HT_CAP_INVALID, walker, user_data);
}

void ht_heap_walk(ht_heap_handle_t heap, ht_caps_walker_cb_t walker, void *user_data) {
  if (heap && walker)
    walk_heap(heap, walker, user_data);
}

/* ======================================================================
 * Printing
 * ==================================================================== */

void ht_caps_print_heap_info(uint32_t caps) {
  char names[160];
  printf("Heap summary for capabilities 0x%08X (%s):\n", caps,
         ht_caps_format(caps, names, sizeof names));
  ht_heap_info_t sum = {0};
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++) {
    ht_heap_t *h = &ht__heaps[i];
    if (!selected(h, caps))
      continue;
    ht_heap_info_t in;
    ht_heap_get_info(h, &in);
    printf("  At 0x%08zx len %zu free %zu allocated %zu min_free %zu (heap %u '%s')\n",
           (size_t)h->start, (size_t)(h->end - h->start), in.total_free_bytes,
           in.total_allocated_bytes, in.minimum_free_bytes, h->id, h->name);
    printf("    largest_free_block %zu alloc_blocks %zu free_blocks %zu total_blocks %zu\n",
           in.largest_free_block, in.allocated_blocks, in.free_blocks, in.total_blocks);
    sum.total_free_bytes += in.total_free_bytes;
    sum.total_allocated_bytes += in.total_allocated_bytes;
    sum.minimum_free_bytes += in.minimum_free_bytes;
    if (in.largest_free_block > sum.largest_free_block)
      sum.largest_free_block = in.largest_free_block;
  }
  printf("  Totals:\n    free %zu allocated %zu min_free %zu largest_free_block %zu\n",
         sum.total_free_bytes, sum.total_allocated_bytes, sum.minimum_free_bytes,
         sum.largest_free_block);
  fflush(stdout);
}

/* Prints one block line of a dump. */
static bool dump_block(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  (void)heap;
  (void)user;
  if (!b.used)
    printf("  %p free  %10zu\n", b.ptr, b.size);
  else if (b.corrupt && !b.file)
    printf("  %p used  %10zu  DAMAGED header\n", b.ptr, b.size);
  else
    printf("  %p used  %10zu  requested %zu at %s:%d %s()%s%s%s\n", b.ptr, b.size, b.requested,
           b.file ? b.file : "?", b.line, b.func ? b.func : "?", b.type ? " type " : "",
           b.type ? b.type : "", b.corrupt ? "  DAMAGED canary" : "");
  return true;
}

void ht_heap_dump(ht_heap_handle_t heap) {
  if (!heap)
    return;
  char names[160];
  ht_heap_info_t in;
  ht_heap_get_info(heap, &in);
  printf("Heap %u '%s' at 0x%zx-0x%zx, blocks 0x%zx-0x%zx, caps %s / 0x%x / 0x%x: %zu blocks\n",
         heap->id, heap->name, (size_t)heap->start, (size_t)heap->end, (size_t)heap->area,
         (size_t)heap->area_end, ht_caps_format(heap->caps[0], names, sizeof names), heap->caps[1],
         heap->caps[2], in.total_blocks);
  walk_heap(heap, dump_block, NULL);
  fflush(stdout);
}

void ht_caps_dump(uint32_t caps) {
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++)
    if (selected(&ht__heaps[i], caps))
      ht_heap_dump(&ht__heaps[i]);
}

void ht_caps_dump_all(void) {
  ht_caps_dump(HT_CAP_INVALID);
}

/* ======================================================================
 * Integrity
 * ==================================================================== */

typedef struct {
  ht_heap_t *h;
  bool print, ok;
} check_t;

static int check_block(void *payload, size_t size, int used, void *user) {
  check_t *k = user;
  if (!used)
    return 0;
  void *ptr = ht__blk_from_payload(payload, size);
  int bad = ptr ? ht__blk_verify(ptr) : HT_BLK_BAD_HEADER;
  if (bad != HT_BLK_OK) {
    k->ok = false;
    if (k->print)
      ht__blk_report(k->h, ptr ? ptr : (char *)payload + HT_BLK_BYTES, bad, "check_integrity");
  }
  return 0;
}

bool ht_heap_check(ht_heap_handle_t heap, bool print_errors) {
  if (!heap)
    return false;
  check_t k = {heap, print_errors, true};
  char msg[256];
  pthread_mutex_lock(&heap->lock);
  if (ht__tlsf_check(heap->tlsf, msg, sizeof msg) != 0) {
    k.ok = false;
    if (print_errors)
      ht__warn("heaptrace: heap corruption found by check_integrity: heap %u '%s' allocator "
               "structure damaged: %s",
               heap->id, heap->name, msg);
  } else {
    ht__tlsf_walk(heap->tlsf, check_block, &k);
  }
  pthread_mutex_unlock(&heap->lock);
  return k.ok;
}

bool ht_caps_check_integrity(uint32_t caps, bool print_errors) {
  bool ok = true;
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++)
    if (selected(&ht__heaps[i], caps) && !ht_heap_check(&ht__heaps[i], print_errors))
      ok = false;
  return ok;
}

bool ht_caps_check_integrity_all(bool print_errors) {
  return ht_caps_check_integrity(HT_CAP_INVALID, print_errors);
}

bool ht_caps_check_integrity_addr(intptr_t addr, bool print_errors) {
  unsigned n = ht__nheaps();
  for (unsigned i = 0; i < n; i++) {
    ht_heap_t *h = &ht__heaps[i];
    if ((uintptr_t)addr >= h->start && (uintptr_t)addr < h->end)
      return ht_heap_check(h, print_errors);
  }
  return false;
}
