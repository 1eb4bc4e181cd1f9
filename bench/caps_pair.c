/* caps_pair.c - what a caps-heap allocation costs next to glibc's.
 *
 * Tracing off (HEAPTRACE_DISABLE=1), so this measures the allocator and the
 * bookkeeping every call does anyway (per-thread counters, per-site totals,
 * canaries). For sizes 16..4096 it times a malloc/free pair in a loop, and
 * a churn of 256 live blocks of mixed sizes, for glibc, ht_malloc (the
 * traced system heap) and ht_caps_malloc (a TLSF region), and prints ns per
 * pair and the ratio to glibc. Then typed allocation: HT_NEW (a zeroed,
 * typed block: the type's statistics and, for the system heap, the typed
 * set) against ht_calloc, on one thread and on two at once. A benchmark,
 * not a test: it prints, it does not judge.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <heaptrace/heaptrace.h>

#define REGION (64u << 20)
#define PAIRS 2000000
#define CHURN_SLOTS 256

static void *volatile sink; /* keeps the compiler from eliding pairs */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef enum { GLIBC, HT_SYSTEM, HT_CAPS, HT_CALLOC, HT_TYPED } kind_t;

typedef struct {
  char bytes[16];
} item16_t;

static void *get(kind_t k, size_t size) {
  switch (k) {
  case GLIBC:
    return malloc(size);
  case HT_SYSTEM:
    return ht_malloc(size);
  case HT_CALLOC:
    return ht_calloc(size / sizeof(item16_t), sizeof(item16_t));
  case HT_TYPED:
    return HT_NEW(item16_t, size / sizeof(item16_t));
  default:
    return ht_caps_malloc(size, HT_CAP_DEFAULT);
  }
}

static void put(kind_t k, void *p) {
  if (k == GLIBC)
    free(p);
  else if (k == HT_CAPS)
    ht_caps_free(p);
  else
    ht_free(p);
}

/* ns per malloc/free pair of one size. */
static double pair(kind_t k, size_t size) {
  for (int i = 0; i < 1000; i++)
    put(k, get(k, size));
  double t0 = now_ns();
  for (int i = 0; i < PAIRS; i++) {
    void *p = get(k, size);
    sink = p;
    put(k, p);
  }
  return (now_ns() - t0) / PAIRS;
}

/* ns per pair with CHURN_SLOTS live blocks of sizes 16..max. */
static double churn(kind_t k, size_t max) {
  static void *slot[CHURN_SLOTS];
  uint64_t r = 88172645463325252ull;
  for (int i = 0; i < CHURN_SLOTS; i++)
    slot[i] = get(k, 16 + i * 13 % max);
  double t0 = now_ns();
  for (int i = 0; i < PAIRS; i++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    unsigned s = (unsigned)(r % CHURN_SLOTS);
    put(k, slot[s]);
    slot[s] = get(k, 16 + (size_t)(r >> 32) % max);
    sink = slot[s];
  }
  double ns = (now_ns() - t0) / PAIRS;
  for (int i = 0; i < CHURN_SLOTS; i++)
    put(k, slot[i]);
  return ns;
}

typedef struct {
  kind_t kind;
  size_t size;
  double ns;
} pair_job_t;

static void *pair_thread(void *arg) {
  pair_job_t *j = arg;
  j->ns = pair(j->kind, j->size);
  return NULL;
}

/* ns per pair, the mean over two threads timing pairs at once. */
static double pair2(kind_t k, size_t size) {
  pair_job_t jobs[2] = {{k, size, 0}, {k, size, 0}};
  pthread_t t;
  if (pthread_create(&t, NULL, pair_thread, &jobs[1]) != 0)
    return 0;
  pair_thread(&jobs[0]);
  pthread_join(t, NULL);
  return (jobs[0].ns + jobs[1].ns) / 2;
}

int main(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
  void *mem = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  const uint32_t caps[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_32BIT, 0, 0};
  if (mem == MAP_FAILED ||
      ht_heap_add_region_with_caps(caps, (intptr_t)mem, (intptr_t)((char *)mem + REGION)) != 0) {
    fprintf(stderr, "caps_pair: cannot set up a %u MiB region\n", REGION >> 20);
    return 1;
  }
  printf("malloc/free pair, ns (tracing off); ratio = x glibc\n");
  printf("%-14s %8s %10s %7s %10s %7s\n", "workload", "glibc", "ht_malloc", "ratio", "ht_caps",
         "ratio");
  for (size_t size = 16; size <= 4096; size *= 2) {
    double g = pair(GLIBC, size), s = pair(HT_SYSTEM, size), c = pair(HT_CAPS, size);
    printf("pair %-9zu %8.1f %10.1f %6.2fx %10.1f %6.2fx\n", size, g, s, s / g, c, c / g);
  }
  for (size_t max = 256; max <= 4096; max *= 4) {
    double g = churn(GLIBC, max), s = churn(HT_SYSTEM, max), c = churn(HT_CAPS, max);
    printf("churn 16..%-4zu %8.1f %10.1f %6.2fx %10.1f %6.2fx\n", max, g, s, s / g, c, c / g);
  }
  printf("\ntyped: HT_NEW against ht_calloc, ns per pair (tracing off); ratio = x ht_calloc\n");
  printf("%-14s %10s %8s %7s %16s %8s %7s\n", "size", "ht_calloc", "HT_NEW", "ratio",
         "2 thr: ht_calloc", "HT_NEW", "ratio");
  for (size_t size = 16; size <= 4096; size *= 4) {
    double c = pair(HT_CALLOC, size), n = pair(HT_TYPED, size);
    double c2 = pair2(HT_CALLOC, size), n2 = pair2(HT_TYPED, size);
    printf("pair %-9zu %10.1f %8.1f %6.2fx %16.1f %8.1f %6.2fx\n", size, c, n, n / c, c2, n2,
           n2 / c2);
  }
  return 0;
}
