/* wake.c - waking the event loop from another thread (wake.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* uv.h's pthread types under -std=c11 */
#endif
#include "wake.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* The counter is read before fn runs: a send after the read wakes the loop
 * again, so a result queued while fn runs is never left unseen. */
static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  htd_wake_t *w = p->data;
  eventfd_t n;
  if (status == 0)
    (void)eventfd_read(w->fd, &n); /* EAGAIN: a spurious wake-up */
  w->fn(w->arg);
}

int htd_wake_init(uv_loop_t *loop, htd_wake_t *w, void (*fn)(void *arg), void *arg) {
  w->fn = fn;
  w->arg = arg;
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0)
    return -errno;
  int rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc == 0) {
    w->poll.data = w;
    rc = uv_poll_start(&w->poll, UV_READABLE, on_poll);
    if (rc != 0)
      uv_close((uv_handle_t *)&w->poll, NULL);
  }
  if (rc != 0) {
    close(w->fd);
    w->fd = -1;
  }
  return rc;
}

void htd_wake_send(htd_wake_t *w) {
  /* Fails only when the counter would overflow: the loop is awake then. */
  (void)eventfd_write(w->fd, 1);
}

void htd_wake_free(htd_wake_t *w) {
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
}
