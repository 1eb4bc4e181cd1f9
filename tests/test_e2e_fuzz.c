/* test_e2e_fuzz.c - heaptraced under a live-socket fuzzer.
 *
 * live_fuzzer (tests/programs/live_fuzzer.c) first records real sessions:
 * real traced programs (threads_client, ht_stream_client, the esp32
 * example with its caps heaps) run against a socket of its own, and their
 * bytes are kept as they went out. It then sends mutated copies of them
 * (bit flips, truncation, reordering, absurd lengths and counts, floods of
 * sites, second handshakes, spliced streams, control requests, slow
 * dribbles, idle connections) from many connections at once, while one
 * well-behaved traced program, threads_client, runs beside them.
 * Afterwards:
 *   1. the good client's session is complete and exact (its own counts),
 *   2. the daemon is alive, answers, and its peak memory stayed bounded,
 *   3. the database is intact: integrity_check, no session left running,
 *      every session's event count is what its stored chunks hold, every
 *      protocol-error session has its one log line, nothing was logged at
 *      error level,
 *   4. the daemon stops cleanly (exit 0: under ASan, nothing leaked).
 * The run lasts FUZZ_MS (HT_LONG=1: FUZZ_LONG_MS); the figures it reaches
 * are printed on stderr ("e2e_fuzz: ...").
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "raw_client.h"

#define FUZZ_MS 4000
#define FUZZ_LONG_MS 60000
#define FUZZ_THREADS "16"
#define FUZZ_PID_BASE 990000 /* live_fuzzer's HELLO pids: this + thread */
#define GOOD_THREADS "4"
#define GOOD_PAUSE_MS 200   /* threads_client pauses this long every 1000 rounds */
#define MIN_CONNECTIONS 100 /* fewer means the run proved little */
#define WAIT_MS 20000
/* The daemon's peak memory, as in test_e2e_hostile.c: TSan keeps shadow
 * memory for all the daemon touches, so its bound is scaled. */
#ifdef HT_TEST_TSAN
#define RSS_LIMIT_KB (5 * 200 * 1024L)
#else
#define RSS_LIMIT_KB (200 * 1024L)
#endif

E2E_SUITE(e2e_fuzz, 300);

/* ======================================================================
 * Helpers
 * ==================================================================== */

/* Lines of the daemon's log containing both a and b. */
static int log_lines_with(const char *a, const char *b) {
  char *log = e2e_read_file(env.log);
  int n = 0;
  for (char *line = log, *eol; *line; line = eol + 1) {
    eol = strchr(line, '\n');
    if (!eol)
      eol = line + strlen(line);
    char saved = *eol;
    *eol = '\0';
    n += strstr(line, a) && (!b || strstr(line, b));
    *eol = saved;
    if (!saved)
      break;
  }
  free(log);
  return n;
}

/* Records a real session of argv[0] into scratch file name; returns the
 * program's stdout (owned). */
static char *record(const char *name, char *const prog[]) {
  char out[160];
  snprintf(out, sizeof out, "%s/%s", env.dir, name);
  char *argv[16] = {(char *)e2e_bin("live_fuzzer"), "record", out};
  size_t n = 3;
  for (size_t i = 0; prog[i] && n < 15; i++)
    argv[n++] = prog[i];
  argv[n] = NULL;
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "recording %s: %s", prog[0], r.err);
  free(r.err);
  return r.out;
}

/* stats of session id are exactly what threads_client printed. */
static void assert_counts(int id, const char *out) {
  char sid[16];
  snprintf(sid, sizeof sid, "%d", id);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", sid);
  cr_assert(eq(dbl, e2e_num(j, "events"), (double)e2e_field(out, "events")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "allocations"), (double)e2e_field(out, "allocations")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "frees"), (double)e2e_field(out, "frees")));
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), (double)e2e_field(out, "reallocs")));
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), (double)e2e_field(out, "live_blocks")));
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), (double)e2e_field(out, "live_bytes")));
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
  cr_assert(eq(int, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "agree")), 1));
  const cJSON *ses = cJSON_GetObjectItemCaseSensitive(j, "session");
  cr_assert(eq(str, (char *)e2e_str(ses, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(ses, "lost"), 0));
  cr_assert(eq(dbl, e2e_num(ses, "events"), (double)e2e_field(out, "events")));
  cJSON_Delete(j);
}

