/* threads_client.c - a traced program with known heap activity over many
 * threads, for the transport's end-to-end tests.
 *
 *   threads_client THREADS OPS [SHORT [PACE_US [EXIT]]]
 *
 * Each of THREADS threads does OPS rounds of ht_malloc, an ht_realloc every
 * fourth round, and ht_free, then leaks one 100-byte block. SHORT further
 * threads (50 at a time) live just long enough for three malloc/free
 * pairs. PACE_US > 0 sleeps that long every 1000 rounds, holding that
 * round's block, so that a run lasts while a test acts on the daemon. The
 * process exits with EXIT (default 0), or dies of it when it is segv (a
 * write to a page that allows none) or abort, or leaves by quick_exit(0)
 * when it is quick. It prints what it did, as
 * the daemon should report it, and how many event buffers are still mapped
 * once every thread has exited and ht_flush() has run:
 *   allocations=A frees=F reallocs=R live_blocks=B live_bytes=N events=E buffers=K
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

#define LEAK_BYTES 100
#define SHORT_PAIRS 3
#define SHORT_BATCH 50

static long ops, pace_us;

static void *worker(void *arg) {
  (void)arg;
  for (long i = 0; i < ops; i++) {
    char *p = ht_malloc((size_t)(16 + i % 512));
    if (!p)
      abort();
    p[0] = 1;
    if (i % 4 == 0) {
      p = ht_realloc(p, (size_t)(32 + i % 1000));
      if (!p)
        abort();
    }
    if (pace_us > 0 && i % 1000 == 999) { /* holding p: a reconnect finds a block live */
      struct timespec ts = {0, pace_us * 1000};
      nanosleep(&ts, NULL);
    }
    ht_free(p);
  }
  char *leak = ht_malloc(LEAK_BYTES);
  memset(leak, 0, LEAK_BYTES);
  return leak;
}

static void *short_lived(void *arg) {
  (void)arg;
  for (int i = 0; i < SHORT_PAIRS; i++)
    ht_free(ht_malloc(24));
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: threads_client THREADS OPS [SHORT [PACE_US [EXIT]]]\n");
    return 2;
  }
  long threads = atol(argv[1]), nshort = argc > 3 ? atol(argv[3]) : 0;
  ops = atol(argv[2]);
  pace_us = argc > 4 ? atol(argv[4]) : 0;
  const char *end = argc > 5 ? argv[5] : "0";
  pthread_t *t = calloc((size_t)(threads > SHORT_BATCH ? threads : SHORT_BATCH), sizeof *t);
  for (long i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, worker, NULL);
  for (long i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  for (long done = 0; done < nshort;) {
    long n = nshort - done < SHORT_BATCH ? nshort - done : SHORT_BATCH;
    for (long i = 0; i < n; i++)
      pthread_create(&t[i], NULL, short_lived, NULL);
    for (long i = 0; i < n; i++)
      pthread_join(t[i], NULL);
    done += n;
  }
  free(t);
  /* Every thread has exited: once their events are shipped, no buffer is
   * left mapped. */
  ht_flush();
  size_t buffers = ht_trace_buffers();
  unsigned long long allocs = (unsigned long long)(threads * (ops + 1) + nshort * SHORT_PAIRS);
  unsigned long long frees = (unsigned long long)(threads * ops + nshort * SHORT_PAIRS);
  unsigned long long reallocs = (unsigned long long)(threads * ((ops + 3) / 4));
  printf("allocations=%llu frees=%llu reallocs=%llu live_blocks=%ld live_bytes=%ld events=%llu "
         "buffers=%zu\n",
         allocs, frees, reallocs, threads, threads * LEAK_BYTES, allocs + frees + reallocs,
         buffers);
  fflush(stdout);
  if (!strcmp(end, "segv")) {
    volatile int *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *page = 1;
  }
  if (!strcmp(end, "abort"))
    abort();
  if (!strcmp(end, "quick"))
    quick_exit(0);
  return atoi(end);
}
