/* heaptrace.h - the public API of libheaptrace.
 *
 * An application calls ht_malloc()/ht_calloc()/ht_realloc()/ht_free() (macros
 * that capture the call site) instead of the libc names. Each call is served
 * by an allocator and recorded as one event in a per-thread buffer; a
 * background thread streams the buffers to heaptraced over a Unix socket.
 * See proto/PROTOCOL.md for the wire format and README.md for the tools.
 */
#ifndef HEAPTRACE_HEAPTRACE_H
#define HEAPTRACE_HEAPTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HT_BUILDING_LIBRARY) && defined(__GNUC__)
#define HT_EXTERN __attribute__((visibility("default")))
#else
#define HT_EXTERN
#endif

#define HT_VERSION_MAJOR 0
#define HT_VERSION_MINOR 1
#define HT_VERSION_PATCH 0

/* ------------------------------------------------------------------------
 * Errors: 0 or a negative code from this one table.
 * ---------------------------------------------------------------------- */
#define HT_ERRNO_MAP(X)                                                                            \
  X(EINVAL, -1, "invalid argument")                                                                \
  X(ENOMEM, -2, "out of memory")                                                                   \
  X(ENOTFOUND, -3, "not found")                                                                    \
  X(ESIZE, -4, "region too small to hold a heap")                                                  \
  X(EOVERLAP, -5, "region overlaps a registered heap")                                             \
  X(EIO, -6, "input/output error")                                                                 \
  X(ENOTCONN, -7, "not connected to heaptraced")                                                   \
  X(EAGAIN, -8, "incomplete: more bytes are needed")                                               \
  X(ETRUNCATED, -20, "record ends before its fields do")                                           \
  X(EFRAMESIZE, -21, "frame length outside the allowed range")                                     \
  X(EMAGIC, -22, "bad magic: the peer does not speak the heaptrace protocol")                      \
  X(EVERSION, -23, "protocol version newer than this build understands")                           \
  X(ERECORD, -24, "unknown record type")                                                           \
  X(ESTRING, -25, "string runs past the end of its record")                                        \
  X(ESTRLEN, -26, "string longer than the protocol allows")                                        \
  X(EVARINT, -27, "varint longer than ten bytes")                                                  \
  X(ETRAILING, -28, "bytes left over after the last field of a record")                            \
  X(EOP, -29, "unknown event operation")                                                           \
  X(ELIMIT, -30, "count above the protocol limit")                                                 \
  X(ESTRNUL, -31, "string contains a NUL byte")                                                    \
  X(EORDER, -32, "record out of order (handshake missing or repeated)")                            \
  X(ESTATE, -33, "state blob is malformed")                                                        \
  X(ESTATEVER, -34, "state blob is from a newer version")

typedef enum {
  HT_OK = 0,
#define HT__ERR_ENUM(name, code, msg) HT_##name = (code),
  HT_ERRNO_MAP(HT__ERR_ENUM)
#undef HT__ERR_ENUM
} ht_err_t;

/* Returns a static, human-readable description of an HT_E* code. */
HT_EXTERN const char *ht_strerror(int err);
/* Returns the symbolic name ("HT_ETRUNCATED") of an HT_E* code. */
HT_EXTERN const char *ht_err_name(int err);

/* ------------------------------------------------------------------------
 * Capabilities: ESP-IDF's MALLOC_CAP_* bits, same values.
 * ---------------------------------------------------------------------- */
#define HT_CAP_EXEC (1u << 0)
#define HT_CAP_32BIT (1u << 1)
#define HT_CAP_8BIT (1u << 2)
#define HT_CAP_DMA (1u << 3)
#define HT_CAP_PID2 (1u << 4)
#define HT_CAP_PID3 (1u << 5)
#define HT_CAP_PID4 (1u << 6)
#define HT_CAP_PID5 (1u << 7)
#define HT_CAP_PID6 (1u << 8)
#define HT_CAP_PID7 (1u << 9)
#define HT_CAP_SPIRAM (1u << 10)
#define HT_CAP_INTERNAL (1u << 11)
#define HT_CAP_DEFAULT (1u << 12)
#define HT_CAP_IRAM_8BIT (1u << 13)
#define HT_CAP_RETENTION (1u << 14)
#define HT_CAP_RTCRAM (1u << 15)
#define HT_CAP_INVALID (1u << 31)

