/*
 * test_proto.c - Criterion tests for the wire codec (proto/proto.c).
 *
 * Records go the way they travel: encoded with ht_proto_put_* (or, for
 * events, ht_proto_events_head + ht_proto_event_encode) into a buffer, split
 * off the byte stream with ht_proto_frame, then decoded and compared field by
 * field with what went in. Malformed inputs are a table of hand-written
 * bytes, each next to the one error it must produce. Decoders only ever see
 * exact-size heap copies of their input, so under the ASan build
 * (-DHT_SANITIZE=address) a read one byte past the end is a test failure,
 * not a silent pass.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ht_event.h"
#include "ht_proto.h"

#define TIB (UINT64_C(1) << 40)
#define STREAM_STATES 64

/* Big enough for the largest frame plus its prefix. */
static uint8_t wire[HT_PROTO_MAX_FRAME + 4096];

/* ======================================================================
 * Helpers
 * ==================================================================== */

/* Returns a heap copy of exactly n bytes, so ASan flags any read past it. */
static uint8_t *exact_copy(const void *p, size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  cr_assert(not(eq(ptr, copy, NULL)));
  if (n)
    memcpy(copy, p, n);
  return copy;
}

/* Splits the one frame an encoder wrote into w and checks its type. */
static ht_frame_t split_single(const ht_wbuf_t *w, uint8_t type) {
  ht_frame_t f;
  cr_assert(eq(int, w->overflow, 0), "encoder overflowed its buffer");
  cr_assert(eq(int, ht_proto_frame(w->p, w->len, &f), 0));
  cr_assert(eq(sz, f.total, w->len), "frame does not span what was written");
  cr_assert(eq(u8, f.type, type));
  return f;
}

static void assert_str_eq(ht_str_t got, ht_str_t want, const char *what) {
  cr_assert(eq(sz, got.len, want.len), "%s: length", what);
  cr_assert(eq(int, memcmp(got.s, want.s, want.len), 0), "%s: bytes differ", what);
}

