/*
 * fuzz_pack.c - libFuzzer target for the store's packed chunks
 * (daemon/pack.c).
 *
 * The input is used twice:
 *  - as a stored chunk: the reader opens it and reads it to its end or its
 *    first error, from a heap copy of exactly its size, so ASan sees any
 *    read past it (a database file can be damaged);
 *  - as a recipe for events: each 16-byte step makes one event whose op,
 *    fields and choice of earlier blocks come from the bytes; the events are
 *    packed, compressed and read back, and must come back exactly.
 *
 * Build and run: scripts/fuzz [SECONDS]. Seeds (tests/fuzz/corpus/pack):
 * recipes of 1 to 1000 events of random bytes.
 */
// fuzz-sources: daemon/chunk.c daemon/pack.c
// fuzz-libs: -lzstd
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "ht_event.h"
#include "pack.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      abort();                                                                                     \
  } while (0)

#define MAX_STEPS 4096

static void read_as_chunk(const uint8_t *data, size_t size) {
  uint8_t *copy = malloc(size ? size : 1);
  CHECK(copy != NULL);
  memcpy(copy, data, size);
  htd_chunk_reader_t r;
  if (htd_chunk_open(&r, copy, size, HTD_CODEC_PACKED) == 0) {
    ht_event_t ev;
    while (htd_chunk_next(&r, &ev) == 1)
      ;
    htd_chunk_close(&r);
  }
  free(copy);
}

static uint64_t take(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  memcpy(&v, p, n);
  return v;
}

/* One event from 16 bytes, against the events before it. */
static void make_event(const uint8_t *b, ht_evstate_t *st, const ht_event_t *prev, size_t nprev,
                       ht_event_t *e) {
  memset(e, 0, sizeof *e);
  e->op = 1 + b[0] % HT_OP_MAX;
  e->time_ns = st->time_ns + (uint64_t)(int8_t)b[1] * (b[0] & 0x80 ? 1000003u : 1u);
  e->site = b[2] & 0x80 ? st->site : b[2] & 0x0f;
  e->heap = b[3] & 0x80 ? st->heap : b[3] & 3;
  e->caps = b[3] & 0x40 ? st->caps : (uint32_t)take(b + 4, 4);
  /* An earlier event's block, or new values. */
  const ht_event_t *old = nprev && (b[8] & 1) ? &prev[b[9] % nprev] : NULL;
  uint64_t ptr = old ? old->ptr : take(b + 10, 6) << (b[8] & 0x0e ? 4 : 0);
  uint64_t size = old && (b[8] & 0x10) ? old->usable : take(b + 4, 2);
  switch (e->op) {
  case HT_OP_FREE:
    e->ptr = ptr;
    e->size = e->usable = size;
    break;
  case HT_OP_REALLOC:
    e->old_ptr = ptr;
    e->old_usable = size;
    e->ptr = b[8] & 0x20 ? ptr : ptr + take(b + 6, 2);
    e->size = take(b + 12, 2);
    e->usable = e->size + (b[8] >> 6);
    break;
  case HT_OP_FAILED:
    e->failed_op = 1 + b[9] % (HT_OP_FREE);
    e->ptr = b[8] & 0x20 ? 0 : ptr;
    e->old_ptr = e->failed_op == HT_OP_REALLOC ? ptr : 0;
    e->size = take(b + 12, 4);
    e->usable = e->size;
    break;
  default:
    e->ptr = ptr;
    e->size = size;
    e->usable = size + (b[8] >> 6);
    e->align = e->op == HT_OP_ALIGNED ? 64 : 0;
  }
  ht__implied_totals(st, e, &e->cur_bytes, &e->cur_blocks, &e->total_bytes);
  if (b[2] & 0x40)
    e->total_bytes += b[15];
  ht__evstate_advance(st, e);
}

static void roundtrip(const uint8_t *data, size_t size) {
  static ht_event_t ev[MAX_STEPS];
  size_t n = 0;
  ht_evstate_t st0 = {.time_ns = 1000, .ptr = 0x10000}, st = st0;
  for (size_t at = 0; at + 16 <= size && n < MAX_STEPS; at += 16, n++) {
    make_event(data + at, &st, ev, n, &ev[n]);
    ev[n].seq = 5 + n;
    ev[n].stream = 3;
  }
  if (n == 0)
    return;
  htd_packer_t *p = htd_packer_new(3, 5, &st0);
  CHECK(p != NULL);
  for (size_t i = 0; i < n; i++)
    CHECK(htd_pack_event(p, &ev[i]) == 0);
  size_t len;
  uint8_t *blob = htd_packer_finish(p, &len);
  htd_packer_free(p);
  CHECK(blob != NULL);
  htd_squeezer_t *q = htd_squeezer_new();
  size_t z = htd_squeeze(q, blob, len);
  htd_squeezer_free(q);
  len = z ? z : len;
  htd_chunk_reader_t r;
  CHECK(htd_chunk_open(&r, blob, len, HTD_CODEC_PACKED) == 0);
  ht_event_t got;
  for (size_t i = 0; i < n; i++) {
    CHECK(htd_chunk_next(&r, &got) == 1);
    CHECK(memcmp(&got, &ev[i], sizeof got) == 0);
  }
  CHECK(htd_chunk_next(&r, &got) == 0);
  htd_chunk_close(&r);
  free(blob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  read_as_chunk(data, size);
  roundtrip(data, size);
  return 0;
}
