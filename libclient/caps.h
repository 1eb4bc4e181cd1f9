/* caps.h - what the capability-heap files of libheaptrace share.
 *
 * Data model. A heap is a region of caller memory with up to three
 * capability masks (registry.c), managed by TLSF (tlsf.c), whose control
 * structure lives at the start of the region. Every block a caps heap hands
 * out is laid out like this (addresses grow to the right):
 *
 *   [TLSF hdr 16][pad L-32][ht_blk_t 32][user bytes: size][tail 4][slack]
 *   ^ block start ^ TLSF payload P        ^ ptr = P + L
 *
 * L, the lead, is 32, or the alignment of an aligned allocation above 32
 * (then P is aligned too, and P's first word carries the same tag as the
 * header so that a walk finds the header). The tail canary follows the
 * requested bytes directly, so the smallest overrun hits it. A block's
 * usable bytes are TLSF's usable size minus L minus 4: the bytes the block
 * holds for its caller, slack included. Its footprint in the heap is
 * usable + L + 20 (= usable + HT_CAPS_BLOCK_OVERHEAD when L is 32).
 *
 * Call flow. A public entry point describes the call in an ht_call_t (site,
 * type, API name), serves it (caps.c for regions, sysheap.c for glibc),
 * and commits exactly one successful transaction with ht__commit()
 * (account.c: statistics, then the event) or reports one failure with
 * ht__fail() (callbacks.c). A caps heap commits while holding its lock so
 * that the heap's events are in the heap's real order. User callbacks run
 * last, in ht__deliver(), with no lock held.
 *
 * Lock order: registry -> heap -> accounting sites -> types -> typed set
 * shard -> thread list; transport locks (sites.c, transport.c) come after
 * all of these. No two heap locks are ever held together.
 */
#ifndef HT_CAPS_H
#define HT_CAPS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "client.h"
#include "ht_event.h"
#include "tlsf.h"

/* ---- block layout (poison.c) ---- */
#define HT_BLK_BYTES 32            /* header before the user's bytes */
#define HT_BLK_TAIL 4              /* tail canary after them */
#define HT_BLK_LEAD_LOG2 5         /* log2 of the normal lead (32) */
#define HT_BLK_TAG 0x48424c00u     /* "HBL" + log2(lead) in the low byte */
#define HT_CANARY_HEAD 0xABBA1234u /* ESP-IDF's light-poisoning patterns */
#define HT_CANARY_TAIL 0xBAAD5678u
#define HT_CANARY_FREED 0xDEADF4EEu /* head canary of a block given back */

_Static_assert(HT_BLK_BYTES + HT_BLK_TAIL + HT_TLSF_BLOCK_OVERHEAD == HT_CAPS_BLOCK_OVERHEAD,
               "the public overhead constant must match the layout");

typedef struct {
  uint32_t tag;      /* HT_BLK_TAG | log2(lead) */
  uint32_t check;    /* hash of tag, size, site, caps, type: a damaged header shows */
  uint64_t size;     /* bytes requested */
  uint32_t site;     /* accounting site of the last (re)allocation */
  uint32_t caps;     /* caps requested */
  uint16_t type;     /* type index, 0 = untyped */
  uint16_t reserved; /* zero */
  uint32_t canary;   /* HT_CANARY_HEAD, right before the user's bytes */
} ht_blk_t;

_Static_assert(sizeof(ht_blk_t) == HT_BLK_BYTES, "block header is 32 bytes");

/* What ht__blk_verify() found wrong (bits). */
enum { HT_BLK_OK = 0, HT_BLK_BAD_HEADER = 1, HT_BLK_BAD_HEAD = 2, HT_BLK_BAD_TAIL = 4 };

