/* htd.h - what the files of heaptraced share.
 *
 * Data flow: server.c accepts connections on the Unix socket (libuv) and
 * checks the peer; a connection whose first frame is HELLO becomes an
 * ingest session (ingest.c), one whose first frame is a control request
 * is answered by the query service (query.c, on the libuv thread pool).
 * The loop hands a session's frames to the ingest worker (worker.c), a
 * thread at idle priority, which decodes the events, packs them into
 * self-contained chunks (ingest.c, pack.c) and hands jobs to the store's
 * writer thread (store.c), which batches them into SQLite transactions.
 */
#ifndef HTD_H
#define HTD_H

#include <stddef.h>
#include <stdint.h>

#include "ht_proto.h"
#include "ledger.h"

/* ---- logging (log.c) ---- */
typedef enum { HTD_LOG_ERROR, HTD_LOG_WARN, HTD_LOG_INFO, HTD_LOG_DEBUG } htd_level_t;

extern htd_level_t htd_log_level;
int htd_log_parse_level(const char *s, htd_level_t *out);
void htd_log(htd_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- paths (paths.c) ---- */
/* Default socket and database paths; 0 or -1 with msg filled. */
int htd_default_socket(char *out, size_t cap);
int htd_default_db(char *out, size_t cap);
/* Creates the parent directory of path (and its parents) with mode.
 * Returns 0 or -1 with errno set. */
int htd_mkdir_parent(const char *path, unsigned mode);

/* ---- store (store.c) ---- */
typedef struct htd_store htd_store_t;

typedef enum {
  HTD_JOB_SESSION_BEGIN,
  HTD_JOB_SESSION_END,
  HTD_JOB_SITE,
  HTD_JOB_HEAP,
  HTD_JOB_CHUNK,
  HTD_JOB_LOST,
  HTD_JOB_BARRIER,
  HTD_JOB_PROGRESS,
  HTD_JOB_UNREAD,
} htd_job_kind_t;

/* A BARRIER job's f: it orders a query after earlier writes, and may be
 * let go if those writes fail (the query then reads what is committed). */
#define HTD_BARRIER_QUERY 1

typedef struct htd_job {
  struct htd_job *next;
  htd_job_kind_t kind;
  int64_t session;
  int64_t a, b, c, d, e, f; /* kind-specific integers, see store.c */
  char *text[4];            /* kind-specific strings, owned by the job */
  uint8_t *blob;            /* CHUNK: encoded events, owned by the job */
  size_t blob_len;
  size_t raw_len; /* CHUNK: size before compression, 0 if stored raw */
  /* Called on the loop thread after the job's transaction committed. */
  void (*done)(void *arg, int status);
  void *done_arg;
} htd_job_t;

/* Opens (creating or migrating) the database and starts the writer thread.
 * The nleft ledger entries a killed daemon left (ledger.h) are accounted
 * for first: what of each session was received and never committed is
 * counted as lost. notify is called from the writer thread when
 * done-callbacks are ready; it must only wake the loop (htd_wake_send).
 * Returns NULL with msg filled. */
htd_store_t *htd_store_open(const char *path, const htd_ledger_entry_t *left, size_t nleft,
                            void (*notify)(void *), void *notify_arg, char *msg, size_t msglen);
/* Queues a job; the store takes ownership. */
void htd_store_submit(htd_store_t *st, htd_job_t *job);
/* Queues a list of jobs (linked by next) at once: they are committed in
 * one transaction, all of them or none. The store takes ownership. */
void htd_store_submit_all(htd_store_t *st, htd_job_t *list);
/* 1 when a session of pid whose handshake said start_ns (its
 * start_realtime_ns) is in the database, 0 when none is, -1 when the
 * database cannot tell. On the caller's thread. */
int htd_store_has_session(htd_store_t *st, uint32_t pid, int64_t start_ns);
/* Runs the done-callbacks of committed jobs; call on the loop thread. */
void htd_store_dispatch(htd_store_t *st);
/* Bytes of job data queued and not yet committed. */
size_t htd_store_backlog(htd_store_t *st);
/* Highest session id in the database, for numbering new sessions. */
int64_t htd_store_last_session(htd_store_t *st);
/* Commits everything queued, stops the writer and closes the database.
 * Returns how many writes were given up because they kept failing (a full
 * disk when the daemon was told to stop), 0 when everything is stored. */
size_t htd_store_close(htd_store_t *st);
const char *htd_store_path(const htd_store_t *st);

htd_job_t *htd_job_new(htd_job_kind_t kind, int64_t session);
/* Frees a list of jobs never queued. */
void htd_job_free_all(htd_job_t *list);
char *htd_strndup(const char *s, size_t n);

/* ---- server (server.c) ---- */
typedef struct {
  const char *socket_path;
  const char *db_path;
  const char *log_path; /* background only: where detach moves the log */
  int ready_fd;         /* gets one byte once the socket accepts, or -1 */
  size_t max_backlog;   /* bytes held for clients before they wait (--max-backlog) */
} htd_options_t;

/* --max-backlog, in MiB: the default and the range accepted. */
#define HTD_BACKLOG_DEFAULT_MIB 128u
#define HTD_BACKLOG_MIN_MIB 8u
#define HTD_BACKLOG_MAX_MIB 65536u

/* Runs the daemon until SIGTERM/SIGINT. Once the socket accepts
 * connections it signals ready_fd and, when detach is given, calls it with
 * log_path (backgrounding). Returns a process exit status. */
int htd_serve(const htd_options_t *opt, void (*detach)(const char *log_path));

#endif /* HTD_H */
