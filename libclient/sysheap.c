/* sysheap.c - traced allocation from the system heap (glibc malloc).
 *
 * The system heap is heap 0 with caps HT_SYSTEM_HEAP_CAPS. Each entry
 * point serves the request from libc and commits one transaction. The
 * event of an allocation is taken after libc returns and the event of a
 * free before the block goes back, so that when another thread gets the
 * same address its event is later in time than the free that released it
 * (but for a few nanoseconds of unfenced clock reads, which the daemon's
 * replay allows for). A realloc is glibc's own, so that a block grows in
 * place (or, mmap'd, moves without a copy) as it would untraced; one that
 * moves gives its old address back before its event is timed, and the
 * replay waits for it (PROTOCOL.md, "Event times").
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

/* ======================================================================
 * Usable size
 *
 * malloc_usable_size() costs a call through the PLT and, for a heap chunk,
 * a load of the next chunk's header (its in-use bit): a second cache miss
 * on every malloc, free and realloc. For a block the program holds, glibc's
 * answer is a function of the block's own size word, so it is read here
 * from the chunk header - once a check at start-up has shown that glibc
 * allocates and that the formula gives malloc_usable_size()'s answers.
 * Anything else (another malloc interposed, memory tagging, another libc)
 * keeps calling malloc_usable_size().
 * ==================================================================== */

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#define HT_CHUNK_USABLE 1
#else
#define HT_CHUNK_USABLE 0
#endif

/* 1: usable sizes come from the chunk header. Set once at start-up;
 * atomic only so that a thread already allocating may read it. */
static _Atomic int chunk_usable_on;

#if HT_CHUNK_USABLE
/* glibc's musable() (malloc.c, as of 2.36) for a block in use: the size
 * word before the block holds the chunk size with 3 flag bits below it,
 * IS_MMAPPED (2) among them. A heap chunk's user bytes run on into the
 * next chunk's prev_size word (chunk size - 2 words + 1); an mmap'd chunk
 * has no next chunk (chunk size - 2 words). With memory tagging on
 * (aarch64) glibc takes a word more off heap chunks: the start-up check
 * sees that and keeps the fallback. */
static inline size_t chunk_usable(const void *p) {
  const size_t *word = (const size_t *)p - 1;
  /* The word is glibc's, outside the block as C sees it: hide where the
   * pointer came from, so that the compiler does not judge the read. */
  __asm__("" : "+r"(word));
  size_t head = *word;
  size_t chunk = head & ~(size_t)7;
  return head & 2 ? chunk - 2 * sizeof(size_t) : chunk - sizeof(size_t);
}
#endif

/* Usable bytes of a glibc block the program holds: every caller's. */
static inline size_t usable_of(void *p) {
#if HT_CHUNK_USABLE
  if (HT_LIKELY(atomic_load_explicit(&chunk_usable_on, memory_order_relaxed)))
    return chunk_usable(p);
#endif
  return malloc_usable_size(p);
}

size_t ht__sys_usable(void *p) {
  return usable_of(p);
}

int ht__sys_usable_fast(void) {
  return atomic_load_explicit(&chunk_usable_on, memory_order_relaxed);
}

#if HT_CHUNK_USABLE
/* glibc's allocator serves the process: nothing interposed malloc (a
 * preloaded jemalloc or tcmalloc, a sanitizer, libc_malloc_debug.so),
 * whose blocks have no glibc chunk header to read. The volatiles keep the
 * compiler from deciding that two named functions differ. A program built
 * without PIE sees PLT addresses here, which differ: it keeps the
 * fallback. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static int glibc_allocates(void) {
  void *(*volatile m)(size_t) = malloc;
  void *(*volatile c)(size_t, size_t) = calloc;
  void *(*volatile r)(void *, size_t) = realloc;
  void (*volatile f)(void *) = free;
  return m == __libc_malloc && c == __libc_calloc && r == __libc_realloc && f == __libc_free;
}

/* Above glibc's largest dynamic mmap threshold (32 MiB on 64-bit): always
 * mmap'd, and its free leaves the threshold - the program's tuning - as it
 * was. Never touched, so it costs no memory. */
#define PROBE_BIG ((size_t)33 << 20)

/* 1 when usable(p) is malloc_usable_size(p); frees p. A tagged pointer
 * (aarch64 MTE) fails before its header is read: the read would fault.
 * NULL (out of memory) fails too: nothing was shown. */
static int agrees(void *p, size_t (*usable)(const void *)) {
  int ok = p && (uintptr_t)p >> 56 == 0 && usable(p) == malloc_usable_size(p);
  free(p);
  return ok;
}

/* A block from posix_memalign, NULL on failure. */
static void *aligned(size_t align, size_t size) {
  void *p;
  return posix_memalign(&p, align, size) == 0 ? p : NULL;
}

/* A block of `from` bytes realloc'ed to `to`, NULL on failure. */
static void *resized(size_t from, size_t to) {
  void *p = malloc(from), *np = p ? realloc(p, to) : NULL;
  if (!np)
    free(p);
  return np;
}

