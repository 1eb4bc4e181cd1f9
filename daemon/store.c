/* store.c - the SQLite store and its writer thread.
 *
 * The event loop never touches the database for writing: it queues jobs
 * (htd_store_submit) and goes on reading sockets. The writer thread takes
 * everything queued, runs it in one transaction, commits, and hands the
 * jobs back to the loop (through notify + htd_store_dispatch) so that
 * done-callbacks run on the loop thread. WAL mode lets queries read while
 * the writer writes; synchronous=NORMAL keeps every committed transaction
 * intact across a kill -9 of the daemon.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "pack.h"
#include "htd.h"
#include "ledger.h"
#include "query.h"
#include "htd_schema_v1.h"
#include "htd_schema_v2.h"
#include "htd_schema_v3.h"
#include "htd_schema_v4.h"

#define HTD_COMMIT_INTERVAL_MS 50
#define HTD_RETRY_MS 1000    /* a failing write (disk full) is tried again this often */
#define HTD_DEFERRED_MAX 256 /* PREVIOUS records waiting for their session's end */

/* The statements that count what a lost connection left unread (run_unread). */
typedef enum {
  UNREAD_FIND_STMT,
  UNREAD_COUNT_STMT,
  UNREAD_HERE_STMT,
  TOTAL_STMT,
  UNREAD_STMTS
} unread_stmt_t;

/* Events of session ?1's earlier connection, never read, counted in ?1
 * because that connection's session is nowhere (run_unread). */
#define LOST_HERE "(SELECT COALESCE(SUM(count), 0) FROM lost WHERE session = ?1 AND why = 'unread')"

/* One statement per job kind, in htd_job_kind_t order. Parameters: ?1 the
 * session, ?2..?7 the job's integers a..f, ?8..?10 its strings, ?11 its
 * blob. What each integer means per kind is spelled out by the SQL. */
static const char *const job_sql[] = {
    [HTD_JOB_SESSION_BEGIN] =
        "INSERT INTO sessions(id, pid, ppid, flags, start_ns, start_mono_ns, app, exe, argv)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?8, ?9, ?10)",
    /* lost: the worker's count, and what the store counted here of a
     * connection before this one that was never read (run_unread). */
    [HTD_JOB_SESSION_END] =
        "UPDATE sessions SET events = ?2, lost = ?3 + " LOST_HERE ","
        " end_ns = ?4, end_reason = ?8, end_detail = NULLIF(?9, '') WHERE id = ?1",
    [HTD_JOB_SITE] = "INSERT OR IGNORE INTO sites(session, id, line, file, func, type)"
                     " VALUES(?1, ?2, ?3, ?8, ?9, ?10)",
    [HTD_JOB_HEAP] = "INSERT OR IGNORE INTO heaps(session, id, caps0, caps1, caps2, start,"
                     " size, name) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [HTD_JOB_CHUNK] = "INSERT OR REPLACE INTO event_chunks(session, stream, first_seq, count,"
                      " t0, t1, codec, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?11)",
    [HTD_JOB_LOST] = "INSERT INTO lost(session, stream, first_seq, count, why)"
                     " VALUES(?1, ?2, ?3, ?4, ?8)",
    [HTD_JOB_BARRIER] = NULL,
    [HTD_JOB_PROGRESS] = "UPDATE sessions SET events = ?2, lost = ?3 + " LOST_HERE " WHERE id = ?1",
    [HTD_JOB_UNREAD] = NULL, /* run_unread */
};
#define HTD_JOB_KINDS (sizeof job_sql / sizeof *job_sql)

struct htd_store {
  sqlite3 *db;
  char path[4096];
  sqlite3_stmt *stmt[HTD_JOB_KINDS];
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  htd_job_t *queue, **queue_tail; /* submitted, not yet taken */
  htd_job_t *done, **done_tail;   /* committed, callbacks not yet run */
  size_t backlog;
  int stopping;
  void (*notify)(void *);
  void *notify_arg;
  htd_squeezer_t *squeezer; /* writer thread only */
  size_t failed;            /* writes given up (at a stop, while failing) */
  /* PREVIOUS records whose session was still running here: counted once
   * its end is committed (run_unread). Writer thread only. */
  sqlite3_stmt *unread[UNREAD_STMTS]; /* by unread_stmt_t */
  struct {
    int64_t session;
    int64_t written; /* events, and with `reports` the events reported lost */
    int reports;
    int ran; /* counted in the batch being committed */
  } deferred[HTD_DEFERRED_MAX];
  size_t ndeferred;
};

/* Copies what a client sent into a C string that is well-formed UTF-8:
 * bytes that are not become U+FFFD, so that every JSON reply is valid. */
char *htd_strndup(const char *s, size_t n) {
  char *d = malloc(3 * n + 1);
  if (!d)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t len = ht_utf8_char((const uint8_t *)s + i, n - i);
    if (len == 0) {
      memcpy(d + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else {
      memcpy(d + o, s + i, len);
      o += len;
      i += len;
    }
  }
  d[o] = '\0';
  return d;
}

htd_job_t *htd_job_new(htd_job_kind_t kind, int64_t session) {
  htd_job_t *j = calloc(1, sizeof *j);
  if (!j)
    return NULL;
  j->kind = kind;
  j->session = session;
  return j;
}

static void job_free(htd_job_t *j) {
  for (size_t i = 0; i < sizeof j->text / sizeof *j->text; i++)
    free(j->text[i]);
  free(j->blob);
  free(j);
}

/* What a queued job holds in memory, strings included: the backlog that
 * pauses clients counts all of it (a flood of sites is memory too). */
static size_t job_bytes(const htd_job_t *j) {
  size_t n = sizeof *j + j->blob_len;
  for (size_t i = 0; i < sizeof j->text / sizeof *j->text; i++)
    n += j->text[i] ? strlen(j->text[i]) + 1 : 0;
  return n;
}

/* ======================================================================
 * Schema
 * ==================================================================== */

static int exec(sqlite3 *db, const char *sql, char *msg, size_t msglen) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK)
    return 0;
  snprintf(msg, msglen, "%s", err ? err : sqlite3_errmsg(db));
  sqlite3_free(err);
  return -1;
}