/* The capabilities of the system heap (glibc malloc), heap id 0. */
#define HT_SYSTEM_HEAP_CAPS (HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT)

/* ------------------------------------------------------------------------
 * Traced allocation. The macros record file, line and function; the
 * functions behind them are part of the ABI but meant to be reached through
 * the macros.
 * ---------------------------------------------------------------------- */
HT_EXTERN void *ht__malloc(size_t size, const char *file, int line, const char *func);
HT_EXTERN void *ht__calloc(size_t n, size_t size, const char *file, int line, const char *func);
HT_EXTERN void *ht__realloc(void *ptr, size_t size, const char *file, int line, const char *func);
HT_EXTERN void ht__free(void *ptr, const char *file, int line, const char *func);

/* Where a traced call is made: with GCC and Clang, one constant static
 * object per expansion of the macros below, whose address the library
 * maps to the call site's index once the site has been interned, so that
 * later calls from there need not look the site up by its strings. */
typedef struct ht_where {
  const char *file;
  const char *func;
  int line;
} ht_where_t;

HT_EXTERN void *ht__malloc_at(size_t size, const ht_where_t *where);
HT_EXTERN void *ht__calloc_at(size_t n, size_t size, const ht_where_t *where);
HT_EXTERN void *ht__realloc_at(void *ptr, size_t size, const ht_where_t *where);
HT_EXTERN void ht__free_at(void *ptr, const ht_where_t *where);

#if defined(__GNUC__)
#define HT__WHERE()                                                                                \
  (__extension__({                                                                                 \
    static const ht_where_t ht__where_ = {__FILE__, __func__, __LINE__};                           \
    &ht__where_;                                                                                   \
  }))
#define ht_malloc(size) ht__malloc_at((size), HT__WHERE())
#define ht_calloc(n, size) ht__calloc_at((n), (size), HT__WHERE())
#define ht_realloc(ptr, size) ht__realloc_at((ptr), (size), HT__WHERE())
#define ht_free(ptr) ht__free_at((ptr), HT__WHERE())
#else
#define ht_malloc(size) ht__malloc((size), __FILE__, __LINE__, __func__)
#define ht_calloc(n, size) ht__calloc((n), (size), __FILE__, __LINE__, __func__)
#define ht_realloc(ptr, size) ht__realloc((ptr), (size), __FILE__, __LINE__, __func__)
#define ht_free(ptr) ht__free((ptr), __FILE__, __LINE__, __func__)
#endif

/* Ships every event recorded so far to the daemon and waits until it has
 * been written to the socket. Returns 0, or HT_ENOTCONN when tracing is off
 * or the connection was lost (in drop mode: the daemon read nothing for
 * 5 s). exit() does this itself; call it before an exec, which runs no
 * exit handler (what the last 50 ms recorded would be lost). */
HT_EXTERN int ht_flush(void);

/* Returns 1 when events are being streamed to a daemon, else 0. */
HT_EXTERN int ht_tracing_enabled(void);

/* The per-thread event buffers mapped now: one for each thread that has
 * traced, until the events of a thread that exited are shipped and its
 * buffer is unmapped (by the background thread, or at once by ht_flush). */
HT_EXTERN size_t ht_trace_buffers(void);

