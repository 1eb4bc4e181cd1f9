/* heapmodel.c - a treap of live blocks ordered by address, each subtree
 * carrying its first start, last end, largest inner gap and count of
 * inner gaps, so that the whole heap's free space is read at the root.
 * See heapmodel.h. */
#include "heapmodel.h"

#include <stdlib.h>

struct htq_tnode {
  htq_tnode_t *l, *r;
  uint64_t start, end; /* footprint of this block */
  uint64_t ptr;        /* key */
  uint32_t prio;
  /* subtree aggregates */
  uint64_t min_start, max_end, max_gap, gaps, gap_bytes;
};

/* Treap priorities: a xorshift per model (summaries run side by side). */
static uint32_t next_prio(htq_heapmodel_t *m) {
  uint64_t x = m->prio_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  m->prio_state = x;
  return (uint32_t)x;
}

static void pull(htq_tnode_t *n) {
  n->min_start = n->start;
  n->max_end = n->end;
  n->max_gap = 0;
  n->gaps = 0;
  n->gap_bytes = 0;
  if (n->l) {
    uint64_t g = n->start - n->l->max_end;
    n->min_start = n->l->min_start;
    n->max_gap = n->l->max_gap > g ? n->l->max_gap : g;
    n->gaps = n->l->gaps + (g > 0);
    n->gap_bytes = n->l->gap_bytes + g;
  }
  if (n->r) {
    uint64_t g = n->r->min_start - n->end;
    n->max_end = n->r->max_end;
    if (n->r->max_gap > n->max_gap)
      n->max_gap = n->r->max_gap;
    if (g > n->max_gap)
      n->max_gap = g;
    n->gaps += n->r->gaps + (g > 0);
    n->gap_bytes += n->r->gap_bytes + g;
  }
}

/* Splits t into keys < key and keys >= key. */
static void split(htq_tnode_t *t, uint64_t key, htq_tnode_t **a, htq_tnode_t **b) {
  if (!t) {
    *a = *b = NULL;
    return;
  }
  if (t->ptr < key) {
    split(t->r, key, &t->r, b);
    *a = t;
  } else {
    split(t->l, key, a, &t->l);
    *b = t;
  }
  pull(t);
}

static htq_tnode_t *merge(htq_tnode_t *a, htq_tnode_t *b) {
  if (!a)
    return b;
  if (!b)
    return a;
  if (a->prio > b->prio) {
    a->r = merge(a->r, b);
    pull(a);
    return a;
  }
  b->l = merge(a, b->l);
  pull(b);
  return b;
}

static const htq_tnode_t *last(const htq_tnode_t *t) {
  while (t && t->r)
    t = t->r;
  return t;
}

static const htq_tnode_t *first(const htq_tnode_t *t) {
  while (t && t->l)
    t = t->l;
  return t;
}

void htq_heapmodel_init(htq_heapmodel_t *m, uint64_t start, uint64_t size, uint64_t post,
                        uint64_t pre_free) {
  m->area_start = start;
  m->area_end = start + size;
  m->post = post;
  m->pre_free = pre_free;
  m->root = NULL;
  m->blocks = 0;
  m->used = 0;
  m->overlaps = 0;
  m->prio_state = 0x9e3779b97f4a7c15ull ^ start;
}

static void free_tree(htq_tnode_t *t) {
  if (!t)
    return;
  free_tree(t->l);
  free_tree(t->r);
  free(t);
}

void htq_heapmodel_free(htq_heapmodel_t *m) {
  free_tree(m->root);
  m->root = NULL;
}

int htq_heapmodel_add(htq_heapmodel_t *m, uint64_t ptr, uint64_t usable, uint64_t pre) {
  uint64_t start = ptr - pre, end = ptr + usable + m->post;
  if (ptr < pre || start < m->area_start || end > m->area_end || end <= start) {
    m->overlaps++;
    return -1;
  }
  htq_tnode_t *a, *b;
  split(m->root, ptr, &a, &b);
  const htq_tnode_t *before = last(a), *after = first(b);
  if ((before && before->end > start) || (after && after->start < end)) {
    m->root = merge(a, b);
    m->overlaps++;
    return -1;
  }
  htq_tnode_t *n = calloc(1, sizeof *n);
  if (!n) {
    m->root = merge(a, b);
    m->overlaps++;
    return -1;
  }
  n->start = start;
  n->end = end;
  n->ptr = ptr;
  n->prio = next_prio(m);
  pull(n);
  m->root = merge(merge(a, n), b);
  m->blocks++;
  m->used += end - start;
  return 0;
}

int htq_heapmodel_remove(htq_heapmodel_t *m, uint64_t ptr) {
  htq_tnode_t *a, *b, *mid, *c;
  split(m->root, ptr, &a, &b);
  split(b, ptr + 1, &mid, &c);
  if (!mid) {
    m->root = merge(a, c);
    return -1;
  }
  m->blocks--;
  m->used -= mid->end - mid->start;
  free(mid);
  m->root = merge(a, c);
  return 0;
}

/* A gap of g bytes is one free block with g - pre_free bytes of payload;
 * a gap too small for a header cannot exist in a consistent heap. */
static uint64_t payload(const htq_heapmodel_t *m, uint64_t g) {
  return g > m->pre_free ? g - m->pre_free : 0;
}

void htq_heapmodel_view(const htq_heapmodel_t *m, htq_heapview_t *v) {
  v->used_bytes = m->used;
  if (!m->root) {
    uint64_t g = m->area_end - m->area_start;
    v->free_blocks = g > 0;
    v->largest_free = v->free_bytes = payload(m, g);
    return;
  }
  const htq_tnode_t *r = m->root;
  uint64_t lead = r->min_start - m->area_start, tail = m->area_end - r->max_end;
  uint64_t nfree = r->gaps + (lead > 0) + (tail > 0);
  uint64_t gap_bytes = r->gap_bytes + lead + tail;
  uint64_t largest = r->max_gap;
  if (lead > largest)
    largest = lead;
  if (tail > largest)
    largest = tail;
  v->free_blocks = nfree;
  v->free_bytes = gap_bytes > nfree * m->pre_free ? gap_bytes - nfree * m->pre_free : 0;
  v->largest_free = payload(m, largest);
}
