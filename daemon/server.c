/* server.c - heaptraced's event loop: listening socket, connections,
 * control requests, signals.
 *
 * Every accepted connection is checked with SO_PEERCRED (same uid or root)
 * before a byte is read. Its first frame decides what it is: HELLO makes it
 * an ingest session, CTL_REQUEST a control connection whose JSON request is
 * answered on the libuv thread pool (query.c) once the store has committed
 * everything received before it. The loop only reads and splits frames: an
 * ingest session's frames go, a batch per read, to the ingest worker
 * (worker.c), which decodes and packs them, at idle priority unless someone
 * waits. A malformed frame closes that one connection and marks its
 * session; nothing else is touched. A timer flushes partly filled chunks and applies backpressure:
 * when the worker or the writer falls behind, ingest connections stop being
 * read, so clients wait (lossless) instead of the daemon's memory growing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <uv.h>

#include "htd.h"
#include "ingest.h"
#include "left.h"
#include "peer.h"
#include "query.h"
#include "summary.h"
#include "wake.h"
#include "worker.h"

#define HTD_CONN_BUFFER (HT_PROTO_FRAME_PREFIX + HT_PROTO_MAX_FRAME + 64 * 1024)
#define HTD_TICK_MS 100
/* Batches' buffers outlive a program by this long (bufpool.h): the next
 * program run within it finds them there. */
#define HTD_KEEP_BUFFERS_MS 60000
/* Accounts clients leave beside the socket (left.h) are looked for at
 * start and this often after: one left as the daemon started (after its
 * look, before it listened), or while it could not be reached, is taken. */
#define HTD_LEFT_LOOK_MS 2000
/* How long a start waits for a predecessor killed with -9 to finish exiting. */
#define HTD_EXITING_WAIT_MS 10000
/* What the daemon holds for clients is bounded: frames the ingest worker
 * (at idle priority) has not decoded, plus jobs the writer has not
 * committed. Together they may reach the backlog limit (--max-backlog) -
 * room for the events of a burst that keeps every core busy, decoded and
 * stored once the cores are free - and the writer's part half of it (its
 * queue only costs memory); past either, clients wait (lossless) until the
 * two are below a quarter and an eighth of the limit. From half of the
 * limit on, the worker also runs at normal priority. */
#define HTD_BACKLOG_LOW(limit) ((limit) / 4)
#define HTD_STORE_HIGH(limit) ((limit) / 2)
#define HTD_STORE_LOW(limit) ((limit) / 8)
#define HTD_MAX_CONNS 4096

typedef enum { CONN_NEW, CONN_INGEST, CONN_CONTROL } conn_kind_t;

typedef struct conn {
  uv_pipe_t pipe;
  struct conn *prev, *next;
  conn_kind_t kind;
  uint8_t *buf;
  size_t len;
  int closing, reading;
  int pending; /* worker batches and store jobs whose results name it */
  int zombie;  /* closed while jobs were pending: freed by the last one */
  pid_t pid;
  htd_wsess_t *ws; /* ingest: the session, the worker's */
  int64_t session_id;
  int ledger; /* ingest: the session's ledger entry, or -1 */
  /* control */
  uv_work_t work;
  char *request;
  char *reply;
  size_t reply_len;
  uv_write_t wreq;
} conn_t;

typedef struct {
  const htd_options_t *opt;
  uv_loop_t *loop;
  uv_pipe_t listener;
  uv_poll_t signals; /* SIGTERM and SIGINT, read from a signalfd */
  int signal_fd;
  uv_timer_t tick;
  htd_wake_t store_wake, worker_wake;
  htd_store_t *store;
  htd_worker_t *worker;
  htd_ledger_t *ledger;
  conn_t *conns;
  size_t nconns;
  int64_t next_session;
  int paused, stopping;
  unsigned ticks;
  uint64_t started_ns, events, last_events;
  double events_per_s;
} server_t;

static server_t srv;

/* ======================================================================
 * Summaries: after a session ends, its events are replayed once, off the
 * loop, and the result stored, so that queries never rescan events.
 * session 0 means: every ended session that has none yet (at start-up).
 * They run one at a time on a thread of their own at a lower priority
 * (HTD_SUMMARY_NICE): work nobody waits for, which must not slow the
 * ingest of the sessions still coming in, nor the queries waiting for it.
 * ==================================================================== */

#define HTD_SUMMARY_NICE 10

typedef struct summary_job {
  struct summary_job *next;
  int64_t session;
} summary_job_t;

static struct {
  pthread_t thread;
  int started, ready, stop;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  summary_job_t *head, **tail;
} sums = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static int summarize(sqlite3 *db, int64_t session) {
  char err[512];
  htq_model_t m;
  uint64_t t0 = uv_hrtime();
  int rc = htq_model_init(&m, db, session, err, sizeof err);
  if (rc == 0)
    rc = htq_model_build(&m, db, session, err, sizeof err);
  if (rc == 0)
    rc = htq_summary_write(db, session, &m, err, sizeof err);
  if (rc == 0)
    htd_log(HTD_LOG_INFO, "session %lld: summary of %llu events stored in %.0f ms",
            (long long)session, (unsigned long long)m.events, (double)(uv_hrtime() - t0) / 1e6);
  else
    htd_log(HTD_LOG_WARN, "session %lld: no summary (%s); queries will read its events",
            (long long)session, err);
  htq_model_free(&m);
  return rc;
}

/* 1 when session has a summary of this model version. */
static int has_summary(sqlite3 *db, int64_t session) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "SELECT 1 FROM summaries WHERE session = ?1 AND version = ?2", -1, &s,
                         NULL) != SQLITE_OK)
    return 0;
  sqlite3_bind_int64(s, 1, session);
  sqlite3_bind_int(s, 2, HTQ_MODEL_VERSION);
  int has = sqlite3_step(s) == SQLITE_ROW;
  sqlite3_finalize(s);
  return has;
}