/* ---- heaps (registry.c) ---- */
struct ht_heap {
  pthread_mutex_t lock;
  ht_tlsf_t *tlsf;
  uint32_t id; /* 1.. */
  uint32_t caps[HT_CAPS_PRIOS];
  uint32_t all_caps;        /* caps[0] | caps[1] | caps[2] */
  uintptr_t start, end;     /* the region as registered */
  uintptr_t area, area_end; /* what blocks tile: first TLSF header .. sentinel */
  size_t total;             /* free bytes of the empty heap */
  char name[HT_HEAP_NAME_MAX + 1];
  /* Guarded by lock. */
  size_t used;         /* usable bytes of live blocks */
  size_t min_free;     /* lifetime minimum of free bytes */
  size_t win_min_free; /* low-water window minimum */
};
typedef struct ht_heap ht_heap_t;

extern ht_heap_t ht__heaps[HT_HEAP_MAX];
extern _Atomic unsigned ht__heap_count;
extern _Atomic int ht__window_open;

/* Regions published so far; entries [0, n) are immutable but for the
 * fields under their lock. */
static inline unsigned ht__nheaps(void) {
  return atomic_load_explicit(&ht__heap_count, memory_order_acquire);
}

/* 1 if the union of h's masks holds every bit of caps. */
static inline int ht__heap_has(const ht_heap_t *h, uint32_t caps) {
  return (h->all_caps & caps) == caps;
}

/* The region whose block area contains p, or NULL (system heap, foreign). */
ht_heap_t *ht__heap_of(const void *p);

/* Takes (1) or releases (0) the accounting site lock, the type locks and
 * the thread-list lock: the fork handlers' helpers. */
void ht__acct_sites_hold(int hold);
void ht__types_hold(int hold);
void ht__acct_list_hold(int hold);

/* Current free bytes of h. Called with h->lock. */
size_t ht__heap_free_locked(const ht_heap_t *h);

/* Lowers h's minima to its current free bytes. Called with h->lock. */
void ht__heap_low_water(ht_heap_t *h);

/* ---- types and typed system-heap blocks (typed.c) ---- */
#define HT_TYPE_MAX 1024 /* type names; index 0 is "untyped" */

/* Interns a type name by content. Returns 1.., 0 for NULL or a full table. */
uint16_t ht__type_intern(const char *name);

/* Name of type idx, NULL for 0 or a bad index. */
const char *ht__type_name(uint16_t idx);

/* Applies a transaction to type idx's statistics. */
void ht__type_account(uint16_t idx, int64_t dbytes, int64_t dblocks, uint64_t grown);

/* The typed set of the system heap (an address -> type map, since glibc
 * blocks have no header); ht__typed_live is the number of its shards that
 * hold a block: 0 while no typed glibc block is live. */
extern _Atomic long ht__typed_live;
int ht__typed_put(const void *p, uint32_t site, uint16_t type);
uint16_t ht__typed_take_slow(const void *p);
uint16_t ht__typed_peek_slow(const void *p);
/* The type of a glibc block (take: and forget it). Untyped programs never
 * leave the first load: no call on every free and realloc. */
static inline uint16_t ht__typed_take(const void *p) {
  if (HT_LIKELY(atomic_load_explicit(&ht__typed_live, memory_order_relaxed) == 0))
    return 0;
  return ht__typed_take_slow(p);
}
static inline uint16_t ht__typed_peek(const void *p) {
  if (HT_LIKELY(atomic_load_explicit(&ht__typed_live, memory_order_relaxed) == 0))
    return 0;
  return ht__typed_peek_slow(p);
}

/* Copies the statistics of up to cap types into out; returns how many. */
uint32_t ht__type_snapshot(ht_type_stats_t *out, uint32_t cap);

/* Replaces every type's statistics with in[0..n) (names interned as given:
 * they must stay valid); types not in it are zeroed. */
void ht__type_restore(const ht_type_stats_t *in, uint32_t n);

/* ---- one call (every file) ---- */
#define HT_SITE_UNSET UINT32_MAX

