/* test_pack.c - the store's chunk formats (daemon/chunk.h, daemon/pack.h).
 *
 * Events of every kind go through the packer and come back out of the
 * reader field for field; what the predictions are for is checked by size
 * (a LIFO workload must pack far below its wire size); a frame taken back
 * leaves the events before it; every damaged chunk is refused, never read
 * past; and the older codecs the store still reads give the same events.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "chunk.h"
#include "ht_event.h"
#include "pack.h"

#define MAX_EVENTS 20000

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static uint64_t below(uint64_t n) {
  return rnd() % n;
}

/* A stream of events with every op and field the wire allows, built the
 * way a client's stream is: running totals implied unless told otherwise,
 * blocks freed that were allocated here (mostly young), elsewhere, or
 * never. */
typedef struct {
  ht_event_t ev[MAX_EVENTS];
  size_t n;
  ht_evstate_t st0, st;
  uint64_t live[256], live_usable[256];
  size_t nlive;
  uint64_t top;
} stream_t;

static void stream_init(stream_t *s, uint64_t first_time, uint64_t first_ptr) {
  memset(s, 0, sizeof *s);
  s->st0.time_ns = first_time;
  s->st0.ptr = first_ptr;
  s->st0.site = 3;
  s->st0.caps = 0x1806;
  s->st = s->st0;
  s->top = 0x7f0000001000ull;
}

static ht_event_t *next_event(stream_t *s, uint32_t op) {
  cr_assert(lt(sz, s->n, MAX_EVENTS));
  ht_event_t *e = &s->ev[s->n];
  memset(e, 0, sizeof *e);
  e->seq = 100 + s->n;
  e->stream = 7;
  e->op = op;
  e->time_ns = s->st.time_ns + 20 + below(300);
  e->site = s->st.site;
  e->heap = s->st.heap;
  e->caps = s->st.caps;
  return e;
}

static void finish_event(stream_t *s, ht_event_t *e, int implied) {
  ht__implied_totals(&s->st, e, &e->cur_bytes, &e->cur_blocks, &e->total_bytes);
  if (!implied) {
    e->cur_bytes += (int64_t)below(1000) - 500;
    e->cur_blocks -= 3;
    e->total_bytes += below(77);
  }
  ht__evstate_advance(&s->st, e);
  s->n++;
}

static uint64_t fresh_block(stream_t *s, uint64_t usable) {
  uint64_t p = s->top + 16;
  s->top = p + usable;
  return p;
}

static void add_random_event(stream_t *s) {
  uint64_t r = below(100);
  if (r < 45 && s->nlive < 256) {
    uint32_t op = r < 5 ? HT_OP_CALLOC : r < 8 ? HT_OP_ALIGNED : HT_OP_MALLOC;
    ht_event_t *e = next_event(s, op);
    e->site = (uint32_t)(1 + below(6));
    e->size = 1 + below(r < 30 ? 64 : 70000);
    e->usable = (e->size + 15) & ~15ull;
    e->align = op == HT_OP_ALIGNED ? 64 : 0;
    e->ptr = fresh_block(s, e->usable);
    if (below(8) == 0) { /* another heap */
      e->heap = (uint32_t)below(4);
      e->caps = (uint32_t)rnd();
    }
    s->live[s->nlive] = e->ptr;
    s->live_usable[s->nlive++] = e->usable;
    finish_event(s, e, below(20) != 0);
  } else if (r < 85 && s->nlive > 0) {
    size_t i = s->nlive - 1 - (below(3) == 0 ? below(s->nlive) : 0);
    ht_event_t *e = next_event(s, HT_OP_FREE);
    e->site = (uint32_t)(20 + below(3));
    e->ptr = s->live[i];
    e->size = e->usable = s->live_usable[i];
    s->live[i] = s->live[--s->nlive];
    s->live_usable[i] = s->live_usable[s->nlive];
    finish_event(s, e, 1);
  } else if (r < 90) { /* a block this stream never allocated */
    ht_event_t *e = next_event(s, HT_OP_FREE);
    e->ptr = rnd();
    e->size = e->usable = below(5000);
    finish_event(s, e, below(2));
  } else if (r < 96 && s->nlive > 0) {
    size_t i = below(s->nlive);
    ht_event_t *e = next_event(s, HT_OP_REALLOC);
    e->old_ptr = s->live[i];
    e->old_usable = s->live_usable[i];
    e->size = 1 + below(9000);
    e->usable = e->size + below(16);
    e->ptr = below(2) ? e->old_ptr : fresh_block(s, e->usable);
    s->live[i] = e->ptr;
    s->live_usable[i] = e->usable;
    finish_event(s, e, 1);
  } else {
    ht_event_t *e = next_event(s, HT_OP_FAILED);
    e->failed_op = (uint32_t)(HT_OP_MALLOC + below(5));
    e->size = rnd();
    e->usable = below(3) ? e->size : rnd();
    e->old_ptr = e->failed_op == HT_OP_REALLOC ? rnd() : 0;
    e->old_usable = e->failed_op == HT_OP_REALLOC ? below(100) : 0;
    e->align = e->failed_op == HT_OP_ALIGNED ? 4096 : 0;
    if (below(4) == 0)
      e->time_ns = s->st.time_ns - below(1000); /* clocks may step back */
    finish_event(s, e, 1);
  }
}

