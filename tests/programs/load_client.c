/* load_client.c - a traced program for the load and fault tests: known
 * heap activity for a bounded time, or up to a point where it waits to be
 * killed.
 *
 *   load_client run THREADS DURATION_MS MAX_OPS
 *   load_client hang THREADS OPS
 *   load_client stream
 *
 * run: each of THREADS threads does rounds of ht_malloc, an ht_realloc
 * every fourth round, and ht_free until DURATION_MS have passed or it did
 * MAX_OPS rounds, then leaks one 100-byte block. It prints what it did, as
 * threads_client does (allocations= frees= reallocs= live_blocks=
 * live_bytes= events=), and, once libheaptrace's exit hook has shipped
 * everything, sent END and seen the daemon commit the session, how long
 * that took: exit_ms=T (from the end of main), and when that was:
 * exit_realtime_ms=T (CLOCK_REALTIME, to set beside the session's end).
 *
 * hang: each thread does OPS malloc/free pairs and leaks one 100-byte
 * block; then ht_flush() and the same counts line with "flushed", and the
 * program waits forever: every event it made is on the socket.
 *
 * stream: one thread of malloc/free pairs forever; after every
 * CHECKPOINT_OPS pairs, ht_flush() and "checkpoint events=E" (every event
 * up to E is on the socket).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define LEAK_BYTES 100
#define CLOCK_EVERY 256 /* rounds between looks at the clock */
#define CHECKPOINT_OPS 5000

typedef struct {
  pthread_t thread;
  long max_ops;
  unsigned long long allocs, frees, reallocs;
} worker_t;

static double deadline_ms;
static double main_end_ms;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  for (long i = 0; i < w->max_ops; i++) {
    if (i % CLOCK_EVERY == 0 && deadline_ms > 0 && now_ms() >= deadline_ms)
      break;
    char *p = ht_malloc((size_t)(16 + i % 512));
    if (!p)
      abort();
    p[0] = 1;
    w->allocs++;
    if (i % 4 == 0) {
      p = ht_realloc(p, (size_t)(32 + i % 1000));
      if (!p)
        abort();
      w->reallocs++;
    }
    ht_free(p);
    w->frees++;
  }
  char *leak = ht_malloc(LEAK_BYTES);
  memset(leak, 0, LEAK_BYTES);
  w->allocs++;
  return leak;
}

/* Runs threads workers of max_ops rounds each and prints their counts. */
static void run_workers(long threads, long max_ops, const char *prefix) {
  worker_t *w = calloc((size_t)threads, sizeof *w);
  if (!w)
    abort();
  for (long i = 0; i < threads; i++) {
    w[i].max_ops = max_ops;
    pthread_create(&w[i].thread, NULL, worker, &w[i]);
  }
  unsigned long long allocs = 0, frees = 0, reallocs = 0;
  for (long i = 0; i < threads; i++) {
    pthread_join(w[i].thread, NULL);
    allocs += w[i].allocs;
    frees += w[i].frees;
    reallocs += w[i].reallocs;
  }
  free(w);
  printf("%sallocations=%llu frees=%llu reallocs=%llu live_blocks=%ld live_bytes=%ld "
         "events=%llu\n",
         prefix, allocs, frees, reallocs, threads, threads * LEAK_BYTES, allocs + frees + reallocs);
  fflush(stdout);
}

/* Registered before the first traced call, so that it runs after
 * libheaptrace's own exit hook (atexit runs hooks in reverse order). */
static void report_exit(void) {
  struct timespec rt;
  clock_gettime(CLOCK_REALTIME, &rt);
  printf("exit_ms=%.1f exit_realtime_ms=%lld\n", now_ms() - main_end_ms,
         (long long)rt.tv_sec * 1000 + rt.tv_nsec / 1000000);
}

static int run(long threads, long duration_ms, long max_ops) {
  atexit(report_exit);
  deadline_ms = now_ms() + (double)duration_ms;
  run_workers(threads, max_ops, "");
  main_end_ms = now_ms();
  return 0;
}

static int hang(long threads, long ops) {
  run_workers(threads, ops, "");
  if (ht_flush() != 0) {
    fprintf(stderr, "load_client: ht_flush failed: tracing is off\n");
    return 1;
  }
  printf("flushed\n");
  fflush(stdout);
  for (;;)
    pause();
}

static int stream(void) {
  for (unsigned long long events = 0;;) {
    for (int i = 0; i < CHECKPOINT_OPS; i++) {
      void *p = ht_malloc((size_t)(1 + i % 256));
      if (!p)
        abort();
      ht_free(p);
    }
    events += 2 * CHECKPOINT_OPS;
    if (ht_flush() != 0) {
      fprintf(stderr, "load_client: ht_flush failed: tracing is off\n");
      return 1;
    }
    printf("checkpoint events=%llu\n", events);
    fflush(stdout);
  }
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "run") == 0)
    return run(atol(argv[2]), atol(argv[3]), atol(argv[4]));
  if (argc == 4 && strcmp(argv[1], "hang") == 0)
    return hang(atol(argv[2]), atol(argv[3]));
  if (argc == 2 && strcmp(argv[1], "stream") == 0)
    return stream();
  fprintf(stderr, "usage: load_client run THREADS DURATION_MS MAX_OPS\n"
                  "       load_client hang THREADS OPS\n"
                  "       load_client stream\n");
  return 2;
}
