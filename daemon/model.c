/* model.c - the session model: one time-ordered pass over the events.
 * See model.h for what it keeps. */
#define _GNU_SOURCE
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Block layout of libclient's caps heaps (docs/allocator.md, "Rebuilding a
 * heap's free space"): a block starts L + 16 bytes before its pointer (the
 * TLSF header, then a lead of L = 32, or the alignment of an aligned
 * allocation above 32) and ends 4 bytes after its usable bytes (the tail
 * canary); a free block has the 16-byte TLSF header. */
#define HTQ_CAPS_TLSF_HDR 16
#define HTQ_CAPS_LEAD 32
#define HTQ_CAPS_POST 4

static uint64_t block_pre(const ht_event_t *ev) {
  uint64_t lead = ev->op == HT_OP_ALIGNED && ev->align > HTQ_CAPS_LEAD ? ev->align : HTQ_CAPS_LEAD;
  return HTQ_CAPS_TLSF_HDR + lead;
}

/* ======================================================================
 * Loading sites and heaps
 * ==================================================================== */

static int site_cmp(const void *a, const void *b) {
  const htq_site_t *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

htq_site_t *htq_model_site(htq_model_t *m, uint32_t id) {
  if (!m->nsites)
    return NULL; /* a session that never sent a SITE record */
  htq_site_t key = {.id = id};
  return bsearch(&key, m->sites, m->nsites, sizeof *m->sites, site_cmp);
}

htq_heap_t *htq_model_heap(htq_model_t *m, uint32_t id) {
  for (size_t i = 0; i < m->nheaps; i++)
    if (m->heaps[i].id == id)
      return &m->heaps[i];
  return NULL;
}

static char *col_dup(sqlite3_stmt *s, int i) {
  const char *t = (const char *)sqlite3_column_text(s, i);
  return strdup(t ? t : "");
}

static int load_sites(htq_model_t *m, sqlite3 *db, int64_t session) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db,
                         "SELECT id, line, file, func, type FROM sites WHERE session = ?1 "
                         "ORDER BY id",
                         -1, &s, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(s, 1, session);
  size_t cap = 0;
  while (sqlite3_step(s) == SQLITE_ROW) {
    if (m->nsites == cap) {
      cap = cap ? cap * 2 : 64;
      htq_site_t *g = realloc(m->sites, cap * sizeof *g);
      if (!g) {
        sqlite3_finalize(s);
        return -1;
      }
      m->sites = g;
    }
    htq_site_t *t = &m->sites[m->nsites++];
    memset(t, 0, sizeof *t);
    t->id = (uint32_t)sqlite3_column_int64(s, 0);
    t->line = (uint32_t)sqlite3_column_int64(s, 1);
    t->file = col_dup(s, 2);
    t->func = col_dup(s, 3);
    t->type = col_dup(s, 4);
  }
  sqlite3_finalize(s);
  return 0;
}

static int heap_qualifies(const htq_heap_t *h, uint32_t mask) {
  for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
    if (h->caps[i] && (h->caps[i] & mask) == mask)
      return 1;
  return 0;
}

void htq_model_track_mask(htq_model_t *m, uint32_t mask) {
  if (!mask)
    return;
  for (size_t i = 0; i < m->nmasks; i++)
    if (m->masks[i].mask == mask)
      return;
  if (m->nmasks == HTQ_MAX_MASKS)
    return;
  htq_mask_t *k = &m->masks[m->nmasks++];
  memset(k, 0, sizeof *k);
  k->mask = mask;
  for (size_t i = 1; i < m->nheaps; i++) {
    htq_heap_t *h = &m->heaps[i];
    if (h->bounded && heap_qualifies(h, mask)) {
      k->heaps |= 1ull << i;
      k->sum += h->now.free_bytes;
      k->total += h->capacity;
    }
  }
  k->min_sum = k->sum;
}

