/* test_e2e_transport.c - the client's transport end to end: concurrency,
 * short-lived threads, fork, a daemon that dies and comes back, no daemon
 * at all, drop mode. Every count is checked against what the client
 * program says it did (tests/programs/). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"

E2E_SUITE(e2e_transport, 120);

static const cJSON *session_of_pid(const cJSON *sessions, long long pid, int nth) {
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(sessions, "sessions")) {
    if ((long long)e2e_num(s, "pid") == pid && nth-- == 0)
      return s;
  }
  return NULL;
}

/* Session nth of pid in sessions, which must be there and have ended
 * clean; what names it in a failure. */
static const cJSON *clean_session_of_pid(const cJSON *sessions, long long pid, int nth,
                                         const char *what) {
  const cJSON *s = session_of_pid(sessions, pid, nth);
  cr_assert(s != NULL, "%s: no session %d of pid %lld", what, nth, pid);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"), "%s", what);
  return s;
}

/* stats of session id matches the counts the program printed. */
static void check_counts(int id, const char *out) {
  char sid[16];
  snprintf(sid, sizeof sid, "%d", id);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", sid);
  cr_assert(eq(dbl, e2e_num(j, "allocations"), (double)e2e_field(out, "allocations")), "%s", out);
  cr_assert(eq(dbl, e2e_num(j, "frees"), (double)e2e_field(out, "frees")));
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), (double)e2e_field(out, "reallocs")));
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), (double)e2e_field(out, "live_blocks")));
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), (double)e2e_field(out, "live_bytes")));
  cr_assert(eq(dbl, e2e_num(j, "events"), (double)e2e_field(out, "events")));
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "agree")));
  const cJSON *ses = cJSON_GetObjectItemCaseSensitive(j, "session");
  cr_assert(eq(dbl, e2e_num(ses, "lost"), 0));
  cr_assert(eq(dbl, e2e_num(ses, "events"), (double)e2e_field(out, "events")));
  cJSON_Delete(j);
}

Test(e2e_transport, eight_threads_allocating_concurrently_lose_no_event) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "8", "25000", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  check_counts(1, r.out);
  e2e_result_free(&r);
}

Test(e2e_transport, a_thousand_short_lived_threads_are_all_accounted_for_and_leave_no_buffer) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "1000", "1000", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  check_counts(1, r.out);
  /* 1002 threads traced; each buffer went back once its events were out. */
  cr_assert(eq(int, (int)e2e_field(r.out, "buffers"), 0), "%s", r.out);
  e2e_result_free(&r);
}

/* A block a thread leaves to a TLS destructor that runs after
 * heaptrace's own (a key made later: a per-thread cache freed at exit) is
 * freed traced: the thread's stream stays for the C library's further
 * rounds of destructors. Before, such frees went untraced: every block a
 * false leak, and the daemon's totals not the client's. */
Test(e2e_transport, blocks_freed_by_a_later_tls_destructor_are_no_leaks) {
  char *argv[] = {(char *)e2e_bin("late_free_client"), "8", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", NULL, NULL);
  cr_assert(eq(dbl, e2e_num(j, "events"), (double)e2e_field(r.out, "events")), "%s", r.out);
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), 0));
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "totals"), "agree")));
  cJSON_Delete(j);
  cJSON *l = e2e_heapctl_json(&env, 0, "leaks", NULL, NULL);
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItem(l, "total"), "blocks"), 0));
  cJSON_Delete(l);
  e2e_result_free(&r);
}

/* A free in a destructor of the C library's very last round, after the
 * thread's buffer was handed over, cannot be traced: it is counted, as
 * undelivered, so that stored and lost still make every event. */
Test(e2e_transport, frees_after_a_threads_buffer_went_are_counted_as_lost) {
  char *argv[] = {(char *)e2e_bin("late_free_client"), "8", "last", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItem(ss, "sessions"), 0);
  cr_assert(s != NULL);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 8));
  cr_assert(eq(dbl, e2e_num(s, "events") + e2e_num(s, "lost"), (double)e2e_field(r.out, "events")),
            "%s", r.out);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

Test(e2e_transport, a_fork_child_becomes_its_own_session_and_the_parent_is_intact) {
  char *argv[] = {(char *)e2e_bin("fork_client"), NULL};
  /* The child starts a flusher thread after forking a threaded parent,
   * which TSan refuses by default; it still checks the child's threads. */
  char *envv[] = {"TSAN_OPTIONS=die_after_fork=0 halt_on_error=1", NULL};
  e2e_result_t r = e2e_run(&env, argv, envv);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  long long parent = e2e_field(r.out, "parent"), child = e2e_field(r.out, "child");
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *ps = session_of_pid(ss, parent, 0), *cs = session_of_pid(ss, child, 0);
  cr_assert(ps && cs, "sessions of parent %lld and child %lld", parent, child);
  cr_assert(eq(dbl, e2e_num(cs, "ppid"), (double)parent));
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(ps, "end_reason")->valuestring, "clean"));
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(cs, "end_reason")->valuestring, "clean"));
  /* parent: 111 before the fork, 100 + 1000 pairs, 333 after; child: 1000
   * pairs and 222, nothing of the parent's stream. */
  cr_assert(eq(dbl, e2e_num(ps, "events"), 1 + 2 * 1100 + 1));
  cr_assert(eq(dbl, e2e_num(cs, "events"), 2 * 1000 + 1));
  char id[16];
  snprintf(id, sizeof id, "%.0f", e2e_num(ps, "id"));
  cJSON *pl = e2e_heapctl_json(&env, 0, "leaks", "-s", id);
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItem(pl, "total"), "bytes"), 111 + 333));
  snprintf(id, sizeof id, "%.0f", e2e_num(cs, "id"));
  cJSON *cl = e2e_heapctl_json(&env, 0, "leaks", "-s", id);
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItem(cl, "total"), "bytes"), 222));
  cJSON_Delete(pl);
  cJSON_Delete(cl);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* The only session's end as heapctl sessions reports it. */
static void expect_killed(int sig, const char *name) {
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ss, "sessions"), 0);
  cr_assert(s != NULL);
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(s, "end_reason")->valuestring, "killed"));
  char detail[64];
  snprintf(detail, sizeof detail, "killed by signal %d (%s)", sig, name);
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(s, "end_detail")->valuestring, detail));
  cJSON_Delete(ss);
}

/* threads_client dies of its own doing (how: segv or abort) after its
 * last allocation: every event is stored and the session ends killed. */
static void expect_death(const char *how, int sig, const char *name) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "4", "20000", "0", "0", (char *)how, NULL};
  /* Under a sanitizer, its own SEGV handler would come first. */
  char *envv[] = {"ASAN_OPTIONS=detect_leaks=0:handle_segv=0",
                  "TSAN_OPTIONS=halt_on_error=1:handle_segv=0", NULL};
  e2e_result_t r = e2e_run(&env, argv, envv);
  cr_assert(eq(int, r.status, 128 + sig), "the death is the program's own: %s", r.err);
  check_counts(1, r.out);
  expect_killed(sig, name);
  e2e_result_free(&r);
}

