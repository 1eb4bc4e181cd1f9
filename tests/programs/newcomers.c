/* newcomers.c - new threads and new call sites while the daemon reads
 * nothing, for the drop-mode tests of tests/test_e2e_transport.c.
 *
 *   newcomers CHURN_MS THREADS
 *
 * The main thread allocates and frees for CHURN_MS milliseconds: run in
 * drop mode against a stopped daemon, that fills the socket, and the
 * flusher waits on it. Then THREADS threads are started one after the
 * other; each allocates at call sites of its own (new to the connection,
 * so each needs a SITE record) and exits. A drop-mode thread must not wait
 * for the stuck flusher, neither for its stream nor for its sites. It
 * prints the longest time one such thread took, from its creation to its
 * join, and every event it made:
 *   newcomer_max_ms=M events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <heaptrace/heaptrace.h>

#include "churn.h"

#define NEWCOMER_EVENTS 4

static void *newcomer(void *arg) {
  (void)arg;
  char *a = ht_malloc(40);
  char *b = ht_calloc(3, 16);
  if (!a || !b)
    abort();
  ht_free(a);
  ht_free(b);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: newcomers CHURN_MS THREADS\n");
    return 2;
  }
  double churn_ms = atof(argv[1]);
  long threads = atol(argv[2]);
  unsigned long long events = churn(churn_ms);
  double worst = 0;
  for (long i = 0; i < threads; i++) {
    double t0 = now_ms();
    pthread_t t;
    if (pthread_create(&t, NULL, newcomer, NULL) != 0)
      abort();
    pthread_join(t, NULL);
    double took = now_ms() - t0;
    worst = took > worst ? took : worst;
    events += NEWCOMER_EVENTS;
  }
  printf("newcomer_max_ms=%.0f events=%llu\n", worst, events);
  return 0;
}