static int load_heaps(htq_model_t *m, sqlite3 *db, int64_t session) {
  htq_heap_t *sys = &m->heaps[0];
  sys->id = 0;
  sys->name = strdup("system");
  sys->caps[0] = HT_SYSTEM_HEAP_CAPS;
  m->nheaps = 1;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db,
                         "SELECT id, name, caps0, caps1, caps2, start, size FROM heaps "
                         "WHERE session = ?1 ORDER BY id",
                         -1, &s, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(s, 1, session);
  while (sqlite3_step(s) == SQLITE_ROW && m->nheaps < HTQ_MAX_HEAPS) {
    htq_heap_t *h = &m->heaps[m->nheaps++];
    h->id = (uint32_t)sqlite3_column_int64(s, 0);
    h->name = col_dup(s, 1);
    for (int i = 0; i < HT_PROTO_CAPS_PRIOS; i++)
      h->caps[i] = (uint32_t)sqlite3_column_int64(s, 2 + i);
    h->start = (uint64_t)sqlite3_column_int64(s, 5);
    h->size = (uint64_t)sqlite3_column_int64(s, 6);
    h->bounded = h->size > HTQ_CAPS_TLSF_HDR;
    htq_heapmodel_init(&h->hm, h->start, h->size, HTQ_CAPS_POST, HTQ_CAPS_TLSF_HDR);
    htq_heapmodel_view(&h->hm, &h->now);
    h->capacity = h->now.free_bytes;
    h->min_free = h->now.free_bytes;
    h->min_free_largest = h->now.largest_free;
    h->sample_ns = HTQ_SAMPLE_NS;
  }
  sqlite3_finalize(s);
  /* Track every single capability bit and every caps level of a heap. */
  for (size_t i = 1; i < m->nheaps; i++) {
    for (int p = 0; p < HT_PROTO_CAPS_PRIOS; p++) {
      uint32_t c = m->heaps[i].caps[p];
      htq_model_track_mask(m, c);
      for (int bit = 0; bit < 32; bit++)
        if (c & (1u << bit))
          htq_model_track_mask(m, 1u << bit);
    }
  }
  return 0;
}

int htq_model_init(htq_model_t *m, sqlite3 *db, int64_t session, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  htq_livemap_init(&m->live);
  m->heaps[0].sample_ns = HTQ_SAMPLE_NS;
  if (load_sites(m, db, session) != 0 || load_heaps(m, db, session) != 0) {
    snprintf(err, errlen, "reading session %lld: %s", (long long)session, sqlite3_errmsg(db));
    return -1;
  }
  return 0;
}

void htq_model_free(htq_model_t *m) {
  for (size_t i = 0; i < m->nsites; i++) {
    free(m->sites[i].file);
    free(m->sites[i].func);
    free(m->sites[i].type);
  }
  free(m->sites);
  for (size_t i = 0; i < m->nheaps; i++) {
    free(m->heaps[i].name);
    free(m->heaps[i].samples);
    htq_heapmodel_free(&m->heaps[i].hm);
  }
  free(m->caps);
  free(m->streams);
  free(m->leaks);
  htq_livemap_free(&m->live);
}

/* ======================================================================
 * Leaks
 * ==================================================================== */

static int leak_key_cmp(const void *x, const void *y) {
  const htq_block_t *p = *(const htq_block_t *const *)x, *q = *(const htq_block_t *const *)y;
  if (p->site != q->site)
    return p->site < q->site ? -1 : 1;
  if (p->heap != q->heap)
    return p->heap < q->heap ? -1 : 1;
  return p->caps < q->caps ? -1 : p->caps > q->caps;
}

int htq_model_leaks(htq_model_t *m) {
  if (m->leaks || m->live.count == 0)
    return 0;
  const htq_block_t **live = malloc(m->live.count * sizeof *live);
  htq_leak_t *leaks = malloc(m->live.count * sizeof *leaks);
  if (!live || !leaks) {
    free(live);
    free(leaks);
    return -1;
  }
  size_t n = 0, nleaks = 0;
  for (size_t i = 0; i < m->live.cap; i++)
    if (m->live.slots[i].ptr)
      live[n++] = &m->live.slots[i];
  qsort(live, n, sizeof *live, leak_key_cmp);
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || leak_key_cmp(&live[i], &live[i - 1]) != 0)
      leaks[nleaks++] = (htq_leak_t){0, 0, *live[i]};
    htq_leak_t *g = &leaks[nleaks - 1];
    g->blocks++;
    g->bytes += live[i]->size;
    if (htq_block_older(live[i], &g->oldest))
      g->oldest = *live[i];
  }
  free(live);
  if (nleaks == 0) { /* only blocks at address 0, which the table cannot show */
    free(leaks);
    return 0;
  }
  /* Never realloc to 0 bytes: glibc frees the block and returns NULL. */
  htq_leak_t *fit = realloc(leaks, nleaks * sizeof *leaks);
  m->leaks = fit ? fit : leaks;
  m->nleaks = nleaks;
  return 0;
}

