/* bufpool.h - buffers the loop hands to the ingest worker, kept for reuse.
 *
 * Every read from a client becomes a batch in memory until the worker has
 * decoded it, and while the traced programs keep every core busy the worker
 * (at idle priority) waits: a program's whole run can sit in batches. Memory
 * fresh from the kernel costs a page fault per 4 KiB on its first touch, on
 * the loop's thread, taking a core from the programs: in bench/overhead that
 * was most of the daemon's CPU while the workload ran. So batches are cut
 * from slabs, one after the other, and a slab whose batches are all given
 * back is kept, up to a limit, for the next ones: a daemon that has served a
 * program before writes the next one's events into memory that is there
 * already. Slabs are filled front to back, so a kept slab is written all
 * over and reusing it faults nothing. A new slab is mapped with its pages
 * populated, in one call rather than a fault per page (a fresh daemon's
 * first program: the loop's CPU while it ran went from 0.055 to 0.043 s
 * in bench/overhead's workload, means of 15 interleaved runs). After a
 * while with no use the kept slabs go back to the system.
 *
 * Buffers larger than a slab holds are plain allocations. A pool is used by
 * one thread (the loop's); it has no lock.
 */
#ifndef HTD_BUFPOOL_H
#define HTD_BUFPOOL_H

#include <stddef.h>

#define HTD_BUFPOOL_SLAB (2u << 20) /* bytes; above a connection's whole buffer */

typedef struct htd_slab htd_slab_t;

typedef struct {
  htd_slab_t *cur;   /* the slab buffers are cut from */
  htd_slab_t *kept;  /* empty slabs kept for reuse */
  size_t kept_bytes; /* their size */
  size_t keep_max;   /* at most this many bytes are kept */
  unsigned idle;     /* ticks since the last get */
  unsigned idle_max; /* then the kept slabs are let go */
} htd_bufpool_t;

/* An empty pool that keeps up to keep_max bytes of empty slabs, and lets
 * them go after idle_max ticks (htd_bufpool_tick) without a get. */
void htd_bufpool_init(htd_bufpool_t *p, size_t keep_max, unsigned idle_max);

/* A buffer of at least len bytes, aligned for any type, or NULL when out of
 * memory. Its contents are undefined. */
void *htd_bufpool_get(htd_bufpool_t *p, size_t len);

/* Gives back a buffer from htd_bufpool_get (NULL is ignored), in any order.
 * The last buffer of a slab given back makes the slab free for reuse. */
void htd_bufpool_put(htd_bufpool_t *p, void *buf);

/* One tick of the caller's clock: after idle_max ticks without a get, the
 * kept slabs are freed. */
void htd_bufpool_tick(htd_bufpool_t *p);

/* Frees every slab no buffer is cut from; buffers still out stay valid,
 * and their slabs are freed or kept when they are given back. */
void htd_bufpool_release(htd_bufpool_t *p);

#endif /* HTD_BUFPOOL_H */
