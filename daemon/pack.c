/* pack.c - packed event chunks, see pack.h. */
#include "pack.h"
#include "chunk.h"
#include "ht_event.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define PACK_MAGIC 'P'
#define PACK_VERSION 1
/* zstd level of each column: on predicted columns levels 2 and 3 saved
 * under 0.2 % over level 1 and took 10 % longer (4 M events, bench/gen). */
#define PACK_ZSTD_LEVEL 1

/* Columns. */
enum { C_OP, C_TIME, C_TIME_HIGH, C_SITE, C_SIZE, C_SLACK, C_PTR, C_IDX, C_MISC };

/* Op-column byte: the op and what was predicted. */
#define B_OP 0x07u
#define B_SITE 0x08u   /* site as predicted: free_site_of, else the last allocation's */
#define B_PLACE 0x10u  /* heap and caps as the previous event's */
#define B_TOTALS 0x20u /* running totals as the op implies */
#define B_SIZE 0x40u   /* allocation: size and usable as the site's last; realloc: in place */
#define B_BLOCK 0x80u  /* the block is named by its place (C_IDX) */

/* ======================================================================
 * The model: what both sides predict from
 * ==================================================================== */

#define LIVE_MAX 64 /* blocks allocated in the chunk and still live */
#define FREE_BITS 8 /* per usable size (hashed): the last blocks freed */
#define FREE_SLOTS (1u << FREE_BITS)
#define FREE_DEPTH 8   /* a power of two */
#define SITE_SLOTS 512 /* per call site (hashed): its last size */

typedef struct {
  uint64_t ptr, usable;
  uint32_t site; /* where it was allocated */
} block_t;

typedef struct {
  uint64_t usable;
  uint64_t ptr[FREE_DEPTH]; /* a ring: the newest at top - 1 */
  uint32_t top, n;
} freelist_t;

typedef struct {
  uint32_t site;
  uint32_t free_site; /* the site that last freed one of its blocks */
  uint64_t size, usable;
} sitepred_t;

#define FILTER_SLOTS 1024 /* live blocks per hash of the address */

typedef struct {
  block_t live[LIVE_MAX]; /* oldest first */
  uint32_t nlive;
  /* How many live blocks hash to each slot: most addresses that are not
   * live (frees of older blocks) are told so without a scan. */
  uint8_t filter[FILTER_SLOTS];
  uint64_t last_ptr; /* the last address written out but a new block's */
  uint64_t top;      /* highest end of a new block written out: bump allocators go on there */
  uint32_t alloc_site, free_site; /* of the last allocation, of the last free */
  freelist_t freed[FREE_SLOTS];
  sitepred_t sites[SITE_SLOTS];
} model_t;

/* The model at the start of a chunk: what its state says, and no block.
 * m is zeroed already: packers and unpackers are calloc'ed. */
static void model_init(model_t *m, const ht_evstate_t *st) {
  m->last_ptr = m->top = st->ptr;
  m->alloc_site = m->free_site = st->site;
}

static uint8_t *filter_slot(model_t *m, uint64_t ptr) {
  return &m->filter[((ptr >> 4) * 0x9E3779B97F4A7C15ull) >> 54];
}

/* The place of ptr among the live blocks, newest 0, or -1. */
static int live_find(model_t *m, uint64_t ptr) {
  if (*filter_slot(m, ptr) == 0)
    return -1;
  for (uint32_t i = m->nlive; i-- > 0;)
    if (m->live[i].ptr == ptr)
      return (int)(m->nlive - 1 - i);
  return -1;
}

static block_t live_take(model_t *m, uint32_t place) {
  uint32_t i = m->nlive - 1 - place;
  block_t b = m->live[i];
  memmove(&m->live[i], &m->live[i + 1], (m->nlive - 1 - i) * sizeof *m->live);
  m->nlive--;
  (*filter_slot(m, b.ptr))--;
  return b;
}

