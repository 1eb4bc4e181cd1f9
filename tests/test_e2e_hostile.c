/* test_e2e_hostile.c - heaptraced against inputs no real client sends.
 *
 * Each test runs one hostile connection (tests/raw_client.c) beside a
 * well-behaved one, the bystander, that says HELLO, a SITE and six events
 * before the hostile connection starts and three more events and END after
 * the daemon dealt with it. A test then checks four things:
 *   1. the daemon's log has the one line naming what was wrong,
 *   2. the hostile session, when one existed, is marked "protocol-error"
 *      with the same reason in end_detail (heapctl sessions --json),
 *   3. the bystander is complete and exact (stats and the sessions table),
 *   4. the daemon is alive and still answers heapctl.
 * Every test ends by stopping the daemon, which must exit 0 (under ASan:
 * nothing leaked on the error path). Inputs the protocol tolerates (a
 * sequence gap, a free of an unknown pointer) must not end the session.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "ht_event.h"
#include "raw_client.h"

#define BYSTANDER_PID 700001u
#define HOSTILE_PID 700002u
#define HOSTILE_SITE 7
#define FLOOD_SITES 10000
/* The bound on the daemon's peak memory while it stores the flood. A TSan
 * build of the daemon keeps shadow memory for all it touches (four to
 * five times here), so its bound is scaled, not dropped. So is an ASan
 * build's, for its redzones and quarantine: 155 to 207 MB (the most with
 * the other suites running beside it), where the plain build's peaked at
 * 100 to 140 MB. */
#ifdef HT_TEST_TSAN
#define FLOOD_RSS_LIMIT_KB (5 * 200 * 1024L)
#elif defined(__SANITIZE_ADDRESS__)
#define FLOOD_RSS_LIMIT_KB (300 * 1024L)
#else
#define FLOOD_RSS_LIMIT_KB (200 * 1024L)
#endif

E2E_SUITE(e2e_hostile, 30);

/* ======================================================================
 * Reading results
 * ==================================================================== */

static char *str(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  cr_assert(eq(int, cJSON_IsString(j), 1), "no string '%s'", k);
  return j->valuestring;
}

/* Asserts that the daemon's log holds exactly `want` lines containing s. */
static void assert_log_lines(const char *s, int want) {
  char *log = e2e_read_file(env.log);
  cr_assert(eq(int, e2e_count_lines(log, s), want), "log lines with \"%s\" in %s:\n%s", s, env.log,
            log);
  free(log);
}

/* heapctl sessions --json, parsed. */
static cJSON *sessions(void) {
  e2e_result_t r = e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

/* heapctl stats -s id --json, parsed. */
static cJSON *stats(int id) {
  char ids[16];
  snprintf(ids, sizeof ids, "%d", id);
  e2e_result_t r = e2e_heapctl(&env, "stats", "-s", ids, "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl stats -s %d: %s", id, r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

/* ======================================================================
 * The four checks
 * ==================================================================== */

/* 3: the bystander ended clean with every event stored and counted. */
static void assert_bystander_exact(void) {
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, BYSTANDER_PID);
  cr_assert(ne(ptr, (void *)s, NULL), "no bystander session");
  int id = (int)e2e_num(s, "id");
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(ptr, cJSON_GetObjectItemCaseSensitive(s, "end_detail"), NULL));
  cr_assert(eq(dbl, e2e_num(s, "events"), RAW_SESSION_EVENTS));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(all);

  cJSON *st = stats(id);
  cr_assert(eq(dbl, e2e_num(st, "events"), RAW_SESSION_EVENTS));
  cr_assert(eq(dbl, e2e_num(st, "allocations"), RAW_SESSION_ALLOCS));
  cr_assert(eq(dbl, e2e_num(st, "frees"), RAW_SESSION_FREES));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), RAW_SESSION_BYTES));
  cr_assert(eq(dbl, e2e_num(st, "current_blocks"), RAW_SESSION_BLOCKS));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
  cJSON_Delete(st);

  /* The table a person reads says the same: END column, events, lost. */
  e2e_result_t r = e2e_heapctl(&env, "sessions", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  char row[128], pid[32];
  snprintf(pid, sizeof pid, " %u ", BYSTANDER_PID);
  snprintf(row, sizeof row, " %-15s %10d %6d", "clean", RAW_SESSION_EVENTS, 0);
  const char *at = strstr(r.out, pid);
  cr_assert(ne(ptr, (void *)at, NULL), "no row for pid %u:\n%s", BYSTANDER_PID, r.out);
  size_t len = strcspn(at, "\n");
  cr_assert(ne(ptr, (void *)memmem(at, len, row, strlen(row)), NULL),
            "row for the bystander is\n%.*s", (int)len, at);
  e2e_result_free(&r);
}

/* 4: the daemon process is still there and answers. */
static void assert_daemon_alive(void) {
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0), "heaptraced exited; see %s",
            env.log);
  e2e_result_t r = e2e_heapctl(&env, "sessions", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.out, "ID"), 1), "no sessions table:\n%s", r.out);
  e2e_result_free(&r);
}

/* Last check of every test: SIGTERM stops the daemon with status 0, which
 * under ASan also means that the hostile input leaked nothing. */
