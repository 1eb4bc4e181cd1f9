/* chunk.c - the store's chunk format, see chunk.h. */
#include "chunk.h"
#include "ht_event.h"
#include "pack.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

size_t htd_chunk_head(uint8_t *out, uint32_t stream, uint64_t first_seq, const ht_evstate_t *st) {
  ht__store_le(out, stream, 4);
  ht__store_le(out + 4, first_seq, 8);
  ht__store_le(out + 12, 0, 4);
  return HT_PROTO_EVENTS_HDR + htd_chunk_put_state(out + HT_PROTO_EVENTS_HDR, st);
}

size_t htd_chunk_put_state(uint8_t *out, const ht_evstate_t *st) {
  size_t n = 0;
  n += ht__varint_put(out + n, st->time_ns);
  n += ht__varint_put(out + n, st->ptr);
  n += ht__varint_put(out + n, ht_zigzag(st->cur_bytes));
  n += ht__varint_put(out + n, ht_zigzag(st->cur_blocks));
  n += ht__varint_put(out + n, st->total_bytes);
  n += ht__varint_put(out + n, st->site);
  n += ht__varint_put(out + n, st->heap);
  n += ht__varint_put(out + n, st->caps);
  return n;
}

void htd_chunk_get_state(ht_cur_t *c, ht_evstate_t *st) {
  st->time_ns = ht_get_varint(c);
  st->ptr = ht_get_varint(c);
  st->cur_bytes = ht_unzigzag(ht_get_varint(c));
  st->cur_blocks = ht_unzigzag(ht_get_varint(c));
  st->total_bytes = ht_get_varint(c);
  st->site = (uint32_t)ht_get_varint(c);
  st->heap = (uint32_t)ht_get_varint(c);
  st->caps = (uint32_t)ht_get_varint(c);
}

void htd_chunk_set_count(uint8_t *chunk, uint32_t count) {
  ht__store_le(chunk + 12, count, 4);
}

static int open_raw(htd_chunk_reader_t *r, const uint8_t *p, size_t len, int with_state) {
  ht_cur_t c;
  ht_cur_init(&c, p, len);
  ht_events_hdr_t hdr;
  hdr.stream = ht_get_u32(&c);
  hdr.first_seq = ht_get_u64(&c);
  hdr.count = ht_get_u32(&c);
  memset(&r->st, 0, sizeof r->st);
  if (with_state)
    htd_chunk_get_state(&c, &r->st);
  if (c.err)
    return c.err;
  ht_proto_events_init(&r->rd, &hdr, p + c.off, len - c.off);
  return 0;
}

static int open_zstd(htd_chunk_reader_t *r, const uint8_t *blob, size_t len) {
  unsigned long long size = ZSTD_getFrameContentSize(blob, len);
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
      size > HTD_CHUNK_MAX_RAW)
    return HT_ETRUNCATED;
  r->owned = malloc(size ? (size_t)size : 1);
  if (!r->owned)
    return HT_ENOMEM;
  size_t got = ZSTD_decompress(r->owned, (size_t)size, blob, len);
  if (ZSTD_isError(got) || got != size)
    return HT_ETRUNCATED;
  return open_raw(r, r->owned, got, 1);
}

int htd_chunk_open(htd_chunk_reader_t *r, const uint8_t *blob, size_t len, int codec) {
  memset(r, 0, sizeof *r);
  int rc;
  switch (codec) {
  case HTD_CODEC_V1:
  case HTD_CODEC_RAW:
    rc = open_raw(r, blob, len, codec == HTD_CODEC_RAW);
    break;
  case HTD_CODEC_ZSTD:
    rc = open_zstd(r, blob, len);
    break;
  case HTD_CODEC_PACKED:
    rc = htd_unpack_open(&r->packed, blob, len);
    break;
  default:
    rc = HT_ERECORD;
  }
  if (rc != 0)
    htd_chunk_close(r);
  return rc;
}

int htd_chunk_next(htd_chunk_reader_t *r, ht_event_t *ev) {
  if (r->packed)
    return htd_unpack_next(r->packed, ev);
  return ht_proto_events_next(&r->rd, &r->st, ev);
}

void htd_chunk_close(htd_chunk_reader_t *r) {
  free(r->owned);
  htd_unpack_close(r->packed);
  r->owned = NULL;
  r->packed = NULL;
}