/* A fork while another thread makes the process's first traced call
 * (connects, starts the flusher, joins the accounting), the forking thread
 * having traced nothing: the child's first traced call must not hang on a
 * lock that thread held. The fork comes 0 to 600 us after the thread
 * starts, across the call. Before the fork handlers were in place from
 * the start, 18 of these 31 children hung. */
Test(e2e_transport, a_fork_during_another_threads_first_traced_call_leaves_the_child_working) {
#if defined(__SANITIZE_ADDRESS__)
  /* There the child may hang in the runtime itself: GCC 12's libasan
   * keeps no allocator lock across fork, and the other thread is in
   * malloc (seen: a child's thread start waiting on an allocator lock). */
  e2e_skip_test(&env, "ASan's allocator is not fork-safe while another thread allocates");
#elif defined(HT_TEST_TSAN)
  /* A fresh-clone TSan run once had a child hang here (fork 280 us after
   * the first call), not seen again in 186 local runs beside CPU hogs and
   * with no backtrace; the runtime's own state across a fork while the
   * other thread is inside it is the likely cause, as under ASan, but
   * that is not shown. The plain build runs this test in every CI run. */
  e2e_skip_test(&env, "not run under TSan: a child hung once, cause not shown (see the comment)");
#endif
  char *envv[] = {"TSAN_OPTIONS=die_after_fork=0 halt_on_error=1", NULL};
  for (int delay_us = 0; delay_us <= 600; delay_us += 20) {
    char delay[16];
    snprintf(delay, sizeof delay, "%d", delay_us);
    char *argv[] = {(char *)e2e_bin("fork_early"), delay, NULL};
    e2e_result_t r = e2e_run(&env, argv, envv);
    cr_assert(eq(int, r.status, 0), "fork %d us after the first call: %s%s", delay_us, r.out,
              r.err);
    e2e_result_free(&r);
  }
}

Test(e2e_transport, a_crash_ships_every_event_and_the_session_ends_killed_by_its_signal) {
  expect_death("segv", SIGSEGV, "SIGSEGV");
}

Test(e2e_transport, an_abort_ships_every_event_and_the_session_ends_killed_by_sigabrt) {
  expect_death("abort", SIGABRT, "SIGABRT");
}

/* quick_exit skips atexit: heaptrace's at_quick_exit handler ends the
 * session clean all the same, with every event. */
Test(e2e_transport, quick_exit_ends_the_session_clean_with_every_event) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "2000", "0", "0", "quick", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  check_counts(1, r.out);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItem(ss, "sessions"), 0);
  cr_assert(s != NULL);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

Test(e2e_transport, sigterm_mid_run_ends_the_session_killed_with_nothing_lost) {
  /* 2 threads x 20000 rounds with a 250 ms pause every 1000: about 5 s.
   * The client tries again 0.1, 0.3, 0.7, 1.5 and 3.1 s after it noticed
   * the loss (at 0.4 s or so): the daemon, back from 0.8 s on, must be
   * found before the program ends even when the tries at 1.1 and 1.9 s
   * come too early - a sanitizer build on a loaded machine once took that
   * long to start again, and a 2.5 s program ended before its next try. */
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "20000", "0", "250000", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  e2e_sleep_ms(400);
  kill(pid, SIGTERM);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 128 + SIGTERM), "%s", r.err);
  expect_killed(SIGTERM, "SIGTERM");
  /* Whatever it had done is all there and consistent: no loss, every
   * free matched, the running totals agree with the events. */
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", "1");
  cr_assert(lt(dbl, 0, e2e_num(j, "allocations")));
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  cr_assert(cJSON_IsTrue(
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "totals"), "agree")));
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItemCaseSensitive(j, "session"), "lost"), 0));
  cJSON_Delete(j);
  e2e_result_free(&r);
}

/* The running totals the client reported in session (an entry of
 * `heapctl sessions`) are those of a two-thread threads_client at its end:
 * its two leaked 100-byte blocks. They are the process's own count, so
 * they hold even where the session missed events. */
static void check_client_totals_are_two_leaks(const cJSON *session) {
  char id[16];
  snprintf(id, sizeof id, "%.0f", e2e_num(session, "id"));
  cJSON *st = e2e_heapctl_json(&env, 0, "stats", "-s", id);
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(st, "totals");
  cr_assert(eq(dbl, e2e_num(t, "client_blocks"), 2), "%s", cJSON_PrintUnformatted(t));
  cr_assert(ge(dbl, e2e_num(t, "client_usable_bytes"), 200));
  cr_assert(le(dbl, e2e_num(t, "client_usable_bytes"), 2 * (100 + 24)));
  cJSON_Delete(st);
}

/* Kills the daemon with nothing in flight: the program (pid) is stopped,
 * the daemon reads what the socket holds (its count of received events
 * stays put), a query's barrier commits all of it, and only then SIGKILL;
 * the program goes on. What a daemon killed while it holds events it read
 * but had not stored loses is not the client's to count (a TSan run on a
 * loaded machine once lost 4500 events so, and this test failed). */
static void kill_the_daemon_with_nothing_in_flight(pid_t pid) {
  kill(pid, SIGSTOP);
  double last = -1, now = 0;
  for (int stable = 0, waited = 0; stable < 3; waited += 30) {
    cr_assert(lt(int, waited, 10000), "the daemon kept receiving from a stopped program");
    e2e_sleep_ms(30);
    cJSON *st = e2e_heapctl_json(&env, 0, "status", NULL, NULL);
    now = e2e_num(st, "events_received");
    cJSON_Delete(st);
    stable = now == last ? stable + 1 : 0;
    last = now;
  }
  cJSON_Delete(e2e_heapctl_json(&env, 0, "sessions", NULL, NULL)); /* the barrier */
  e2e_signal_daemon(&env, SIGKILL);
  kill(pid, SIGCONT);
}

