/* churn.c - the allocation-churn workload of bench/overhead.
 *
 *   churn [--threads T] [--ops N] [--seed S] [--mode traced|off|plain]
 *
 * Each of T threads keeps a working set of CHURN_SLOTS slots and performs N
 * operations (N is per thread). An operation picks a random slot: an empty
 * slot gets malloc(8..4096); a full one is, with probability 1/3, realloc'd
 * to a new random size, else freed. In the steady state 60% of the slots are
 * full, which makes the mix about 40% malloc, 40% free, 20% realloc. Every
 * operation is exactly one allocation event; at the end each thread frees
 * what it still holds (also events, also timed). The first byte of every
 * block is written, so that the memory is real.
 *
 * `plain` goes through glibc malloc/free/realloc (the untraced baseline,
 * and what heaptrack runs); `traced` goes through ht_malloc/ht_realloc/
 * ht_free, with call-site capture; `off` is the same loop with tracing off
 * (run it with HEAPTRACE_DISABLE=1): what the client's allocation and
 * accounting cost without any event. All modes draw the same random sequence
 * (per-thread xorshift64*, seeded from --seed and the thread's index).
 *
 * Output, one machine-readable line on stdout:
 *   churn: mode=traced threads=2 ops=2000000 events=4004913 mallocs=...
 *          frees=... reallocs=... seconds=0.251 cpu=0.498
 * seconds is the wall time (CLOCK_MONOTONIC) from the moment the first
 * thread leaves the start barrier (all threads exist by then) to the moment
 * the last one is joined; process
 * start-up, the connection to heaptraced and the exit-time flush are not in
 * it. cpu is the CPU time the workers spent in their loops, summed: on a
 * shared machine it varies less than the wall time, since time the machine
 * gives to others is not in it. Exit status: 0, 1 on bad usage or
 * failure, 2 when --mode traced runs but tracing is off (no daemon
 * answered), or --mode off runs with tracing on.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

#define CHURN_SLOTS 4096u /* working set per thread, power of two */
#define CHURN_MIN_SIZE 8u
#define CHURN_MAX_SIZE 4096u

typedef struct {
  pthread_t tid;
  unsigned index;
  uint64_t seed;
  uint64_t ops;
  int traced;
  pthread_barrier_t *start;
  /* Results. */
  double started; /* CLOCK_MONOTONIC seconds, right after the start barrier */
  double cpu;     /* the thread's CPU seconds in the loop */
  uint64_t mallocs, frees, reallocs;
  int failed;
} worker_t;

/* splitmix64: turns (seed, thread index) into a well-mixed non-zero state. */
static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* xorshift64*: fast, good enough for picking slots and sizes. */
static inline uint64_t next_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

static inline void touch(void *p, uint64_t r) {
  *(volatile unsigned char *)p = (unsigned char)r;
}

/* The loop, specialised for each mode by the constant `traced` (the
 * function is inlined into its two callers below). */
static inline __attribute__((always_inline)) void churn_loop(worker_t *w, void **slots,
                                                             const int traced) {
  uint64_t state = splitmix64(w->seed ^ splitmix64(w->index + 1u));
  if (state == 0)
    state = 1;
  uint64_t mallocs = 0, frees = 0, reallocs = 0;
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = next_rand(&state);
    unsigned slot = (unsigned)(r >> 52) & (CHURN_SLOTS - 1u); /* top bits */
    size_t size =
        CHURN_MIN_SIZE + (size_t)((r & 0xffffffffu) % (CHURN_MAX_SIZE - CHURN_MIN_SIZE + 1u));
    unsigned pick = (unsigned)((r >> 32) & 0xfffff) % 3u; /* 0: realloc */
    void *p = slots[slot];
    if (!p) {
      p = traced ? ht_malloc(size) : malloc(size);
      if (!p) {
        w->failed = 1;
        break;
      }
      touch(p, r);
      slots[slot] = p;
      mallocs++;
    } else if (pick == 0) {
      void *np = traced ? ht_realloc(p, size) : realloc(p, size);
      if (!np) {
        w->failed = 1;
        break;
      }
      touch(np, r);
      slots[slot] = np;
      reallocs++;
    } else {
      if (traced)
        ht_free(p);
      else
        free(p);
      slots[slot] = NULL;
      frees++;
    }
  }
  for (unsigned i = 0; i < CHURN_SLOTS; i++) {
    if (slots[i]) {
      if (traced)
        ht_free(slots[i]);
      else
        free(slots[i]);
      slots[i] = NULL;
      frees++;
    }
  }
  w->mallocs = mallocs;
  w->frees = frees;
  w->reallocs = reallocs;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: unlike the wall time, it leaves out
 * what other processes on a shared machine take from the run. */