/* ======================================================================
 * Per-event bookkeeping
 * ==================================================================== */

static htq_stream_t *stream_of(htq_model_t *m, uint32_t id) {
  /* Streams are few and an event usually follows one of the same stream. */
  size_t hint = m->stream_hint;
  if (hint < m->nstreams && m->streams[hint].id == id)
    return &m->streams[hint];
  for (size_t i = 0; i < m->nstreams; i++)
    if (m->streams[i].id == id)
      return &m->streams[m->stream_hint = i];
  if (m->nstreams == m->streams_cap) {
    size_t cap = m->streams_cap ? m->streams_cap * 2 : 16;
    htq_stream_t *g = realloc(m->streams, cap * sizeof *g);
    if (!g)
      return NULL;
    m->streams = g;
    m->streams_cap = cap;
  }
  htq_stream_t *s = &m->streams[m->stream_hint = m->nstreams++];
  memset(s, 0, sizeof *s);
  s->id = id;
  return s;
}

static htq_capstat_t *capstat(htq_model_t *m, uint32_t caps) {
  for (size_t i = 0; i < m->ncaps; i++)
    if (m->caps[i].caps == caps)
      return &m->caps[i];
  if (m->ncaps == m->caps_cap) {
    size_t cap = m->caps_cap ? m->caps_cap * 2 : 8;
    htq_capstat_t *g = realloc(m->caps, cap * sizeof *g);
    if (!g)
      return NULL;
    m->caps = g;
    m->caps_cap = cap;
  }
  htq_capstat_t *c = &m->caps[m->ncaps++];
  memset(c, 0, sizeof *c);
  c->caps = caps;
  return c;
}

static int in_window(const htq_model_t *m, uint64_t t) {
  return (!m->since || t >= m->since) && (!m->until || t <= m->until);
}

static void push_sample(htq_heap_t *h) {
  if (h->nsamples == HTQ_MAX_SAMPLES) {
    /* Thin to every other interval and halve the rate: bounded memory for
     * any session length. Merging keeps each pair's extremes. */
    for (size_t i = 0; i < h->nsamples / 2; i++) {
      htq_sample_t a = h->samples[2 * i], b = h->samples[2 * i + 1];
      b.peak_used = a.peak_used > b.peak_used ? a.peak_used : b.peak_used;
      b.min_free = a.min_free < b.min_free ? a.min_free : b.min_free;
      h->samples[i] = b;
    }
    h->nsamples /= 2;
    h->sample_ns *= 2;
  }
  if (htq_heap_add_sample(h, &h->pending) == 0)
    h->has_pending = 0;
}

int htq_heap_add_sample(htq_heap_t *h, const htq_sample_t *p) {
  if (h->nsamples == h->samples_cap) {
    size_t cap = h->samples_cap ? h->samples_cap * 2 : 256;
    htq_sample_t *g = realloc(h->samples, cap * sizeof *g);
    if (!g)
      return -1;
    h->samples = g;
    h->samples_cap = cap;
  }
  h->samples[h->nsamples++] = *p;
  return 0;
}

/* Every change of a heap within an event: the extremes of the interval
 * being gathered see intermediate states too (a moving realloc holds
 * both blocks for a moment). */
static void note_change(htq_heap_t *h, uint64_t t) {
  htq_sample_t *p = &h->pending;
  if (!h->has_pending) {
    h->pending_start = t;
    p->peak_used = h->used;
    p->min_free = h->now.free_bytes;
    h->has_pending = 1;
  }
  if (h->used > p->peak_used)
    p->peak_used = h->used;
  if (h->now.free_bytes < p->min_free)
    p->min_free = h->now.free_bytes;
  h->touched = 1;
}