/* Migrations from version i to i + 1, applied in order inside one
 * transaction; each sets PRAGMA user_version itself. Version 0 is an empty
 * database, so a new database takes every step. */
static const char *const migrations[] = {
    htd_schema_v1, /* 0 -> 1: sessions, sites, heaps, event chunks */
    htd_schema_v2, /* 1 -> 2: session summaries */
    htd_schema_v3, /* 2 -> 3: packed event chunks */
    htd_schema_v4, /* 3 -> 4: leaks summarised by group */
};
#define HTD_SCHEMA_VERSION ((int)(sizeof migrations / sizeof *migrations))

static int user_version(sqlite3 *db) {
  sqlite3_stmt *st;
  int v = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
    return -1;
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* ======================================================================
 * What a killed daemon had received and not stored (ledger.h)
 * ==================================================================== */

/* The recovery's statements (recover); ?1 the session. */

/* A session whose start was never committed: named from the entry. */
#define RECOVER_NAME                                                                               \
  "INSERT OR IGNORE INTO sessions(id, pid, ppid, flags, start_ns, start_mono_ns, app, exe,"        \
  " argv, end_reason, end_detail) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '[]',"                    \
  " 'daemon-stopped', 'heaptraced stopped before it stored the start of the session')"

/* Each count the entry holds, less what the database holds of it (and what
 * an earlier recovery of the same entry counted), is lost: ?2 the entry's
 * count, ?3 its kind in the lost table. Received events are there as
 * chunks; the client's reports as lost rows. */
#define RECOVER_LOST                                                                               \
  "INSERT INTO lost(session, stream, first_seq, count, why)"                                       \
  " SELECT ?1, 0, 0, n, ?3 FROM (SELECT ?2"                                                        \
  " - (SELECT COALESCE(SUM(count), 0) FROM lost WHERE session = ?1 AND why = ?3)"                  \
  " - CASE ?3 WHEN 'unstored' THEN"                                                                \
  " (SELECT COALESCE(SUM(count), 0) FROM event_chunks WHERE session = ?1) ELSE 0 END AS n)"        \
  " WHERE n > 0"

#define RECOVER_TOTAL                                                                              \
  "UPDATE sessions SET lost = (SELECT COALESCE(SUM(count), 0) FROM lost WHERE session = ?1)"       \
  " WHERE id = ?1"

/* Steps a statement that returns no row, and resets it: 0 or an SQLite code. */
static int step_done(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? 0 : rc;
}

/* Counts as lost, in each session a killed daemon left in the ledger, what
 * it had received and not committed. In the caller's transaction; running
 * it again on the same entries adds nothing. */
static int recover(sqlite3 *db, const htd_ledger_entry_t *left, size_t nleft, char *msg,
                   size_t msglen) {
  enum { NAME, LOST, TOTAL, N };
  static const char *const sql[N] = {
      [NAME] = RECOVER_NAME, [LOST] = RECOVER_LOST, [TOTAL] = RECOVER_TOTAL};
  sqlite3_stmt *s[N] = {0};
  int rc = 0;
  for (size_t k = 0; k < N && rc == 0; k++)
    if (sqlite3_prepare_v2(db, sql[k], -1, &s[k], NULL) != SQLITE_OK)
      rc = -1;
  for (size_t i = 0; i < nleft && rc == 0; i++) {
    const htd_ledger_entry_t *e = &left[i];
    int64_t changes = sqlite3_total_changes64(db);
    sqlite3_bind_int64(s[NAME], 1, e->session);
    sqlite3_bind_int64(s[NAME], 2, e->pid);
    sqlite3_bind_int64(s[NAME], 3, e->ppid);
    sqlite3_bind_int64(s[NAME], 4, e->flags);
    sqlite3_bind_int64(s[NAME], 5, e->start_ns);
    sqlite3_bind_int64(s[NAME], 6, e->start_mono_ns);
    sqlite3_bind_text(s[NAME], 7, e->app, -1, SQLITE_STATIC);
    sqlite3_bind_text(s[NAME], 8, e->exe, -1, SQLITE_STATIC);
    rc = step_done(s[NAME]);
    int named = sqlite3_total_changes64(db) != changes;
    changes = sqlite3_total_changes64(db);
    const struct {
      uint64_t count;
      const char *why;
    } counts[] = {
        {e->events, "unstored"}, {e->dropped, "dropped"}, {e->undelivered, "undelivered"}};
    for (size_t k = 0; k < sizeof counts / sizeof *counts && rc == 0; k++) {
      sqlite3_bind_int64(s[LOST], 1, e->session);
      sqlite3_bind_int64(s[LOST], 2,
                         counts[k].count > INT64_MAX ? INT64_MAX : (int64_t)counts[k].count);
      sqlite3_bind_text(s[LOST], 3, counts[k].why, -1, SQLITE_STATIC);
      rc = step_done(s[LOST]);
    }
    if (rc == 0 && sqlite3_total_changes64(db) != changes)
      htd_log(HTD_LOG_WARN,
              "session %lld (pid %u): heaptraced stopped before it stored all it had received; "
              "what it did not store is counted as lost%s",
              (long long)e->session, e->pid,
              named ? " (the session is named from the ledger)" : "");
    sqlite3_bind_int64(s[TOTAL], 1, e->session);
    if (rc == 0)
      rc = step_done(s[TOTAL]);
  }
  if (rc != 0)
    snprintf(msg, msglen, "cannot account for the ledger's sessions: %s", sqlite3_errmsg(db));
  for (size_t k = 0; k < N; k++)
    sqlite3_finalize(s[k]);
  return rc;
}

static int migrate(sqlite3 *db, const htd_ledger_entry_t *left, size_t nleft, char *msg,
                   size_t msglen) {
  if (exec(db, "BEGIN IMMEDIATE", msg, msglen) != 0)
    return -1;
  int v = user_version(db);
  if (v < 0) {
    snprintf(msg, msglen, "cannot read the schema version: %s", sqlite3_errmsg(db));
    goto fail;
  }
  if (v > HTD_SCHEMA_VERSION) {
    snprintf(msg, msglen,
             "database schema version %d is newer than this heaptraced understands (%d); "
             "use a newer heaptrace or another --db",
             v, HTD_SCHEMA_VERSION);
    goto fail;
  }
  if (v > 0 && v < HTD_SCHEMA_VERSION)
    htd_log(HTD_LOG_INFO, "migrating the database from schema version %d to %d", v,
            HTD_SCHEMA_VERSION);
  for (; v < HTD_SCHEMA_VERSION; v++)
    if (exec(db, migrations[v], msg, msglen) != 0)
      goto fail;
  /* Sessions left running by a daemon that died cannot go on. */
  if (exec(db,
           "UPDATE sessions SET end_reason = 'daemon-stopped',"
           " end_detail = 'heaptraced stopped without ending the session',"
           " events = (SELECT COALESCE(SUM(count), 0) FROM event_chunks WHERE session = "
           "sessions.id),"
           " lost = (SELECT COALESCE(SUM(count), 0) FROM lost WHERE session = sessions.id)"
           " WHERE end_reason = 'running'",
           msg, msglen) != 0)
    goto fail;
  if (recover(db, left, nleft, msg, msglen) != 0)
    goto fail;
  return exec(db, "COMMIT", msg, msglen);
fail:
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* ======================================================================
 * Events a client wrote on a connection it lost and the daemon never read
 * (PREVIOUS records, PROTOCOL.md)
 * ==================================================================== */

/* The lost connection's session: ?1 the pid, ?2 its HELLO's start, ?3 the
 * session that reports it (the lost one came before). */
#define UNREAD_FIND                                                                                \
  "SELECT id, end_reason = 'running' FROM sessions WHERE pid = ?1 AND start_ns = ?2 AND id < ?3"   \
  " ORDER BY id DESC LIMIT 1"

/* What of ?2 events written to session ?1 - with ?3, counting the events
 * its LOST records reported - was left unread: neither stored (events as
 * chunks, reports as their lost rows) nor counted by the ledger's recovery
 * (nor by this, already). */
#define UNREAD_COUNT                                                                               \
  "INSERT INTO lost(session, stream, first_seq, count, why)"                                       \
  " SELECT ?1, 0, 0, n, 'unread' FROM (SELECT ?2"                                                  \
  " - (SELECT COALESCE(SUM(count), 0) FROM event_chunks WHERE session = ?1)"                       \
  " - (SELECT COALESCE(SUM(count), 0) FROM lost WHERE session = ?1"                                \
  " AND (why = 'unstored' OR (why = 'unread' AND first_seq = 0)"                                   \
  " OR (?3 AND why IN ('dropped', 'undelivered')))) AS n) WHERE n > 0"

/* ?2 events of a connection nobody read, lost in session ?1 of pid ?4;
 * its first_seq is that connection's start ?3 (never 0: a session's own
 * unread events have 0, which UNREAD_COUNT tells apart). Once: a client
 * sends the account again when the connection it wrote it on is lost. */
#define UNREAD_HERE                                                                                \
  "INSERT INTO lost(session, stream, first_seq, count, why) SELECT ?1, 0, MAX(?3, 1), ?2,"         \
  " 'unread' WHERE ?2 > 0 AND NOT EXISTS (SELECT 1 FROM lost JOIN sessions"                        \
  " ON sessions.id = lost.session WHERE sessions.pid = ?4 AND lost.stream = 0"                     \
  " AND lost.why = 'unread' AND lost.first_seq = MAX(?3, 1))"

/* Runs statement k, which may add a lost row to session; if it did, says
 * so (what) and sets the session's lost to the sum of its rows. */
static int add_lost(htd_store_t *st, unread_stmt_t k, int64_t session, const char *what) {
  int rc = step_done(st->unread[k]);
  if (rc != 0 || sqlite3_changes(st->db) == 0)
    return rc;
  htd_log(HTD_LOG_WARN, "session %lld: %s", (long long)session, what);
  sqlite3_bind_int64(st->unread[TOTAL_STMT], 1, session);
  return step_done(st->unread[TOTAL_STMT]);
}

/* Counts as lost what of `written` (events, and with `reports` those its
 * LOST records reported) written to ended session `session` was never
 * read. */
static int count_unread(htd_store_t *st, int64_t session, int64_t written, int reports) {
  sqlite3_bind_int64(st->unread[UNREAD_COUNT_STMT], 1, session);
  sqlite3_bind_int64(st->unread[UNREAD_COUNT_STMT], 2, written);
  sqlite3_bind_int(st->unread[UNREAD_COUNT_STMT], 3, reports);
  return add_lost(st, UNREAD_COUNT_STMT, session,
                  "events its client wrote were never read (the connection was lost); counted "
                  "as lost");
}

/* The events of a connection whose session is nowhere - a daemon died
 * before it read even its handshake - are lost in the session that
 * reports them (its lost adds them: LOST_HERE), with the events its LOST
 * records reported lost. */
static int count_unread_here(htd_store_t *st, int64_t session, int64_t pid, int64_t events,
                             int64_t reported, int64_t start) {
  sqlite3_stmt *here = st->unread[UNREAD_HERE_STMT];
  sqlite3_bind_int64(here, 1, session);
  sqlite3_bind_int64(here, 2, events + reported);
  sqlite3_bind_int64(here, 3, start);
  sqlite3_bind_int64(here, 4, pid);
  char what[200], more[80] = "";
  if (reported)
    snprintf(more, sizeof more, " (and %lld more its client reported lost on it)",
             (long long)reported);
  snprintf(what, sizeof what,
           "the connection it continues was never read, not even its start; its %lld events%s are "
           "counted as lost here",
           (long long)events, more);
  return add_lost(st, UNREAD_HERE_STMT, session, what);
}

/* A PREVIOUS record: a: the reporting session's pid, b: the lost
 * connection's start, c: the events written on it, d: the events its LOST
 * records reported, e: 1 when d is sent (version 4). Its session, if
 * still running here, is counted once its end is committed (its last
 * events are queued before its end). */
static int run_unread(htd_store_t *st, const htd_job_t *j) {
  sqlite3_stmt *find = st->unread[UNREAD_FIND_STMT];
  sqlite3_bind_int64(find, 1, j->a);
  sqlite3_bind_int64(find, 2, j->b);
  sqlite3_bind_int64(find, 3, j->session);
  int rc = sqlite3_step(find);
  int64_t session = rc == SQLITE_ROW ? sqlite3_column_int64(find, 0) : 0;
  int running = rc == SQLITE_ROW && sqlite3_column_int(find, 1);
  sqlite3_reset(find);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return rc;
  if (!session) /* never read, not even its handshake: counted here */
    return count_unread_here(st, j->session, j->a, j->c, j->d, j->b);
  int64_t written = j->c + j->d; /* each at most HTD_MAX_LOST */
  int reports = j->e != 0;
  if (!running)
    return count_unread(st, session, written, reports);
  for (size_t i = 0; i < st->ndeferred; i++)
    if (st->deferred[i].session == session && st->deferred[i].written == written &&
        st->deferred[i].reports == reports)
      return 0; /* deferred already, by an attempt at this batch that failed */
  if (st->ndeferred == HTD_DEFERRED_MAX) {
    htd_log(HTD_LOG_WARN,
            "session %lld: too many reconnections waiting; its unread events are "
            "not counted",
            (long long)session);
    return 0;
  }
  st->deferred[st->ndeferred].session = session;
  st->deferred[st->ndeferred].written = written;
  st->deferred[st->ndeferred].reports = reports;
  st->deferred[st->ndeferred].ran = 0;
  st->ndeferred++;
  return 0;
}

/* Session `session` has ended: its deferred PREVIOUS records are counted. */
static int run_deferred(htd_store_t *st, int64_t session) {
  for (size_t i = 0; i < st->ndeferred; i++) {
    if (st->deferred[i].session != session)
      continue;
    int rc = count_unread(st, session, st->deferred[i].written, st->deferred[i].reports);
    if (rc != 0)
      return rc;
    st->deferred[i].ran = 1;
  }
  return 0;
}

/* After a batch: the deferred records it counted go if it committed, stay
 * to be counted again if it was rolled back. */
static void deferred_done(htd_store_t *st, int committed) {
  size_t n = 0;
  for (size_t i = 0; i < st->ndeferred; i++) {
    if (committed && st->deferred[i].ran)
      continue;
    st->deferred[i].ran = 0;
    st->deferred[n++] = st->deferred[i];
  }
  st->ndeferred = n;
}

/* ======================================================================
 * Writer
 * ==================================================================== */

static int run_job(htd_store_t *st, const htd_job_t *j) {
  if (j->kind == HTD_JOB_UNREAD)
    return run_unread(st, j);
  sqlite3_stmt *s = st->stmt[j->kind];
  if (!s)
    return 0;
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  sqlite3_bind_int64(s, 1, j->session);
  const int64_t ints[] = {j->a, j->b, j->c, j->d, j->e, j->f};
  int nparams = sqlite3_bind_parameter_count(s);
  for (int i = 0; i < 6 && i + 2 <= nparams; i++)
    sqlite3_bind_int64(s, i + 2, ints[i]);
  for (int i = 0; i < 3 && i + 8 <= nparams; i++)
    sqlite3_bind_text(s, i + 8, j->text[i] ? j->text[i] : "", -1, SQLITE_STATIC);
  if (nparams >= 11)
    sqlite3_bind_blob(s, 11, j->blob, (int)j->blob_len, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE && j->kind == HTD_JOB_SESSION_END)
    return run_deferred(st, j->session);
  return rc == SQLITE_DONE ? 0 : rc;
}

/* Chunks come packed (ingest.c) and are compressed here, on the writer
 * thread, off the event loop; one that would not shrink is kept as it is. */
static void squeeze_chunk(htd_store_t *st, htd_job_t *j) {
  j->f = HTD_CODEC_PACKED;
  if (!st->squeezer && !(st->squeezer = htd_squeezer_new()))
    return;
  size_t n = htd_squeeze(st->squeezer, j->blob, j->blob_len);
  if (n == 0)
    return;
  j->raw_len = j->blob_len;
  j->blob_len = n;
}

/* One attempt at storing the batch in one transaction. Returns 0, or -1
 * with the transaction rolled back and the error logged when it is new. */
static int try_commit(htd_store_t *st, htd_job_t *batch, int quiet) {
  const char *what = "begin a transaction on";
  if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  what = "write to";
  for (htd_job_t *j = batch; j; j = j->next)
    if (run_job(st, j) != 0)
      goto fail;
  what = "commit to";
  if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  return 0;
fail:
  if (!quiet)
    htd_log(HTD_LOG_ERROR, "store: cannot %s %s: %s; retrying every %d ms while clients wait", what,
            st->path, sqlite3_errmsg(st->db), HTD_RETRY_MS);
  sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* Barriers that only order a query after earlier writes (HTD_BARRIER_QUERY)
 * are let go when those writes fail: the query answers from what is
 * committed instead of waiting for the disk. Returns the rest of batch. */
static htd_job_t *release_early(htd_store_t *st, htd_job_t *batch) {
  htd_job_t *keep = NULL, **keep_tail = &keep, *go = NULL, **go_tail = &go;
  for (htd_job_t *j = batch, *next; j; j = next) {
    next = j->next;
    j->next = NULL;
    int early = j->kind == HTD_JOB_BARRIER && j->f == HTD_BARRIER_QUERY;
    *(early ? go_tail : keep_tail) = j;
    if (early)
      go_tail = &j->next;
    else
      keep_tail = &j->next;
  }
  if (go) {
    pthread_mutex_lock(&st->lock);
    *st->done_tail = go;
    st->done_tail = go_tail;
    pthread_mutex_unlock(&st->lock);
    st->notify(st->notify_arg);
  }
  return keep;
}

/* Stores a batch, retrying while it fails (a full disk, say): nothing the
 * daemon acknowledges is lost, and the backlog this builds pauses the
 * clients. Only a daemon that is stopping gives a failing batch up. */
static void commit_batch(htd_store_t *st, htd_job_t *batch) {
  for (htd_job_t *j = batch; j; j = j->next)
    if (j->kind == HTD_JOB_CHUNK)
      squeeze_chunk(st, j);
  int status = 0;
  for (int attempt = 0;; attempt++) {
    status = try_commit(st, batch, attempt > 0);
    deferred_done(st, status == 0);
    if (status != 0 && attempt == 0)
      batch = release_early(st, batch);
    if (status == 0) {
      if (attempt > 0)
        htd_log(HTD_LOG_INFO, "store: writing to %s again after %d retries", st->path, attempt);
      break;
    }
    /* Queries that came since wait behind the failing batch: let them go. */
    pthread_mutex_lock(&st->lock);
    htd_job_t *queued = st->queue;
    st->queue = NULL;
    st->queue_tail = &st->queue;
    pthread_mutex_unlock(&st->lock);
    queued = release_early(st, queued);
    pthread_mutex_lock(&st->lock);
    if (queued) { /* back at the head, in order */
      htd_job_t *last = queued;
      while (last->next)
        last = last->next;
      last->next = st->queue;
      if (!st->queue)
        st->queue_tail = &last->next;
      st->queue = queued;
    }
    int stopping = st->stopping;
    if (!stopping) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += HTD_RETRY_MS * 1000000L;
      ts.tv_sec += ts.tv_nsec / 1000000000L;
      ts.tv_nsec %= 1000000000L;
      pthread_cond_timedwait(&st->cond, &st->lock, &ts);
    }
    pthread_mutex_unlock(&st->lock);
    if (stopping) {
      size_t n = 0;
      for (htd_job_t *j = batch; j; j = j->next)
        n++;
      htd_log(HTD_LOG_ERROR, "store: stopping with %zu writes not stored in %s: %s", n, st->path,
              sqlite3_errmsg(st->db));
      st->failed += n;
      break;
    }
  }
  size_t bytes = 0;
  htd_job_t *last = NULL;
  for (htd_job_t *j = batch; j; j = j->next) {
    bytes += job_bytes(j) + (j->raw_len ? j->raw_len - j->blob_len : 0);
    free(j->blob); /* the loop only needs the callback */
    j->blob = NULL;
    j->blob_len = 0;
    j->a = status;
    last = j;
  }
  pthread_mutex_lock(&st->lock);
  st->backlog -= bytes;
  if (last) {
    *st->done_tail = batch;
    st->done_tail = &last->next;
  }
  pthread_mutex_unlock(&st->lock);
  if (last)
    st->notify(st->notify_arg);
}

static void *writer_main(void *arg) {
  htd_store_t *st = arg;
  pthread_mutex_lock(&st->lock);
  for (;;) {
    while (!st->queue && !st->stopping) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += HTD_COMMIT_INTERVAL_MS * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&st->cond, &st->lock, &ts);
    }
    if (!st->queue && st->stopping)
      break;
    htd_job_t *batch = st->queue;
    st->queue = NULL;
    st->queue_tail = &st->queue;
    pthread_mutex_unlock(&st->lock);
    commit_batch(st, batch);
    pthread_mutex_lock(&st->lock);
  }
  pthread_mutex_unlock(&st->lock);
  return NULL;
}

