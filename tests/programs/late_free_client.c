/* late_free_client.c - threads whose last blocks are freed by a TLS
 * destructor, for the transport's end-to-end tests.
 *
 *   late_free_client THREADS [last]
 *
 * main makes a traced pair (heaptrace's thread keys exist from then on),
 * then creates a key of its own, whose destructor frees the block the
 * key holds: it runs at thread exit, after heaptrace's in the C
 * library's order. Each of THREADS threads makes a traced pair and
 * leaves a 4242-byte block in the key. Every block is freed: no leak.
 * With `last`, the destructor keeps the block, setting it again, until
 * the round of destructors in which heaptrace hands the thread's buffer
 * over (the one before the C library's last, PTHREAD_DESTRUCTOR_ITERATIONS:
 * in the last, sanitizer runtimes tear the thread down), and frees it
 * there, after heaptrace's own destructor: those frees are not traced,
 * only counted. Prints
 *   events=E
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <heaptrace/heaptrace.h>

#define MAX_THREADS 64

static pthread_key_t late_key;
static int last; /* free in the last round only */
static __thread int rounds;

static void late_free(void *block) {
  if (last && ++rounds < PTHREAD_DESTRUCTOR_ITERATIONS - 1 &&
      pthread_setspecific(late_key, block) == 0)
    return;
  ht_free(block);
}

static void *worker(void *arg) {
  (void)arg;
  ht_free(ht_malloc(10));
  void *kept = ht_malloc(4242);
  if (!kept || pthread_setspecific(late_key, kept) != 0)
    abort();
  return NULL;
}

int main(int argc, char **argv) {
  long n = argc == 2 || argc == 3 ? atol(argv[1]) : 0;
  last = argc == 3 && strcmp(argv[2], "last") == 0;
  if (n < 1 || n > MAX_THREADS || (argc == 3 && !last)) {
    fprintf(stderr, "usage: late_free_client THREADS [last] (1..%d threads)\n", MAX_THREADS);
    return 2;
  }
  ht_free(ht_malloc(1));
  if (pthread_key_create(&late_key, late_free) != 0)
    return 1;
  pthread_t t[MAX_THREADS];
  for (long i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, worker, NULL) != 0)
      return 1;
  for (long i = 0; i < n; i++)
    pthread_join(t[i], NULL);
  printf("events=%ld\n", 2 + 4 * n);
  return 0;
}