/* ========================================================================
 * Capability heaps (ESP-IDF heap_caps_*, one to one under the ht_ prefix)
 *
 * A region of caller memory (a static array, an mmap'd area) becomes a heap
 * with up to three capability masks, one per priority level; a TLSF
 * allocator manages it and its control structure lives inside the region,
 * so registering never calls malloc. The system heap (glibc malloc) is
 * heap 0 with HT_SYSTEM_HEAP_CAPS; regions get ids 1, 2, ... in order.
 *
 * Region choice (ESP-IDF's rule): a heap serves a request at priority level
 * p when its level-p mask shares at least one bit with the requested caps
 * and the union of its three masks holds every requested bit. Level 0 is
 * tried across all heaps in registration order, then level 1, then level 2;
 * when no region has room, the system heap serves requests whose caps are
 * a subset of HT_SYSTEM_HEAP_CAPS (caps 0 included). A request with
 * HT_CAP_INVALID fails.
 *
 * Every block of a caps heap carries light poisoning: a 32-byte header
 * (size, allocation site, caps, type, head canary) before the pointer and a
 * 4-byte tail canary right after the requested bytes. Together with the
 * 16-byte TLSF header that is HT_CAPS_BLOCK_OVERHEAD = 52 bytes per block
 * (an aligned block whose alignment A exceeds 32 uses A - 32 more before the
 * header). Canaries are checked on free and by the integrity calls; a
 * damaged block is reported on stderr in one line naming its address, size
 * and allocation site. docs/allocator.md has the exact layout.
 *
 * Every function is thread safe: each heap has its own lock, and no lock is
 * held while a user callback (failed-alloc, alloc, walk) runs.
 * ====================================================================== */
#define HT_HEAP_MAX 64            /* regions that can be registered */
#define HT_CAPS_PRIOS 3           /* capability masks (priority levels) per region */
#define HT_HEAP_NAME_MAX 31       /* bytes of a heap name kept, NUL excluded */
#define HT_CAPS_BLOCK_OVERHEAD 52 /* footprint - usable of a caps block: 16 + 32 + 4 */

/* The caps ht_heap_add_region() gives a region: a host has no SoC memory
 * map to look the address up in, so a region is taken to be ordinary
 * internal RAM. */
#define HT_REGION_DEFAULT_CAPS (HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT | HT_CAP_INTERNAL)

/* ht_caps_malloc_extmem_enable() argument that turns the routing off again. */
#define HT_CAPS_EXTMEM_DISABLED ((size_t)-1)

/* Opaque handle of a registered region (ESP-IDF multi_heap_handle_t). */
typedef struct ht_heap *ht_heap_handle_t;

/* multi_heap_info_t: the seven fields, same names and meaning. For a caps
 * heap, "bytes" of allocated blocks are usable bytes (see docs/allocator.md)
 * and free bytes are the payload of free TLSF blocks. */
typedef struct {
  size_t total_free_bytes;      /* free bytes in the heap(s) */
  size_t total_allocated_bytes; /* usable bytes of the allocated blocks */
  size_t largest_free_block;    /* largest size ht_caps_malloc() will succeed with */
  size_t minimum_free_bytes;    /* lifetime minimum of total_free_bytes */
  size_t allocated_blocks;      /* blocks allocated */
  size_t free_blocks;           /* free blocks (never two adjacent: TLSF coalesces) */
  size_t total_blocks;          /* allocated_blocks + free_blocks */
} ht_heap_info_t;

/* esp_alloc_failed_hook_t: called for every failed allocation, after the
 * failure's HT_OP_FAILED event, with no heap lock held. function_name is
 * the public entry point that failed ("ht_caps_malloc", "ht_malloc", ...). */
typedef void (*ht_alloc_failed_hook_t)(size_t size, uint32_t caps, const char *function_name);

/* Walker arguments (ESP-IDF walker_heap_into_t / walker_block_info_t, with
 * more fields). For an allocated block ptr is what the allocation returned
 * and size its usable bytes; for a free block ptr is the start of the free
 * payload and size its bytes. */
typedef struct {
  intptr_t start; /* the region as registered */
  intptr_t end;
  uint32_t id;      /* heap id (1..) */
  const char *name; /* heap name */
} ht_walker_heap_info_t;

