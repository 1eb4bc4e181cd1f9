/* summary.c - writing and reading session summaries. Every statement has
 * bound parameters; rows map one to one onto htq_model_t fields. */
#define _GNU_SOURCE
#include "summary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Binds the int64 values to ?1..?n of s and, when real_at > 0, a real to
 * ?real_at; steps the statement and resets it. */
static int put_row_real(sqlite3_stmt *s, const int64_t *v, int n, int real_at, double real) {
  for (int i = 0; i < n; i++)
    sqlite3_bind_int64(s, i + 1, v[i]);
  if (real_at > 0)
    sqlite3_bind_double(s, real_at, real);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? 0 : -1;
}

static int put_row(sqlite3_stmt *s, const int64_t *v, int n) {
  return put_row_real(s, v, n, 0, 0);
}

static int exec(sqlite3 *db, const char *sql) {
  return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static const char *const clear_sql[] = {
    "DELETE FROM summaries WHERE session = ?1",   "DELETE FROM site_stats WHERE session = ?1",
    "DELETE FROM heap_stats WHERE session = ?1",  "DELETE FROM heap_samples WHERE session = ?1",
    "DELETE FROM caps_lwm WHERE session = ?1",    "DELETE FROM caps_stats WHERE session = ?1",
    "DELETE FROM live_blocks WHERE session = ?1", "DELETE FROM leak_groups WHERE session = ?1",
};

enum { S_SUMMARY, S_SITE, S_HEAP, S_SAMPLE, S_MASK, S_CAPS, S_LEAKS, S_COUNT };
static const char *const insert_sql[S_COUNT] = {
    "INSERT INTO summaries VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,"
    "?18,?19,?20,?21)",
    "INSERT INTO site_stats VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    "INSERT INTO heap_stats VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?20,?16,?17,"
    "?18,?19)",
    "INSERT INTO heap_samples VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    "INSERT INTO caps_lwm VALUES(?1,?2,?3,?4,?5,?6,?7)",
    "INSERT INTO caps_stats VALUES(?1,?2,?3,?4,?5,?6)",
    "INSERT INTO leak_groups VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
};

static int write_rows(sqlite3_stmt **st, int64_t ses, const htq_model_t *m) {
  int64_t cb = 0, cn = 0;
  for (size_t i = 0; i < m->nstreams; i++) {
    cb += m->streams[i].bytes;
    cn += m->streams[i].blocks;
  }
  int64_t sum[] = {ses,
                   (int64_t)m->events,
                   (int64_t)m->allocs,
                   (int64_t)m->frees,
                   (int64_t)m->reallocs,
                   (int64_t)m->failed,
                   (int64_t)m->unmatched,
                   (int64_t)m->replaced,
                   (int64_t)m->temporary,
                   m->cur_bytes,
                   m->cur_blocks,
                   m->cur_usable,
                   m->peak_bytes,
                   m->peak_blocks,
                   (int64_t)m->peak_time,
                   (int64_t)m->total_bytes,
                   cb,
                   cn,
                   (int64_t)m->first_time,
                   (int64_t)m->last_time,
                   HTQ_MODEL_VERSION};
  if (put_row(st[S_SUMMARY], sum, 21) != 0)
    return -1;
  for (size_t i = 0; i < m->nsites; i++) {
    const htq_site_t *s = &m->sites[i];
    int64_t v[] = {ses,
                   s->id,
                   (int64_t)s->allocs,
                   (int64_t)s->frees,
                   (int64_t)s->bytes,
                   (int64_t)s->temporary,
                   (int64_t)s->live_blocks,
                   (int64_t)s->live_bytes,
                   (int64_t)s->peak_live};
    if (put_row(st[S_SITE], v, 9) != 0)
      return -1;
  }
  for (size_t i = 0; i < m->nheaps; i++) {
    const htq_heap_t *h = &m->heaps[i];
    /* ?15 is unused: the fragmentation ratio is bound as a real (?20),
     * exactly as the model computed it. */
    int64_t v[] = {ses,
                   h->id,
                   (int64_t)h->allocs,
                   h->used,
                   h->peak_used,
                   (int64_t)h->peak_time,
                   h->bounded,
                   (int64_t)h->capacity,
                   (int64_t)h->now.free_bytes,
                   (int64_t)h->now.largest_free,
                   (int64_t)h->now.free_blocks,
                   (int64_t)h->min_free,
                   (int64_t)h->min_free_time,
                   (int64_t)h->min_free_largest,
                   0,
                   (int64_t)h->worst_frag_time,
                   (int64_t)h->worst_free,
                   (int64_t)h->worst_largest,
                   (int64_t)h->worst_nfree};
    if (put_row_real(st[S_HEAP], v, 19, 20, h->worst_frag) != 0)
      return -1;
    for (size_t k = 0; k < h->nsamples; k++) {
      const htq_sample_t *p = &h->samples[k];
      int64_t w[] = {ses,
                     h->id,
                     (int64_t)p->t,
                     p->used,
                     p->peak_used,
                     (int64_t)p->free,
                     (int64_t)p->min_free,
                     (int64_t)p->largest,
                     (int64_t)p->nfree};
      if (put_row(st[S_SAMPLE], w, 9) != 0)
        return -1;
    }
  }
  for (size_t i = 0; i < m->nmasks; i++) {
    const htq_mask_t *k = &m->masks[i];
    int64_t v[] = {ses,
                   k->mask,
                   (int64_t)k->heaps,
                   (int64_t)k->total,
                   (int64_t)k->sum,
                   (int64_t)k->min_sum,
                   (int64_t)k->min_time};
    if (put_row(st[S_MASK], v, 7) != 0)
      return -1;
  }
  for (size_t i = 0; i < m->ncaps; i++) {
    const htq_capstat_t *c = &m->caps[i];
    int64_t v[] = {ses,
                   c->caps,
                   (int64_t)c->allocs,
                   (int64_t)c->bytes,
                   (int64_t)c->live_blocks,
                   (int64_t)c->live_bytes};
    if (put_row(st[S_CAPS], v, 6) != 0)
      return -1;
  }
  for (size_t i = 0; i < m->nleaks; i++) {
    const htq_leak_t *g = &m->leaks[i];
    const htq_block_t *b = &g->oldest;
    int64_t v[] = {ses,
                   b->site,
                   b->heap,
                   b->caps,
                   (int64_t)g->blocks,
                   (int64_t)g->bytes,
                   (int64_t)b->ptr,
                   (int64_t)b->size,
                   (int64_t)b->usable,
                   (int64_t)b->time_ns,
                   b->stream,
                   (int64_t)b->seq};
    if (put_row(st[S_LEAKS], v, 12) != 0)
      return -1;
  }
  return 0;
}

int htq_summary_write(sqlite3 *db, int64_t session, htq_model_t *m, char *err, size_t errlen) {
  sqlite3_stmt *st[S_COUNT] = {0};
  int rc = -1;
  if (htq_model_leaks(m) != 0) {
    snprintf(err, errlen, "out of memory grouping the leaks of session %lld", (long long)session);
    return -1;
  }
  if (exec(db, "BEGIN IMMEDIATE") != 0)
    goto out;
  for (size_t i = 0; i < sizeof clear_sql / sizeof *clear_sql; i++) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, clear_sql[i], -1, &s, NULL) != SQLITE_OK)
      goto out;
    sqlite3_bind_int64(s, 1, session);
    int r = sqlite3_step(s);
    sqlite3_finalize(s);
    if (r != SQLITE_DONE)
      goto out;
  }
  for (int i = 0; i < S_COUNT; i++)
    if (sqlite3_prepare_v2(db, insert_sql[i], -1, &st[i], NULL) != SQLITE_OK)
      goto out;
  if (write_rows(st, session, m) != 0)
    goto out;
  rc = exec(db, "COMMIT");