typedef struct {
  /* The call site: *where's when where is set (then file, func and line
   * are not), else these. Read them with ht__call_file() & co. */
  const char *file, *func;
  int line;
  const char *type;        /* type name: HT_NEW's, or a realloc'd block's */
  const char *api;         /* public entry point, for the failed-alloc hook */
  const ht_where_t *where; /* the macro's static call site, or NULL */
  uint32_t site;           /* accounting site, HT_SITE_UNSET until needed */
  uint16_t type_idx;
} ht_call_t;

static inline const char *ht__call_file(const ht_call_t *c) {
  return c->where ? c->where->file : c->file;
}
static inline const char *ht__call_func(const ht_call_t *c) {
  return c->where ? c->where->func : c->func;
}
static inline int ht__call_line(const ht_call_t *c) {
  return c->where ? c->where->line : c->line;
}

/* Interns a typed call's site and type (ht__call_init's slow half). */
void ht__call_typed(ht_call_t *c);

/* Fills c for a call. A typed call's site is interned at once (it carries
 * the type index); an untyped one's only when an allocation needs it. */
static inline void ht__call_init(ht_call_t *c, const char *api, const char *file, int line,
                                 const char *func, const char *type) {
  c->file = file;
  c->func = func;
  c->line = line;
  c->type = type;
  c->api = api;
  c->where = NULL;
  c->site = HT_SITE_UNSET;
  c->type_idx = 0;
  if (HT_UNLIKELY(type != NULL))
    ht__call_typed(c);
}

/* The accounting index of each macro call site that has one, by the
 * address of its ht_where_t: one word per entry, the address above 16 bits
 * of index (addresses of static data fit in 48 bits), so that a relaxed
 * load reads both at once. Entries are written when a site is interned; a
 * collision only means another look-up by strings. A hit is checked
 * against the site's line, so that a library unloaded and another loaded
 * at its address do not inherit its sites. */
#define HT_WHERE_CACHE 4096 /* power of two */
extern _Atomic uint64_t ht__where_cache[HT_WHERE_CACHE] HT_HIDDEN;
extern _Atomic int ht__site_lines[] HT_HIDDEN; /* line of each accounting site */

/* The objects are static, 8-aligned and 24 bytes: those of one program
 * or library lie side by side, and take slots of their own. */
static inline unsigned ht__where_slot(const ht_where_t *w) {
  return (unsigned)((uintptr_t)w >> 3) & (HT_WHERE_CACHE - 1);
}

/* The cached index of w, 0 when there is none. */
static inline uint32_t ht__where_site(const ht_where_t *w) {
  uint64_t e = atomic_load_explicit(&ht__where_cache[ht__where_slot(w)], memory_order_relaxed);
  uint32_t idx = (uint32_t)(e & 0xffff);
  if (e >> 16 != (uintptr_t)w ||
      atomic_load_explicit(&ht__site_lines[idx], memory_order_relaxed) != w->line)
    return 0;
  return idx;
}

/* Fills c for an untyped call from a macro's static call site, whose
 * accounting index is known after the site's first call. */
static inline void ht__call_init_at(ht_call_t *c, const char *api, const ht_where_t *w) {
  uint32_t idx = ht__where_site(w);
  c->type = NULL;
  c->api = api;
  c->where = w;
  c->site = idx ? idx : HT_SITE_UNSET;
  c->type_idx = 0;
}

/* Sets c's type (a realloc keeps the block's type) and re-interns its site. */
void ht__call_set_type(ht_call_t *c, uint16_t type_idx);

/* ---- accounting (account.c) ---- */
#define HT_ACCT_SITES 4096 /* accounting sites; index 0 is "unknown" */
_Static_assert(HT_ACCT_SITES == HT_WIRE_ACCT_SITES, "wire ids of accounting sites");
_Static_assert(HT_ACCT_SITES <= 0x10000, "an index fits the 16 bits of a where-cache entry");

typedef struct {
  const char *file, *func, *type;
  int line;
  uint16_t type_idx;
} ht_site_info_t;

/* Returns the accounting index of a call site (1..), 0 when the table is
 * full. Interns by content: equal strings at other addresses meet. */
uint32_t ht__acct_site(const char *file, int line, const char *func, const char *type);