static void live_add(model_t *m, uint64_t ptr, uint64_t usable, uint32_t site) {
  if (m->nlive == LIVE_MAX) { /* forget the older half at once */
    for (uint32_t i = 0; i < LIVE_MAX / 2; i++)
      (*filter_slot(m, m->live[i].ptr))--;
    memmove(m->live, m->live + LIVE_MAX / 2, LIVE_MAX / 2 * sizeof *m->live);
    m->nlive = LIVE_MAX / 2;
  }
  m->live[m->nlive++] = (block_t){ptr, usable, site};
  (*filter_slot(m, ptr))++;
}

/* After a free or a realloc, the block is not live any more. */
static void live_forget(model_t *m, uint64_t ptr) {
  int k = live_find(m, ptr);
  if (k >= 0)
    live_take(m, (uint32_t)k);
}

static freelist_t *freelist(model_t *m, uint64_t usable) {
  return &m->freed[(usable * 0x9E3779B97F4A7C15ull) >> (64 - FREE_BITS)];
}

/* The slot of the block at place j of f (0 the newest). */
static uint32_t freed_slot(const freelist_t *f, uint32_t j) {
  return (f->top - 1 - j) & (FREE_DEPTH - 1);
}

static void freed_push(model_t *m, uint64_t usable, uint64_t ptr) {
  freelist_t *f = freelist(m, usable);
  if (f->usable != usable) {
    f->usable = usable;
    f->n = 0;
  }
  f->ptr[f->top] = ptr; /* over the oldest when full */
  f->top = (f->top + 1) & (FREE_DEPTH - 1);
  if (f->n < FREE_DEPTH)
    f->n++;
}

/* Takes the block at place j out: the newer ones move down a place. */
static uint64_t freed_take(freelist_t *f, uint32_t j) {
  uint64_t ptr = f->ptr[freed_slot(f, j)];
  for (; j > 0; j--)
    f->ptr[freed_slot(f, j)] = f->ptr[freed_slot(f, j - 1)];
  f->top = (f->top - 1) & (FREE_DEPTH - 1);
  f->n--;
  return ptr;
}

/* Encoder: the place of ptr in the list of usable, newest 0 (and takes it
 * out), or -1. */
static int freed_find(model_t *m, uint64_t usable, uint64_t ptr) {
  freelist_t *f = freelist(m, usable);
  if (f->usable != usable)
    return -1;
  for (uint32_t j = 0; j < f->n; j++)
    if (f->ptr[freed_slot(f, j)] == ptr) {
      freed_take(f, j);
      return (int)j;
    }
  return -1;
}

/* Decoder: the block at place j of the list of usable (taken out). */
static int freed_at(model_t *m, uint64_t usable, uint64_t j, uint64_t *ptr) {
  freelist_t *f = freelist(m, usable);
  if (f->usable != usable || j >= f->n)
    return HT_EINVAL;
  *ptr = freed_take(f, (uint32_t)j);
  return 0;
}

static sitepred_t *sitepred(model_t *m, uint32_t site) {
  return &m->sites[site & (SITE_SLOTS - 1)];
}

/* The site a free is predicted to come from: the one that freed the last
 * block of the same allocation site (a module frees what it allocates),
 * else the last free's. b is the block when the chunk knows it. */
static uint32_t free_site_of(model_t *m, const block_t *b) {
  if (b) {
    sitepred_t *s = sitepred(m, b->site);
    if (s->site == b->site)
      return s->free_site;
  }
  return m->free_site;
}

static void learn_free_site(model_t *m, const block_t *b, uint32_t site) {
  m->free_site = site;
  if (b) {
    sitepred_t *s = sitepred(m, b->site);
    if (s->site == b->site)
      s->free_site = site;
  }
}

/* An allocation's size is predicted from its site's last one. */
static sitepred_t *site_sizes(model_t *m, uint32_t site) {
  sitepred_t *s = sitepred(m, site);
  if (s->site != site)
    *s = (sitepred_t){.site = site, .free_site = m->free_site};
  return s;
}

