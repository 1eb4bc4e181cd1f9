/* typed.c - typed allocation (Halloc): HT_NEW, per-type statistics, and
 * the map that remembers the type of typed system-heap blocks.
 *
 * A type is a name (HT_NEW's #type) interned by content into a static
 * table (under type_lock); its statistics are atomic counters, so that a
 * typed transaction takes no lock for them (a peak is raised by a
 * compare-and-swap to each value the live count passes through: exact).
 * Readers see each field as it was at some moment, not all of them at one.
 * A caps-heap block keeps its type index in its header; a glibc block has
 * no header, so a typed one is entered into the typed set, an
 * address-keyed open-addressing table in mmap'd memory, split in shards
 * with a lock each. Untyped programs never touch it: every system free
 * first checks ht__typed_live, the number of shards holding a block, which
 * stays 0 until HT_NEW is used on the system heap (and, changing only
 * when a shard empties or fills again, is no line the threads fight for).
 * When a shard is full the block is served but left out of the type's
 * statistics (counted in `untracked`), so that the numbers stay
 * consistent.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "caps.h"

#define TYPE_SLOTS (2 * HT_TYPE_MAX)
#define TSET_SHARDS 16
#define TSET_SLOTS (1u << 15) /* per shard; at most 3/4 used */

/* ======================================================================
 * Types
 * ==================================================================== */

typedef struct {
  const char *name;
  uint64_t hash;
  ht_type_stats_t st;
} type_t;

static type_t types[HT_TYPE_MAX];
static uint16_t type_slots[TYPE_SLOTS];
static _Atomic uint32_t ntypes = 1;
static pthread_mutex_t type_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t untracked;

