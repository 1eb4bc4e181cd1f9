/* gen.c - a synthetic client population for bench/ingest and bench/query.
 *
 *   gen --socket PATH [--events N] [--clients C] [--streams S] [--sites K]
 *       [--seed S] [--live L] [--heaps] [--frame-kib F]
 *
 * Speaks the wire protocol (proto/PROTOCOL.md) directly, through the proto
 * codec, without libheaptrace. C client processes are forked; each has its
 * own connection and HELLO (its own pid), K call sites (SITE records) and S
 * streams (simulated threads). Client i produces about N / C events, all
 * generated into memory first; once every client is ready they start
 * sending together, so the generator costs the daemon almost nothing while
 * it ingests: write() of ready-made frames.
 *
 * The workload (per client, one simulated clock, so time order across its
 * streams is exact and a freed address is reused only later):
 *  - sizes follow a power law from 16 bytes to 64 KiB (about 92 % at most
 *    256 bytes); a call site mostly allocates its own size; sites are picked
 *    Zipf-like and a thread tends to stay at one site (loops);
 *  - lifetimes: each stream keeps a LIFO stack of short-lived blocks whose
 *    depth wanders between 2 and 64, so most blocks are freed within a few
 *    events, mostly the newest first; a few percent go to a long-lived pool
 *    shared by the streams (freed later, often by another stream);
 *  - pointers come from a simulated allocator: per-stream size-class free
 *    lists reuse the most recently freed address of that chunk size, a bump
 *    pointer otherwise (glibc-like chunk sizes: usable = chunk - 8);
 *  - time deltas of 20 ns + an exponential of mean 80 ns, with an idle gap
 *    of microseconds now and then; about 10 % reallocs (in place when the
 *    block shrinks), 5 % calloc, 1 % aligned_alloc(64);
 *  - with --heaps, client 0 registers two bounded 4 MiB heaps (HEAP records:
 *    "internal" DMA|8BIT|32BIT|INTERNAL and "spiram" SPIRAM|8BIT|32BIT) and
 *    serves about 15 % of its allocations from them (16 call sites asking for
 *    DMA, SPIRAM or 8BIT caps): first-fit with libclient's block layout
 *    (docs/allocator.md: 48 bytes before the pointer, a 4-byte tail, TLSF
 *    payloads rounded to 16, a remainder under 32 bytes given to the block),
 *    so the daemon's model of each heap's free space has exact work; when no
 *    heap fits, the event is a FAILED malloc;
 *  - it ends with exactly L blocks live (the leaks; split over the clients)
 *    and exactly N events in total: every other block is freed.
 * The running totals (cur_bytes, cur_blocks, total_bytes) are per stream as
 * PROTOCOL.md defines them, so every event is sent with "totals implied".
 * Each client ends with END and waits for the daemon to close the
 * connection, which it does once it has read END (bench/ingest then waits
 * for a query, answered once everything is committed).
 *
 * Output on stdout, one line per client then the total (and, before them,
 * with --heaps, one line per heap with its final free bytes, largest free
 * block, free blocks and lifetime minimum of free bytes, as
 * docs/allocator.md defines them: what heapctl frag and lwm must say):
 *   gen: heap=NAME id=I free=F largest=L free_blocks=N min_free=M
 *   gen: client=I pid=P events=E bytes=B frames=F gen_seconds=G send_seconds=S
 *   gen: clients=C streams=S events=E live=L bytes=B bytes_per_event=X
 *        gen_seconds=G gen_events_per_s=R seconds=T events_per_s=Y
 * gen_seconds is the slowest client's generation (the clients generate in
 * parallel); seconds runs from the first byte sent by any client to the
 * last connection closed by the daemon. Exit status 0, 1 on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ht_proto.h"

#define GEN_MAX_CLIENTS 256
#define GEN_MAX_STREAMS 64
#define GEN_MAX_SIZE 65536u
#define GEN_HEAP_MAX_SIZE 4096u
#define GEN_NCLASS (GEN_MAX_SIZE / 16 + 8) /* chunk size / 16 */
#define GEN_HEAP_SITES 16u                 /* sites 1..16 of a --heaps client */
#define GEN_HEAP_SIZE (4u << 20)
#define GEN_SYS_CAPS (HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT)

/* ======================================================================
 * Random numbers: xoshiro256**
 * ==================================================================== */

typedef struct {
  uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static uint64_t rnd(rng_t *r) {
  uint64_t *s = r->s;
  uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return res;
}

/* Uniform in [0, 1). */
static double unif(rng_t *r) {
  return (double)(rnd(r) >> 11) * 0x1.0p-53;
}

static uint64_t below(rng_t *r, uint64_t n) {
  return n ? rnd(r) % n : 0;
}

/* Power law from 16 bytes (tail exponent 0.9), at most max, then jittered so
 * that requested sizes are not all multiples of 16. */
static uint32_t pareto_size(rng_t *r, uint32_t max) {
  double x;
  do
    x = 16.0 * pow(1.0 - unif(r), -1.0 / 0.9);
  while (x > max);
  uint32_t s = (uint32_t)x;
  s -= (uint32_t)below(r, s < 16 ? s : 16);
  return s ? s : 1;
}

/* ======================================================================
 * Output buffer and frames
 * ==================================================================== */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} obuf_t;

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "gen: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return q;
}