Test(e2e_transport, the_program_survives_a_daemon_restart_and_counts_what_was_lost) {
  /* 2 threads x 20000 rounds with a 250 ms pause every 1000: about 5 s.
   * The client tries again 0.1, 0.3, 0.7, 1.5 and 3.1 s after it noticed
   * the loss (at 0.4 s or so): the daemon, back from 0.8 s on, must be
   * found before the program ends even when the tries at 1.1 and 1.9 s
   * come too early - a sanitizer build on a loaded machine once took that
   * long to start again, and a 2.5 s program ended before its next try. */
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "20000", "0", "250000", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  e2e_sleep_ms(400);
  kill_the_daemon_with_nothing_in_flight(pid);
  e2e_sleep_ms(400);
  e2e_restart_daemon(&env);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "lost the connection"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "reconnected"), 1), "%s", r.err);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *first = session_of_pid(ss, pid, 0), *second = session_of_pid(ss, pid, 1);
  cr_assert(first && second, "two sessions for pid %d", (int)pid);
  cr_assert(
      eq(str, (char *)cJSON_GetObjectItem(first, "end_reason")->valuestring, "daemon-stopped"));
  cr_assert(eq(str, (char *)cJSON_GetObjectItem(second, "end_reason")->valuestring, "clean"));
  /* Every event is either stored in one of the two sessions or counted as
   * not delivered in the second; nothing disappears unaccounted. */
  double stored = e2e_num(first, "events") + e2e_num(second, "events");
  double lost = e2e_num(first, "lost") + e2e_num(second, "lost");
  cr_assert(lt(dbl, 0, lost));
  cr_assert(eq(dbl, stored + lost, (double)e2e_field(r.out, "events")), "stored %.0f lost %.0f",
            stored, lost);
  /* The new session was told the call sites again: its leaks name them. */
  char id[16];
  snprintf(id, sizeof id, "%.0f", e2e_num(second, "id"));
  cJSON *l = e2e_heapctl_json(&env, 0, "leaks", "-s", id);
  const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(l, "groups"), 0);
  cr_assert(g != NULL);
  cr_assert(
      eq(str, cJSON_GetObjectItem(g, "file")->valuestring, "tests/programs/threads_client.c"));
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItem(l, "total"), "blocks"), 2));
  cJSON_Delete(l);
  /* The running totals carried over the restart: each thread's stream
   * went on from what it held. */
  check_client_totals_are_two_leaks(second);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* A program that closes every descriptor (as one that daemonizes does) and
 * opens a connection of its own at the number heaptrace's socket had gets
 * none of heaptrace's bytes in it: the client sees that the socket is no
 * longer its own, warns once, and goes on in a new session that counts
 * what it could not deliver. */
Test(e2e_transport, a_program_that_closes_the_socket_and_reuses_its_number_gets_no_stray_bytes) {
  char *argv[] = {(char *)e2e_bin("fd_closer"), "2000", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s%s", r.out, r.err);
  cr_assert(eq(long, e2e_field(r.out, "stray_bytes"), 0), "%s", r.out);
  cr_assert(eq(long, e2e_field(r.out, "reconnected"), 1), "%s%s", r.out, r.err);
  cr_assert(lt(long, 2, e2e_field(r.out, "socket_fd")), "not above the standard ones: %s", r.out);
  cr_assert(eq(int, e2e_count_lines(r.err, "the program closed heaptrace's connection"), 1), "%s",
            r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 2), "%s", r.err); /* and reconnected */
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  long long pid = -1;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(ss, "sessions")) {
    if (strcmp(e2e_str(s, "app"), "fd_closer") == 0)
      pid = (long long)e2e_num(s, "pid");
  }
  const cJSON *first = session_of_pid(ss, pid, 0), *second = session_of_pid(ss, pid, 1);
  cr_assert(first && second && !session_of_pid(ss, pid, 2), "two sessions of fd_closer");
  cr_assert(eq(str, (char *)e2e_str(first, "end_reason"), "disconnected"));
  cr_assert(eq(str, (char *)e2e_str(second, "end_reason"), "clean"));
  double stored = e2e_num(first, "events") + e2e_num(second, "events");
  double lost = e2e_num(first, "lost") + e2e_num(second, "lost");
  cr_assert(eq(dbl, stored + lost, (double)e2e_field(r.out, "events")), "stored %.0f lost %.0f",
            stored, lost);
  cr_assert(ge(dbl, lost, 2000), "the rounds shipped into the taken number were not counted");
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* A program whose main returns while other threads still allocate: what
 * they recorded before tracing went off at exit reaches the daemon or is
 * counted as undelivered (exit_busy counts what it saw recorded), and the
 * session ends clean. Tracing used to go off only after the last
 * shipment, and what was recorded during it was lost uncounted. */
Test(e2e_transport, events_recorded_while_the_program_exits_are_stored_or_counted) {
  char *argv[] = {(char *)e2e_bin("exit_busy"), "2", "100", NULL};
  for (int round = 0; round < 5; round++) {
    e2e_result_t r = e2e_run(&env, argv, NULL);
    cr_assert(eq(int, r.status, 0), "%s%s", r.out, r.err);
    long recorded = e2e_field(r.out, "recorded_at_least");
    cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    const cJSON *s = NULL, *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ss, "sessions")) {
      s = it; /* the latest: this round's */
    }
    cr_assert(s != NULL);
    cr_assert(eq(str, (char *)e2e_str(s, "app"), "exit_busy"));
    cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
    double events = e2e_num(s, "events"), lost = e2e_num(s, "lost");
    cr_assert(ge(dbl, events + lost, (double)recorded),
              "round %d: %.0f events stored and %.0f counted lost of at least %ld recorded", round,
              events, lost, recorded);
    cJSON_Delete(ss);
    e2e_result_free(&r);
  }
}

/* threads_client with no daemon to reach: it runs to its end, keeps its
 * exit status (3) and says so in exactly one line, which holds `why`. */
static void runs_untraced_warning_once(const char *why) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "1000", "0", "0", "3", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 3));
  cr_assert(eq(long, e2e_field(r.out, "allocations"), 2002));
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, why), 1), "%s", r.err);
  e2e_result_free(&r);
}

Test(e2e_transport, without_a_daemon_the_program_runs_and_keeps_its_exit_status) {
  e2e_stop_daemon(&env);
  runs_untraced_warning_once("cannot connect to heaptraced");
}

/* In place of the daemon, tests/programs/refusing_listener [MAX_VERSION
 * [DROP_AFTER_MS]] (NULL: not given); threads_client runs 2 threads x
 * `rounds` rounds with a 250 ms pause every 1000 beside it. *r gets the
 * client's result, *l the listener's, stopped once the client is done. */
static void run_beside_listener(char *max_version, char *drop_after_ms, char *rounds,
                                e2e_result_t *r, e2e_result_t *l) {
  e2e_stop_daemon(&env);
  unlink(env.socket);
  char *largv[] = {(char *)e2e_bin("refusing_listener"), env.socket, max_version, drop_after_ms,
                   NULL};
  pid_t listener = e2e_spawn(&env, largv, NULL);
  struct stat sb;
  for (int waited = 0; stat(env.socket, &sb) != 0 && waited < 5000; waited += 10)
    e2e_sleep_ms(10);
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", rounds, "0", "250000", NULL};
  *r = e2e_run(&env, argv, NULL);
  kill(listener, SIGTERM);
  *l = e2e_wait(&env, listener);
}

/* A daemon that closes every connection as soon as it is made, as an
 * older heaptraced refuses a newer protocol version: the program runs to
 * its end, warns three times in all (the first loss, the reconnection, and
 * that the daemon refuses it), and tries again less and less often. */