/* ======================================================================
 * Public
 * ==================================================================== */

htd_store_t *htd_store_open(const char *path, const htd_ledger_entry_t *left, size_t nleft,
                            void (*notify)(void *), void *notify_arg, char *msg, size_t msglen) {
  htd_store_t *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  snprintf(st->path, sizeof st->path, "%s", path);
  st->queue_tail = &st->queue;
  st->done_tail = &st->done;
  st->notify = notify;
  st->notify_arg = notify_arg;
  struct stat sb;
  if (stat(path, &sb) == 0 && htq_refuse_directory(path, &sb, msg, msglen) != 0)
    goto fail;
  if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
      SQLITE_OK) {
    snprintf(msg, msglen, "cannot open database %s: %s", path, sqlite3_errmsg(st->db));
    goto fail;
  }
  sqlite3_busy_timeout(st->db, 5000);
  char err[512];
  if (exec(st->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", err, sizeof err) !=
      0) {
    snprintf(msg, msglen, "database %s is not usable: %s", path, err);
    goto fail;
  }
  if (migrate(st->db, left, nleft, err, sizeof err) != 0) {
    snprintf(msg, msglen, "database %s: %s", path, err);
    goto fail;
  }
  for (size_t k = 0; k < HTD_JOB_KINDS; k++) {
    if (job_sql[k] && sqlite3_prepare_v3(st->db, job_sql[k], -1, SQLITE_PREPARE_PERSISTENT,
                                         &st->stmt[k], NULL) != SQLITE_OK) {
      snprintf(msg, msglen, "database %s: %s", path, sqlite3_errmsg(st->db));
      goto fail;
    }
  }
  static const char *const unread_sql[UNREAD_STMTS] = {
      [UNREAD_FIND_STMT] = UNREAD_FIND,
      [UNREAD_COUNT_STMT] = UNREAD_COUNT,
      [UNREAD_HERE_STMT] = UNREAD_HERE,
      [TOTAL_STMT] = RECOVER_TOTAL,
  };
  for (size_t k = 0; k < UNREAD_STMTS; k++) {
    if (sqlite3_prepare_v3(st->db, unread_sql[k], -1, SQLITE_PREPARE_PERSISTENT, &st->unread[k],
                           NULL) != SQLITE_OK) {
      snprintf(msg, msglen, "database %s: %s", path, sqlite3_errmsg(st->db));
      goto fail;
    }
  }
  pthread_mutex_init(&st->lock, NULL);
  pthread_cond_init(&st->cond, NULL);
  int rc = pthread_create(&st->thread, NULL, writer_main, st);
  if (rc != 0) {
    snprintf(msg, msglen, "cannot start the writer thread: %s", strerror(rc));
    goto fail;
  }
  /* Named here, not by the thread: named before anyone can look. */
  pthread_setname_np(st->thread, "htd-writer"); /* what top -H and bench/ingest see */
  return st;
fail:
  for (size_t k = 0; k < HTD_JOB_KINDS; k++)
    sqlite3_finalize(st->stmt[k]);
  for (size_t k = 0; k < UNREAD_STMTS; k++)
    sqlite3_finalize(st->unread[k]);
  sqlite3_close(st->db);
  free(st);
  return NULL;
}