/* Interns c's site; when it is the macro call site's own (untyped) one,
 * enters its index in the where cache. */
uint32_t ht__call_site_slow(ht_call_t *c);

/* c's accounting site, interned on first use. */
static inline uint32_t ht__call_site(ht_call_t *c) {
  if (HT_UNLIKELY(c->site == HT_SITE_UNSET))
    return ht__call_site_slow(c);
  return c->site;
}

/* Index of an interned site, 0 if it is not interned. Never adds. */
uint32_t ht__acct_site_find(const char *file, int line, const char *func, const char *type);

/* Copies site idx into *out. Returns 0, or HT_ENOTFOUND for a bad index. */
int ht__acct_site_info(uint32_t idx, ht_site_info_t *out);

/* Number of accounting sites interned (indices 1..n-1 are valid). */
uint32_t ht__acct_site_count(void);

/* The calling thread's accounting: counters only its owner writes (relaxed
 * atomic stores: plain moves, but no tearing and visible to TSan), the
 * alloc callback's pending note, and a link in the list that readers sum
 * over. Initial-exec TLS: no __tls_get_addr on the hot path. */
enum { HT_TLS_NEW = 0, HT_TLS_LIVE = 1, HT_TLS_GONE = 2 };

#define HT_TLS_CACHE 128 /* per-thread direct-mapped site cache */

/* The part of a thread's accounting too big for static TLS (mmap'd). */
typedef struct ht_tls_sites {
  struct {
    const char *file, *func, *type;
    int line;
    uint32_t idx;
  } cache[HT_TLS_CACHE];
  _Atomic uint64_t calls[HT_ACCT_SITES];
  _Atomic uint64_t bytes[HT_ACCT_SITES];
} ht_tls_sites_t;

typedef struct ht_tls {
  _Atomic int64_t cur_bytes, cur_blocks;
  _Atomic uint64_t total_bytes, allocs, frees, reallocs, failures;
  ht_tls_sites_t *sites; /* site cache and per-site counts, mmap'd */
  int state;
  int armed, in_cb, in_hook; /* callbacks.c */
  uint32_t note_op;
  int64_t note_bytes;
  const ht_call_t *note_call;
  struct ht_tls *next, *prev;
} ht_tls_t;

extern __thread ht_tls_t ht__tls __attribute__((tls_model("initial-exec")));
extern _Atomic(ht_alloc_callback_t) ht__alloc_cb;

#define HT_BUMP(field, d)                                                                          \
  atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (d),      \
                        memory_order_relaxed)

/* Links the thread's block into the list (first transaction of a thread;
 * also starts the transport once per process). Returns 1 when ht__tls is
 * live, 0 when the thread is exiting. */
int ht__tls_join(void);

/* Counts a transaction of a thread that is exiting (global atomics). */
void ht__account_late(uint32_t op, int64_t dbytes, int64_t dblocks);

/* The cache slot of a call site. */
static inline unsigned ht__site_slot(const char *file, int line, const char *func,
                                     const char *type) {
  uintptr_t k = (uintptr_t)file ^ ((uintptr_t)func >> 4) ^ ((uintptr_t)type >> 8) ^
                ((uintptr_t)line * 0x9e3779b1u);
  return (unsigned)((k ^ (k >> 13)) & (HT_TLS_CACHE - 1));
}

/* c's accounting site, from the thread's cache (no lock) almost always. */
static inline uint32_t ht__call_site_cached(ht_tls_t *t, ht_call_t *c) {
  ht_tls_sites_t *ts = t->sites;
  if (HT_LIKELY(c->site != HT_SITE_UNSET))
    return c->site;
  if (HT_LIKELY(ts != NULL && c->where == NULL)) {
    unsigned slot = ht__site_slot(c->file, c->line, c->func, c->type);
    if (HT_LIKELY(ts->cache[slot].idx != 0 && ts->cache[slot].file == c->file &&
                  ts->cache[slot].line == c->line && ts->cache[slot].func == c->func &&
                  ts->cache[slot].type == c->type))
      return c->site = ts->cache[slot].idx;
  }
  return ht__call_site(c);
}