static void summary_work(int64_t session) {
  sqlite3 *db;
  if (sqlite3_open_v2(srv.opt->db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    htd_log(HTD_LOG_WARN, "summaries: cannot open %s: %s", srv.opt->db_path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return;
  }
  sqlite3_busy_timeout(db, 30000);
  if (session > 0) {
    if (!has_summary(db, session)) /* the start's look for any may have made it */
      summarize(db, session);
  } else {
    sqlite3_stmt *s;
    /* Sessions without a summary of this model version. */
    if (sqlite3_prepare_v2(db,
                           "SELECT id FROM sessions WHERE end_reason != 'running' AND id NOT IN "
                           "(SELECT session FROM summaries WHERE version = ?1) ORDER BY id",
                           -1, &s, NULL) == SQLITE_OK) {
      sqlite3_bind_int(s, 1, HTQ_MODEL_VERSION);
      int64_t ids[256];
      int n = 0;
      while (n < 256 && sqlite3_step(s) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(s, 0);
      sqlite3_finalize(s);
      for (int i = 0; i < n; i++)
        summarize(db, ids[i]);
    }
  }
  sqlite3_close(db);
}

/* The summary thread: jobs in order until told to stop; what is queued
 * then is summarised at the next start (or read by queries meanwhile). */
static void *summary_main(void *arg) {
  (void)arg;
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), HTD_SUMMARY_NICE);
  pthread_mutex_lock(&sums.lock);
  sums.ready = 1;
  pthread_cond_broadcast(&sums.cond);
  for (;;) {
    while (!sums.head && !sums.stop)
      pthread_cond_wait(&sums.cond, &sums.lock);
    if (sums.stop)
      break;
    summary_job_t *j = sums.head;
    sums.head = j->next;
    if (!sums.head)
      sums.tail = &sums.head;
    pthread_mutex_unlock(&sums.lock);
    summary_work(j->session);
    free(j);
    pthread_mutex_lock(&sums.lock);
  }
  pthread_mutex_unlock(&sums.lock);
  return NULL;
}

/* Starts the summary thread (signals blocked, as the caller has them)
 * and returns once it is named and at its priority, before the daemon
 * listens. Returns 0 or an errno. */
static int summaries_start(void) {
  sums.tail = &sums.head;
  int rc = pthread_create(&sums.thread, NULL, summary_main, NULL);
  if (rc != 0)
    return rc;
  sums.started = 1;
  pthread_setname_np(sums.thread, "htd-summary");
  pthread_mutex_lock(&sums.lock);
  while (!sums.ready)
    pthread_cond_wait(&sums.cond, &sums.lock);
  pthread_mutex_unlock(&sums.lock);
  return 0;
}

/* Stops it once its current summary is done; frees what was queued. */
static void summaries_stop(void) {
  if (!sums.started)
    return;
  pthread_mutex_lock(&sums.lock);
  sums.stop = 1;
  pthread_cond_signal(&sums.cond);
  pthread_mutex_unlock(&sums.lock);
  pthread_join(sums.thread, NULL);
  sums.started = 0;
  for (summary_job_t *j = sums.head, *next; j; j = next) {
    next = j->next;
    free(j);
  }
  sums.head = NULL;
  sums.tail = &sums.head;
}

static void summary_start(int64_t session) {
  if (srv.stopping || !sums.started)
    return; /* summarised on demand, or at the next start */
  summary_job_t *j = calloc(1, sizeof *j);
  if (!j)
    return;
  j->session = session;
  pthread_mutex_lock(&sums.lock);
  *sums.tail = j;
  sums.tail = &j->next;
  pthread_cond_signal(&sums.cond);
  pthread_mutex_unlock(&sums.lock);
}

static void summary_after_commit(void *arg, int status) {
  if (status != 0)
    return; /* the ledger keeps the entry: the next start counts what was not stored */
  htd_ledger_finish(srv.ledger, (int64_t)(intptr_t)arg);
  summary_start((int64_t)(intptr_t)arg);
}

/* Schedules the summary, and frees the session's ledger entry, once
 * everything queued so far (the session's end among it) is committed.
 * Called by the ingest worker (its `ended` hook) right after it queued a
 * session's end; thread-safe. */
static void summary_when_committed(int64_t session) {
  htd_job_t *j = htd_job_new(HTD_JOB_BARRIER, 0);
  if (!j)
    return;
  j->done = summary_after_commit;
  j->done_arg = (void *)(intptr_t)session;
  htd_store_submit(srv.store, j);
}

/* ======================================================================
 * Accounts clients left with no daemon to take them (left.h)
 * ==================================================================== */

/* An account's session once it is stored: its file goes, its summary is
 * made. */
typedef struct {
  int64_t session;
  char path[]; /* where the account was left (left.h) */
} account_t;

static void account_stored(void *arg, int status) {
  account_t *a = arg;
  if (status == 0) { /* else the next start takes it again (left.h) */
    htd_left_remove(a->path);
    summary_start(a->session);
  }
  free(a);
}

/* Queues, once everything queued so far is committed, account_stored. */
static void when_account_stored(int64_t session, const char *path) {
  size_t n = strlen(path) + 1;
  account_t *a = malloc(sizeof *a + n);
  htd_job_t *j = a ? htd_job_new(HTD_JOB_BARRIER, 0) : NULL;
  if (!j) { /* the file stays: the next start finds the session stored */
    free(a);
    return;
  }
  a->session = session;
  memcpy(a->path, path, n);
  j->done = account_stored;
  j->done_arg = a;
  htd_store_submit(srv.store, j);
}

/* An account a killed daemon was storing (its HELLO f, left at path):
 * 1 when the database has its session, whose file is then removed, or
 * cannot tell (the file stays for the next start); 0 when it is to be
 * taken. A HELLO that does not decode is left to take_account to refuse. */
/* An account's handshake: large (its argv table); the loop is
 * single-threaded. */
static ht_hello_t account_hello;

static int account_stored_already(const ht_frame_t *f, const char *path) {
  ht_hello_t *h = &account_hello;
  if (ht_proto_decode_hello(f->payload, f->payload_len, h) != 0)
    return 0;
  int stored = htd_store_has_session(srv.store, h->pid, (int64_t)h->start_realtime_ns);
  if (stored > 0) {
    htd_log(HTD_LOG_INFO, "%s: the account of pid %u is stored already; its file is removed", path,
            h->pid);
    htd_left_remove(path);
  } else if (stored < 0) {
    htd_log(HTD_LOG_WARN,
            "%s: the database cannot say whether the account of pid %u is stored; it is left "
            "for the next start",
            path, h->pid);
  }
  return stored != 0;
}

/* The account at p (len bytes, left at path) as the session of a
 * connection that said just that: HELLO, then PREVIOUS, LOST and END
 * records, queued to be stored in one transaction. again: one a killed
 * daemon was storing, taken unless its session is stored. */
static void take_account(const uint8_t *p, size_t len, const char *path, int again, void *arg) {
  (void)arg;
  char why[256] = "", detail[512];
  ht_frame_t f;
  int rc = ht_proto_frame(p, len, &f);
  if (rc == 0 && f.type != HT_REC_HELLO) {
    rc = HT_EORDER;
    snprintf(why, sizeof why, "it does not begin with HELLO");
  }
  if (rc == 0 && again && account_stored_already(&f, path))
    return;
  ht_hello_t *h = &account_hello;
  htd_session_t *s = rc == 0 ? htd_session_new(srv.store, srv.next_session + 1) : NULL;
  if (s) {
    htd_session_hold(s);
    if ((rc = htd_session_hello(s, &f, h, why, sizeof why)) != 0) {
      htd_session_free(s);
      s = NULL;
    }
  }
  if (!s) {
    htd_reject_detail(detail, sizeof detail, rc ? rc : HT_ENOMEM, why);
    htd_log(HTD_LOG_WARN, "%s: not a client's account: %s", path, detail);
    htd_left_remove(path);
    return;
  }
  srv.next_session++;
  int64_t id = htd_session_id(s);
  for (size_t off = f.total; rc == 0 && off < len; off += f.total) {
    rc = ht_proto_frame(p + off, len - off, &f);
    if (rc == HT_EAGAIN)
      rc = HT_ETRUNCATED; /* a file does not grow */
    if (rc == 0 && f.type != HT_REC_PREVIOUS && f.type != HT_REC_LOST && f.type != HT_REC_END) {
      rc = HT_EORDER;
      snprintf(why, sizeof why, "%s records do not belong in an account", ht_record_name(f.type));
    }
    if (rc == 0)
      rc = htd_session_frame(s, &f, why, sizeof why);
    if (rc == 1 && off + f.total < len) {
      rc = HT_EORDER; /* the session has ended: said, not marked */
      snprintf(why, sizeof why, "bytes after its END");
    }
  }
  if (rc < 0) {
    htd_reject_detail(detail, sizeof detail, rc, why);
    htd_log(HTD_LOG_WARN, "session %lld: the account left in %s is broken: %s", (long long)id, path,
            detail);
  }
  if (!htd_session_ended(s))
    htd_session_end(s, rc < 0 ? HT_END_PROTOCOL_ERROR : HT_END_DISCONNECTED,
                    rc < 0 ? detail : "its account ends before its END");
  htd_log(HTD_LOG_INFO,
          "session %lld: pid %u ended while no heaptraced was there; its account, left in %s, is "
          "taken",
          (long long)id, h->pid, path);
  htd_session_submit_held(s);
  when_account_stored(id, path);
  htd_session_free(s);
}

/* ======================================================================
 * Connections
 * ==================================================================== */

static void conn_free(conn_t *c) {
  if (c->ws)
    htd_worker_release(srv.worker, c->ws);
  free(c->buf);
  free(c->request);
  free(c->reply);
  free(c);
}

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv.conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  srv.nconns--;
  if (c->pending > 0)
    c->zombie = 1;
  else
    conn_free(c);
}