/* ======================================================================
 * Encoder
 * ==================================================================== */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} col_t;

struct htd_packer {
  col_t col[HTD_PACK_COLUMNS];
  uint32_t stream;
  uint64_t first_seq, count;
  ht_evstate_t st0, st; /* before the first event, and now */
  size_t room;          /* events that fit in every column without a check */
  int oom;
  model_t m;
};

htd_packer_t *htd_packer_new(uint32_t stream, uint64_t first_seq, const ht_evstate_t *st) {
  htd_packer_t *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->stream = stream;
  p->first_seq = first_seq;
  p->st0 = p->st = *st;
  model_init(&p->m, st);
  return p;
}

void htd_packer_free(htd_packer_t *p) {
  if (!p)
    return;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    free(p->col[i].p);
  free(p);
}

uint64_t htd_packer_count(const htd_packer_t *p) {
  return p->count;
}

size_t htd_packer_bytes(const htd_packer_t *p) {
  size_t n = sizeof *p;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    n += p->col[i].len;
  return n;
}

static int col_reserve(col_t *c, size_t n) {
  if (c->len + n <= c->cap)
    return 0;
  size_t cap = c->cap ? c->cap : 1024;
  while (cap < c->len + n)
    cap *= 2;
  uint8_t *g = realloc(c->p, cap);
  if (!g)
    return -1;
  c->p = g;
  c->cap = cap;
  return 0;
}

/* The most one event adds to a column (a failed op's seven varints and
 * the totals' three in C_MISC): room for it is made before each event -
 * looked for in every column once per `room` events - so the writes
 * below need no check. */
#define EVENT_MAX 128

static int reserve_event(htd_packer_t *p) {
  if (p->room > 0) { /* the columns are only written by events */
    p->room--;
    return 0;
  }
  size_t room = SIZE_MAX;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    col_t *c = &p->col[i];
    if (c->cap - c->len < EVENT_MAX && col_reserve(c, EVENT_MAX) != 0)
      return -1;
    size_t fit = (c->cap - c->len) / EVENT_MAX;
    room = fit < room ? fit : room;
  }
  p->room = room - 1; /* this event takes one */
  return 0;
}

static inline void put_u8(htd_packer_t *p, int col, uint8_t v) {
  col_t *c = &p->col[col];
  c->p[c->len++] = v;
}

static inline void put_varint(htd_packer_t *p, int col, uint64_t v) {
  col_t *c = &p->col[col];
  c->len += ht__varint_put(c->p + c->len, v);
}

/* A block's address that the model did not know, as a difference to the
 * last such address. */
static void put_ptr(htd_packer_t *p, uint64_t ptr) {
  put_varint(p, C_PTR, ht_zigzag((int64_t)(ptr - p->m.last_ptr)));
  p->m.last_ptr = ptr;
}

/* A new block's address that no list predicted, as a difference to the
 * top: fresh memory is mostly carved at the top of what is in use. */
static void put_fresh(htd_packer_t *p, uint64_t ptr, uint64_t usable) {
  put_varint(p, C_PTR, ht_zigzag((int64_t)(ptr - p->m.top)));
  if (ptr + usable > p->m.top)
    p->m.top = ptr + usable;
}

/* A failed operation changes nothing: every field is written out. */
static void pack_failed(htd_packer_t *p, const ht_event_t *ev) {
  put_varint(p, C_MISC, ev->failed_op);
  put_varint(p, C_MISC, ev->ptr);
  put_varint(p, C_MISC, ev->old_ptr);
  put_varint(p, C_MISC, ev->old_usable);
  put_varint(p, C_MISC, ev->align);
  put_varint(p, C_MISC, ev->size);
  put_varint(p, C_MISC, ev->usable);
}