out:
  if (rc != 0) {
    snprintf(err, errlen, "storing the summary of session %lld: %s", (long long)session,
             sqlite3_errmsg(db));
    exec(db, "ROLLBACK");
  }
  for (int i = 0; i < S_COUNT; i++)
    sqlite3_finalize(st[i]);
  return rc;
}

/* ======================================================================
 * Loading
 * ==================================================================== */

/* Prepares sql with ?1 = session; NULL if the table is missing. */
static sqlite3_stmt *query(sqlite3 *db, const char *sql, int64_t session) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
    return NULL;
  sqlite3_bind_int64(s, 1, session);
  return s;
}

#define I(col) sqlite3_column_int64(s, (col))

static int load_totals(sqlite3 *db, int64_t ses, htq_model_t *m) {
  sqlite3_stmt *s = query(db, "SELECT * FROM summaries WHERE session = ?1", ses);
  if (!s)
    return 0; /* an older schema: no summaries */
  /* A summary of another model version is as good as none. */
  int found = sqlite3_step(s) == SQLITE_ROW && I(20) == HTQ_MODEL_VERSION;
  if (found) {
    m->events = (uint64_t)I(1);
    m->allocs = (uint64_t)I(2);
    m->frees = (uint64_t)I(3);
    m->reallocs = (uint64_t)I(4);
    m->failed = (uint64_t)I(5);
    m->unmatched = (uint64_t)I(6);
    m->replaced = (uint64_t)I(7);
    m->temporary = (uint64_t)I(8);
    m->cur_bytes = I(9);
    m->cur_blocks = I(10);
    m->cur_usable = I(11);
    m->peak_bytes = I(12);
    m->peak_blocks = I(13);
    m->peak_time = (uint64_t)I(14);
    m->total_bytes = (uint64_t)I(15);
    /* The client's totals come back as one pseudo-stream. */
    m->streams = calloc(1, sizeof *m->streams);
    if (m->streams) {
      m->nstreams = m->streams_cap = 1;
      m->streams[0].bytes = I(16);
      m->streams[0].blocks = I(17);
    }
    m->first_time = (uint64_t)I(18);
    m->last_time = (uint64_t)I(19);
  }
  sqlite3_finalize(s);
  return found;
}