static uint8_t *pack_all(const stream_t *s, size_t n, int squeeze, size_t *len) {
  htd_packer_t *p = htd_packer_new(7, 100, &s->st0);
  cr_assert(ne(ptr, p, NULL));
  for (size_t i = 0; i < n; i++)
    cr_assert(eq(int, htd_pack_event(p, &s->ev[i]), 0));
  cr_assert(eq(u64, htd_packer_count(p), n));
  uint8_t *blob = htd_packer_finish(p, len);
  htd_packer_free(p);
  cr_assert(ne(ptr, blob, NULL));
  if (squeeze) {
    htd_squeezer_t *q = htd_squeezer_new();
    size_t z = htd_squeeze(q, blob, *len);
    htd_squeezer_free(q);
    if (z)
      *len = z;
  }
  return blob;
}

/* Reads the chunk back and compares every event with the first n of s. */
static void expect_events(const uint8_t *blob, size_t len, int codec, const stream_t *s, size_t n) {
  htd_chunk_reader_t r;
  cr_assert(eq(int, htd_chunk_open(&r, blob, len, codec), 0));
  ht_event_t ev;
  size_t i = 0;
  int rc;
  while ((rc = htd_chunk_next(&r, &ev)) == 1) {
    cr_assert(lt(sz, i, n), "more events than were packed");
    cr_assert(eq(u64, ev.time_ns, s->ev[i].time_ns), "event %zu: time", i);
    cr_assert(eq(u64, ev.ptr, s->ev[i].ptr), "event %zu: ptr", i);
    cr_assert(eq(u32, ev.site, s->ev[i].site), "event %zu: site", i);
    cr_assert(eq(int, memcmp(&ev, &s->ev[i], sizeof ev), 0), "event %zu (op %u) differs", i, ev.op);
    i++;
  }
  cr_assert(eq(int, rc, 0), "reading ended with %s", ht_strerror(rc));
  cr_assert(eq(sz, i, n));
  htd_chunk_close(&r);
}

static stream_t S;

static void random_stream(uint64_t first_time, uint64_t first_ptr, size_t n) {
  stream_init(&S, first_time, first_ptr);
  while (S.n < n)
    add_random_event(&S);
}

Test(pack, every_kind_of_event_comes_back_exactly) {
  for (int round = 0; round < 20; round++) {
    random_stream(rnd() >> 8, round ? rnd() : 0, 1 + below(MAX_EVENTS - 1));
    size_t len;
    uint8_t *blob = pack_all(&S, S.n, round % 2, &len);
    expect_events(blob, len, HTD_CODEC_PACKED, &S, S.n);
    free(blob);
  }
}

Test(pack, extreme_values_come_back_exactly) {
  stream_init(&S, UINT64_MAX - 5, UINT64_MAX);
  uint64_t values[] = {0, 1, 127, 128, UINT32_MAX, (uint64_t)INT64_MAX, UINT64_MAX};
  for (size_t i = 0; i < 7; i++) {
    ht_event_t *e = next_event(&S, HT_OP_MALLOC);
    e->time_ns = values[6 - i];
    e->site = (uint32_t)values[i];
    e->heap = (uint32_t)values[6 - i];
    e->caps = UINT32_MAX;
    e->size = values[i];
    e->usable = values[6 - i];
    e->ptr = values[i];
    finish_event(&S, e, (int)(i % 2));
    e = next_event(&S, HT_OP_FREE);
    e->ptr = values[i];
    e->size = e->usable = values[6 - i];
    finish_event(&S, e, 1);
  }
  size_t len;
  uint8_t *blob = pack_all(&S, S.n, 1, &len);
  expect_events(blob, len, HTD_CODEC_PACKED, &S, S.n);
  free(blob);
}

/* Short-lived blocks from a few sites, freed newest first, addresses
 * reused per size: what the predictions are made for. */
Test(pack, a_lifo_workload_packs_to_a_fraction_of_its_wire_size) {
  stream_init(&S, 1000, 0);
  uint64_t reuse[4] = {0};
  while (S.n + 2 <= MAX_EVENTS) {
    uint32_t k = (uint32_t)below(4);
    ht_event_t *e = next_event(&S, HT_OP_MALLOC);
    e->site = 10 + k;
    e->size = 24 + 40 * k;
    e->usable = e->size + 8;
    e->ptr = reuse[k] ? reuse[k] : fresh_block(&S, e->usable);
    reuse[k] = e->ptr;
    finish_event(&S, e, 1);
    e = next_event(&S, HT_OP_FREE);
    e->site = 50 + k;
    e->ptr = reuse[k];
    e->size = e->usable = 24 + 40 * k + 8;
    finish_event(&S, e, 1);
  }
  size_t wire = 0;
  ht_evstate_t st = S.st0;
  uint8_t buf[HT_PROTO_MAX_EVENT_BYTES];
  for (size_t i = 0; i < S.n; i++)
    wire += ht_event_encode(buf, &st, &S.ev[i]);
  size_t len;
  uint8_t *blob = pack_all(&S, S.n, 1, &len);
  expect_events(blob, len, HTD_CODEC_PACKED, &S, S.n);
  double per_event = (double)len / (double)S.n, wire_per_event = (double)wire / (double)S.n;
  cr_assert(lt(dbl, per_event, 1.5), "%.2f bytes/event packed (%.2f on the wire)", per_event,
            wire_per_event);
  cr_assert(lt(dbl, per_event * 3, wire_per_event));
  free(blob);
}