/* ======================================================================
 * The live fuzzer
 * ==================================================================== */

Test(e2e_fuzz, mutated_real_streams_from_many_connections_leave_a_good_client_exact) {
  char *threads_out = record(
      "threads.stream", (char *const[]){(char *)e2e_bin("threads_client"), "2", "2000", "5", NULL});
  free(threads_out);
  free(record("stream.stream", (char *const[]){(char *)e2e_bin("ht_stream_client"), "3000", NULL}));
  free(record("esp32.stream", (char *const[]){(char *)e2e_bin("esp32"), NULL}));
  e2e_restart_daemon_small_quarantine(&env);

  int ms = e2e_long_run() ? FUZZ_LONG_MS : FUZZ_MS;
  /* The good client pauses every 1000 rounds: it lasts about as long as
   * the run. */
  char pace[32], duration[32], rounds[32];
  snprintf(pace, sizeof pace, "%d", GOOD_PAUSE_MS * 1000);
  snprintf(duration, sizeof duration, "%d", ms);
  snprintf(rounds, sizeof rounds, "%d", ms / GOOD_PAUSE_MS * 1000);
  char *good_argv[] = {(char *)e2e_bin("threads_client"), GOOD_THREADS, rounds, "0", pace, NULL};
  pid_t good = e2e_spawn(&env, good_argv, NULL);

  char s1[160], s2[160], s3[160];
  snprintf(s1, sizeof s1, "%s/threads.stream", env.dir);
  snprintf(s2, sizeof s2, "%s/stream.stream", env.dir);
  snprintf(s3, sizeof s3, "%s/esp32.stream", env.dir);
  char *fuzz_argv[] = {(char *)e2e_bin("live_fuzzer"),
                       "fuzz",
                       env.socket,
                       "7",
                       duration,
                       FUZZ_THREADS,
                       s1,
                       s2,
                       s3,
                       NULL};
  e2e_result_t f = e2e_run(&env, fuzz_argv, NULL);
  cr_assert(eq(int, f.status, 0), "live_fuzzer: %s", f.err);
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0),
            "heaptraced died under the fuzzer (status 0x%x); see %s", status, env.log);
  long long conns = e2e_field(f.out, "connections"), refused = e2e_field(f.out, "refused");
  fprintf(stderr, "e2e_fuzz: %d ms, %s threads: %s", ms, FUZZ_THREADS, f.out);
  cr_assert(ge(long, (long)conns, MIN_CONNECTIONS), "only %lld connections:\n%s", conns, f.out);
  cr_assert(eq(long, (long)refused, 0), "the daemon refused connections:\n%s", f.out);

  /* 1: the good client, beside it all the time, is exact. */
  e2e_result_t g = e2e_wait(&env, good);
  cr_assert(eq(int, g.status, 0), "threads_client: %s", g.err);
  cr_assert(eq(int, e2e_count_lines(g.err, "heaptrace:"), 0), "the good client warned:\n%s", g.err);
  e2e_wait_disconnected(&env, WAIT_MS);
  cJSON *all = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *gs = e2e_session_of_pid(all, good);
  cr_assert(ne(ptr, (void *)gs, NULL), "no session for the good client (pid %d)", (int)good);
  assert_counts((int)e2e_num(gs, "id"), g.out);
  int nsessions = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(all, "sessions"));
  cJSON_Delete(all);
  e2e_result_free(&g);

  /* 2: alive, answering, bounded. */
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0), "heaptraced died; see %s", env.log);
  long kb = e2e_peak_rss_kb(env.daemon);
  fprintf(stderr, "e2e_fuzz: %d sessions stored, daemon peak RSS %ld kB\n", nsessions, kb);
  cr_assert(lt(long, kb, RSS_LIMIT_KB), "heaptraced peaked at %ld kB", kb);

  /* 3: the database is intact and agrees with itself and with the log. */
  e2e_assert_integrity(&env);
  cr_assert(eq(long,
               (long)e2e_sql_number(&env, "SELECT COUNT(*) FROM sessions WHERE end_reason = "
                                          "'running'"),
               0));
  cr_assert(eq(long,
               (long)e2e_sql_number(
                   &env, "SELECT COUNT(*) FROM sessions s WHERE events != (SELECT "
                         "COALESCE(SUM(count), 0) FROM event_chunks WHERE session = s.id)"),
               0),
            "sessions whose event count is not what their chunks hold");
  cr_assert(eq(long,
               (long)e2e_sql_number(&env, "SELECT COUNT(*) FROM sessions WHERE end_reason NOT IN "
                                          "('clean', 'disconnected', 'protocol-error')"),
               0));
  long long marked = e2e_sql_number(&env, "SELECT COUNT(*) FROM sessions WHERE end_reason = "
                                          "'protocol-error'");
  cr_assert(lt(long, 0, (long)marked), "no fuzzed session was refused: the fuzzer is broken");
  cr_assert(eq(int, log_lines_with("): protocol error: ", "; connection closed"), (int)marked));
  cr_assert(eq(int, log_lines_with("heaptraced[error]", NULL), 0), "errors in %s", env.log);
  e2e_result_free(&f);

  /* 4 */
  e2e_stop_daemon(&env);
}