static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  /* The slot array is the benchmark's own memory: it comes from the stack,
   * so that neither mode's allocator sees it. */
  void *slots[CHURN_SLOTS];
  memset(slots, 0, sizeof slots);
  pthread_barrier_wait(w->start);
  w->started = now_s();
  double cpu0 = thread_cpu_s();
  if (w->traced)
    churn_loop(w, slots, 1);
  else
    churn_loop(w, slots, 0);
  w->cpu = thread_cpu_s() - cpu0;
  return NULL;
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: churn [--threads T] [--ops N] [--seed S] [--mode traced|off|plain]\n"
          "  --threads T  worker threads (default 2)\n"
          "  --ops N      operations per thread (default 2000000)\n"
          "  --seed S     random seed (default 1)\n"
          "  --mode M     traced: ht_malloc/ht_realloc/ht_free; off: the same with tracing off\n"
          "               (HEAPTRACE_DISABLE=1); plain: glibc (default traced)\n");
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *end || s[0] == '-')
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  uint64_t threads = 2, ops = 2000000, seed = 1;
  int traced = 1, off = 0;
  for (int i = 1; i < argc; i += 2) { /* every option takes one value */
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      fprintf(stderr, "churn: %s needs a value\n", a);
      usage(stderr);
      return 1;
    }
    int bad = 0;
    if (strcmp(a, "--threads") == 0)
      bad = parse_u64(v, &threads) || threads < 1 || threads > 1024;
    else if (strcmp(a, "--ops") == 0)
      bad = parse_u64(v, &ops);
    else if (strcmp(a, "--seed") == 0)
      bad = parse_u64(v, &seed);
    else if (strcmp(a, "--mode") == 0) {
      if (strcmp(v, "traced") == 0)
        traced = 1;
      else if (strcmp(v, "off") == 0)
        traced = off = 1;
      else if (strcmp(v, "plain") == 0)
        traced = 0;
      else
        bad = 1;
    } else {
      fprintf(stderr, "churn: unknown option %s\n", a);
      usage(stderr);
      return 1;
    }
    if (bad) {
      fprintf(stderr, "churn: bad value for %s: %s\n", a, v);
      return 1;
    }
  }

  /* Connect before the clock starts: the handshake is a one-off cost. */
  if (off && ht_tracing_enabled()) {
    fprintf(stderr, "churn: --mode off but tracing is on (set HEAPTRACE_DISABLE=1)\n");
    return 2;
  }
  if (traced && !off && !ht_tracing_enabled()) {
    fprintf(stderr, "churn: --mode traced but tracing is off (is heaptraced running? "
                    "HEAPTRACE_SOCKET?)\n");
    return 2;
  }

  worker_t *w = calloc(threads, sizeof *w);
  if (!w) {
    perror("churn: calloc");
    return 1;
  }
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1u);
  for (unsigned i = 0; i < threads; i++) {
    w[i].index = i;
    w[i].seed = seed;
    w[i].ops = ops;
    w[i].traced = traced;
    w[i].start = &start;
    int rc = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
    if (rc != 0) {
      fprintf(stderr, "churn: pthread_create: %s\n", strerror(rc));
      return 1;
    }
  }
  pthread_barrier_wait(&start);
  for (unsigned i = 0; i < threads; i++)
    pthread_join(w[i].tid, NULL);
  double t1 = now_s();
  pthread_barrier_destroy(&start);

  uint64_t mallocs = 0, frees = 0, reallocs = 0;
  int failed = 0;
  double t0 = t1, cpu = 0;
  for (unsigned i = 0; i < threads; i++) {
    cpu += w[i].cpu;
    if (w[i].started < t0)
      t0 = w[i].started;
    mallocs += w[i].mallocs;
    frees += w[i].frees;
    reallocs += w[i].reallocs;
    failed |= w[i].failed;
  }
  free(w);
  if (failed) {
    fprintf(stderr, "churn: an allocation failed\n");
    return 1;
  }
  const char *mode = off ? "off" : traced ? "traced" : "plain";
  printf("churn: mode=%s threads=%" PRIu64 " ops=%" PRIu64 " events=%" PRIu64 " mallocs=%" PRIu64
         " frees=%" PRIu64 " reallocs=%" PRIu64 " seconds=%.6f cpu=%.6f\n",
         mode, threads, ops, mallocs + frees + reallocs, mallocs, frees, reallocs, t1 - t0, cpu);
  fflush(stdout);
  return 0;
}
