/* account.c - process statistics without a global atomic on the hot path.
 *
 * Each thread's accounting is ht__tls (caps.h), in initial-exec TLS: its
 * counters (live bytes and blocks it added or removed, bytes allocated,
 * calls by kind), plus an mmap'd block with per-site call and byte counts
 * and a small cache from call-site string pointers to accounting-site
 * indices. Only the owner writes them, with relaxed atomic stores (plain
 * moves on x86, but visible to TSan and free of tearing); readers - the
 * alloc callback's totals, ht_get_totals(), ht_get_state() - sum every
 * thread under list_lock, plus `folded`, where a thread's numbers go when
 * it exits. A thread may free what another allocated: its own counters go
 * negative, the sum is right. The hot path (ht__account, inline in caps.h)
 * is a handful of thread-local stores; the alloc callback pays for the
 * sum, not everybody.
 *
 * Accounting sites intern (file, line, func, type) by content in a static
 * table, so a restored state (state.c) and live calls meet in one index.
 * This is separate from sites.c, whose ids exist only while tracing.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "caps.h"
#include "ht_event.h"

#define SITE_SLOTS (2 * HT_ACCT_SITES) /* open addressing, at most half full */

/* ======================================================================
 * Accounting sites
 * ==================================================================== */

typedef struct {
  const char *file, *func, *type;
  int line;
  uint16_t type_idx;
  uint64_t hash;
} site_t;