int ht__sys_usable_agrees(size_t (*usable)(const void *)) {
  /* Every kind of chunk the entry points see: small and large heap
   * chunks, mmap'd ones, and those that calloc, posix_memalign and
   * realloc (grown, shrunk in place, moved to mmap) leave. */
  static const size_t sizes[] = {0, 1, 24, 25, 1000, 70000, PROBE_BIG};
  int ok = 1;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    ok &= agrees(malloc(sizes[i]), usable);
    ok &= agrees(calloc(1, sizes[i]), usable);
    ok &= agrees(aligned(64, sizes[i]), usable);
    ok &= agrees(aligned(4096, sizes[i]), usable);
  }
  ok &= agrees(resized(100, 5000), usable);
  ok &= agrees(resized(5000, 40), usable);
  ok &= agrees(resized(100, PROBE_BIG), usable);
  return ok;
}

void ht__sys_usable_setup(int fast) {
  int on = fast && glibc_allocates() && ht__sys_usable_agrees(chunk_usable);
  atomic_store_explicit(&chunk_usable_on, on, memory_order_relaxed);
}
#else
int ht__sys_usable_agrees(size_t (*usable)(const void *)) {
  (void)usable;
  return 0;
}

void ht__sys_usable_setup(int fast) {
  (void)fast;
}
#endif

/* An allocated glibc block enters the typed set if c is typed. Returns the
 * type the block is accounted under (0 when the set is full). */
static inline uint16_t adopt_type(ht_call_t *c, const void *p, uint16_t type) {
  if (type && ht__typed_put(p, ht__call_site(c), type) != 0)
    return 0;
  return type;
}

/* The system heap's operations are written once, always inlined: into the
 * public entry points below, where the op is a constant and, with `hot`
 * (a constant) set, the whole call becomes one function with its event
 * encoded in line; and into the ht__sys_* functions the caps heaps and
 * typed.c call, and the rare cases of the entry points, which commit out
 * of line. */
#define HT_INLINE static inline __attribute__((always_inline))

/* ht__commit, in line when hot. */
HT_INLINE void commit(ht_call_t *c, const ht_txn_t *x, uint16_t type, int64_t dbytes,
                      int64_t dblocks, const int hot) {
  if (hot)
    ht__commit_inline(c, x, type, dbytes, dblocks);
  else
    ht__commit(c, x, type, dbytes, dblocks);
}

HT_INLINE void *sys_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, int zero,
                          uint32_t caps, const int hot) {
  /* Read before libc is called: the compiler must assume that a call may
   * change a call record whose address is passed on, and would load it
   * again after; read here it is the constant the caller just stored. */
  uint16_t type_idx = c->type_idx;
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
  size_t usable = usable_of(p);
  uint16_t type = adopt_type(c, p, type_idx);
  ht_txn_t x = {op, 0, caps, p, NULL, size, usable, 0, align};
  commit(c, &x, type, (int64_t)usable, 1, hot);
  return p;
}

void *ht__sys_alloc(ht_call_t *c, uint32_t op, size_t size, size_t align, int zero, uint32_t caps) {
  return sys_alloc(c, op, size, align, zero, caps, 0);
}

HT_INLINE void sys_free(ht_call_t *c, void *ptr, uint32_t caps, const int hot) {
  size_t usable = usable_of(ptr);
  uint16_t type = ht__typed_take(ptr);
  ht_txn_t x = {HT_OP_FREE, 0, caps, ptr, NULL, usable, usable, 0, 0};
  commit(c, &x, type, -(int64_t)usable, -1, hot);
  free(ptr);
}

void ht__sys_free(ht_call_t *c, void *ptr, uint32_t caps) {
  sys_free(c, ptr, caps, 0);
}

HT_INLINE void *sys_realloc(ht_call_t *c, void *ptr, size_t size, uint32_t caps, const int hot) {
  size_t old_usable = usable_of(ptr);
  /* Out of the typed set first: once libc has the old address back,
   * another thread may enter it again. */
  uint16_t type = ht__typed_take(ptr);
  void *np = realloc(ptr, size);
  if (!np) {
    adopt_type(c, ptr, type);
    return NULL;
  }
  uint16_t kept = adopt_type(c, np, type);
  if (type && !kept) /* the set is full: the old block leaves the type's numbers */
    ht__type_account(type, -(int64_t)old_usable, -1, 0);
  size_t usable = usable_of(np);
  ht_txn_t x = {HT_OP_REALLOC, 0, caps, np, ptr, size, usable, old_usable, 0};
  commit(c, &x, kept, (int64_t)usable - (int64_t)old_usable, 0, hot);
  return np;
}

void *ht__sys_realloc(ht_call_t *c, void *ptr, size_t size, uint32_t caps) {
  return sys_realloc(c, ptr, size, caps, 0);
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
  size_t usable = usable_of(np);
  ht_txn_t x = {HT_OP_REALLOC, 0, caps, np, old, size, usable, old_usable, 0};
  ht__commit(c, &x, kept, (int64_t)usable - (int64_t)old_usable, 0);
  return np;
}