/* A batch or store job that named c is done. Returns 0 if c is gone (and
 * frees it when it was the last such job). */
static int conn_release(conn_t *c) {
  c->pending--;
  if (!c->zombie)
    return 1;
  if (c->pending == 0)
    conn_free(c);
  return 0;
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->pipe, conn_closed);
}

static void log_protocol_error(const conn_t *c, const char *detail) {
  htd_log(HTD_LOG_WARN, "session %lld (pid %d): protocol error: %s; connection closed",
          (long long)c->session_id, (int)c->pid, detail);
}

/* A frame was bad: log why, mark the session, close this connection. */
static void conn_reject(conn_t *c, int err, const char *why) {
  char detail[512];
  htd_reject_detail(detail, sizeof detail, err, why);
  if (c->ws) {
    /* Logged when the worker gets to it: a frame before may have broken
     * the protocol first, and then that one is the session's mark. */
    if (htd_worker_reject(srv.worker, c->ws, c, err, why) == 0) {
      c->pending++;
    } else {
      log_protocol_error(c, detail);
      htd_worker_end(srv.worker, c->ws, HT_END_PROTOCOL_ERROR, detail);
    }
  } else {
    htd_log(HTD_LOG_WARN, "connection from pid %d: protocol error: %s; connection closed",
            (int)c->pid, detail);
  }
  conn_close(c);
}

static void control_start(conn_t *c, const ht_frame_t *f);

/* The connection's first frame: a control request, or HELLO, which makes
 * it an ingest session handed to the worker. Returns 0 for a session, 1
 * for a control request now in flight, -1 when the connection was
 * rejected. */
