/* ingest.h - one client connection's session: frames in, store jobs out. */
#ifndef HTD_INGEST_H
#define HTD_INGEST_H

#include "htd.h"

typedef struct htd_session htd_session_t;

/* Creates the session of a connection whose first frame is HELLO. */
htd_session_t *htd_session_new(htd_store_t *st, int64_t id);

/* Feeds the first frame, which must be HELLO, decoding it into *h (large:
 * its argv table; it points into f); queues the session row. Returns 0 or
 * an HT_E* code with why filled. */
int htd_session_hello(htd_session_t *s, const ht_frame_t *f, ht_hello_t *h, char *why,
                      size_t whylen);

/* Feeds one frame. Returns 0; 1 when the frame was END (the session is
 * over and its end job queued); or an HT_E* code with why filled, after
 * which the caller closes the connection and calls htd_session_end. */
int htd_session_frame(htd_session_t *s, const ht_frame_t *f, char *why, size_t whylen);

/* Ends a session that did not send END (disconnect, protocol error,
 * daemon stopping): flushes its chunks and queues the end job. */
void htd_session_end(htd_session_t *s, ht_end_t reason, const char *detail);

/* Queues the session's partly filled chunks so that they are committed. */
void htd_session_flush(htd_session_t *s);

/* Queues the counts of a running session for its row, when they moved
 * since the last call, so that 'heapctl sessions' shows them live. */
void htd_session_progress(htd_session_t *s);

int64_t htd_session_id(const htd_session_t *s);
/* 1 once the session's end is queued (END, htd_session_end). */
int htd_session_ended(const htd_session_t *s);
uint64_t htd_session_events(const htd_session_t *s);
/* From now on the session's jobs are held, not queued, until
 * htd_session_submit_held queues them all at once: the store commits
 * them in one transaction (an account, left.h: stored whole, or not at
 * all). What is still held when the session is freed is dropped. */
void htd_session_hold(htd_session_t *s);
void htd_session_submit_held(htd_session_t *s);
void htd_session_free(htd_session_t *s);

#endif