static uint64_t hash_name(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

/* Slot of name, or of the empty slot where it would go. type_lock held. */
static uint32_t find_slot(const char *name, uint64_t h) {
  for (uint32_t i = (uint32_t)h & (TYPE_SLOTS - 1);; i = (i + 1) & (TYPE_SLOTS - 1)) {
    uint16_t k = type_slots[i];
    if (k == 0 || (types[k].hash == h && strcmp(types[k].name, name) == 0))
      return i;
  }
}

uint16_t ht__type_intern(const char *name) {
  if (!name)
    return 0;
  uint64_t h = hash_name(name);
  pthread_mutex_lock(&type_lock);
  uint32_t i = find_slot(name, h);
  uint16_t k = type_slots[i];
  uint32_t n = atomic_load_explicit(&ntypes, memory_order_relaxed);
  if (k == 0 && n < HT_TYPE_MAX) {
    k = (uint16_t)n;
    types[k].name = name;
    types[k].hash = h;
    memset(&types[k].st, 0, sizeof types[k].st);
    types[k].st.name = name;
    type_slots[i] = k;
    atomic_store_explicit(&ntypes, n + 1, memory_order_release);
  }
  pthread_mutex_unlock(&type_lock);
  return k;
}

const char *ht__type_name(uint16_t idx) {
  if (idx == 0 || idx >= atomic_load_explicit(&ntypes, memory_order_acquire))
    return NULL;
  return types[idx].name;
}

/* Raises *peak to v if v is higher. */
static void raise_peak(int64_t *peak, int64_t v) {
  int64_t p = __atomic_load_n(peak, __ATOMIC_RELAXED);
  while (v > p &&
         !__atomic_compare_exchange_n(peak, &p, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

void ht__type_account(uint16_t idx, int64_t dbytes, int64_t dblocks, uint64_t grown) {
  if (idx == 0 || idx >= atomic_load_explicit(&ntypes, memory_order_acquire))
    return;
  ht_type_stats_t *st = &types[idx].st;
  if (dblocks > 0)
    __atomic_fetch_add(&st->allocs, (uint64_t)dblocks, __ATOMIC_RELAXED);
  if (grown)
    __atomic_fetch_add(&st->bytes, grown, __ATOMIC_RELAXED);
  if (dblocks)
    raise_peak(&st->peak_blocks, __atomic_add_fetch(&st->cur_blocks, dblocks, __ATOMIC_RELAXED));
  if (dbytes)
    raise_peak(&st->peak_bytes, __atomic_add_fetch(&st->cur_bytes, dbytes, __ATOMIC_RELAXED));
}

/* Type idx's statistics, each field read atomically. */
static void read_stats(uint16_t idx, ht_type_stats_t *out) {
  const ht_type_stats_t *st = &types[idx].st;
  out->name = types[idx].name;
  out->allocs = __atomic_load_n(&st->allocs, __ATOMIC_RELAXED);
  out->bytes = __atomic_load_n(&st->bytes, __ATOMIC_RELAXED);
  out->cur_blocks = __atomic_load_n(&st->cur_blocks, __ATOMIC_RELAXED);
  out->cur_bytes = __atomic_load_n(&st->cur_bytes, __ATOMIC_RELAXED);
  out->peak_blocks = __atomic_load_n(&st->peak_blocks, __ATOMIC_RELAXED);
  out->peak_bytes = __atomic_load_n(&st->peak_bytes, __ATOMIC_RELAXED);
}

/* Sets type idx's statistics from in (its name stays). */
static void write_stats(uint16_t idx, const ht_type_stats_t *in) {
  ht_type_stats_t *st = &types[idx].st;
  __atomic_store_n(&st->allocs, in->allocs, __ATOMIC_RELAXED);
  __atomic_store_n(&st->bytes, in->bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&st->cur_blocks, in->cur_blocks, __ATOMIC_RELAXED);
  __atomic_store_n(&st->cur_bytes, in->cur_bytes, __ATOMIC_RELAXED);
  __atomic_store_n(&st->peak_blocks, in->peak_blocks, __ATOMIC_RELAXED);
  __atomic_store_n(&st->peak_bytes, in->peak_bytes, __ATOMIC_RELAXED);
}

int ht_get_type_stats(const char *name, ht_type_stats_t *out) {
  if (!name || !out)
    return HT_EINVAL;
  pthread_mutex_lock(&type_lock);
  uint16_t k = type_slots[find_slot(name, hash_name(name))];
  if (k)
    read_stats(k, out);
  pthread_mutex_unlock(&type_lock);
  return k ? HT_OK : HT_ENOTFOUND;
}

uint32_t ht__type_snapshot(ht_type_stats_t *out, uint32_t cap) {
  uint32_t n = atomic_load_explicit(&ntypes, memory_order_acquire);
  uint32_t k = 0;
  for (uint32_t i = 1; i < n && k < cap; i++)
    read_stats((uint16_t)i, &out[k++]);
  return k;
}

void ht__type_restore(const ht_type_stats_t *in, uint32_t n) {
  /* Names first (interning takes type_lock), then the numbers at once. */
  uint16_t idx[HT_TYPE_MAX];
  for (uint32_t i = 0; i < n; i++)
    idx[i] = ht__type_intern(in[i].name);
  static const ht_type_stats_t zero;
  uint32_t have = atomic_load_explicit(&ntypes, memory_order_acquire);
  for (uint32_t i = 1; i < have; i++)
    write_stats((uint16_t)i, &zero);
  for (uint32_t i = 0; i < n; i++)
    if (idx[i])
      write_stats(idx[i], &in[i]);
}

/* ======================================================================
 * Typed set: address -> (site, type) of typed system-heap blocks
 * ==================================================================== */

typedef struct {
  uintptr_t ptr; /* 0 = empty */
  uint32_t site;
  uint16_t type;
  uint16_t unused;
} tslot_t;

static struct {
  pthread_mutex_t lock;
  tslot_t *slots;
  uint32_t count;
} shards[TSET_SHARDS] = {
#define SHARD_INIT                                                                                 \
  { PTHREAD_MUTEX_INITIALIZER, NULL, 0 }
    SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT,
    SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT, SHARD_INIT,
#undef SHARD_INIT
};

_Atomic long ht__typed_live;

static uint64_t ptr_hash(const void *p) {
  return ((uint64_t)(uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull;
}

/* Index of p's slot or of the empty slot ending its probe. Shard locked. */
static uint32_t probe(const tslot_t *slots, uintptr_t p, uint64_t h) {
  uint32_t i = (uint32_t)(h >> 20) & (TSET_SLOTS - 1);
  while (slots[i].ptr && slots[i].ptr != p)
    i = (i + 1) & (TSET_SLOTS - 1);
  return i;
}

int ht__typed_put(const void *p, uint32_t site, uint16_t type) {
  uint64_t h = ptr_hash(p);
  __typeof__(shards[0]) *sh = &shards[h >> 60];
  int rc = HT_ENOMEM;
  pthread_mutex_lock(&sh->lock);
  if (!sh->slots) {
    void *m = mmap(NULL, TSET_SLOTS * sizeof(tslot_t), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    sh->slots = m == MAP_FAILED ? NULL : m;
  }
  if (sh->slots && sh->count < TSET_SLOTS / 4 * 3) {
    uint32_t i = probe(sh->slots, (uintptr_t)p, h);
    if (sh->slots[i].ptr == 0 && sh->count++ == 0)
      atomic_fetch_add_explicit(&ht__typed_live, 1, memory_order_relaxed);
    sh->slots[i] = (tslot_t){(uintptr_t)p, site, type, 0};
    rc = 0;
  }
  pthread_mutex_unlock(&sh->lock);
  if (rc)
    atomic_fetch_add_explicit(&untracked, 1, memory_order_relaxed);
  return rc;
}

/* Removes slot i by shifting later members of its probe run back (no
 * tombstones, so probes stay short). Shard locked. */
static void remove_slot(tslot_t *slots, uint32_t i) {
  for (uint32_t j = (i + 1) & (TSET_SLOTS - 1); slots[j].ptr; j = (j + 1) & (TSET_SLOTS - 1)) {
    uint32_t home = (uint32_t)(ptr_hash((void *)slots[j].ptr) >> 20) & (TSET_SLOTS - 1);
    /* j may move to i if its home is not in (i, j] cyclically. */
    int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      slots[i] = slots[j];
      i = j;
    }
  }
  slots[i].ptr = 0;
}

/* Looks p up; with take, removes it. Returns its type or 0. */
static uint16_t lookup(const void *p, int take) {
  if (atomic_load_explicit(&ht__typed_live, memory_order_relaxed) == 0)
    return 0;
  uint64_t h = ptr_hash(p);
  __typeof__(shards[0]) *sh = &shards[h >> 60];
  uint16_t type = 0;
  pthread_mutex_lock(&sh->lock);
  if (sh->slots) {
    uint32_t i = probe(sh->slots, (uintptr_t)p, h);
    if (sh->slots[i].ptr) {
      type = sh->slots[i].type;
      if (take) {
        remove_slot(sh->slots, i);
        if (--sh->count == 0)
          atomic_fetch_sub_explicit(&ht__typed_live, 1, memory_order_relaxed);
      }
    }
  }
  pthread_mutex_unlock(&sh->lock);
  return type;
}

uint16_t ht__typed_take_slow(const void *p) {
  return lookup(p, 1);
}

void ht__types_hold(int hold) {
  if (hold) {
    pthread_mutex_lock(&type_lock);
    for (int s = 0; s < TSET_SHARDS; s++)
      pthread_mutex_lock(&shards[s].lock);
  } else {
    for (int s = TSET_SHARDS; s-- > 0;)
      pthread_mutex_unlock(&shards[s].lock);
    pthread_mutex_unlock(&type_lock);
  }
}

uint16_t ht__typed_peek_slow(const void *p) {
  return lookup(p, 0);
}

/* ======================================================================
 * HT_NEW
 * ==================================================================== */

void *ht__new(size_t elem_size, size_t n, const char *type, const char *file, int line,
              const char *func) {
  ht_call_t c;
  ht__call_init(&c, "HT_NEW", file, line, func, type);
  size_t total;
  void *p = NULL;
  if (__builtin_mul_overflow(elem_size, n, &total))
    ht__fail(&c, HT_OP_CALLOC, NULL, SIZE_MAX, HT_SYSTEM_HEAP_CAPS, 0);
  else if (ht__extmem_on())
    p = ht__default_alloc(&c, HT_OP_CALLOC, total, 1);
  else if (!(p = ht__sys_alloc(&c, HT_OP_CALLOC, total, 0, 1, HT_SYSTEM_HEAP_CAPS)))
    ht__fail(&c, HT_OP_CALLOC, NULL, total, HT_SYSTEM_HEAP_CAPS, 0);
  ht__deliver();
  return p;
}

void *ht__caps_new(size_t elem_size, size_t n, uint32_t caps, const char *type, const char *file,
                   int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "HT_CAPS_NEW", file, line, func, type);
  size_t total = SIZE_MAX;
  void *p = NULL;
  if (!__builtin_mul_overflow(elem_size, n, &total))
    p = ht__caps_alloc(&c, HT_OP_CALLOC, total, 0, caps, 1);
  if (!p)
    ht__fail(&c, HT_OP_CALLOC, NULL, total, caps, 0);
  ht__deliver();
  return p;
}

/* ======================================================================
 * Printing
 * ==================================================================== */

static void print_type_row(const ht_type_stats_t *st) {
  printf("  %-28s %10lld %12lld %10lld %12lld %10llu %14llu\n", st->name, (long long)st->cur_blocks,
         (long long)st->cur_bytes, (long long)st->peak_blocks, (long long)st->peak_bytes,
         (unsigned long long)st->allocs, (unsigned long long)st->bytes);
}

void ht_print_total_memory_usage(void) {
  ht_totals_t t;
  ht_get_totals(&t);
  printf("heaptrace memory usage: %lld live blocks, %lld bytes; %llu allocations, %llu frees, "
         "%llu reallocs, %llu failures; %llu bytes allocated in total\n",
         (long long)t.cur_blocks, (long long)t.cur_bytes, (unsigned long long)t.allocs,
         (unsigned long long)t.frees, (unsigned long long)t.reallocs,
         (unsigned long long)t.failures, (unsigned long long)t.total_bytes);
  static ht_type_stats_t rows[HT_TYPE_MAX]; /* stack space is the caller's */
  static pthread_mutex_t rows_lock = PTHREAD_MUTEX_INITIALIZER;
  int cancel = ht__cancel_off(); /* printf with rows_lock held */
  pthread_mutex_lock(&rows_lock);
  uint32_t n = ht__type_snapshot(rows, HT_TYPE_MAX);
  if (n)
    printf("  %-28s %10s %12s %10s %12s %10s %14s\n", "type", "blocks", "bytes", "peak blk",
           "peak bytes", "allocs", "bytes total");
  for (uint32_t i = 0; i < n; i++)
    print_type_row(&rows[i]);
  pthread_mutex_unlock(&rows_lock);
  ht__cancel_restore(cancel);
  uint64_t u = atomic_load_explicit(&untracked, memory_order_relaxed);
  if (u)
    printf("  (%llu typed system-heap blocks not in the type statistics: typed set full)\n",
           (unsigned long long)u);
  fflush(stdout);
}

void ht__print_type_memory_usage(const char *type) {
  ht_type_stats_t st;
  if (ht_get_type_stats(type, &st) != 0) {
    printf("heaptrace type %s: no allocations\n", type ? type : "(null)");
  } else {
    printf("heaptrace type %s: %lld live blocks, %lld bytes (peak %lld blocks, %lld bytes); "
           "%llu allocations, %llu bytes in total\n",
           st.name, (long long)st.cur_blocks, (long long)st.cur_bytes, (long long)st.peak_blocks,
           (long long)st.peak_bytes, (unsigned long long)st.allocs, (unsigned long long)st.bytes);
  }
  fflush(stdout);
}

/* Prints one typed caps-heap block. */
static bool print_caps_item(ht_walker_heap_info_t heap, ht_walker_block_info_t b, void *user) {
  size_t *count = user;
  if (b.used && b.type) {
    printf("  %p  %-24s %10zu bytes  heap %u '%s'  %s:%d\n", b.ptr, b.type, b.size, heap.id,
           heap.name, b.file ? b.file : "?", b.line);
    ++*count;
  }
  return true;
}

/* Prints the typed system-heap blocks of one shard. Shard locked. */
static size_t print_shard(const tslot_t *slots) {
  size_t count = 0;
  for (uint32_t i = 0; slots && i < TSET_SLOTS; i++) {
    if (!slots[i].ptr)
      continue;
    ht_site_info_t si = {"?", "?", NULL, 0, 0};
    ht__acct_site_info(slots[i].site, &si);
    const char *name = ht__type_name(slots[i].type);
    printf("  %p  %-24s %10zu bytes  heap 0 'system'  %s:%d\n", (void *)slots[i].ptr,
           name ? name : "?", ht__sys_usable((void *)slots[i].ptr), si.file ? si.file : "?",
           si.line);
    count++;
  }
  return count;
}

void ht_print_saved_page_items(void) {
  printf("heaptrace saved items (live typed blocks):\n");
  size_t count = 0;
  for (int s = 0; s < TSET_SHARDS; s++) {
    pthread_mutex_lock(&shards[s].lock);
    count += print_shard(shards[s].slots);
    pthread_mutex_unlock(&shards[s].lock);
  }
  ht_caps_walk_all(print_caps_item, &count);
  printf("  %zu items\n", count);
  fflush(stdout);
}
