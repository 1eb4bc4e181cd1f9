/*
 * fuzz_proto.c - libFuzzer target for the wire codec (proto/proto.c).
 *
 * The input is taken as the byte stream of one connection: ht_proto_frame
 * splits frames off it until it asks for more bytes or rejects a length,
 * and each frame goes to the decoder for its type, EVENTS through
 * begin/next with one ht_evstate_t per stream id (mod 64), as the daemon
 * keeps them. Every payload is first copied to a heap block of exactly its
 * size, so ASan reports a decoder that reads past its own frame, not only
 * one that reads past the whole input.
 *
 * Beyond "never crash", the target checks what the decoders promise:
 * a frame lies inside the input, decoded strings lie inside their payload
 * and hold no NUL, and every record a decoder accepts is written back by
 * its encoder and decodes to the same fields. A broken promise aborts.
 *
 * Build and run: scripts/fuzz [SECONDS]. Seeds: tests/fuzz/make_corpus.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ht_proto.h"

#define STREAM_STATES 64

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      abort();                                                                                     \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encoded records are written back here; a record never grows on the way
 * back (varints come out minimal), so a frame's worth is enough. */
static uint8_t rewire[HT_PROTO_FRAME_PREFIX + HT_PROTO_MAX_FRAME];

static void check_str(ht_str_t s, const uint8_t *p, size_t n) {
  CHECK(s.len <= HT_PROTO_MAX_STRING);
  if (s.len == 0)
    return;
  CHECK((const uint8_t *)s.s >= p && (const uint8_t *)s.s + s.len <= p + n);
  CHECK(memchr(s.s, 0, s.len) == NULL);
}

static int str_same(ht_str_t a, ht_str_t b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.s, b.s, a.len) == 0);
}

/* Splits the single frame an encoder wrote to w; returns its payload. */
static ht_frame_t reframe(const ht_wbuf_t *w, uint8_t type) {
  ht_frame_t f;
  CHECK(!w->overflow);
  CHECK(ht_proto_frame(w->p, w->len, &f) == 0);
  CHECK(f.total == w->len && f.type == type);
  return f;
}

static void fuzz_hello(const uint8_t *p, size_t n) {
  static ht_hello_t in, back;
  if (ht_proto_decode_hello(p, n, &in) != 0)
    return;
  CHECK(in.version <= HT_PROTO_VERSION && in.argc <= HT_PROTO_MAX_ARGS);
  check_str(in.app, p, n);
  check_str(in.exe, p, n);
  for (uint16_t i = 0; i < in.argc; i++)
    check_str(in.argv[i], p, n);

  ht_wbuf_t w;
  ht_wbuf_init(&w, rewire, sizeof rewire);
  ht_proto_put_hello(&w, &in);
  ht_frame_t f = reframe(&w, HT_REC_HELLO);
  CHECK(ht_proto_decode_hello(f.payload, f.payload_len, &back) == 0);
  CHECK(back.version == in.version && back.ptr_size == in.ptr_size && back.clock == in.clock &&
        back.flags == in.flags && back.pid == in.pid && back.ppid == in.ppid &&
        back.start_realtime_ns == in.start_realtime_ns && back.start_mono_ns == in.start_mono_ns &&
        back.argc == in.argc);
  CHECK(str_same(back.app, in.app) && str_same(back.exe, in.exe));
  for (uint16_t i = 0; i < in.argc; i++)
    CHECK(str_same(back.argv[i], in.argv[i]));
}

static void fuzz_site(const uint8_t *p, size_t n) {
  ht_site_rec_t in, back;
  if (ht_proto_decode_site(p, n, &in) != 0)
    return;
  check_str(in.file, p, n);
  check_str(in.func, p, n);
  check_str(in.type, p, n);

  ht_wbuf_t w;
  ht_wbuf_init(&w, rewire, sizeof rewire);
  ht_proto_put_site(&w, &in);
  ht_frame_t f = reframe(&w, HT_REC_SITE);
  CHECK(ht_proto_decode_site(f.payload, f.payload_len, &back) == 0);
  CHECK(back.id == in.id && back.line == in.line);
  CHECK(str_same(back.file, in.file) && str_same(back.func, in.func) &&
        str_same(back.type, in.type));
}

static void fuzz_heap(const uint8_t *p, size_t n) {
  ht_heap_rec_t in, back;
  if (ht_proto_decode_heap(p, n, &in) != 0)
    return;
  check_str(in.name, p, n);

  ht_wbuf_t w;
  ht_wbuf_init(&w, rewire, sizeof rewire);
  ht_proto_put_heap(&w, &in);
  ht_frame_t f = reframe(&w, HT_REC_HEAP);
  CHECK(ht_proto_decode_heap(f.payload, f.payload_len, &back) == 0);
  CHECK(back.id == in.id && back.start == in.start && back.size == in.size);
  CHECK(memcmp(back.caps, in.caps, sizeof in.caps) == 0);
  CHECK(str_same(back.name, in.name));
}

