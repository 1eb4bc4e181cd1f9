/* query.h - the query service: requests in, JSON replies out.
 *
 * The same code answers heapctl through the daemon (on the libuv thread
 * pool) and offline on a database file (heapctl --db). A request is a JSON
 * object {"cmd": NAME, ...options}; a reply is {"ok": true, "result": ...}
 * or {"ok": false, "code": N, "error": "..."} where code is the exit
 * status heapctl should give: HTQ_FAILED (1) or HTQ_USAGE (2).
 */
#ifndef HTQ_QUERY_H
#define HTQ_QUERY_H

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/stat.h>

#include "ht_proto.h"

#define HTQ_SCHEMA_VERSION 4
#define HTQ_FAILED 1
#define HTQ_USAGE 2

/* Opens a database read-only and checks that it is a heaptrace store this
 * build can read. Returns 0, or -1 with err naming the file and the fault. */
int htq_open(const char *path, sqlite3 **db, char *err, size_t errlen);

/* For the database at path, whose stat is sb: -1 with err saying so when
 * it is a directory (SQLite's own words for one are "disk I/O error" or
 * "unable to open database file"), else 0. */
int htq_refuse_directory(const char *path, const struct stat *sb, char *err, size_t errlen);

/* Runs one request. Never returns NULL unless out of memory. */
cJSON *htq_execute(sqlite3 *db, const cJSON *request);

cJSON *htq_ok(cJSON *result);
cJSON *htq_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- replay (replay.c): a session's stored events, in time order ---- */
typedef int (*htq_event_fn)(const ht_event_t *ev, void *user);

/* 1 when the block at ptr is live in the consumer's view of the events
 * replayed so far. */
typedef int (*htq_held_fn)(uint64_t ptr, void *user);

/* How far an allocation's time may run ahead of the free that gave its
 * address back, in another thread: the client reads the clock for an
 * allocation without waiting for the allocator's work to finish
 * (PROTOCOL.md, "Event times"), which a CPU may execute early by the
 * length of its instruction window - nanoseconds. Generous by far. */
#define HTQ_REORDER_NS 50000u

/* How long a realloc's thread may be held up between the allocator giving
 * the old address back and the clock read that times the realloc
 * (PROTOCOL.md, "Event times"): a preempted thread waits for a CPU for
 * milliseconds on a loaded machine, seconds almost never. An allocation
 * that finds its address held looks this far ahead for such a realloc. */
#define HTQ_MOVE_NS 1000000000u

/* Calls fn for every stored event of session, merged across streams by
 * time (a free before an allocation at the same instant). With held (may
 * be NULL), an allocation at an address that is still live waits, up to
 * HTQ_REORDER_NS of the other streams' time, for the free that gives it
 * back, which then comes first: a block is never allocated twice because
 * its free was timed a moment later than its next allocation. A realloc
 * that moves away from the address, next in its stream and timed up to
 * HTQ_MOVE_NS later, comes first instead. Returns 0, a nonzero value fn
 * returned, or -1 with err filled. */
int htq_replay(sqlite3 *db, int64_t session, htq_event_fn fn, htq_held_fn held, void *user,
               char *err, size_t errlen);

/* The address ev allocates (a realloc that moves: the new one), 0 if none. */
uint64_t htq_event_allocates(const ht_event_t *ev);
/* The address ev gives back (a realloc that moves: the old one), 0 if none. */
uint64_t htq_event_frees(const ht_event_t *ev);

/* ---- live blocks (livemap.c): address -> block, open addressing ---- */
typedef struct {
  uint64_t ptr;
  uint64_t size, usable;
  uint64_t time_ns, seq;
  uint32_t site, heap, caps, stream;
} htq_block_t;

typedef struct {
  htq_block_t *slots;
  size_t cap, count;
} htq_livemap_t;

void htq_livemap_init(htq_livemap_t *m);
void htq_livemap_free(htq_livemap_t *m);
/* Inserts or replaces; returns 1 if a block was replaced, 0 if new, -1 on
 * out of memory. */
int htq_livemap_put(htq_livemap_t *m, const htq_block_t *b);
/* Removes ptr into out; returns 1 if it was live, 0 if not. */
int htq_livemap_take(htq_livemap_t *m, uint64_t ptr, htq_block_t *out);
/* 1 if ptr is live, 0 if not. */
int htq_livemap_has(const htq_livemap_t *m, uint64_t ptr);
/* Iteration: i from 0 while < cap; slots with ptr != 0 are live. */

/* 1 when p was allocated before q: events are ordered by time, then
 * stream and sequence number, so that no two blocks tie. */
static inline int htq_block_older(const htq_block_t *p, const htq_block_t *q) {
  if (p->time_ns != q->time_ns)
    return p->time_ns < q->time_ns;
  return p->stream != q->stream ? p->stream < q->stream : p->seq < q->seq;
}

#endif