static int first_frame(conn_t *c, const ht_frame_t *f) {
  char why[256];
  if (f->type == HT_REC_CTL_REQUEST) {
    c->kind = CONN_CONTROL;
    control_start(c, f);
    return 1;
  }
  htd_session_t *s = htd_session_new(srv.store, srv.next_session + 1);
  if (!s) {
    conn_reject(c, HT_ENOMEM, "out of memory");
    return -1;
  }
  static ht_hello_t h; /* large (its argv table); the loop is single-threaded */
  int rc = htd_session_hello(s, f, &h, why, sizeof why);
  if (rc != 0) {
    /* No session row exists yet: nothing to mark. */
    htd_session_free(s);
    conn_reject(c, rc, why);
    return -1;
  }
  srv.next_session++; /* ids are given to sessions that exist */
  c->session_id = htd_session_id(s);
  c->ws = htd_worker_adopt(srv.worker, s);
  if (!c->ws) {
    htd_session_end(s, HT_END_PROTOCOL_ERROR, "out of memory (HT_ENOMEM)");
    summary_when_committed(c->session_id);
    htd_session_free(s);
    conn_reject(c, HT_ENOMEM, "out of memory");
    return -1;
  }
  c->kind = CONN_INGEST;
  c->ledger = htd_ledger_begin(srv.ledger, c->session_id, &h);
  return 0;
}

/* Stops reading every ingest connection while the worker or the writer is
 * too far behind, and reads again once both have caught up. */
static void check_backlog(void);

/* Hands the complete frames buf[from, to) to the worker. Returns 0, or -1
 * when the connection was rejected. */
static int send_frames(conn_t *c, size_t from, size_t to) {
  if (to == from)
    return 0;
  if (htd_worker_frames(srv.worker, c->ws, c, c->buf + from, to - from) != 0) {
    conn_reject(c, HT_ENOMEM, "out of memory");
    return -1;
  }
  c->pending++;
  check_backlog();
  return 0;
}

/* A batch the worker processed, or a rejection it confirmed: a frame that
 * broke the protocol closes the connection (the worker has ended the
 * session). */
static void on_result(const htd_worker_result_t *r) {
  conn_t *c = r->conn;
  if (r->rc < 0) {
    char detail[512];
    htd_reject_detail(detail, sizeof detail, r->rc, r->why);
    log_protocol_error(c, detail);
    conn_close(c);
  }
  conn_release(c);
}

/* While clients wait, a connection not known yet is read HTD_NEW_READ
 * bytes at a time: enough for its first frame to say what it is (heapctl
 * is answered), and little for the backlog however many come. */
#define HTD_NEW_READ (8u * 1024u)

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)hint;
  buf->base = (char *)c->buf + c->len;
  buf->len = HTD_CONN_BUFFER - c->len;
  if (c->kind == CONN_NEW && srv.paused && buf->len > HTD_NEW_READ)
    buf->len = HTD_NEW_READ;
}

/* The session ended cleanly; a record that came after its END in the same
 * read is a protocol error of the client's, logged (the session keeps the
 * clean end it earned). */
static void report_after_end(conn_t *c, size_t off) {
  ht_frame_t f;
  if (ht_proto_frame(c->buf + off, c->len - off, &f) != 0 && c->len == off)
    return;
  const char *what = c->len - off >= HT_PROTO_FRAME_PREFIX + 1
                         ? ht_record_name(c->buf[off + HT_PROTO_FRAME_PREFIX])
                         : "partial";
  htd_log(HTD_LOG_WARN, "session %lld (pid %d): protocol error: %s record after END (%s); ignored",
          (long long)c->session_id, (int)c->pid, what, ht_err_name(HT_EORDER));
}

/* What frames handed to the worker say, for the ledger: events received,
 * and the events the client reports dropped or undelivered. */
typedef struct {
  uint64_t events, dropped, undelivered;
} said_t;

/* Adds what frame f says (the worker decodes it; a bad one says nothing). */
static void count_frame(const ht_frame_t *f, said_t *n) {
  ht_evreader_t r;
  ht_lost_rec_t lost;
  ht_end_rec_t end;
  switch (f->type) {
  case HT_REC_EVENTS:
    if (ht_proto_events_begin(&r, f->payload, f->payload_len) == 0)
      n->events += r.hdr.count;
    break;
  case HT_REC_LOST:
    if (ht_proto_decode_lost(f->payload, f->payload_len, &lost) == 0) {
      if (lost.why == HT_LOST_DROPPED)
        n->dropped += lost.count;
      else
        n->undelivered += lost.count;
    }
    break;
  case HT_REC_END:
    if (ht_proto_decode_end(f->payload, f->payload_len, &end) == 0)
      n->undelivered += end.undelivered;
    break;
  default:
    break;
  }
}