static uint8_t *obuf_room(obuf_t *o, size_t n) {
  if (o->cap - o->len < n) {
    size_t cap = o->cap ? o->cap : (1u << 20);
    while (cap - o->len < n)
      cap *= 2;
    o->p = xrealloc(o->p, cap);
    o->cap = cap;
  }
  return o->p + o->len;
}

/* Appends one record built by put (a ht_proto_put_* encoder). */
#define OBUF_PUT(o, put, rec)                                                                      \
  do {                                                                                             \
    ht_wbuf_t w_;                                                                                  \
    ht_wbuf_init(&w_, obuf_room((o), 64 * 1024), 64 * 1024);                                       \
    put(&w_, (rec));                                                                               \
    if (w_.overflow) {                                                                             \
      fprintf(stderr, "gen: record does not fit\n");                                               \
      exit(1);                                                                                     \
    }                                                                                              \
    (o)->len += w_.len;                                                                            \
  } while (0)

/* ======================================================================
 * The simulated process
 * ==================================================================== */

typedef struct {
  uint64_t ptr;
  uint32_t size, usable;
  uint32_t site, caps;
  uint32_t heap;
} blk_t;

typedef struct {
  blk_t *v;
  size_t n, cap;
} blkvec_t;

static void blk_push(blkvec_t *b, const blk_t *x) {
  if (b->n == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 64;
    b->v = xrealloc(b->v, b->cap * sizeof *b->v);
  }
  b->v[b->n++] = *x;
}

typedef struct {
  uint64_t *v;
  uint32_t n, cap;
} ptrvec_t;

typedef struct {
  uint32_t id;
  blkvec_t stack;  /* short-lived blocks, newest last */
  uint32_t depth;  /* target depth of the stack */
  uint32_t site;   /* site of the previous allocation */
  uint64_t top;    /* bump pointer (chunk address) */
  ptrvec_t *lists; /* free chunks per chunk size / 16, most recent last */
  /* wire */
  ht_evstate_t st;
  uint64_t seq, first_seq;
  uint8_t *fbuf;
  size_t flen;
  uint32_t fcount;
  int64_t cur_bytes, cur_blocks;
  uint64_t total_bytes;
} stream_t;

typedef struct {
  uint64_t start, len;
} ext_t;

/* A bounded heap: first-fit over free extents kept sorted by address. */
typedef struct {
  uint32_t id, caps;
  const char *name;
  uint64_t base, size, used; /* used: footprint bytes of live blocks */
  uint64_t min_free;         /* lifetime minimum of the free bytes */
  ext_t *ext;
  size_t next, extcap;
} region_t;

typedef struct {
  int index;
  rng_t rng;
  uint64_t events, live; /* targets */
  uint32_t nstreams, nsites;
  size_t frame_bytes;
  int heaps;
  stream_t streams[GEN_MAX_STREAMS];
  uint32_t cur; /* index of the running stream */
  blkvec_t longpool;
  region_t regions[2];
  double *zipf_cdf; /* over the ordinary sites */
  uint32_t zipf_first, zipf_n;
  uint32_t *site_size;
  uint64_t clock, gen;
  size_t nshort; /* blocks on all stacks */
  obuf_t out;
  uint64_t frames;
} client_t;

/* glibc's chunk for a request: usable = chunk - 8. */
static uint32_t chunk_of(uint32_t size) {
  uint32_t c = (size + 8 + 15) & ~15u;
  return c < 32 ? 32 : c;
}

static void list_push(stream_t *s, uint32_t chunk, uint64_t ptr) {
  ptrvec_t *l = &s->lists[chunk / 16];
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = xrealloc(l->v, l->cap * sizeof *l->v);
  }
  l->v[l->n++] = ptr;
}

/* A system-heap block: the stream's most recently freed chunk of the size,
 * else the bump pointer. align is 0 or a power of two above 16. */
static uint64_t sys_alloc(stream_t *s, uint32_t size, uint32_t align, uint32_t *usable) {
  uint32_t chunk = chunk_of(size);
  *usable = chunk - 8;
  ptrvec_t *l = &s->lists[chunk / 16];
  if (!align && l->n)
    return l->v[--l->n];
  uint64_t ptr = s->top + 16;
  if (align)
    ptr = (ptr + align - 1) & ~(uint64_t)(align - 1);
  s->top = ptr - 16 + chunk;
  return ptr;
}