static void assert_event_eq(const ht_event_t *got, const ht_event_t *want, size_t i) {
#define CHECK_FIELD(type, name)                                                                    \
  cr_assert(eq(u64, (uint64_t)got->name, (uint64_t)want->name), "event %zu: field " #name, i);
  HT_EVENT_FIELDS(CHECK_FIELD)
#undef CHECK_FIELD
}

/* Reads an EVENTS payload to its end. Returns 0 or the first HT_E*. */
static int decode_events(const uint8_t *p, size_t n, ht_evstate_t states[STREAM_STATES]) {
  ht_evreader_t r;
  int rc = ht_proto_events_begin(&r, p, n);
  if (rc)
    return rc;
  ht_event_t ev;
  while ((rc = ht_proto_events_next(&r, &states[r.hdr.stream % STREAM_STATES], &ev)) == 1)
    ;
  return rc;
}

/* Decodes one payload with the decoder for its record type. Returns 0 or the
 * first HT_E*. The daemon, not the codec, rejects unknown types; this helper
 * reports them as HT_ERECORD so that nothing passes undecoded. */
static int decode_payload(uint8_t type, const uint8_t *p, size_t n,
                          ht_evstate_t states[STREAM_STATES]) {
  static ht_hello_t hello;
  ht_site_rec_t site;
  ht_heap_rec_t heap;
  ht_lost_rec_t lost;
  ht_end_rec_t end;
  ht_previous_rec_t previous;
  switch (type) {
  case HT_REC_HELLO:
    return ht_proto_decode_hello(p, n, &hello);
  case HT_REC_SITE:
    return ht_proto_decode_site(p, n, &site);
  case HT_REC_HEAP:
    return ht_proto_decode_heap(p, n, &heap);
  case HT_REC_EVENTS:
    return decode_events(p, n, states);
  case HT_REC_LOST:
    return ht_proto_decode_lost(p, n, &lost);
  case HT_REC_END:
    return ht_proto_decode_end(p, n, &end);
  case HT_REC_PREVIOUS:
    return ht_proto_decode_previous(p, n, HT_PROTO_VERSION, &previous);
  }
  return HT_ERECORD;
}

/* ======================================================================
 * Sample records, valid and with every field away from zero
 * ==================================================================== */

static const char *const sample_argv[] = {"demo", "--size", "", "x y z"};

static ht_hello_t sample_hello(void) {
  ht_hello_t h;
  memset(&h, 0, sizeof h);
  h.version = HT_PROTO_VERSION;
  h.ptr_size = 8;
  h.clock = 1;
  h.flags = HT_HELLO_F_DROP | HT_HELLO_F_FORKED;
  h.pid = 4242;
  h.ppid = UINT32_MAX;
  h.start_realtime_ns = UINT64_C(1700000000123456789);
  h.start_mono_ns = UINT64_MAX - 7;
  h.app = ht_str("demo-app");
  h.exe = ht_str("/usr/local/bin/demo");
  h.argc = sizeof sample_argv / sizeof *sample_argv;
  for (uint16_t i = 0; i < h.argc; i++)
    h.argv[i] = ht_str(sample_argv[i]);
  return h;
}

static ht_site_rec_t sample_site(void) {
  ht_site_rec_t s = {.id = UINT32_MAX,
                     .line = 1234567,
                     .file = ht_str("src/parser.c"),
                     .func = ht_str("parse_block"),
                     .type = ht_str("struct node")};
  return s;
}

static ht_heap_rec_t sample_heap(void) {
  ht_heap_rec_t h = {.id = 3,
                     .caps = {HT_CAP_DMA | HT_CAP_INTERNAL, HT_SYSTEM_HEAP_CAPS, UINT32_MAX},
                     .start = UINT64_C(0xffff800000000000),
                     .size = TIB,
                     .name = ht_str("dma-pool")};
  return h;
}

static ht_lost_rec_t sample_lost(void) {
  ht_lost_rec_t l = {.stream = UINT32_MAX,
                     .first_seq = UINT64_MAX - 100,
                     .count = 100,
                     .why = HT_LOST_UNDELIVERED};
  return l;
}

static ht_end_rec_t sample_end(void) {
  ht_end_rec_t e = {.reason = HT_END_KILLED, .undelivered = UINT64_MAX, .signal = 11};
  return e;
}

/* Events of one stream covering every operation. Pointers jump up and down
 * the address space, sizes reach 2^40, and frees of blocks allocated before
 * tracing began drive the running totals negative. seq and stream come from
 * the frame header and are filled in by the tests. */
/* One event per paragraph: clang-format would put one field per line. */
/* clang-format off */
static const ht_event_t script[] = {
    {.op = HT_OP_MALLOC, .time_ns = 1000000, .site = 1, .caps = HT_SYSTEM_HEAP_CAPS,
     .ptr = 0x7f0000001000, .size = 24, .usable = 24,
     .cur_bytes = 24, .cur_blocks = 1, .total_bytes = 24},
    {.op = HT_OP_CALLOC, .time_ns = 1000500, .site = 2, .caps = HT_SYSTEM_HEAP_CAPS,
     .ptr = 0x555500002000, .size = TIB, .usable = TIB + 16,
     .cur_bytes = 24 + TIB + 16, .cur_blocks = 2, .total_bytes = 24 + TIB + 16},
    {.op = HT_OP_REALLOC, .time_ns = 1000900, .site = 3, .caps = HT_SYSTEM_HEAP_CAPS,
     .ptr = UINT64_MAX - 0xfff, .old_ptr = 0x555500002000, .old_usable = TIB + 16,
     .size = 2 * TIB, .usable = 2 * TIB,
     .cur_bytes = 24 + 2 * TIB, .cur_blocks = 2, .total_bytes = 24 + 3 * TIB + 16},
    {.op = HT_OP_ALIGNED, .time_ns = 2000000000, .site = UINT32_MAX, .heap = 2,
     .caps = HT_CAP_DMA | HT_CAP_INTERNAL, .ptr = 0x1000, .align = 4096,
     .size = 100, .usable = 112,
     .cur_bytes = 24 + 2 * TIB + 112, .cur_blocks = 3, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FREE, .time_ns = 2000000100, .site = 4, .ptr = UINT64_MAX - 0xfff,
     .size = 2 * TIB, .usable = 2 * TIB,
     .cur_bytes = 24 + 112, .cur_blocks = 2, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FREE, .time_ns = 2000000200, .site = 4, .ptr = 0x7f0000001000,
     .size = 24, .usable = 24,
     .cur_bytes = 112, .cur_blocks = 1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FREE, .time_ns = 2000000300, .site = 5, .ptr = 0x7f0000800000,
     .size = 4096, .usable = 4096,
     .cur_bytes = 112 - 4096, .cur_blocks = 0, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FREE, .time_ns = 2000000400, .site = 4, .heap = 2, .ptr = 0x1000,
     .size = 112, .usable = 112,
     .cur_bytes = -4096, .cur_blocks = -1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FAILED, .failed_op = HT_OP_MALLOC, .time_ns = 3000000000, .site = 6,
     .caps = HT_SYSTEM_HEAP_CAPS, .size = UINT64_MAX,
     .cur_bytes = -4096, .cur_blocks = -1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FAILED, .failed_op = HT_OP_CALLOC, .time_ns = 3000000001, .site = 7,
     .caps = HT_SYSTEM_HEAP_CAPS, .size = 4 * TIB,
     .cur_bytes = -4096, .cur_blocks = -1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FAILED, .failed_op = HT_OP_REALLOC, .time_ns = 3000000002, .site = 8,
     .caps = HT_SYSTEM_HEAP_CAPS, .old_ptr = 0x7f0000002000, .old_usable = 48,
     .size = 8 * TIB,
     .cur_bytes = -4096, .cur_blocks = -1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_FAILED, .failed_op = HT_OP_ALIGNED, .time_ns = 3000000003, .site = 9,
     .heap = 2, .caps = HT_CAP_DMA, .align = 1u << 21, .size = 16 * TIB,
     .cur_bytes = -4096, .cur_blocks = -1, .total_bytes = 24 + 3 * TIB + 128},
    {.op = HT_OP_MALLOC, .time_ns = 3000000003, .site = 1, .caps = HT_SYSTEM_HEAP_CAPS,
     .ptr = 0x7f0000002000, .size = 0, .usable = 16,
     .cur_bytes = -4080, .cur_blocks = 0, .total_bytes = 24 + 3 * TIB + 144},
};
/* clang-format on */
#define SCRIPT_LEN (sizeof script / sizeof *script)

/* Encodes script[from, to) as one EVENTS frame at out, continuing the delta
 * state enc. Returns the frame's length. */
static size_t encode_events_frame(uint8_t *out, ht_evstate_t *enc, uint32_t stream,
                                  uint64_t first_seq, size_t from, size_t to) {
  size_t data_len = 0;
  uint8_t *data = out + HT_PROTO_EVENTS_HEAD;
  for (size_t i = from; i < to; i++) {
    size_t n = ht_proto_event_encode(data + data_len, enc, &script[i]);
    cr_assert(le(sz, n, HT_PROTO_MAX_EVENT_BYTES), "event %zu encodes to %zu bytes", i, n);
    data_len += n;
  }
  ht_proto_events_head(out, stream, first_seq, (uint32_t)(to - from), data_len);
  return HT_PROTO_EVENTS_HEAD + data_len;
}

/* Decodes one EVENTS frame and checks it holds script[from, to). */
static void expect_events_frame(const uint8_t *frame, size_t len, ht_evstate_t *dec,
                                uint32_t stream, uint64_t first_seq, size_t from, size_t to) {
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(frame, len, &f), 0));
  cr_assert(eq(sz, f.total, len));
  cr_assert(eq(u8, f.type, HT_REC_EVENTS));
  uint8_t *payload = exact_copy(f.payload, f.payload_len);

  ht_evreader_t r;
  cr_assert(eq(int, ht_proto_events_begin(&r, payload, f.payload_len), 0));
  cr_assert(eq(u32, r.hdr.stream, stream));
  cr_assert(eq(u64, r.hdr.first_seq, first_seq));
  cr_assert(eq(u32, r.hdr.count, (uint32_t)(to - from)));
  for (size_t i = from; i < to; i++) {
    ht_event_t got;
    ht_event_t want = script[i];
    want.seq = first_seq + (i - from);
    want.stream = stream;
    cr_assert(eq(int, ht_proto_events_next(&r, dec, &got), 1), "event %zu missing", i);
    assert_event_eq(&got, &want, i);
  }
  cr_assert(eq(int, ht_proto_events_next(&r, dec, &(ht_event_t){0}), 0),
            "frame holds more than its count");
  free(payload);
}

/* ======================================================================
 * Round trips: encode -> ht_proto_frame -> decode gives every field back
 * ==================================================================== */