/* The worker has the frames n counted: into the session's ledger entry. */
static void count_handed(conn_t *c, said_t *n) {
  srv.events += n->events;
  htd_ledger_add(srv.ledger, c->ledger, n->events, n->dropped, n->undelivered);
  *n = (said_t){0};
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  (void)buf;
  if (nread < 0) {
    if (c->ws) {
      if (nread != UV_EOF)
        htd_log(HTD_LOG_WARN, "session %lld: read error: %s", (long long)c->session_id,
                uv_strerror((int)nread));
      htd_log(HTD_LOG_INFO, "session %lld: client disconnected without END",
              (long long)c->session_id);
      htd_worker_end(srv.worker, c->ws, HT_END_DISCONNECTED, NULL);
    }
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  /* The loop only splits frames; an ingest connection's go to the worker
   * in one batch per read. */
  size_t off = 0, from = 0;
  int had_end = 0;
  said_t said = {0};
  while (!had_end) {
    ht_frame_t f;
    int rc = ht_proto_frame(c->buf + off, c->len - off, &f);
    if (rc == HT_EAGAIN)
      break;
    if (rc != 0) {
      if (c->kind == CONN_INGEST) {
        if (send_frames(c, from, off) != 0)
          return;
        count_handed(c, &said);
      }
      conn_reject(c, rc, "frame length outside 1..HT_PROTO_MAX_FRAME");
      return;
    }
    off += f.total;
    if (c->kind == CONN_INGEST) {
      had_end = f.type == HT_REC_END;
      count_frame(&f, &said);
      continue;
    }
    if (first_frame(c, &f) != 0)
      return; /* rejected, or a control request now in flight */
    from = off;
  }
  if (send_frames(c, from, off) != 0)
    return;
  count_handed(c, &said);
  if (had_end) {
    /* Everything the client sent is the worker's now: closing tells the
     * client (which waits for EOF at exit) that a query made after it
     * exits comes after its whole session. */
    report_after_end(c, off);
    conn_close(c);
    return;
  }
  memmove(c->buf, c->buf + off, c->len - off);
  c->len -= off;
  if (c->kind == CONN_INGEST && srv.paused && c->reading) { /* came while clients wait */
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = 0;
  }
}

static int peer_allowed(conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
    return 0;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    htd_log(HTD_LOG_WARN, "refused a connection: SO_PEERCRED failed: %s", strerror(errno));
    return 0;
  }
  c->pid = cred.pid;
  if (cred.uid == getuid() || cred.uid == 0)
    return 1;
  htd_log(HTD_LOG_WARN, "refused a connection from pid %d: uid %u is not the daemon's uid %u",
          (int)cred.pid, (unsigned)cred.uid, (unsigned)getuid());
  return 0;
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) {
    htd_log(HTD_LOG_WARN, "accept failed: %s", uv_strerror(status));
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (!c || !(c->buf = malloc(HTD_CONN_BUFFER))) {
    free(c);
    htd_log(HTD_LOG_ERROR, "out of memory accepting a connection");
    return;
  }
  uv_pipe_init(srv.loop, &c->pipe, 0);
  c->pipe.data = c;
  c->ledger = -1;
  c->next = srv.conns;
  if (srv.conns)
    srv.conns->prev = c;
  srv.conns = c;
  srv.nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 || !peer_allowed(c) ||
      srv.nconns > HTD_MAX_CONNS) {
    if (srv.nconns > HTD_MAX_CONNS)
      htd_log(HTD_LOG_WARN, "refused a connection: %d connections already open", HTD_MAX_CONNS);
    conn_close(c);
    return;
  }
  /* Read even while clients wait: it may be heapctl, which is answered
   * (status at once); a client's reading stops after its first read. */
  c->reading = 1;
  uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

/* ======================================================================
 * Control requests
 * ==================================================================== */

/* Frames text (owned, freed here) as the connection's reply. */
static void set_reply(conn_t *c, char *text) {
  size_t n = text ? strlen(text) : 0;
  if (!text || n + 1 > HT_CTL_MAX_REPLY) {
    free(text);
    text = strdup("{\"ok\":false,\"code\":1,\"error\":\"reply too large or out of memory; "
                  "narrow the query\"}");
    if (!text)
      return;
    n = strlen(text);
  }
  c->reply = malloc(n + 5);
  if (c->reply) {
    uint32_t body = (uint32_t)(n + 1);
    for (int i = 0; i < 4; i++)
      c->reply[i] = (char)(body >> (8 * i));
    c->reply[4] = HT_REC_CTL_REPLY;
    memcpy(c->reply + 5, text, n);
    c->reply_len = n + 5;
  }
  free(text);
}

static void control_work(uv_work_t *w) {
  conn_t *c = w->data;
  cJSON *req = cJSON_Parse(c->request);
  cJSON *reply;
  if (!req) {
    reply = htq_error(HTQ_USAGE, "the request is not valid JSON");
  } else {
    sqlite3 *db = NULL;
    char err[512];
    if (htq_open(srv.opt->db_path, &db, err, sizeof err) != 0)
      reply = htq_error(HTQ_FAILED, "%s", err);
    else
      reply = htq_execute(db, req);
    sqlite3_close(db);
  }
  cJSON_Delete(req);
  char *text = reply ? cJSON_PrintUnformatted(reply) : NULL;
  cJSON_Delete(reply);
  set_reply(c, text);
}

static void control_written(uv_write_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  conn_close(c);
}

static void control_after(uv_work_t *w, int status) {
  conn_t *c = w->data;
  if (!conn_release(c))
    return;
  if (status != 0 || !c->reply || c->closing) {
    conn_close(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->reply, (unsigned)c->reply_len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, control_written) != 0)
    conn_close(c);
}

/* Daemon-only requests are answered on the loop; the rest go to a worker
 * once everything received before the request is committed. */
static void control_barrier_done(void *arg, int status) {
  conn_t *c = arg;
  (void)status;
  if (!conn_release(c))
    return;
  if (srv.stopping || c->closing) {
    conn_close(c);
    return;
  }
  c->work.data = c;
  c->pending++;
  if (uv_queue_work(srv.loop, &c->work, control_work, control_after) != 0) {
    c->pending--;
    conn_close(c);
  }
}

static cJSON *status_reply(void) {
  cJSON *r = cJSON_CreateObject();
  int64_t ingest = 0;
  for (conn_t *c = srv.conns; c; c = c->next)
    ingest += c->kind == CONN_INGEST && !c->closing;
  cJSON_AddNumberToObject(r, "pid", getpid());
  cJSON_AddNumberToObject(r, "uptime_s", (double)(uv_hrtime() - srv.started_ns) / 1e9);
  cJSON_AddNumberToObject(r, "sessions_connected", (double)ingest);
  cJSON_AddNumberToObject(r, "events_received", (double)srv.events);
  cJSON_AddNumberToObject(r, "events_per_s", srv.events_per_s);
  cJSON_AddNumberToObject(r, "queue_bytes",
                          (double)(htd_store_backlog(srv.store) + htd_worker_backlog(srv.worker)));
  cJSON_AddNumberToObject(r, "queue_limit_bytes", (double)srv.opt->max_backlog);
  cJSON_AddNumberToObject(r, "buffers_kept_bytes", (double)htd_worker_kept(srv.worker));
  cJSON_AddBoolToObject(r, "paused", srv.paused);
  struct stat sb;
  cJSON_AddNumberToObject(r, "db_bytes", stat(srv.opt->db_path, &sb) == 0 ? (double)sb.st_size : 0);
  cJSON_AddStringToObject(r, "db", srv.opt->db_path);
  cJSON_AddStringToObject(r, "socket", srv.opt->socket_path);
  return htq_ok(r);
}