static void assert_daemon_stops_cleanly(void) {
  e2e_stop_daemon(&env);
  char *log = e2e_read_file(env.log);
  size_t len = strlen(log);
  while (len > 0 && log[len - 1] == '\n')
    log[--len] = '\0';
  const char *last = strrchr(log, '\n');
  last = last ? last + 1 : log;
  cr_assert(ne(ptr, (void *)strstr(last, "stopped; every received event is committed"), NULL),
            "the log does not end with the daemon's last word:\n%s", log);
  free(log);
}

/* 1 + 2: the hostile session is marked with detail and the log says so. */
static void assert_marked(const char *detail) {
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL), "the hostile connection has no session");
  cr_assert(eq(str, str(s, "end_reason"), "protocol-error"));
  cr_assert(eq(str, str(s, "end_detail"), (char *)detail));
  char line[512];
  snprintf(line, sizeof line, "session %d (pid %d): protocol error: %s; connection closed",
           (int)e2e_num(s, "id"), (int)getpid(), detail);
  assert_log_lines(line, 1);
  cJSON_Delete(all);
}

/* 1 + 2 for a connection refused before it had a session: the log names
 * the reason and no session row exists for it. */
static void assert_refused_without_session(const char *detail) {
  char line[512];
  snprintf(line, sizeof line, "connection from pid %d: protocol error: %s; connection closed",
           (int)getpid(), detail);
  assert_log_lines(line, 1);
  cJSON *all = sessions();
  cr_assert(eq(ptr, (void *)e2e_session_of_pid(all, HOSTILE_PID), NULL));
  cr_assert(eq(int, cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(all, "sessions")), 1),
            "only the bystander has a session");
  cJSON_Delete(all);
}

/* The hostile session's stored events are what the sessions list counts. */
static void assert_hostile_events(double want) {
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  cr_assert(eq(dbl, e2e_num(s, "events"), want));
  cJSON *st = stats((int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(st, "events"), want));
  cJSON_Delete(st);
  cJSON_Delete(all);
}

/* ======================================================================
 * Running a hostile connection beside the bystander
 * ==================================================================== */

static void expect_hangup(raw_client_t *c) {
  cr_assert(eq(int, raw_wait_closed(c, RAW_WAIT_MS), 1),
            "the daemon kept a hostile connection open");
  raw_close(c);
}

/* Starts the bystander, runs hostile (which leaves its connection closed),
 * finishes the bystander, then checks the bystander and the daemon. */
static void beside_bystander(void (*hostile)(void)) {
  raw_session_t good;
  raw_session_begin(&good, env.socket, BYSTANDER_PID, "bystander");
  hostile();
  raw_session_finish(&good);
  assert_bystander_exact();
  assert_daemon_alive();
}

/* Connects and says HELLO with HOSTILE_PID and one site. */
static void hostile_start(raw_client_t *c) {
  raw_connect(c, env.socket);
  raw_hello(c, HOSTILE_PID, "hostile");
  raw_site(c, HOSTILE_SITE, 1, "hostile.c", "attack");
}

/* A frame of n mallocs (sizes 10, 20, ...) at distinct addresses. */
static void send_mallocs(raw_client_t *c, raw_stream_t *s, int n) {
  for (int i = 0; i < n; i++) {
    uint64_t k = s->next_seq + s->count;
    raw_stream_malloc(s, HOSTILE_SITE, 0x5000000 + k * 0x100, 10 * (k + 1));
  }
  raw_send_events(c, s);
}

/* ======================================================================
 * Before any HELLO
 * ==================================================================== */

static void send_http_request(void) {
  raw_client_t c;
  raw_connect(&c, env.socket);
  static const char req[] = "GET / HTTP/1.1\r\nHost: heaptraced\r\n\r\n";
  raw_send(&c, req, sizeof req - 1);
  expect_hangup(&c);
}

Test(e2e_hostile, garbage_before_hello_is_refused_without_a_session) {
  beside_bystander(send_http_request);
  /* "GET " read as a length is 542 MB: the frame size check refuses it. */
  assert_refused_without_session("frame length outside 1..HT_PROTO_MAX_FRAME (HT_EFRAMESIZE)");
  assert_daemon_stops_cleanly();
}

static void send_site_first(void) {
  raw_client_t c;
  raw_connect(&c, env.socket);
  raw_site(&c, 1, 1, "early.c", "too_early");
  expect_hangup(&c);
}

Test(e2e_hostile, ingest_record_before_hello_is_refused_as_out_of_order) {
  beside_bystander(send_site_first);
  assert_refused_without_session("first record is site, not hello (HT_EORDER)");
  assert_daemon_stops_cleanly();
}

static void send_bad_magic(void) {
  uint8_t hello[512];
  size_t n = raw_encode_hello(hello, sizeof hello, HOSTILE_PID, "hostile");
  memcpy(hello + RAW_HELLO_MAGIC_AT, "HTRX", 4);
  raw_client_t c;
  raw_connect(&c, env.socket);
  raw_send(&c, hello, n);
  expect_hangup(&c);
}