/* Counts an allocating call at its site. */
static inline void ht__site_count(ht_tls_t *t, ht_call_t *c, uint64_t grown) {
  ht_tls_sites_t *ts = t->sites;
  if (HT_UNLIKELY(ts == NULL))
    return;
  uint32_t idx = ht__call_site_cached(t, c);
  HT_BUMP(ts->calls[idx], 1);
  HT_BUMP(ts->bytes[idx], grown);
}

/* Accounts one successful transaction: thread counters, per-site (calls
 * that allocate) and per-type statistics, and the alloc callback's note.
 * dbytes/dblocks: change of live usable bytes/blocks; type: the block's. */
static inline __attribute__((always_inline)) void
ht__account(ht_call_t *c, uint32_t op, uint16_t type, int64_t dbytes, int64_t dblocks) {
  ht_tls_t *t = &ht__tls;
  /* A free only gives back (op is a constant in line: no test is left). */
  uint64_t grown = op != HT_OP_FREE && dbytes > 0 ? (uint64_t)dbytes : 0;
  if (HT_LIKELY(t->state == HT_TLS_LIVE || ht__tls_join())) {
    HT_BUMP(t->cur_bytes, dbytes);
    HT_BUMP(t->cur_blocks, dblocks);
    if (op != HT_OP_FREE)
      HT_BUMP(t->total_bytes, grown);
    if (op == HT_OP_FREE)
      HT_BUMP(t->frees, 1);
    else if (op == HT_OP_REALLOC)
      HT_BUMP(t->reallocs, 1);
    else
      HT_BUMP(t->allocs, 1);
    if (op != HT_OP_FREE)
      ht__site_count(t, c, grown);
  } else {
    ht__account_late(op, dbytes, dblocks);
  }
  if (HT_UNLIKELY(type != 0))
    ht__type_account(type, dbytes, dblocks, grown);
  if (HT_UNLIKELY(atomic_load_explicit(&ht__alloc_cb, memory_order_relaxed) != NULL)) {
    t->armed = 1;
    t->note_op = op;
    t->note_bytes = dbytes;
    t->note_call = c;
  }
}

/* A transaction as its event tells it. */
typedef struct {
  uint32_t op, heap, caps;
  const void *ptr, *old_ptr;
  uint64_t size, usable, old_usable, align;
} ht_txn_t;

/* 1 while events are streamed (the transport is started by the first
 * transaction of the process, in ht__tls_join). */
static inline int ht__tracing_on(void) {
  return atomic_load_explicit(&ht__tracing, memory_order_relaxed);
}

/* Appends a filled event when tracing (used for failures). */
void ht__trace(ht_call_t *c, ht_event_t *ev, int64_t dbytes, int64_t dblocks);

/* Appends the event of a successful transaction when tracing: time, site
 * and the stream's running totals are filled in, and the common ops are
 * encoded straight from x. The _free and _realloc forms are the same for
 * those ops, without the dispatch on x->op. */
void ht__trace_txn(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks);
void ht__trace_free(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks);
void ht__trace_realloc(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks);

/* The wire id of c's site on s's connection (SITE record sent if needed). */
static inline __attribute__((always_inline)) uint32_t ht__wire_site_of(ht_stream_t *s,
                                                                       ht_call_t *c) {
  uint32_t idx = ht__call_site_cached(&ht__tls, c);
  return idx ? ht__wire_site(s, idx)
             : ht__site_id(s, ht__call_file(c), ht__call_line(c), ht__call_func(c), c->type);
}

/* ht__trace_txn's way for any transaction: an ht_event_t, the general
 * encoder, and the running totals sent whenever they are not implied. */
void ht__trace_general(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks);
/* The same with the transaction's fields one by one: ht__trace_op's slow
 * path, so that its callers' transactions need not be in memory on the
 * fast one. */