typedef struct {
  void *ptr;
  size_t size;
  bool used;
  size_t requested; /* allocated blocks: bytes asked for */
  uint32_t caps;    /* allocated blocks: caps asked for */
  const char *file; /* allocated blocks: site of the last (re)allocation, or NULL */
  int line;
  const char *func;
  const char *type; /* HT_NEW type name, or NULL */
  bool corrupt;     /* header or canary damaged (then only ptr/size hold) */
} ht_walker_block_info_t;

/* Return true to go on, false to stop the walk. Called with no lock held,
 * on a snapshot taken under the heap's lock. */
typedef bool (*ht_caps_walker_cb_t)(ht_walker_heap_info_t heap, ht_walker_block_info_t block,
                                    void *user_data);

/* ---- regions ---- */

/* Turns [start, end) into a heap with the three capability masks caps[0..2]
 * (in priority order; caps need not outlive the call) and announces it to
 * heaptraced. Returns HT_OK, HT_EINVAL (NULL caps, start 0, end <= start),
 * HT_EOVERLAP (the range overlaps a registered region), HT_ESIZE (too small
 * for the allocator's control structure plus one block) or HT_ENOMEM
 * (HT_HEAP_MAX regions already). The memory must stay valid and otherwise
 * unused for the life of the process: regions are never removed. */
HT_EXTERN int ht_heap_add_region_with_caps(const uint32_t caps[HT_CAPS_PRIOS], intptr_t start,
                                           intptr_t end);

/* Same, with a name for reports and for heapctl (copied, truncated to
 * HT_HEAP_NAME_MAX bytes; NULL gives "heapN"). */
HT_EXTERN int ht_heap_add_region_with_caps_named(const char *name,
                                                 const uint32_t caps[HT_CAPS_PRIOS], intptr_t start,
                                                 intptr_t end);

/* ESP-IDF heap_caps_add_region(): with no SoC memory layout on a host, the
 * region gets {HT_REGION_DEFAULT_CAPS, 0, 0}. Returns as above. */
HT_EXTERN int ht_heap_add_region(intptr_t start, intptr_t end);

/* ---- allocation (the macros capture the call site) ---- */
HT_EXTERN void *ht__caps_malloc(size_t size, uint32_t caps, const char *file, int line,
                                const char *func);
HT_EXTERN void *ht__caps_calloc(size_t n, size_t size, uint32_t caps, const char *file, int line,
                                const char *func);
HT_EXTERN void *ht__caps_realloc(void *ptr, size_t size, uint32_t caps, const char *file, int line,
                                 const char *func);
HT_EXTERN void ht__caps_free(void *ptr, const char *file, int line, const char *func);
HT_EXTERN void *ht__caps_aligned_alloc(size_t alignment, size_t size, uint32_t caps,
                                       const char *file, int line, const char *func);
HT_EXTERN void *ht__caps_aligned_calloc(size_t alignment, size_t n, size_t size, uint32_t caps,
                                        const char *file, int line, const char *func);
HT_EXTERN void *ht__caps_malloc_at(size_t size, uint32_t caps, const ht_where_t *where);
HT_EXTERN void *ht__caps_calloc_at(size_t n, size_t size, uint32_t caps, const ht_where_t *where);
HT_EXTERN void *ht__caps_realloc_at(void *ptr, size_t size, uint32_t caps, const ht_where_t *where);
HT_EXTERN void ht__caps_free_at(void *ptr, const ht_where_t *where);
HT_EXTERN void *ht__caps_aligned_alloc_at(size_t alignment, size_t size, uint32_t caps,
                                          const ht_where_t *where);
HT_EXTERN void *ht__caps_aligned_calloc_at(size_t alignment, size_t n, size_t size, uint32_t caps,
                                           const ht_where_t *where);
HT_EXTERN void *ht__caps_malloc_prefer(const char *file, int line, const char *func, size_t size,
                                       size_t num, ...);