/* After an event, for each heap it touched: the interval's last state. */
static void sample(htq_heap_t *h, uint64_t t) {
  htq_sample_t *p = &h->pending;
  p->t = t;
  p->used = h->used;
  p->free = h->now.free_bytes;
  p->largest = h->now.largest_free;
  p->nfree = h->now.free_blocks;
}

/* Before an event at t: intervals that have run their length are points.
 * (An event the replay let wait may be a moment earlier than the last.) */
static void close_intervals(htq_model_t *m, uint64_t t) {
  for (size_t i = 0; i < m->nheaps; i++) {
    htq_heap_t *h = &m->heaps[i];
    if (h->has_pending && t > h->pending_start && t - h->pending_start >= h->sample_ns)
      push_sample(h);
  }
}

/* After a bounded heap changed: minima, worst fragmentation, caps sums. */
static void heap_changed(htq_model_t *m, size_t idx, uint64_t t) {
  htq_heap_t *h = &m->heaps[idx];
  uint64_t before = h->now.free_bytes;
  htq_heapmodel_view(&h->hm, &h->now);
  for (size_t i = 0; i < m->nmasks; i++) {
    htq_mask_t *k = &m->masks[i];
    if (!(k->heaps & (1ull << idx)))
      continue;
    k->sum = k->sum - before + h->now.free_bytes;
    if (k->sum < k->min_sum && in_window(m, t)) {
      k->min_sum = k->sum;
      k->min_time = t;
    }
  }
  if (!in_window(m, t))
    return;
  if (h->now.free_bytes < h->min_free) {
    h->min_free = h->now.free_bytes;
    h->min_free_time = t;
    h->min_free_largest = h->now.largest_free;
  }
  double frag =
      h->now.free_bytes ? 1.0 - (double)h->now.largest_free / (double)h->now.free_bytes : 0.0;
  if (frag > h->worst_frag) {
    h->worst_frag = frag;
    h->worst_frag_time = t;
    h->worst_free = h->now.free_bytes;
    h->worst_largest = h->now.largest_free;
    h->worst_nfree = h->now.free_blocks;
  }
}

static size_t heap_index(htq_model_t *m, uint32_t id) {
  for (size_t i = 0; i < m->nheaps; i++)
    if (m->heaps[i].id == id)
      return i;
  return 0; /* unknown heaps count as the system heap: no bounds */
}

static void block_gone(htq_model_t *m, const htq_block_t *b, uint64_t t) {
  m->cur_bytes -= (int64_t)b->size;
  m->cur_usable -= (int64_t)b->usable;
  m->cur_blocks--;
  size_t hi = heap_index(m, b->heap);
  htq_heap_t *h = &m->heaps[hi];
  h->used -= (int64_t)b->size;
  htq_site_t *s = htq_model_site(m, b->site);
  if (s) {
    s->frees++;
    s->live_now -= b->size;
  }
  if (h->bounded && htq_heapmodel_remove(&h->hm, b->ptr) == 0)
    heap_changed(m, hi, t);
  note_change(h, t);
}

static void block_new(htq_model_t *m, const ht_event_t *ev) {
  htq_block_t b = {ev->ptr,  ev->size, ev->usable, ev->time_ns, ev->seq,
                   ev->site, ev->heap, ev->caps,   ev->stream};
  htq_block_t old;
  if (htq_livemap_take(&m->live, ev->ptr, &old)) {
    m->replaced++; /* allocated twice without a free: keep the new one */
    block_gone(m, &old, ev->time_ns);
  }
  if (htq_livemap_put(&m->live, &b) < 0)
    m->oom = 1;
  m->cur_bytes += (int64_t)ev->size;
  m->cur_usable += (int64_t)ev->usable;
  m->cur_blocks++;
  m->total_bytes += ev->size;
  htq_site_t *s = htq_model_site(m, ev->site);
  if (s) {
    s->allocs++;
    s->bytes += ev->size;
    s->live_now += ev->size;
    if (s->live_now > s->peak_live)
      s->peak_live = s->live_now;
  }
  htq_capstat_t *c = capstat(m, ev->caps);
  if (c) {
    c->allocs++;
    c->bytes += ev->size;
  }
  size_t hi = heap_index(m, ev->heap);
  htq_heap_t *h = &m->heaps[hi];
  h->allocs++;
  h->used += (int64_t)ev->size;
  if (h->used > h->peak_used && in_window(m, ev->time_ns)) {
    h->peak_used = h->used;
    h->peak_time = ev->time_ns;
  }
  if (h->bounded && htq_heapmodel_add(&h->hm, ev->ptr, ev->usable, block_pre(ev)) == 0)
    heap_changed(m, hi, ev->time_ns);
  note_change(h, ev->time_ns);
  if (m->cur_bytes > m->peak_bytes && in_window(m, ev->time_ns)) {
    m->peak_bytes = m->cur_bytes;
    m->peak_blocks = m->cur_blocks;
    m->peak_time = ev->time_ns;
  }
}

