/* e2e.h - harness of the end-to-end tests: a real heaptraced on a
 * temporary socket and database, real client programs, real heapctl.
 *
 * Every helper asserts (Criterion) on failure, so a test reads as the
 * scenario it checks. Binaries come from HT_BIN_DIR, sources from
 * HT_SOURCE_DIR (both compiled in by tests/CMakeLists.txt).
 */
#ifndef HT_E2E_H
#define HT_E2E_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
  char dir[64];     /* scratch directory, removed by e2e_stop */
  char socket[100]; /* fits sun_path */
  char db[100];
  char log[100];
  pid_t daemon;
  unsigned max_backlog_mib; /* heaptraced --max-backlog when not 0 (from the next start) */
} e2e_t;

typedef struct {
  int status; /* exit status, or 128 + signal */
  char *out;  /* stdout, NUL-terminated, owned */
  char *err;  /* stderr, NUL-terminated, owned */
} e2e_result_t;

/* Makes the scratch directory and starts heaptraced on it; returns when
 * the socket accepts connections. */
void e2e_start(e2e_t *e);

/* Starts heaptraced again on the same socket and database. */
void e2e_restart_daemon(e2e_t *e);
/* SIGTERM, waits, asserts a clean exit. */
void e2e_stop_daemon(e2e_t *e);
/* The same with another stop signal (SIGINT). */
void e2e_stop_daemon_with(e2e_t *e, int sig);
/* Stops the daemon if running and removes the scratch directory. */
void e2e_stop(e2e_t *e);

/* A suite whose every test gets its own daemon, socket and database in a
 * static `env`: E2E_SUITE(e2e_name, timeout_seconds); */
#define E2E_SUITE(name, seconds)                                                                   \
  static e2e_t env;                                                                                \
  static void e2e_suite_setup(void) {                                                              \
    e2e_start(&env);                                                                               \
  }                                                                                                \
  static void e2e_suite_teardown(void) {                                                           \
    e2e_stop(&env);                                                                                \
  }                                                                                                \
  TestSuite(name, .init = e2e_suite_setup, .fini = e2e_suite_teardown, .timeout = (seconds))

/* cr_skip_test for a test of an E2E_SUITE: Criterion runs no .fini after a
 * skip, so the suite's daemon is stopped (and its directory removed)
 * first, or it would be left running. */
#define e2e_skip_test(e, ...)                                                                      \
  do {                                                                                             \
    e2e_stop(e);                                                                                   \
    cr_skip_test(__VA_ARGS__);                                                                     \
  } while (0)

/* Runs argv (argv[0] a path) with HEAPTRACE_SOCKET set to the daemon's
 * socket plus the NULL-terminated "NAME=value" list env (may be NULL). */
e2e_result_t e2e_run(e2e_t *e, char *const argv[], char *const env[]);
/* Runs heapctl --socket SOCK ARGS... (NULL-terminated). */
e2e_result_t e2e_heapctl(e2e_t *e, const char *first, ...);
/* Runs heapctl --db DB ARGS... (NULL-terminated). While the daemon runs,
 * a query's round trip first: the file then holds every exited client's
 * session (as e2e_sql_text's does). */
e2e_result_t e2e_heapctl_db(e2e_t *e, const char *first, ...);
void e2e_result_free(e2e_result_t *r);

/* Starts argv like e2e_run but returns at once; stdout and stderr go to
 * files in the scratch directory. e2e_wait collects it. */
pid_t e2e_spawn(e2e_t *e, char *const argv[], char *const env[]);
e2e_result_t e2e_wait(e2e_t *e, pid_t pid);

/* Sends sig to the daemon (SIGKILL leaves it dead: restart it). */
void e2e_signal_daemon(e2e_t *e, int sig);

/* The value of "key=N" in text, or -1. */
long long e2e_field(const char *text, const char *key);

/* Parses r->out as JSON; asserts it parses. Caller frees. */
cJSON *e2e_json(const e2e_result_t *r);
/* Validates text against schemas/NAME with python3-jsonschema; returns 0
 * when valid (the validator's message goes to stderr otherwise). */
int e2e_validate(const char *text, const char *schema_name);

/* Path of a built binary: HT_BIN_DIR/name (static storage, per call). */
const char *e2e_bin(const char *name);

/* Lines of file (relative to the source tree) containing marker, in
 * order; returns how many were found (at most max). */
int e2e_marked_lines(const char *file, const char *marker, int *lines, int max);

/* o[k] as a number / a string; asserts that it is one. */
double e2e_num(const cJSON *o, const char *k);
const char *e2e_str(const cJSON *o, const char *k);

void e2e_sleep_ms(int ms);

/* 1 when HT_LONG=1 (scripts/test --long): suites run their long variants. */
int e2e_long_run(void);

/* A whole file, NUL-terminated ("" when there is none yet); caller frees. */
char *e2e_read_file(const char *path);
/* A whole file that must exist, which may hold NULs: its length in *len. */
char *e2e_read_bytes(const char *path, size_t *len);
/* heapctl CMD [OPT VAL] --json through the daemon (offline 0) or on its
 * database (offline 1), parsed; asserts success. */
cJSON *e2e_heapctl_json(e2e_t *e, int offline, const char *cmd, const char *opt, const char *val);
/* The session of pid in a `sessions` result, or NULL; asserts there is at
 * most one. */
const cJSON *e2e_session_of_pid(const cJSON *all, long long pid);
/* Lines of the daemon's log containing needle. */
int e2e_log_lines(e2e_t *e, const char *needle);
/* VmHWM (peak resident set) of pid in kB. */
long e2e_peak_rss_kb(pid_t pid);
/* Restarts the daemon with a small ASan quarantine: under ASan freed
 * memory waits in a 256 MB quarantine by default, which would count
 * against a memory bound as if the daemon held it. Other builds ignore
 * ASAN_OPTIONS. */
void e2e_restart_daemon_small_quarantine(e2e_t *e);

/* A query's round trip, when the daemon runs: it answers once everything
 * it has read is committed (PROTOCOL.md, CTL_REQUEST), and it has read a
 * client's session whole once that client has exited, so the database
 * file then holds every session of an exited client. Returns 0 when the
 * daemon answered (within 10 s), -1 otherwise. Plain code, no assertions:
 * a forked child may call it. */
int e2e_settle(e2e_t *e);

/* What `sqlite3 DB SQL` prints for the daemon's database (asserts it
 * succeeds), after a query's round trip while the daemon runs: a client
 * that exited has its session stored by then. Caller frees. */
char *e2e_sql_text(e2e_t *e, const char *sql);
/* The one number it prints (asserts it prints exactly a number). */
long long e2e_sql_number(e2e_t *e, const char *sql);
/* Waits until the daemon has stored the summary of session (queries read
 * it from then on, instead of replaying the events); asserts that it
 * comes within 5 s. */
void e2e_wait_summary(e2e_t *e, int session);
/* Asserts that the database passes PRAGMA integrity_check. */
void e2e_assert_integrity(e2e_t *e);
/* Waits until no ingest connection is open any more (status), asserting
 * it happens within limit_ms. */
void e2e_wait_disconnected(e2e_t *e, int limit_ms);

/* Number of lines in s containing needle. */
int e2e_count_lines(const char *s, const char *needle);

#endif