/* ======================================================================
 * The recordings are real
 * ==================================================================== */

/* What live_fuzzer records is the session byte for byte: sent again as it
 * is, it is stored exactly as the program said it did. */
Test(e2e_fuzz, a_recorded_stream_sent_again_is_stored_exactly_as_the_program_did) {
  char *out = record("threads.stream",
                     (char *const[]){(char *)e2e_bin("threads_client"), "3", "3000", "20", NULL});
  char path[160];
  snprintf(path, sizeof path, "%s/threads.stream", env.dir);
  size_t len;
  char *bytes = e2e_read_bytes(path, &len);
  raw_client_t c;
  raw_connect(&c, env.socket);
  cr_assert(eq(int, raw_send(&c, bytes, len), 0));
  shutdown(c.fd, SHUT_WR);
  cr_assert(eq(int, raw_wait_closed(&c, RAW_WAIT_MS), 1), "no close after the recorded END");
  raw_close(&c);
  free(bytes);
  assert_counts(1, out);
  free(out);
}

/* ======================================================================
 * What the fuzzer found
 * ==================================================================== */

/* A sequence gap is recorded as lost (PROTOCOL.md). One of 2^63 events
 * cannot be true: the daemon refuses it as a protocol error (more than
 * 2^40 events lost at once), and the session list stays valid -- "lost"
 * never turns negative. */
Test(e2e_fuzz, absurd_sequence_gap_leaves_the_session_list_valid) {
  raw_client_t c;
  raw_stream_t s;
  raw_connect(&c, env.socket);
  raw_hello(&c, FUZZ_PID_BASE, "gap");
  raw_site(&c, 1, 1, "gap.c", "jump");
  raw_stream_init(&s, 1, raw_now_ns());
  raw_stream_malloc(&s, 1, 0x5000000, 10);
  raw_stream_malloc(&s, 1, 0x5000100, 20);
  cr_assert(eq(int, raw_send_events_as(&c, &s, 1ull << 63, 2), 0));
  cr_assert(eq(int, raw_wait_closed(&c, RAW_WAIT_MS), 1));
  raw_close(&c);

  e2e_result_t r = e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  cJSON *all = e2e_json(&r);
  const cJSON *ses = e2e_session_of_pid(all, FUZZ_PID_BASE);
  cr_assert(ne(ptr, (void *)ses, NULL));
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(ses, "end_reason")->valuestring, "protocol-error"));
  cr_assert(eq(dbl, e2e_num(ses, "events"), 0));
  cr_assert(eq(dbl, e2e_num(ses, "lost"), 0));
  cJSON_Delete(all);
  cr_assert(eq(int, e2e_validate(r.out, "sessions.schema.json"), 0),
            "heapctl sessions --json is not valid:\n%s", r.out);
  e2e_result_free(&r);
}