static void region_init(region_t *g, uint32_t id, const char *name, uint32_t caps, uint64_t base) {
  memset(g, 0, sizeof *g);
  g->id = id;
  g->name = name;
  g->caps = caps;
  g->base = base;
  g->size = GEN_HEAP_SIZE;
  g->extcap = 64;
  g->ext = xrealloc(NULL, g->extcap * sizeof *g->ext);
  g->ext[0] = (ext_t){base, GEN_HEAP_SIZE};
  g->next = 1;
  g->min_free = GEN_HEAP_SIZE - 16;
}

/* Free bytes as docs/allocator.md counts them: size - footprints - 16 per
 * free block. */
static uint64_t region_free_bytes(const region_t *g) {
  return g->size - g->used - 16 * (uint64_t)g->next;
}

static void region_changed(region_t *g) {
  uint64_t f = region_free_bytes(g);
  if (f < g->min_free)
    g->min_free = f;
}

/* First fit with libclient's block layout (docs/allocator.md, "Block
 * layout"): a gap of the block area is one free TLSF block; a request takes
 * a TLSF payload P = round16(size + 36) plus its 16-byte TLSF header from
 * the start of the first gap that holds it, or the whole gap when less than
 * 32 bytes would remain. ptr = block start + 48, usable = P - 36, so the
 * block spans [ptr - 48, ptr + usable + 4). Returns 0 when nothing fits. */
static uint64_t region_alloc(region_t *g, uint32_t size, uint32_t *usable) {
  uint64_t payload = ((uint64_t)size + 36 + 15) & ~15ull;
  uint64_t need = payload + 16;
  for (size_t i = 0; i < g->next; i++) {
    ext_t *e = &g->ext[i];
    if (e->len < need)
      continue;
    uint64_t start = e->start;
    if (e->len - need < 32) { /* too small to be a free block: the block takes it */
      need = e->len;
      memmove(e, e + 1, (g->next - i - 1) * sizeof *e);
      g->next--;
    } else {
      e->start += need;
      e->len -= need;
    }
    g->used += need;
    region_changed(g);
    *usable = (uint32_t)(need - 16 - 36);
    return start + 48;
  }
  return 0;
}

static void region_free(region_t *g, uint64_t ptr, uint32_t usable) {
  uint64_t start = ptr - 48, len = (uint64_t)usable + 52;
  g->used -= len;
  size_t lo = 0, hi = g->next; /* first extent after the block */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (g->ext[mid].start < start)
      lo = mid + 1;
    else
      hi = mid;
  }
  int join_prev = lo > 0 && g->ext[lo - 1].start + g->ext[lo - 1].len == start;
  int join_next = lo < g->next && start + len == g->ext[lo].start;
  if (join_prev && join_next) {
    g->ext[lo - 1].len += len + g->ext[lo].len;
    memmove(&g->ext[lo], &g->ext[lo + 1], (g->next - lo - 1) * sizeof *g->ext);
    g->next--;
  } else if (join_prev) {
    g->ext[lo - 1].len += len;
  } else if (join_next) {
    g->ext[lo].start = start;
    g->ext[lo].len += len;
  } else {
    if (g->next == g->extcap) {
      g->extcap *= 2;
      g->ext = xrealloc(g->ext, g->extcap * sizeof *g->ext);
    }
    memmove(&g->ext[lo + 1], &g->ext[lo], (g->next - lo) * sizeof *g->ext);
    g->ext[lo] = (ext_t){start, len};
    g->next++;
  }
  region_changed(g);
}

/* ======================================================================
 * Events
 * ==================================================================== */

static void flush_frame(client_t *c, stream_t *s) {
  if (!s->fcount)
    return;
  uint8_t *at = obuf_room(&c->out, HT_PROTO_EVENTS_HEAD + s->flen);
  ht_proto_events_head(at, s->id, s->first_seq, s->fcount, s->flen);
  memcpy(at + HT_PROTO_EVENTS_HEAD, s->fbuf, s->flen);
  c->out.len += HT_PROTO_EVENTS_HEAD + s->flen;
  c->frames++;
  s->first_seq = s->seq;
  s->flen = 0;
  s->fcount = 0;
}

static void tick(client_t *c) {
  double u = unif(&c->rng);
  c->clock += 20 + (uint64_t)(-log(1.0 - u) * 80.0);
  if (below(&c->rng, 1000) < 3) /* the thread did something else */
    c->clock += 2000 + below(&c->rng, 48000);
}

/* Fills in time and running totals, encodes ev into the stream's frame. */
static void emit(client_t *c, stream_t *s, ht_event_t *ev) {
  tick(c);
  ev->time_ns = c->clock;
  switch (ev->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    s->cur_bytes += ev->usable;
    s->cur_blocks++;
    s->total_bytes += ev->usable;
    break;
  case HT_OP_REALLOC:
    s->cur_bytes += (int64_t)ev->usable - (int64_t)ev->old_usable;
    if (ev->usable > ev->old_usable)
      s->total_bytes += ev->usable - ev->old_usable;
    break;
  case HT_OP_FREE:
    s->cur_bytes -= (int64_t)ev->size;
    s->cur_blocks--;
    break;
  }
  ev->cur_bytes = s->cur_bytes;
  ev->cur_blocks = s->cur_blocks;
  ev->total_bytes = s->total_bytes;
  ev->stream = s->id;
  if (s->flen + HT_PROTO_MAX_EVENT_BYTES > c->frame_bytes)
    flush_frame(c, s);
  s->flen += ht_proto_event_encode(s->fbuf + s->flen, &s->st, ev);
  s->fcount++;
  s->seq++;
  c->gen++;
}

