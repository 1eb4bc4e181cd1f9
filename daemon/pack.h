/* pack.h - packed event chunks: how the store keeps events small (codec 3).
 *
 * The client's encoding (PROTOCOL.md) is made for a cheap encoder: each
 * event is a delta to the one before. Stored, an event is instead predicted
 * from what its chunk already holds, and only what the prediction misses is
 * written, into columns of like values that zstd compresses one by one:
 *
 *  - a free (and the block a realloc passes in) names its block by its place
 *    among the blocks allocated earlier in the chunk and still live, counted
 *    from the newest: most blocks die young, so the place is small, and it
 *    gives the block's usable size too;
 *  - an allocation's address is often a block freed shortly before with the
 *    same usable size (allocators keep per-size LIFO lists), named by its
 *    place in that list;
 *  - an allocation's size and usable size are often those of the call
 *    site's previous allocation;
 *  - site, heap and caps are often the previous event's, the running totals
 *    often what the operation implies (as on the wire).
 *
 * Encoder and decoder make the same predictions from the same earlier
 * events of the chunk alone, so a chunk still decodes on its own.
 *
 * Layout:
 *   'P' | version 1 | varint stream, first_seq, count | state (chunk.h)
 *   | HTD_PACK_COLUMNS x (varint raw_len, varint stored_len) | columns
 * A column whose stored_len equals its raw_len is kept as is, any other is
 * one zstd frame. Every event has one byte in the op column, so count is
 * that column's length.
 */
#ifndef HTD_PACK_H
#define HTD_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"

#define HTD_PACK_COLUMNS 9

/* The packing happens as the daemon decodes what a client sends (ingest.c),
 * so that no event is decoded twice; the compression on the store's writer
 * thread (htd_squeeze). */

/* A chunk being packed: events of one stream from first_seq on, st the
 * stream's state before the first. */
typedef struct htd_packer htd_packer_t;
htd_packer_t *htd_packer_new(uint32_t stream, uint64_t first_seq, const ht_evstate_t *st);
void htd_packer_free(htd_packer_t *p);
/* Adds the next event of the stream. Returns 0 or HT_ENOMEM: the chunk
 * then takes no more events, and must be cut back to a mark before it is
 * finished. */
int htd_pack_event(htd_packer_t *p, const ht_event_t *ev);
uint64_t htd_packer_count(const htd_packer_t *p);
/* Memory the chunk holds: its model and its columns so far. */
size_t htd_packer_bytes(const htd_packer_t *p);

/* Takes back the events added since a mark (a frame found bad halfway):
 * the chunk keeps those before it and takes no more events. */
typedef struct {
  size_t len[HTD_PACK_COLUMNS];
  uint64_t count;
} htd_pack_mark_t;
htd_pack_mark_t htd_packer_mark(const htd_packer_t *p);
void htd_packer_cut(htd_packer_t *p, const htd_pack_mark_t *k);
/* The chunk (codec 3, columns stored as they are) in a new buffer. */
uint8_t *htd_packer_finish(htd_packer_t *p, size_t *len);

/* Compresses the columns of a chunk from htd_packer_finish in place.
 * Returns its new length, or 0 to keep it as it is. Keeps a zstd context
 * and scratch memory between chunks. */
typedef struct htd_squeezer htd_squeezer_t;
htd_squeezer_t *htd_squeezer_new(void);
void htd_squeezer_free(htd_squeezer_t *q);
size_t htd_squeeze(htd_squeezer_t *q, uint8_t *blob, size_t len);

/* Reads a codec-3 chunk back, one event at a time. */
typedef struct htd_unpacker htd_unpacker_t;
/* Opens blob (not kept: its columns are copied out). Returns 0 or an HT_E*
 * code for a damaged chunk, with *u NULL. */
int htd_unpack_open(htd_unpacker_t **u, const uint8_t *blob, size_t len);
/* The next event: 1, 0 at the end, or an HT_E* code for a damaged chunk. */
int htd_unpack_next(htd_unpacker_t *u, ht_event_t *ev);
void htd_unpack_close(htd_unpacker_t *u);

#endif