void htd_store_submit_all(htd_store_t *st, htd_job_t *list) {
  if (!list)
    return;
  size_t bytes = 0;
  htd_job_t *last = list;
  for (htd_job_t *j = list; j; j = j->next) {
    bytes += job_bytes(j);
    last = j;
  }
  /* Under one lock: the writer takes the queue whole, so the list goes
   * into one transaction. */
  pthread_mutex_lock(&st->lock);
  *st->queue_tail = list;
  st->queue_tail = &last->next;
  st->backlog += bytes;
  pthread_cond_signal(&st->cond);
  pthread_mutex_unlock(&st->lock);
}

void htd_store_submit(htd_store_t *st, htd_job_t *job) {
  job->next = NULL;
  htd_store_submit_all(st, job);
}

void htd_job_free_all(htd_job_t *list) {
  while (list) {
    htd_job_t *next = list->next;
    job_free(list);
    list = next;
  }
}

int htd_store_has_session(htd_store_t *st, uint32_t pid, int64_t start_ns) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM sessions WHERE pid = ?1 AND start_ns = ?2", -1, &s,
                         NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(s, 1, pid);
  sqlite3_bind_int64(s, 2, start_ns);
  int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

void htd_store_dispatch(htd_store_t *st) {
  pthread_mutex_lock(&st->lock);
  htd_job_t *list = st->done;
  st->done = NULL;
  st->done_tail = &st->done;
  pthread_mutex_unlock(&st->lock);
  while (list) {
    htd_job_t *next = list->next;
    if (list->done)
      list->done(list->done_arg, (int)list->a);
    job_free(list);
    list = next;
  }
}