/* ======================================================================
 * Public entry points
 * ==================================================================== */

/* A plain allocation: the system heap, or the extmem routing when on. */
HT_INLINE void *plain_alloc(ht_call_t *c, uint32_t op, size_t size, int zero, const int hot) {
  void *p;
  if (HT_UNLIKELY(ht__extmem_on()))
    p = ht__default_alloc(c, op, size, zero);
  else if (!(p = sys_alloc(c, op, size, 0, zero, HT_SYSTEM_HEAP_CAPS, hot)))
    ht__fail(c, op, NULL, size, HT_SYSTEM_HEAP_CAPS, 0);
  ht__deliver();
  return p;
}

/* The public entry points come in two forms: the _at form, which the
 * macros reach with GCC and Clang (a static call site that keeps its
 * index), and the plain form (file, line, function), for other compilers
 * and callers that have no static site. Only the _at forms have their
 * event encoded in line. */
void *ht__malloc(size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_malloc", file, line, func, NULL);
  return plain_alloc(&c, HT_OP_MALLOC, size, 0, 0);
}

void *ht__malloc_at(size_t size, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_malloc", where);
  return plain_alloc(&c, HT_OP_MALLOC, size, 0, 1);
}

/* calloc of n x size on a filled call. */
HT_INLINE void *plain_calloc(ht_call_t *c, size_t n, size_t size, const int hot) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    ht__fail(c, HT_OP_CALLOC, NULL, SIZE_MAX, HT_SYSTEM_HEAP_CAPS, 0);
    return NULL;
  }
  return plain_alloc(c, HT_OP_CALLOC, total, 1, hot);
}

void *ht__calloc(size_t n, size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_calloc", file, line, func, NULL);
  return plain_calloc(&c, n, size, 0);
}

void *ht__calloc_at(size_t n, size_t size, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_calloc", where);
  return plain_calloc(&c, n, size, 1);
}

/* Frees a block of any heap. */
HT_INLINE void free_block(ht_call_t *c, void *ptr, const int hot) {
  ht_heap_t *h = ht__nheaps() ? ht__heap_of(ptr) : NULL;
  if (h)
    ht__heap_free_block(c, h, ptr);
  else
    sys_free(c, ptr, HT_SYSTEM_HEAP_CAPS, hot);
}

void ht__free_any(ht_call_t *c, void *ptr) {
  free_block(c, ptr, 0);
}

void ht__free(void *ptr, const char *file, int line, const char *func) {
  if (!ptr)
    return;
  ht_call_t c;
  ht__call_init(&c, "ht_free", file, line, func, NULL);
  free_block(&c, ptr, 0);
  ht__deliver();
}

void ht__free_at(void *ptr, const ht_where_t *where) {
  if (!ptr)
    return;
  ht_call_t c;
  ht__call_init_at(&c, "ht_free", where);
  free_block(&c, ptr, 1);
  ht__deliver();
}

/* A realloc of a non-NULL block to a non-zero size: a region block keeps
 * the caps it was allocated with (it may still move to another heap that
 * has them); a glibc block stays with glibc. */
HT_INLINE void *plain_realloc(ht_call_t *c, void *ptr, size_t size, const int hot) {
  if (HT_UNLIKELY(ht__extmem_on()))
    return ht__default_realloc(c, ptr, size);
  ht_heap_t *h = ht__nheaps() ? ht__heap_of(ptr) : NULL;
  uint32_t caps = h ? ht__blk(ptr)->caps : HT_SYSTEM_HEAP_CAPS;
  void *np;
  if (h) {
    np = ht__caps_realloc_core(c, ptr, size, caps);
  } else {
    ht__call_set_type(c, ht__typed_peek(ptr));
    np = sys_realloc(c, ptr, size, caps, hot);
  }
  if (!np)
    ht__fail(c, HT_OP_REALLOC, ptr, size, caps, 0);
  return np;
}

/* realloc on a filled call: NULL and size 0 are the rare cases. */
HT_INLINE void *any_realloc(ht_call_t *c, void *ptr, size_t size, const int hot) {
  if (!ptr)
    return plain_alloc(c, HT_OP_MALLOC, size, 0, 0);
  void *np = NULL;
  if (size == 0)
    free_block(c, ptr, 0);
  else
    np = plain_realloc(c, ptr, size, hot);
  ht__deliver();
  return np;
}

void *ht__realloc(void *ptr, size_t size, const char *file, int line, const char *func) {
  ht_call_t c;
  ht__call_init(&c, "ht_realloc", file, line, func, NULL);
  return any_realloc(&c, ptr, size, 0);
}

void *ht__realloc_at(void *ptr, size_t size, const ht_where_t *where) {
  ht_call_t c;
  ht__call_init_at(&c, "ht_realloc", where);
  return any_realloc(&c, ptr, size, 1);
}