Test(e2e_hostile, hello_with_bad_magic_is_refused_naming_the_magic) {
  beside_bystander(send_bad_magic);
  assert_refused_without_session(
      "hello record: bad magic: the peer does not speak the heaptrace protocol (HT_EMAGIC)");
  assert_daemon_stops_cleanly();
}

static void send_newer_version(void) {
  uint8_t hello[512];
  size_t n = raw_encode_hello(hello, sizeof hello, HOSTILE_PID, "hostile");
  hello[RAW_HELLO_VERSION_AT] = HT_PROTO_VERSION + 1;
  hello[RAW_HELLO_VERSION_AT + 1] = 0;
  raw_client_t c;
  raw_connect(&c, env.socket);
  raw_send(&c, hello, n);
  expect_hangup(&c);
}

Test(e2e_hostile, hello_with_a_newer_protocol_version_is_refused_naming_the_version) {
  beside_bystander(send_newer_version);
  char detail[160];
  snprintf(detail, sizeof detail,
           "the client speaks protocol version %d, this heaptraced version %d: "
           "upgrade heaptraced (HT_EVERSION)",
           HT_PROTO_VERSION + 1, HT_PROTO_VERSION);
  assert_refused_without_session(detail);
  assert_daemon_stops_cleanly();
}

#define V1_PID 700077u

/* A client of protocol version 1 (no compact events): HELLO says 1 and
 * its events are in the varint form, written here field by field. */
static void send_version_1_session(void) {
  uint8_t hello[512];
  size_t n = raw_encode_hello(hello, sizeof hello, V1_PID, "version1");
  hello[RAW_HELLO_VERSION_AT] = 1;
  hello[RAW_HELLO_VERSION_AT + 1] = 0;
  raw_client_t c;
  raw_connect(&c, env.socket);
  cr_assert(eq(int, raw_send(&c, hello, n), 0));
  raw_site(&c, 1, 7, "old.c", "old_client");
  uint8_t ev[64];
  size_t len = 0;
  uint64_t t = raw_now_ns();
  /* malloc(100) at 0x10000: site 1, heap 0 (as the zero state), system caps */
  ev[len++] = HT_OP_MALLOC | HT_EV_SAME_HEAP | HT_EV_TOTALS_IMPLIED;
  len += ht__varint_put(ev + len, ht_zigzag((int64_t)t));
  len += ht__varint_put(ev + len, 1);
  len += ht__varint_put(ev + len, HT_SYSTEM_HEAP_CAPS);
  len += ht__varint_put(ev + len, ht_zigzag(0x10000));
  len += ht__varint_put(ev + len, 100);
  len += ht__varint_put(ev + len, ht_zigzag(4));
  /* malloc(50) at 0x30000: same site, heap and caps */
  ev[len++] =
      HT_OP_MALLOC | HT_EV_SAME_SITE | HT_EV_SAME_HEAP | HT_EV_SAME_CAPS | HT_EV_TOTALS_IMPLIED;
  len += ht__varint_put(ev + len, ht_zigzag(1000));
  len += ht__varint_put(ev + len, ht_zigzag(0x20000));
  len += ht__varint_put(ev + len, 50);
  len += ht__varint_put(ev + len, ht_zigzag(6));
  uint8_t head[HT_PROTO_EVENTS_HEAD];
  ht_proto_events_head(head, 1, 0, 2, len);
  cr_assert(eq(int, raw_send(&c, head, sizeof head), 0));
  cr_assert(eq(int, raw_send(&c, ev, len), 0));
  raw_end(&c);
  shutdown(c.fd, SHUT_WR);
  cr_assert(raw_wait_closed(&c, RAW_WAIT_MS), "the daemon did not commit the version-1 session");
  raw_close(&c);
}

Test(e2e_hostile, a_client_of_the_previous_protocol_version_is_still_served) {
  beside_bystander(send_version_1_session);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, V1_PID);
  cr_assert(ne(ptr, (void *)s, NULL), "no session of the version-1 client");
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cJSON *st = stats((int)e2e_num(s, "id"));
  cJSON_Delete(all);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 2));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 150));
  cr_assert(eq(dbl, e2e_num(st, "current_blocks"), 2));
  cJSON_Delete(st);
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Framing
 * ==================================================================== */

static void send_zero_length_frame(void) {
  raw_client_t c;
  hostile_start(&c);
  static const uint8_t zero[4] = {0, 0, 0, 0};
  raw_send(&c, zero, sizeof zero);
  expect_hangup(&c);
}

Test(e2e_hostile, zero_length_frame_ends_the_session_as_a_protocol_error) {
  beside_bystander(send_zero_length_frame);
  assert_marked("frame length outside 1..HT_PROTO_MAX_FRAME (HT_EFRAMESIZE)");
  assert_hostile_events(0);
  assert_daemon_stops_cleanly();
}

static void send_oversized_frame(void) {
  raw_client_t c;
  hostile_start(&c);
  uint32_t body = HT_PROTO_MAX_FRAME + 1;
  uint8_t head[8] = {(uint8_t)body,
                     (uint8_t)(body >> 8),
                     (uint8_t)(body >> 16),
                     (uint8_t)(body >> 24),
                     HT_REC_SITE,
                     1,
                     1,
                     0};
  raw_send(&c, head, sizeof head);
  expect_hangup(&c);
}