static int load_sites(sqlite3 *db, int64_t ses, htq_model_t *m) {
  sqlite3_stmt *s = query(db, "SELECT * FROM site_stats WHERE session = ?1", ses);
  if (!s)
    return -1;
  while (sqlite3_step(s) == SQLITE_ROW) {
    htq_site_t *t = htq_model_site(m, (uint32_t)I(1));
    if (!t)
      continue;
    t->allocs = (uint64_t)I(2);
    t->frees = (uint64_t)I(3);
    t->bytes = (uint64_t)I(4);
    t->temporary = (uint64_t)I(5);
    t->live_blocks = (uint64_t)I(6);
    t->live_bytes = (uint64_t)I(7);
    t->peak_live = (uint64_t)I(8);
  }
  sqlite3_finalize(s);
  return 0;
}

static void load_samples(sqlite3 *db, int64_t ses, htq_heap_t *h) {
  sqlite3_stmt *s = query(db,
                          "SELECT t, used, peak_used, free, min_free, largest, nfree "
                          "FROM heap_samples "
                          "WHERE session = ?1 AND heap = ?2 ORDER BY t",
                          ses);
  if (!s)
    return;
  sqlite3_bind_int64(s, 2, h->id);
  while (sqlite3_step(s) == SQLITE_ROW) {
    htq_sample_t p = {(uint64_t)I(0), I(1),           I(2),          (uint64_t)I(3),
                      (uint64_t)I(4), (uint64_t)I(5), (uint64_t)I(6)};
    if (htq_heap_add_sample(h, &p) != 0)
      break;
  }
  sqlite3_finalize(s);
}

static int load_heaps(sqlite3 *db, int64_t ses, htq_model_t *m) {
  sqlite3_stmt *s = query(db, "SELECT * FROM heap_stats WHERE session = ?1", ses);
  if (!s)
    return -1;
  while (sqlite3_step(s) == SQLITE_ROW) {
    htq_heap_t *h = htq_model_heap(m, (uint32_t)I(1));
    if (!h)
      continue;
    h->allocs = (uint64_t)I(2);
    h->used = I(3);
    h->peak_used = I(4);
    h->peak_time = (uint64_t)I(5);
    h->bounded = (int)I(6);
    h->capacity = (uint64_t)I(7);
    h->now.free_bytes = (uint64_t)I(8);
    h->now.largest_free = (uint64_t)I(9);
    h->now.free_blocks = (uint64_t)I(10);
    h->min_free = (uint64_t)I(11);
    h->min_free_time = (uint64_t)I(12);
    h->min_free_largest = (uint64_t)I(13);
    h->worst_frag = sqlite3_column_double(s, 14);
    h->worst_frag_time = (uint64_t)I(15);
    h->worst_free = (uint64_t)I(16);
    h->worst_largest = (uint64_t)I(17);
    h->worst_nfree = (uint64_t)I(18);
    load_samples(db, ses, h);
  }
  sqlite3_finalize(s);
  return 0;
}

