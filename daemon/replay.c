/* replay.c - a session's stored events back in time order.
 *
 * Each stream's chunks are read in sequence order through their own
 * statement; the head event of every stream sits in a binary min-heap
 * keyed by (time, free-before-allocate, stream, seq), so the merge costs
 * O(log streams) per event. Chunks decode on their own (chunk.h).
 *
 * Times may cross by a hair where threads hand an address over (an
 * allocation's time is read unfenced, PROTOCOL.md "Event times"): an
 * allocation at an address the consumer still holds leaves the heap
 * (parked) until an event frees that address, or until the other
 * streams are HTQ_REORDER_NS past it; then it comes next. A realloc that
 * moves gives its old address back inside the allocator, before its time
 * is read, by as long as its thread was held up there (milliseconds when
 * it was preempted): when a stream's next event is a realloc moving away
 * from the address an allocation finds held, timed no more than
 * HTQ_MOVE_NS after it, that realloc comes out first, ahead of its time,
 * and the allocation's stream is not held back. A genuine
 * double allocation (a free the client never saw) only waits. At most
 * MAX_PARKED streams wait at once (a real trace has one now and then);
 * past that an allocation goes as it is. The look for a realloc reads
 * every stream's next event, and may read SCAN_PER_EVENT of them for each
 * event handed out (a real trace looks now and then, among a few streams);
 * past that it is not made. So no session, however made, costs more than
 * that per event.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "query.h"

#define MAX_PARKED 64
#define MOVE_CHAIN 4 /* reallocs moving away, each from the next one's address */
#define SCAN_PER_EVENT 64

