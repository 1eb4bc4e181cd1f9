/* test_clock.c - the client's event clock (libclient/clock.c).
 *
 * Event times must be CLOCK_MONOTONIC nanoseconds (the daemon compares
 * them with its own clock), never go backwards in a thread, and order
 * events across threads as they happened (the daemon merges streams by
 * time). The suites drive the TSC mapping directly: forced on, re-anchored
 * far more often than the flusher would, and compared with clock_gettime.
 * On a machine without a TSC the same checks run against the fallback.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define BOUND_NS 200000 /* 200 us: the mapping's error plus a preemption's slack */

static uint64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleeps ms milliseconds, then re-anchors at once. */
static void anchor_after_ms(int ms) {
  usleep((useconds_t)ms * 1000);
  ht__clock_anchor(1);
}

/* The largest distance between the event clock and clock_gettime over n
 * readings: each event time must fall between the real times around it. */
static uint64_t worst_gap(int n) {
  uint64_t worst = 0;
  for (int i = 0; i < n; i++) {
    uint64_t a = real_ns();
    uint64_t t = i & 1 ? ht__now_ns() : ht__now_ns_ordered();
    uint64_t b = real_ns();
    uint64_t gap = t < a ? a - t : t > b ? t - b : 0;
    if (gap > worst)
      worst = gap;
  }
  return worst;
}

Test(clock, tracks_clock_gettime_across_re_anchors) {
  ht__clock_init(1);
  cr_assert(eq(u64, worst_gap(1000), 0)); /* before the first anchor: clock_gettime itself */
  anchor_after_ms(30);
  cr_assert(eq(int, atomic_load(&ht__clock.on), HT_CLOCK_TSC)); /* the TSC is in use */
  for (int round = 0; round < 10; round++) {
    uint64_t gap = worst_gap(20000);
    cr_assert(le(u64, gap, BOUND_NS), "round %d: %llu ns from clock_gettime", round,
              (unsigned long long)gap);
    anchor_after_ms(5);
  }
}

/* ---- the first anchors: on the counter within milliseconds ---- */

#define MS 1000000u

/* Sleeps as the flusher does (transport.c): until the next anchor is due,
 * 1 ms at least, 50 ms at most. */
static void sleep_until_due(void) {
  uint64_t due = ht__clock_anchor_due_ns();
  due = due < 1 * MS ? 1 * MS : due > 50 * MS ? 50 * MS : due;
  struct timespec ts = {0, (long)due};
  nanosleep(&ts, NULL);
}

Test(clock, is_on_the_tsc_within_20_ms_of_init_when_anchored_when_due) {
  ht__clock_init(1);
  uint64_t t0 = real_ns();
  if (HT_CLOCK_TSC)
    cr_assert(le(u64, ht__clock_anchor_due_ns(), 5 * MS)); /* the flusher wakes for it */
  while (!atomic_load(&ht__clock.on) && real_ns() - t0 < 20 * MS) {
    sleep_until_due();
    ht__clock_anchor(0);
  }
  cr_assert(eq(int, atomic_load(&ht__clock.on), HT_CLOCK_TSC), "after %llu us",
            (unsigned long long)(real_ns() - t0) / 1000);
  cr_assert(le(u64, worst_gap(20000), BOUND_NS));
}

Test(clock, refines_a_young_rate_at_doubling_intervals_within_the_bound) {
  ht__clock_init(1);
  uint64_t t0 = real_ns();
  int anchors = 0;
  while (real_ns() - t0 < 150 * MS) {
    sleep_until_due();
    anchors += ht__clock_anchor(0);
    uint64_t gap = worst_gap(2000);
    cr_assert(le(u64, gap, BOUND_NS), "%llu ns from clock_gettime after %d anchors",
              (unsigned long long)gap, anchors);
  }
  if (HT_CLOCK_TSC) {
    /* 2, 4, 8, 16, 32 ms, then every 50 ms: more than one per 50 ms at
     * first, and spaced out once the rate is known over that long. */
    cr_assert(ge(int, anchors, 6));
    cr_assert(le(int, anchors, 12));
  }
}

Test(clock, falls_back_to_clock_gettime_when_the_tsc_is_not_used) {
  ht__clock_init(0);
  cr_assert(eq(int, ht__clock_anchor(1), 0));
  cr_assert(eq(u64, ht__clock_anchor_due_ns(), UINT64_MAX)); /* the flusher need not wake */
  cr_assert(eq(u64, worst_gap(1000), 0));
}

/* ---- never backwards, across threads ---- */

#define READERS 3

static _Atomic uint64_t latest;     /* the largest time any reader has seen */
static _Atomic int stop, backwards; /* readers that saw time go back */

/* Each reading must be at least every reading that happened before it in
 * any thread: `latest` was read before the clock, so its value is from
 * earlier events. */
static void *reader(void *arg) {
  (void)arg;
  uint64_t mine = 0;
  while (!atomic_load(&stop)) {
    uint64_t before = atomic_load(&latest);
    uint64_t t = ht__now_ns_ordered();
    if (t < before || t < mine)
      atomic_fetch_add(&backwards, 1);
    mine = t;
    uint64_t cur = before;
    while (cur < t && !atomic_compare_exchange_weak(&latest, &cur, t)) {
    }
  }
  return NULL;
}

/* rdtscp: 1 to keep what init chose, 0 to force the lfence; rdtsc pair. */
static void check_never_backwards(int rdtscp) {
  ht__clock_init(1);
  if (!rdtscp)
    atomic_store(&ht__clock.rdtscp, 0);
  atomic_store(&latest, 0);
  atomic_store(&stop, 0);
  atomic_store(&backwards, 0);
  pthread_t th[READERS];
  for (int i = 0; i < READERS; i++)
    cr_assert(eq(int, pthread_create(&th[i], NULL, reader, NULL), 0));
  /* The switch from clock_gettime to the TSC happens under the readers,
   * then hundreds of new segments, each with its own slope. */
  anchor_after_ms(30);
  for (int i = 0; i < 300; i++) {
    ht__clock_anchor(1);
    usleep(200);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < READERS; i++)
    pthread_join(th[i], NULL);
  cr_assert(eq(int, atomic_load(&backwards), 0));
  cr_assert(le(u64, worst_gap(1000), BOUND_NS));
}

Test(clock, never_goes_backwards_across_threads_while_re_anchored) {
  check_never_backwards(1);
}

Test(clock, never_goes_backwards_across_threads_with_lfence_ordered_reads) {
  check_never_backwards(0);
}

/* 1 when the kernel lists flag among the CPU's ("flags : ... rdtscp ..."). */
static int cpu_has_flag(const char *flag) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f)
    return -1;
  char line[8192];
  int has = 0;
  size_t n = strlen(flag);
  while (!has && fgets(line, sizeof line, f)) {
    if (strncmp(line, "flags", 5) != 0)
      continue;
    for (char *p = strstr(line, flag); p && !has; p = strstr(p + 1, flag))
      has = (p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n');
  }
  fclose(f);
  return has;
}

Test(clock, ordered_reads_use_rdtscp_where_the_cpu_has_it) {
  ht__clock_init(1);
  int has = HT_CLOCK_TSC ? cpu_has_flag("rdtscp") : 0;
  if (has < 0)
    cr_skip_test("no /proc/cpuinfo");
  cr_assert(eq(int, atomic_load(&ht__clock.rdtscp), has));
}
