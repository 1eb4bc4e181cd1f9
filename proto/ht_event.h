/* ht_event.h - the event encoder and its byte primitives, inline: it runs
 * once per allocation in the client, so it is written for that. Events
 * that fit the compact form (fixed-width fields) take it; the others the
 * varint form, whose varints of up to four bytes take a straight path. The
 * client's common events have encoders of their own, below. The decoder
 * is in proto.c; the layout is specified in PROTOCOL.md, "Event encoding"
 * and "Compact events". */
#ifndef HT_EVENT_H
#define HT_EVENT_H

#include <string.h>

#include "ht_proto.h"

#if defined(__GNUC__)
#define HT_UNLIKELY_EV(x) __builtin_expect(!!(x), 0)
#else
#define HT_UNLIKELY_EV(x) (x)
#endif

static inline void ht__store_le(uint8_t *at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    at[i] = (uint8_t)(v >> (8 * i));
}

/* A varint of five bytes or more: rare (large sizes and totals), out of
 * line so that the inline encoders stay small. */
static __attribute__((noinline, unused)) size_t ht__varint_put_long(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

static inline size_t ht__varint_put(uint8_t *out, uint64_t v) {
  if (v < 0x80) {
    out[0] = (uint8_t)v;
    return 1;
  }
  if (v < 0x4000) {
    out[0] = (uint8_t)(v | 0x80);
    out[1] = (uint8_t)(v >> 7);
    return 2;
  }
  /* Pointer and time deltas are often 3 or 4 bytes: no loop for those. */
  if (v < 0x10000000) {
    out[0] = (uint8_t)(v | 0x80);
    out[1] = (uint8_t)((v >> 7) | 0x80);
    if (v < 0x200000) {
      out[2] = (uint8_t)(v >> 14);
      return 3;
    }
    out[2] = (uint8_t)((v >> 14) | 0x80);
    out[3] = (uint8_t)(v >> 21);
    return 4;
  }
  return ht__varint_put_long(out, v);
}

static inline int ht__has_old_ptr(uint32_t op, uint32_t failed_op) {
  return op == HT_OP_REALLOC || (op == HT_OP_FAILED && failed_op == HT_OP_REALLOC);
}

static inline int ht__has_align(uint32_t op, uint32_t failed_op) {
  return op == HT_OP_ALIGNED || (op == HT_OP_FAILED && failed_op == HT_OP_ALIGNED);
}

/* The running totals an event implies from the previous ones: what every
 * allocation entry point does (sysheap.c), so that they need not be sent. */
static inline void ht__implied_totals(const ht_evstate_t *st, const ht_event_t *ev, int64_t *bytes,
                                      int64_t *blocks, uint64_t *total) {
  *bytes = st->cur_bytes;
  *blocks = st->cur_blocks;
  *total = st->total_bytes;
  switch (ev->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    *bytes = (int64_t)((uint64_t)*bytes + ev->usable);
    *blocks = (int64_t)((uint64_t)*blocks + 1); /* a hostile state may be at the limit */
    *total += ev->usable;
    break;
  case HT_OP_REALLOC:
    *bytes = (int64_t)((uint64_t)*bytes + ev->usable - ev->old_usable);
    *total += ev->usable > ev->old_usable ? ev->usable - ev->old_usable : 0;
    break;
  case HT_OP_FREE:
    *bytes = (int64_t)((uint64_t)*bytes - ev->size);
    *blocks = (int64_t)((uint64_t)*blocks - 1);
    break;
  }
}

/* The stream's delta state after ev: what the next event is encoded and
 * decoded against. */
static inline void ht__evstate_set(ht_evstate_t *st, uint64_t time_ns, uint64_t ptr,
                                   int64_t cur_bytes, int64_t cur_blocks, uint64_t total_bytes,
                                   uint32_t site, uint32_t heap, uint32_t caps) {
  *st = (ht_evstate_t){.time_ns = time_ns,
                       .ptr = ptr,
                       .cur_bytes = cur_bytes,
                       .cur_blocks = cur_blocks,
                       .total_bytes = total_bytes,
                       .site = site,
                       .heap = heap,
                       .caps = caps};
}

static inline void ht__evstate_advance(ht_evstate_t *st, const ht_event_t *ev) {
  ht__evstate_set(st, ev->time_ns, ev->ptr, ev->cur_bytes, ev->cur_blocks, ev->total_bytes,
                  ev->site, ev->heap, ev->caps);
}

/* The running totals when the op does not imply them, then the new state. */
static inline __attribute__((always_inline)) size_t
ht__event_put_tail(uint8_t *out, ht_evstate_t *st, int implied, uint64_t time_ns, uint32_t site,
                   uint32_t heap, uint32_t caps, uint64_t ptr, int64_t cur_bytes,
                   int64_t cur_blocks, uint64_t total_bytes) {
  size_t n = 0;
  if (HT_UNLIKELY_EV(!implied)) {
    /* Unsigned differences: wrap-around is defined, and the decoder adds
     * them back the same way. */
    n += ht__varint_put(out + n,
                        ht_zigzag((int64_t)((uint64_t)cur_bytes - (uint64_t)st->cur_bytes)));
    n += ht__varint_put(out + n,
                        ht_zigzag((int64_t)((uint64_t)cur_blocks - (uint64_t)st->cur_blocks)));
    n += ht__varint_put(out + n, total_bytes - st->total_bytes);
  }
  ht__evstate_set(st, time_ns, ptr, cur_bytes, cur_blocks, total_bytes, site, heap, caps);
  return n;
}

/* The low n (2 or 4, a constant) bytes of v at `at`, little-endian. */
static inline __attribute__((always_inline)) void ht__put_le(uint8_t *at, uint32_t v,
                                                             const size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(at, &v, n);
#else
  ht__store_le(at, v, n);
#endif
}

/* 1 for the ops the compact form carries: MALLOC, CALLOC, REALLOC, FREE. */
static inline int ht__compact_op(uint32_t op) {
  return op == HT_OP_MALLOC || op == HT_OP_CALLOC || op == HT_OP_REALLOC || op == HT_OP_FREE;
}

/* The compact form of a MALLOC, CALLOC, REALLOC or FREE (op) whose heap and
 * caps are the state's and whose totals moved as the op implies
 * (PROTOCOL.md, "Compact events"): fixed-width fields, written with a few
 * stores and no branch on a value's length. Returns the bytes written, or
 * 0 when a field does not fit (then the varint form is used). It may write
 * up to two bytes past the event (out has HT_PROTO_MAX_EVENT_BYTES). For a
 * FREE, size is the bytes released and usable is not sent. */
static inline __attribute__((always_inline)) size_t
ht__compact_put(uint8_t *out, const ht_evstate_t *st, uint32_t op, uint64_t time_ns, uint32_t site,
                uint32_t heap, uint32_t caps, uint64_t ptr, uint64_t old_ptr, uint64_t old_usable,
                uint64_t size, uint64_t usable) {
  const uint64_t bias = 0x80000000u; /* a signed 32-bit step, biased, is below 2^32 */
  uint64_t dt = time_ns - st->time_ns;
  uint64_t dp = ptr - st->ptr + bias;
  uint64_t dop = op == HT_OP_REALLOC ? old_ptr - ptr + bias : 0;
  uint64_t sizes = size | (op == HT_OP_REALLOC ? old_usable : 0);
  uint64_t slack = op == HT_OP_FREE ? 0 : usable - size;
  if (HT_UNLIKELY_EV(((dt | dp | dop | sizes) >> 32) | (site >> 16) | (slack >> 8) |
                     (heap ^ st->heap) | (caps ^ st->caps)))
    return 0;
  unsigned short_time = dt < 0x10000, short_sizes = sizes < 0x10000, same_site = site == st->site;
  out[0] = (uint8_t)(op | HT_EV_COMPACT | (same_site ? HT_EV_SAME_SITE : 0) |
                     (short_time ? HT_EV_SHORT_TIME : 0) | (short_sizes ? HT_EV_SHORT_SIZES : 0));
  size_t n = 1;
  ht__put_le(out + n, (uint32_t)dt, 4);
  n += short_time ? 2 : 4;
  ht__put_le(out + n, site, 2);
  n += same_site ? 0 : 2;
  ht__put_le(out + n, (uint32_t)(dp - bias), 4);
  n += 4;
  if (op == HT_OP_REALLOC) {
    ht__put_le(out + n, (uint32_t)(dop - bias), 4);
    ht__put_le(out + n + 4, (uint32_t)old_usable, 4);
    n += short_sizes ? 6 : 8;
  }
  ht__put_le(out + n, (uint32_t)size, 4);
  n += short_sizes ? 2 : 4;
  if (op != HT_OP_FREE)
    out[n++] = (uint8_t)slack;
  return n;
}

/* Encodes one event at out (HT_PROTO_MAX_EVENT_BYTES free) against the
 * stream's state, which it advances. Returns the bytes written. The
 * compact form where it fits, else the varint form. */
static inline size_t ht_event_encode(uint8_t *out, ht_evstate_t *st, const ht_event_t *ev) {
  int64_t ib, ik;
  uint64_t it;
  ht__implied_totals(st, ev, &ib, &ik, &it);
  int implied = ib == ev->cur_bytes && ik == ev->cur_blocks && it == ev->total_bytes;
  if (implied && ht__compact_op(ev->op)) {
    size_t n = ht__compact_put(out, st, ev->op, ev->time_ns, ev->site, ev->heap, ev->caps, ev->ptr,
                               ev->old_ptr, ev->old_usable, ev->size, ev->usable);
    if (n) {
      ht__evstate_advance(st, ev);
      return n;
    }
  }
  uint8_t opb = (uint8_t)ev->op;
  opb |= ev->site == st->site ? HT_EV_SAME_SITE : 0;
  opb |= ev->heap == st->heap ? HT_EV_SAME_HEAP : 0;
  opb |= ev->caps == st->caps ? HT_EV_SAME_CAPS : 0;
  opb |= implied ? HT_EV_TOTALS_IMPLIED : 0;
  size_t n = 0;
  out[n++] = opb;
  if (ev->op == HT_OP_FAILED)
    out[n++] = (uint8_t)ev->failed_op;
  n += ht__varint_put(out + n, ht_zigzag((int64_t)(ev->time_ns - st->time_ns)));
  if (!(opb & HT_EV_SAME_SITE))
    n += ht__varint_put(out + n, ev->site);
  if (!(opb & HT_EV_SAME_HEAP))
    n += ht__varint_put(out + n, ev->heap);
  if (!(opb & HT_EV_SAME_CAPS))
    n += ht__varint_put(out + n, ev->caps);
  n += ht__varint_put(out + n, ht_zigzag((int64_t)(ev->ptr - st->ptr)));
  if (ht__has_old_ptr(ev->op, ev->failed_op)) {
    n += ht__varint_put(out + n, ht_zigzag((int64_t)(ev->old_ptr - ev->ptr)));
    n += ht__varint_put(out + n, ev->old_usable);
  }
  if (ht__has_align(ev->op, ev->failed_op))
    n += ht__varint_put(out + n, ev->align);
  n += ht__varint_put(out + n, ev->size);
  if (ev->op != HT_OP_FREE)
    n += ht__varint_put(out + n, ht_zigzag((int64_t)(ev->usable - ev->size)));
  return n + ht__event_put_tail(out + n, st, implied, ev->time_ns, ev->site, ev->heap, ev->caps,
                                ev->ptr, ev->cur_bytes, ev->cur_blocks, ev->total_bytes);
}

/* ======================================================================
 * The client's hot path: the event of a successful malloc, free or realloc
 * encoded straight from its values, without filling an ht_event_t. The
 * running totals are the ones the op implies (ht__implied_totals): the
 * encoders mark them implied, send none and advance the state's totals as
 * the decoder will. Each writes the same bytes as ht_event_encode would for
 * the same event with those totals (and advances the state alike);
 * tests/test_encode.c holds them to that. They write the compact form in
 * line; what does not fit it goes to the general encoder, out of line. An
 * event whose totals moved otherwise takes ht_event_encode. out has
 * HT_PROTO_MAX_EVENT_BYTES free.
 * ==================================================================== */

/* The varint form of an event the encoders below could not write compact
 * (a step back in time, a far pointer, a large size, a new heap or caps:
 * rare): the general encoder, out of line, with the totals the op implies.
 * Advances the state as they do. */
static __attribute__((noinline, unused)) size_t
ht__event_encode_implied(uint8_t *out, ht_evstate_t *st, ht_event_t ev) {
  ht__implied_totals(st, &ev, &ev.cur_bytes, &ev.cur_blocks, &ev.total_bytes);
  return ht_event_encode(out, st, &ev);
}

/* The state after an event of the fast encoders: its totals moved by
 * (dbytes, dblocks, grown), as its op implies. Unsigned sums: wrap-around
 * is defined, and the decoder's is the same. */
static inline __attribute__((always_inline)) void
ht__evstate_implied(ht_evstate_t *st, uint64_t time_ns, uint32_t site, uint32_t heap, uint32_t caps,
                    uint64_t ptr, uint64_t dbytes, int64_t dblocks, uint64_t grown) {
  ht__evstate_set(st, time_ns, ptr, (int64_t)((uint64_t)st->cur_bytes + dbytes),
                  (int64_t)((uint64_t)st->cur_blocks + (uint64_t)dblocks), st->total_bytes + grown,
                  site, heap, caps);
}

/* HT_OP_MALLOC or HT_OP_CALLOC (op): a new block of usable bytes. */
static inline __attribute__((always_inline)) size_t
ht_event_encode_alloc(uint8_t *out, ht_evstate_t *st, uint32_t op, uint64_t time_ns, uint32_t site,
                      uint32_t heap, uint32_t caps, uint64_t ptr, uint64_t size, uint64_t usable) {
  size_t n = ht__compact_put(out, st, op, time_ns, site, heap, caps, ptr, 0, 0, size, usable);
  if (HT_UNLIKELY_EV(!n))
    return ht__event_encode_implied(out, st,
                                    (ht_event_t){.op = op,
                                                 .time_ns = time_ns,
                                                 .site = site,
                                                 .heap = heap,
                                                 .caps = caps,
                                                 .ptr = ptr,
                                                 .size = size,
                                                 .usable = usable});
  ht__evstate_implied(st, time_ns, site, heap, caps, ptr, usable, 1, usable);
  return n;
}

/* HT_OP_FREE: the block at ptr with `size` usable bytes goes back. */
static inline __attribute__((always_inline)) size_t
ht_event_encode_free(uint8_t *out, ht_evstate_t *st, uint64_t time_ns, uint32_t site, uint32_t heap,
                     uint32_t caps, uint64_t ptr, uint64_t size) {
  size_t n = ht__compact_put(out, st, HT_OP_FREE, time_ns, site, heap, caps, ptr, 0, 0, size, size);
  if (HT_UNLIKELY_EV(!n))
    return ht__event_encode_implied(out, st,
                                    (ht_event_t){.op = HT_OP_FREE,
                                                 .time_ns = time_ns,
                                                 .site = site,
                                                 .heap = heap,
                                                 .caps = caps,
                                                 .ptr = ptr,
                                                 .size = size,
                                                 .usable = size});
  ht__evstate_implied(st, time_ns, site, heap, caps, ptr, (uint64_t)0 - size, -1, 0);
  return n;
}

/* HT_OP_REALLOC: old_ptr (old_usable bytes) became ptr (usable bytes). */
static inline __attribute__((always_inline)) size_t
ht_event_encode_realloc(uint8_t *out, ht_evstate_t *st, uint64_t time_ns, uint32_t site,
                        uint32_t heap, uint32_t caps, uint64_t ptr, uint64_t old_ptr, uint64_t size,
                        uint64_t usable, uint64_t old_usable) {
  size_t n = ht__compact_put(out, st, HT_OP_REALLOC, time_ns, site, heap, caps, ptr, old_ptr,
                             old_usable, size, usable);
  if (HT_UNLIKELY_EV(!n))
    return ht__event_encode_implied(out, st,
                                    (ht_event_t){.op = HT_OP_REALLOC,
                                                 .time_ns = time_ns,
                                                 .site = site,
                                                 .heap = heap,
                                                 .caps = caps,
                                                 .ptr = ptr,
                                                 .old_ptr = old_ptr,
                                                 .size = size,
                                                 .usable = usable,
                                                 .old_usable = old_usable});
  ht__evstate_implied(st, time_ns, site, heap, caps, ptr, usable - old_usable, 0,
                      usable > old_usable ? usable - old_usable : 0);
  return n;
}

#endif
