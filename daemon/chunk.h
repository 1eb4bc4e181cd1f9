/* chunk.h - how the store keeps events: chunks that decode on their own.
 *
 * A chunk holds consecutive events of one stream exactly as the client
 * encoded them (PROTOCOL.md, "Event encoding"), preceded by the stream's
 * delta state at the first of them, so that no other chunk is needed to
 * read it and the daemon never re-encodes what it receives:
 *
 *   stream u32 | first_seq u64 | count u32 | state: 8 varints | events
 *
 * The state is time, ptr, cur_bytes (zigzag), cur_blocks (zigzag),
 * total_bytes, site, heap, caps. The store writes chunks packed (codec 3,
 * pack.h); it reads the earlier forms too: codec 2 (zstd of the above),
 * codec 1 (the above) and codec 0, the first schema's (no state: it starts
 * at 0).
 */
#ifndef HTD_CHUNK_H
#define HTD_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"

#define HTD_CODEC_V1 0     /* header, events from a zero state */
#define HTD_CODEC_RAW 1    /* header, state, events */
#define HTD_CODEC_ZSTD 2   /* zstd of a CODEC_RAW chunk (schema 2's stored form) */
#define HTD_CODEC_PACKED 3 /* the events packed (pack.h): what the store writes */
#define HTD_CHUNK_HEAD_MAX (HT_PROTO_EVENTS_HDR + 8 * 10)
#define HTD_CHUNK_MAX_RAW (8u << 20) /* decompressed size accepted from the store */

/* Codec 1, as older daemons stored chunks: the store writes codec 3 now,
 * and these stay so that tests can make the chunks older daemons left.
 * Writes the header (count 0) and the state; returns bytes written (at
 * most HTD_CHUNK_HEAD_MAX). */
size_t htd_chunk_head(uint8_t *out, uint32_t stream, uint64_t first_seq, const ht_evstate_t *st);
/* Sets the count field of a chunk whose head was written by htd_chunk_head. */
void htd_chunk_set_count(uint8_t *chunk, uint32_t count);
/* The state part of a head alone: at most 80 bytes. */
size_t htd_chunk_put_state(uint8_t *out, const ht_evstate_t *st);
void htd_chunk_get_state(ht_cur_t *c, ht_evstate_t *st);

/* A stored chunk open for reading, in any codec. */
typedef struct {
  ht_evreader_t rd; /* codecs 0-2 */
  ht_evstate_t st;
  uint8_t *owned;              /* a decompressed chunk */
  struct htd_unpacker *packed; /* codec 3 */
} htd_chunk_reader_t;

/* Opens a stored chunk: blob must outlive the reader for codecs 0 and 1.
 * Returns 0 or an HT_E* code for a damaged chunk (the reader then holds
 * nothing). */
int htd_chunk_open(htd_chunk_reader_t *r, const uint8_t *blob, size_t len, int codec);
/* The next event: 1, 0 at the end, or an HT_E* code. */
int htd_chunk_next(htd_chunk_reader_t *r, ht_event_t *ev);
void htd_chunk_close(htd_chunk_reader_t *r);

#endif