static uint32_t zipf_site(client_t *c) {
  double u = unif(&c->rng);
  size_t lo = 0, hi = c->zipf_n - 1;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->zipf_cdf[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return c->zipf_first + (uint32_t)lo;
}

/* The call site that frees blocks of an allocation site. */
static uint32_t free_site_of(const client_t *c, uint32_t site) {
  uint32_t nfree = c->nsites / 5;
  uint32_t first = c->nsites - nfree + 1;
  return first + (site * 7u) % nfree;
}

/* Caps asked by the heap sites: DMA, SPIRAM, or plain 8BIT (either heap). */
static uint32_t heap_site_caps(uint32_t site) {
  switch (site % 3) {
  case 0:
    return HT_CAP_DMA | HT_CAP_8BIT;
  case 1:
    return HT_CAP_SPIRAM | HT_CAP_8BIT;
  default:
    return HT_CAP_8BIT;
  }
}

static void heap_alloc(client_t *c, stream_t *s, int want_long) {
  uint32_t site = 1 + (uint32_t)below(&c->rng, GEN_HEAP_SITES);
  uint32_t caps = heap_site_caps(site);
  uint32_t size =
      below(&c->rng, 10) < 7 ? c->site_size[site] : pareto_size(&c->rng, GEN_HEAP_MAX_SIZE);
  ht_event_t ev = {0};
  ev.site = site;
  ev.caps = caps;
  ev.size = size;
  uint32_t usable = 0;
  uint64_t ptr = 0;
  region_t *g = NULL;
  for (int i = 0; i < 2 && !ptr; i++) {
    g = &c->regions[i];
    if ((g->caps & caps) == caps)
      ptr = region_alloc(g, size, &usable);
  }
  if (!ptr) {
    ev.op = HT_OP_FAILED;
    ev.failed_op = HT_OP_MALLOC;
    emit(c, s, &ev);
    return;
  }
  ev.op = HT_OP_MALLOC;
  ev.heap = g->id;
  ev.ptr = ptr;
  ev.usable = usable;
  emit(c, s, &ev);
  blk_t b = {ptr, size, usable, site, caps, g->id};
  /* Long-lived heap blocks only while the heap has room: it fragments,
   * it does not fill up. */
  if (want_long && g->used < g->size * 7 / 10) {
    blk_push(&c->longpool, &b);
  } else {
    blk_push(&s->stack, &b);
    c->nshort++;
  }
}

static void sys_alloc_event(client_t *c, stream_t *s, int is_long) {
  uint32_t site;
  if (s->site && below(&c->rng, 10) < 6)
    site = s->site;
  else
    site = s->site = zipf_site(c);
  uint32_t size = below(&c->rng, 10) < 7 ? c->site_size[site] : pareto_size(&c->rng, GEN_MAX_SIZE);
  uint32_t r = (uint32_t)below(&c->rng, 100), align = 0;
  ht_event_t ev = {0};
  ev.op = HT_OP_MALLOC;
  if (r < 5) {
    ev.op = HT_OP_CALLOC;
  } else if (r < 6) {
    ev.op = HT_OP_ALIGNED;
    align = 64;
    size = (size + 63) & ~63u;
    ev.align = align;
  }
  uint32_t usable;
  uint64_t ptr = sys_alloc(s, size, align, &usable);
  ev.site = site;
  ev.caps = GEN_SYS_CAPS;
  ev.ptr = ptr;
  ev.size = size;
  ev.usable = usable;
  emit(c, s, &ev);
  blk_t b = {ptr, size, usable, site, GEN_SYS_CAPS, 0};
  if (is_long) {
    blk_push(&c->longpool, &b);
  } else {
    blk_push(&s->stack, &b);
    c->nshort++;
  }
}

static void free_event(client_t *c, stream_t *s, const blk_t *b) {
  ht_event_t ev = {0};
  ev.op = HT_OP_FREE;
  ev.site = free_site_of(c, b->site);
  ev.heap = b->heap;
  ev.caps = b->caps;
  ev.ptr = b->ptr;
  ev.size = b->usable;
  emit(c, s, &ev);
  if (b->heap)
    region_free(&c->regions[b->heap - 1], b->ptr, b->usable);
  else
    list_push(s, b->usable + 8, b->ptr);
}

/* realloc of a system block to new_size (0: pick one), in place when it
 * shrinks (the remainder becomes a free chunk) or stays in its chunk. */
static void realloc_event(client_t *c, stream_t *s, blk_t *b, uint32_t new_size) {
  if (!new_size) {
    if (below(&c->rng, 10) < 7 && b->size < GEN_MAX_SIZE / 2)
      new_size = b->size + 1 + (uint32_t)(b->size * (0.25 + 1.25 * unif(&c->rng)));
    else
      new_size = 1 + (uint32_t)(b->size * (0.3 + 0.6 * unif(&c->rng)));
    if (new_size > GEN_MAX_SIZE)
      new_size = GEN_MAX_SIZE;
  }
  uint32_t oc = b->usable + 8, nc = chunk_of(new_size), usable;
  uint64_t ptr;
  if (nc <= oc) {
    ptr = b->ptr;
    if (oc - nc >= 32) {
      usable = nc - 8;
      list_push(s, oc - nc, b->ptr + nc);
    } else {
      usable = b->usable;
    }
  } else {
    ptr = sys_alloc(s, new_size, 0, &usable);
    list_push(s, oc, b->ptr);
  }
  ht_event_t ev = {0};
  ev.op = HT_OP_REALLOC;
  ev.site = b->site;
  ev.caps = GEN_SYS_CAPS;
  ev.ptr = ptr;
  ev.old_ptr = b->ptr;
  ev.old_usable = b->usable;
  ev.size = new_size;
  ev.usable = usable;
  emit(c, s, &ev);
  b->ptr = ptr;
  b->size = new_size;
  b->usable = usable;
}

static blk_t take_long(client_t *c) {
  size_t i = below(&c->rng, c->longpool.n);
  blk_t b = c->longpool.v[i];
  c->longpool.v[i] = c->longpool.v[--c->longpool.n];
  return b;
}

static blk_t pop_short(client_t *c, stream_t *s, size_t back) {
  size_t i = s->stack.n - 1 - back;
  blk_t b = s->stack.v[i];
  memmove(&s->stack.v[i], &s->stack.v[i + 1], back * sizeof b);
  s->stack.n--;
  c->nshort--;
  return b;
}

/* Events still owed at the end: every short-lived block freed and the
 * long-lived pool brought to exactly the target. */
static uint64_t need(const client_t *c) {
  uint64_t n = c->nshort;
  n += c->longpool.n > c->live ? c->longpool.n - c->live : c->live - c->longpool.n;
  return n;
}

/* One step of the steady state: exactly one event, so that the end can be
 * planned. */
static void step(client_t *c) {
  rng_t *r = &c->rng;
  if (below(r, 16) == 0)
    c->cur = (uint32_t)below(r, c->nstreams);
  stream_t *s = &c->streams[c->cur];
  if (below(r, 2048) == 0)
    s->depth = 2 + (uint32_t)below(r, 63);
  double progress = (double)c->gen / (double)c->events;
  uint64_t target = (uint64_t)((double)c->live * (progress < 0.8 ? progress / 0.8 : 1.0));
  double u = unif(r);
  if (u < 0.10) { /* realloc: mostly the newest short-lived block */
    blk_t *b = NULL;
    if (s->stack.n && s->stack.v[s->stack.n - 1].heap == 0 && below(r, 10) < 8)
      b = &s->stack.v[s->stack.n - 1];
    else if (c->longpool.n) {
      b = &c->longpool.v[below(r, c->longpool.n)];
      if (b->heap)
        b = NULL;
    }
    if (b) {
      realloc_event(c, s, b, 0);
      return;
    }
  } else if (u < 0.104 && c->longpool.n && c->longpool.n * 20 > target * 19) {
    blk_t b = take_long(c); /* long-lived churn, often another stream's */
    free_event(c, s, &b);
    return;
  }
  size_t n = s->stack.n;
  if (n == 0 || unif(r) * (double)(n + s->depth) < s->depth) {
    int is_long = c->longpool.n < target ? below(r, 100) < 5 : below(r, 1000) < 1;
    if (c->heaps && below(r, 100) < 15)
      heap_alloc(c, s, is_long);
    else
      sys_alloc_event(c, s, is_long);
  } else {
    size_t back = below(r, 4) ? 0 : below(r, n < 8 ? n : 8);
    blk_t b = pop_short(c, s, back);
    free_event(c, s, &b);
  }
}

/* One event that changes no count: an in-place realloc to the same size, or
 * (no system block live) a failed malloc. */
static void filler(client_t *c) {
  stream_t *s = &c->streams[c->cur];
  for (uint32_t i = 0; i < c->nstreams; i++) {
    stream_t *t = &c->streams[i];
    if (t->stack.n && t->stack.v[t->stack.n - 1].heap == 0) {
      realloc_event(c, t, &t->stack.v[t->stack.n - 1], t->stack.v[t->stack.n - 1].size);
      return;
    }
  }
  for (size_t i = 0; i < c->longpool.n; i++) {
    if (c->longpool.v[i].heap == 0) {
      realloc_event(c, s, &c->longpool.v[i], c->longpool.v[i].size);
      return;
    }
  }
  ht_event_t ev = {0};
  ev.op = HT_OP_FAILED;
  ev.failed_op = HT_OP_MALLOC;
  ev.caps = GEN_SYS_CAPS;
  ev.size = (uint64_t)1 << 40;
  emit(c, s, &ev);
}

static void put_sites(client_t *c) {
  static const char *const types[] = {"struct item", "char[]", "msg_t", "struct node"};
  char file[64], func[64];
  for (uint32_t id = 1; id <= c->nsites; id++) {
    int heap_site = c->heaps && id <= GEN_HEAP_SITES;
    int free_site = id > c->nsites - c->nsites / 5;
    snprintf(file, sizeof file, "src/%s%02u.c", heap_site ? "drv" : "mod", id % 23);
    const char *verb = heap_site ? "dma_buf" : free_site ? "release" : "make";
    snprintf(func, sizeof func, "%s_%u", verb, id);
    ht_site_rec_t s = {.id = id, .line = 10 + id * 7};
    s.file = ht_str(file);
    s.func = ht_str(func);
    s.type = ht_str(!free_site && id % 5 == 0 ? types[id % 4] : "");
    OBUF_PUT(&c->out, ht_proto_put_site, &s);
  }
}

/* Builds the client's whole connection: HELLO, SITEs, HEAPs, EVENTS, END. */
static void generate(client_t *c, uint64_t seed) {
  rng_seed(&c->rng, seed * 1000003u + (uint64_t)c->index);
  struct timespec rt, mt;
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_MONOTONIC, &mt);
  uint64_t mono0 = (uint64_t)mt.tv_sec * 1000000000u + (uint64_t)mt.tv_nsec;
  c->clock = mono0 + 1000;

  static ht_hello_t h;
  char idx[16];
  snprintf(idx, sizeof idx, "%d", c->index);
  h.version = HT_PROTO_VERSION;
  h.ptr_size = 8;
  h.clock = 1;
  h.pid = (uint32_t)getpid();
  h.ppid = (uint32_t)getppid();
  h.start_realtime_ns = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec;
  h.start_mono_ns = mono0;
  h.app = ht_str("bench-gen");
  h.exe = ht_str("/bench/gen");
  h.argc = 3;
  h.argv[0] = ht_str("gen");
  h.argv[1] = ht_str("--client");
  h.argv[2] = ht_str(idx);
  OBUF_PUT(&c->out, ht_proto_put_hello, &h);
  put_sites(c);

  if (c->heaps) {
    region_init(&c->regions[0], 1, "internal",
                HT_CAP_DMA | HT_CAP_8BIT | HT_CAP_32BIT | HT_CAP_INTERNAL, 0x3fc80000u);
    region_init(&c->regions[1], 2, "spiram", HT_CAP_SPIRAM | HT_CAP_8BIT | HT_CAP_32BIT,
                0x3c000000u);
    for (int i = 0; i < 2; i++) {
      region_t *g = &c->regions[i];
      ht_heap_rec_t hr = {.id = g->id, .caps = {g->caps, 0, 0}, .start = g->base, .size = g->size};
      hr.name = ht_str(g->name);
      OBUF_PUT(&c->out, ht_proto_put_heap, &hr);
    }
  }

  /* Sites: the first fifth (after the heap sites) hottest, Zipf s = 1.1;
   * the last fifth are free sites. */
  c->site_size = xrealloc(NULL, (c->nsites + 1) * sizeof *c->site_size);
  for (uint32_t id = 1; id <= c->nsites; id++)
    c->site_size[id] =
        pareto_size(&c->rng, c->heaps && id <= GEN_HEAP_SITES ? GEN_HEAP_MAX_SIZE : GEN_MAX_SIZE);
  c->zipf_first = c->heaps ? GEN_HEAP_SITES + 1 : 1;
  c->zipf_n = c->nsites - c->nsites / 5 - c->zipf_first + 1;
  c->zipf_cdf = xrealloc(NULL, c->zipf_n * sizeof *c->zipf_cdf);
  double sum = 0;
  for (uint32_t i = 0; i < c->zipf_n; i++)
    c->zipf_cdf[i] = sum += pow((double)(i + 1), -1.1);
  for (uint32_t i = 0; i < c->zipf_n; i++)
    c->zipf_cdf[i] /= sum;

  for (uint32_t i = 0; i < c->nstreams; i++) {
    stream_t *s = &c->streams[i];
    s->id = i + 1;
    s->depth = 2 + (uint32_t)below(&c->rng, 63);
    /* Stream 0 in the main arena (brk), the others in thread arenas. */
    s->top = i == 0 ? 0x55d4a0c00000ull + 0x1000u * (uint64_t)c->index
                    : 0x7f0000000000ull + ((uint64_t)i << 32) + 0x1000u * (uint64_t)c->index;
    s->lists = calloc(GEN_NCLASS, sizeof *s->lists);
    s->fbuf = xrealloc(NULL, c->frame_bytes);
    if (!s->lists) {
      fprintf(stderr, "gen: out of memory\n");
      exit(1);
    }
  }

  /* Steady state while more than the end needs is left; an event changes
   * the remaining slack by 0, 1 or 2, so stopping at 3 never overshoots. */
  while (c->gen + need(c) + 3 <= c->events)
    step(c);
  while (c->gen + need(c) < c->events)
    filler(c);
  for (uint32_t i = 0; i < c->nstreams; i++) {
    stream_t *s = &c->streams[i];
    while (s->stack.n) {
      blk_t b = pop_short(c, s, 0);
      free_event(c, s, &b);
    }
  }
  while (c->longpool.n > c->live) {
    blk_t b = take_long(c);
    free_event(c, &c->streams[below(&c->rng, c->nstreams)], &b);
  }
  while (c->longpool.n < c->live)
    sys_alloc_event(c, &c->streams[below(&c->rng, c->nstreams)], 1);
  for (uint32_t i = 0; i < c->nstreams; i++)
    flush_frame(c, &c->streams[i]);
  ht_end_rec_t e = {.reason = HT_END_CLEAN, .undelivered = 0};
  OBUF_PUT(&c->out, ht_proto_put_end, &e);
  if (c->gen != c->events || c->longpool.n != c->live) {
    fprintf(stderr,
            "gen: client %d generated %" PRIu64 " events (wanted %" PRIu64
            "), %zu live (wanted %" PRIu64 ")\n",
            c->index, c->gen, c->events, c->longpool.n, c->live);
    exit(1);
  }
}