/* The live block at ptr, named by its place (B_BLOCK) if the chunk knows
 * it with that usable size, else written out. Returns the bits, and the
 * block in *b (taken out of the live ones) when it was known. */
static uint8_t pack_block(htd_packer_t *p, uint64_t ptr, uint64_t usable, int size_col,
                          block_t *b) {
  model_t *m = &p->m;
  int k = live_find(m, ptr);
  if (k >= 0 && m->live[m->nlive - 1 - (uint32_t)k].usable == usable) {
    put_varint(p, C_IDX, (uint64_t)k);
    *b = live_take(m, (uint32_t)k);
    return B_BLOCK;
  }
  put_ptr(p, ptr);
  put_varint(p, size_col, usable);
  if (k >= 0) /* as live_forget(ptr) does on the other side */
    live_take(m, (uint32_t)k);
  return 0;
}

static uint8_t pack_site(htd_packer_t *p, uint32_t predicted, uint32_t site) {
  if (site == predicted)
    return B_SITE;
  put_varint(p, C_SITE, site);
  return 0;
}

static uint8_t pack_free(htd_packer_t *p, const ht_event_t *ev) {
  model_t *m = &p->m;
  block_t b;
  uint8_t bits = pack_block(p, ev->ptr, ev->size, C_SIZE, &b);
  const block_t *known = bits & B_BLOCK ? &b : NULL;
  bits |= pack_site(p, free_site_of(m, known), ev->site);
  learn_free_site(m, known, ev->site);
  freed_push(m, ev->size, ev->ptr);
  return bits;
}

static uint8_t pack_alloc(htd_packer_t *p, const ht_event_t *ev) {
  model_t *m = &p->m;
  uint8_t bits = pack_site(p, m->alloc_site, ev->site);
  m->alloc_site = ev->site;
  if (ev->op == HT_OP_ALIGNED)
    put_varint(p, C_MISC, ev->align);
  sitepred_t *s = site_sizes(m, ev->site);
  if (s->size == ev->size && s->usable == ev->usable) {
    bits |= B_SIZE;
  } else {
    put_varint(p, C_SIZE, ev->size);
    put_varint(p, C_SLACK, ht_zigzag((int64_t)(ev->usable - ev->size)));
    s->size = ev->size;
    s->usable = ev->usable;
  }
  int j = freed_find(m, ev->usable, ev->ptr);
  if (j >= 0) {
    bits |= B_BLOCK;
    put_varint(p, C_IDX, (uint64_t)j);
  } else {
    put_fresh(p, ev->ptr, ev->usable);
  }
  live_add(m, ev->ptr, ev->usable, ev->site);
  return bits;
}

static uint8_t pack_realloc(htd_packer_t *p, const ht_event_t *ev) {
  model_t *m = &p->m;
  uint8_t bits = pack_site(p, m->alloc_site, ev->site);
  m->alloc_site = ev->site;
  block_t b;
  bits |= pack_block(p, ev->old_ptr, ev->old_usable, C_MISC, &b);
  if (ev->ptr == ev->old_ptr)
    bits |= B_SIZE;
  else
    put_fresh(p, ev->ptr, ev->usable);
  put_varint(p, C_SIZE, ev->size);
  put_varint(p, C_SLACK, ht_zigzag((int64_t)(ev->usable - ev->size)));
  live_add(m, ev->ptr, ev->usable, ev->site);
  return bits;
}

