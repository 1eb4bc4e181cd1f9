/* test_e2e_load.c - heaptraced under load: CLIENTS traced processes of
 * THREADS threads each, all at once, allocating as fast as they can for a
 * bounded time (tests/programs/load_client.c, lossless block mode).
 *
 * Afterwards every event is accounted for: each client's session is clean,
 * lost nothing, and holds exactly the events the client says it made
 * (sessions list, stored chunks, and heapctl stats for allocations, frees,
 * reallocs and what stayed live). No client starves: the time from the end
 * of its main to the end of its exit hook (ship the rings, END, wait for
 * the daemon to commit) stays under EXIT_LIMIT_MS. The daemon's peak
 * memory stays under RSS_LIMIT_KB, however many events went through, with
 * BACKLOG_MIB (heaptraced --max-backlog) for what it holds unstored.
 * HT_LONG=1 runs LOAD_LONG_MS instead of LOAD_MS; the figures are printed
 * on stderr ("e2e_load: ...").
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"

#define CLIENTS 64
#define THREADS "4"
#define LOAD_MS 1500
#define LOAD_LONG_MS 20000
#define MAX_OPS "100000000" /* per thread: the time bound comes first */
#define BACKLOG_MIB 64
#define WAIT_MS 60000
/* Exit time: the client's own wait for the commit (HT_END_WAIT_MS in
 * libclient/transport.c) is 5 s; a client past it exits without knowing
 * its session is stored. Sanitized daemons ingest several times slower,
 * and every client's rings (up to 1 MiB each) are drained at once. */
#if defined(HT_TEST_TSAN)
#define EXIT_LIMIT_MS 30000.0
#define RSS_LIMIT_KB (5 * 256 * 1024L)
#elif defined(__SANITIZE_ADDRESS__)
#define EXIT_LIMIT_MS 15000.0
#define RSS_LIMIT_KB (256 * 1024L)
#else
#define EXIT_LIMIT_MS 5000.0
#define RSS_LIMIT_KB (256 * 1024L)
#endif

E2E_SUITE(e2e_load, 300);

/* ======================================================================
 * Helpers
 * ==================================================================== */

/* The exit time the client printed (exit_ms=T), in ms. */
static double exit_ms(const char *out) {
  const char *at = strstr(out, "exit_ms=");
  cr_assert(ne(ptr, (void *)at, NULL), "no exit_ms in:\n%s", out);
  return atof(at + strlen("exit_ms="));
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* stats of session id are exactly what the client printed. */
static void assert_stats_exact(int id, const char *out) {
  char sid[16];
  snprintf(sid, sizeof sid, "%d", id);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", sid);
  cr_assert(eq(dbl, e2e_num(j, "events"), (double)e2e_field(out, "events")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "allocations"), (double)e2e_field(out, "allocations")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "frees"), (double)e2e_field(out, "frees")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), (double)e2e_field(out, "reallocs")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), (double)e2e_field(out, "live_blocks")), "%s",
            out);
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), (double)e2e_field(out, "live_bytes")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
  cr_assert(eq(int, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "agree")), 1));
  cJSON_Delete(j);
}

/* ======================================================================
 * The load
 * ==================================================================== */

