/* test_encode.c - the client's own event encoders (proto/ht_event.h).
 *
 * ht_event_encode_alloc/_free/_realloc encode the client's common events
 * straight from their values, with the running totals their op implies.
 * They must write exactly what the general encoder, ht_event_encode,
 * writes for the same event against the same state, and leave the same
 * state behind: the daemon decodes both with one decoder. Random sequences
 * cover every varint width, sites, heaps and caps that stay or change, and
 * states whose totals wrap around.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <string.h>

#include "ht_event.h"
#include "test_rand.h"

/* A value of a random width: every varint length gets its turn. */
static uint64_t any_width(void) {
  unsigned bits = (unsigned)(test_rand() % 65);
  return bits == 64 ? test_rand() : test_rand() & ((1ull << bits) - 1);
}

/* Mostly small steps, like a real stream; sometimes anything. */
static uint64_t near(uint64_t prev) {
  return test_rand() % 4 ? prev + (test_rand() % 5000) - 1000 : any_width();
}

/* One random event of op against st, with the totals the op implies. */
static ht_event_t random_event(const ht_evstate_t *st, uint32_t op) {
  ht_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.op = op;
  ev.time_ns = near(st->time_ns);
  ev.site = test_rand() % 3 ? st->site : (uint32_t)any_width();
  ev.heap = test_rand() % 8 ? st->heap : (uint32_t)(test_rand() % 4);
  ev.caps = test_rand() % 8 ? st->caps : (uint32_t)any_width();
  ev.ptr = near(st->ptr);
  ev.size = test_rand() % 4 ? test_rand() % 4096 : any_width();
  ev.usable = op == HT_OP_FREE  ? ev.size
              : test_rand() % 4 ? ev.size + test_rand() % 24
                                : any_width();
  if (op == HT_OP_REALLOC) {
    ev.old_ptr = near(ev.ptr);
    ev.old_usable = test_rand() % 4 ? test_rand() % 4096 : any_width();
  }
  int64_t ib, ik;
  uint64_t it;
  ht__implied_totals(st, &ev, &ib, &ik, &it);
  ev.cur_bytes = ib;
  ev.cur_blocks = ik;
  ev.total_bytes = it;
  return ev;
}

/* Encodes ev with the client's encoder of its op. */
static size_t encode_fast(uint8_t *out, ht_evstate_t *st, const ht_event_t *ev) {
  switch (ev->op) {
  case HT_OP_FREE:
    return ht_event_encode_free(out, st, ev->time_ns, ev->site, ev->heap, ev->caps, ev->ptr,
                                ev->size);
  case HT_OP_REALLOC:
    return ht_event_encode_realloc(out, st, ev->time_ns, ev->site, ev->heap, ev->caps, ev->ptr,
                                   ev->old_ptr, ev->size, ev->usable, ev->old_usable);
  default:
    return ht_event_encode_alloc(out, st, ev->op, ev->time_ns, ev->site, ev->heap, ev->caps,
                                 ev->ptr, ev->size, ev->usable);
  }
}

/* A state with totals anywhere, as a long-running stream's may be. */
static ht_evstate_t random_state(void) {
  ht_evstate_t st;
  memset(&st, 0, sizeof st);
  if (test_rand() % 2) {
    st.cur_bytes = (int64_t)any_width();
    st.cur_blocks = (int64_t)any_width();
    st.total_bytes = any_width();
  }
  return st;
}

Test(encode, op_encoders_write_the_bytes_of_the_general_encoder) {
  static const uint32_t ops[] = {HT_OP_MALLOC, HT_OP_CALLOC, HT_OP_FREE, HT_OP_REALLOC};
  for (int seq = 0; seq < 200; seq++) {
    ht_evstate_t a = random_state(), b = a;
    for (int i = 0; i < 500; i++) {
      ht_event_t ev = random_event(&a, ops[test_rand() % 4]);
      uint8_t want[HT_PROTO_MAX_EVENT_BYTES], got[HT_PROTO_MAX_EVENT_BYTES];
      size_t nw = ht_event_encode(want, &a, &ev);
      size_t ng = encode_fast(got, &b, &ev);
      cr_assert(eq(sz, ng, nw), "sequence %d event %d (op %u)", seq, i, ev.op);
      cr_assert(eq(int, memcmp(got, want, nw), 0), "sequence %d event %d (op %u)", seq, i, ev.op);
      cr_assert(eq(int, memcmp(&a, &b, sizeof a), 0), "state after sequence %d event %d", seq, i);
    }
  }
}

Test(encode, op_encoders_send_no_totals_and_mark_them_implied) {
  ht_evstate_t a = random_state(), b = a;
  ht_event_t ev = random_event(&a, HT_OP_MALLOC);
  uint8_t want[HT_PROTO_MAX_EVENT_BYTES], got[HT_PROTO_MAX_EVENT_BYTES];
  size_t nw = ht_event_encode(want, &a, &ev);
  size_t ng = encode_fast(got, &b, &ev);
  cr_assert(eq(u8, got[0] & HT_EV_TOTALS_IMPLIED, HT_EV_TOTALS_IMPLIED));
  cr_assert(eq(u8, got[0], want[0]));
  cr_assert(eq(sz, ng, nw));
  cr_assert(eq(i64, b.cur_bytes, ev.cur_bytes));
  cr_assert(eq(i64, b.cur_blocks, ev.cur_blocks));
  cr_assert(eq(u64, b.total_bytes, ev.total_bytes));
}