int htd_pack_event(htd_packer_t *p, const ht_event_t *ev) {
  if (p->oom || reserve_event(p) != 0) {
    p->oom = 1;
    return HT_ENOMEM;
  }
  ht_evstate_t *st = &p->st;
  uint8_t opb = (uint8_t)ev->op;
  /* Time: its low byte alone, as most differences are under 256 ns. */
  int64_t dt = (int64_t)(ev->time_ns - st->time_ns);
  put_u8(p, C_TIME, (uint8_t)dt);
  put_varint(p, C_TIME_HIGH, ht_zigzag(dt >> 8));
  if (ev->heap == st->heap && ev->caps == st->caps) {
    opb |= B_PLACE;
  } else {
    put_varint(p, C_MISC, ev->heap);
    put_varint(p, C_MISC, ev->caps);
  }
  if (ev->op == HT_OP_FAILED) {
    opb |= pack_site(p, st->site, ev->site);
    pack_failed(p, ev);
  } else if (ev->op == HT_OP_FREE) {
    opb |= pack_free(p, ev);
  } else if (ev->op == HT_OP_REALLOC) {
    opb |= pack_realloc(p, ev);
  } else {
    opb |= pack_alloc(p, ev);
  }
  int64_t ib, ik;
  uint64_t it;
  ht__implied_totals(st, ev, &ib, &ik, &it);
  if (ib == ev->cur_bytes && ik == ev->cur_blocks && it == ev->total_bytes) {
    opb |= B_TOTALS;
  } else {
    put_varint(p, C_MISC, ht_zigzag((int64_t)((uint64_t)ev->cur_bytes - (uint64_t)st->cur_bytes)));
    put_varint(p, C_MISC,
               ht_zigzag((int64_t)((uint64_t)ev->cur_blocks - (uint64_t)st->cur_blocks)));
    put_varint(p, C_MISC, ev->total_bytes - st->total_bytes);
  }
  put_u8(p, C_OP, opb);
  ht__evstate_advance(st, ev);
  p->count++;
  return 0;
}

htd_pack_mark_t htd_packer_mark(const htd_packer_t *p) {
  htd_pack_mark_t k;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    k.len[i] = p->col[i].len;
  k.count = p->count;
  return k;
}

void htd_packer_cut(htd_packer_t *p, const htd_pack_mark_t *k) {
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    p->col[i].len = k->len[i];
  p->count = k->count;
  p->oom = 1; /* the model has seen events that are gone: no more */
}

/* Writes the head: magic, version, stream, first_seq, count, state. */
static size_t put_head(uint8_t *b, uint32_t stream, uint64_t first_seq, uint64_t count,
                       const ht_evstate_t *st0) {
  size_t n = 0;
  b[n++] = PACK_MAGIC;
  b[n++] = PACK_VERSION;
  n += ht__varint_put(b + n, stream);
  n += ht__varint_put(b + n, first_seq);
  n += ht__varint_put(b + n, count);
  return n + htd_chunk_put_state(b + n, st0);
}

#define HEAD_MAX (2 + 3 * 10 + 80)
#define TABLE_MAX (HTD_PACK_COLUMNS * 2 * 10)

uint8_t *htd_packer_finish(htd_packer_t *p, size_t *len) {
  size_t total = 0;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    total += p->col[i].len;
  uint8_t *b = malloc(HEAD_MAX + TABLE_MAX + total);
  if (!b)
    return NULL;
  size_t n = put_head(b, p->stream, p->first_seq, p->count, &p->st0);
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    n += ht__varint_put(b + n, p->col[i].len);
    n += ht__varint_put(b + n, p->col[i].len);
  }
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    if (p->col[i].len) /* an unused column has no buffer */
      memcpy(b + n, p->col[i].p, p->col[i].len);
    n += p->col[i].len;
  }
  *len = n;
  return b;
}

/* ---- the writer's half: compressing the columns ---- */

struct htd_squeezer {
  ZSTD_CCtx *z;
  uint8_t *buf;
  size_t cap;
};

htd_squeezer_t *htd_squeezer_new(void) {
  htd_squeezer_t *q = calloc(1, sizeof *q);
  if (q && !(q->z = ZSTD_createCCtx())) {
    free(q);
    return NULL;
  }
  return q;
}

void htd_squeezer_free(htd_squeezer_t *q) {
  if (!q)
    return;
  ZSTD_freeCCtx(q->z);
  free(q->buf);
  free(q);
}