Test(pack, a_frame_taken_back_leaves_the_events_before_it) {
  random_stream(5000, 0x1000, 3000);
  htd_packer_t *p = htd_packer_new(7, 100, &S.st0);
  for (size_t i = 0; i < 1000; i++)
    cr_assert(eq(int, htd_pack_event(p, &S.ev[i]), 0));
  htd_pack_mark_t mark = htd_packer_mark(p);
  for (size_t i = 1000; i < 3000; i++)
    cr_assert(eq(int, htd_pack_event(p, &S.ev[i]), 0));
  htd_packer_cut(p, &mark);
  cr_assert(eq(u64, htd_packer_count(p), 1000));
  cr_assert(ne(int, htd_pack_event(p, &S.ev[1000]), 0), "a cut chunk takes no more events");
  size_t len;
  uint8_t *blob = htd_packer_finish(p, &len);
  htd_packer_free(p);
  expect_events(blob, len, HTD_CODEC_PACKED, &S, 1000);
  free(blob);
}

/* Reads a damaged chunk to its end or its first error. */
static int read_damaged(const uint8_t *blob, size_t len) {
  uint8_t *copy = malloc(len ? len : 1); /* exactly len: ASan sees any overread */
  memcpy(copy, blob, len);
  htd_chunk_reader_t r;
  int rc = htd_chunk_open(&r, copy, len, HTD_CODEC_PACKED);
  if (rc == 0) {
    ht_event_t ev;
    size_t n = 0;
    while ((rc = htd_chunk_next(&r, &ev)) == 1)
      cr_assert(lt(sz, n++, (size_t)MAX_EVENTS + 1));
    htd_chunk_close(&r);
  }
  free(copy);
  return rc;
}

Test(pack, every_truncation_is_refused) {
  random_stream(1, 2, 400);
  for (int squeeze = 0; squeeze < 2; squeeze++) {
    size_t len;
    uint8_t *blob = pack_all(&S, S.n, squeeze, &len);
    for (size_t cut = 0; cut < len; cut++)
      cr_assert(lt(int, read_damaged(blob, cut), 0), "%zu of %zu bytes accepted", cut, len);
    free(blob);
  }
}

Test(pack, flipped_bits_never_read_out_of_bounds) {
  random_stream(1, 2, 400);
  for (int squeeze = 0; squeeze < 2; squeeze++) {
    size_t len;
    uint8_t *blob = pack_all(&S, S.n, squeeze, &len);
    for (int i = 0; i < 3000; i++) {
      size_t at = below(len);
      uint8_t bit = (uint8_t)(1u << below(8));
      blob[at] ^= bit;
      (void)read_damaged(blob, len); /* an error or wrong events, never a crash */
      blob[at] ^= bit;
    }
    free(blob);
  }
}

Test(pack, unknown_codecs_and_versions_are_refused) {
  random_stream(1, 2, 10);
  size_t len;
  uint8_t *blob = pack_all(&S, S.n, 0, &len);
  htd_chunk_reader_t r;
  cr_assert(eq(int, htd_chunk_open(&r, blob, len, 9), HT_ERECORD));
  blob[1]++; /* the version */
  cr_assert(eq(int, htd_chunk_open(&r, blob, len, HTD_CODEC_PACKED), HT_EVERSION));
  free(blob);
}

/* Chunks that older daemons stored: the client's own bytes (codec 1) and
 * zstd of them (codec 2) read back as the same events. */
Test(pack, older_codecs_read_the_same_events) {
  random_stream(42, 0x5000, 5000);
  static uint8_t raw[MAX_EVENTS * HT_PROTO_MAX_EVENT_BYTES + HTD_CHUNK_HEAD_MAX];
  size_t n = htd_chunk_head(raw, 7, 100, &S.st0);
  ht_evstate_t st = S.st0;
  for (size_t i = 0; i < S.n; i++)
    n += ht_event_encode(raw + n, &st, &S.ev[i]);
  htd_chunk_set_count(raw, (uint32_t)S.n);
  expect_events(raw, n, HTD_CODEC_RAW, &S, S.n);
  size_t cap = ZSTD_compressBound(n);
  uint8_t *z = malloc(cap);
  size_t zn = ZSTD_compress(z, cap, raw, n, 1);
  cr_assert(eq(int, ZSTD_isError(zn), 0));
  expect_events(z, zn, HTD_CODEC_ZSTD, &S, S.n);
  free(z);
}