typedef struct {
  sqlite3_stmt *stmt;
  htd_chunk_reader_t chunk;
  ht_event_t ev;
  int has_chunk;
  int due; /* parked until its time ran out: its event goes next as it is */
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

static void sift_up(cursor_t **h, size_t i) {
  while (i > 0 && before(&h[i]->ev, &h[(i - 1) / 2]->ev)) {
    cursor_t *t = h[i];
    h[i] = h[(i - 1) / 2];
    h[(i - 1) / 2] = t;
    i = (i - 1) / 2;
  }
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

/* A realloc in place allocates nothing new and gives nothing back. */
uint64_t htq_event_allocates(const ht_event_t *ev) {
  switch (ev->op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    return ev->ptr;
  case HT_OP_REALLOC:
    return ev->ptr != ev->old_ptr ? ev->ptr : 0;
  default:
    return 0;
  }
}

uint64_t htq_event_frees(const ht_event_t *ev) {
  if (ev->op == HT_OP_FREE)
    return ev->ptr;
  if (ev->op == HT_OP_REALLOC && ev->ptr != ev->old_ptr)
    return ev->old_ptr;
  return 0;
}

/* The merge: live streams in a min-heap, parked ones aside. */
typedef struct {
  cursor_t **heap;
  size_t live;
  cursor_t **parked;
  size_t nparked;
  uint64_t scan_budget; /* next events the look for a realloc may still read */
} merge_t;

static void push(merge_t *g, cursor_t *c) {
  g->heap[g->live++] = c;
  sift_up(g->heap, g->live - 1);
}

static void unpark(merge_t *g, size_t i, int due) {
  cursor_t *c = g->parked[i];
  g->parked[i] = g->parked[--g->nparked];
  c->due = due;
  push(g, c);
}

/* Parks c, the heap's head. */
static void park(merge_t *g, cursor_t *c) {
  g->parked[g->nparked++] = c;
  g->heap[0] = g->heap[--g->live];
  sift_down(g->heap, g->live, 0);
}

/* The parked stream whose wait is over: the others are past its time by
 * HTQ_REORDER_NS, or none is left. SIZE_MAX when there is none. */
static size_t overdue(const merge_t *g) {
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < g->nparked; i++)
    if (best == SIZE_MAX || before(&g->parked[i]->ev, &g->parked[best]->ev))
      best = i;
  if (best == SIZE_MAX || g->live == 0)
    return best;
  uint64_t t = g->parked[best]->ev.time_ns, next = g->heap[0]->ev.time_ns;
  return next > t && next - t > HTQ_REORDER_NS ? best : SIZE_MAX;
}

/* The heap index of a stream's next event that is a realloc moving away
 * from address at, timed from t to HTQ_MOVE_NS after it. SIZE_MAX when
 * there is none. */
static size_t moves_from(merge_t *g, uint64_t at, uint64_t t) {
  if (g->scan_budget < g->live)
    return SIZE_MAX;
  g->scan_budget -= g->live;
  for (size_t i = 0; i < g->live; i++) {
    const ht_event_t *ev = &g->heap[i]->ev;
    if (ev->op == HT_OP_REALLOC && htq_event_frees(ev) == at && ev->time_ns >= t &&
        ev->time_ns - t <= HTQ_MOVE_NS)
      return i;
  }
  return SIZE_MAX;
}

/* What goes before p, whose address the consumer holds: a realloc that
 * moves away from it, next in its stream, gave the address back before p
 * got it (PROTOCOL.md, "Event times"), and got its own before that. If the
 * consumer holds that one too, it waits for a realloc moving away from it
 * in turn, and so on, up to MOVE_CHAIN of them. The heap index of the
 * first of them, SIZE_MAX when there is none. */
static size_t moving_away(merge_t *g, const cursor_t *p, htq_held_fn held, void *user) {
  uint64_t at = htq_event_allocates(&p->ev), t = p->ev.time_ns;
  for (int n = 0; held && n < MOVE_CHAIN; n++) {
    size_t i = moves_from(g, at, t);
    if (i == SIZE_MAX || !held(at = g->heap[i]->ev.ptr, user))
      return i;
  }
  return SIZE_MAX;
}

/* Hands the event of the heap's i-th stream to fn and moves the stream
 * on; what the event frees unparks the streams waiting for it. Returns 0
 * or a nonzero value fn returned; *damaged is set for a damaged chunk. */
static int emit(merge_t *g, size_t i, htq_event_fn fn, void *user, int *damaged) {
  cursor_t *c = g->heap[i];
  c->due = 0;
  g->scan_budget += SCAN_PER_EVENT;
  int rc = fn(&c->ev, user);
  if (rc != 0)
    return rc;
  uint64_t back = htq_event_frees(&c->ev);
  int r = cursor_next(c);
  if (r < 0) {
    *damaged = 1;
    return -1;
  }
  if (r == 0)
    g->heap[i] = g->heap[--g->live];
  if (i < g->live) { /* a stream's times may go back: a hostile one's */
    sift_up(g->heap, i);
    sift_down(g->heap, g->live, i);
  }
  for (size_t k = g->nparked; back && k-- > 0;)
    if (htq_event_allocates(&g->parked[k]->ev) == back)
      unpark(g, k, 0);
  return 0;
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

int htq_replay(sqlite3 *db, int64_t session, htq_event_fn fn, htq_held_fn held, void *user,
               char *err, size_t errlen) {
  size_t n = 0;
  int rc = 0;
  int64_t *ids = stream_ids(db, session, &n);
  cursor_t *cur = calloc(n ? n : 1, sizeof *cur);
  merge_t g = {.heap = calloc(n ? n : 1, sizeof *g.heap),
               .parked = calloc(MAX_PARKED, sizeof *g.parked)};
  if (!ids || !cur || !g.heap || !g.parked) {
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
      g.heap[g.live++] = &cur[i];
  }
  for (size_t i = g.live / 2; i-- > 0;)
    sift_down(g.heap, g.live, i);
  g.scan_budget = (uint64_t)SCAN_PER_EVENT * g.live;
  while (g.live > 0 || g.nparked > 0) {
    size_t late = overdue(&g), first = 0;
    if (late != SIZE_MAX) {
      /* A realloc that moved away from the address may have come since. */
      if ((first = moving_away(&g, g.parked[late], held, user)) == SIZE_MAX) {
        unpark(&g, late, 1);
        continue;
      }
    } else {
      cursor_t *c = g.heap[0];
      uint64_t at = htq_event_allocates(&c->ev);
      if (held && at && !c->due && held(at, user) &&
          (first = moving_away(&g, c, held, user)) == SIZE_MAX) {
        if (g.nparked < MAX_PARKED) {
          park(&g, c);
          continue;
        }
        first = 0;
      }
    }
    int damaged = 0;
    rc = emit(&g, first, fn, user, &damaged);
    if (damaged)
      goto corrupt;
    if (rc != 0)
      goto out;
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
  free(g.heap);
  free(g.parked);
  return rc;
}