static int load_masks_and_caps(sqlite3 *db, int64_t ses, htq_model_t *m) {
  sqlite3_stmt *s = query(db, "SELECT * FROM caps_lwm WHERE session = ?1", ses);
  if (!s)
    return -1;
  m->nmasks = 0;
  while (sqlite3_step(s) == SQLITE_ROW && m->nmasks < HTQ_MAX_MASKS) {
    htq_mask_t *k = &m->masks[m->nmasks++];
    *k = (htq_mask_t){(uint32_t)I(1),
                      (uint64_t)I(2),
                      (uint64_t)I(4),
                      (uint64_t)I(3),
                      (uint64_t)I(5),
                      (uint64_t)I(6),
                      1};
  }
  sqlite3_finalize(s);
  s = query(db, "SELECT * FROM caps_stats WHERE session = ?1", ses);
  if (!s)
    return -1;
  size_t n = 0;
  while (sqlite3_step(s) == SQLITE_ROW) {
    htq_capstat_t *g = realloc(m->caps, (n + 1) * sizeof *g);
    if (!g)
      break;
    m->caps = g;
    m->caps[n++] = (htq_capstat_t){(uint32_t)I(1), (uint64_t)I(2), (uint64_t)I(3), (uint64_t)I(4),
                                   (uint64_t)I(5)};
  }
  m->ncaps = m->caps_cap = n;
  sqlite3_finalize(s);
  return 0;
}

/* A summary's leaks, by (site, heap, caps). */
static int load_leaks(sqlite3 *db, int64_t ses, htq_model_t *m) {
  sqlite3_stmt *s =
      query(db,
            "SELECT site, heap, caps, blocks, bytes, ptr, size, usable, t, stream, seq "
            "FROM leak_groups WHERE session = ?1 ORDER BY site, heap, caps",
            ses);
  if (!s)
    return -1;
  size_t cap = 0;
  while (sqlite3_step(s) == SQLITE_ROW) {
    if (m->nleaks == cap) {
      cap = cap ? 2 * cap : 64;
      htq_leak_t *g = realloc(m->leaks, cap * sizeof *g);
      if (!g) {
        sqlite3_finalize(s);
        return -1;
      }
      m->leaks = g;
    }
    htq_block_t b = {(uint64_t)I(5), (uint64_t)I(6),  (uint64_t)I(7),
                     (uint64_t)I(8), (uint64_t)I(10), (uint32_t)I(0),
                     (uint32_t)I(1), (uint32_t)I(2),  (uint32_t)I(9)};
    m->leaks[m->nleaks++] = (htq_leak_t){(uint64_t)I(3), (uint64_t)I(4), b};
  }
  sqlite3_finalize(s);
  return 0;
}

int htq_summary_load(sqlite3 *db, int64_t session, htq_model_t *m, int leaks, char *err,
                     size_t errlen) {
  int found = load_totals(db, session, m);
  if (found <= 0)
    return found;
  if (load_sites(db, session, m) != 0 || load_heaps(db, session, m) != 0 ||
      load_masks_and_caps(db, session, m) != 0 || (leaks && load_leaks(db, session, m) != 0)) {
    snprintf(err, errlen, "reading the summary of session %lld: %s", (long long)session,
             sqlite3_errmsg(db));
    return -1;
  }
  return 1;
}

int htq_model_get(htq_model_t *m, sqlite3 *db, int64_t session, int leaks, char *err,
                  size_t errlen) {
  if (htq_model_init(m, db, session, err, errlen) != 0)
    return -1;
  int rc = htq_summary_load(db, session, m, leaks, err, errlen);
  if (rc < 0)
    return -1;
  if (rc == 1)
    return 0;
  return htq_model_build(m, db, session, err, errlen);
}
