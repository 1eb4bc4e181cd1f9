/* replay.c - a session's stored events back in time order.
 *
 * Each stream's chunks are read in sequence order through their own
 * statement; the head event of every stream sits in a binary min-heap
 * keyed by (time, free-before-allocate, stream, seq), so the merge is
 * exact and costs O(log streams) per event. Chunks decode on their own
 * (chunk.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "query.h"

typedef struct {
  sqlite3_stmt *stmt;
  htd_chunk_reader_t chunk;
  ht_event_t ev;
  int has_chunk;
} cursor_t;

/* Advances c to its next event. Returns 1, 0 at the end, or an error. */
static int cursor_next(cursor_t *c) {
  for (;;) {
    if (c->has_chunk) {
      int rc = htd_chunk_next(&c->chunk, &c->ev);
      if (rc != 0)
        return rc;
      htd_chunk_close(&c->chunk);
      c->has_chunk = 0;
    }
    int rc = sqlite3_step(c->stmt);
    if (rc == SQLITE_DONE)
      return 0;
    if (rc != SQLITE_ROW)
      return -1;
    const void *blob = sqlite3_column_blob(c->stmt, 0);
    size_t len = (size_t)sqlite3_column_bytes(c->stmt, 0);
    if (htd_chunk_open(&c->chunk, blob, len, sqlite3_column_int(c->stmt, 1)) != 0)
      return HT_ETRUNCATED;
    c->has_chunk = 1;
  }
}

static int op_rank(uint32_t op) {
  return op == HT_OP_FREE ? 0 : op == HT_OP_REALLOC ? 1 : 2;
}

static int before(const ht_event_t *a, const ht_event_t *b) {
  if (a->time_ns != b->time_ns)
    return a->time_ns < b->time_ns;
  if (op_rank(a->op) != op_rank(b->op))
    return op_rank(a->op) < op_rank(b->op);
  if (a->stream != b->stream)
    return a->stream < b->stream;
  return a->seq < b->seq;
}

static void sift_down(cursor_t **h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < n && before(&h[l]->ev, &h[m]->ev))
      m = l;
    if (l + 1 < n && before(&h[l + 1]->ev, &h[m]->ev))
      m = l + 1;
    if (m == i)
      return;
    cursor_t *t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static int64_t *stream_ids(sqlite3 *db, int64_t session, size_t *n) {
  sqlite3_stmt *s;
  *n = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT DISTINCT stream FROM event_chunks WHERE session = ?1 "
                         "ORDER BY stream",
                         -1, &s, NULL) != SQLITE_OK)
    return NULL;
  sqlite3_bind_int64(s, 1, session);
  size_t cap = 16;
  int64_t *ids = malloc(cap * sizeof *ids);
  while (ids && sqlite3_step(s) == SQLITE_ROW) {
    if (*n == cap) {
      int64_t *g = realloc(ids, 2 * cap * sizeof *ids);
      if (!g) {
        free(ids);
        ids = NULL;
        break;
      }
      ids = g;
      cap *= 2;
    }
    ids[(*n)++] = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  return ids;
}

int htq_replay(sqlite3 *db, int64_t session, htq_event_fn fn, void *user, char *err,
               size_t errlen) {
  size_t n = 0, live = 0;
  int rc = 0;
  int64_t *ids = stream_ids(db, session, &n);
  cursor_t *cur = calloc(n ? n : 1, sizeof *cur);
  cursor_t **heap = calloc(n ? n : 1, sizeof *heap);
  if (!ids || !cur || !heap) {
    snprintf(err, errlen, "out of memory reading session %lld", (long long)session);
    rc = -1;
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (sqlite3_prepare_v2(db,
                           "SELECT data, codec FROM event_chunks WHERE session = ?1 AND "
                           "stream = ?2 ORDER BY first_seq",
                           -1, &cur[i].stmt, NULL) != SQLITE_OK) {
      snprintf(err, errlen, "reading events: %s", sqlite3_errmsg(db));
      rc = -1;
      goto out;
    }
    sqlite3_bind_int64(cur[i].stmt, 1, session);
    sqlite3_bind_int64(cur[i].stmt, 2, ids[i]);
    int r = cursor_next(&cur[i]);
    if (r < 0)
      goto corrupt;
    if (r == 1)
      heap[live++] = &cur[i];
  }
  for (size_t i = live / 2; i-- > 0;)
    sift_down(heap, live, i);
  while (live > 0) {
    cursor_t *c = heap[0];
    rc = fn(&c->ev, user);
    if (rc != 0)
      goto out;
    int r = cursor_next(c);
    if (r < 0)
      goto corrupt;
    if (r == 0)
      heap[0] = heap[--live];
    sift_down(heap, live, 0);
  }
  goto out;
corrupt:
  snprintf(err, errlen, "session %lld: a stored event chunk is damaged", (long long)session);
  rc = -1;
out:
  for (size_t i = 0; cur && i < n; i++) {
    sqlite3_finalize(cur[i].stmt);
    htd_chunk_close(&cur[i].chunk);
  }
  free(ids);
  free(cur);
  free(heap);
  return rc;
}