size_t htd_squeeze(htd_squeezer_t *q, uint8_t *blob, size_t len) {
  ht_cur_t c;
  ht_cur_init(&c, blob, len);
  ht_get_u8(&c);
  ht_get_u8(&c);
  for (int i = 0; i < 3; i++)
    ht_get_varint(&c);
  ht_evstate_t st;
  htd_chunk_get_state(&c, &st);
  size_t head = c.off, raw[HTD_PACK_COLUMNS], total = 0;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    raw[i] = ht_get_varint(&c);
    if (ht_get_varint(&c) != raw[i])
      return 0; /* not a chunk from htd_packer_finish */
    total += raw[i];
  }
  if (c.err || c.off + total != len)
    return 0;
  size_t bound = head + TABLE_MAX;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    bound += ZSTD_compressBound(raw[i]);
  if (bound > q->cap) {
    uint8_t *g = realloc(q->buf, bound);
    if (!g)
      return 0;
    q->buf = g;
    q->cap = bound;
  }
  /* Columns go to the scratch buffer first, the table is written in place
   * once their sizes are known, and the columns copied after it. */
  const uint8_t *in = blob + c.off;
  size_t at = 0, stored[HTD_PACK_COLUMNS];
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    size_t z =
        raw[i] ? ZSTD_compressCCtx(q->z, q->buf + at, q->cap - at, in, raw[i], PACK_ZSTD_LEVEL) : 0;
    if (ZSTD_isError(z) || z >= raw[i]) {
      memcpy(q->buf + at, in, raw[i]);
      z = raw[i];
    }
    stored[i] = z;
    at += z;
    in += raw[i];
  }
  size_t n = head;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    n += ht__varint_put(blob + n, raw[i]);
    n += ht__varint_put(blob + n, stored[i]);
  }
  if (n + at >= len)
    return 0;
  memcpy(blob + n, q->buf, at);
  return n + at;
}

/* ======================================================================
 * Decoder
 * ==================================================================== */

struct htd_unpacker {
  ht_cur_t col[HTD_PACK_COLUMNS];
  uint8_t *cols; /* the columns, decompressed */
  ht_evstate_t st;
  uint32_t stream;
  uint64_t first_seq, count, done;
  model_t m;
};

int htd_unpack_open(htd_unpacker_t **out, const uint8_t *blob, size_t len) {
  *out = NULL;
  ht_cur_t c;
  ht_cur_init(&c, blob, len);
  if (ht_get_u8(&c) != PACK_MAGIC || ht_get_u8(&c) != PACK_VERSION)
    return c.err ? c.err : HT_EVERSION;
  htd_unpacker_t *u = calloc(1, sizeof *u);
  if (!u)
    return HT_ENOMEM;
  u->stream = (uint32_t)ht_get_varint(&c);
  u->first_seq = ht_get_varint(&c);
  u->count = ht_get_varint(&c);
  htd_chunk_get_state(&c, &u->st);
  size_t raw[HTD_PACK_COLUMNS], stored[HTD_PACK_COLUMNS], total = 0, at = c.off;
  for (int i = 0; i < HTD_PACK_COLUMNS; i++) {
    raw[i] = ht_get_varint(&c);
    stored[i] = ht_get_varint(&c);
    if (raw[i] > HTD_CHUNK_MAX_RAW || stored[i] > len) {
      htd_unpack_close(u);
      return HT_ELIMIT;
    }
    total += raw[i];
  }
  int rc = c.err;
  if (rc == 0 && (total > HTD_CHUNK_MAX_RAW || raw[C_OP] != u->count))
    rc = HT_ELIMIT;
  if (rc == 0 && !(u->cols = malloc(total ? total : 1)))
    rc = HT_ENOMEM;
  at = c.off;
  for (int i = 0, off = 0; rc == 0 && i < HTD_PACK_COLUMNS; off += (int)raw[i], i++) {
    if (stored[i] > len - at) {
      rc = HT_ETRUNCATED;
      break;
    }
    if (stored[i] == raw[i]) {
      memcpy(u->cols + off, blob + at, raw[i]);
    } else {
      size_t got = ZSTD_decompress(u->cols + off, raw[i], blob + at, stored[i]);
      if (ZSTD_isError(got) || got != raw[i])
        rc = HT_ETRUNCATED;
    }
    ht_cur_init(&u->col[i], u->cols + off, raw[i]);
    at += stored[i];
  }
  if (rc == 0 && at != len)
    rc = HT_ETRAILING;
  if (rc != 0) {
    htd_unpack_close(u);
    return rc;
  }
  model_init(&u->m, &u->st);
  *out = u;
  return 0;
}