Test(e2e_hostile, frame_longer_than_1_mib_ends_the_session_as_a_protocol_error) {
  beside_bystander(send_oversized_frame);
  assert_marked("frame length outside 1..HT_PROTO_MAX_FRAME (HT_EFRAMESIZE)");
  assert_daemon_stops_cleanly();
}

static void send_truncated_frame_and_leave(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5000000, 10);
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5000100, 20);
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5000200, 30);
  raw_stream_free(&s, HOSTILE_SITE, 0x5000000, 10);
  raw_send_events(&c, &s);
  /* The next frame stops three bytes short; then the client is gone. */
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5000300, 40);
  raw_stream_free(&s, HOSTILE_SITE, 0x5000100, 20);
  uint8_t head[HT_PROTO_EVENTS_HEAD];
  ht_proto_events_head(head, s.id, 4, s.count, s.len);
  cr_assert(eq(int, raw_send(&c, head, sizeof head), 0));
  cr_assert(eq(int, raw_send(&c, s.buf, s.len - 3), 0));
  raw_close(&c);
}

Test(e2e_hostile, truncated_frame_then_disconnect_keeps_the_complete_frames) {
  beside_bystander(send_truncated_frame_and_leave);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  int id = (int)e2e_num(s, "id");
  cr_assert(eq(str, str(s, "end_reason"), "disconnected"));
  cr_assert(eq(ptr, cJSON_GetObjectItemCaseSensitive(s, "end_detail"), NULL));
  cr_assert(eq(dbl, e2e_num(s, "events"), 4));
  cJSON_Delete(all);
  cJSON *st = stats(id);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 3));
  cr_assert(eq(dbl, e2e_num(st, "frees"), 1));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 50));
  cJSON_Delete(st);
  char line[128];
  snprintf(line, sizeof line, "session %d: client disconnected without END", id);
  assert_log_lines(line, 1);
  assert_log_lines("protocol error", 0);
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Records
 * ==================================================================== */

static void send_unknown_record(void) {
  raw_client_t c;
  hostile_start(&c);
  raw_frame(&c, 0x42, "x", 1);
  expect_hangup(&c);
}

Test(e2e_hostile, unknown_record_type_after_hello_ends_the_session_naming_the_type) {
  beside_bystander(send_unknown_record);
  assert_marked("unknown record type 66 (HT_ERECORD)");
  assert_daemon_stops_cleanly();
}

static void send_string_past_record(void) {
  raw_client_t c;
  hostile_start(&c);
  /* SITE id 9, line 1, file: length 100 but 3 bytes left in the record. */
  static const uint8_t site[] = {9, 1, 100, 0, 'a', 'b', 'c'};
  raw_frame(&c, HT_REC_SITE, site, sizeof site);
  expect_hangup(&c);
}

Test(e2e_hostile, string_running_past_its_record_ends_the_session) {
  beside_bystander(send_string_past_record);
  assert_marked("site record: string runs past the end of its record (HT_ESTRING)");
  assert_daemon_stops_cleanly();
}

static void send_second_hello(void) {
  raw_client_t c;
  hostile_start(&c);
  raw_hello(&c, HOSTILE_PID, "again");
  expect_hangup(&c);
}

Test(e2e_hostile, second_hello_ends_the_session_as_out_of_order) {
  beside_bystander(send_second_hello);
  assert_marked("a second handshake (HT_EORDER)");
  assert_daemon_stops_cleanly();
}

static void send_record_after_end(void) {
  raw_client_t c;
  hostile_start(&c);
  uint8_t buf[64];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_end_rec_t end = {.reason = HT_END_CLEAN};
  ht_proto_put_end(&w, &end);
  ht_site_rec_t late = {8, 1, ht_str("late.c"), ht_str("after_end"), ht_str("")};
  ht_proto_put_site(&w, &late);
  cr_assert(eq(int, w.overflow, 0));
  /* One write, so that both records reach the daemon in one read. */
  cr_assert(eq(int, raw_send(&c, buf, w.len), 0));
  expect_hangup(&c);
}

/* PROTOCOL.md: "a record after END is HT_EORDER". */
Test(e2e_hostile, record_after_end_is_logged_as_out_of_order) {
  beside_bystander(send_record_after_end);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  char line[256];
  snprintf(line, sizeof line,
           "session %d (pid %d): protocol error: site record after END (HT_EORDER)",
           (int)e2e_num(s, "id"), (int)getpid());
  cJSON_Delete(all);
  assert_log_lines(line, 1);
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Events
 * ==================================================================== */

static void send_count_beyond_events(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 2);
  /* Three events follow a header that promises five. */
  for (uint64_t k = 2; k < 5; k++)
    raw_stream_malloc(&s, HOSTILE_SITE, 0x5000000 + k * 0x100, 10 * (k + 1));
  cr_assert(eq(int, raw_send_events_as(&c, &s, 2, 5), 0));
  expect_hangup(&c);
}

Test(e2e_hostile, events_frame_with_count_beyond_its_events_ends_the_session) {
  beside_bystander(send_count_beyond_events);
  assert_marked("stream 1, event 5: record ends before its fields do (HT_ETRUNCATED)");
  /* Nothing of a bad frame is kept: only the first frame's two events. */
  assert_hostile_events(2);
  assert_daemon_stops_cleanly();
}

