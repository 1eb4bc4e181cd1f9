/* test_e2e_security.c - what another user, a hostile requester and a
 * hostile client can do through heaptraced: nothing.
 *
 *   - A control request from another uid is refused by SO_PEERCRED, even
 *     when the file system lets it reach the socket (test_e2e_daemon.c
 *     covers ingest from another uid and the owner-only files).
 *   - The control protocol is read-only: every command with hostile option
 *     values (huge, negative, fractional, strings where numbers go, SQL in
 *     strings, arrays, objects) gets a well-formed reply, and the database
 *     is unchanged to the byte (.dump, PRAGMA data_version, file sizes).
 *   - Names that come from a client (app, exe, argv, site files, functions,
 *     types, heap names) holding terminal escapes and newlines are printed
 *     escaped in every heapctl table, live and offline, and round-trip
 *     exactly through the JSON, which stays valid against its schemas; the
 *     daemon's log does not replay them raw either.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "raw_client.h"

#define GOOD_PID 720001u
#define EVIL_PID 720002u
#define WAIT_MS 20000

/* What a hostile client calls itself and its code. Each holds ESC
 * sequences (colour, clear screen, cursor up, window title), a newline
 * followed by text that would pass for a row of its own, CR, BEL, BS and
 * DEL; none holds a NUL (the protocol refuses those). */
#define EVIL_APP "evil\x1b[31mRED\x1b[0m\nFAKE-ROW app\r\x07\x08"
#define EVIL_EXE "/bin/\x1b]0;pwned\x07x"
#define EVIL_FILE "src/\x1b[2J\nFAKE-ROW file.c"
#define EVIL_FUNC "fn\x1b[1A\x7f\nFAKE-ROW func"
#define EVIL_TYPE "struct \x1b[5mblink\nFAKE-ROW type"
#define EVIL_HEAP "dram\x1b[31m\nFAKE-ROW heap"
#define EVIL_SITE 5
#define EVIL_HEAP_ID 1
#define EVIL_HEAP_START 0x3ffb0000ull
#define EVIL_HEAP_SIZE 0x10000ull

E2E_SUITE(e2e_security, 300);

/* ======================================================================
 * Helpers
 * ==================================================================== */

static cJSON *sessions_json(void) {
  e2e_result_t r = e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

static const cJSON *session_of_pid(const cJSON *all, long long pid) {
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if ((long long)e2e_num(s, "pid") == pid)
      return s;
  }
  return NULL;
}

static void assert_daemon_alive(const char *after) {
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0),
            "heaptraced died (status 0x%x) after %s; see %s", status, after, env.log);
}

/* Waits until every ended session has its summary: the daemon's last
 * write after a session ends. */