HT_EXTERN void *ht__caps_calloc_prefer(const char *file, int line, const char *func, size_t n,
                                       size_t size, size_t num, ...);
HT_EXTERN void *ht__caps_realloc_prefer(const char *file, int line, const char *func, void *ptr,
                                        size_t size, size_t num, ...);

/* Semantics of libc malloc/calloc/realloc/free/aligned_alloc for memory with
 * the given caps. Size 0 gives a distinct minimum block. realloc keeps the
 * block in its heap when that heap has the new caps (in place if it can),
 * else moves it to a heap that has them, keeping the contents; realloc to 0
 * frees and returns NULL. free (and ht_free) take a pointer from any heap,
 * the system heap included. An alignment must be a power of two. */
#if defined(__GNUC__) /* a static call site, as for ht_malloc */
#define ht_caps_malloc(size, caps) ht__caps_malloc_at((size), (caps), HT__WHERE())
#define ht_caps_calloc(n, size, caps) ht__caps_calloc_at((n), (size), (caps), HT__WHERE())
#define ht_caps_realloc(ptr, size, caps) ht__caps_realloc_at((ptr), (size), (caps), HT__WHERE())
#define ht_caps_free(ptr) ht__caps_free_at((ptr), HT__WHERE())
#define ht_caps_aligned_alloc(alignment, size, caps)                                               \
  ht__caps_aligned_alloc_at((alignment), (size), (caps), HT__WHERE())
#define ht_caps_aligned_calloc(alignment, n, size, caps)                                           \
  ht__caps_aligned_calloc_at((alignment), (n), (size), (caps), HT__WHERE())
#else
#define ht_caps_malloc(size, caps) ht__caps_malloc((size), (caps), __FILE__, __LINE__, __func__)
#define ht_caps_calloc(n, size, caps)                                                              \
  ht__caps_calloc((n), (size), (caps), __FILE__, __LINE__, __func__)
#define ht_caps_realloc(ptr, size, caps)                                                           \
  ht__caps_realloc((ptr), (size), (caps), __FILE__, __LINE__, __func__)
#define ht_caps_free(ptr) ht__caps_free((ptr), __FILE__, __LINE__, __func__)
#define ht_caps_aligned_alloc(alignment, size, caps)                                               \
  ht__caps_aligned_alloc((alignment), (size), (caps), __FILE__, __LINE__, __func__)
#define ht_caps_aligned_calloc(alignment, n, size, caps)                                           \
  ht__caps_aligned_calloc((alignment), (n), (size), (caps), __FILE__, __LINE__, __func__)
#endif
/* Deprecated in ESP-IDF too: ht_caps_free() frees aligned blocks. */
#define ht_caps_aligned_free(ptr) ht_caps_free(ptr)

/* Try each of the num caps masks (uint32_t arguments) in turn; the first
 * that succeeds wins. A failure is reported once, with the last mask. */
#define ht_caps_malloc_prefer(size, ...)                                                           \
  ht__caps_malloc_prefer(__FILE__, __LINE__, __func__, (size), __VA_ARGS__)
#define ht_caps_calloc_prefer(n, size, ...)                                                        \
  ht__caps_calloc_prefer(__FILE__, __LINE__, __func__, (n), (size), __VA_ARGS__)
#define ht_caps_realloc_prefer(ptr, size, ...)                                                     \
  ht__caps_realloc_prefer(__FILE__, __LINE__, __func__, (ptr), (size), __VA_ARGS__)

/* ESP-IDF heap_caps_malloc_extmem_enable(): from now on plain ht_malloc,
 * ht_calloc, ht_realloc and HT_NEW go through the caps allocator: a request
 * below `limit` bytes asks for HT_CAP_DEFAULT|HT_CAP_INTERNAL, one of limit
 * bytes or more for HT_CAP_DEFAULT|HT_CAP_SPIRAM, and either retries with
 * plain HT_CAP_DEFAULT (which ends at the system heap) before failing.
 * Until it is called (or after HT_CAPS_EXTMEM_DISABLED) plain ht_malloc is
 * served by the system heap directly. */
