/* cancel_client.c - threads cancelled (pthread_cancel) while they record
 * events at ever new call sites, for the transport's end-to-end tests.
 *
 *   cancel_client THREADS
 *
 * Each thread allocates and frees at a new call site (ht__malloc with a
 * line number of its own) in a loop, with pthread_testcancel() between
 * rounds, until main cancels them 100 ms in; main joins them, does 100
 * more pairs and exits 0. A new site is a SITE record the thread writes
 * itself, with the transport's lock held: cancelled in that write, the
 * thread would leave the lock held and the program would hang. Prints
 *   cancelled=THREADS
 * once every thread has been joined, cancelled.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

#define MAX_THREADS 64
#define LINES_PER_THREAD 1000000

static void *worker(void *arg) {
  int base = (int)(long)arg * LINES_PER_THREAD;
  for (int i = 0;; i = (i + 1) % LINES_PER_THREAD) {
    ht__free(ht__malloc(8, "cancel_client.c", base + i, "worker"), "cancel_client.c", base + i,
             "worker");
    pthread_testcancel();
  }
  return NULL;
}

int main(int argc, char **argv) {
  long n = argc == 2 ? atol(argv[1]) : 0;
  if (n < 1 || n > MAX_THREADS) {
    fprintf(stderr, "usage: cancel_client THREADS (1..%d)\n", MAX_THREADS);
    return 2;
  }
  ht_free(ht_malloc(1)); /* connected before the threads start */
  pthread_t t[MAX_THREADS];
  for (long i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
      return 1;
  nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
  for (long i = 0; i < n; i++)
    pthread_cancel(t[i]);
  long cancelled = 0;
  for (long i = 0; i < n; i++) {
    void *res;
    pthread_join(t[i], &res);
    cancelled += res == PTHREAD_CANCELED;
  }
  for (int i = 0; i < 100; i++)
    ht_free(ht_malloc((size_t)(16 + i)));
  printf("cancelled=%ld\n", cancelled);
  return 0;
}