static void wait_for_summaries(void) {
  for (int waited = 0;; waited += 20) {
    if (e2e_sql_number(&env,
                       "SELECT COUNT(*) FROM sessions WHERE end_reason != 'running' AND id NOT IN "
                       "(SELECT session FROM summaries)") == 0)
      return;
    cr_assert(lt(int, waited, WAIT_MS), "summaries not written within %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
}

/* ======================================================================
 * Another user's control request
 * ==================================================================== */

static uid_t nobody_uid(void) {
  struct passwd *pw = getpwnam("nobody");
  cr_assert(ne(ptr, (void *)pw, NULL), "no user 'nobody'");
  return pw->pw_uid;
}

/* heapctl CMD --json as nobody; returns its result and pid. */
static e2e_result_t heapctl_as_nobody(const char *cmd, pid_t *pid) {
  char *argv[] = {"/usr/bin/setpriv",
                  "--reuid=nobody",
                  "--regid=nogroup",
                  "--clear-groups",
                  (char *)e2e_bin("heapctl"),
                  "--socket",
                  env.socket,
                  (char *)cmd,
                  "--json",
                  NULL};
  *pid = e2e_spawn(&env, argv, NULL);
  return e2e_wait(&env, *pid);
}

/* The test opens the directory (0711) and the socket (0666) the daemon
 * made private, as test_e2e_daemon.c does for ingest: only the daemon's
 * peer check stands between nobody and the database. "status" is answered
 * on the daemon's loop, "sessions" by a query worker: both are refused
 * before a byte is read. */
Test(e2e_security, control_request_from_another_uid_is_refused_by_peer_credentials) {
  if (getuid() != 0)
    e2e_skip_test(&env, "needs root to run heapctl as another user");
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "secret");
  raw_session_finish(&g);
  cr_assert(eq(int, chmod(env.dir, 0711), 0));
  cr_assert(eq(int, chmod(env.socket, 0666), 0));
  const char *cmds[] = {"status", "sessions"};
  for (size_t i = 0; i < 2; i++) {
    pid_t pid;
    e2e_result_t r = heapctl_as_nobody(cmds[i], &pid);
    cr_assert(eq(int, r.status, 2), "heapctl %s as nobody: status %d\n%s%s", cmds[i], r.status,
              r.out, r.err);
    cr_assert(eq(str, r.out, ""), "heapctl %s as nobody printed:\n%s", cmds[i], r.out);
    /* Refused at accept: heapctl finds the connection closed either
     * before its request went out or before a reply came. */
    int refused = e2e_count_lines(r.err, "closed the connection without a reply") +
                  e2e_count_lines(r.err, "sending the request to heaptraced at");
    cr_assert(eq(int, refused, 1), "heapctl %s as nobody said:\n%s", cmds[i], r.err);
    cr_assert(eq(int, e2e_count_lines(r.err, "heapctl:"), 1), "%s", r.err);
    char line[160];
    snprintf(line, sizeof line,
             "refused a connection from pid %d: uid %u is not the daemon's "
             "uid %u",
             (int)pid, (unsigned)nobody_uid(), (unsigned)getuid());
    cr_assert(eq(int, e2e_log_lines(&env, line), 1), "no refusal of pid %d in %s", (int)pid,
              env.log);
    e2e_result_free(&r);
  }
  cr_assert(eq(int, e2e_log_lines(&env, "refused a connection from pid"), 2));
  /* The owner is still served. */
  cJSON *all = sessions_json();
  cr_assert(ne(ptr, (void *)session_of_pid(all, GOOD_PID), NULL));
  cJSON_Delete(all);
}

/* ======================================================================
 * The control protocol changes nothing
 * ==================================================================== */

static const char *const commands[] = {
    "sessions", "leaks",  "stats",  "lwm",    "frag", "top", "timeline",
    "diff",     "events", "export", "status", "nope", "",
};

static const char *const keys[] = {
    "session",  "session1", "session2", "by",      "min_bytes", "top",   "heap",   "caps",
    "since_ms", "until_ms", "limit",    "step_ms", "from",      "sites", "output",
};

/* JSON values a requester could put anywhere. */
static const char *const values[] = {
    "1e308",
    "-1e308",
    "-1",
    "0",
    "1",
    "0.5",
    "-0.5",
    "1e-300",
    "9223372036854775807",
    "18446744073709551616",
    "4294967296",
    "\"\"",
    "\"1\"",
    "\"' OR 1=1 --\"",
    "\"1; DROP TABLE sessions; --\"",
    "\"x'); DELETE FROM event_chunks; --\"",
    "\"site\"",
    "\"\\u001b[31m\"",
    "true",
    "null",
    "[]",
    "{}",
    "[1, \"two\", {\"three\": 3}]",
    "{\"cmd\": \"stats\"}",
};
#define NVALUES (sizeof values / sizeof *values)
#define NKEYS (sizeof keys / sizeof *keys)
#define NCOMMANDS (sizeof commands / sizeof *commands)
#define BIG_STRING 16384

/* The numbers among values: those a float-to-integer cast can choke on. */
static const char *const hostile_numbers[] = {"1e308", "-1e308", "-1", "1e-300",
                                              "18446744073709551616"};

typedef struct {
  int sent, ok, refused;
} tally_t;

/* Sends request, asserts a well-formed reply, counts it. */
static void ask(const char *request, tally_t *t) {
  char *reply = raw_control(env.socket, request, strlen(request));
  t->sent++;
  if (!reply)
    assert_daemon_alive(request);
  cr_assert(ne(ptr, reply, NULL), "no reply to %s", request);
  cJSON *j = cJSON_Parse(reply);
  cr_assert(ne(ptr, (void *)j, NULL), "reply to %s is not JSON: %s", request, reply);
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
  cr_assert(eq(int, cJSON_IsBool(ok), 1), "reply to %s: %s", request, reply);
  if (cJSON_IsTrue(ok)) {
    cr_assert(eq(int, cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "result")), 1));
    t->ok++;
  } else {
    double code = e2e_num(j, "code");
    cr_assert(eq(int, code == 1 || code == 2, 1), "reply to %s: %s", request, reply);
    cr_assert(ne(str, (char *)e2e_str(j, "error"), ""));
    t->refused++;
  }
  cJSON_Delete(j);
  free(reply);
}