static void control_start(conn_t *c, const ht_frame_t *f) {
  uv_read_stop((uv_stream_t *)&c->pipe);
  c->reading = 0;
  c->request = htd_strndup((const char *)f->payload, f->payload_len);
  if (!c->request) {
    conn_close(c);
    return;
  }
  cJSON *req = cJSON_Parse(c->request);
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
  int is_status = cJSON_IsString(cmd) && strcmp(cmd->valuestring, "status") == 0;
  cJSON_Delete(req);
  if (is_status) {
    cJSON *reply = status_reply();
    set_reply(c, cJSON_PrintUnformatted(reply));
    cJSON_Delete(reply);
    c->work.data = c;
    c->pending++;
    control_after(&c->work, 0);
    return;
  }
  htd_job_t *j = htd_job_new(HTD_JOB_BARRIER, 0);
  if (!j) {
    conn_close(c);
    return;
  }
  j->done = control_barrier_done;
  j->done_arg = c;
  j->f = HTD_BARRIER_QUERY;
  c->pending++;
  htd_worker_barrier(srv.worker, j); /* after every session's frames so far */
}

/* ======================================================================
 * Loop housekeeping
 * ==================================================================== */

static void set_reading(int on) {
  for (conn_t *c = srv.conns; c; c = c->next) {
    if (c->kind != CONN_INGEST || c->closing || c->reading == on)
      continue;
    if (on)
      uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    else
      uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = on;
  }
}

static void check_backlog(void) {
  size_t store = htd_store_backlog(srv.store), defer = htd_worker_backlog(srv.worker);
  size_t limit = srv.opt->max_backlog;
  if (!srv.paused && (store > HTD_STORE_HIGH(limit) || store + defer > limit)) {
    srv.paused = 1;
    htd_log(HTD_LOG_INFO,
            "behind by %zu MiB to decode and %zu MiB to write (limit %zu MiB): clients wait",
            defer >> 20, store >> 20, limit >> 20);
    set_reading(0);
  } else if (srv.paused && store < HTD_STORE_LOW(limit) && store + defer < HTD_BACKLOG_LOW(limit)) {
    srv.paused = 0;
    htd_log(HTD_LOG_INFO, "caught up: clients are read again");
    set_reading(1);
  }
}

static void on_tick(uv_timer_t *t) {
  (void)t;
  htd_worker_tick(srv.worker); /* flush partly filled chunks, report progress */
  srv.events_per_s = (double)(srv.events - srv.last_events) * 1000.0 / HTD_TICK_MS;
  srv.last_events = srv.events;
  check_backlog();
  if (++srv.ticks % (HTD_LEFT_LOOK_MS / HTD_TICK_MS) == 0 && !srv.stopping)
    htd_left_take(srv.opt->socket_path, 0, take_account, NULL);
}

static void on_store_wake(void *arg) {
  (void)arg;
  htd_store_dispatch(srv.store);
}

static void store_notify(void *arg) {
  (void)arg;
  htd_wake_send(&srv.store_wake);
}

static void on_worker_wake(void *arg) {
  (void)arg;
  htd_worker_dispatch(srv.worker, on_result);
}

static void worker_notify(void *arg) {
  (void)arg;
  htd_wake_send(&srv.worker_wake);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (h->type == UV_NAMED_PIPE && h->data)
    conn_close(h->data);
  else if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* A stopping daemon takes what an ingest client had sent: its side of the
 * socket is shut for reading first, so that the client's later writes
 * fail (the client counts those events as undelivered, and reports them
 * to its next session), and what was already in the socket - a client
 * waiting on a full one has a socket buffer's worth - is read to the end
 * and stored. Before, that was dropped with the connection, counted by
 * neither side. A frame cut short by the shutdown is not stored; the
 * client counts it as undelivered too. */
static void drain(conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 || shutdown(fd, SHUT_RD) != 0)
    return;
  while (!c->closing && c->len < HTD_CONN_BUFFER) {
    ssize_t n = read(fd, c->buf + c->len, HTD_CONN_BUFFER - c->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) /* all read (the session ends 'daemon-stopped'), or an error */
      return;
    on_read((uv_stream_t *)&c->pipe, n, NULL);
  }
}

/* SIGTERM/SIGINT: stop accepting, end every session (its chunks queued),
 * close every handle; htd_serve then commits and closes the store. */
static void stop(int signum) {
  if (srv.stopping)
    return;
  srv.stopping = 1;
  htd_log(HTD_LOG_INFO, "signal %d: stopping", signum);
  for (conn_t *c = srv.conns; c; c = c->next) {
    if (!c->ws || c->closing)
      continue;
    drain(c);
    if (c->closing) /* its END came in what was drained, or it broke the protocol */
      continue;
    /* Frames already received are processed before the session ends. */
    htd_worker_end(srv.worker, c->ws, HT_END_DAEMON_STOPPED, "heaptraced stopped");
  }
  uv_walk(srv.loop, close_any, NULL);
}

static void on_signal(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  struct signalfd_siginfo si;
  ssize_t n;
  while ((n = read(srv.signal_fd, &si, sizeof si)) < 0 && errno == EINTR) {
  }
  if (n == (ssize_t)sizeof si)
    stop((int)si.ssi_signo);
  else if (status < 0 || (n < 0 && errno != EAGAIN))
    stop(SIGTERM); /* cannot happen; stopping beats a daemon deaf to signals */
}