static site_t sites[HT_ACCT_SITES];
_Atomic int ht__site_lines[HT_ACCT_SITES];
_Atomic uint64_t ht__where_cache[HT_WHERE_CACHE];
static uint16_t site_slots[SITE_SLOTS]; /* 0 empty, else index into sites */
static _Atomic uint32_t nsites = 1;     /* entries [1, nsites) are published */
static pthread_mutex_t site_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_str(uint64_t h, const char *s) {
  for (; s && *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull;
}

static int same_str(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

static uint64_t site_hash(const char *file, int line, const char *func, const char *type) {
  return hash_str(hash_str(hash_str(0xcbf29ce484222325ull ^ (uint64_t)line, file), func), type);
}

/* The slot holding the site, or the empty slot ending its probe. Called
 * with site_lock. */
static uint32_t probe_locked(const char *file, int line, const char *func, const char *type,
                             uint64_t h) {
  for (uint32_t i = (uint32_t)h & (SITE_SLOTS - 1);; i = (i + 1) & (SITE_SLOTS - 1)) {
    uint16_t k = site_slots[i];
    if (k == 0)
      return i;
    const site_t *e = &sites[k];
    if (e->hash == h && e->line == line && same_str(e->file, file) && same_str(e->func, func) &&
        same_str(e->type, type))
      return i;
  }
}

/* Finds or adds a site. Called with site_lock. */
static uint32_t intern_locked(const char *file, int line, const char *func, const char *type) {
  uint64_t h = site_hash(file, line, func, type);
  uint32_t i = probe_locked(file, line, func, type, h);
  if (site_slots[i])
    return site_slots[i];
  uint32_t n = atomic_load_explicit(&nsites, memory_order_relaxed);
  if (n >= HT_ACCT_SITES)
    return 0;
  sites[n] = (site_t){file, func, type, line, ht__type_intern(type), h};
  atomic_store_explicit(&ht__site_lines[n], line, memory_order_relaxed);
  site_slots[i] = (uint16_t)n;
  atomic_store_explicit(&nsites, n + 1, memory_order_release);
  return n;
}

uint32_t ht__acct_site_find(const char *file, int line, const char *func, const char *type) {
  pthread_mutex_lock(&site_lock);
  uint32_t k = site_slots[probe_locked(file, line, func, type, site_hash(file, line, func, type))];
  pthread_mutex_unlock(&site_lock);
  return k;
}

int ht__acct_site_info(uint32_t idx, ht_site_info_t *out) {
  if (idx == 0 || idx >= atomic_load_explicit(&nsites, memory_order_acquire))
    return HT_ENOTFOUND;
  const site_t *e = &sites[idx];
  *out = (ht_site_info_t){e->file, e->func, e->type, e->line, e->type_idx};
  return 0;
}

uint32_t ht__acct_site_count(void) {
  return atomic_load_explicit(&nsites, memory_order_acquire);
}

void ht__acct_sites_hold(int hold) {
  if (hold)
    pthread_mutex_lock(&site_lock);
  else
    pthread_mutex_unlock(&site_lock);
}

/* ======================================================================
 * Per-thread accounting
 * ==================================================================== */

#define PEEK(field) atomic_load_explicit(&(field), memory_order_relaxed)

__thread ht_tls_t ht__tls __attribute__((tls_model("initial-exec")));

static pthread_key_t tls_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static ht_tls_t *threads;

/* Numbers of exited threads and of a restored state. Guarded by list_lock. */
static ht_totals_t folded;
static uint64_t folded_calls[HT_ACCT_SITES], folded_bytes[HT_ACCT_SITES];

/* Counts of threads past their TLS destructor: rare, plain atomics. */
static _Atomic int64_t late_bytes, late_blocks;
static _Atomic uint64_t late_total, late_allocs, late_frees, late_reallocs, late_failures;

/* Folds t into `folded`. Called with list_lock. */
static void fold_locked(ht_tls_t *t) {
  folded.cur_bytes += PEEK(t->cur_bytes);
  folded.cur_blocks += PEEK(t->cur_blocks);
  folded.total_bytes += PEEK(t->total_bytes);
  folded.allocs += PEEK(t->allocs);
  folded.frees += PEEK(t->frees);
  folded.reallocs += PEEK(t->reallocs);
  folded.failures += PEEK(t->failures);
  uint32_t n = ht__acct_site_count();
  for (uint32_t i = 0; t->sites && i < n; i++) {
    folded_calls[i] += PEEK(t->sites->calls[i]);
    folded_bytes[i] += PEEK(t->sites->bytes[i]);
  }
}

/* Thread exit: fold, unlink, unmap. Later allocations of this thread (from
 * other TLS destructors) count in the late_* atomics. */
static void tls_exit(void *arg) {
  ht_tls_t *t = arg;
  pthread_mutex_lock(&list_lock);
  fold_locked(t);
  if (t->prev)
    t->prev->next = t->next;
  else
    threads = t->next;
  if (t->next)
    t->next->prev = t->prev;
  t->state = HT_TLS_GONE;
  pthread_mutex_unlock(&list_lock);
  if (t->sites)
    munmap(t->sites, sizeof *t->sites);
  t->sites = NULL;
}

static void make_key(void) {
  pthread_key_create(&tls_key, tls_exit);
}

void ht__acct_list_hold(int hold) {
  if (hold)
    pthread_mutex_lock(&list_lock);
  else
    pthread_mutex_unlock(&list_lock);
}

int ht__tls_join(void) {
  ht_tls_t *t = &ht__tls;
  if (t->state == HT_TLS_GONE)
    return 0;
  /* The first transaction of the process starts the transport (and puts
   * the fork handlers in place), so that ht__tracing_on() needs no
   * initialisation check on the hot path. */
  ht__transport_init();
  pthread_once(&key_once, make_key);
  void *m = mmap(NULL, sizeof(ht_tls_sites_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  t->sites = m == MAP_FAILED ? NULL : m; /* zeroed by mmap */
  pthread_mutex_lock(&list_lock);
  t->next = threads;
  t->prev = NULL;
  if (threads)
    threads->prev = t;
  threads = t;
  t->state = HT_TLS_LIVE;
  pthread_mutex_unlock(&list_lock);
  pthread_setspecific(tls_key, t);
  return 1;
}

void ht__account_late(uint32_t op, int64_t dbytes, int64_t dblocks) {
  atomic_fetch_add_explicit(&late_bytes, dbytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&late_blocks, dblocks, memory_order_relaxed);
  atomic_fetch_add_explicit(&late_total, dbytes > 0 ? (uint64_t)dbytes : 0, memory_order_relaxed);
  _Atomic uint64_t *kind = op == HT_OP_FREE      ? &late_frees
                           : op == HT_OP_REALLOC ? &late_reallocs
                                                 : &late_allocs;
  atomic_fetch_add_explicit(kind, 1, memory_order_relaxed);
}

void ht__acct_failure(void) {
  ht_tls_t *t = &ht__tls;
  if (t->state == HT_TLS_LIVE || ht__tls_join())
    HT_BUMP(t->failures, 1);
  else
    atomic_fetch_add_explicit(&late_failures, 1, memory_order_relaxed);
}

uint32_t ht__acct_site(const char *file, int line, const char *func, const char *type) {
  ht_tls_sites_t *ts = ht__tls.sites;
  unsigned slot = ht__site_slot(file, line, func, type);
  if (ts && ts->cache[slot].idx != 0 && ts->cache[slot].file == file &&
      ts->cache[slot].line == line && ts->cache[slot].func == func && ts->cache[slot].type == type)
    return ts->cache[slot].idx;
  pthread_mutex_lock(&site_lock);
  uint32_t idx = intern_locked(file, line, func, type);
  pthread_mutex_unlock(&site_lock);
  if (ts && idx) {
    ts->cache[slot].file = file;
    ts->cache[slot].func = func;
    ts->cache[slot].type = type;
    ts->cache[slot].line = line;
    ts->cache[slot].idx = idx;
  }
  return idx;
}

uint32_t ht__call_site_slow(ht_call_t *c) {
  uint32_t idx = ht__acct_site(ht__call_file(c), ht__call_line(c), ht__call_func(c), c->type);
  c->site = idx;
  /* A realloc of a typed block gives the call that type: that is another
   * site than the macro's own. 0 (the table is full) is not kept, nor an
   * address that does not fit an entry. */
  uintptr_t w = (uintptr_t)c->where;
  if (w && !c->type && idx && w >> 48 == 0)
    atomic_store_explicit(&ht__where_cache[ht__where_slot(c->where)], (uint64_t)w << 16 | idx,
                          memory_order_relaxed);
  return idx;
}

void ht__call_typed(ht_call_t *c) {
  ht_site_info_t si;
  if (ht__acct_site_info(ht__call_site(c), &si) == 0)
    c->type_idx = si.type_idx;
  else
    c->type_idx = ht__type_intern(c->type);
}

void ht__call_set_type(ht_call_t *c, uint16_t type_idx) {
  if (type_idx == 0 || type_idx == c->type_idx)
    return;
  c->type = ht__type_name(type_idx);
  c->type_idx = type_idx;
  c->site = HT_SITE_UNSET;
}

/* ======================================================================
 * Events
 * ==================================================================== */

void ht__trace(ht_call_t *c, ht_event_t *ev, int64_t dbytes, int64_t dblocks) {
  ht_stream_t *s = ht__stream_get();
  if (!s || !atomic_load_explicit(&ht__tracing, memory_order_relaxed))
    return;
  /* The event and the SITE record it may need go to one connection. */
  ht__stream_begin(s);
  /* An allocation's time is ordered after the allocator's work, so that it
   * is later than the free (in any thread) that gave the block back. */
  ev->time_ns = ev->op == HT_OP_FREE ? ht__now_ns() : ht__now_ns_ordered();
  ev->site = ht__wire_site_of(s, c);
  ht__stream_carry(s, dbytes, dblocks);
  ev->cur_bytes = s->cur_bytes;
  ev->cur_blocks = s->cur_blocks;
  ev->total_bytes = s->total_bytes;
  uint8_t *out = ht__stream_room(s);
  if (!out)
    return; /* dropped: the totals stay carried */
  ht__stream_publish(s, ht_event_encode(out, &s->enc, ev));
  s->carried = 0; /* the delta state holds them now */
}

void ht__trace_general(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks) {
  ht_event_t ev = {0};
  ev.op = x->op;
  ev.heap = x->heap;
  ev.caps = x->caps;
  ev.ptr = (uintptr_t)x->ptr;
  ev.old_ptr = (uintptr_t)x->old_ptr;
  ev.size = x->size;
  ev.usable = x->usable;
  ev.old_usable = x->old_usable;
  ev.align = x->align;
  ht__trace(c, &ev, dbytes, dblocks);
}

void ht__trace_fields(ht_call_t *c, uint32_t op, uint32_t heap, uint32_t caps, const void *ptr,
                      const void *old_ptr, uint64_t size, uint64_t usable, uint64_t old_usable,
                      uint64_t align, int64_t dbytes, int64_t dblocks) {
  ht_txn_t x = {op, heap, caps, ptr, old_ptr, size, usable, old_usable, align};
  ht__trace_general(c, &x, dbytes, dblocks);
}

void ht__trace_free(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks) {
  ht__trace_op(c, x, dbytes, dblocks, HT_OP_FREE);
}

void ht__trace_realloc(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks) {
  ht__trace_op(c, x, dbytes, dblocks, HT_OP_REALLOC);
}

void ht__trace_txn(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks) {
  switch (x->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
    ht__trace_op(c, x, dbytes, dblocks, HT_OP_MALLOC);
    return;
  case HT_OP_FREE:
    ht__trace_free(c, x, dbytes, dblocks);
    return;
  case HT_OP_REALLOC:
    ht__trace_realloc(c, x, dbytes, dblocks);
    return;
  default: /* aligned allocations: no encoder of their own */
    ht__trace_general(c, x, dbytes, dblocks);
  }
}

/* ======================================================================
 * Sums and restore
 * ==================================================================== */

void ht_get_totals(ht_totals_t *out) {
  pthread_mutex_lock(&list_lock);
  *out = folded;
  for (ht_tls_t *t = threads; t; t = t->next) {
    out->cur_bytes += PEEK(t->cur_bytes);
    out->cur_blocks += PEEK(t->cur_blocks);
    out->total_bytes += PEEK(t->total_bytes);
    out->allocs += PEEK(t->allocs);
    out->frees += PEEK(t->frees);
    out->reallocs += PEEK(t->reallocs);
    out->failures += PEEK(t->failures);
  }
  pthread_mutex_unlock(&list_lock);
  out->cur_bytes += atomic_load(&late_bytes);
  out->cur_blocks += atomic_load(&late_blocks);
  out->total_bytes += atomic_load(&late_total);
  out->allocs += atomic_load(&late_allocs);
  out->frees += atomic_load(&late_frees);
  out->reallocs += atomic_load(&late_reallocs);
  out->failures += atomic_load(&late_failures);
}

/* Per-site sums of the live threads into calls/bytes. list_lock held. */
static void sum_sites_locked(uint64_t *calls, uint64_t *bytes, uint32_t n) {
  for (ht_tls_t *t = threads; t; t = t->next)
    for (uint32_t i = 0; t->sites && i < n; i++) {
      calls[i] += PEEK(t->sites->calls[i]);
      bytes[i] += PEEK(t->sites->bytes[i]);
    }
}

void ht__acct_site_totals(uint64_t *calls, uint64_t *bytes, uint32_t n) {
  pthread_mutex_lock(&list_lock);
  for (uint32_t i = 0; i < n; i++) {
    calls[i] = folded_calls[i];
    bytes[i] = folded_bytes[i];
  }
  sum_sites_locked(calls, bytes, n);
  pthread_mutex_unlock(&list_lock);
}

/* The restored values become `folded` minus what the live threads and the
 * late counters hold, so that the sums read back exactly the blob. */
void ht__acct_restore(const ht_totals_t *want, const uint64_t *calls, const uint64_t *bytes,
                      uint32_t n) {
  static uint64_t live_calls[HT_ACCT_SITES], live_bytes[HT_ACCT_SITES];
  ht_totals_t now;
  ht_get_totals(&now);
  pthread_mutex_lock(&list_lock);
  folded.cur_bytes += want->cur_bytes - now.cur_bytes;
  folded.cur_blocks += want->cur_blocks - now.cur_blocks;
  folded.total_bytes += want->total_bytes - now.total_bytes;
  folded.allocs += want->allocs - now.allocs;
  folded.frees += want->frees - now.frees;
  folded.reallocs += want->reallocs - now.reallocs;
  folded.failures += want->failures - now.failures;
  uint32_t have = ht__acct_site_count();
  memset(live_calls, 0, sizeof live_calls);
  memset(live_bytes, 0, sizeof live_bytes);
  sum_sites_locked(live_calls, live_bytes, have);
  for (uint32_t i = 0; i < have; i++) {
    folded_calls[i] = (i < n ? calls[i] : 0) - live_calls[i];
    folded_bytes[i] = (i < n ? bytes[i] : 0) - live_bytes[i];
  }
  pthread_mutex_unlock(&list_lock);
}
