/* churn.h - the allocate-and-free loop the drop-mode test programs run to
 * fill the socket of a daemon that reads nothing (newcomers.c,
 * drop_waits.c). */
#ifndef HT_TEST_CHURN_H
#define HT_TEST_CHURN_H

#include <stdlib.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

static inline double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Allocates and frees for ms milliseconds, 1000 pairs at a time; returns
 * the events made. */
static inline unsigned long long churn(double ms) {
  unsigned long long events = 0;
  for (double until = now_ms() + ms; now_ms() < until;) {
    for (int i = 0; i < 1000; i++) {
      void *p = ht_malloc((size_t)(16 + i));
      if (!p)
        abort();
      ht_free(p);
    }
    events += 2000;
  }
  return events;
}

#endif