typedef struct {
  char *dump;
  long long data_version;
  off_t db_size, wal_size;
  struct timespec db_mtime, wal_mtime;
} snapshot_t;

static long long data_version(sqlite3 *db) {
  sqlite3_stmt *s;
  cr_assert(eq(int, sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &s, NULL), SQLITE_OK));
  cr_assert(eq(int, sqlite3_step(s), SQLITE_ROW));
  long long v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

static void take_snapshot(snapshot_t *snap, sqlite3 *db) {
  snap->dump = e2e_sql_text(&env, ".dump");
  snap->data_version = data_version(db);
  char wal[128];
  snprintf(wal, sizeof wal, "%s-wal", env.db);
  struct stat sb;
  cr_assert(eq(int, stat(env.db, &sb), 0));
  snap->db_size = sb.st_size;
  snap->db_mtime = sb.st_mtim;
  cr_assert(eq(int, stat(wal, &sb), 0));
  snap->wal_size = sb.st_size;
  snap->wal_mtime = sb.st_mtim;
}

static void assert_same_snapshot(const snapshot_t *a, const snapshot_t *b) {
  cr_assert(eq(str, a->dump, b->dump), "the database's content changed");
  cr_assert(eq(llong, a->data_version, b->data_version), "another connection wrote");
  cr_assert(eq(llong, (long long)a->db_size, (long long)b->db_size));
  cr_assert(eq(llong, (long long)a->wal_size, (long long)b->wal_size));
  cr_assert(eq(int, memcmp(&a->db_mtime, &b->db_mtime, sizeof a->db_mtime), 0),
            "the database file was written");
  cr_assert(eq(int, memcmp(&a->wal_mtime, &b->wal_mtime, sizeof a->wal_mtime), 0),
            "the write-ahead log was written");
}

/* Sessions to query: a well-behaved one and the esp32 example's, with
 * its caps heaps, so that every command reaches its model. */
static void store_some_sessions(void) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  raw_session_finish(&g);
  char *argv[] = {(char *)e2e_bin("esp32"), NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "esp32: %s", r.err);
  e2e_result_free(&r);
  wait_for_summaries();
}