HT_EXTERN void ht_caps_malloc_extmem_enable(size_t limit);

/* Registers the hook called on every failed allocation. Returns HT_OK, or
 * HT_EINVAL for NULL (as ESP-IDF; there is no way to unregister). */
HT_EXTERN int ht_caps_register_failed_alloc_callback(ht_alloc_failed_hook_t callback);

/* ---- information. "Heaps with caps" are the regions whose three masks
 * together hold every bit of caps; the system heap is not included (glibc
 * has no fixed size). ---- */

/* Bytes a caps-heap block holds for its caller (what was asked for); for a
 * system-heap block, malloc_usable_size(). 0 for NULL or a damaged block. */
HT_EXTERN size_t ht_caps_get_allocated_size(void *ptr);
/* Sum of the free bytes of the heaps with caps. */
HT_EXTERN size_t ht_caps_get_free_size(uint32_t caps);
/* Sum of the lifetime minima of free bytes of the heaps with caps; each
 * heap's minimum is exact (updated under its lock by every allocation), the
 * sum is of per-heap minima that may come from different moments. */
HT_EXTERN size_t ht_caps_get_minimum_free_size(uint32_t caps);
/* The largest s for which ht_caps_malloc(s, caps) is sure to succeed in a
 * region (per-block overhead already subtracted); 0 if none. */
HT_EXTERN size_t ht_caps_get_largest_free_block(uint32_t caps);
/* Sum of the heap sizes (free bytes of each heap when empty). */
HT_EXTERN size_t ht_caps_get_total_size(uint32_t caps);
/* Aggregate of the seven fields over the heaps with caps (largest_free_block
 * is the maximum, the others sums). */
HT_EXTERN void ht_caps_get_info(ht_heap_info_t *info, uint32_t caps);
/* Prints (stdout) two lines per heap with caps and a total. */
HT_EXTERN void ht_caps_print_heap_info(uint32_t caps);
/* Prints (stdout) every block of every heap with caps, one line each. */
HT_EXTERN void ht_caps_dump(uint32_t caps);
HT_EXTERN void ht_caps_dump_all(void);
/* Calls walker for every block of every heap with caps, in address order,
 * until it returns false. */
HT_EXTERN void ht_caps_walk(uint32_t caps, ht_caps_walker_cb_t walker, void *user_data);
HT_EXTERN void ht_caps_walk_all(ht_caps_walker_cb_t walker, void *user_data);
/* Verifies the allocator structure and every block's header and canaries of
 * the heaps with caps (HT_CAP_INVALID: all heaps). Returns true when all are
 * intact; with print_errors, one line per fault on stderr. */
HT_EXTERN bool ht_caps_check_integrity(uint32_t caps, bool print_errors);
HT_EXTERN bool ht_caps_check_integrity_all(bool print_errors);
/* Same for the one heap containing addr; false if no heap contains it. */
HT_EXTERN bool ht_caps_check_integrity_addr(intptr_t addr, bool print_errors);

/* Low-water window (newer ESP-IDF): start resets a second, resettable
 * minimum of every heap to its current free bytes and keeps it updated;
 * stop freezes it. ht_caps_get_minimum_free_size() is unaffected: it stays
 * the lifetime minimum. Start returns HT_OK; stop returns HT_OK, or
 * HT_EINVAL when no window is open. */
HT_EXTERN int ht_caps_monitor_local_minimum_free_size_start(void);
HT_EXTERN int ht_caps_monitor_local_minimum_free_size_stop(void);
/* Sum of the window minima of the heaps with caps (the lifetime minima
 * before the first start). */
HT_EXTERN size_t ht_caps_get_local_minimum_free_size(uint32_t caps);

/* ---- single heaps (ESP-IDF multi_heap_*) ---- */