void ht__trace_fields(ht_call_t *c, uint32_t op, uint32_t heap, uint32_t caps, const void *ptr,
                      const void *old_ptr, uint64_t size, uint64_t usable, uint64_t old_usable,
                      uint64_t align, int64_t dbytes, int64_t dblocks);

/* 1 when a transaction of op moves the totals by what the op implies to
 * the decoder (ht__implied_totals): every caller's in practice, and a
 * constant where the deltas are written from x. */
static inline int ht__txn_implied(const ht_txn_t *x, uint32_t op, int64_t dbytes, int64_t dblocks) {
  if (op == HT_OP_FREE)
    return dbytes == -(int64_t)x->size && dblocks == -1;
  if (op == HT_OP_REALLOC)
    return dbytes == (int64_t)x->usable - (int64_t)x->old_usable && dblocks == 0;
  return dbytes == (int64_t)x->usable && dblocks == 1;
}

/* bench/overhead --breakdown builds the library again with HT_BENCH_CUT
 * set, to measure what each part of an event costs by leaving it out of
 * ht__trace_op: 1, no clock read (each event is timed 1 ns after the
 * stream's last); 2, nothing after the clock read (no event is encoded or
 * sent); 3, no ring (the event is encoded into a scratch buffer, never
 * published nor sent). Such a library traces nothing usable; it is never
 * installed. 0 in every other build. */
#ifndef HT_BENCH_CUT
#define HT_BENCH_CUT 0
#endif

/* The body of ht__trace_txn for op MALLOC, CALLOC, FREE or REALLOC: the
 * event is encoded straight from the transaction by the encoder of its op,
 * in the ring, with no ht_event_t in between, and its running totals are
 * the delta state's, moved as the op implies. Where op is a constant the
 * other encoders fold away. x's address is never passed on (the slow path
 * takes a copy), so that in line the compiler keeps its fields in
 * registers and never stores the transaction. */
static inline __attribute__((always_inline)) void
ht__trace_op(ht_call_t *c, const ht_txn_t *x, int64_t dbytes, int64_t dblocks, uint32_t op) {
  /* The caller saw tracing on; a stream made now (the thread's first
   * event) exists only while it still is. */
  ht_stream_t *s = ht__stream_get();
  if (HT_UNLIKELY(!s))
    return;
  ht__stream_begin(s); /* as in ht__trace: event and SITE on one connection */
  if (HT_UNLIKELY(s->carried || !ht__txn_implied(x, op, dbytes, dblocks))) {
    /* the totals must be sent */
    ht__trace_fields(c, x->op, x->heap, x->caps, x->ptr, x->old_ptr, x->size, x->usable,
                     x->old_usable, x->align, dbytes, dblocks);
    return;
  }
  /* Unfenced, for an allocation too: waiting until the allocator's loads
   * have completed (rdtscp) stalls on its cache misses and costs the
   * program ~4% of its CPU time in bench/overhead. The time of a block
   * handed over by another thread's free may then be a few nanoseconds
   * early, which the daemon's replay allows for (PROTOCOL.md, "Event
   * times"). The general path (aligned allocations, failures, events that
   * carry the totals) keeps the ordered read. */
  uint64_t t = HT_BENCH_CUT == 1 ? s->enc.time_ns + 1 : ht__now_ns();
  if (HT_BENCH_CUT == 2) {
    __asm__ volatile("" ::"r"(t)); /* the read stays */
    return;
  }
  uint32_t site = ht__wire_site_of(s, c);
#if HT_BENCH_CUT == 3
  static __thread uint8_t scratch[HT_PROTO_MAX_EVENT_BYTES];
  uint8_t *out = scratch;
#else
  uint8_t *out = ht__stream_room(s);
#endif
  if (HT_UNLIKELY(!out)) {
    ht__stream_carry(s, dbytes, dblocks); /* dropped: the next event sends the totals */
    return;
  }
  size_t n;
  uint64_t ptr = (uintptr_t)x->ptr;
  if (op == HT_OP_FREE)
    n = ht_event_encode_free(out, &s->enc, t, site, x->heap, x->caps, ptr, x->size);
  else if (op == HT_OP_REALLOC)
    n = ht_event_encode_realloc(out, &s->enc, t, site, x->heap, x->caps, ptr, (uintptr_t)x->old_ptr,
                                x->size, x->usable, x->old_usable);
  else /* MALLOC or CALLOC: one encoder, the op byte tells them apart */
    n = ht_event_encode_alloc(out, &s->enc, x->op, t, site, x->heap, x->caps, ptr, x->size,
                              x->usable);
  if (HT_BENCH_CUT == 3)
    __asm__ volatile("" ::"r"(n), "r"(out) : "memory"); /* the stores stay */
  else
    ht__stream_publish(s, n);
}