Test(e2e_load, sixty_four_busy_clients_lose_nothing_starve_none_and_bound_the_daemon) {
  env.max_backlog_mib = BACKLOG_MIB;
  e2e_restart_daemon_small_quarantine(&env);
  int ms = e2e_long_run() ? LOAD_LONG_MS : LOAD_MS;
  char duration[32];
  snprintf(duration, sizeof duration, "%d", ms);
  char *argv[] = {(char *)e2e_bin("load_client"), "run", THREADS, duration, MAX_OPS, NULL};
  pid_t pids[CLIENTS];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < CLIENTS; i++)
    pids[i] = e2e_spawn(&env, argv, NULL);
  e2e_result_t res[CLIENTS];
  for (int i = 0; i < CLIENTS; i++)
    res[i] = e2e_wait(&env, pids[i]);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

  double exits[CLIENTS];
  long long total = 0;
  int slowest = 0;
  for (int i = 0; i < CLIENTS; i++) {
    cr_assert(eq(int, res[i].status, 0), "client %d: status %d: %s", i, res[i].status, res[i].err);
    /* A client may wait: the daemon stops reading while it is behind
     * (backpressure), which under a sanitizer can last past the 5 s after
     * which a client says so - once, and once more when the daemon reads
     * again. Nothing else may be said. */
    int stalls = e2e_count_lines(res[i].err, "has read nothing for");
    cr_assert(eq(int, e2e_count_lines(res[i].err, "reads again, after"), stalls), "client %d:\n%s",
              i, res[i].err);
    cr_assert(eq(int, e2e_count_lines(res[i].err, "heaptrace:"), 2 * stalls),
              "client %d warned:\n%s", i, res[i].err);
    long long ev = e2e_field(res[i].out, "events");
    cr_assert(lt(long, 0, (long)ev), "client %d did nothing:\n%s", i, res[i].out);
    total += ev;
    exits[i] = exit_ms(res[i].out);
    if (exits[i] > exits[slowest])
      slowest = i;
  }
  long kb = e2e_peak_rss_kb(env.daemon);

  /* Every event accounted for, client by client. */
  e2e_wait_disconnected(&env, WAIT_MS);
  cJSON *all = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  cr_assert(
      eq(int, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(all, "sessions")), CLIENTS));
  double slowest_end_ms = 0;
  for (int i = 0; i < CLIENTS; i++) {
    const cJSON *s = e2e_session_of_pid(all, pids[i]);
    cr_assert(ne(ptr, (void *)s, NULL), "no session for client %d (pid %d)", i, (int)pids[i]);
    cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"), "client %d", i);
    cr_assert(eq(dbl, e2e_num(s, "lost"), 0), "client %d", i);
    cr_assert(eq(dbl, e2e_num(s, "events"), (double)e2e_field(res[i].out, "events")), "client %d",
              i);
    assert_stats_exact((int)e2e_num(s, "id"), res[i].out);
    if (i == slowest)
      slowest_end_ms = e2e_num(s, "end_ms");
  }
  cJSON_Delete(all);
  cr_assert(
      eq(long, (long)e2e_sql_number(&env, "SELECT SUM(count) FROM event_chunks"), (long)total));
  cr_assert(eq(long, (long)e2e_sql_number(&env, "SELECT COALESCE(SUM(count), 0) FROM lost"), 0));

  double slowest_ms = exits[slowest];
  /* The daemon's clock of the END (end_ms) against the client's clock
   * at the end of its exit hook: positive when the daemon got to the END
   * only after the client had given up waiting. */
  double end_after_exit = slowest_end_ms - (double)e2e_field(res[slowest].out, "exit_realtime_ms");
  qsort(exits, CLIENTS, sizeof *exits, cmp_double);
  fprintf(stderr,
          "e2e_load: %d clients x %s threads for %d ms: %lld events in %.1f s (%.0f/s), none "
          "lost; exit ms min %.0f median %.0f max %.0f; daemon peak RSS %ld kB\n",
          CLIENTS, THREADS, ms, total, wall, (double)total / wall, exits[0], exits[CLIENTS / 2],
          exits[CLIENTS - 1], kb);

  /* No starvation: every client saw its session committed in time. */
  cr_assert(lt(dbl, slowest_ms, EXIT_LIMIT_MS),
            "client %d (pid %d) took %.0f ms to flush and end its session (median %.0f ms); "
            "the daemon processed its END %.0f ms after the client's exit hook ended",
            slowest, (int)pids[slowest], slowest_ms, exits[CLIENTS / 2], end_after_exit);
  cr_assert(lt(long, kb, RSS_LIMIT_KB), "heaptraced peaked at %ld kB", kb);
  for (int i = 0; i < CLIENTS; i++)
    e2e_result_free(&res[i]);
  e2e_stop_daemon(&env);
}