/* ======================================================================
 * Processes
 * ==================================================================== */

typedef struct {
  int index, ok;
  int pid;
  double gen_s, t_first, t_end; /* CLOCK_MONOTONIC seconds */
  uint64_t events, bytes, frames;
} result_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int write_full(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int connect_to(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return -1;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

typedef struct {
  const char *socket;
  uint64_t events, live, seed;
  uint32_t clients, streams, sites;
  int heaps;
  size_t frame_bytes;
} opts_t;

/* A client process: generate, say ready, wait for go, send, wait for EOF. */
static int client_main(const opts_t *o, int index, int ready_fd, int go_fd, int res_fd) {
  static client_t c;
  result_t res = {.index = index, .pid = (int)getpid()};
  c.index = index;
  c.events = o->events / o->clients + ((uint64_t)index < o->events % o->clients);
  c.live = o->live / o->clients + ((uint64_t)index < o->live % o->clients);
  c.nstreams = o->streams;
  c.nsites = o->sites;
  c.frame_bytes = o->frame_bytes;
  c.heaps = o->heaps && index == 0;
  double t0 = now_s();
  generate(&c, o->seed);
  res.gen_s = now_s() - t0;
  res.events = c.gen;
  res.bytes = c.out.len;
  res.frames = c.frames;
  int fd = connect_to(o->socket);
  if (fd < 0) {
    fprintf(stderr, "gen: client %d: cannot connect to %s: %s\n", index, o->socket,
            strerror(errno));
  }
  char b = fd >= 0 ? 1 : 0;
  int sent = write_full(ready_fd, &b, 1);
  close(ready_fd);
  if (sent != 0 || fd < 0)
    return 1;
  ssize_t got = read(go_fd, &b, 1); /* returns 0 when the parent closes it: go */
  (void)got;
  res.t_first = now_s();
  if (write_full(fd, c.out.p, c.out.len) != 0) {
    fprintf(stderr, "gen: client %d: sending failed after some bytes: %s (daemon log?)\n", index,
            strerror(errno));
  } else {
    shutdown(fd, SHUT_WR);
    char sink[256];
    ssize_t n;
    while ((n = read(fd, sink, sizeof sink)) > 0 || (n < 0 && errno == EINTR))
      ;
    res.t_end = now_s();
    res.ok = n == 0;
  }
  close(fd);
  for (int i = 0; c.heaps && i < 2; i++) { /* the truth for heapctl frag and lwm */
    const region_t *g = &c.regions[i];
    uint64_t largest = 0;
    for (size_t k = 0; k < g->next; k++)
      largest = g->ext[k].len - 16 > largest ? g->ext[k].len - 16 : largest;
    printf("gen: heap=%s id=%u free=%" PRIu64 " largest=%" PRIu64 " free_blocks=%zu"
           " min_free=%" PRIu64 "\n",
           g->name, g->id, region_free_bytes(g), largest, g->next, g->min_free);
  }
  fflush(stdout);
  return write_full(res_fd, &res, sizeof res) == 0 && res.ok ? 0 : 1;
}

static uint64_t parse_u64(const char *opt, const char *v) {
  char *end;
  errno = 0;
  double d = strtod(v, &end); /* accepts 20e6 */
  if (errno || end == v || *end || d < 0 || d > 1e15) {
    fprintf(stderr, "gen: %s takes a non-negative number, not '%s'\n", opt, v);
    exit(1);
  }
  return (uint64_t)d;
}

static void usage(FILE *to) {
  fprintf(to, "usage: gen --socket PATH [--events N] [--clients C] [--streams S] [--sites K]\n"
              "           [--seed S] [--live L] [--heaps] [--frame-kib F]\n");
}

int main(int argc, char **argv) {
  opts_t o = {.events = 20000000,
              .live = 1000,
              .seed = 1,
              .clients = 4,
              .streams = 4,
              .sites = 300,
              .frame_bytes = 64 * 1024};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--heaps")) {
      o.heaps = 1;
      continue;
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      usage(stderr);
      return 1;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--socket"))
      o.socket = v;
    else if (!strcmp(a, "--events"))
      o.events = parse_u64(a, v);
    else if (!strcmp(a, "--clients"))
      o.clients = (uint32_t)parse_u64(a, v);
    else if (!strcmp(a, "--streams"))
      o.streams = (uint32_t)parse_u64(a, v);
    else if (!strcmp(a, "--sites"))
      o.sites = (uint32_t)parse_u64(a, v);
    else if (!strcmp(a, "--seed"))
      o.seed = parse_u64(a, v);
    else if (!strcmp(a, "--live"))
      o.live = parse_u64(a, v);
    else if (!strcmp(a, "--frame-kib"))
      o.frame_bytes = (size_t)parse_u64(a, v) * 1024;
    else {
      fprintf(stderr, "gen: unknown option %s\n", a);
      usage(stderr);
      return 1;
    }
  }
  if (!o.socket || o.clients < 1 || o.clients > GEN_MAX_CLIENTS || o.streams < 1 ||
      o.streams > GEN_MAX_STREAMS || o.sites < 40 || o.frame_bytes < 1024 ||
      o.frame_bytes > HT_PROTO_MAX_FRAME - 64 || o.events < o.clients * 10 ||
      o.live * 2 > o.events) {
    fprintf(stderr,
            "gen: need --socket; 1..%d clients, 1..%d streams, at least 40 sites, "
            "1..1000 KiB frames, 10 events per client, --live at most half the "
            "events\n",
            GEN_MAX_CLIENTS, GEN_MAX_STREAMS);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  int ready[2], go[2], res[2];
  if (pipe(ready) != 0 || pipe(go) != 0 || pipe(res) != 0) {
    perror("gen: pipe");
    return 1;
  }
  pid_t pids[GEN_MAX_CLIENTS];
  for (uint32_t i = 0; i < o.clients; i++) {
    pids[i] = fork();
    if (pids[i] < 0) {
      perror("gen: fork");
      return 1;
    }
    if (pids[i] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      close(ready[0]);
      close(go[1]);
      close(res[0]);
      _exit(client_main(&o, (int)i, ready[1], go[0], res[1]));
    }
  }
  close(ready[1]);
  close(go[0]);
  close(res[1]);
  int failed = 0;
  for (uint32_t i = 0; i < o.clients; i++) {
    char b = 0;
    if (read(ready[0], &b, 1) != 1 || b != 1)
      failed = 1;
  }
  close(go[1]); /* go */
  result_t r[GEN_MAX_CLIENTS];
  uint32_t got = 0;
  while (got < o.clients && read(res[0], &r[got], sizeof *r) == (ssize_t)sizeof *r)
    got++;
  for (uint32_t i = 0; i < o.clients; i++) {
    int st;
    waitpid(pids[i], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      failed = 1;
  }
  if (failed || got != o.clients) {
    fprintf(stderr, "gen: %u of %u clients completed\n", got, o.clients);
    return 1;
  }
  double first = 1e300, end = 0, gen_s = 0;
  uint64_t events = 0, bytes = 0;
  for (uint32_t i = 0; i < got; i++) {
    printf("gen: client=%d pid=%d events=%" PRIu64 " bytes=%" PRIu64 " frames=%" PRIu64
           " gen_seconds=%.3f send_seconds=%.3f\n",
           r[i].index, r[i].pid, r[i].events, r[i].bytes, r[i].frames, r[i].gen_s,
           r[i].t_end - r[i].t_first);
    first = r[i].t_first < first ? r[i].t_first : first;
    end = r[i].t_end > end ? r[i].t_end : end;
    gen_s = r[i].gen_s > gen_s ? r[i].gen_s : gen_s;
    events += r[i].events;
    bytes += r[i].bytes;
  }
  printf("gen: clients=%u streams=%u events=%" PRIu64 " live=%" PRIu64 " bytes=%" PRIu64
         " bytes_per_event=%.3f gen_seconds=%.3f gen_events_per_s=%.0f seconds=%.6f"
         " events_per_s=%.0f\n",
         o.clients, o.streams, events, o.live, bytes, (double)bytes / (double)events, gen_s,
         (double)events / gen_s, end - first, (double)events / (end - first));
  return 0;
}
