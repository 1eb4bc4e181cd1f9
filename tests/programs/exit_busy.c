/* exit_busy.c - a traced program whose main returns while its other
 * threads are still allocating (tests/test_e2e_transport.c).
 *
 *   exit_busy THREADS MS
 *
 * Starts THREADS threads that malloc and free in a loop and returns from
 * main after MS milliseconds. After each pair a thread reads whether
 * tracing is still on (behind a full fence): if it is, the pair was
 * recorded before heaptrace's exit handler turned tracing off, and so must
 * reach the daemon or be counted as undelivered. A handler registered
 * before the first traced call runs after heaptrace's own (atexit runs
 * them in reverse order): it stops the threads and prints
 *   recorded_at_least=N
 * the events made while tracing was seen on, main's included.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

#define MAX_THREADS 16

static pthread_t threads[MAX_THREADS];
static unsigned long long seen[MAX_THREADS];
static int nthreads, started;
static unsigned long long main_events;

static void *churn(void *arg) {
  unsigned long long *mine = arg;
  for (;;) {
    void *p = ht_malloc(64);
    ht_free(p);
    atomic_thread_fence(memory_order_seq_cst);
    if (!ht_tracing_enabled())
      return NULL;
    *mine += 2;
  }
}

static void report(void) {
  unsigned long long sum = main_events;
  for (int i = 0; i < started; i++) {
    pthread_join(threads[i], NULL);
    sum += seen[i];
  }
  printf("recorded_at_least=%llu\n", sum);
  fflush(stdout);
}

int main(int argc, char **argv) {
  nthreads = argc == 3 ? atoi(argv[1]) : 0;
  long ms = argc == 3 ? atol(argv[2]) : -1;
  if (nthreads < 1 || nthreads > MAX_THREADS || ms < 0) {
    fprintf(stderr, "usage: exit_busy THREADS(1..%d) MS\n", MAX_THREADS);
    return 2;
  }
  atexit(report); /* before heaptrace's handler: it runs after it */
  ht_free(ht_malloc(1));
  if (!ht_tracing_enabled()) {
    fprintf(stderr, "exit_busy: not traced\n");
    return 1;
  }
  main_events = 2;
  for (; started < nthreads; started++)
    if (pthread_create(&threads[started], NULL, churn, &seen[started]) != 0) {
      fprintf(stderr, "exit_busy: pthread_create failed\n");
      return 1;
    }
  nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
  return 0;
}