static void send_unknown_op(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 2);
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5000200, 30);
  /* The operation is bits 0-2 of the event's first byte; 7 names none. */
  ht_event_t bad = {.op = 7, .time_ns = s.time_ns + 1000, .site = HOSTILE_SITE, .size = 8};
  raw_stream_append(&s, &bad);
  raw_send_events(&c, &s);
  expect_hangup(&c);
}

Test(e2e_hostile, event_with_unknown_op_ends_the_session_naming_the_event) {
  beside_bystander(send_unknown_op);
  assert_marked("stream 1, event 3: unknown event operation (HT_EOP)");
  assert_hostile_events(2);
  assert_daemon_stops_cleanly();
}

/* A frame only the worker finds bad, then at once one whose length the
 * event loop refuses: the first in the stream marks the session, and the
 * log holds that one alone. */
static void send_unknown_op_then_zero_length(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 2);
  ht_event_t bad = {.op = 7, .time_ns = s.time_ns + 1000, .site = HOSTILE_SITE, .size = 8};
  raw_stream_append(&s, &bad);
  raw_send_events(&c, &s);
  static const uint8_t zero[4] = {0, 0, 0, 0};
  raw_send(&c, zero, sizeof zero); /* may find the connection closed already */
  expect_hangup(&c);
}

Test(e2e_hostile, the_first_of_two_protocol_errors_marks_the_session_and_alone_is_logged) {
  beside_bystander(send_unknown_op_then_zero_length);
  assert_marked("stream 1, event 2: unknown event operation (HT_EOP)");
  assert_log_lines("protocol error: frame length outside", 0);
  assert_hostile_events(2);
  assert_daemon_stops_cleanly();
}

static void send_sequence_backwards(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 3);
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5100000, 99);
  cr_assert(eq(int, raw_send_events_as(&c, &s, 1, 1), 0));
  expect_hangup(&c);
}

Test(e2e_hostile, sequence_number_going_backwards_ends_the_session) {
  beside_bystander(send_sequence_backwards);
  assert_marked("stream 1: sequence went back from 3 to 1 (HT_EORDER)");
  assert_hostile_events(3);
  assert_daemon_stops_cleanly();
}

static void send_sequence_gap(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 3);
  /* Events 3..9 never arrive; the next frame starts at 10. */
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5100000, 1000);
  raw_stream_malloc(&s, HOSTILE_SITE, 0x5100100, 2000);
  cr_assert(eq(int, raw_send_events_as(&c, &s, 10, 2), 0));
  raw_end(&c);
  expect_hangup(&c);
}

Test(e2e_hostile, sequence_gap_is_recorded_as_lost_and_the_session_ends_clean) {
  beside_bystander(send_sequence_gap);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  int id = (int)e2e_num(s, "id");
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 7));
  cr_assert(eq(dbl, e2e_num(s, "events"), 5));
  cJSON_Delete(all);
  cJSON *st = stats(id);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 5));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 10 + 20 + 30 + 1000 + 2000));
  cJSON_Delete(st);
  assert_log_lines("protocol error", 0);
  assert_daemon_stops_cleanly();
}

static void send_free_of_unknown_pointer(void) {
  raw_client_t c;
  raw_stream_t s;
  hostile_start(&c);
  raw_stream_init(&s, 1, raw_now_ns());
  raw_stream_malloc(&s, HOSTILE_SITE, 0x6000000, 128);
  raw_stream_free(&s, HOSTILE_SITE, 0x6abcdef0, 64); /* never allocated */
  raw_stream_free(&s, HOSTILE_SITE, 0x6000000, 128);
  raw_send_events(&c, &s);
  raw_end(&c);
  expect_hangup(&c);
}

Test(e2e_hostile, free_of_a_pointer_never_allocated_is_counted_not_fatal) {
  beside_bystander(send_free_of_unknown_pointer);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  int id = (int)e2e_num(s, "id");
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 3));
  cJSON_Delete(all);
  cJSON *st = stats(id);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 1));
  cr_assert(eq(dbl, e2e_num(st, "frees"), 2));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 1));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 0));
  cr_assert(eq(dbl, e2e_num(st, "current_blocks"), 0));
  cJSON_Delete(st);
  assert_log_lines("protocol error", 0);
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Control requests
 * ==================================================================== */

static void send_garbage_control(void) {
  static const char junk[] = "this is {not json";
  char *reply = raw_control(env.socket, junk, sizeof junk - 1);
  cr_assert(ne(ptr, (void *)reply, NULL), "no reply to a malformed control request");
  cJSON *j = cJSON_Parse(reply);
  cr_assert(ne(ptr, (void *)j, NULL), "the reply is not JSON: %s", reply);
  cr_assert(eq(int, cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "ok")), 1), "%s", reply);
  cr_assert(eq(dbl, e2e_num(j, "code"), 2), "%s", reply);
  cr_assert(eq(str, str(j, "error"), "the request is not valid JSON"));
  cJSON_Delete(j);
  free(reply);
}