Test(e2e_transport, a_daemon_that_refuses_every_connection_gets_one_warning_and_fewer_tries) {
  /* 2 threads x 8000 rounds with a 250 ms pause every 1000: about 2 s. */
  e2e_result_t r, l;
  run_beside_listener(NULL, NULL, "8000", &r, &l);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(long, e2e_field(r.out, "allocations"), 2 * 8000 + 2), "%s", r.out);
  cr_assert(eq(int, e2e_count_lines(r.err, "lost the connection"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "reconnected"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "closes this client's connections"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 3), "%s", r.err);
  /* Tries at 0 and 0.1 s in version 4, 0.2 in 3, 0.3 in 2 (each refused
   * twice, counting the one before), then 0.5, 0.9, 1.7 s and so on, each
   * after the loss of the one before: not one every 0.1 s. */
  long tries = e2e_field(l.out, "connections");
  cr_assert(ge(long, tries, 4), "%s", l.out);
  cr_assert(le(long, tries, 8), "%ld connections in about 2 s: the interval did not grow", tries);
  e2e_result_free(&r);
  e2e_result_free(&l);
}

/* A daemon older than the library (refusing_listener 3 1500: it refuses
 * protocol version 4 and takes 3, and drops the first connection it took
 * after 1.5 s, as one that died would): refused twice, the client speaks
 * the version before and goes on traced, and says so once that connection
 * lasts; what it then tells of the connection it lost is in version 3's
 * shape. */
Test(e2e_transport, an_older_daemon_is_spoken_to_in_its_own_version) {
  /* 2 threads x 16000 rounds with a 250 ms pause every 1000: about 4 s. */
  e2e_result_t r, l;
  run_beside_listener("3", "1500", "16000", &r, &l);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(long, e2e_field(r.out, "allocations"), 2 * 16000 + 2), "%s", r.out);
  cr_assert(le(int, 1, e2e_count_lines(r.err, "in protocol version 3 (it is older than")), "%s",
            r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "closes this client's connections"), 0), "%s", r.err);
  cr_assert(eq(long, e2e_field(l.out, "accepted"), 3), "%s", l.out);
  long previous = e2e_field(l.out, "previous");
  cr_assert(lt(long, 0, previous), "no PREVIOUS record after the dropped connection: %s", l.out);
  cr_assert(eq(long, e2e_field(l.out, "previous_ok"), previous), "%s", l.out);
  e2e_result_free(&r);
  e2e_result_free(&l);
}

/* Runs argv in drop mode with the daemon stopped from stop_ms after the
 * start for stopped_ms; *ss gets `heapctl sessions`, and the result is the
 * program's session in it, which must have lost events. */
static const cJSON *run_dropping(char **argv, int stop_ms, int stopped_ms, e2e_result_t *r,
                                 cJSON **ss) {
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  if (stop_ms == 0)
    e2e_signal_daemon(&env, SIGSTOP);
  pid_t pid = e2e_spawn(&env, argv, envv);
  if (stop_ms > 0) {
    e2e_sleep_ms(stop_ms);
    e2e_signal_daemon(&env, SIGSTOP);
  }
  e2e_sleep_ms(stopped_ms);
  e2e_signal_daemon(&env, SIGCONT);
  *r = e2e_wait(&env, pid);
  cr_assert(eq(int, r->status, 0), "%s", r->err);
  *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = session_of_pid(*ss, pid, 0);
  cr_assert(s != NULL);
  cr_assert(lt(dbl, 0, e2e_num(s, "lost")), "nothing was dropped: the stall was too short");
  return s;
}

Test(e2e_transport, drop_mode_drops_and_counts_while_the_daemon_is_stalled) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "300000", NULL};
  e2e_result_t r;
  cJSON *ss;
  const cJSON *s = run_dropping(argv, 0, 1500, &r, &ss);
  cr_assert(eq(dbl, e2e_num(s, "events") + e2e_num(s, "lost"), (double)e2e_field(r.out, "events")));
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

Test(e2e_transport, drop_mode_sends_the_running_totals_again_after_a_drop) {
  /* 2 threads x 40000 rounds with a 20 ms pause every 1000: about 0.8 s,
   * the middle of it with the daemon stopped, so that the rings fill and
   * events are dropped while the threads go on allocating. */
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "40000", "0", "20000", NULL};
  e2e_result_t r;
  cJSON *ss;
  const cJSON *s = run_dropping(argv, 100, 500, &r, &ss);
  /* The dropped events' share of the totals reached the daemon with the
   * next event sent. */
  check_client_totals_are_two_leaks(s);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* Runs argv (environment envv) with the daemon stopped from before its
 * start until 6.5 s after it: past the 5 s after which the client speaks
 * up. *pid gets the program's pid; it must exit 0. */
static e2e_result_t run_past_a_stall(char **argv, char **envv, pid_t *pid) {
  e2e_signal_daemon(&env, SIGSTOP);
  *pid = e2e_spawn(&env, argv, envv);
  e2e_sleep_ms(6500);
  e2e_signal_daemon(&env, SIGCONT);
  e2e_result_t r = e2e_wait(&env, *pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  return r;
}

/* run_past_a_stall in block mode: the program must have said so once, and
 * once more when the daemon read again, and nothing else. *ss gets
 * `heapctl sessions`; returns the program's session in it. */
static const cJSON *run_past_a_warned_stall(char **argv, e2e_result_t *r, cJSON **ss) {
  pid_t pid;
  *r = run_past_a_stall(argv, NULL, &pid);
  cr_assert(eq(int, e2e_count_lines(r->err, "has read nothing for"), 1), "%s", r->err);
  cr_assert(eq(int, e2e_count_lines(r->err, "reads again, after"), 1), "%s", r->err);
  cr_assert(eq(int, e2e_count_lines(r->err, "heaptrace:"), 2), "%s", r->err);
  *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = session_of_pid(*ss, pid, 0);
  cr_assert(s != NULL);
  return s;
}

/* A daemon that stops reading (stopped here; a full disk does the same)
 * makes a lossless program wait: past 5 s it says so, once, and once more
 * when the daemon reads again; nothing is lost. */
Test(e2e_transport, a_stopped_daemon_gets_one_warning_and_the_program_waits_losing_nothing) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "300000", NULL};
  e2e_result_t r;
  cJSON *ss;
  const cJSON *s = run_past_a_warned_stall(argv, &r, &ss);
  check_counts((int)e2e_num(s, "id"), r.out);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* The same stall met by a socket write rather than by a full event
 * buffer: ht_flush() after every 1000 rounds (24 KB) writes the events to
 * the socket long before a buffer (256 KB) could fill, and the write that
 * finds the socket full waits. It says so once, and once more when the
 * daemon reads again; nothing is lost. 100001 events are some 1.2 MB, far
 * past what a socket holds. */
Test(e2e_transport, a_stall_met_by_a_socket_write_gets_one_warning) {
  char *argv[] = {(char *)e2e_bin("ht_stream_client"), "50000", "1000", NULL};
  e2e_result_t r;
  cJSON *ss;
  const cJSON *s = run_past_a_warned_stall(argv, &r, &ss);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 100001));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* 1 when pid exits within ms (its status in *status); else it is left
 * running. *err gets what it wrote on stderr so far (free it). */