/* Records one successful transaction: the accounting, then (tracing) its
 * one event. A caps heap calls it with its lock held. */
static inline __attribute__((always_inline)) void
ht__commit(ht_call_t *c, const ht_txn_t *x, uint16_t type, int64_t dbytes, int64_t dblocks) {
  ht__account(c, x->op, type, dbytes, dblocks);
  if (HT_UNLIKELY(ht__tracing_on())) {
    /* x->op is a constant in most callers: the op's own function. */
    if (x->op == HT_OP_FREE)
      ht__trace_free(c, x, dbytes, dblocks);
    else if (x->op == HT_OP_REALLOC)
      ht__trace_realloc(c, x, dbytes, dblocks);
    else
      ht__trace_txn(c, x, dbytes, dblocks);
  }
}

/* ht__commit with the event encoded in line: the system heap's entry
 * points, where x->op is a constant, run as one function. */
static inline __attribute__((always_inline)) void
ht__commit_inline(ht_call_t *c, const ht_txn_t *x, uint16_t type, int64_t dbytes, int64_t dblocks) {
  const ht_txn_t v = *x; /* see ht__trace_op */
  ht__account(c, v.op, type, dbytes, dblocks);
  if (HT_UNLIKELY(ht__tracing_on())) {
    if (v.op == HT_OP_FREE || v.op == HT_OP_REALLOC || v.op == HT_OP_MALLOC || v.op == HT_OP_CALLOC)
      ht__trace_op(c, &v, dbytes, dblocks, v.op);
    else
      ht__trace_txn(c, x, dbytes, dblocks);
  }
}

/* Counts one failure in the thread's counters. */
void ht__acct_failure(void);

/* Per-site totals, summed over threads: calls[i], bytes[i] for i < n. */
void ht__acct_site_totals(uint64_t *calls, uint64_t *bytes, uint32_t n);

/* Replaces the process counters and per-site totals (state.c). Sites with
 * index >= n are zeroed. */
void ht__acct_restore(const ht_totals_t *t, const uint64_t *calls, const uint64_t *bytes,
                      uint32_t n);

/* ---- callbacks (callbacks.c) ---- */

/* Calls the alloc callback for the noted transaction. */
void ht__deliver_slow(void);

/* Every public entry point calls this last, with no lock held: the alloc
 * callback runs for the transaction ht__account() noted, if any. */
static inline void ht__deliver(void) {
  if (HT_UNLIKELY(ht__tls.armed))
    ht__deliver_slow();
}

/* Reports a failed call: counts it, sends its HT_OP_FAILED event, calls
 * the failed-alloc hook. No lock may be held. */
void ht__fail(ht_call_t *c, uint32_t op, const void *old_ptr, size_t size, uint32_t caps,
              size_t align);

/* ---- caps heap operations (caps.c) used by sysheap.c and typed.c ---- */

/* 1 when ht_caps_malloc_extmem_enable() routes plain allocations. */
extern _Atomic size_t ht__extmem_limit HT_HIDDEN;
static inline int ht__extmem_on(void) {
  return atomic_load_explicit(&ht__extmem_limit, memory_order_relaxed) != HT_CAPS_EXTMEM_DISABLED;
}