Test(e2e_hostile, control_request_that_is_not_json_gets_an_error_reply) {
  beside_bystander(send_garbage_control);
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * A reconnected client's account of a lost connection (PREVIOUS)
 * ==================================================================== */

#define LOSER_PID 700090u
/* HELLO times: the lost connection's, and the i-th after it, a second
 * apart (heapctl shows them in ms). */
#define LOSER_START 1700000000000000000ull
#define LOSER_AT(i) (LOSER_START + (uint64_t)(i)*1000000000ull)

/* Connects and says HELLO as a client of `version` whose handshake time is
 * start, with flags (HT_HELLO_F_*). */
static void loser_hello(raw_client_t *c, uint32_t pid, uint64_t start, uint16_t flags,
                        uint16_t version) {
  uint8_t buf[512];
  size_t n = raw_encode_hello_as(buf, sizeof buf, pid, "loser", start, flags, version);
  raw_connect(c, env.socket);
  cr_assert(eq(int, raw_send(c, buf, n), 0));
}

/* The connection a daemon lost: 10 mallocs and a LOST record reporting 5
 * dropped, then closed without END (as by a daemon that died: the session
 * ends disconnected). */
static void send_lost_connection(uint32_t pid, uint16_t version) {
  raw_client_t c;
  raw_stream_t s;
  loser_hello(&c, pid, LOSER_START, 0, version);
  raw_site(&c, HOSTILE_SITE, 1, "loser.c", "lose");
  raw_stream_init(&s, 1, raw_now_ns());
  send_mallocs(&c, &s, 10);
  uint8_t buf[64];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_lost(&w, &(ht_lost_rec_t){1, 10, 5, HT_LOST_DROPPED});
  cr_assert(eq(int, raw_send(&c, buf, w.len), 0));
  raw_close(&c);
  e2e_wait_disconnected(&env, RAW_WAIT_MS);
}

/* A reconnected session (its HELLO at start) that sends PREVIOUS records
 * (as a client of `version`) for the connections that began at starts[i],
 * with events[i] events and reported[i] reported lost written on each,
 * then ends clean. */
static void send_previous(uint32_t pid, uint64_t start, uint16_t version, size_t n,
                          const uint64_t *starts, const uint64_t *events,
                          const uint64_t *reported) {
  raw_client_t c;
  loser_hello(&c, pid, start, HT_HELLO_F_RECONNECT, version);
  for (size_t i = 0; i < n; i++) {
    uint8_t buf[64];
    ht_wbuf_t w;
    ht_wbuf_init(&w, buf, sizeof buf);
    ht_proto_put_previous(&w, &(ht_previous_rec_t){starts[i], events[i], reported[i]}, version);
    cr_assert(eq(int, raw_send(&c, buf, w.len), 0));
  }
  raw_end(&c);
  cr_assert(raw_wait_closed(&c, RAW_WAIT_MS), "the daemon did not commit the reconnected session");
  raw_close(&c);
}

/* The session of pid whose HELLO said start, from all (heapctl sessions). */
static const cJSON *session_started(const cJSON *all, uint32_t pid, uint64_t start) {
  const cJSON *s, *found = NULL;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") == pid && e2e_num(s, "start_ms") == (double)(start / 1000000))
      found = s;
  }
  cr_assert(ne(ptr, (void *)found, NULL), "no session of pid %u started at %llu", pid,
            (unsigned long long)start);
  return found;
}

/* Asserts session s's lost count, and its reasons: dropped and unread. */
static void assert_lost(const cJSON *s, double dropped, double unread) {
  const cJSON *why = cJSON_GetObjectItemCaseSensitive(s, "lost_by_reason");
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(why, "dropped");
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(why, "unread");
  cr_assert(eq(dbl, d ? cJSON_GetNumberValue(d) : 0, dropped), "dropped");
  cr_assert(eq(dbl, u ? cJSON_GetNumberValue(u) : 0, unread), "unread");
  cr_assert(eq(dbl, e2e_num(s, "lost"), dropped + unread));
}

/* 14 events written on the lost connection and LOST records counting 12
 * more: the daemon read 10 events and a record counting 5, so 4 events
 * and 7 reported were never read: 11 unread. A connection whose session
 * is nowhere has all of its account counted in the session that reports
 * it. Said again (a client sends its accounts again when the connection
 * it wrote them on is lost), nothing more is counted, anywhere. */
Test(e2e_hostile, previous_counts_what_a_lost_connection_carried_and_was_never_read) {
  send_lost_connection(LOSER_PID, HT_PROTO_VERSION);
  const uint64_t starts[] = {LOSER_START, LOSER_AT(-1)}; /* the second is nowhere */
  const uint64_t events[] = {14, 3}, reported[] = {12, 4};
  send_previous(LOSER_PID, LOSER_AT(1), HT_PROTO_VERSION, 1, starts, events, reported);
  send_previous(LOSER_PID, LOSER_AT(2), HT_PROTO_VERSION, 2, starts, events, reported);
  send_previous(LOSER_PID, LOSER_AT(3), HT_PROTO_VERSION, 2, starts, events, reported);
  cJSON *all = sessions();
  const cJSON *lost = session_started(all, LOSER_PID, LOSER_START);
  cr_assert(eq(str, str(lost, "end_reason"), "disconnected"));
  cr_assert(eq(dbl, e2e_num(lost, "events"), 10));
  assert_lost(lost, 5, 11);
  assert_lost(session_started(all, LOSER_PID, LOSER_AT(1)), 0, 0);
  assert_lost(session_started(all, LOSER_PID, LOSER_AT(2)), 0, 3 + 4);
  assert_lost(session_started(all, LOSER_PID, LOSER_AT(3)), 0, 0);
  cJSON_Delete(all);
  assert_log_lines("events its client wrote were never read", 1);
  assert_log_lines("its 3 events (and 4 more its client reported lost on it) are counted as lost "
                   "here",
                   1);
  assert_daemon_stops_cleanly();
}