Test(e2e_security, no_control_request_changes_the_database_whatever_its_options) {
  store_some_sessions();
  sqlite3 *db;
  cr_assert(eq(int, sqlite3_open_v2(env.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK));
  snapshot_t before, after;
  take_snapshot(&before, db);

  tally_t t = {0};
  static char req[NKEYS * (BIG_STRING + 64) + 512];
  static char big[BIG_STRING + 3];
  memset(big, 'A', sizeof big - 1);
  big[0] = big[sizeof big - 2] = '"';
  big[sizeof big - 1] = '\0';
  for (size_t c = 0; c < NCOMMANDS; c++) {
    /* Every option at once, each value in turn; then a long string. */
    for (size_t v = 0; v <= NVALUES; v++) {
      int n = snprintf(req, sizeof req, "{\"cmd\":\"%s\"", commands[c]);
      for (size_t k = 0; k < NKEYS; k++)
        n += snprintf(req + n, sizeof req - (size_t)n, ",\"%s\":%s", keys[k],
                      v < NVALUES ? values[v] : big);
      cr_assert(lt(int, n + 1, (int)sizeof req));
      snprintf(req + n, sizeof req - (size_t)n, "}");
      ask(req, &t);
    }
    /* One option at a time: the hostile numbers (every value under
     * HT_LONG=1). */
    size_t nv = e2e_long_run() ? NVALUES : sizeof hostile_numbers / sizeof *hostile_numbers;
    for (size_t k = 0; k < NKEYS; k++) {
      for (size_t v = 0; v < nv; v++) {
        snprintf(req, sizeof req, "{\"cmd\":\"%s\",\"%s\":%s}", commands[c], keys[k],
                 e2e_long_run() ? values[v] : hostile_numbers[v]);
        ask(req, &t);
      }
    }
  }
  /* The command itself hostile. */
  for (size_t v = 0; v < NVALUES; v++) {
    snprintf(req, sizeof req, "{\"cmd\":%s}", values[v]);
    ask(req, &t);
  }
  fprintf(stderr, "e2e_security: %d hostile control requests: %d answered, %d refused\n", t.sent,
          t.ok, t.refused);
  assert_daemon_alive("the hostile requests");

  take_snapshot(&after, db);
  assert_same_snapshot(&before, &after);
  free(before.dump);
  free(after.dump);
  sqlite3_close(db);
  e2e_stop_daemon(&env); /* exit 0: under ASan nothing leaked either */
}

/* ======================================================================
 * Names from a client, printed
 * ==================================================================== */

static void send_bytes(raw_client_t *c, ht_wbuf_t *w) {
  cr_assert(eq(int, w->overflow, 0));
  cr_assert(eq(int, raw_send(c, w->p, w->len), 0));
}

/* A session whose every name is hostile: a handshake with them in app,
 * exe and argv, a site and a bounded heap named with them, leaks at that
 * site on both heaps. */
static void hostile_named_session(uint32_t pid, const char *app, const char *exe, const char *file,
                                  const char *func, const char *type, const char *heap_name) {
  static ht_hello_t h;
  static uint8_t buf[4 * HT_PROTO_MAX_STRING];
  memset(&h, 0, sizeof h);
  h.version = HT_PROTO_VERSION;
  h.ptr_size = 8;
  h.clock = 1;
  h.pid = pid;
  h.ppid = 1;
  h.start_realtime_ns = (uint64_t)time(NULL) * 1000000000u;
  h.start_mono_ns = raw_now_ns();
  h.app = ht_str(app);
  h.exe = ht_str(exe);
  h.argc = 3;
  h.argv[0] = ht_str(app);
  h.argv[1] = ht_str(file);
  h.argv[2] = ht_str(func);
  raw_client_t c;
  raw_connect(&c, env.socket);
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_hello(&w, &h);
  send_bytes(&c, &w);
  ht_site_rec_t site = {EVIL_SITE, 66, ht_str(file), ht_str(func), ht_str(type)};
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_site(&w, &site);
  send_bytes(&c, &w);
  ht_heap_rec_t heap = {
      EVIL_HEAP_ID, {0x1804, 0x8, 0}, EVIL_HEAP_START, EVIL_HEAP_SIZE, ht_str(heap_name)};
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_proto_put_heap(&w, &heap);
  send_bytes(&c, &w);

  raw_stream_t s;
  raw_stream_init(&s, 1, h.start_mono_ns);
  raw_stream_malloc(&s, EVIL_SITE, 0x7f0000001000ull, 64);
  raw_stream_malloc(&s, EVIL_SITE, 0x7f0000002000ull, 128);
  raw_stream_free(&s, EVIL_SITE, 0x7f0000001000ull, 64);
  /* One block on the named heap, inside its bounds. */
  ht_event_t ev = {.op = HT_OP_MALLOC,
                   .time_ns = s.time_ns += 1000,
                   .site = EVIL_SITE,
                   .heap = EVIL_HEAP_ID,
                   .caps = 0x8,
                   .ptr = EVIL_HEAP_START + 0x100,
                   .size = 100,
                   .usable = 100,
                   .cur_bytes = s.cur_bytes + 100,
                   .cur_blocks = s.cur_blocks + 1,
                   .total_bytes = s.total_bytes + 100};
  raw_stream_append(&s, &ev);
  raw_send_events(&c, &s);
  raw_end(&c);
  shutdown(c.fd, SHUT_WR);
  cr_assert(eq(int, raw_wait_closed(&c, RAW_WAIT_MS), 1));
  raw_close(&c);
}

/* heapctl [--db] ARGS (a table), asserting success. */
static e2e_result_t table(int offline, const char *const *args) {
  const char *a[6] = {NULL};
  for (int i = 0; i < 5 && args[i]; i++)
    a[i] = args[i];
  e2e_result_t r = offline ? e2e_heapctl_db(&env, a[0], a[1], a[2], a[3], a[4], NULL)
                           : e2e_heapctl(&env, a[0], a[1], a[2], a[3], a[4], NULL);
  cr_assert(eq(int, r.status, 0), "heapctl %s: %s", a[0], r.err);
  return r;
}

/* A table a person reads: no control byte but the newlines of its own
 * rows; no row that a name's newline started; where it shows a name, the
 * name's ESC shown as \x1b. */
static void assert_clean_table(const char *what, const char *out, int shows_names) {
  for (const unsigned char *p = (const unsigned char *)out; *p; p++)
    cr_assert(eq(int, (*p < 0x20 && *p != '\n') || *p == 0x7f, 0),
              "heapctl %s printed a raw control byte 0x%02x at offset %td:\n%s", what, *p,
              (const char *)p - out, out);
  cr_assert(eq(ptr, strstr(out, "\nFAKE-ROW"), NULL), "heapctl %s printed a forged row:\n%s", what,
            out);
  if (shows_names)
    cr_assert(ne(ptr, strstr(out, "\\x1b"), NULL), "heapctl %s shows no escaped name:\n%s", what,
              out);
}

static const struct {
  const char *args[5];
  int shows_names; /* diff of a session with itself shows no site */
} table_cmds[] = {
    {{"sessions"}, 1},
    {{"leaks", "-s", "1", "--by", "site"}, 1},
    {{"leaks", "-s", "1", "--by", "type"}, 1},
    {{"leaks", "-s", "1", "--by", "heap"}, 1},
    {{"stats", "-s", "1"}, 1},
    {{"lwm", "-s", "1"}, 1},
    {{"frag", "-s", "1"}, 1},
    {{"top", "-s", "1"}, 1},
    {{"timeline", "-s", "1"}, 1},
    {{"events", "-s", "1"}, 1},
    {{"diff", "1", "1"}, 0},
};

/* The JSON of each command, and the schema it must satisfy. */
static const struct {
  const char *args[4];
  const char *schema;
} json_cmds[] = {
    {{"sessions"}, "sessions.schema.json"},
    {{"leaks", "-s", "1"}, "leaks.schema.json"},
    {{"stats", "-s", "1"}, "stats.schema.json"},
    {{"lwm", "-s", "1"}, "lwm.schema.json"},
    {{"frag", "-s", "1"}, "frag.schema.json"},
    {{"top", "-s", "1"}, "top.schema.json"},
    {{"timeline", "-s", "1"}, "timeline.schema.json"},
    {{"events", "-s", "1"}, "events.schema.json"},
    {{"diff", "1", "1"}, "diff.schema.json"},
};

static void check_json(int offline, size_t i, const char *app) {
  const char *a[5] = {NULL};
  size_t n = 0;
  while (n < 3 && json_cmds[i].args[n])
    a[n] = json_cmds[i].args[n], n++;
  a[n] = "--json";
  e2e_result_t r = offline ? e2e_heapctl_db(&env, a[0], a[1], a[2], a[3], NULL)
                           : e2e_heapctl(&env, a[0], a[1], a[2], a[3], NULL);
  cr_assert(eq(int, r.status, 0), "heapctl %s --json: %s", a[0], r.err);
  cr_assert(eq(int, e2e_validate(r.out, json_cmds[i].schema), 0),
            "heapctl %s --json is not valid against %s", a[0], json_cmds[i].schema);
  cJSON *j = e2e_json(&r);
  if (strcmp(a[0], "sessions") == 0) {
    const cJSON *s = session_of_pid(j, EVIL_PID);
    cr_assert(ne(ptr, (void *)s, NULL));
    cr_assert(eq(str, (char *)e2e_str(s, "app"), (char *)app), "the app name did not round-trip");
  }
  cJSON_Delete(j);
  e2e_result_free(&r);
}

Test(e2e_security, names_from_a_client_are_escaped_in_every_table_and_exact_in_json) {
  hostile_named_session(EVIL_PID, EVIL_APP, EVIL_EXE, EVIL_FILE, EVIL_FUNC, EVIL_TYPE, EVIL_HEAP);
  for (int offline = 0; offline < 2; offline++) {
    for (size_t i = 0; i < sizeof table_cmds / sizeof *table_cmds; i++) {
      e2e_result_t r = table(offline, table_cmds[i].args);
      char what[64];
      snprintf(what, sizeof what, "%s%s", table_cmds[i].args[0], offline ? " (--db)" : "");
      assert_clean_table(what, r.out, table_cmds[i].shows_names);
      e2e_result_free(&r);
    }
    for (size_t i = 0; i < sizeof json_cmds / sizeof *json_cmds; i++)
      check_json(offline, i, EVIL_APP);
  }
  /* The report, too: valid, and the names exactly as sent. */
  e2e_result_t r = e2e_heapctl(&env, "export", "-s", "1", "-o", "-", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl export: %s", r.err);
  cr_assert(eq(int, e2e_validate(r.out, "report.schema.json"), 0));
  cJSON *rep = e2e_json(&r);
  const cJSON *ses = cJSON_GetObjectItemCaseSensitive(rep, "session");
  cr_assert(eq(str, (char *)e2e_str(ses, "exe"), EVIL_EXE));
  const cJSON *argv = cJSON_GetObjectItemCaseSensitive(ses, "argv");
  cr_assert(eq(int, cJSON_GetArraySize(argv), 3));
  cr_assert(eq(str, cJSON_GetArrayItem(argv, 1)->valuestring, EVIL_FILE));
  cJSON_Delete(rep);
  e2e_result_free(&r);
}

/* The daemon's log is printed too (tail -f in a terminal): a client's name
 * must not reach it raw. */
Test(e2e_security, names_from_a_client_are_escaped_in_the_daemon_log) {
  hostile_named_session(EVIL_PID, EVIL_APP, EVIL_EXE, EVIL_FILE, EVIL_FUNC, EVIL_TYPE, EVIL_HEAP);
  e2e_stop_daemon(&env);
  char *log = e2e_read_file(env.log);
  cr_assert(eq(ptr, strchr(log, 0x1b), NULL), "a raw ESC in the daemon's log:\n%s", log);
  cr_assert(eq(ptr, strstr(log, "\nFAKE-ROW"), NULL), "a forged line in the daemon's log:\n%s",
            log);
  free(log);
}

/* A name need not be valid UTF-8, and may hold 8-bit C1 controls (0x9b is
 * CSI, which some terminals take as ESC [). JSON must be UTF-8 (RFC 8259,
 * 8.1) and a table must not pass the control on. */
Test(e2e_security, names_that_are_not_utf8_leave_tables_escaped_and_json_valid) {
  hostile_named_session(EVIL_PID,
                        "c1\x9b"
                        "31mred\xff\xfe",
                        "/bin/\xc3(",
                        "src/\x9b"
                        "2J.c",
                        "fn\x80", "", "heap\xe2\x82");
  e2e_result_t r = e2e_heapctl(&env, "sessions", NULL);
  cr_assert(eq(int, r.status, 0));
  cr_assert(eq(ptr, strchr(r.out, 0x9b), NULL), "a raw C1 CSI in the sessions table:\n%s", r.out);
  e2e_result_free(&r);
  r = e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0));
  cr_assert(eq(int, e2e_validate(r.out, "sessions.schema.json"), 0),
            "heapctl sessions --json is not valid (UTF-8) JSON");
  e2e_result_free(&r);
}