/* Plain allocation through the extmem routing (op MALLOC/CALLOC). */
void *ht__default_alloc(ht_call_t *c, uint32_t op, size_t size, int zero);

/* Plain realloc of any block through the extmem routing. */
void *ht__default_realloc(ht_call_t *c, void *ptr, size_t size);

/* Frees a block of region h (event, then release). */
void ht__heap_free_block(ht_call_t *c, ht_heap_t *h, void *ptr);

/* realloc of ptr (not NULL) to size (not 0) with caps, ESP-IDF's way: in
 * its own heap when that heap has caps (in place if it can), else moved to
 * a heap that has them. NULL without reporting; ptr is then untouched. */
void *ht__caps_realloc_core(ht_call_t *c, void *ptr, size_t size, uint32_t caps);

/* Serves a caps allocation (regions by priority, then the system heap);
 * NULL without reporting, the caller reports. */
void *ht__caps_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, uint32_t caps, int zero);

/* ---- system heap (sysheap.c) ---- */

/* glibc allocation, committed with caps (typed blocks enter the typed set).
 * NULL without reporting. align 0 = natural. */
void *ht__sys_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, int zero, uint32_t caps);

/* glibc free of ptr, committed. */
void ht__sys_free(ht_call_t *c, void *ptr, uint32_t caps);

/* Frees ptr of any heap, a region's or the system heap (ht_free's and
 * ht_caps_free's work), committed. */
void ht__free_any(ht_call_t *c, void *ptr);

/* glibc realloc of a system-heap block (size > 0), committed. NULL without
 * reporting; ptr is then untouched. */
void *ht__sys_realloc(ht_call_t *c, void *ptr, size_t size, uint32_t caps);

/* Moves a block of another heap into a new glibc block: allocates size
 * bytes, copies `copy` bytes from old, commits one REALLOC event from old
 * (old_usable) typed `type`. The caller frees old afterwards. NULL without
 * reporting. */
void *ht__sys_take_over(ht_call_t *c, const void *old, size_t copy, size_t old_usable,
                        uint16_t type, size_t size, uint32_t caps);

/* ---- poisoning (poison.c) ---- */

/* Writes the header and both canaries of a block whose user bytes start at
 * ptr (lead 1 << lead_log2 past the TLSF payload). */
void ht__blk_init(void *ptr, size_t size, uint32_t site, uint32_t caps, uint16_t type,
                  unsigned lead_log2);

/* The header of the block at ptr. */
static inline ht_blk_t *ht__blk(void *ptr) {
  return (ht_blk_t *)((char *)ptr - HT_BLK_BYTES);
}

/* Lead (bytes from TLSF payload to ptr) the header records. */
static inline size_t ht__blk_lead(const ht_blk_t *b) {
  return (size_t)1 << (b->tag & 0x3f);
}

/* Usable bytes of the intact block at ptr. */
size_t ht__blk_usable(void *ptr);

/* Checks the header and canaries of the block at ptr; returns HT_BLK_* bits. */
int ht__blk_verify(void *ptr);

/* Finds the user pointer of the used TLSF block at payload P (usable U),
 * from the tag at P. Returns NULL when the tag is damaged. */
void *ht__blk_from_payload(void *payload, size_t tlsf_usable);

/* Writes one line on stderr about the damaged block at ptr in heap h:
 * what is damaged, its address, size and allocation site. who names the
 * caller ("free", "check_integrity"). */
void ht__blk_report(const ht_heap_t *h, void *ptr, int bad, const char *who);

/* Re-seals a block after its size (and caps) changed in place. */
void ht__blk_resize(void *ptr, size_t size, uint32_t site, uint32_t caps);

/* Marks a block given back (so that a double free shows). */
void ht__blk_retire(void *ptr);

/* ---- heap walks (capsinfo.c) ---- */

/* Fills *out for h. Called with h->lock. */
void ht__heap_info_locked(const ht_heap_t *h, ht_heap_info_t *out);

#endif /* HT_CAPS_H */
