/* wake.h - waking the event loop from another thread.
 *
 * The daemon's threads (the ingest worker, the store's writer) tell the
 * loop that results are ready. uv_async_send would do, but it marks its
 * handle busy for the length of its write(2), and a loop that finds the
 * handle busy spins until the sender is done. A sender at SCHED_IDLE that
 * the loop's own wake-up preempts is not done until the loop gives the CPU
 * back: on a busy machine the loop spun for most of its time slice per
 * wake-up (12 % of the daemon's CPU in bench/ingest). Here the sender's
 * part is one write to an eventfd the loop polls; nobody waits for anybody.
 */
#ifndef HTD_WAKE_H
#define HTD_WAKE_H

#include <uv.h>

typedef struct {
  uv_poll_t poll;
  int fd;
  void (*fn)(void *arg); /* on the loop thread, after each wake-up */
  void *arg;
} htd_wake_t;

/* Opens the eventfd and starts polling it on loop. Returns 0, or a
 * negative errno / libuv error with nothing left open. */
int htd_wake_init(uv_loop_t *loop, htd_wake_t *w, void (*fn)(void *arg), void *arg);

/* Any thread: fn runs on the loop thread after this call (wake-ups that
 * come close together may be served by one call of fn). Harmless once the
 * loop has stopped polling, as long as htd_wake_free has not run. */
void htd_wake_send(htd_wake_t *w);

/* Closes the eventfd; the poll handle must already be closed (the loop's
 * final walk closes it) and no thread may send any more. */
void htd_wake_free(htd_wake_t *w);

#endif /* HTD_WAKE_H */
