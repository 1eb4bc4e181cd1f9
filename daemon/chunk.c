/* chunk.c - the store's chunk format, see chunk.h. */
#include "chunk.h"
#include "ht_event.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Measured on stored chunks (bench/ingest): level 1 compresses 2.5 times
 * faster than level 3 for 0.5 more bytes per event; the writer thread's
 * compression is most of the daemon's CPU, so speed wins. */
#define HTD_ZSTD_LEVEL 1

size_t htd_chunk_head(uint8_t *out, uint32_t stream, uint64_t first_seq, const ht_evstate_t *st) {
  ht__store_le(out, stream, 4);
  ht__store_le(out + 4, first_seq, 8);
  ht__store_le(out + 12, 0, 4);
  size_t n = HT_PROTO_EVENTS_HDR;
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

void htd_chunk_set_count(uint8_t *chunk, uint32_t count) {
  ht__store_le(chunk + 12, count, 4);
}

static int open_raw(const uint8_t *p, size_t len, int with_state, ht_evreader_t *r,
                    ht_evstate_t *st) {
  ht_cur_t c;
  ht_cur_init(&c, p, len);
  ht_events_hdr_t hdr;
  hdr.stream = ht_get_u32(&c);
  hdr.first_seq = ht_get_u64(&c);
  hdr.count = ht_get_u32(&c);
  memset(st, 0, sizeof *st);
  if (with_state) {
    st->time_ns = ht_get_varint(&c);
    st->ptr = ht_get_varint(&c);
    st->cur_bytes = ht_unzigzag(ht_get_varint(&c));
    st->cur_blocks = ht_unzigzag(ht_get_varint(&c));
    st->total_bytes = ht_get_varint(&c);
    st->site = (uint32_t)ht_get_varint(&c);
    st->heap = (uint32_t)ht_get_varint(&c);
    st->caps = (uint32_t)ht_get_varint(&c);
  }
  if (c.err)
    return c.err;
  ht_proto_events_init(r, &hdr, p + c.off, len - c.off);
  return 0;
}

int htd_chunk_open(const uint8_t *blob, size_t len, int codec, uint8_t **owned, ht_evreader_t *r,
                   ht_evstate_t *st) {
  *owned = NULL;
  if (codec == HTD_CODEC_V1 || codec == HTD_CODEC_RAW)
    return open_raw(blob, len, codec == HTD_CODEC_RAW, r, st);
  if (codec != HTD_CODEC_ZSTD)
    return HT_ERECORD;
  unsigned long long size = ZSTD_getFrameContentSize(blob, len);
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
      size > HTD_CHUNK_MAX_RAW)
    return HT_ETRUNCATED;
  *owned = malloc(size ? (size_t)size : 1);
  if (!*owned)
    return HT_ENOMEM;
  size_t got = ZSTD_decompress(*owned, (size_t)size, blob, len);
  if (ZSTD_isError(got) || got != size)
    return HT_ETRUNCATED;
  return open_raw(*owned, got, 1, r, st);
}

size_t htd_chunk_bound(size_t len) {
  return ZSTD_compressBound(len);
}

htd_compressor_t *htd_compressor_new(void) { return (htd_compressor_t *)ZSTD_createCCtx(); }

void htd_compressor_free(htd_compressor_t *z) { ZSTD_freeCCtx((ZSTD_CCtx *)z); }

size_t htd_chunk_compress(htd_compressor_t *z, const uint8_t *in, size_t len, uint8_t *out,
                          size_t cap) {
  size_t n = ZSTD_compressCCtx((ZSTD_CCtx *)z, out, cap, in, len, HTD_ZSTD_LEVEL);
  return ZSTD_isError(n) || n >= len ? 0 : n;
}
