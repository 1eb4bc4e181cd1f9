/* ht_event.h - the event encoder and its byte primitives, inline: it runs
 * once per allocation in the client, so it is written for that (varints of
 * one or two bytes take a branch-light path). The decoder is in proto.c; the layout is specified
 * in PROTOCOL.md, "Event encoding". */
#ifndef HT_EVENT_H
#define HT_EVENT_H

#include "ht_proto.h"

static inline void ht__store_le(uint8_t *at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    at[i] = (uint8_t)(v >> (8 * i));
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
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
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
    *blocks += 1;
    *total += ev->usable;
    break;
  case HT_OP_REALLOC:
    *bytes = (int64_t)((uint64_t)*bytes + ev->usable - ev->old_usable);
    *total += ev->usable > ev->old_usable ? ev->usable - ev->old_usable : 0;
    break;
  case HT_OP_FREE:
    *bytes = (int64_t)((uint64_t)*bytes - ev->size);
    *blocks -= 1;
    break;
  }
}

/* The stream's delta state after ev: what the next event is encoded and
 * decoded against. */
static inline void ht__evstate_advance(ht_evstate_t *st, const ht_event_t *ev) {
  st->time_ns = ev->time_ns;
  st->ptr = ev->ptr;
  st->cur_bytes = ev->cur_bytes;
  st->cur_blocks = ev->cur_blocks;
  st->total_bytes = ev->total_bytes;
  st->site = ev->site;
  st->heap = ev->heap;
  st->caps = ev->caps;
}

/* Encodes one event at out (HT_PROTO_MAX_EVENT_BYTES free) against the
 * stream's state, which it advances. Returns the bytes written. */
static inline size_t ht_event_encode(uint8_t *out, ht_evstate_t *st, const ht_event_t *ev) {
  int64_t ib, ik;
  uint64_t it;
  ht__implied_totals(st, ev, &ib, &ik, &it);
  int implied = ib == ev->cur_bytes && ik == ev->cur_blocks && it == ev->total_bytes;
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
  if (!implied) {
    /* Unsigned differences: wrap-around is defined, and the decoder adds
     * them back the same way. */
    n += ht__varint_put(out + n,
                        ht_zigzag((int64_t)((uint64_t)ev->cur_bytes - (uint64_t)st->cur_bytes)));
    n += ht__varint_put(out + n,
                        ht_zigzag((int64_t)((uint64_t)ev->cur_blocks - (uint64_t)st->cur_blocks)));
    n += ht__varint_put(out + n, ev->total_bytes - st->total_bytes);
  }
  ht__evstate_advance(st, ev);
  return n;
}

#endif