static int exits_within(pid_t pid, int ms, int *status, char **err) {
  int exited = 0;
  for (int waited = 0; waited < ms && !exited; waited += 20) {
    exited = waitpid(pid, status, WNOHANG) == pid;
    if (!exited)
      e2e_sleep_ms(20);
  }
  char path[160];
  snprintf(path, sizeof path, "%s/err.%d", env.dir, (int)pid);
  *err = e2e_read_file(path);
  return exited;
}

/* Drop mode never makes the program wait long, whatever takes the
 * transport's locks (a new thread's stream, a new site, a fork, the
 * exit): with the daemon stopped from the start, the connection is given
 * up after 5 s, once said, and the program runs to its end and exits
 * while the daemon is still stopped. */
Test(e2e_transport, in_drop_mode_a_stopped_daemon_does_not_hold_the_program) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "300000", NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  e2e_signal_daemon(&env, SIGSTOP);
  pid_t pid = e2e_spawn(&env, argv, envv);
  int status = 0;
  char *err;
  int exited = exits_within(pid, 20000, &status, &err);
  e2e_signal_daemon(&env, SIGCONT);
  if (!exited)
    waitpid(pid, &status, 0);
  cr_assert(exited, "the program did not end in 20 s while the daemon was stopped:\n%s", err);
  cr_assert(eq(int, WIFEXITED(status) && WEXITSTATUS(status) == 0, 1), "status 0x%x", status);
  cr_assert(eq(int, e2e_count_lines(err, "the connection is given up"), 1), "%s", err);
  free(err);
}

/* A daemon that accepts nothing and whose queue of new connections is
 * full (a stopped one, once enough programs knocked): the program does not
 * wait to connect. It runs untraced, says so once, and keeps its exit
 * status. Before, its first allocation waited in connect() for as long as
 * the daemon did, and held the transport's locks meanwhile. */