/* A version 3 client's record counts events only: of its 14, 4 were
 * never read; the LOST record the daemon read is not subtracted from
 * them. */
Test(e2e_hostile, previous_of_a_version_3_client_counts_its_events_only) {
  send_lost_connection(LOSER_PID, 3);
  const uint64_t starts[] = {LOSER_START}, events[] = {14}, reported[] = {0};
  send_previous(LOSER_PID, LOSER_AT(1), 3, 1, starts, events, reported);
  cJSON *all = sessions();
  assert_lost(session_started(all, LOSER_PID, LOSER_START), 5, 4);
  cJSON_Delete(all);
  assert_daemon_stops_cleanly();
}

static void send_previous_unasked(void) {
  raw_client_t c;
  hostile_start(&c);
  uint8_t buf[64];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_previous(&w, &(ht_previous_rec_t){LOSER_START, 10, 0}, HT_PROTO_VERSION);
  raw_send(&c, buf, w.len);
  expect_hangup(&c);
}

Test(e2e_hostile, previous_in_a_session_that_reconnects_nothing_is_a_protocol_error) {
  beside_bystander(send_previous_unasked);
  assert_marked("a previous record in a session that continues none (HT_EORDER)");
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Accounts left beside the socket (daemon/left.h)
 * ==================================================================== */

/* Writes n bytes into env.socket's sibling SOCKET.left.<name>. */
static void leave_file(const char *name, const void *bytes, size_t n) {
  char path[200];
  snprintf(path, sizeof path, "%s.left.%s", env.socket, name);
  FILE *fp = fopen(path, "wb");
  cr_assert(ne(ptr, (void *)fp, NULL), "cannot write %s", path);
  cr_assert(eq(sz, fwrite(bytes, 1, n, fp), n));
  fclose(fp);
}

/* Files beside the socket that are no accounts to take: bytes that are not
 * frames, an account holding events, one cut short, one too large, a
 * link, and accounts still being written, one abandoned two minutes ago.
 * The daemon starts and serves; each is said in its log; those it read
 * are gone, the abandoned one too; the link, what it points at and the
 * one being written now are untouched. */
Test(e2e_hostile, files_left_beside_the_socket_that_are_no_accounts_are_said_and_harm_nothing) {
  e2e_stop_daemon(&env);
  leave_file("garbage", "GET / HTTP/1.0\r\n\r\n", 18);
  uint8_t buf[1024];
  size_t n = raw_encode_hello_as(buf, sizeof buf, HOSTILE_PID, "hostile", 1234567890000000000ull,
                                 HT_HELLO_F_RECONNECT, HT_PROTO_VERSION);
  leave_file("cut", buf, n - 3);
  uint8_t events[HT_PROTO_EVENTS_HEAD];
  ht_proto_events_head(events, 1, 0, 0, 0);
  memcpy(buf + n, events, sizeof events);
  leave_file("events", buf, n + sizeof events);
  static uint8_t big[HT_PROTO_MAX_FRAME];
  leave_file("big", big, sizeof big);
  char link[200];
  snprintf(link, sizeof link, "%s.left.link", env.socket);
  cr_assert(eq(int, symlink(env.log, link), 0));
  leave_file("1.2.tmp", buf, n);
  leave_file("3.4.tmp", buf, n);
  char tmp[200];
  snprintf(tmp, sizeof tmp, "%s.left.1.2.tmp", env.socket);
  struct timespec old[2] = {{time(NULL) - 120, 0}, {time(NULL) - 120, 0}};
  cr_assert(eq(int, utimensat(AT_FDCWD, tmp, old, 0), 0));
  e2e_restart_daemon(&env);
  assert_log_lines("left.garbage: not a client's account", 1);
  assert_log_lines("left.cut: not a client's account", 1);
  assert_log_lines("the account left in", 1);
  assert_log_lines("events records do not belong in an account (HT_EORDER)", 1);
  assert_log_lines("left.big: not taken as a client's account: 1048576 bytes", 1);
  assert_log_lines("left.link: not taken as a client's account", 1);
  struct stat sb;
  cr_assert(eq(int, lstat(link, &sb), 0), "the link is gone");
  snprintf(link, sizeof link, "%s.left.garbage", env.socket);
  cr_assert(ne(int, lstat(link, &sb), 0), "the garbage is still there");
  assert_log_lines("left.1.2.tmp: removed, an account its client did not finish writing", 1);
  cr_assert(ne(int, lstat(tmp, &sb), 0), "the abandoned account is still there");
  snprintf(tmp, sizeof tmp, "%s.left.3.4.tmp", env.socket);
  cr_assert(eq(int, lstat(tmp, &sb), 0), "the account being written is gone");
  assert_log_lines("3.4.tmp", 0);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL), "the account with events has no session");
  cr_assert(eq(str, str(s, "end_reason"), "protocol-error"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 0));
  cJSON_Delete(all);
  assert_daemon_alive();
  assert_daemon_stops_cleanly();
}

