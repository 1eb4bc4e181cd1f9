/* livemap.c - the set of live blocks, keyed by address.
 *
 * Linear probing with backward-shift deletion (no tombstones), so that a
 * replay of millions of allocate/free pairs keeps probe sequences short.
 * Address 0 marks an empty slot: no allocator returns NULL for a block.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"

static size_t slot_of(const htq_livemap_t *m, uint64_t ptr) {
  uint64_t h = ptr * 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 20) & (m->cap - 1);
}

void htq_livemap_init(htq_livemap_t *m) {
  memset(m, 0, sizeof *m);
}

void htq_livemap_free(htq_livemap_t *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* Moves every block to a table of ncap slots (a power of two that holds
 * them). Returns 0, or -1 (out of memory; m unchanged). */
static int resize(htq_livemap_t *m, size_t ncap) {
  htq_block_t *old = m->slots;
  size_t ocap = m->cap;
  m->slots = calloc(ncap, sizeof *m->slots);
  if (!m->slots) {
    m->slots = old;
    return -1;
  }
  m->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    if (!old[i].ptr)
      continue;
    size_t j = slot_of(m, old[i].ptr);
    while (m->slots[j].ptr)
      j = (j + 1) & (m->cap - 1);
    m->slots[j] = old[i];
  }
  free(old);
  return 0;
}

static int grow(htq_livemap_t *m) {
  return resize(m, m->cap ? m->cap * 2 : 1024);
}

/* The table holds count blocks up to 3/4 full. */
static int fits(size_t count, size_t cap) {
  return (count + 1) * 4 <= cap * 3;
}

int htq_livemap_put(htq_livemap_t *m, const htq_block_t *b) {
  if (!fits(m->count, m->cap) && grow(m) != 0)
    return -1;
  size_t i = slot_of(m, b->ptr);
  while (m->slots[i].ptr && m->slots[i].ptr != b->ptr)
    i = (i + 1) & (m->cap - 1);
  int replaced = m->slots[i].ptr != 0;
  m->slots[i] = *b;
  m->count += !replaced;
  return replaced;
}

int htq_livemap_has(const htq_livemap_t *m, uint64_t ptr) {
  if (!m->cap || !ptr)
    return 0;
  for (size_t i = slot_of(m, ptr); m->slots[i].ptr; i = (i + 1) & (m->cap - 1))
    if (m->slots[i].ptr == ptr)
      return 1;
  return 0;
}

int htq_livemap_take(htq_livemap_t *m, uint64_t ptr, htq_block_t *out) {
  if (!m->cap || !ptr)
    return 0;
  size_t i = slot_of(m, ptr);
  while (m->slots[i].ptr != ptr) {
    if (!m->slots[i].ptr)
      return 0;
    i = (i + 1) & (m->cap - 1);
  }
  if (out)
    *out = m->slots[i];
  /* Backward shift: pull later members of the cluster into the hole when
   * their home slot does not lie between the hole and them. */
  size_t hole = i;
  for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].ptr; j = (j + 1) & (m->cap - 1)) {
    size_t home = slot_of(m, m->slots[j].ptr);
    int between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!between) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  memset(&m->slots[hole], 0, sizeof m->slots[hole]);
  m->count--;
  return 1;
}