/* The stop signals stay blocked in every thread and are read from a
 * signalfd the loop polls: no handler runs, so none can be lost or run at
 * a bad moment. (libuv's handlers, run by the thread the signal lands on,
 * lost one now and then under TSan, which defers a handler to the
 * thread's next intercepted call.) One sent before this is pending, and
 * read at the loop's first turn. Returns 0 or a negative errno. */
static int catch_stop_signals(const sigset_t *stop_signals) {
  srv.signal_fd = signalfd(-1, stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (srv.signal_fd < 0)
    return -errno;
  int rc = uv_poll_init(srv.loop, &srv.signals, srv.signal_fd);
  if (rc == 0)
    rc = uv_poll_start(&srv.signals, UV_READABLE, on_signal);
  if (rc != 0) {
    close(srv.signal_fd);
    srv.signal_fd = -1;
  }
  return rc;
}

/* ======================================================================
 * Listening socket
 * ==================================================================== */

/* Whether something listens on path: 1 (its pid in *pid, 0 if unknown) or
 * 0 (errno tells why not). */
static int probe_socket(const char *path, int *pid) {
  *pid = 0;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  int err = errno;
  if (live)
    *pid = ht_peer_pid(fd);
  close(fd);
  errno = err;
  return live;
}

/* Refuses a live socket (another daemon) and anything that is not a
 * socket; removes a stale socket. */
static int claim_socket_path(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) == 0 && !S_ISSOCK(sb.st_mode)) {
    fprintf(stderr,
            "heaptraced: %s exists and is not a socket; remove it or choose another --socket\n",
            path);
    return -1;
  }
  int pid;
  int live = probe_socket(path, &pid);
  /* A daemon killed with -9 holds the socket (and the database's lock)
   * until its last thread has exited (proto/peer.h): wait for that. */
  if (live && ht_pid_exiting(pid)) {
    htd_log(HTD_LOG_INFO, "heaptraced %d on %s was killed and is still exiting; waiting for it",
            pid, path);
    for (int waited = 0; live && ht_pid_exiting(pid) && waited < HTD_EXITING_WAIT_MS;
         waited += 20) {
      uv_sleep(20);
      live = probe_socket(path, &pid);
    }
  }
  int err = errno;
  if (live) {
    if (ht_pid_exiting(pid))
      fprintf(stderr, "heaptraced: heaptraced %d on %s was killed but has not exited in %d s\n",
              pid, path, HTD_EXITING_WAIT_MS / 1000);
    else
      fprintf(stderr,
              "heaptraced: another heaptraced is already listening on %s; stop it first "
              "(or choose another --socket)\n",
              path);
    return -1;
  }
  if (err == ECONNREFUSED) {
    htd_log(HTD_LOG_INFO, "removing stale socket %s", path);
    unlink(path);
  }
  return 0;
}

/* The socket's directory must be ours and private: 0700. */
static int prepare_socket_dir(const char *path) {
  if (htd_mkdir_parent(path, 0700) != 0) {
    fprintf(stderr, "heaptraced: cannot create the directory of %s: %s\n", path, strerror(errno));
    return -1;
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return 0;
  *slash = '\0';
  struct stat sb;
  if (stat(dir, &sb) != 0 || sb.st_uid != getuid()) {
    fprintf(stderr, "heaptraced: %s is not owned by uid %u; refusing to put the socket there\n",
            dir, (unsigned)getuid());
    return -1;
  }
  if ((sb.st_mode & 077) && (sb.st_mode & S_ISVTX) == 0 && chmod(dir, 0700) != 0) {
    fprintf(stderr, "heaptraced: cannot make %s private (0700): %s\n", dir, strerror(errno));
    return -1;
  }
  return 0;
}

/* Checked before the database is touched: a second daemon must not mark
 * the first one's sessions as stopped. */
static int check_socket_path(const char *path) {
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "heaptraced: socket path %s is too long for a Unix socket\n", path);
    return -1;
  }
  return prepare_socket_dir(path) != 0 || claim_socket_path(path) != 0 ? -1 : 0;
}

static int listen_on(const char *path) {
  uv_pipe_init(srv.loop, &srv.listener, 0);
  srv.listener.data = NULL;
  mode_t old = umask(0177); /* the socket is created 0600 */
  int rc = uv_pipe_bind(&srv.listener, path);
  umask(old);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv.listener, 128, on_connection);
  if (rc != 0) {
    fprintf(stderr, "heaptraced: cannot listen on %s: %s\n", path, uv_strerror(rc));
    return -1;
  }
  chmod(path, 0600);
  return 0;
}

/* One daemon per database, whatever its socket: an exclusive lock on
 * DB.lock, held for the daemon's life (the kernel drops it if it dies).
 * Returns the lock's descriptor, or -1 after saying who holds it. */
static int lock_database(const char *db) {
  char path[PATH_MAX], holder[32] = "";
  snprintf(path, sizeof path, "%s.lock", db);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "heaptraced: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  int locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
  if (!locked) {
    ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
    holder[n > 0 ? n : 0] = '\0';
    holder[strcspn(holder, "\n")] = '\0';
  }
  /* A holder killed with -9 keeps the lock until its last thread has
   * exited (proto/peer.h): wait for that, as for its socket. */
  int holder_pid = atoi(holder);
  if (!locked && ht_pid_exiting(holder_pid)) {
    htd_log(HTD_LOG_INFO,
            "database %s is held by heaptraced %d, which was killed and is still exiting; "
            "waiting for it",
            db, holder_pid);
    for (int waited = 0; !locked && waited < HTD_EXITING_WAIT_MS; waited += 20) {
      uv_sleep(20);
      locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
    }
  }
  if (!locked) {
    fprintf(stderr,
            "heaptraced: database %s is in use by another heaptraced (pid %s); stop it first "
            "or choose another --db\n",
            db, holder[0] ? holder : "?");
    close(fd);
    return -1;
  }
  char pid[32];
  int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
    htd_log(HTD_LOG_WARN, "cannot write the pid into %s", path);
  return fd;
}

