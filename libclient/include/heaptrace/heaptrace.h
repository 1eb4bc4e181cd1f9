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
#define HT_ERRNO_MAP(X)                                                          \
  X(EINVAL, -1, "invalid argument")                                              \
  X(ENOMEM, -2, "out of memory")                                                 \
  X(ENOTFOUND, -3, "not found")                                                  \
  X(ESIZE, -4, "region too small to hold a heap")                                \
  X(EOVERLAP, -5, "region overlaps a registered heap")                           \
  X(EIO, -6, "input/output error")                                               \
  X(ENOTCONN, -7, "not connected to heaptraced")                                 \
  X(EAGAIN, -8, "incomplete: more bytes are needed")                             \
  X(ETRUNCATED, -20, "record ends before its fields do")                         \
  X(EFRAMESIZE, -21, "frame length outside the allowed range")                   \
  X(EMAGIC, -22, "bad magic: the peer does not speak the heaptrace protocol")    \
  X(EVERSION, -23, "protocol version newer than this build understands")         \
  X(ERECORD, -24, "unknown record type")                                         \
  X(ESTRING, -25, "string runs past the end of its record")                      \
  X(ESTRLEN, -26, "string longer than the protocol allows")                      \
  X(EVARINT, -27, "varint longer than ten bytes")                                \
  X(ETRAILING, -28, "bytes left over after the last field of a record")          \
  X(EOP, -29, "unknown event operation")                                         \
  X(ELIMIT, -30, "count above the protocol limit")                               \
  X(ESTRNUL, -31, "string contains a NUL byte")                                  \
  X(EORDER, -32, "record out of order (handshake missing or repeated)")          \
  X(ESTATE, -33, "state blob is malformed")                                      \
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
HT_EXTERN void *ht__calloc(size_t n, size_t size, const char *file, int line,
                           const char *func);
HT_EXTERN void *ht__realloc(void *ptr, size_t size, const char *file, int line,
                            const char *func);
HT_EXTERN void ht__free(void *ptr, const char *file, int line, const char *func);

#define ht_malloc(size) ht__malloc((size), __FILE__, __LINE__, __func__)
#define ht_calloc(n, size) ht__calloc((n), (size), __FILE__, __LINE__, __func__)
#define ht_realloc(ptr, size) ht__realloc((ptr), (size), __FILE__, __LINE__, __func__)
#define ht_free(ptr) ht__free((ptr), __FILE__, __LINE__, __func__)

/* Ships every event recorded so far to the daemon and waits until it has
 * been written to the socket. Returns 0, or HT_ENOTCONN when tracing is off. */
HT_EXTERN int ht_flush(void);

/* Returns 1 when events are being streamed to a daemon, else 0. */
HT_EXTERN int ht_tracing_enabled(void);

#ifdef __cplusplus
}
#endif
#endif /* HEAPTRACE_HEAPTRACE_H */