/* multi_heap_register(): a region with no capabilities (never chosen by a
 * caps request; reached through its handle). Returns NULL on any failure. */
HT_EXTERN ht_heap_handle_t ht_heap_register(void *start, size_t size);
/* The heap containing p, the one with this id, or the first with this name;
 * NULL if none (p of the system heap included). */
HT_EXTERN ht_heap_handle_t ht_heap_containing(const void *p);
HT_EXTERN ht_heap_handle_t ht_heap_by_id(uint32_t id);
HT_EXTERN ht_heap_handle_t ht_heap_by_name(const char *name);
HT_EXTERN uint32_t ht_heap_id(ht_heap_handle_t heap);
HT_EXTERN const char *ht_heap_name(ht_heap_handle_t heap);
HT_EXTERN void ht_heap_get_info(ht_heap_handle_t heap, ht_heap_info_t *info);
HT_EXTERN size_t ht_heap_free_size(ht_heap_handle_t heap);
HT_EXTERN size_t ht_heap_minimum_free_size(ht_heap_handle_t heap);
HT_EXTERN size_t ht_heap_get_allocated_size(ht_heap_handle_t heap, void *p);
HT_EXTERN bool ht_heap_check(ht_heap_handle_t heap, bool print_errors);
HT_EXTERN void ht_heap_dump(ht_heap_handle_t heap);
HT_EXTERN void ht_heap_walk(ht_heap_handle_t heap, ht_caps_walker_cb_t walker, void *user_data);

/* Allocation in one given heap; free/realloc take a block of that heap. */
HT_EXTERN void *ht__heap_malloc(ht_heap_handle_t heap, size_t size, size_t alignment,
                                const char *file, int line, const char *func);
HT_EXTERN void *ht__heap_realloc(ht_heap_handle_t heap, void *p, size_t size, const char *file,
                                 int line, const char *func);
#define ht_heap_malloc(heap, size) ht__heap_malloc((heap), (size), 0, __FILE__, __LINE__, __func__)
#define ht_heap_aligned_alloc(heap, size, alignment)                                               \
  ht__heap_malloc((heap), (size), (alignment), __FILE__, __LINE__, __func__)
#define ht_heap_realloc(heap, p, size)                                                             \
  ht__heap_realloc((heap), (p), (size), __FILE__, __LINE__, __func__)
#define ht_heap_free(heap, p) ((void)(heap), ht__free((p), __FILE__, __LINE__, __func__))

/* ========================================================================
 * Allocation callback (LibHTTP httplib_set_alloc_callback_func)
 *
 * Called after every successful transaction on every heap, the system heap
 * included, once all locks are released: file and line of the call, action
 * "malloc" (malloc, calloc, aligned, realloc of NULL), "free" (free, realloc
 * to 0) or "realloc"; current_bytes is the signed change of allocated bytes
 * (a realloc may be negative); total_blocks and total_bytes are the
 * process-wide live blocks and bytes after it. Bytes are usable bytes, so a
 * malloc and its free cancel exactly. An allocation made by the callback
 * itself is served and traced but does not call it again (a thread-local
 * guard), and no lock is held, so it cannot deadlock.
 * ====================================================================== */
typedef void (*ht_alloc_callback_t)(const char *file, unsigned line, const char *action,
                                    int64_t current_bytes, int64_t total_blocks,
                                    int64_t total_bytes);

/* Installs fn; NULL removes the callback in place. */
HT_EXTERN void ht_set_alloc_callback(ht_alloc_callback_t fn);

/* Process-wide counters, every heap. cur_blocks == allocs - frees. */
typedef struct {
  uint64_t allocs;      /* successful malloc, calloc, aligned, HT_NEW, realloc(NULL) */
  uint64_t frees;       /* successful free, realloc(p, 0) */
  uint64_t reallocs;    /* successful realloc of a block to a non-zero size */
  uint64_t failures;    /* failed allocations */
  int64_t cur_bytes;    /* usable bytes live now */
  int64_t cur_blocks;   /* blocks live now */
  uint64_t total_bytes; /* usable bytes ever allocated (a realloc's growth counts) */
} ht_totals_t;