Test(e2e_transport, a_daemon_with_a_full_connection_queue_does_not_hold_the_program) {
  e2e_stop_daemon(&env);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", env.socket);
  unlink(env.socket);
  int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
  cr_assert(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
  cr_assert(eq(int, listen(lfd, 0), 0)); /* one pending connection fills it */
  int filler = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  cr_assert(eq(int, connect(filler, (struct sockaddr *)&sa, sizeof sa), 0));
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "1000", "0", "0", "3", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  int status = 0;
  char *err;
  int exited = exits_within(pid, 10000, &status, &err);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(filler);
  close(lfd);
  unlink(env.socket);
  cr_assert(exited, "the program waited 10 s for a daemon that accepts nothing:\n%s", err);
  cr_assert(eq(int, WIFEXITED(status) && WEXITSTATUS(status) == 3, 1), "status 0x%x", status);
  cr_assert(eq(int, e2e_count_lines(err, "heaptrace:"), 1), "%s", err);
  cr_assert(eq(int, e2e_count_lines(err, "queue of new connections is full"), 1), "%s", err);
  free(err);
}

/* Creates the (empty) file at path, a signal to a test program. */
static void touch(const char *path) {
  FILE *f = fopen(path, "w");
  cr_assert(f != NULL, "cannot create %s", path);
  fclose(f);
}

Test(e2e_transport, a_file_at_the_socket_path_that_is_no_socket_is_named_in_the_warning) {
  e2e_stop_daemon(&env);
  unlink(env.socket);
  touch(env.socket);
  runs_untraced_warning_once("(the path is not a socket)");
}

/* The sessions of a drop-mode program whose connection was given up at
 * least once: more than one, the last ended clean, and between them every
 * event the program made (out's events=) stored or counted as lost. */
static void check_given_up_sessions(pid_t pid, const char *out, const char *err) {
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  double stored = 0, lost = 0;
  int n = 0;
  for (const cJSON *s; (s = session_of_pid(ss, pid, n)) != NULL; n++) {
    stored += e2e_num(s, "events");
    lost += e2e_num(s, "lost");
  }
  cr_assert(ge(int, n, 2), "one session: the connection was never given up\n%s", err);
  cr_assert(eq(str, (char *)e2e_str(session_of_pid(ss, pid, n - 1), "end_reason"), "clean"));
  cr_assert(eq(dbl, stored + lost, (double)e2e_field(out, "events")), "stored %.0f lost %.0f",
            stored, lost);
  cJSON_Delete(ss);
}

/* Drop mode across a given-up connection: the program goes on in a new
 * session once the daemon reads again, and every event is stored or
 * counted - those dropped while the old connection was stuck included
 * (they used to be forgotten when the new connection began). */
Test(e2e_transport, in_drop_mode_every_event_across_a_given_up_connection_is_counted) {
  /* 2 threads x 400000 rounds with a 20 ms pause every 1000: ~8 s. */
  char *argv[] = {(char *)e2e_bin("threads_client"), "2", "400000", "0", "20000", NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  pid_t pid;
  e2e_result_t r = run_past_a_stall(argv, envv, &pid);
  cr_assert(eq(int, e2e_count_lines(r.err, "the connection is given up"), 1), "%s", r.err);
  check_given_up_sessions(pid, r.out, r.err);
  e2e_result_free(&r);
}

/* Drop mode, the socket full and the flusher waiting on it: a new thread
 * (its stream) and a new call site (its SITE record) do not wait for the
 * flusher, and the site costs no event either: the stream holds the site
 * for the flusher to announce before its events. Every newcomer's event
 * is stored (their buffers had room), none names a site the daemon was
 * not told of, and every event is stored or counted. Before, each
 * newcomer waited until the daemon read again (here about 2 s). */
Test(e2e_transport, in_drop_mode_new_threads_and_sites_do_not_wait_for_a_stuck_flusher) {
  char *argv[] = {(char *)e2e_bin("newcomers"), "1000", "20", NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  e2e_signal_daemon(&env, SIGSTOP);
  pid_t pid = e2e_spawn(&env, argv, envv);
  e2e_sleep_ms(3000);
  e2e_signal_daemon(&env, SIGCONT);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(lt(long, e2e_field(r.out, "newcomer_max_ms"), 500), "%s", r.out);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = clean_session_of_pid(ss, pid, 0, r.err);
  cr_assert(lt(dbl, 0, e2e_num(s, "lost")), "nothing was dropped: the socket never filled");
  cr_assert(eq(dbl, e2e_num(s, "events") + e2e_num(s, "lost"), (double)e2e_field(r.out, "events")),
            "stored %.0f lost %.0f\n%s", e2e_num(s, "events"), e2e_num(s, "lost"), r.out);
  /* Every event stored names a site the daemon knows. */
  cJSON *ev = e2e_heapctl_json(&env, 0, "events", "--limit", "100000000");
  const cJSON *e;
  int n = 0;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(ev, "events")) {
    const char *site = e2e_str(e, "site");
    cr_assert(site && site[0] != '?', "event %d names an unknown site: %s", n, site ? site : "");
    n++;
  }
  cr_assert(eq(dbl, n, e2e_num(s, "events")));
  cJSON_Delete(ev);
  /* The newcomers' two allocations each, at sites of their own. */
  cJSON *st = e2e_heapctl_json(&env, 0, "stats", NULL, NULL);
  double newcomer_allocs = 0;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(st, "sites")) {
    if (strcmp(e2e_str(e, "function"), "newcomer") == 0)
      newcomer_allocs += e2e_num(e, "allocations");
  }
  cr_assert(eq(dbl, newcomer_allocs, 2 * 20), "newcomers' allocations stored: %.0f",
            newcomer_allocs);
  cJSON_Delete(st);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* Drop mode, the flusher waiting on a full socket: a fork and a heap's
 * registration take the transport's locks, and wait at most a moment
 * (HT_DROP_PATIENCE_MS, 100 ms) before the connection is given up.
 * Before, each waited until the flusher gave up by itself, up to 5 s.
 * Every event is still stored or counted once the daemon reads again. */
Test(e2e_transport, in_drop_mode_a_fork_and_a_registration_do_not_wait_for_a_stuck_flusher) {
  char go[200], out[200];
  snprintf(go, sizeof go, "%s/go", env.dir);
  char *argv[] = {(char *)e2e_bin("drop_waits"), "1000", go, NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  e2e_signal_daemon(&env, SIGSTOP);
  pid_t pid = e2e_spawn(&env, argv, envv);
  snprintf(out, sizeof out, "%s/out.%d", env.dir, (int)pid);
  char *timed = NULL;
  for (int waited = 0; waited < 60000; waited += 50) {
    free(timed);
    timed = e2e_read_file(out);
    if (timed && strstr(timed, "register_ms=") && strchr(timed, '\n'))
      break;
    e2e_sleep_ms(50);
  }
  e2e_signal_daemon(&env, SIGCONT);
  touch(go);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(timed != NULL && strstr(timed, "register_ms="), "no timings: %s", r.err);
  cr_assert(lt(long, e2e_field(timed, "fork_ms"), 1000), "%s\n%s", timed, r.err);
  cr_assert(lt(long, e2e_field(timed, "register_ms"), 1000), "%s\n%s", timed, r.err);
  cr_assert(ge(int, e2e_count_lines(r.err, "the connection is given up"), 1), "%s", r.err);
  check_given_up_sessions(pid, r.out, r.err);
  free(timed);
  e2e_result_free(&r);
}

/* Drop mode, the daemon stopped until the program has exited: the
 * connection was given up (a fork and a registration ask for it), the
 * next try was not due yet, and the exit tries once more. The stopped
 * daemon's queue takes that connection, so once it reads again a last
 * session of the program ends clean, its END counting every event no
 * session stored. Before, the exit had no connection and those events
 * were counted nowhere. */
Test(e2e_transport, in_drop_mode_an_exit_after_a_given_up_connection_counts_the_undelivered) {
  char go[200];
  snprintf(go, sizeof go, "%s/go", env.dir);
  touch(go);
  char *argv[] = {(char *)e2e_bin("drop_waits"), "300", go, NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  e2e_signal_daemon(&env, SIGSTOP);
  pid_t pid = e2e_spawn(&env, argv, envv);
  int status;
  cr_assert(waitpid(pid, &status, 0) == pid);
  e2e_signal_daemon(&env, SIGCONT);
  cr_assert(eq(int, WIFEXITED(status) && WEXITSTATUS(status) == 0, 1), "status 0x%x", status);
  char out[200];
  snprintf(out, sizeof out, "%s/out.%d", env.dir, (int)pid);
  char *text = e2e_read_file(out);
  cr_assert(text != NULL);
  e2e_wait_disconnected(&env, 10000);
  check_given_up_sessions(pid, text, "");
  free(text);
}

static double wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* 1 when a session of pid began (its HELLO, by the client's wall clock)
 * between from_ms and to_ms. */
static int began_within(pid_t pid, double from_ms, double to_ms) {
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s;
  int found = 0;
  for (int n = 0; (s = session_of_pid(ss, pid, n)) != NULL; n++)
    found |= e2e_num(s, "start_ms") >= from_ms && e2e_num(s, "start_ms") <= to_ms;
  cJSON_Delete(ss);
  return found;
}

/* Stops the daemon for ms while the program (tests/programs/retrying)
 * makes a burst (burst: its file). */
static void stop_with_a_burst(const char *burst, int ms) {
  e2e_signal_daemon(&env, SIGSTOP);
  touch(burst);
  e2e_sleep_ms(ms);
  unlink(burst);
  e2e_signal_daemon(&env, SIGCONT);
}

/* Drop mode: while the daemon reads nothing, each new connection is given
 * up in turn and the retry interval doubles (0.1, 0.2, 0.4 ... s; 3.2 s or
 * more after 6 s). Once a connection has carried events for a second it
 * starts again from 0.1 s, also when that connection is given up in its
 * turn: after a stop of 1 s the program is back within moments. Before,
 * the next try waited the last interval out, up to 5 s, dropping
 * everything meanwhile. The sessions' start times, asked for once the
 * program is done, tell when each connection was made. */
Test(e2e_transport, in_drop_mode_a_connection_that_worked_starts_the_retry_interval_again) {
  char stop[200], burst[200];
  snprintf(stop, sizeof stop, "%s/stop", env.dir);
  snprintf(burst, sizeof burst, "%s/burst", env.dir);
  char *argv[] = {(char *)e2e_bin("retrying"), stop, burst, NULL};
  char *envv[] = {"HEAPTRACE_MODE=drop", NULL};
  pid_t pid = e2e_spawn(&env, argv, envv);
  e2e_sleep_ms(1500);
  stop_with_a_burst(burst, 6000);
  double back = wall_ms();
  e2e_sleep_ms(7000); /* the next try, up to 5 s on, and a connection that lasts */
  double stopped = wall_ms();
  stop_with_a_burst(burst, 1000);
  e2e_sleep_ms(2000);
  touch(stop);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  e2e_wait_disconnected(&env, 10000);
  cr_assert(began_within(pid, back, back + 5500),
            "no connection within 5.5 s of the daemon reading again\n%s", r.err);
  cr_assert(began_within(pid, stopped, stopped + 2500),
            "no new connection within 2.5 s of a stop of 1 s: the retry interval was not "
            "started again\n%s",
            r.err);
  check_given_up_sessions(pid, r.out, r.err);
  e2e_result_free(&r);
}

Test(e2e_transport, a_bad_mode_warns_once_and_stays_lossless) {
  char *argv[] = {(char *)e2e_bin("threads_client"), "1", "2000", NULL};
  char *envv[] = {"HEAPTRACE_MODE=fast", NULL};
  e2e_result_t r = e2e_run(&env, argv, envv);
  cr_assert(eq(int, r.status, 0));
  cr_assert(eq(int, e2e_count_lines(r.err, "HEAPTRACE_MODE=fast"), 1), "%s", r.err);
  check_counts(1, r.out);
  e2e_result_free(&r);
}

/* A relative HEAPTRACE_SOCKET is made absolute from the working directory
 * (test_e2e_daemon); one that would then not fit a socket address is
 * kept as given, and said once. */
Test(e2e_transport, a_relative_socket_path_too_long_to_make_absolute_is_said_and_kept) {
  char name[sizeof "HEAPTRACE_SOCKET=" + 107];
  snprintf(name, sizeof name, "HEAPTRACE_SOCKET=%0107d", 7); /* 107 bytes: "/" + it is too long */
  char *argv[] = {(char *)e2e_bin("threads_client"), "1", "100", NULL};
  char *envv[] = {name, NULL};
  e2e_result_t r = e2e_run(&env, argv, envv);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "is relative and is kept so"), 1), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "cannot connect to heaptraced at 0000"), 1), "%s",
            r.err);
  e2e_result_free(&r);
}