void htd_unpack_close(htd_unpacker_t *u) {
  if (!u)
    return;
  free(u->cols);
  free(u);
}

static uint64_t get(htd_unpacker_t *u, int col) {
  return ht_get_varint(&u->col[col]);
}

static uint64_t get_ptr(htd_unpacker_t *u) {
  u->m.last_ptr += (uint64_t)ht_unzigzag(get(u, C_PTR));
  return u->m.last_ptr;
}

static uint64_t get_fresh(htd_unpacker_t *u, uint64_t usable) {
  uint64_t ptr = u->m.top + (uint64_t)ht_unzigzag(get(u, C_PTR));
  if (ptr + usable > u->m.top)
    u->m.top = ptr + usable;
  return ptr;
}

static uint32_t get_site(htd_unpacker_t *u, uint8_t opb, uint32_t predicted) {
  return opb & B_SITE ? predicted : (uint32_t)get(u, C_SITE);
}

/* The block pack_block wrote: *known set when it was named by its place. */
static int unpack_block(htd_unpacker_t *u, uint8_t opb, int size_col, uint64_t *ptr,
                        uint64_t *usable, block_t *b, int *known) {
  model_t *m = &u->m;
  *known = (opb & B_BLOCK) != 0;
  if (*known) {
    uint64_t k = get(u, C_IDX);
    if (k >= m->nlive)
      return HT_EINVAL;
    *b = live_take(m, (uint32_t)k);
    *ptr = b->ptr;
    *usable = b->usable;
  } else {
    *ptr = get_ptr(u);
    *usable = get(u, size_col);
    live_forget(m, *ptr);
  }
  return 0;
}

static int unpack_free(htd_unpacker_t *u, uint8_t opb, ht_event_t *ev) {
  model_t *m = &u->m;
  block_t b;
  int known;
  int rc = unpack_block(u, opb, C_SIZE, &ev->ptr, &ev->size, &b, &known);
  if (rc != 0)
    return rc;
  ev->usable = ev->size;
  ev->site = get_site(u, opb, free_site_of(m, known ? &b : NULL));
  learn_free_site(m, known ? &b : NULL, ev->site);
  freed_push(m, ev->size, ev->ptr);
  return 0;
}

static int unpack_alloc(htd_unpacker_t *u, uint8_t opb, ht_event_t *ev) {
  model_t *m = &u->m;
  ev->site = m->alloc_site = get_site(u, opb, m->alloc_site);
  if (ev->op == HT_OP_ALIGNED)
    ev->align = get(u, C_MISC);
  sitepred_t *s = site_sizes(m, ev->site);
  if (opb & B_SIZE) {
    ev->size = s->size;
    ev->usable = s->usable;
  } else {
    ev->size = s->size = get(u, C_SIZE);
    ev->usable = s->usable = ev->size + (uint64_t)ht_unzigzag(get(u, C_SLACK));
  }
  if (opb & B_BLOCK) {
    int rc = freed_at(m, ev->usable, get(u, C_IDX), &ev->ptr);
    if (rc != 0)
      return rc;
  } else {
    ev->ptr = get_fresh(u, ev->usable);
  }
  live_add(m, ev->ptr, ev->usable, ev->site);
  return 0;
}

