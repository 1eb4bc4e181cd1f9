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
 * total_bytes, site, heap, caps. The store may compress a chunk (codec 2,
 * zstd); codec 0 is the first schema's format (no state: it starts at 0).
 */
#ifndef HTD_CHUNK_H
#define HTD_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"

#define HTD_CODEC_V1 0   /* header, events from a zero state */
#define HTD_CODEC_RAW 1  /* header, state, events */
#define HTD_CODEC_ZSTD 2 /* zstd of a CODEC_RAW chunk */
#define HTD_CHUNK_HEAD_MAX (HT_PROTO_EVENTS_HDR + 8 * 10)
#define HTD_CHUNK_MAX_RAW (8u << 20) /* decompressed size accepted from the store */

/* Writes the header (count 0) and the state; returns bytes written
 * (at most HTD_CHUNK_HEAD_MAX). */
size_t htd_chunk_head(uint8_t *out, uint32_t stream, uint64_t first_seq, const ht_evstate_t *st);
/* Sets the count field of a chunk whose head was written by htd_chunk_head. */
void htd_chunk_set_count(uint8_t *chunk, uint32_t count);

/* Opens a stored chunk for reading: decompresses it if needed (into *owned,
 * which the caller frees) and sets up the reader and the state. Returns 0
 * or an HT_E* code for a damaged chunk. */
int htd_chunk_open(const uint8_t *blob, size_t len, int codec, uint8_t **owned, ht_evreader_t *r,
                   ht_evstate_t *st);

/* A compression context, kept by the writer so that no chunk allocates. */
typedef struct htd_compressor htd_compressor_t;
htd_compressor_t *htd_compressor_new(void);
void htd_compressor_free(htd_compressor_t *z);

/* Compresses a chunk for storage; returns the compressed size, or 0 when it
 * would not be smaller (store it raw). out must hold htd_chunk_bound(len). */
size_t htd_chunk_compress(htd_compressor_t *z, const uint8_t *in, size_t len, uint8_t *out,
                          size_t cap);
size_t htd_chunk_bound(size_t len);

#endif