/* ---- exec: a program that replaces itself ends its session whole ---- */

/* The session of pid that is the nth (from 0), checked to have ended
 * clean with exactly `events` events and none lost. */
static void check_exec_session(const cJSON *ss, long long pid, int nth, long long events,
                               const char *what) {
  const cJSON *s = clean_session_of_pid(ss, pid, nth, what);
  cr_assert(eq(dbl, e2e_num(s, "events"), (double)events), "%s", what);
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0), "%s", what);
}

/* The value of key= in the second line that has it. */
static long long second_field(const char *text, const char *key) {
  const char *nl = strchr(text, '\n');
  return nl ? e2e_field(nl + 1, key) : -1;
}

/* Every form of exec (the arrays, the lists, PATH searched, a descriptor)
 * ships what the program recorded - 2001 events made just before, none
 * shipped yet - and ends its session clean; the new image, traced too,
 * has a session of its own under the same pid. Before, those events went
 * with the old image, and the session ended "disconnected" with none
 * counted as lost. */
Test(e2e_transport, every_form_of_exec_ends_the_session_whole_and_the_new_image_has_its_own) {
  static const char *const forms[] = {"v", "vp", "ve", "l", "lp", "le", "fd", "at"};
  char path_env[600];
  snprintf(path_env, sizeof path_env, "PATH=%s", HT_BIN_DIR);
  for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
    int searched = forms[i][strlen(forms[i]) - 1] == 'p';
    const char *self = searched ? "exec_client" : e2e_bin("exec_client");
    char *argv[] = {(char *)e2e_bin("exec_client"),
                    "1000",
                    (char *)forms[i],
                    (char *)self,
                    "exec_client",
                    "500",
                    NULL};
    char *envv[] = {path_env, NULL};
    e2e_result_t r = e2e_run(&env, argv, envv);
    cr_assert(eq(int, r.status, 0), "exec%s: %s", forms[i], r.err);
    long long pid = e2e_field(r.out, "pid");
    cr_assert(eq(i64, second_field(r.out, "pid"), pid), "exec%s: %s", forms[i], r.out);
    cr_assert(eq(i64, e2e_field(r.out, "events"), 2001), "exec%s: %s", forms[i], r.out);
    cr_assert(eq(i64, second_field(r.out, "events"), 1001), "exec%s: %s", forms[i], r.out);
    cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    char what[32];
    snprintf(what, sizeof what, "exec%s", forms[i]);
    check_exec_session(ss, pid, 0, 2001, what);
    check_exec_session(ss, pid, 1, 1001, what);
    cr_assert(session_of_pid(ss, pid, 2) == NULL, "%s", what);
    cJSON_Delete(ss);
    e2e_result_free(&r);
  }
}

/* An exec that fails returns its error as before; tracing goes on in a
 * new session, and between the two every event is stored. */
Test(e2e_transport, a_failed_exec_keeps_its_error_and_tracing_goes_on_in_a_new_session) {
  char *argv[] = {(char *)e2e_bin("exec_client"), "1000",        "v",
                  "/nonexistent/exec_client",     "exec_client", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(i64, e2e_field(r.out, "failed"), ENOENT), "%s", r.out);
  cr_assert(eq(i64, e2e_field(r.out, "events_after"), 2001), "%s", r.out);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 0), "said nothing: %s", r.err);
  long long pid = e2e_field(r.out, "pid");
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  check_exec_session(ss, pid, 0, 2001, "before the exec");
  check_exec_session(ss, pid, 1, 2001, "after it");
  cr_assert(session_of_pid(ss, pid, 2) == NULL);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* A forked child's exec ends the child's session whole, the parent's
 * untouched; a vforked child, which shares the parent's memory, execs
 * without touching the parent's connection (the parent goes on, one
 * session). */
Test(e2e_transport, an_exec_in_a_forked_or_vforked_child_leaves_the_parent_whole) {
  static const char *const hows[] = {"fork-v", "vfork-v"};
  for (int i = 0; i < 2; i++) {
    char *argv[] = {(char *)e2e_bin("exec_client"),
                    "300",
                    (char *)hows[i],
                    (char *)e2e_bin("exec_client"),
                    "exec_client",
                    "200",
                    NULL};
    /* The child starts its flusher: under TSan, as in the fork test. */
    char *envv[] = {"TSAN_OPTIONS=die_after_fork=0 halt_on_error=1", NULL};
    e2e_result_t r = e2e_run(&env, argv, envv);
    cr_assert(eq(int, r.status, 0), "%s: %s", hows[i], r.err);
    long long parent = e2e_field(r.out, "parent"), child = e2e_field(r.out, "pid");
    cr_assert(eq(i64, e2e_field(r.out, "cancel_on"), 1), "%s: %s", hows[i], r.out);
    long long forked = i == 0;
    cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    check_exec_session(ss, parent, 0, forked ? 601 : 1202, hows[i]);
    cr_assert(session_of_pid(ss, parent, 1) == NULL, "%s", hows[i]);
    /* The child: its own rounds (forked only), then the new image's. */
    if (forked)
      check_exec_session(ss, child, 0, 601, "the forked child");
    long long image = forked ? second_field(r.out, "events") : e2e_field(r.out, "events");
    cr_assert(eq(i64, image, 401), "%s: %s", hows[i], r.out);
    check_exec_session(ss, child, forked, 401, "the child's new image");
    cr_assert(session_of_pid(ss, child, forked + 1) == NULL, "%s", hows[i]);
    cJSON_Delete(ss);
    e2e_result_free(&r);
  }
}

/* daemon() has the parent leave by _exit, which skips atexit: the parent
 * ships everything first, so its session, ended "disconnected" as any
 * _exit ends one, has every event; the daemonized child is a session of
 * its own. bin: exec_client, linked one way or another. */