static int unpack_realloc(htd_unpacker_t *u, uint8_t opb, ht_event_t *ev) {
  model_t *m = &u->m;
  ev->site = m->alloc_site = get_site(u, opb, m->alloc_site);
  block_t b;
  int known;
  int rc = unpack_block(u, opb, C_MISC, &ev->old_ptr, &ev->old_usable, &b, &known);
  if (rc != 0)
    return rc;
  ev->size = get(u, C_SIZE);
  ev->usable = ev->size + (uint64_t)ht_unzigzag(get(u, C_SLACK));
  ev->ptr = opb & B_SIZE ? ev->old_ptr : get_fresh(u, ev->usable);
  live_add(m, ev->ptr, ev->usable, ev->site);
  return 0;
}

static int unpack_failed(htd_unpacker_t *u, uint8_t opb, ht_event_t *ev) {
  ev->site = get_site(u, opb, u->st.site);
  ev->failed_op = (uint32_t)get(u, C_MISC);
  if (ev->failed_op < HT_OP_MALLOC || ev->failed_op > HT_OP_FREE)
    return HT_EOP;
  ev->ptr = get(u, C_MISC);
  ev->old_ptr = get(u, C_MISC);
  ev->old_usable = get(u, C_MISC);
  ev->align = get(u, C_MISC);
  ev->size = get(u, C_MISC);
  ev->usable = get(u, C_MISC);
  return 0;
}

int htd_unpack_next(htd_unpacker_t *u, ht_event_t *ev) {
  if (u->done == u->count) {
    for (int i = 0; i < HTD_PACK_COLUMNS; i++)
      if (u->col[i].off != u->col[i].len)
        return HT_ETRAILING;
    return 0;
  }
  ht_evstate_t *st = &u->st;
  uint8_t opb = ht_get_u8(&u->col[C_OP]);
  ev->op = opb & B_OP;
  /* What only some ops have; every other field is set on every path. */
  ev->failed_op = 0;
  ev->old_ptr = ev->old_usable = ev->align = 0;
  if (ev->op < HT_OP_MALLOC || ev->op > HT_OP_MAX)
    return HT_EOP;
  ev->seq = u->first_seq + u->done;
  ev->stream = u->stream;
  uint64_t low = ht_get_u8(&u->col[C_TIME]);
  ev->time_ns = st->time_ns + ((uint64_t)ht_unzigzag(get(u, C_TIME_HIGH)) << 8 | low);
  if (opb & B_PLACE) {
    ev->heap = st->heap;
    ev->caps = st->caps;
  } else {
    ev->heap = (uint32_t)get(u, C_MISC);
    ev->caps = (uint32_t)get(u, C_MISC);
  }
  int rc;
  if (ev->op == HT_OP_FAILED)
    rc = unpack_failed(u, opb, ev);
  else if (ev->op == HT_OP_FREE)
    rc = unpack_free(u, opb, ev);
  else if (ev->op == HT_OP_REALLOC)
    rc = unpack_realloc(u, opb, ev);
  else
    rc = unpack_alloc(u, opb, ev);
  if (rc != 0)
    return rc;
  if (opb & B_TOTALS) {
    ht__implied_totals(st, ev, &ev->cur_bytes, &ev->cur_blocks, &ev->total_bytes);
  } else {
    ev->cur_bytes = (int64_t)((uint64_t)st->cur_bytes + (uint64_t)ht_unzigzag(get(u, C_MISC)));
    ev->cur_blocks = (int64_t)((uint64_t)st->cur_blocks + (uint64_t)ht_unzigzag(get(u, C_MISC)));
    ev->total_bytes = st->total_bytes + get(u, C_MISC);
  }
  for (int i = 0; i < HTD_PACK_COLUMNS; i++)
    if (u->col[i].err)
      return u->col[i].err;
  ht__evstate_advance(st, ev);
  u->done++;
  return 1;
}