/* Events may name a site whose SITE record never came (the protocol lets
 * a client send site 0, "unknown", or lose a record): the session is
 * summarised and answers like any other. (Under ASan+UBSan the daemon
 * once died here: bsearch over a session's empty site table.) */
Test(e2e_fuzz, session_whose_events_name_sites_never_sent_is_summarised_and_answers) {
  raw_client_t c;
  raw_stream_t s;
  raw_connect(&c, env.socket);
  raw_hello(&c, FUZZ_PID_BASE + 1, "nosites");
  raw_stream_init(&s, 1, raw_now_ns());
  raw_stream_malloc(&s, 3, 0x5000000, 10);
  raw_stream_malloc(&s, 0, 0x5000100, 20);
  raw_stream_free(&s, 3, 0x5000000, 10);
  raw_send_events(&c, &s);
  raw_end(&c);
  shutdown(c.fd, SHUT_WR);
  cr_assert(eq(int, raw_wait_closed(&c, RAW_WAIT_MS), 1));
  raw_close(&c);
  for (int waited = 0; e2e_sql_number(&env, "SELECT COUNT(*) FROM summaries") == 0; waited += 20) {
    int status;
    cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0),
              "heaptraced died summarising the session; see %s", env.log);
    cr_assert(lt(int, waited, WAIT_MS), "no summary within %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
  cJSON *st = e2e_heapctl_json(&env, 0, "stats", "-s", "1");
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 2));
  cr_assert(eq(dbl, e2e_num(st, "frees"), 1));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 20));
  cJSON_Delete(st);
  cJSON *ev = e2e_heapctl_json(&env, 0, "events", "-s", "1");
  cr_assert(eq(int, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ev, "events")), 3));
  cJSON_Delete(ev);
  e2e_stop_daemon(&env);
}

/* Sessions with caps heaps, ended together, are summarised side by side
 * on the daemon's thread pool. (Under TSan the daemon once died here: the
 * heap model's treap priorities came from one unguarded static state.) */
Test(e2e_fuzz, caps_heap_sessions_ending_together_are_summarised_side_by_side) {
  free(record("esp32.stream", (char *const[]){(char *)e2e_bin("esp32"), NULL}));
  char path[160];
  snprintf(path, sizeof path, "%s/esp32.stream", env.dir);
  size_t len;
  char *bytes = e2e_read_bytes(path, &len);
  enum { SESSIONS = 8 };
  raw_client_t c[SESSIONS];
  for (int i = 0; i < SESSIONS; i++) {
    raw_connect(&c[i], env.socket);
    cr_assert(eq(int, raw_send(&c[i], bytes, len), 0));
    shutdown(c[i].fd, SHUT_WR);
  }
  for (int i = 0; i < SESSIONS; i++) {
    cr_assert(eq(int, raw_wait_closed(&c[i], RAW_WAIT_MS), 1));
    raw_close(&c[i]);
  }
  free(bytes);
  for (int waited = 0; e2e_sql_number(&env, "SELECT COUNT(*) FROM summaries") < SESSIONS;
       waited += 20) {
    int status;
    cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0),
              "heaptraced died summarising the sessions; see %s", env.log);
    cr_assert(lt(int, waited, WAIT_MS), "not every summary within %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
  e2e_stop_daemon(&env);
}
