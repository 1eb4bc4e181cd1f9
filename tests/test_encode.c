/* test_encode.c - the event encoders (proto/ht_event.h) against the
 * decoder (proto/proto.c).
 *
 * ht_event_encode writes an event in the compact form (fixed-width fields)
 * where its fields fit and in the varint form otherwise; the decoder must
 * give back exactly what went in, and both ends must be left in the same
 * delta state. ht_event_encode_alloc/_free/_realloc, the client's encoders
 * of its common events, must write exactly what ht_event_encode writes for
 * the same event, with the running totals their op implies. Random
 * sequences cover every width, sites, heaps and caps that stay or change,
 * and states whose totals wrap around; the compact form's limits are
 * checked one field at a time, on either side.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <string.h>

#include "ht_event.h"
#include "ht_proto.h"
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

/* Decodes the one event at bytes[0, n) against st. */
static ht_event_t decode_one(const uint8_t *bytes, size_t n, ht_evstate_t *st) {
  static uint8_t frame[HT_PROTO_EVENTS_HEAD + HT_PROTO_MAX_EVENT_BYTES];
  ht_proto_events_head(frame, 3, 17, 1, n);
  memcpy(frame + HT_PROTO_EVENTS_HEAD, bytes, n);
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(frame, HT_PROTO_EVENTS_HEAD + n, &f), 0));
  ht_evreader_t r;
  cr_assert(eq(int, ht_proto_events_begin(&r, f.payload, f.payload_len), 0));
  ht_event_t ev;
  memset(&ev, 0, sizeof ev);
  int rc = ht_proto_events_next(&r, st, &ev);
  cr_assert(eq(int, rc, 1), "decoding failed: %s", ht_err_name(rc));
  cr_assert(eq(int, ht_proto_events_next(&r, st, &(ht_event_t){0}), 0), "bytes left over");
  return ev;
}

/* ev as the decoder gives it back: a free's usable is its size. */
static void assert_decoded(const ht_event_t *got, const ht_event_t *in, const char *what) {
  cr_assert(eq(u32, got->op, in->op), "%s", what);
  cr_assert(eq(u64, got->time_ns, in->time_ns), "%s", what);
  cr_assert(eq(u32, got->site, in->site), "%s", what);
  cr_assert(eq(u32, got->heap, in->heap), "%s", what);
  cr_assert(eq(u32, got->caps, in->caps), "%s", what);
  cr_assert(eq(u64, got->ptr, in->ptr), "%s", what);
  cr_assert(eq(u64, got->size, in->size), "%s", what);
  cr_assert(eq(u64, got->usable, in->op == HT_OP_FREE ? in->size : in->usable), "%s", what);
  cr_assert(eq(u64, got->old_ptr, in->op == HT_OP_REALLOC ? in->old_ptr : 0), "%s", what);
  cr_assert(eq(u64, got->old_usable, in->op == HT_OP_REALLOC ? in->old_usable : 0), "%s", what);
  cr_assert(eq(i64, got->cur_bytes, in->cur_bytes), "%s", what);
  cr_assert(eq(i64, got->cur_blocks, in->cur_blocks), "%s", what);
  cr_assert(eq(u64, got->total_bytes, in->total_bytes), "%s", what);
  cr_assert(eq(u64, got->seq, 17), "%s", what);
  cr_assert(eq(u32, got->stream, 3), "%s", what);
}

Test(encode, every_event_decodes_to_what_was_encoded_in_either_form) {
  static const uint32_t ops[] = {HT_OP_MALLOC, HT_OP_CALLOC, HT_OP_FREE, HT_OP_REALLOC};
  int forms[2] = {0, 0};
  for (int seq = 0; seq < 200; seq++) {
    ht_evstate_t enc = random_state(), dec = enc;
    for (int i = 0; i < 500; i++) {
      ht_event_t ev = random_event(&enc, ops[test_rand() % 4]);
      if (test_rand() % 8 == 0) /* totals that the op does not imply */
        ev.cur_bytes += (int64_t)(test_rand() % 100) - 50;
      uint8_t out[HT_PROTO_MAX_EVENT_BYTES];
      size_t n = ht_event_encode(out, &enc, &ev);
      forms[(out[0] & HT_EV_COMPACT) != 0]++;
      ht_event_t got = decode_one(out, n, &dec);
      assert_decoded(&got, &ev, "random event");
      cr_assert(eq(int, memcmp(&enc, &dec, sizeof enc), 0), "state after sequence %d event %d", seq,
                i);
    }
  }
  cr_assert(lt(int, 5000, forms[0]), "too few events in the varint form: %d", forms[0]);
  cr_assert(lt(int, 5000, forms[1]), "too few events in the compact form: %d", forms[1]);
}