/* An account left while the daemon runs (one written as it started,
 * after its first look, or while it could not be reached) is taken within
 * seconds, as at a start. Written as a client writes it: under a .tmp
 * name, then renamed. */
Test(e2e_hostile, an_account_left_while_the_daemon_runs_is_taken_within_seconds) {
  uint8_t buf[1024];
  size_t n = raw_encode_account(buf, sizeof buf, HOSTILE_PID, "late", 1234567890000000000ull, 42);
  leave_file("7.8.tmp", buf, n);
  char tmp[200], path[200];
  snprintf(tmp, sizeof tmp, "%s.left.7.8.tmp", env.socket);
  snprintf(path, sizeof path, "%s.left.7.8", env.socket);
  cr_assert(eq(int, rename(tmp, path), 0));
  const cJSON *s = NULL;
  cJSON *all = NULL;
  for (int waited = 0; !s; waited += 100) {
    cr_assert(lt(int, waited, 10000), "the account was not taken in 10 s");
    e2e_sleep_ms(100);
    cJSON_Delete(all);
    all = sessions();
    s = e2e_session_of_pid(all, HOSTILE_PID);
  }
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 0));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 42));
  cJSON_Delete(all);
  struct stat sb;
  cr_assert(ne(int, stat(path, &sb), 0), "the account is still there");
  assert_log_lines("ended while no heaptraced was there", 1);
  assert_daemon_stops_cleanly();
}

/* A daemon killed while it stored an account leaves it as NAME.taking:
 * the next one takes it again only if its session is not stored (an
 * account is stored in one transaction, whole or not at all). Here one
 * whose session is stored (the daemon was killed after the commit) and
 * one whose is not (before it): each is one session in the end, and both
 * files are gone. */
Test(e2e_hostile, an_account_a_killed_daemon_was_storing_is_stored_once) {
  e2e_stop_daemon(&env);
  uint8_t a[1024], b[1024];
  size_t na = raw_encode_account(a, sizeof a, HOSTILE_PID, "again", 1234567890000000000ull, 42);
  size_t nb = raw_encode_account(b, sizeof b, HOSTILE_PID, "again", 1234567891000000000ull, 7);
  leave_file("5.6", a, na);
  e2e_restart_daemon(&env);
  e2e_stop_daemon(&env);
  leave_file("5.6.taking", a, na);
  leave_file("9.10.taking", b, nb);
  e2e_restart_daemon(&env);
  cJSON *all = sessions();
  int n = 0;
  double lost = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") == HOSTILE_PID) {
      n++;
      lost += e2e_num(s, "lost");
    }
  }
  cJSON_Delete(all);
  cr_assert(eq(int, n, 2), "%d sessions of the two accounts", n);
  cr_assert(eq(dbl, lost, 42 + 7));
  assert_log_lines("left.5.6: the account of pid 700002 is stored already", 1);
  assert_log_lines("(again) connected", 2); /* not the one stored already */
  /* Their files go once they are stored: the daemon answers a query
   * once what it queued before is committed. */
  static const char *const names[] = {"5.6", "5.6.taking", "9.10.taking"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char path[200];
    snprintf(path, sizeof path, "%s.left.%s", env.socket, names[i]);
    struct stat sb;
    cr_assert(ne(int, lstat(path, &sb), 0), "%s is still there", path);
  }
  assert_daemon_stops_cleanly();
}

/* ======================================================================
 * Volume
 * ==================================================================== */

static void send_site_flood(void) {
  static char file[HT_PROTO_MAX_STRING + 1], func[HT_PROTO_MAX_STRING + 1];
  memset(file, 'f', HT_PROTO_MAX_STRING);
  memset(func, 'g', HT_PROTO_MAX_STRING);
  raw_client_t c;
  hostile_start(&c);
  /* 10000 records of the longest strings allowed: about 80 MB. */
  for (uint32_t i = 0; i < FLOOD_SITES; i++)
    raw_site(&c, 100 + i, i, file, func);
  raw_end(&c);
  expect_hangup(&c);
}

Test(e2e_hostile, flood_of_site_records_is_stored_in_bounded_memory) {
  e2e_restart_daemon_small_quarantine(&env);
  beside_bystander(send_site_flood);
  long kb = e2e_peak_rss_kb(env.daemon);
  cr_assert(lt(long, kb, FLOOD_RSS_LIMIT_KB), "heaptraced peaked at %ld kB", kb);
  cJSON *all = sessions();
  const cJSON *s = e2e_session_of_pid(all, HOSTILE_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM sites WHERE session = %d", (int)e2e_num(s, "id"));
  cJSON_Delete(all);
  cr_assert(eq(i64, e2e_sql_number(&env, sql), 10001),
            "the flood's sites plus the handshake's one");
  assert_daemon_stops_cleanly();
}