int htq_model_event(const ht_event_t *ev, void *model) {
  htq_model_t *m = model;
  htq_block_t old;
  if (m->events++ == 0)
    m->first_time = ev->time_ns;
  close_intervals(m, ev->time_ns);
  m->last_time = ev->time_ns;
  htq_stream_t *st = stream_of(m, ev->stream);
  if (!st) {
    m->oom = 1;
    return -1;
  }
  st->bytes = ev->cur_bytes;
  st->blocks = ev->cur_blocks;
  uint64_t prev_alloc = st->last_alloc;
  st->last_alloc = 0;
  switch (ev->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    m->allocs++;
    block_new(m, ev);
    st->last_alloc = ev->ptr;
    break;
  case HT_OP_REALLOC:
    m->reallocs++;
    if (!htq_livemap_take(&m->live, ev->old_ptr, &old)) {
      m->unmatched++;
      block_new(m, ev);
    } else if (ev->ptr == ev->old_ptr) {
      block_gone(m, &old, ev->time_ns); /* resized in place */
      block_new(m, ev);
    } else {
      /* A moving realloc holds both blocks for a moment (the new one is
       * allocated before the old one goes back): that moment is a real
       * peak, or a real low-water mark. */
      block_new(m, ev);
      block_gone(m, &old, ev->time_ns);
    }
    st->last_alloc = ev->ptr;
    break;
  case HT_OP_FREE:
    m->frees++;
    if (htq_livemap_take(&m->live, ev->ptr, &old)) {
      /* Temporary: freed before the thread did anything else (heaptrack's
       * definition). */
      if (prev_alloc == ev->ptr) {
        m->temporary++;
        htq_site_t *s = htq_model_site(m, old.site);
        if (s)
          s->temporary++;
      }
      block_gone(m, &old, ev->time_ns);
    } else {
      m->unmatched++;
    }
    break;
  case HT_OP_FAILED:
    m->failed++;
    break;
  }
  for (size_t i = 0; i < m->nheaps; i++) {
    if (m->heaps[i].touched) {
      m->heaps[i].touched = 0;
      sample(&m->heaps[i], ev->time_ns);
    }
  }
  return m->oom ? -1 : 0;
}

/* Live blocks feed the per-site and per-caps live counts. */
static void count_live(htq_model_t *m) {
  for (size_t i = 0; i < m->live.cap; i++) {
    const htq_block_t *b = &m->live.slots[i];
    if (!b->ptr)
      continue;
    htq_site_t *s = htq_model_site(m, b->site);
    if (s) {
      s->live_blocks++;
      s->live_bytes += b->size;
    }
    htq_capstat_t *c = capstat(m, b->caps);
    if (c) {
      c->live_blocks++;
      c->live_bytes += b->size;
    }
  }
}

/* The replay's question: is the block at ptr live so far? */
static int model_holds(uint64_t ptr, void *model) {
  const htq_model_t *m = model;
  return htq_livemap_has(&m->live, ptr);
}

int htq_model_build(htq_model_t *m, sqlite3 *db, int64_t session, char *err, size_t errlen) {
  int rc = htq_replay(db, session, htq_model_event, model_holds, m, err, errlen);
  if (m->oom) {
    snprintf(err, errlen, "out of memory analysing session %lld", (long long)session);
    return -1;
  }
  if (rc != 0)
    return -1;
  count_live(m);
  /* The interval being gathered is the last point: the final state. */
  for (size_t i = 0; i < m->nheaps; i++) {
    htq_heap_t *h = &m->heaps[i];
    if (h->has_pending)
      push_sample(h);
  }
  return 0;
}