/* An event just inside or just outside one limit of the compact form: it
 * takes the form it should, and decodes to itself. */
typedef struct {
  const char *what;
  uint32_t op;
  uint64_t dt, size, slack, old_usable;
  int64_t dptr, dold;
  uint32_t site;
  int compact;
  size_t bytes; /* its length in the compact form */
} limit_t;

static const limit_t limits[] = {
    {"short fields", HT_OP_MALLOC, 100, 24, 8, 0, 64, 0, 1, 1, 1 + 2 + 4 + 2 + 1},
    {"a new site", HT_OP_MALLOC, 100, 24, 8, 0, 64, 0, 9, 1, 1 + 2 + 2 + 4 + 2 + 1},
    {"time step 65535", HT_OP_FREE, 0xffff, 24, 0, 0, 64, 0, 1, 1, 1 + 2 + 4 + 2},
    {"time step 65536", HT_OP_FREE, 0x10000, 24, 0, 0, 64, 0, 1, 1, 1 + 4 + 4 + 2},
    {"time step 2^32 - 1", HT_OP_FREE, 0xffffffffu, 24, 0, 0, 64, 0, 1, 1, 1 + 4 + 4 + 2},
    {"time step 2^32", HT_OP_FREE, 1ull << 32, 24, 0, 0, 64, 0, 1, 0, 0},
    {"time going back", HT_OP_FREE, (uint64_t)-1, 24, 0, 0, 64, 0, 1, 0, 0},
    {"size 65535", HT_OP_CALLOC, 1, 0xffff, 0, 0, 64, 0, 1, 1, 1 + 2 + 4 + 2 + 1},
    {"size 65536", HT_OP_CALLOC, 1, 0x10000, 0, 0, 64, 0, 1, 1, 1 + 2 + 4 + 4 + 1},
    {"size 2^32 - 1", HT_OP_MALLOC, 1, 0xffffffffu, 0, 0, 64, 0, 1, 1, 1 + 2 + 4 + 4 + 1},
    {"size 2^32", HT_OP_MALLOC, 1, 1ull << 32, 0, 0, 64, 0, 1, 0, 0},
    {"slack 255", HT_OP_MALLOC, 1, 24, 255, 0, 64, 0, 1, 1, 1 + 2 + 4 + 2 + 1},
    {"slack 256", HT_OP_MALLOC, 1, 24, 256, 0, 64, 0, 1, 0, 0},
    {"pointer step 2^31 - 1", HT_OP_MALLOC, 1, 24, 0, 0, INT32_MAX, 0, 1, 1, 1 + 2 + 4 + 2 + 1},
    {"pointer step 2^31", HT_OP_MALLOC, 1, 24, 0, 0, (int64_t)INT32_MAX + 1, 0, 1, 0, 0},
    {"pointer step -2^31", HT_OP_FREE, 1, 24, 0, 0, INT32_MIN, 0, 1, 1, 1 + 2 + 4 + 2},
    {"pointer step -2^31 - 1", HT_OP_FREE, 1, 24, 0, 0, (int64_t)INT32_MIN - 1, 0, 1, 0, 0},
    {"site 65535", HT_OP_MALLOC, 1, 24, 0, 0, 64, 0, 0xffff, 1, 1 + 2 + 2 + 4 + 2 + 1},
    {"site 65536", HT_OP_MALLOC, 1, 24, 0, 0, 64, 0, 0x10000, 0, 0},
    {"realloc of short fields", HT_OP_REALLOC, 1, 24, 8, 100, 64, -4096, 1, 1,
     1 + 2 + 4 + 4 + 2 + 2 + 1},
    {"realloc from 65536 bytes", HT_OP_REALLOC, 1, 24, 8, 0x10000, 64, -4096, 1, 1,
     1 + 2 + 4 + 4 + 4 + 4 + 1},
    {"realloc from 2^32 bytes", HT_OP_REALLOC, 1, 24, 8, 1ull << 32, 64, -4096, 1, 0, 0},
    {"realloc from 2^31 below", HT_OP_REALLOC, 1, 24, 8, 100, 64, INT32_MIN, 1, 1,
     1 + 2 + 4 + 4 + 2 + 2 + 1},
    {"realloc from 2^31 above", HT_OP_REALLOC, 1, 24, 8, 100, 64, (int64_t)INT32_MAX + 1, 1, 0, 0},
};