Test(roundtrip, hello_keeps_every_field_and_argv) {
  ht_hello_t in = sample_hello();
  static ht_hello_t out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_hello(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_HELLO);

  cr_assert(eq(int, ht_proto_decode_hello(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(u16, out.version, in.version));
  cr_assert(eq(u8, out.ptr_size, in.ptr_size));
  cr_assert(eq(u8, out.clock, in.clock));
  cr_assert(eq(u16, out.flags, in.flags));
  cr_assert(eq(u32, out.pid, in.pid));
  cr_assert(eq(u32, out.ppid, in.ppid));
  cr_assert(eq(u64, out.start_realtime_ns, in.start_realtime_ns));
  cr_assert(eq(u64, out.start_mono_ns, in.start_mono_ns));
  assert_str_eq(out.app, in.app, "app");
  assert_str_eq(out.exe, in.exe, "exe");
  cr_assert(eq(u16, out.argc, in.argc));
  for (uint16_t i = 0; i < in.argc; i++)
    assert_str_eq(out.argv[i], in.argv[i], sample_argv[i]);
}

Test(roundtrip, hello_with_the_maximum_argc_keeps_every_argument) {
  static ht_hello_t in, out;
  static char args[HT_PROTO_MAX_ARGS][8];
  in = sample_hello();
  in.argc = HT_PROTO_MAX_ARGS;
  for (int i = 0; i < HT_PROTO_MAX_ARGS; i++) {
    snprintf(args[i], sizeof args[i], "a%d", i);
    in.argv[i] = ht_str(args[i]);
  }
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_hello(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_HELLO);

  cr_assert(eq(int, ht_proto_decode_hello(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(u16, out.argc, HT_PROTO_MAX_ARGS));
  for (int i = 0; i < HT_PROTO_MAX_ARGS; i++)
    assert_str_eq(out.argv[i], in.argv[i], args[i]);
}

Test(roundtrip, site_keeps_every_field) {
  ht_site_rec_t in = sample_site(), out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_site(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_SITE);

  cr_assert(eq(int, ht_proto_decode_site(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(u32, out.id, in.id));
  cr_assert(eq(u32, out.line, in.line));
  assert_str_eq(out.file, in.file, "file");
  assert_str_eq(out.func, in.func, "func");
  assert_str_eq(out.type, in.type, "type");
}

Test(roundtrip, site_with_empty_strings_keeps_them_empty) {
  ht_site_rec_t in = {
      .id = 0, .line = 0, .file = ht_str(NULL), .func = ht_str(""), .type = ht_str(NULL)};
  ht_site_rec_t out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_site(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_SITE);

  cr_assert(eq(int, ht_proto_decode_site(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(sz, out.file.len, 0));
  cr_assert(eq(sz, out.func.len, 0));
  cr_assert(eq(sz, out.type.len, 0));
}

Test(roundtrip, heap_keeps_every_field) {
  ht_heap_rec_t in = sample_heap(), out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_heap(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_HEAP);

  cr_assert(eq(int, ht_proto_decode_heap(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(u32, out.id, in.id));
  for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
    cr_assert(eq(u32, out.caps[i], in.caps[i]), "caps[%d]", i);
  cr_assert(eq(u64, out.start, in.start));
  cr_assert(eq(u64, out.size, in.size));
  assert_str_eq(out.name, in.name, "name");
}

Test(roundtrip, lost_keeps_every_field) {
  ht_lost_rec_t in = sample_lost(), out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_lost(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_LOST);

  cr_assert(eq(int, ht_proto_decode_lost(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(u32, out.stream, in.stream));
  cr_assert(eq(u64, out.first_seq, in.first_seq));
  cr_assert(eq(u64, out.count, in.count));
  cr_assert(eq(u8, out.why, in.why));
}

Test(roundtrip, previous_keeps_every_field) {
  ht_previous_rec_t in = {UINT64_MAX - 1, UINT64_MAX, UINT64_MAX - 2}, out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_previous(&w, &in, HT_PROTO_VERSION);
  ht_frame_t f = split_single(&w, HT_REC_PREVIOUS);
  cr_assert(eq(int, ht_proto_decode_previous(f.payload, f.payload_len, HT_PROTO_VERSION, &out), 0));
  cr_assert(eq(u64, out.start_ns, in.start_ns));
  cr_assert(eq(u64, out.events, in.events));
  cr_assert(eq(u64, out.reported, in.reported));
}

/* A version 3 client sends no reported count: its record decodes as it
 * wrote it, and one with the count is not a version 3 record. */
Test(roundtrip, previous_of_version_3_has_no_reported_count) {
  ht_previous_rec_t in = {12345, 678, 90}, out;
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_previous(&w, &in, 3);
  ht_frame_t f = split_single(&w, HT_REC_PREVIOUS);
  cr_assert(eq(int, ht_proto_decode_previous(f.payload, f.payload_len, 3, &out), 0));
  cr_assert(eq(u64, out.start_ns, in.start_ns));
  cr_assert(eq(u64, out.events, in.events));
  cr_assert(eq(u64, out.reported, 0));
  cr_assert(eq(int, ht_proto_decode_previous(f.payload, f.payload_len, 4, &out), HT_ETRUNCATED));
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_previous(&w, &in, 4);
  f = split_single(&w, HT_REC_PREVIOUS);
  cr_assert(eq(int, ht_proto_decode_previous(f.payload, f.payload_len, 3, &out), HT_ETRAILING));
}

Test(roundtrip, end_keeps_every_reason_and_the_undelivered_count) {
  for (uint8_t reason = HT_END_CLEAN; reason <= HT_END_KILLED; reason++) {
    ht_end_rec_t in = sample_end(), out;
    in.reason = reason;
    ht_wbuf_t w;
    ht_wbuf_init(&w, wire, sizeof wire);
    ht_proto_put_end(&w, &in);
    ht_frame_t f = split_single(&w, HT_REC_END);

    cr_assert(eq(int, ht_proto_decode_end(f.payload, f.payload_len, &out), 0), "reason %s",
              ht_end_name(reason));
    cr_assert(eq(u8, out.reason, reason));
    cr_assert(eq(u64, out.undelivered, in.undelivered));
    cr_assert(eq(u8, out.signal, reason == HT_END_KILLED ? 11 : 0));
  }
}

/* A hostile stream can bring the state to the limits: the implied totals
 * wrap there as the encoder's do (UBSan in the sanitizer build checks that
 * nothing overflows a signed type). Found by fuzz_proto. */
Test(roundtrip, implied_totals_wrap_at_the_limits) {
  ht_evstate_t st = {.cur_blocks = INT64_MAX, .cur_bytes = INT64_MAX, .total_bytes = UINT64_MAX};
  ht_event_t ev = {.op = HT_OP_MALLOC, .size = 1, .usable = 16};
  int64_t bytes, blocks;
  uint64_t total;
  ht__implied_totals(&st, &ev, &bytes, &blocks, &total);
  cr_assert(eq(i64, blocks, INT64_MIN));
  cr_assert(eq(i64, bytes, INT64_MIN + 15));
  cr_assert(eq(u64, total, 15));
  st.cur_blocks = INT64_MIN;
  ev.op = HT_OP_FREE;
  ev.size = 16;
  ht__implied_totals(&st, &ev, &bytes, &blocks, &total);
  cr_assert(eq(i64, blocks, INT64_MAX));
}

Test(roundtrip, varints_of_every_width_read_back_equal) {
  static const uint64_t values[] = {
      0, 1, 127, 128, 16383, 16384, UINT32_MAX, (uint64_t)UINT32_MAX + 1, INT64_MAX, UINT64_MAX};
  static const size_t widths[] = {1, 1, 1, 2, 2, 3, 5, 5, 9, 10};
  for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
    uint8_t buf[10];
    ht_wbuf_t w;
    ht_wbuf_init(&w, buf, sizeof buf);
    ht_put_varint(&w, values[i]);
    cr_assert(eq(sz, w.len, widths[i]), "width of %llu", (unsigned long long)values[i]);

    ht_cur_t c;
    ht_cur_init(&c, buf, w.len);
    cr_assert(eq(u64, ht_get_varint(&c), values[i]));
    cr_assert(eq(int, c.err, 0));
    cr_assert(eq(sz, c.off, w.len));
  }
}

Test(roundtrip, stream_of_records_splits_into_frames_in_order) {
  ht_hello_t hello = sample_hello();
  ht_site_rec_t site = sample_site();
  ht_heap_rec_t heap = sample_heap();
  ht_lost_rec_t lost = sample_lost();
  ht_end_rec_t end = sample_end();
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_hello(&w, &hello);
  ht_proto_put_site(&w, &site);
  ht_proto_put_heap(&w, &heap);
  ht_proto_put_lost(&w, &lost);
  ht_proto_put_end(&w, &end);
  cr_assert(eq(int, w.overflow, 0));

  static const uint8_t order[] = {HT_REC_HELLO, HT_REC_SITE, HT_REC_HEAP, HT_REC_LOST, HT_REC_END};
  ht_evstate_t states[STREAM_STATES] = {{0}};
  size_t off = 0;
  for (size_t i = 0; i < sizeof order; i++) {
    ht_frame_t f;
    cr_assert(eq(int, ht_proto_frame(wire + off, w.len - off, &f), 0), "frame %zu", i);
    cr_assert(eq(u8, f.type, order[i]), "frame %zu is a %s", i, ht_record_name(f.type));
    cr_assert(eq(int, decode_payload(f.type, f.payload, f.payload_len, states), 0));
    off += f.total;
  }
  cr_assert(eq(sz, off, w.len));
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(wire + off, 0, &f), HT_EAGAIN));
}

/* ======================================================================
 * Events
 * ==================================================================== */

Test(events, every_op_decodes_to_the_fields_it_was_encoded_from) {
  ht_evstate_t enc = {0}, dec = {0};
  size_t len = encode_events_frame(wire, &enc, 7, 1000, 0, SCRIPT_LEN);
  expect_events_frame(wire, len, &dec, 7, 1000, 0, SCRIPT_LEN);

  /* Both ends finish in the state of the last event. */
  const ht_event_t *last = &script[SCRIPT_LEN - 1];
  cr_assert(eq(u64, dec.time_ns, last->time_ns));
  cr_assert(eq(u64, dec.ptr, last->ptr));
  cr_assert(eq(i64, dec.cur_bytes, last->cur_bytes));
  cr_assert(eq(i64, dec.cur_blocks, last->cur_blocks));
  cr_assert(eq(u64, dec.total_bytes, last->total_bytes));
  cr_assert(eq(int, memcmp(&enc, &dec, sizeof enc), 0));
}

Test(events, two_frames_of_one_stream_decode_with_the_state_carried_over) {
  ht_evstate_t enc = {0}, dec = {0};
  const size_t split = 5;
  size_t len1 = encode_events_frame(wire, &enc, 42, 0, 0, split);
  size_t len2 = encode_events_frame(wire + len1, &enc, 42, split, split, SCRIPT_LEN);
  expect_events_frame(wire, len1, &dec, 42, 0, 0, split);
  expect_events_frame(wire + len1, len2, &dec, 42, split, split, SCRIPT_LEN);
}

Test(events, second_frame_decoded_without_the_first_gets_other_values) {
  /* Proves the carried state matters: the deltas of frame two are relative
   * to the last event of frame one, not to zero. */
  ht_evstate_t enc = {0}, fresh = {0};
  const size_t split = 5;
  size_t len1 = encode_events_frame(wire, &enc, 42, 0, 0, split);
  size_t len2 = encode_events_frame(wire + len1, &enc, 42, split, split, SCRIPT_LEN);
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(wire + len1, len2, &f), 0));
  ht_evreader_t r;
  ht_event_t ev;
  cr_assert(eq(int, ht_proto_events_begin(&r, f.payload, f.payload_len), 0));
  cr_assert(eq(int, ht_proto_events_next(&r, &fresh, &ev), 1));
  cr_assert(not(eq(u64, ev.ptr, script[split].ptr)));
  cr_assert(not(eq(u64, ev.time_ns, script[split].time_ns)));
}

Test(events, frame_with_zero_events_decodes_to_nothing) {
  uint8_t head[HT_PROTO_EVENTS_HEAD];
  ht_proto_events_head(head, 1, 99, 0, 0);
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(head, sizeof head, &f), 0));
  ht_evreader_t r;
  ht_evstate_t st = {0};
  ht_event_t ev;
  cr_assert(eq(int, ht_proto_events_begin(&r, f.payload, f.payload_len), 0));
  cr_assert(eq(u32, r.hdr.count, 0));
  cr_assert(eq(int, ht_proto_events_next(&r, &st, &ev), 0));
}

Test(events, worst_case_event_fits_the_event_byte_bound) {
  /* Every delta chosen to need the longest varint. */
  ht_event_t in = {.op = HT_OP_REALLOC,
                   .time_ns = UINT64_C(1) << 63,
                   .site = UINT32_MAX,
                   .heap = UINT32_MAX,
                   .caps = UINT32_MAX,
                   .ptr = UINT64_C(1) << 63,
                   .old_ptr = 0,
                   .old_usable = UINT64_MAX,
                   .size = UINT64_MAX,
                   .usable = INT64_MAX,
                   .cur_bytes = INT64_MIN,
                   .cur_blocks = INT64_MIN,
                   .total_bytes = UINT64_MAX};
  ht_evstate_t enc = {0}, dec = {0};
  uint8_t *out = malloc(HT_PROTO_MAX_EVENT_BYTES);
  size_t n = ht_proto_event_encode(out, &enc, &in);
  cr_assert(le(sz, n, HT_PROTO_MAX_EVENT_BYTES));

  size_t len = HT_PROTO_EVENTS_HEAD + n;
  ht_proto_events_head(wire, 0, 0, 1, n);
  memcpy(wire + HT_PROTO_EVENTS_HEAD, out, n);
  free(out);
  ht_frame_t f;
  cr_assert(eq(int, ht_proto_frame(wire, len, &f), 0));
  ht_evreader_t r;
  ht_event_t got;
  cr_assert(eq(int, ht_proto_events_begin(&r, f.payload, f.payload_len), 0));
  cr_assert(eq(int, ht_proto_events_next(&r, &dec, &got), 1));
  assert_event_eq(&got, &in, 0);
}

/* ======================================================================
 * Malformed input: each table row produces its own specific error
 * ==================================================================== */

typedef struct {
  char name[64];
  uint8_t type; /* record type, framed by the test; 0: bytes go raw to ht_proto_frame */
  uint8_t bytes[80];
  size_t len;
  int want;
} bad_input_t;

#define ROW(nm, ty, err, ...)                                                                      \
  { nm, ty, {__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}), err }
#define RAW 0
#define U32(v) (v) & 0xff, ((v) >> 8) & 0xff, ((v) >> 16) & 0xff, ((v) >> 24) & 0xff
#define U64(v) U32((uint64_t)(v)&0xffffffffu), U32((uint64_t)(v) >> 32)
/* HELLO up to its strings: version, ptr_size, clock, flags, pid, ppid, times */
#define HELLO_AFTER_MAGIC(ver) ver, 0, 8, 1, 0, 0, U32(1234), U32(1), U64(0), U64(0)
#define HELLO_HEAD 'H', 'T', 'R', 'C', HELLO_AFTER_MAGIC(1)
/* EVENTS header: stream 7, first_seq 0, count */
#define EV_HEAD(count) U32(7), U64(0), U32(count)
/* the ten varints after the op byte of a MALLOC or CALLOC sent with no
 * flags (every field present), all zero */
#define ZERO_FIELDS 0, 0, 0, 0, 0, 0, 0, 0, 0, 0

ParameterizedTestParameters(malformed, each_input_gets_its_own_error) {
  /* Rows are laid out by field, which clang-format would reflow. */
  /* clang-format off */
  static bad_input_t rows[] = {
      /* frames */
      ROW("prefix of 3 bytes waits for more", RAW, HT_EAGAIN, 5, 0, 0),
      ROW("partial frame waits for more", RAW, HT_EAGAIN, U32(5), HT_REC_END, 1),
      ROW("zero frame length", RAW, HT_EFRAMESIZE, U32(0), HT_REC_END, 1, 0),
      ROW("frame length one above the maximum", RAW, HT_EFRAMESIZE,
          U32(HT_PROTO_MAX_FRAME + 1), HT_REC_END, 1, 0),
      ROW("frame length 0xffffffff", RAW, HT_EFRAMESIZE, U32(0xffffffffu), HT_REC_END),
      ROW("whole one-byte frame is accepted", RAW, HT_OK, U32(1), HT_REC_END),
      /* HELLO */
      ROW("minimal hello is accepted", HT_REC_HELLO, HT_OK, HELLO_HEAD, 0, 0, 0, 0, 0, 0),
      ROW("bad magic", HT_REC_HELLO, HT_EMAGIC,
          'H', 'T', 'R', 'X', HELLO_AFTER_MAGIC(1), 0, 0, 0, 0, 0, 0),
      ROW("newer version", HT_REC_HELLO, HT_EVERSION,
          'H', 'T', 'R', 'C', HELLO_AFTER_MAGIC(HT_PROTO_VERSION + 1), 0, 0, 0, 0, 0, 0),
      ROW("hello cut inside pid", HT_REC_HELLO, HT_ETRUNCATED,
          'H', 'T', 'R', 'C', 1, 0, 8, 1, 0, 0, 0xd2, 0x04),
      ROW("string length past the end", HT_REC_HELLO, HT_ESTRING, HELLO_HEAD, 5, 0, 'a', 'b'),
      ROW("string longer than the limit", HT_REC_HELLO, HT_ESTRLEN,
          HELLO_HEAD, (HT_PROTO_MAX_STRING + 1) & 0xff, (HT_PROTO_MAX_STRING + 1) >> 8),
      ROW("string with a NUL byte", HT_REC_HELLO, HT_ESTRNUL,
          HELLO_HEAD, 3, 0, 'a', 0, 'b', 0, 0, 0, 0),
      ROW("argc above the limit", HT_REC_HELLO, HT_ELIMIT,
          HELLO_HEAD, 0, 0, 0, 0, (HT_PROTO_MAX_ARGS + 1) & 0xff, (HT_PROTO_MAX_ARGS + 1) >> 8),
      ROW("argc at the limit but no strings", HT_REC_HELLO, HT_ETRUNCATED,
          HELLO_HEAD, 0, 0, 0, 0, HT_PROTO_MAX_ARGS & 0xff, HT_PROTO_MAX_ARGS >> 8),
      ROW("hello with a trailing byte", HT_REC_HELLO, HT_ETRAILING,
          HELLO_HEAD, 0, 0, 0, 0, 0, 0, 0),
      /* SITE: id, line, file, func, type */
      ROW("minimal site is accepted", HT_REC_SITE, HT_OK, 0, 0, 0, 0, 0, 0, 0, 0),
      ROW("varint of 11 bytes", HT_REC_SITE, HT_EVARINT,
          0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
          0, 0, 0, 0, 0, 0, 0),
      ROW("site id 2^32-1 is accepted", HT_REC_SITE, HT_OK,
          0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0, 0),
      ROW("site id 2^32", HT_REC_SITE, HT_ELIMIT,
          0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 0, 0, 0),
      ROW("site with a trailing byte", HT_REC_SITE, HT_ETRAILING, 0, 0, 0, 0, 0, 0, 0, 0, 9),
      /* HEAP: id, caps x3, start, size, name */
      ROW("heap caps above 2^32", HT_REC_HEAP, HT_ELIMIT,
          1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, U64(0), U64(0), 0, 0),
      /* LOST: stream, first_seq, count */
      ROW("lost with a 10-byte varint is accepted", HT_REC_LOST, HT_OK,
          1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, HT_LOST_DROPPED),
      ROW("lost stream above 2^32", HT_REC_LOST, HT_ELIMIT,
          0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, HT_LOST_DROPPED),
      ROW("lost with an unknown reason", HT_REC_LOST, HT_ELIMIT, 1, 0, 1, 3),
      ROW("lost cut before its reason", HT_REC_LOST, HT_ETRUNCATED, 1, 0, 1),
      /* PREVIOUS: start_ns (u64), events, reported */
      ROW("previous", HT_REC_PREVIOUS, HT_OK, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
      ROW("previous cut in its start", HT_REC_PREVIOUS, HT_ETRUNCATED, 1, 2, 3, 4, 5, 6, 7),
      ROW("previous without its count", HT_REC_PREVIOUS, HT_ETRUNCATED, 1, 2, 3, 4, 5, 6, 7, 8),
      ROW("previous without its reported count", HT_REC_PREVIOUS, HT_ETRUNCATED, 1, 2, 3, 4, 5, 6,
          7, 8, 9),
      ROW("previous with a byte after it", HT_REC_PREVIOUS, HT_ETRAILING, 1, 2, 3, 4, 5, 6, 7, 8,
          9, 10, 0),
      /* END: reason, undelivered */
      ROW("end with a trailing byte", HT_REC_END, HT_ETRAILING, HT_END_CLEAN, 0, 0xaa),
      ROW("end with reason 0", HT_REC_END, HT_ELIMIT, HT_END_RUNNING, 0),
      ROW("end with a reason above the last", HT_REC_END, HT_ELIMIT, HT_END_KILLED + 1, 0),
      ROW("end cut before its count", HT_REC_END, HT_ETRUNCATED, HT_END_CLEAN),
      ROW("killed end cut before its signal", HT_REC_END, HT_ETRUNCATED, HT_END_KILLED, 0),
      ROW("killed by signal 0", HT_REC_END, HT_ELIMIT, HT_END_KILLED, 0, 0),
      ROW("killed by signal 65", HT_REC_END, HT_ELIMIT, HT_END_KILLED, 0, HT_MAX_SIGNAL + 1),
      ROW("killed by signal 9 is accepted", HT_REC_END, HT_OK, HT_END_KILLED, 0, 9),
      /* EVENTS: header, then op byte and varints per event */
      ROW("one zero malloc is accepted", HT_REC_EVENTS, HT_OK,
          EV_HEAD(1), HT_OP_MALLOC, ZERO_FIELDS),
      ROW("unknown op 7", HT_REC_EVENTS, HT_EOP, EV_HEAD(1), HT_OP_MAX + 1, ZERO_FIELDS),
      ROW("op 0", HT_REC_EVENTS, HT_EOP, EV_HEAD(1), 0, ZERO_FIELDS),
      ROW("failed with failed_op failed", HT_REC_EVENTS, HT_EOP,
          EV_HEAD(1), HT_OP_FAILED, HT_OP_FAILED, ZERO_FIELDS),
      ROW("failed with failed_op 0", HT_REC_EVENTS, HT_EOP,
          EV_HEAD(1), HT_OP_FAILED, 0, ZERO_FIELDS),
      ROW("failed cut before its failed_op", HT_REC_EVENTS, HT_ETRUNCATED,
          EV_HEAD(1), HT_OP_FAILED),
      /* The compact form: fixed-width fields (PROTOCOL.md, "Compact events") */
      ROW("compact malloc is accepted", HT_REC_EVENTS, HT_OK,
          EV_HEAD(1), HT_OP_MALLOC | HT_EV_COMPACT, U32(1000), 5, 0, U32(0x1000), U32(24), 8),
      ROW("compact free of short fields is accepted", HT_REC_EVENTS, HT_OK,
          EV_HEAD(1), HT_OP_FREE | HT_EV_COMPACT | HT_EV_SAME_SITE | HT_EV_SHORT_TIME |
          HT_EV_SHORT_SIZES, 16, 0, U32(64), 32, 0),
      ROW("compact aligned_alloc", HT_REC_EVENTS, HT_EOP,
          EV_HEAD(1), HT_OP_ALIGNED | HT_EV_COMPACT, ZERO_FIELDS),
      ROW("compact failed", HT_REC_EVENTS, HT_EOP,
          EV_HEAD(1), HT_OP_FAILED | HT_EV_COMPACT, HT_OP_MALLOC, ZERO_FIELDS),
      ROW("compact op 0", HT_REC_EVENTS, HT_EOP, EV_HEAD(1), HT_EV_COMPACT, ZERO_FIELDS),
      ROW("compact malloc with its reserved bit", HT_REC_EVENTS, HT_EOP,
          EV_HEAD(1), HT_OP_MALLOC | HT_EV_COMPACT | HT_EV_COMPACT_RESERVED, ZERO_FIELDS),
      ROW("compact realloc cut inside its old pointer", HT_REC_EVENTS, HT_ETRUNCATED,
          EV_HEAD(1), HT_OP_REALLOC | HT_EV_COMPACT | HT_EV_SAME_SITE | HT_EV_SHORT_TIME,
          1, 0, U32(16), 1, 2),
      ROW("compact malloc cut before its slack", HT_REC_EVENTS, HT_ETRUNCATED,
          EV_HEAD(1), HT_OP_MALLOC | HT_EV_COMPACT | HT_EV_SAME_SITE | HT_EV_SHORT_TIME |
          HT_EV_SHORT_SIZES, 1, 0, U32(16), 24, 0),
      ROW("compact free with a trailing byte", HT_REC_EVENTS, HT_ETRAILING,
          EV_HEAD(1), HT_OP_FREE | HT_EV_COMPACT | HT_EV_SAME_SITE | HT_EV_SHORT_TIME |
          HT_EV_SHORT_SIZES, 1, 0, U32(16), 24, 0, 0x99),
      ROW("count above the frame limit", HT_REC_EVENTS, HT_ELIMIT,
          EV_HEAD(HT_PROTO_MAX_FRAME_EVENTS + 1), HT_OP_MALLOC, ZERO_FIELDS),
      ROW("fewer events than the count", HT_REC_EVENTS, HT_ETRUNCATED,
          EV_HEAD(2), HT_OP_MALLOC, ZERO_FIELDS),
      ROW("more events than the count", HT_REC_EVENTS, HT_ETRAILING,
          EV_HEAD(1), HT_OP_MALLOC, ZERO_FIELDS, HT_OP_MALLOC, ZERO_FIELDS),
      ROW("events header cut inside first_seq", HT_REC_EVENTS, HT_ETRUNCATED, U32(7), 0, 0),
      ROW("event site above 2^32", HT_REC_EVENTS, HT_ELIMIT,
          EV_HEAD(1), HT_OP_FREE, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0),
  };
  /* clang-format on */
  return cr_make_param_array(bad_input_t, rows, sizeof rows / sizeof *rows);
}

ParameterizedTest(bad_input_t *in, malformed, each_input_gets_its_own_error) {
  uint8_t *buf;
  size_t len;
  if (in->type == RAW) {
    buf = exact_copy(in->bytes, in->len);
    len = in->len;
  } else {
    len = HT_PROTO_FRAME_PREFIX + 1 + in->len;
    buf = malloc(len);
    cr_assert(not(eq(ptr, buf, NULL)));
    uint32_t body = (uint32_t)(1 + in->len);
    for (int i = 0; i < 4; i++)
      buf[i] = (uint8_t)(body >> (8 * i));
    buf[4] = in->type;
    memcpy(buf + 5, in->bytes, in->len);
  }

  ht_frame_t f;
  int got = ht_proto_frame(buf, len, &f);
  if (in->type != RAW) {
    cr_assert(eq(int, got, 0), "%s: framing failed with %s", in->name, ht_err_name(got));
    uint8_t *payload = exact_copy(f.payload, f.payload_len);
    ht_evstate_t states[STREAM_STATES] = {{0}};
    got = decode_payload(f.type, payload, f.payload_len, states);
    free(payload);
  }
  free(buf);
  cr_assert(eq(int, got, in->want), "%s: got %s, want %s", in->name, ht_err_name(got),
            ht_err_name(in->want));
}

/* ======================================================================
 * Truncation: every prefix of every valid record is an error, never a crash
 * ==================================================================== */

/* Writes one of each record and an EVENTS frame into wire. Returns bytes. */
static size_t encode_one_of_each(void) {
  ht_hello_t hello = sample_hello();
  ht_site_rec_t site = sample_site();
  ht_heap_rec_t heap = sample_heap();
  ht_lost_rec_t lost = sample_lost();
  ht_end_rec_t end = sample_end();
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_hello(&w, &hello);
  ht_proto_put_site(&w, &site);
  ht_proto_put_heap(&w, &heap);
  ht_proto_put_lost(&w, &lost);
  ht_proto_put_end(&w, &end);
  cr_assert(eq(int, w.overflow, 0));
  ht_evstate_t enc = {0};
  return w.len + encode_events_frame(wire + w.len, &enc, 3, 0, 0, SCRIPT_LEN);
}

/* The errors a decoder may give for a record that stops early: a field cut
 * (HT_ETRUNCATED) or a string cut (HT_ESTRING). Criterion 2.4.1's any()
 * fails when any of its arguments fails, so the choice is made here. */
static int is_cut_short_error(int rc) {
  return rc == HT_ETRUNCATED || rc == HT_ESTRING;
}

Test(truncation, every_prefix_of_every_payload_is_rejected) {
  size_t total = encode_one_of_each();
  size_t frames = 0;
  for (size_t off = 0; off < total; frames++) {
    ht_frame_t f;
    cr_assert(eq(int, ht_proto_frame(wire + off, total - off, &f), 0));
    for (size_t cut = 0; cut <= f.payload_len; cut++) {
      uint8_t *prefix = exact_copy(f.payload, cut);
      ht_evstate_t states[STREAM_STATES] = {{0}};
      int rc = decode_payload(f.type, prefix, cut, states);
      free(prefix);
      if (cut == f.payload_len)
        cr_assert(eq(int, rc, 0), "%s: whole payload rejected", ht_record_name(f.type));
      else
        cr_assert(eq(int, is_cut_short_error(rc), 1), "%s cut to %zu of %zu bytes: got %s",
                  ht_record_name(f.type), cut, f.payload_len, ht_err_name(rc));
    }
    off += f.total;
  }
  cr_assert(eq(sz, frames, 6));
}

Test(truncation, frame_splitter_waits_for_every_partial_frame) {
  size_t total = encode_one_of_each();
  for (size_t off = 0; off < total;) {
    ht_frame_t f;
    cr_assert(eq(int, ht_proto_frame(wire + off, total - off, &f), 0));
    for (size_t cut = 0; cut < f.total; cut++) {
      uint8_t *prefix = exact_copy(wire + off, cut);
      ht_frame_t partial;
      int rc = ht_proto_frame(prefix, cut, &partial);
      free(prefix);
      cr_assert(eq(int, rc, HT_EAGAIN), "%s frame cut to %zu of %zu bytes: got %s",
                ht_record_name(f.type), cut, f.total, ht_err_name(rc));
    }
    off += f.total;
  }
}

/* ======================================================================
 * Writer
 * ==================================================================== */

Test(writer, overflow_is_sticky_and_never_writes_past_cap) {
  uint8_t mem[17];
  memset(mem, 0, sizeof mem);
  mem[16] = 0xa5;
  ht_wbuf_t w;
  ht_wbuf_init(&w, mem, 16);
  ht_put_u64(&w, UINT64_MAX);
  ht_put_u32(&w, UINT32_MAX);
  cr_assert(eq(sz, w.len, 12));
  cr_assert(eq(int, w.overflow, 0));

  ht_put_u64(&w, UINT64_MAX); /* 8 bytes do not fit in the 4 left */
  cr_assert(eq(int, w.overflow, 1));
  cr_assert(eq(sz, w.len, 12));
  ht_put_u8(&w, 0xff); /* would fit, but overflow is sticky */
  ht_put_u16(&w, 0xffff);
  ht_put_varint(&w, 1);
  ht_put_str(&w, "ab", 2);
  cr_assert(eq(int, w.overflow, 1));
  cr_assert(eq(sz, w.len, 12));
  for (size_t i = 12; i < 16; i++)
    cr_assert(eq(u8, mem[i], 0), "byte %zu written after overflow", i);
  cr_assert(eq(u8, mem[16], 0xa5), "guard byte overwritten");
}

Test(writer, record_encoders_never_write_past_a_short_buffer) {
  ht_hello_t hello = sample_hello();
  ht_site_rec_t site = sample_site();
  ht_heap_rec_t heap = sample_heap();
  ht_lost_rec_t lost = sample_lost();
  ht_end_rec_t end = sample_end();
  for (int rec = 0; rec < 5; rec++) {
    size_t need = 0;
    for (size_t cap = 0;; cap++) {
      /* cap bytes and a guard, on the heap so ASan also watches the edge */
      uint8_t *mem = malloc(cap + 1);
      memset(mem, 0, cap);
      mem[cap] = 0xa5;
      ht_wbuf_t w;
      ht_wbuf_init(&w, mem, cap);
      switch (rec) {
      case 0:
        ht_proto_put_hello(&w, &hello);
        break;
      case 1:
        ht_proto_put_site(&w, &site);
        break;
      case 2:
        ht_proto_put_heap(&w, &heap);
        break;
      case 3:
        ht_proto_put_lost(&w, &lost);
        break;
      default:
        ht_proto_put_end(&w, &end);
        break;
      }
      cr_assert(eq(u8, mem[cap], 0xa5), "record %d, cap %zu: guard overwritten", rec, cap);
      cr_assert(le(sz, w.len, cap));
      int overflow = w.overflow;
      free(mem);
      if (!overflow) {
        need = cap;
        break;
      }
    }
    cr_assert(lt(sz, 0, need), "record %d fit in an empty buffer", rec);
  }
}

Test(writer, strings_longer_than_the_limit_are_cut_on_encode) {
  static char longer[HT_PROTO_MAX_STRING + 904];
  memset(longer, 'x', sizeof longer);
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_put_str(&w, longer, sizeof longer);
  cr_assert(eq(int, w.overflow, 0));
  cr_assert(eq(sz, w.len, 2 + HT_PROTO_MAX_STRING));
  cr_assert(eq(u16, (uint16_t)(wire[0] | wire[1] << 8), HT_PROTO_MAX_STRING));

  /* and a record carrying one decodes with the string cut to the limit */
  ht_site_rec_t in = sample_site(), out;
  in.file.s = longer;
  in.file.len = sizeof longer;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_site(&w, &in);
  ht_frame_t f = split_single(&w, HT_REC_SITE);
  cr_assert(eq(int, ht_proto_decode_site(f.payload, f.payload_len, &out), 0));
  cr_assert(eq(sz, out.file.len, HT_PROTO_MAX_STRING));
  cr_assert(eq(int, memcmp(out.file.s, longer, HT_PROTO_MAX_STRING), 0));
  assert_str_eq(out.func, in.func, "func after the cut string");
}

Test(writer, string_of_exactly_the_limit_is_kept_whole) {
  static char full[HT_PROTO_MAX_STRING];
  memset(full, 'y', sizeof full);
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_put_str(&w, full, sizeof full);
  ht_cur_t c;
  ht_cur_init(&c, wire, w.len);
  ht_str_t s = ht_get_str(&c);
  cr_assert(eq(int, c.err, 0));
  cr_assert(eq(sz, s.len, HT_PROTO_MAX_STRING));
}

Test(writer, hello_too_big_for_one_frame_is_flagged_as_overflow) {
  static char arg[HT_PROTO_MAX_STRING];
  static ht_hello_t h;
  memset(arg, 'z', sizeof arg);
  h = sample_hello();
  h.argc = HT_PROTO_MAX_ARGS;
  for (int i = 0; i < HT_PROTO_MAX_ARGS; i++) {
    h.argv[i].s = arg;
    h.argv[i].len = sizeof arg;
  }
  /* 256 strings of 4096 bytes exceed HT_PROTO_MAX_FRAME even though the
   * buffer has room: the frame must not go out with a length the peer
   * would reject. */
  ht_wbuf_t w;
  ht_wbuf_init(&w, wire, sizeof wire);
  ht_proto_put_hello(&w, &h);
  cr_assert(eq(int, w.overflow, 1));
}

/* ======================================================================
 * Names and errors
 * ==================================================================== */

Test(errors, every_code_has_its_own_message_and_name) {
  static const struct {
    int code;
    const char *name;
  } codes[] = {
#define CODE_ROW(name, code, msg) {code, "HT_" #name},
      HT_ERRNO_MAP(CODE_ROW)
#undef CODE_ROW
  };
  const size_t n = sizeof codes / sizeof *codes;
  for (size_t i = 0; i < n; i++) {
    const char *msg = ht_strerror(codes[i].code);
    cr_assert(lt(int, codes[i].code, 0));
    cr_assert(ne(str, (char *)msg, "unknown error"), "%s has no message", codes[i].name);
    cr_assert(eq(str, (char *)ht_err_name(codes[i].code), (char *)codes[i].name));
    for (size_t j = 0; j < i; j++) {
      cr_assert(ne(int, codes[i].code, codes[j].code));
      cr_assert(ne(str, (char *)msg, (char *)ht_strerror(codes[j].code)),
                "%s and %s share a message", codes[i].name, codes[j].name);
    }
  }
}

Test(errors, success_and_unknown_codes_have_their_own_texts) {
  cr_assert(eq(str, (char *)ht_strerror(HT_OK), "success"));
  cr_assert(eq(str, (char *)ht_err_name(HT_OK), "HT_OK"));
  cr_assert(eq(str, (char *)ht_strerror(-9999), "unknown error"));
  cr_assert(eq(str, (char *)ht_err_name(-9999), "HT_E?"));
}

Test(names, every_record_op_and_end_reason_has_a_name) {
#define CHECK_NAME(fn, code, text) cr_assert(eq(str, (char *)fn(code), text));
#define CHECK_RECORD(name, code, text) CHECK_NAME(ht_record_name, code, text)
#define CHECK_OP(name, code, text) CHECK_NAME(ht_op_name, code, text)
#define CHECK_END(name, code, text) CHECK_NAME(ht_end_name, code, text)
  HT_RECORD_MAP(CHECK_RECORD)
  HT_OP_MAP(CHECK_OP)
  HT_END_MAP(CHECK_END)
#undef CHECK_END
#undef CHECK_OP
#undef CHECK_RECORD
#undef CHECK_NAME
  cr_assert(eq(str, (char *)ht_record_name(0), "unknown"));
  cr_assert(eq(str, (char *)ht_op_name(HT_OP_MAX + 1), "unknown"));
  cr_assert(eq(str, (char *)ht_end_name(-1), "unknown"));
}

Test(caps, format_names_bits_with_default_first) {
  char out[64];
  cr_assert(eq(str, ht_caps_format(0x1006, out, sizeof out), "DEFAULT|8BIT|32BIT"));
  cr_assert(eq(str, ht_caps_format(HT_CAP_DMA | HT_CAP_INTERNAL, out, sizeof out), "DMA|INTERNAL"));
  cr_assert(eq(str, ht_caps_format(HT_CAP_INVALID, out, sizeof out), "INVALID"));
}

Test(caps, format_of_no_bits_is_0) {
  char out[8];
  cr_assert(eq(str, ht_caps_format(0, out, sizeof out), "0"));
}

Test(caps, format_shows_unnamed_bits_in_hex) {
  char out[64];
  cr_assert(
      eq(str, ht_caps_format(0x1006 | 0x10000, out, sizeof out), "DEFAULT|8BIT|32BIT|0x10000"));
}

Test(caps, format_truncates_to_fit_the_buffer) {
  const char *full = "DEFAULT|8BIT|32BIT";
  for (size_t cap = 1; cap <= strlen(full) + 1; cap++) {
    char out[32];
    memset(out, '#', sizeof out);
    ht_caps_format(0x1006, out, cap);
    cr_assert(lt(sz, strlen(out), cap), "cap %zu", cap);
    cr_assert(eq(int, strncmp(out, full, strlen(out)), 0), "cap %zu gave %s", cap, out);
    cr_assert(eq(chr, out[cap], '#'), "cap %zu: wrote past the buffer", cap);
  }
}

/* ======================================================================
 * Fuzz corpus: the committed seeds are valid record streams
 * ==================================================================== */

Test(corpus, every_seed_decodes_without_error) {
  const char *dir_path = HT_SOURCE_DIR "/tests/fuzz/corpus/proto";
  DIR *dir = opendir(dir_path);
  cr_assert(not(eq(ptr, dir, NULL)), "cannot open %s", dir_path);
  size_t seeds = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir_path, de->d_name);
    FILE *fp = fopen(path, "rb");
    cr_assert(not(eq(ptr, fp, NULL)), "cannot open %s", path);
    size_t len = fread(wire, 1, sizeof wire, fp);
    fclose(fp);

    ht_evstate_t states[STREAM_STATES] = {{0}};
    size_t off = 0;
    while (off < len) {
      ht_frame_t f;
      cr_assert(eq(int, ht_proto_frame(wire + off, len - off, &f), 0), "%s at %zu", de->d_name,
                off);
      int rc = decode_payload(f.type, f.payload, f.payload_len, states);
      cr_assert(eq(int, rc, 0), "%s: %s frame at %zu: %s", de->d_name, ht_record_name(f.type), off,
                ht_err_name(rc));
      off += f.total;
    }
    cr_assert(lt(sz, 0, len), "%s is empty", de->d_name);
    seeds++;
  }
  closedir(dir);
  cr_assert(ge(sz, seeds, 5));
}