size_t htd_store_backlog(htd_store_t *st) {
  pthread_mutex_lock(&st->lock);
  size_t b = st->backlog;
  pthread_mutex_unlock(&st->lock);
  return b;
}

int64_t htd_store_last_session(htd_store_t *st) {
  sqlite3_stmt *s;
  int64_t id = 0;
  if (sqlite3_prepare_v2(st->db, "SELECT COALESCE(MAX(id), 0) FROM sessions", -1, &s, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW)
      id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
  }
  return id;
}

const char *htd_store_path(const htd_store_t *st) {
  return st->path;
}

size_t htd_store_close(htd_store_t *st) {
  if (!st)
    return 0;
  pthread_mutex_lock(&st->lock);
  st->stopping = 1;
  pthread_cond_signal(&st->cond);
  pthread_mutex_unlock(&st->lock);
  pthread_join(st->thread, NULL);
  htd_store_dispatch(st);
  for (size_t k = 0; k < HTD_JOB_KINDS; k++)
    sqlite3_finalize(st->stmt[k]);
  for (size_t k = 0; k < UNREAD_STMTS; k++)
    sqlite3_finalize(st->unread[k]);
  sqlite3_close(st->db);
  pthread_mutex_destroy(&st->lock);
  pthread_cond_destroy(&st->cond);
  htd_squeezer_free(st->squeezer);
  size_t failed = st->failed;
  free(st);
  return failed;
}
