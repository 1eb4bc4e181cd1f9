/* worker.h - the ingest worker: decodes and packs what clients send,
 * mostly at idle priority, so that the daemon's heavy work is done on
 * cores the traced programs leave idle.
 *
 * The event loop reads the sockets, splits the bytes into frames and hands
 * each connection's complete frames over in batches; from the handshake on,
 * the session (ingest.c) belongs to the worker. Messages are processed in
 * the order they were sent, so a session's frames, its end, a tick's flush
 * and a query's barrier reach the store in the order the loop saw them.
 * What someone waits for - a query's barrier - is processed at normal
 * priority, with everything queued before it, and so is a backlog past its
 * soft limit. Each batch comes back to the loop as a result (htd_worker_dispatch): whether
 * it broke the protocol. While the worker is behind, batches wait in
 * memory; the loop stops reading clients when htd_worker_backlog() passes
 * its limit, so clients wait (lossless) instead of the daemon's memory
 * growing.
 */
#ifndef HTD_WORKER_H
#define HTD_WORKER_H

#include "htd.h"
#include "ingest.h"

typedef struct htd_worker htd_worker_t;

/* A session handed to the worker; only the worker touches it after. */
typedef struct htd_wsess htd_wsess_t;

typedef struct {
  /* Called from the worker thread when results are ready: wake the loop
   * (htd_wake_send), nothing more. */
  void (*notify)(void *arg);
  void *notify_arg;
  /* Called from the worker thread right after a session's end was queued
   * to the store (END frame, protocol error or htd_worker_end). */
  void (*ended)(int64_t session);
  /* Past this many bytes of frames waiting, the normal-priority thread
   * works too: a long burst is not left for the end. Up to as many bytes
   * of batches' buffers are kept for the next batches (bufpool.h)... */
  size_t soft_limit;
  /* ...until this many ticks (htd_worker_tick) have passed with no batch. */
  unsigned keep_ticks;
} htd_worker_hooks_t;

/* What came of one batch, on the loop thread. rc is 0; 1 when the batch
 * ended the session with its END frame; or an HT_E* code, why filled, when
 * a frame broke the protocol (the session is already ended as a protocol
 * error, and later batches are ignored). */
typedef struct {
  void *conn;
  int rc;
  const char *why;
} htd_worker_result_t;

/* Starts the threads. Returns NULL with msg filled. */
htd_worker_t *htd_worker_start(htd_store_t *st, const htd_worker_hooks_t *hooks, char *msg,
                               size_t msglen);

/* Hands session s (after its HELLO) to the worker. Returns NULL when out
 * of memory (s is then still the caller's). */
htd_wsess_t *htd_worker_adopt(htd_worker_t *w, htd_session_t *s);

/* Queues a copy of len bytes of complete frames of ws's connection conn.
 * Returns 0 or HT_ENOMEM. */
int htd_worker_frames(htd_worker_t *w, htd_wsess_t *ws, void *conn, const uint8_t *bytes,
                      size_t len);

/* The loop found that conn's next frame breaks the protocol (err, why).
 * Unless a frame queued before broke it first, the worker ends the session
 * as a protocol error and returns this as the connection's result, to log.
 * Returns 0 or HT_ENOMEM. */
int htd_worker_reject(htd_worker_t *w, htd_wsess_t *ws, void *conn, int err, const char *why);

/* Ends ws's session (if it has not ended) for reason, after what was queued
 * before. */
void htd_worker_end(htd_worker_t *w, htd_wsess_t *ws, ht_end_t reason, const char *detail);

/* Flushes every session's partly filled chunks and queues its progress.
 * A tick while another is still queued is dropped. */
void htd_worker_tick(htd_worker_t *w);

/* Flushes every session, then submits job to the store: a barrier after
 * everything the loop received before it. */
void htd_worker_barrier(htd_worker_t *w, htd_job_t *job);

/* Frees ws's session after everything queued before. */
void htd_worker_release(htd_worker_t *w, htd_wsess_t *ws);

/* Calls fn for each batch processed since the last call; loop thread. */
void htd_worker_dispatch(htd_worker_t *w, void (*fn)(const htd_worker_result_t *r));

/* Bytes of frames queued and not yet processed. */
size_t htd_worker_backlog(htd_worker_t *w);

/* Bytes of memory for batches kept for the next ones (bufpool.h). Loop
 * thread. */
size_t htd_worker_kept(const htd_worker_t *w);

/* Processes everything queued and stops the thread; results not yet
 * dispatched go to fn. Later calls run at once on the caller's thread
 * (the store's last done-callbacks release sessions). */
void htd_worker_stop(htd_worker_t *w, void (*fn)(const htd_worker_result_t *r));

/* Frees every session still held, and w. */
void htd_worker_free(htd_worker_t *w);

/* "why (HT_ENAME)": how a protocol error is logged and stored. */
void htd_reject_detail(char *out, size_t cap, int err, const char *why);

#endif
