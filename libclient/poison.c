/* poison.c - light poisoning of caps-heap blocks: header, canaries, reports.
 *
 * Every block carries a 32-byte header ending in a head canary right before
 * the user's bytes, and a tail canary right after the bytes requested (not
 * after the usable bytes: the smallest overrun must hit it). The header's
 * fields are sealed with a hash, so that a report never trusts a size or a
 * site index that a stray write has changed: with the seal intact, the size
 * locates the tail canary and the site names the allocation; with it
 * broken, the report says that the header itself is damaged.
 *
 * Sites are accounting-site indices (account.c), bounds-checked before they
 * are looked up, so printing a report from a damaged block cannot follow a
 * wild pointer.
 */
#define _GNU_SOURCE
#include <string.h>

#include "caps.h"

#define LEAD_LOG2_MAX 40 /* alignments up to 1 TiB; anything above is damage */

/* The seal of a header: every field but the seal and the canary, mixed
 * by odd multipliers. Not cryptographic: it only has to make a stray write
 * into the header (or a free-list link over it) show. */
static uint32_t seal(const ht_blk_t *b) {
  uint64_t h = (uint64_t)b->tag * 0x9e3779b97f4a7c15ull;
  h ^= b->size * 0xc2b2ae3d27d4eb4full;
  h ^= ((uint64_t)b->site << 32 | b->caps) * 0x165667b19e3779f9ull;
  h ^= ((uint64_t)b->type << 16 | b->reserved) * 0xff51afd7ed558ccdull;
  return (uint32_t)(h ^ (h >> 29) ^ (h >> 47));
}

static void put_tail(void *ptr, size_t size) {
  uint32_t tail = HT_CANARY_TAIL;
  memcpy((char *)ptr + size, &tail, sizeof tail);
}

void ht__blk_init(void *ptr, size_t size, uint32_t site, uint32_t caps, uint16_t type,
                  unsigned lead_log2) {
  ht_blk_t *b = ht__blk(ptr);
  b->tag = HT_BLK_TAG | lead_log2;
  b->size = size;
  b->site = site;
  b->caps = caps;
  b->type = type;
  b->reserved = 0;
  b->check = seal(b);
  b->canary = HT_CANARY_HEAD;
  put_tail(ptr, size);
  /* A walk meets the TLSF payload first: leave the tag there too. */
  if (lead_log2 > HT_BLK_LEAD_LOG2)
    memcpy((char *)ptr - ((size_t)1 << lead_log2), &b->tag, sizeof b->tag);
}

void ht__blk_resize(void *ptr, size_t size, uint32_t site, uint32_t caps) {
  ht_blk_t *b = ht__blk(ptr);
  b->size = size;
  b->site = site;
  b->caps = caps;
  b->check = seal(b);
  put_tail(ptr, size);
}

void ht__blk_retire(void *ptr) {
  ht_blk_t *b = ht__blk(ptr);
  b->canary = HT_CANARY_FREED;
  b->tag = 0; /* a second free finds no header */
}

size_t ht__blk_usable(void *ptr) {
  size_t lead = ht__blk_lead(ht__blk(ptr));
  return ht__tlsf_usable_size((char *)ptr - lead) - lead - HT_BLK_TAIL;
}

/* 1 if the header's tag and seal hold. */
static int header_ok(const ht_blk_t *b) {
  unsigned lg = b->tag & 0xffu;
  return (b->tag & ~0xffu) == HT_BLK_TAG && lg >= HT_BLK_LEAD_LOG2 && lg <= LEAD_LOG2_MAX &&
         b->reserved == 0 && b->check == seal(b);
}

int ht__blk_verify(void *ptr) {
  ht_blk_t *b = ht__blk(ptr);
  int bad = b->canary == HT_CANARY_HEAD ? HT_BLK_OK : HT_BLK_BAD_HEAD;
  if (!header_ok(b))
    return bad | HT_BLK_BAD_HEADER;
  /* The seal vouches for size; still, never read past the block. */
  if (b->size > ht__blk_usable(ptr))
    return bad | HT_BLK_BAD_HEADER;
  uint32_t tail;
  memcpy(&tail, (char *)ptr + b->size, sizeof tail);
  if (tail != HT_CANARY_TAIL)
    bad |= HT_BLK_BAD_TAIL;
  return bad;
}

void *ht__blk_from_payload(void *payload, size_t tlsf_usable) {
  uint32_t tag;
  memcpy(&tag, payload, sizeof tag);
  unsigned lg = tag & 0xffu;
  if ((tag & ~0xffu) != HT_BLK_TAG || lg < HT_BLK_LEAD_LOG2 || lg > LEAD_LOG2_MAX)
    return NULL;
  size_t lead = (size_t)1 << lg;
  if (lead + HT_BLK_TAIL > tlsf_usable)
    return NULL;
  return (char *)payload + lead;
}

/* Names the damaged part and what probably caused it. */
static void describe(int bad, const char **what, const char **cause) {
  if ((bad & HT_BLK_BAD_HEAD) && (bad & HT_BLK_BAD_TAIL)) {
    *what = "head and tail canaries";
    *cause = "writes ran before the start and past the end of the block";
  } else if (bad & HT_BLK_BAD_TAIL) {
    *what = "tail canary";
    *cause = "a write ran past the end of the block";
  } else {
    *what = "head canary";
    *cause = "a write ran before the start of the block";
  }
}

void ht__blk_report(const ht_heap_t *h, void *ptr, int bad, const char *who) {
  ht_blk_t *b = ht__blk(ptr);
  if (bad & HT_BLK_BAD_HEADER) {
    ht__warn("heaptrace: heap corruption found by %s: the header of block %p in heap %u '%s' is "
             "damaged (size and allocation site unknown): a write ran before the start of the "
             "block, the block was freed twice, or the pointer is not from this heap",
             who, ptr, h->id, h->name);
    return;
  }
  ht_site_info_t si = {"?", "?", NULL, 0, 0};
  ht__acct_site_info(b->site, &si);
  uint32_t tail;
  memcpy(&tail, (char *)ptr + b->size, sizeof tail);
  const char *what, *cause;
  describe(bad, &what, &cause);
  ht__warn("heaptrace: heap corruption found by %s: %s of block %p (%llu bytes, allocated at "
           "%s:%d in %s()%s%s) in heap %u '%s' overwritten (head 0x%08x, tail 0x%08x; expected "
           "0x%08x, 0x%08x): %s",
           who, what, ptr, (unsigned long long)b->size, si.file ? si.file : "?", si.line,
           si.func ? si.func : "?", si.type ? ", type " : "", si.type ? si.type : "", h->id,
           h->name, b->canary, tail, HT_CANARY_HEAD, HT_CANARY_TAIL, cause);
}