HT_EXTERN void ht_get_totals(ht_totals_t *out);

/* ========================================================================
 * Typed allocation (Halloc)
 *
 * HT_NEW(type, n) returns n zeroed objects of type, recorded with the type's
 * name; its site is sent to heaptraced with that name. It is served like
 * ht_calloc (the system heap, or the extmem routing); HT_CAPS_NEW asks for
 * caps. A realloc keeps a block's type. Statistics are per type name.
 * ====================================================================== */
HT_EXTERN void *ht__new(size_t elem_size, size_t n, const char *type, const char *file, int line,
                        const char *func);
HT_EXTERN void *ht__caps_new(size_t elem_size, size_t n, uint32_t caps, const char *type,
                             const char *file, int line, const char *func);
#define HT_NEW(type, n) ((type *)ht__new(sizeof(type), (n), #type, __FILE__, __LINE__, __func__))
#define HT_CAPS_NEW(type, n, caps)                                                                 \
  ((type *)ht__caps_new(sizeof(type), (n), (caps), #type, __FILE__, __LINE__, __func__))

typedef struct {
  const char *name;    /* the type's name as written in HT_NEW */
  uint64_t allocs;     /* blocks ever allocated */
  uint64_t bytes;      /* usable bytes ever allocated */
  int64_t cur_blocks;  /* live blocks */
  int64_t cur_bytes;   /* live usable bytes */
  int64_t peak_blocks; /* highest cur_blocks */
  int64_t peak_bytes;  /* highest cur_bytes */
} ht_type_stats_t;

/* Fills *out for the type called name. Returns HT_OK or HT_ENOTFOUND. */
HT_EXTERN int ht_get_type_stats(const char *name, ht_type_stats_t *out);
#define ht_type_stats(type, out) ht_get_type_stats(#type, (out))

/* Prints (stdout) the process totals and a line per type. */
HT_EXTERN void ht_print_total_memory_usage(void);
/* Prints (stdout) one type's line (or that it has none). */
HT_EXTERN void ht__print_type_memory_usage(const char *type);
#define ht_print_type_memory_usage(type) ht__print_type_memory_usage(#type)
/* Prints (stdout) every live typed block: address, type, bytes, heap, site
 * (Halloc's "saved page items": the allocations it keeps). */
HT_EXTERN void ht_print_saved_page_items(void);

/* ========================================================================
 * State (malloc_get_state / malloc_set_state)
 *
 * The blob holds the library's bookkeeping: process counters, per-type and
 * per-site totals, per-heap minima; not heap contents. It is versioned and
 * checksummed (docs/allocator.md has the layout).
 * ====================================================================== */
#define HT_STATE_VERSION 1

/* Returns a new blob in mmap'd memory (never the traced heap); free it with
 * ht_free_state(), not free(). NULL if memory cannot be mapped. */
HT_EXTERN void *ht_get_state(void);
/* Releases a blob from ht_get_state(); NULL is a no-op. */
HT_EXTERN void ht_free_state(void *state);
/* Replaces the bookkeeping with the blob's. Returns 0; -1 if the blob is
 * malformed (bad magic, length, checksum or content), -2 if it comes from a
 * newer version. On -1/-2 nothing changes. */
HT_EXTERN int ht_set_state(const void *state);

/* ht_set_state for a blob known to lie in size bytes (one read from a file,
 * say): a blob whose header claims more is malformed (-1), where
 * ht_set_state, like malloc_set_state, must trust the header's length. */
HT_EXTERN int ht_set_state_sized(const void *state, size_t size);
/* Bytes of a blob (its length field), 0 for NULL or a bad header. */
HT_EXTERN size_t ht_state_size(const void *state);

#ifdef __cplusplus
}
#endif
#endif /* HEAPTRACE_HEAPTRACE_H */