static void check_daemonized(const char *bin) {
  cJSON *before = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  double known = cJSON_GetArraySize(cJSON_GetObjectItem(before, "sessions"));
  cJSON_Delete(before);
  char *argv[] = {(char *)bin, "1000", "daemon", NULL};
  /* The child starts its flusher: under TSan, as in the fork test. */
  char *envv[] = {"TSAN_OPTIONS=die_after_fork=0 halt_on_error=1", NULL};
  e2e_result_t r = e2e_run(&env, argv, envv);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  long long parent = e2e_field(r.out, "parent");
  cr_assert(eq(i64, e2e_field(r.out, "parent_events"), 2001), "%s", r.out);
  /* The child goes on after the parent's exit: wait until it has ended. */
  cJSON *ss = NULL;
  const cJSON *child = NULL;
  for (int waited = 0; !child && waited < 10000; waited += 50) {
    cJSON_Delete(ss);
    e2e_sleep_ms(50);
    ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(ss, "sessions")) {
      if (e2e_num(s, "id") > known && (long long)e2e_num(s, "pid") != parent &&
          strcmp(e2e_str(s, "end_reason"), "running") != 0)
        child = s;
    }
  }
  cr_assert(child != NULL, "%s: the daemonized child's session did not end", bin);
  const cJSON *ps = session_of_pid(ss, parent, 0);
  cr_assert(ps != NULL);
  cr_assert(eq(str, (char *)e2e_str(ps, "end_reason"), "disconnected"), "%s", bin);
  cr_assert(eq(dbl, e2e_num(ps, "events"), 2001), "%s", bin);
  cr_assert(eq(str, (char *)e2e_str(child, "end_reason"), "clean"), "%s", bin);
  cr_assert(eq(dbl, e2e_num(child, "events"), 2001), "%s", bin);
  cr_assert(eq(dbl, e2e_num(child, "lost"), 0), "%s", bin);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

Test(e2e_transport, a_program_that_daemonizes_loses_none_of_the_parents_events) {
  check_daemonized(e2e_bin("exec_client"));
}

/* A program linked fully statically has no C library exec behind
 * libheaptrace's to find: the PATH-searching forms search PATH in the
 * library, with the C library's errors, and daemon() is the library's
 * (built without sanitizers only). */
Test(e2e_transport, a_fully_static_program_execs_by_name_and_keeps_its_errors) {
  const char *bin = e2e_bin("exec_client_static");
  if (access(bin, X_OK) != 0)
    e2e_skip_test(&env, "no fully static exec_client in this build (sanitizers)");
  char path_env[600];
  snprintf(path_env, sizeof path_env, "PATH=/nonexistent:%s", HT_BIN_DIR);
  char *envv[] = {path_env, NULL};
  char *found[] = {(char *)bin,          "1000", "vp", "exec_client_static",
                   "exec_client_static", "500",  NULL};
  e2e_result_t r = e2e_run(&env, found, envv);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  long long pid = e2e_field(r.out, "pid");
  cr_assert(eq(i64, second_field(r.out, "events"), 1001), "%s", r.out);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  check_exec_session(ss, pid, 0, 2001, "static, before the exec");
  check_exec_session(ss, pid, 1, 1001, "static, the new image");
  cJSON_Delete(ss);
  e2e_result_free(&r);
  char *missing[] = {(char *)bin, "10", "vp", "no-such-program", "x", NULL};
  r = e2e_run(&env, missing, envv);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(i64, e2e_field(r.out, "failed"), ENOENT), "%s", r.out);
  e2e_result_free(&r);
  /* A script without #!, found on PATH or named by its path, runs with
   * /bin/sh, its arguments after its path. */
  char dir[400], script[450];
  snprintf(dir, sizeof dir, "%s/scripts", env.dir);
  snprintf(script, sizeof script, "%s/htscript", dir);
  cr_assert(eq(int, mkdir(dir, 0700), 0));
  FILE *fp = fopen(script, "w");
  cr_assert(ne(ptr, (void *)fp, NULL));
  fputs("echo \"script=$0 args=$*\"\n", fp);
  cr_assert(eq(int, fclose(fp), 0));
  cr_assert(eq(int, chmod(script, 0700), 0));
  snprintf(path_env, sizeof path_env, "PATH=/nonexistent:%s", dir);
  char want[500];
  snprintf(want, sizeof want, "script=%s args=a b c", script);
  const char *names[] = {"htscript", script};
  for (int i = 0; i < 2; i++) {
    char *shell[] = {(char *)bin, "10", "vp", (char *)names[i], "htscript", "a", "b c", NULL};
    r = e2e_run(&env, shell, envv);
    cr_assert(eq(int, r.status, 0), "%s", r.err);
    cr_assert(eq(int, e2e_count_lines(r.out, want), 1), "%s: %s", names[i], r.out);
    ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    check_exec_session(ss, e2e_field(r.out, "pid"), 0, 21, names[i]);
    cJSON_Delete(ss);
    e2e_result_free(&r);
  }
  check_daemonized(bin); /* its daemon() is the library's too */
}

/* Threads cancelled (pthread_cancel) while they write the SITE records of
 * new call sites, the transport's lock held: the library's writes are no
 * cancellation points for them, so none dies holding the lock, and the
 * program ends (it hung before, its other threads waiting for the lock
 * forever), its session whole. */
Test(e2e_transport, threads_cancelled_while_they_trace_leave_no_lock_held) {
  char *argv[] = {(char *)e2e_bin("cancel_client"), "8", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  siginfo_t info = {0};
  for (int waited = 0; info.si_pid != pid; waited += 20) {
    if (waited >= 30000) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      cr_fail("the program hung after cancelling its threads");
    }
    e2e_sleep_ms(20);
    cr_assert(eq(int, waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT), 0));
  }
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(i64, e2e_field(r.out, "cancelled"), 8), "%s", r.out);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = clean_session_of_pid(ss, pid, 0, "the cancelling program");
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", NULL, NULL);
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "totals"), "agree")),
            "the daemon's totals are the client's");
  cJSON_Delete(j);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}

/* A thread whose event buffer cannot be mapped (the address space capped:
 * RLIMIT_AS) has its events counted as lost, with one warning, and the
 * program goes on; built without sanitizers only. */
Test(e2e_transport, a_thread_without_an_event_buffer_has_its_events_counted_as_lost) {
  const char *bin = e2e_bin("nomap_client");
  if (access(bin, X_OK) != 0)
    e2e_skip_test(&env, "no nomap_client in this build (sanitizers)");
  char *argv[] = {(char *)bin, "3000", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "cannot map a thread's event buffer"), 1), "%s", r.err);
  cJSON *ss = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItem(ss, "sessions"), 0);
  cr_assert(s != NULL);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), (double)e2e_field(r.out, "traced")), "%s", r.out);
  cr_assert(eq(dbl, e2e_num(s, "lost"), (double)e2e_field(r.out, "untraced")), "%s", r.out);
  cJSON_Delete(ss);
  e2e_result_free(&r);
}