Test(encode, the_compact_form_is_taken_exactly_where_its_fields_fit) {
  for (size_t k = 0; k < sizeof limits / sizeof *limits; k++) {
    const limit_t *l = &limits[k];
    ht_evstate_t enc = {.time_ns = 5000000000ull, .ptr = 0x7f0000400000ull, .site = 1};
    ht_evstate_t dec = enc, fast = enc;
    ht_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = l->op;
    ev.time_ns = enc.time_ns + l->dt;
    ev.site = l->site;
    ev.ptr = enc.ptr + (uint64_t)l->dptr;
    ev.size = l->size;
    ev.usable = l->op == HT_OP_FREE ? l->size : l->size + l->slack;
    if (l->op == HT_OP_REALLOC) {
      ev.old_ptr = ev.ptr + (uint64_t)l->dold;
      ev.old_usable = l->old_usable;
    }
    int64_t ib, ik;
    uint64_t it;
    ht__implied_totals(&enc, &ev, &ib, &ik, &it);
    ev.cur_bytes = ib, ev.cur_blocks = ik, ev.total_bytes = it;
    uint8_t out[HT_PROTO_MAX_EVENT_BYTES], out2[HT_PROTO_MAX_EVENT_BYTES];
    size_t n = ht_event_encode(out, &enc, &ev);
    cr_assert(eq(int, (out[0] & HT_EV_COMPACT) != 0, l->compact), "%s: wrong form", l->what);
    if (l->compact)
      cr_assert(eq(sz, n, l->bytes), "%s: %zu bytes", l->what, n);
    size_t n2 = encode_fast(out2, &fast, &ev);
    cr_assert(eq(sz, n2, n), "%s: the op encoder wrote %zu bytes, not %zu", l->what, n2, n);
    cr_assert(eq(int, memcmp(out2, out, n), 0), "%s: the op encoder's bytes differ", l->what);
    ht_event_t got = decode_one(out, n, &dec);
    assert_decoded(&got, &ev, l->what);
    cr_assert(eq(int, memcmp(&enc, &dec, sizeof enc), 0), "%s: states differ", l->what);
  }
}

/* A heap or caps that changed, or totals the op does not imply, take the
 * varint form, which can say so. */
Test(encode, what_the_compact_form_cannot_say_takes_the_varint_form) {
  ht_evstate_t st = {.time_ns = 1000, .ptr = 0x10000, .site = 1, .heap = 2, .caps = 0x1800};
  ht_event_t ev = {.op = HT_OP_MALLOC,
                   .time_ns = 1100,
                   .site = 1,
                   .heap = 2,
                   .caps = 0x1800,
                   .ptr = 0x10040,
                   .size = 24,
                   .usable = 24,
                   .cur_bytes = 24,
                   .cur_blocks = 1,
                   .total_bytes = 24};
  uint8_t out[HT_PROTO_MAX_EVENT_BYTES];
  ht_evstate_t a = st;
  ht_event_encode(out, &a, &ev);
  cr_assert(eq(u8, out[0] & HT_EV_COMPACT, HT_EV_COMPACT), "the plain case is compact");
  ht_event_t heap = ev, caps = ev, totals = ev;
  heap.heap = 3;
  caps.caps = 0x1000;
  totals.cur_bytes = 25;
  const ht_event_t *cases[] = {&heap, &caps, &totals};
  for (size_t k = 0; k < 3; k++) {
    ht_evstate_t e = st, d = st;
    size_t n = ht_event_encode(out, &e, cases[k]);
    cr_assert(eq(u8, out[0] & HT_EV_COMPACT, 0), "case %zu took the compact form", k);
    ht_event_t got = decode_one(out, n, &d);
    assert_decoded(&got, cases[k], "varint case");
  }
}

Test(encode, op_encoders_send_no_totals_and_mark_them_implied) {
  static const uint32_t ops[] = {HT_OP_MALLOC, HT_OP_CALLOC, HT_OP_FREE, HT_OP_REALLOC};
  for (int i = 0; i < 2000; i++) {
    ht_evstate_t st = random_state(), dec = st;
    ht_event_t ev = random_event(&st, ops[test_rand() % 4]);
    uint8_t got[HT_PROTO_MAX_EVENT_BYTES];
    size_t n = encode_fast(got, &st, &ev);
    /* Implied: by the form (compact), or by the flag. */
    cr_assert(ne(u8, got[0] & (HT_EV_COMPACT | HT_EV_TOTALS_IMPLIED), 0));
    cr_assert(eq(i64, st.cur_bytes, ev.cur_bytes));
    cr_assert(eq(i64, st.cur_blocks, ev.cur_blocks));
    cr_assert(eq(u64, st.total_bytes, ev.total_bytes));
    ht_event_t back = decode_one(got, n, &dec);
    assert_decoded(&back, &ev, "op encoder");
  }
}