int htd_serve(const htd_options_t *opt, void (*detach)(const char *log_path)) {
  char msg[1024];
  memset(&srv, 0, sizeof srv);
  srv.opt = opt;
  srv.loop = uv_default_loop();
  srv.started_ns = uv_hrtime();
  signal(SIGPIPE, SIG_IGN);
  /* SIGTERM and SIGINT are blocked from here on, in this thread and in
   * every thread it starts (the worker's, the writer, the summaries',
   * libuv's pool): the loop reads them from a signalfd. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
  if (htd_mkdir_parent(opt->db_path, 0700) != 0) {
    fprintf(stderr, "heaptraced: cannot create the directory of %s: %s\n", opt->db_path,
            strerror(errno));
    return 1;
  }
  if (check_socket_path(opt->socket_path) != 0)
    return 1;
  mode_t um = umask(0077);
  int db_lock = lock_database(opt->db_path);
  umask(um);
  if (db_lock < 0)
    return 1;
  int rc = htd_wake_init(srv.loop, &srv.store_wake, on_store_wake, NULL);
  if (rc == 0 && (rc = htd_wake_init(srv.loop, &srv.worker_wake, on_worker_wake, NULL)) != 0) {
    uv_close((uv_handle_t *)&srv.store_wake.poll, NULL);
    htd_wake_free(&srv.store_wake);
  }
  if (rc != 0) {
    fprintf(stderr, "heaptraced: cannot create the loop's wake-up eventfd: %s\n", uv_strerror(rc));
    close(db_lock);
    return 1;
  }
  mode_t old = umask(0077); /* database, WAL, ledger and log: owner only */
  char ledger_path[PATH_MAX];
  snprintf(ledger_path, sizeof ledger_path, "%s.ledger", opt->db_path);
  srv.ledger = htd_ledger_open(ledger_path, msg, sizeof msg);
  if (!srv.ledger)
    htd_log(HTD_LOG_WARN,
            "%s; going on without it: a kill -9 of this daemon would leave the events it had "
            "received and not stored uncounted",
            msg);
  size_t nleft = 0;
  const htd_ledger_entry_t *left = htd_ledger_left(srv.ledger, &nleft);
  srv.store = htd_store_open(opt->db_path, left, nleft, store_notify, NULL, msg, sizeof msg);
  umask(old);
  if (!srv.store) {
    fprintf(stderr, "heaptraced: %s\n", msg);
    htd_ledger_close(srv.ledger);
    close(db_lock);
    return 1;
  }
  htd_ledger_settle(srv.ledger);
  srv.next_session = htd_store_last_session(srv.store);
  htd_worker_hooks_t hooks = {worker_notify, NULL, summary_when_committed, opt->max_backlog / 2,
                              HTD_KEEP_BUFFERS_MS / HTD_TICK_MS};
  srv.worker = htd_worker_start(srv.store, &hooks, msg, sizeof msg);
  if (!srv.worker) {
    fprintf(stderr, "heaptraced: %s\n", msg);
    htd_store_close(srv.store);
    htd_ledger_close(srv.ledger);
    return 1;
  }
  /* The signals are caught before anyone can connect: whoever sees the
   * socket accept may stop the daemon at once. */
  int sig_rc = catch_stop_signals(&stop_signals);
  if (sig_rc != 0)
    fprintf(stderr, "heaptraced: cannot watch for SIGTERM and SIGINT (signalfd): %s\n",
            strerror(-sig_rc));
  int src = summaries_start(); /* with the stop signals blocked */
  if (src != 0)
    htd_log(HTD_LOG_WARN, "no summary thread (%s): queries will read the events", strerror(src));
  htd_left_take(opt->socket_path, 1, take_account, NULL); /* numbered before new connections */
  if (sig_rc != 0 || listen_on(opt->socket_path) != 0) {
    summaries_stop();
    htd_worker_stop(srv.worker, on_result);
    htd_store_close(srv.store);
    htd_worker_free(srv.worker);
    htd_ledger_close(srv.ledger);
    return 1;
  }
  uv_timer_init(srv.loop, &srv.tick);
  uv_timer_start(&srv.tick, on_tick, HTD_TICK_MS, HTD_TICK_MS);
  htd_log(HTD_LOG_INFO, "listening on %s, storing into %s", opt->socket_path, opt->db_path);
  if (opt->ready_fd >= 0) {
    char ok = 1;
    ssize_t w = write(opt->ready_fd, &ok, 1);
    (void)w;
    close(opt->ready_fd);
  }
  if (detach)
    detach(opt->log_path);
  summary_start(0);                 /* sessions a previous daemon ended without one */
  uv_run(srv.loop, UV_RUN_DEFAULT); /* a stop signal sent meanwhile is read at once */
  unlink(opt->socket_path);
  summaries_stop();
  /* What the worker still holds is decoded and queued before the store
   * commits its last and closes; the store's last done-callbacks free the
   * connections that waited for them, and their sessions. */
  htd_worker_stop(srv.worker, on_result);
  size_t lost = htd_store_close(srv.store);
  htd_worker_free(srv.worker);
  htd_ledger_close(srv.ledger); /* after the store's last done-callbacks freed its entries */
  close(db_lock);
  uv_loop_close(srv.loop);
  close(srv.signal_fd);           /* the signals stay blocked: a second one waits for the exit */
  htd_wake_free(&srv.store_wake); /* the threads that sent are gone */
  htd_wake_free(&srv.worker_wake);
  if (lost) {
    htd_log(HTD_LOG_ERROR, "stopped; %zu writes could not be stored (see above)", lost);
    return 1;
  }
  htd_log(HTD_LOG_INFO, "stopped; every received event is committed");
  return 0;
}