static void fuzz_lost(const uint8_t *p, size_t n) {
  ht_lost_rec_t in, back;
  if (ht_proto_decode_lost(p, n, &in) != 0)
    return;
  ht_wbuf_t w;
  ht_wbuf_init(&w, rewire, sizeof rewire);
  ht_proto_put_lost(&w, &in);
  ht_frame_t f = reframe(&w, HT_REC_LOST);
  CHECK(ht_proto_decode_lost(f.payload, f.payload_len, &back) == 0);
  CHECK(back.stream == in.stream && back.first_seq == in.first_seq && back.count == in.count);
}

/* As a client of each version that sends it writes it. */
static void fuzz_previous(const uint8_t *p, size_t n) {
  for (uint16_t version = 3; version <= HT_PROTO_VERSION; version++) {
    ht_previous_rec_t in, back;
    if (ht_proto_decode_previous(p, n, version, &in) != 0)
      continue;
    CHECK(version >= 4 || in.reported == 0);
    ht_wbuf_t w;
    ht_wbuf_init(&w, rewire, sizeof rewire);
    ht_proto_put_previous(&w, &in, version);
    ht_frame_t f = reframe(&w, HT_REC_PREVIOUS);
    CHECK(ht_proto_decode_previous(f.payload, f.payload_len, version, &back) == 0);
    CHECK(back.start_ns == in.start_ns && back.events == in.events && back.reported == in.reported);
  }
}

static void fuzz_end(const uint8_t *p, size_t n) {
  ht_end_rec_t in, back;
  if (ht_proto_decode_end(p, n, &in) != 0)
    return;
  CHECK(in.reason >= HT_END_CLEAN && in.reason <= HT_END_KILLED);
  ht_wbuf_t w;
  ht_wbuf_init(&w, rewire, sizeof rewire);
  ht_proto_put_end(&w, &in);
  ht_frame_t f = reframe(&w, HT_REC_END);
  CHECK(ht_proto_decode_end(f.payload, f.payload_len, &back) == 0);
  CHECK(back.reason == in.reason && back.undelivered == in.undelivered && back.signal == in.signal);
}

/* Events are decoded, not written back: ht_proto_event_encode subtracts the
 * running totals as int64_t, which overflows for arbitrary decoded values
 * (the client never produces such totals). */
static void fuzz_events(const uint8_t *p, size_t n, ht_evstate_t states[STREAM_STATES]) {
  ht_evreader_t r;
  if (ht_proto_events_begin(&r, p, n) != 0)
    return;
  CHECK(r.hdr.count <= HT_PROTO_MAX_FRAME_EVENTS);
  ht_evstate_t *st = &states[r.hdr.stream % STREAM_STATES];
  ht_event_t ev;
  uint32_t got = 0;
  int rc;
  while ((rc = ht_proto_events_next(&r, st, &ev)) == 1) {
    CHECK(got < r.hdr.count);
    CHECK(ev.seq == r.hdr.first_seq + got && ev.stream == r.hdr.stream);
    CHECK(ev.op >= HT_OP_MALLOC && ev.op <= HT_OP_MAX);
    CHECK(ev.op == HT_OP_FAILED ? ev.failed_op >= HT_OP_MALLOC && ev.failed_op <= HT_OP_FREE
                                : ev.failed_op == 0);
    CHECK(st->ptr == ev.ptr && st->time_ns == ev.time_ns);
    got++;
  }
  CHECK(rc <= 0);
  if (rc == 0)
    CHECK(got == r.hdr.count && r.cur.off == n);
}

static void fuzz_payload(uint8_t type, const uint8_t *p, size_t n,
                         ht_evstate_t states[STREAM_STATES]) {
  switch (type) {
  case HT_REC_HELLO:
    fuzz_hello(p, n);
    break;
  case HT_REC_SITE:
    fuzz_site(p, n);
    break;
  case HT_REC_HEAP:
    fuzz_heap(p, n);
    break;
  case HT_REC_EVENTS:
    fuzz_events(p, n, states);
    break;
  case HT_REC_LOST:
    fuzz_lost(p, n);
    break;
  case HT_REC_END:
    fuzz_end(p, n);
    break;
  case HT_REC_PREVIOUS:
    fuzz_previous(p, n);
    break;
  default: /* the daemon rejects unknown types; the codec has no decoder */
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ht_evstate_t states[STREAM_STATES];
  memset(states, 0, sizeof states);
  size_t off = 0;
  ht_frame_t f;
  while (ht_proto_frame(data + off, size - off, &f) == 0) {
    CHECK(f.total >= HT_PROTO_FRAME_PREFIX + 1 && f.total <= size - off);
    CHECK(f.payload_len == f.total - HT_PROTO_FRAME_PREFIX - 1);
    uint8_t *payload = malloc(f.payload_len ? f.payload_len : 1);
    CHECK(payload != NULL);
    memcpy(payload, f.payload, f.payload_len);
    fuzz_payload(f.type, payload, f.payload_len, states);
    free(payload);
    off += f.total;
  }
  return 0;
}
