/* test_e2e_daemon.c - heaptraced's lifecycle end to end: starting beside
 * another daemon or over a leftover socket, the permissions of what it
 * creates, stopping with SIGTERM, dying with SIGKILL mid-ingest and
 * starting again on the same database, and refusing another user.
 *
 * Sessions are driven by hand (tests/raw_client.c) where exact timing
 * matters, and by ht_stream_client (tests/programs/stream_client.c), a real
 * traced program with known heap activity, where volume matters.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "e2e.h"
#include "raw_client.h"

#define GOOD_PID 710001u
/* Far more than a test waits for (more events than the daemon buffers while
 * its worker catches up): such a client is stopped with SIGUSR1. */
#define STREAM_ROUNDS_FOREVER "1000000000"
#define KILL_AFTER_EVENTS 100000
#define WAIT_MS 10000

E2E_SUITE(e2e_daemon, 60);

/* ======================================================================
 * Helpers
 * ==================================================================== */

static char *str(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  cr_assert(eq(int, cJSON_IsString(j), 1), "no string '%s'", k);
  return j->valuestring;
}

/* heapctl [--db] sessions --json: the session list, parsed. */
static cJSON *sessions(int offline) {
  e2e_result_t r = offline ? e2e_heapctl_db(&env, "sessions", "--json", NULL)
                           : e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl sessions: %s", r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

static int session_count(const cJSON *all) {
  return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(all, "sessions"));
}

static const cJSON *session_of(const cJSON *all, uint32_t pid) {
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") == pid)
      return s;
  }
  return NULL;
}

static const cJSON *session_id(const cJSON *all, int id) {
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "id") == id)
      return s;
  }
  cr_fatal("no session %d", id);
  return NULL;
}

static cJSON *stats(int offline, int id) {
  char ids[16];
  snprintf(ids, sizeof ids, "%d", id);
  e2e_result_t r = offline ? e2e_heapctl_db(&env, "stats", "-s", ids, "--json", NULL)
                           : e2e_heapctl(&env, "stats", "-s", ids, "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl stats -s %d: %s", id, r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

/* heapctl status --json. */
static cJSON *status(void) {
  e2e_result_t r = e2e_heapctl(&env, "status", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl status: %s", r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

/* paused of heapctl status. */
static int daemon_paused(void) {
  cJSON *j = status();
  int paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "paused"));
  cJSON_Delete(j);
  return paused;
}

/* A number of heapctl status. */
static double status_number(const char *key) {
  cJSON *j = status();
  double v = e2e_num(j, key);
  cJSON_Delete(j);
  return v;
}

/* Waits until the daemon has received at_least events and has committed
 * the session's row with some of them (a kill before the first commit
 * would leave nothing to find). */
static void wait_events_received(double at_least) {
  for (int waited = 0; status_number("events_received") < at_least; waited += 5) {
    cr_assert(lt(int, waited, WAIT_MS), "the daemon did not receive %.0f events in %d ms", at_least,
              WAIT_MS);
    e2e_sleep_ms(5);
  }
  for (int waited = 0;; waited += 20) {
    cJSON *all = sessions(0);
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(all, "sessions"), 0);
    double committed = first ? e2e_num(first, "events") : 0;
    cJSON_Delete(all);
    if (committed > 0)
      return;
    cr_assert(lt(int, waited, WAIT_MS), "no events of the session committed in %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
}

/* A well-behaved session from start to END; asserts it is stored exact. */
static void assert_good_session_works(uint32_t pid) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, pid, "good");
  raw_session_finish(&g);
  cJSON *all = sessions(0);
  const cJSON *s = session_of(all, pid);
  cr_assert(ne(ptr, (void *)s, NULL), "no session for pid %u", pid);
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), RAW_SESSION_EVENTS));
  cJSON *st = stats(0, (int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(st, "allocations"), RAW_SESSION_ALLOCS));
  cr_assert(eq(dbl, e2e_num(st, "frees"), RAW_SESSION_FREES));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), RAW_SESSION_BYTES));
  cJSON_Delete(st);
  cJSON_Delete(all);
}

/* Runs argv with stdout and stderr into one file; kills it if it runs past
 * timeout_ms (status -1 then). r.out holds what it printed. */
static e2e_result_t run_bounded(char *const argv[], int timeout_ms) {
  char path[160];
  snprintf(path, sizeof path, "%s/bounded.out", env.dir);
  pid_t pid = fork();
  cr_assert(ge(int, pid, 0));
  if (pid == 0) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(argv[0], argv);
    _exit(127);
  }
  e2e_result_t r = {.status = -1};
  int status;
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    e2e_sleep_ms(10);
  }
  if (r.status == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  r.out = e2e_read_file(path);
  r.err = strdup("");
  return r;
}

static e2e_result_t run_another_daemon(const char *db) {
  char *argv[] = {(char *)e2e_bin("heaptraced"),
                  "--foreground",
                  "--socket",
                  env.socket,
                  "--db",
                  (char *)db,
                  NULL};
  return run_bounded(argv, 3000);
}

/* The files a test's ht_stream_client writes its stderr and (unless
 * out_path is NULL) its stdout to, in env.dir. */
#define CLIENT_PATH 160
static void client_paths(char err_path[CLIENT_PATH], char out_path[CLIENT_PATH]) {
  snprintf(err_path, CLIENT_PATH, "%s/client.err", env.dir);
  if (out_path)
    snprintf(out_path, CLIENT_PATH, "%s/client.out", env.dir);
}

/* Starts ht_stream_client ROUNDS [FLUSH_EVERY [DIR]] (flush_every NULL:
 * none) in the background on the daemon's socket, its stderr into
 * err_path, its stdout into out_path (NULL: nowhere). With moves_to, the
 * client starts in the socket's directory, is given the socket's name
 * alone (a relative HEAPTRACE_SOCKET), and moves to moves_to (its DIR)
 * after its first round. */
static pid_t spawn_stream_client_in(const char *rounds, const char *flush_every,
                                    const char *moves_to, const char *err_path,
                                    const char *out_path) {
  pid_t pid = fork();
  cr_assert(ge(int, pid, 0));
  if (pid == 0) {
    int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int out =
        out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : open("/dev/null", O_WRONLY);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    const char *name = strrchr(env.socket, '/');
    if (moves_to && (!name || chdir(env.dir) != 0))
      _exit(126);
    setenv("HEAPTRACE_SOCKET", moves_to ? name + 1 : env.socket, 1);
    setenv("ASAN_OPTIONS", "detect_leaks=0", 1); /* it keeps a block on purpose */
    if (moves_to)
      flush_every = flush_every ? flush_every : "0";
    execl(e2e_bin("ht_stream_client"), "ht_stream_client", rounds, flush_every, moves_to,
          (char *)NULL);
    _exit(127);
  }
  return pid;
}

static pid_t spawn_stream_client_flushing(const char *rounds, const char *flush_every,
                                          const char *err_path, const char *out_path) {
  return spawn_stream_client_in(rounds, flush_every, NULL, err_path, out_path);
}

static pid_t spawn_stream_client_out(const char *rounds, const char *err_path,
                                     const char *out_path) {
  return spawn_stream_client_flushing(rounds, NULL, err_path, out_path);
}

static pid_t spawn_stream_client(const char *rounds, const char *err_path) {
  return spawn_stream_client_out(rounds, err_path, NULL);
}

/* Starts tests/programs/dying_listener on socket (a free path), holding
 * lock unless NULL: a killed daemon's last moments, until it is killed in
 * turn. */
static pid_t spawn_dying_listener(const char *socket, const char *lock) {
  char *argv[] = {(char *)e2e_bin("dying_listener"), (char *)socket, (char *)lock, NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  struct stat sb;
  for (int waited = 0; stat(socket, &sb) != 0 && waited < WAIT_MS; waited += 10)
    e2e_sleep_ms(10);
  return pid;
}

static int wait_exit(pid_t pid, int timeout_ms) {
  int status;
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    e2e_sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  cr_fatal("pid %d did not exit within %d ms", (int)pid, timeout_ms);
  return -1;
}

static mode_t mode_of(const char *path) {
  struct stat sb;
  cr_assert(eq(int, stat(path, &sb), 0), "stat %s: %s", path, strerror(errno));
  return sb.st_mode;
}

/* ======================================================================
 * Starting beside another daemon, over leftovers
 * ==================================================================== */

Test(e2e_daemon, second_daemon_on_a_live_socket_exits_1_naming_it_and_the_first_keeps_serving) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  char other_db[160];
  snprintf(other_db, sizeof other_db, "%s/other.db", env.dir);
  e2e_result_t r = run_another_daemon(other_db);
  cr_assert(eq(int, r.status, 1), "second heaptraced: status %d, output:\n%s", r.status, r.out);
  char msg[300];
  snprintf(msg, sizeof msg,
           "heaptraced: another heaptraced is already listening on %s; stop it first "
           "(or choose another --socket)",
           env.socket);
  cr_assert(eq(int, e2e_count_lines(r.out, msg), 1), "second heaptraced said:\n%s", r.out);
  e2e_result_free(&r);
  /* The first daemon's socket is still there, and its session goes on. */
  cr_assert(eq(u32, (unsigned)(mode_of(env.socket) & S_IFMT), S_IFSOCK));
  raw_session_finish(&g);
  cJSON *all = sessions(0);
  const cJSON *s = session_of(all, GOOD_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), RAW_SESSION_EVENTS));
  cJSON_Delete(all);
  e2e_stop_daemon(&env); /* exits 0: the refused start disturbed nothing */
}

Test(e2e_daemon, second_daemon_on_the_same_database_leaves_running_sessions_running) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  wait_events_received(6);
  cJSON *all = sessions(0);
  cr_assert(eq(str, str(session_of(all, GOOD_PID), "end_reason"), "running"));
  cJSON_Delete(all);

  e2e_result_t r = run_another_daemon(env.db);
  cr_assert(eq(int, r.status, 1), "second heaptraced: status %d, output:\n%s", r.status, r.out);
  e2e_result_free(&r);
  /* A daemon that refuses to start must not touch the first one's sessions. */
  all = sessions(0);
  cr_assert(eq(str, str(session_of(all, GOOD_PID), "end_reason"), "running"),
            "a refused second heaptraced re-marked a live session");
  cJSON_Delete(all);
  raw_session_finish(&g);
}

Test(e2e_daemon, stale_socket_file_is_removed_at_start) {
  e2e_stop_daemon(&env);
  /* A socket nobody listens on: bound, then closed without unlink. */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", env.socket);
  cr_assert(eq(int, bind(fd, (struct sockaddr *)&sa, sizeof sa), 0), "bind: %s", strerror(errno));
  close(fd);
  cr_assert(eq(u32, (unsigned)(mode_of(env.socket) & S_IFMT), S_IFSOCK));
  e2e_restart_daemon(&env);
  char line[200];
  snprintf(line, sizeof line, "removing stale socket %s", env.socket);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1));
  assert_good_session_works(GOOD_PID);
}

/* A start right after kill -9 of the previous daemon, which still holds
 * the socket while its last thread exits: the new one waits for it. */
Test(e2e_daemon, a_start_waits_for_a_killed_predecessor_that_is_still_exiting) {
  e2e_stop_daemon(&env);
  pid_t dying = spawn_dying_listener(env.socket, NULL);
  pid_t killer = fork();
  cr_assert(ge(int, killer, 0));
  if (killer == 0) { /* the predecessor's last thread goes in 500 ms */
    e2e_sleep_ms(500);
    kill(dying, SIGKILL);
    _exit(0);
  }
  e2e_restart_daemon(&env); /* returns at once: the predecessor takes connections */
  waitpid(killer, NULL, 0);
  e2e_result_t d = e2e_wait(&env, dying);
  /* The first start's line, then this one's once it took the socket over. */
  for (int waited = 0; e2e_log_lines(&env, "listening on") < 2 && waited < WAIT_MS; waited += 10)
    e2e_sleep_ms(10);
  cr_assert(eq(str, d.out, "ready\n"), "dying_listener: %s", d.err);
  e2e_result_free(&d);
  char line[300];
  snprintf(line, sizeof line, "heaptraced %d on %s was killed and is still exiting; waiting for it",
           (int)dying, env.socket);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1));
  snprintf(line, sizeof line, "removing stale socket %s", env.socket);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1));
  assert_good_session_works(GOOD_PID);
}

Test(e2e_daemon, regular_file_at_the_socket_path_is_refused_and_kept) {
  e2e_stop_daemon(&env);
  FILE *f = fopen(env.socket, "w");
  cr_assert(ne(ptr, (void *)f, NULL));
  fputs("precious\n", f);
  fclose(f);
  e2e_result_t r = run_another_daemon(env.db);
  /* connect() to a file that is not a socket fails with ECONNREFUSED, as
   * for a stale socket; only a socket may be removed. */
  cr_assert(eq(int, r.status, 1), "heaptraced over a regular file: status %d, output:\n%s",
            r.status, r.out);
  cr_assert(eq(int, e2e_count_lines(r.out, env.socket), 1), "output:\n%s", r.out);
  e2e_result_free(&r);
  cr_assert(eq(u32, (unsigned)(mode_of(env.socket) & S_IFMT), S_IFREG),
            "the file at the socket path was replaced");
  char *text = e2e_read_file(env.socket);
  cr_assert(eq(str, text, "precious\n"));
  free(text);
}

/* ======================================================================
 * Permissions
 * ==================================================================== */

Test(e2e_daemon, socket_is_created_0600_and_owned_by_the_daemon_user) {
  struct stat sb;
  cr_assert(eq(int, stat(env.socket, &sb), 0));
  cr_assert(eq(u32, (unsigned)(sb.st_mode & S_IFMT), S_IFSOCK));
  cr_assert(eq(u32, (unsigned)(sb.st_mode & 07777), 0600));
  cr_assert(eq(u32, (unsigned)sb.st_uid, (unsigned)getuid()));
}

Test(e2e_daemon, missing_socket_directories_are_created_0700) {
  e2e_stop_daemon(&env);
  char run[72], sub[80];
  snprintf(run, sizeof run, "%s/run", env.dir);
  snprintf(sub, sizeof sub, "%s/sub", run);
  snprintf(env.socket, sizeof env.socket, "%s/heaptraced.sock", sub);
  e2e_restart_daemon(&env);
  cr_assert(eq(u32, (unsigned)(mode_of(run) & 07777), 0700));
  cr_assert(eq(u32, (unsigned)(mode_of(sub) & 07777), 0700));
  cr_assert(eq(u32, (unsigned)(mode_of(env.socket) & 07777), 0600));
}

Test(e2e_daemon, world_writable_socket_directory_is_made_0700) {
  e2e_stop_daemon(&env);
  char open_dir[72];
  snprintf(open_dir, sizeof open_dir, "%s/open", env.dir);
  cr_assert(eq(int, mkdir(open_dir, 0700), 0));
  cr_assert(eq(int, chmod(open_dir, 0777), 0));
  snprintf(env.socket, sizeof env.socket, "%s/heaptraced.sock", open_dir);
  e2e_restart_daemon(&env);
  cr_assert(eq(u32, (unsigned)(mode_of(open_dir) & 07777), 0700));
  assert_good_session_works(GOOD_PID);
}

Test(e2e_daemon, database_and_its_journal_files_are_private_to_the_owner) {
  assert_good_session_works(GOOD_PID);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char path[160];
    snprintf(path, sizeof path, "%s%s", env.db, suffixes[i]);
    cr_assert(eq(u32, (unsigned)(mode_of(path) & 077), 0), "%s is mode %o", path,
              (unsigned)(mode_of(path) & 07777));
  }
}

/* ======================================================================
 * Stopping and dying
 * ==================================================================== */

/* The scheduling policy of the daemon's thread named comm, -1 if none is. */
/* Field `field` (1-based, as proc(5) numbers them) of the stat line of the
 * daemon's thread named comm; INT_MIN when there is no such thread. */
static int thread_stat_field(const char *comm, int field) {
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/task", (int)env.daemon);
  DIR *d = opendir(path);
  cr_assert(ne(ptr, (void *)d, NULL), "cannot list %s", path);
  int value = INT_MIN;
  for (struct dirent *e; value == INT_MIN && (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    char file[400], *text;
    snprintf(file, sizeof file, "%s/%s/comm", path, e->d_name);
    text = e2e_read_file(file);
    int match = text && strncmp(text, comm, strlen(comm)) == 0 && text[strlen(comm)] == '\n';
    free(text);
    if (!match)
      continue;
    snprintf(file, sizeof file, "%s/%s/stat", path, e->d_name);
    text = e2e_read_file(file);
    /* Fields 3.. follow the ") " after comm. */
    const char *p = strrchr(text, ')');
    for (int f = 2; p && f < field; f++)
      p = strchr(p + 1, ' ');
    value = p ? atoi(p + 1) : INT_MIN;
    free(text);
  }
  closedir(d);
  return value;
}

static int thread_policy(const char *comm) {
  return thread_stat_field(comm, 41);
}

/* The decoding and packing run where they cost a traced program nothing. */
Test(e2e_daemon, the_ingest_worker_runs_at_idle_priority) {
  cr_assert(eq(int, thread_policy("htd-ingest"), SCHED_IDLE));
}

/* Summaries are work nobody waits for: they yield to the ingest of the
 * sessions still coming in and to the queries waiting for it. */
Test(e2e_daemon, summaries_run_at_a_lower_priority) {
  cr_assert(eq(int, thread_stat_field("htd-summary", 19), 10)); /* nice */
}

/* Rounds of a client whose session needs a good part of a second of the
 * daemon's CPU: far too much for a thread at idle priority on cores that
 * other programs keep busy, within the test's bounds. */
#ifdef HT_TEST_TSAN
/* The TSan daemon is too slow to prove it here: it only runs the handover
 * between the worker's threads under load, for races. */
#define BUSY_ROUNDS "20000"
#elif defined(__SANITIZE_ADDRESS__)
#define BUSY_ROUNDS "300000" /* the ASan daemon is about three times slower */
#else
#define BUSY_ROUNDS "1000000"
#endif

/* Programs that keep every core busy: two spinning processes a core,
 * into spin[] (64 at most). Returns how many. */
static int start_spinners(pid_t *spin) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int nspin = (int)(2 * (ncpu > 0 && ncpu < 32 ? ncpu : 1));
  for (int i = 0; i < nspin; i++) {
    spin[i] = fork();
    cr_assert(ge(int, spin[i], 0));
    if (spin[i] == 0)
      for (volatile unsigned long n = 0;; n++) {
      }
  }
  return nspin;
}

static void stop_spinners(const pid_t *spin, int nspin) {
  for (int i = 0; i < nspin; i++) {
    kill(spin[i], SIGKILL);
    waitpid(spin[i], NULL, 0);
  }
}

/* A client's exit waits only until the daemon has read its END; a query
 * made after it answers once the whole session is stored. The events that
 * wait for the idle-priority worker are then decoded at normal priority,
 * so programs that keep every core busy do not starve the query. */
Test(e2e_daemon,
     a_query_after_a_client_exit_is_answered_while_other_programs_keep_every_core_busy) {
  pid_t spin[64];
  int nspin = start_spinners(spin);
  char err_path[CLIENT_PATH];
  client_paths(err_path, NULL);
  pid_t client = spawn_stream_client(BUSY_ROUNDS, err_path);
  int status = wait_exit(client, 30000);
  char *argv[] = {(char *)e2e_bin("heapctl"), "--socket", env.socket, "sessions", "--json", NULL};
  e2e_result_t r = run_bounded(argv, 30000);
  stop_spinners(spin, nspin);
  cr_assert(eq(int, status, 0));
  cr_assert(eq(int, r.status, 0), "heapctl sessions: status %d, output:\n%s", r.status, r.out);
  cJSON *all = e2e_json(&r);
  const cJSON *s = session_of(all, (uint32_t)client);
  cr_assert(ne(ptr, (void *)s, NULL), "no session of pid %d in:\n%s", (int)client, r.out);
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), (double)(2 * atoll(BUSY_ROUNDS) + 1)));
  cJSON_Delete(all);
  e2e_result_free(&r);
}

/* A backlog limit that is not a whole number of MiB within range stops
 * heaptraced before it touches anything, naming the option and the value. */
Test(e2e_daemon, a_bad_max_backlog_is_refused_naming_the_option_and_the_value) {
  static const char *const bad[] = {"7", "65537", "12x", "-1", "", "99999999999999999999"};
  char sock[160], db[160];
  snprintf(sock, sizeof sock, "%s/other.sock", env.dir);
  snprintf(db, sizeof db, "%s/other.db", env.dir);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *argv[] = {(char *)e2e_bin("heaptraced"),
                    "--foreground",
                    "--socket",
                    sock,
                    "--db",
                    db,
                    "--max-backlog",
                    (char *)bad[i],
                    NULL};
    e2e_result_t r = run_bounded(argv, 3000);
    char quoted[64];
    snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
    cr_assert(eq(int, r.status, 2), "--max-backlog %s: status %d:\n%s", bad[i], r.status, r.out);
    cr_assert(ne(ptr, strstr(r.out, "--max-backlog takes a number of MiB from 8 to 65536"), NULL),
              "--max-backlog %s:\n%s", bad[i], r.out);
    cr_assert(ne(ptr, strstr(r.out, quoted), NULL), "--max-backlog %s:\n%s", bad[i], r.out);
    cr_assert(ne(int, access(sock, F_OK), 0), "--max-backlog %s made a socket", bad[i]);
    cr_assert(ne(int, access(db, F_OK), 0), "--max-backlog %s made a database", bad[i]);
    e2e_result_free(&r);
  }
}

Test(e2e_daemon, a_directory_given_as_the_database_is_refused_naming_it) {
  char sock[160], dir[160];
  snprintf(sock, sizeof sock, "%s/other.sock", env.dir);
  snprintf(dir, sizeof dir, "%s/a-directory", env.dir);
  cr_assert(eq(int, mkdir(dir, 0700), 0));
  char *argv[] = {
      (char *)e2e_bin("heaptraced"), "--foreground", "--socket", sock, "--db", dir, NULL};
  e2e_result_t r = run_bounded(argv, 3000);
  cr_assert(eq(int, r.status, 1), "status %d:\n%s", r.status, r.out);
  char said[256];
  snprintf(said, sizeof said, "%s is a directory, not a database", dir);
  cr_assert(ne(ptr, strstr(r.out, said), NULL), "%s", r.out);
  e2e_result_free(&r);
}

/* Starts the daemon again with --max-backlog mib. */
static void restart_with_backlog_mib(unsigned mib) {
  env.max_backlog_mib = mib;
  e2e_stop_daemon(&env);
  e2e_restart_daemon(&env);
}

/* A connection of the test's own holding a write transaction on the
 * daemon's database: the daemon's writer cannot commit until
 * let_the_writer_in(). */
static sqlite3 *shut_out_the_writer(void) {
  sqlite3 *db = NULL;
  cr_assert(eq(int, sqlite3_open(env.db, &db), SQLITE_OK));
  sqlite3_busy_timeout(db, 10000);
  cr_assert(eq(int, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK),
            "BEGIN IMMEDIATE: %s", sqlite3_errmsg(db));
  return db;
}

static void let_the_writer_in(sqlite3 *db) {
  cr_assert(eq(int, sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK));
  sqlite3_close(db);
}

/* Rounds of ht_stream_client: far more than 8 MiB on the wire. */
#define BACKLOG_ROUNDS 2000000
/* A hand-made client: its pid, and SITE records of the longest strings
 * it sends at once (about 100 KB: a socket's buffer takes them). */
#define BACKLOG_RAW_PID 710007u
#define BACKLOG_RAW_SITES 12u

/* Waits until n sessions are connected (the n-th being who's). */
static void wait_connected(int n, const char *who) {
  for (int waited = 0; status_number("sessions_connected") < n; waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "%s's handshake was not read in %d ms", who, WAIT_MS);
    e2e_sleep_ms(20);
  }
}

/* Whole sessions of ht_stream_client BACKLOG_ROUNDS by pid. */
static void assert_stream_session_whole(const cJSON *all, pid_t pid) {
  const cJSON *s = session_of(all, (uint32_t)pid);
  cr_assert(ne(ptr, (void *)s, NULL), "no session of pid %d", (int)pid);
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cr_assert(eq(dbl, e2e_num(s, "events"), 2.0 * BACKLOG_ROUNDS + 1));
  cJSON *sj = stats(0, (int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(sj, "allocations"), BACKLOG_ROUNDS + 1.0));
  cr_assert(eq(dbl, e2e_num(sj, "frees"), BACKLOG_ROUNDS));
  cr_assert(eq(dbl, e2e_num(sj, "current_bytes"), 64));
  cJSON_Delete(sj);
}

/* With --max-backlog 8 the daemon stops reading a client once what it
 * holds unstored passes the limit - here because another connection's
 * write transaction shuts its writer out - and the client waits instead of
 * losing anything. A client that comes meanwhile is read once (its
 * handshake) and waits too: what the daemon holds stays near the limit,
 * even from a connection that sent much before its first read.
 * Once the database is free the daemon catches up, reads again, and both
 * sessions are whole. */
Test(e2e_daemon, a_full_backlog_makes_clients_wait_and_loses_nothing, .timeout = 120) {
  const double limit = 8.0 * 1024 * 1024;
  restart_with_backlog_mib(8);
  cr_assert(eq(dbl, status_number("queue_limit_bytes"), limit));

  sqlite3 *db = shut_out_the_writer();
  char rounds[32];
  snprintf(rounds, sizeof rounds, "%d", BACKLOG_ROUNDS);
  char err_path[CLIENT_PATH];
  client_paths(err_path, NULL);
  pid_t client = spawn_stream_client(rounds, err_path);
  for (int waited = 0; !daemon_paused(); waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "the daemon did not stop reading in %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
  cr_assert(ge(int, e2e_log_lines(&env, "(limit 8 MiB): clients wait"), 1), "see %s", env.log);

  char late_err[160];
  snprintf(late_err, sizeof late_err, "%s/late.err", env.dir);
  pid_t late = spawn_stream_client(rounds, late_err);
  wait_connected(2, "the second client");
  e2e_sleep_ms(300);
  /* At most one read (HTD_CONN_BUFFER, 1.1 MB) past the limit per client. */
  double held = status_number("queue_bytes");
  cr_assert(lt(dbl, held, limit + 3.0 * 1024 * 1024), "the daemon holds %.0f bytes", held);
  cr_assert(daemon_paused());
  /* Held: neither can have sent its rounds past the limit. */
  cr_assert(eq(int, waitpid(client, NULL, WNOHANG), 0), "the first client did not wait");
  cr_assert(eq(int, waitpid(late, NULL, WNOHANG), 0), "the second client did not wait");

  /* A connection with much sent before the daemon first reads it (the
   * daemon stopped meanwhile): what the daemon takes from it is a small
   * first read, not all that is there. */
  static char file[HT_PROTO_MAX_STRING + 1], func[HT_PROTO_MAX_STRING + 1];
  memset(file, 'f', HT_PROTO_MAX_STRING);
  memset(func, 'g', HT_PROTO_MAX_STRING);
  double before = status_number("queue_bytes");
  raw_client_t raw;
  e2e_signal_daemon(&env, SIGSTOP);
  raw_connect(&raw, env.socket);
  raw_hello(&raw, BACKLOG_RAW_PID, "raw");
  for (uint32_t i = 0; i < BACKLOG_RAW_SITES; i++) /* about 8 KB each */
    raw_site(&raw, 100 + i, i + 1, file, func);
  e2e_signal_daemon(&env, SIGCONT);
  wait_connected(3, "the raw client");
  double taken = status_number("queue_bytes") - before;
  cr_assert(lt(dbl, taken, 32.0 * 1024), "took %.0f bytes from a connection met while paused",
            taken);
  let_the_writer_in(db);

  cr_assert(eq(int, wait_exit(client, 60000), 0));
  cr_assert(eq(int, wait_exit(late, 60000), 0));
  raw_end(&raw);
  cr_assert(raw_wait_closed(&raw, WAIT_MS), "the daemon did not read the raw client's END");
  raw_close(&raw);
  cr_assert(ge(int, e2e_log_lines(&env, "caught up: clients are read again"), 1), "see %s",
            env.log);
  cJSON *all = sessions(0);
  assert_stream_session_whole(all, client);
  assert_stream_session_whole(all, late);
  const cJSON *r = session_of(all, BACKLOG_RAW_PID);
  cr_assert(ne(ptr, (void *)r, NULL), "no session of the raw client");
  cr_assert(eq(str, str(r, "end_reason"), "clean"));
  cJSON_Delete(all);
}

/* The rounds ht_stream_client says it did, from its stdout at out_path. */
static long long rounds_done(const char *out_path) {
  char *out = e2e_read_file(out_path);
  long long rounds = -1;
  cr_assert(out && sscanf(out, "done: %lld rounds", &rounds) == 1, "client said: %s", out);
  free(out);
  return rounds;
}

/* Checks that over the sessions of ht_stream_client (exited) every event
 * it made (2 x its rounds + 1; out_path holds its stdout) is stored or
 * counted as lost, exactly. first: the end reason of its first session,
 * later: of every later one (NULL: either is not checked). Returns its
 * sessions. */
static int count_client_sessions(pid_t client, const char *out_path, const char *first,
                                 const char *later) {
  long long rounds = rounds_done(out_path);
  cJSON *all = sessions(0);
  double stored = 0, lost = 0;
  int n = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") != client)
      continue;
    const char *want = n++ == 0 ? first : later;
    if (want)
      cr_assert(eq(str, str(s, "end_reason"), (char *)want), "session %d of the client", n);
    stored += e2e_num(s, "events");
    lost += e2e_num(s, "lost");
  }
  cJSON_Delete(all);
  cr_assert(eq(dbl, stored + lost, 2.0 * (double)rounds + 1), "stored %.0f lost %.0f of %lld",
            stored, lost, 2 * rounds + 1);
  return n;
}

/* Ends ht_stream_client's rounds (SIGUSR1), waits until it has exited and
 * its sessions are stored, and counts them (count_client_sessions). */
static int end_client_and_count(pid_t client, const char *out_path, const char *first,
                                const char *later) {
  kill(client, SIGUSR1);
  cr_assert(eq(int, wait_exit(client, 60000), 0));
  e2e_wait_disconnected(&env, 30000);
  return count_client_sessions(client, out_path, first, later);
}

/* SIGTERM while a client waits (the backlog at its limit, the client's
 * socket full): the stopping daemon shuts its side for reading and stores
 * what the socket held; the client's later writes fail, and it reports
 * those events to the daemon started again. Between the two sessions
 * every event the client made is stored or counted as lost. Before, the
 * socket's contents went with the connection, counted nowhere. */
Test(e2e_daemon, a_daemon_stopped_while_a_client_waits_loses_nothing_uncounted, .timeout = 120) {
  restart_with_backlog_mib(8);
  sqlite3 *db = shut_out_the_writer();
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  pid_t client = spawn_stream_client_out(STREAM_ROUNDS_FOREVER, err_path, out_path);
  for (int waited = 0; !daemon_paused(); waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "the daemon did not stop reading in %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
  e2e_sleep_ms(300); /* the client fills its socket */
  kill(env.daemon, SIGTERM);
  e2e_sleep_ms(100);
  let_the_writer_in(db); /* the daemon commits what it holds, and exits */
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, 0), env.daemon));
  env.daemon = 0;
  cr_assert(eq(int, WIFEXITED(status) && WEXITSTATUS(status) == 0, 1), "status 0x%x; see %s",
            status, env.log);
  /* The client goes on, and reports what it could not deliver meanwhile
   * to the daemon started again. */
  e2e_restart_daemon(&env);
  wait_connected(1, "the client's new session");
  e2e_sleep_ms(200);
  int n = end_client_and_count(client, out_path, "daemon-stopped", "clean");
  cr_assert(eq(int, n, 2), "%d sessions of the client; see %s", n, err_path);
}

/* A client's exit does not wait for the database: with the daemon's writer
 * shut out by another connection's write transaction, the program exits
 * at once (an exit that waited for the commit would take its full bound,
 * 5 s); once the database is free the session is stored whole. */
Test(e2e_daemon, a_client_exit_does_not_wait_until_its_session_is_stored) {
  sqlite3 *db = shut_out_the_writer();
  char err_path[CLIENT_PATH];
  client_paths(err_path, NULL);
  pid_t client = spawn_stream_client("1000", err_path);
  int status = wait_exit(client, 3000);
  let_the_writer_in(db);
  cr_assert(eq(int, status, 0));
  cJSON *all = sessions(0);
  const cJSON *s = session_of(all, (uint32_t)client);
  cr_assert(ne(ptr, (void *)s, NULL), "no session of pid %d", (int)client);
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 2001));
  cJSON_Delete(all);
}

/* The memory a program's frames were received into is kept, emptied, for
 * the next program (daemon/bufpool.h). While other programs keep every
 * core busy the frames wait for the idle-priority worker, filling slab
 * after slab; once decoded, the slabs are kept: at least one, never more
 * than half the backlog limit. (With a core free the worker keeps up and
 * one slab is cut again and again: nothing to keep.) */
#define KEPT_SLAB (2.0 * 1024 * 1024) /* HTD_BUFPOOL_SLAB */
#ifdef HT_TEST_TSAN
#define KEPT_ROUNDS 300000 /* about 3 slabs of frames; the TSan client is slow */
#else
#define KEPT_ROUNDS 600000 /* about 6 */
#endif
Test(e2e_daemon, memory_for_a_programs_frames_is_kept_for_the_next_one, .timeout = 90) {
  cr_assert(eq(dbl, status_number("buffers_kept_bytes"), 0), "nothing kept before any program");
  char err_path[CLIENT_PATH], rounds[32];
  client_paths(err_path, NULL);
  snprintf(rounds, sizeof rounds, "%d", KEPT_ROUNDS);
  pid_t spin[64];
  int nspin = start_spinners(spin);
  pid_t client = spawn_stream_client(rounds, err_path);
  int status = wait_exit(client, 60000);
  stop_spinners(spin, nspin);
  cr_assert(eq(int, status, 0));
  cJSON *all = sessions(0); /* answered once the session is stored */
  const cJSON *s = session_of(all, (uint32_t)client);
  cr_assert(eq(dbl, e2e_num(s, "events"), 2.0 * KEPT_ROUNDS + 1));
  cJSON_Delete(all);
  double kept = 0;
  for (int waited = 0; (kept = status_number("buffers_kept_bytes")) < KEPT_SLAB; waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "%.0f bytes kept after %d ms", kept, WAIT_MS);
    e2e_sleep_ms(20);
  }
  cr_assert(le(dbl, kept, status_number("queue_limit_bytes") / 2));
}

/* Whoever sees the socket accept may stop the daemon at once: its signals
 * are blocked before it listens and read from a signalfd (a SIGTERM in
 * between killed it; a handler's was now and then lost under TSan, and the
 * daemon ran on). Each round starts a daemon, waits only until a
 * connection is accepted, or a millisecond or two more (the loop is
 * running by then), and stops it with SIGTERM or SIGINT: it must exit 0,
 * having said which signal stopped it. */
Test(e2e_daemon, a_stop_signal_as_soon_as_the_socket_accepts_stops_the_daemon_cleanly) {
  e2e_stop_daemon(&env);
  for (int round = 0; round < 12; round++) {
    e2e_restart_daemon(&env);
    e2e_sleep_ms(round % 3);
    e2e_stop_daemon_with(&env, round % 2 ? SIGINT : SIGTERM);
  }
  cr_assert(eq(int, e2e_log_lines(&env, "signal 15: stopping"), 1 + 6));
  cr_assert(eq(int, e2e_log_lines(&env, "signal 2: stopping"), 6));
  cr_assert(eq(int, e2e_log_lines(&env, "stopped; every received event is committed"), 1 + 12));
}

Test(e2e_daemon, sigterm_with_a_client_connected_marks_it_daemon_stopped_and_exits_0) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  wait_events_received(6);
  e2e_stop_daemon(&env); /* asserts exit status 0 (and no leak under ASan) */
  cr_assert(eq(int, raw_wait_closed(&g.c, RAW_WAIT_MS), 1), "the daemon left the client connected");
  raw_close(&g.c);
  cr_assert(eq(int, e2e_log_lines(&env, "signal 15: stopping"), 1));
  cr_assert(eq(int, e2e_log_lines(&env, "stopped; every received event is committed"), 1));

  cJSON *all = sessions(1);
  const cJSON *s = session_of(all, GOOD_PID);
  cr_assert(ne(ptr, (void *)s, NULL));
  cr_assert(eq(str, str(s, "end_reason"), "daemon-stopped"));
  cr_assert(eq(str, str(s, "end_detail"), "heaptraced stopped"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 6));
  cJSON *st = stats(1, (int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 4));
  cr_assert(eq(dbl, e2e_num(st, "frees"), 2));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 300 + 400));
  cJSON_Delete(st);
  cJSON_Delete(all);
}

/* SIGKILLs the daemon. Its socket file goes first: while the kernel tears
 * a killed daemon down, its listening socket may still take a client's
 * reconnection for a moment, and the tests want the daemon plainly gone. */
static void kill_daemon(void) {
  kill(env.daemon, SIGKILL);
  waitpid(env.daemon, NULL, 0);
  env.daemon = 0;
}

/* Starts ht_stream_client streaming (its stderr into err_path, which
 * client_paths fills) and SIGKILLs the daemon once it has taken
 * KILL_AFTER_EVENTS events, the client still running. Returns the
 * client's pid. */
static pid_t kill_daemon_under_a_client(char err_path[CLIENT_PATH]) {
  client_paths(err_path, NULL);
  pid_t client = spawn_stream_client(STREAM_ROUNDS_FOREVER, err_path);
  wait_events_received(KILL_AFTER_EVENTS);
  cr_assert(eq(int, waitpid(client, NULL, WNOHANG), 0),
            "the client finished before the daemon could be killed mid-ingest");
  kill_daemon();
  return client;
}

/* kill_daemon_under_a_client, then lets the client finish untraced and
 * starts the daemon again on the same database, which takes the account
 * the client left as it ended (a second session, ended clean, with what it
 * could not deliver). Returns the killed session's id. */
static int kill_daemon_during_ingest(void) {
  char err_path[CLIENT_PATH];
  pid_t client = kill_daemon_under_a_client(err_path);
  /* The client notices, warns once, and goes on untraced to a clean exit. */
  kill(client, SIGUSR1);
  cr_assert(eq(int, wait_exit(client, 30000), 0));
  char *err = e2e_read_file(err_path);
  cr_assert(eq(int, e2e_count_lines(err, "heaptrace: lost the connection to heaptraced at"), 1),
            "client stderr:\n%s", err);
  cr_assert(eq(int, e2e_count_lines(err, "its account is left in"), 1), "client stderr:\n%s", err);
  free(err);
  e2e_restart_daemon(&env);
  cJSON *all = sessions(0);
  cr_assert(eq(int, session_count(all), 2));
  const cJSON *account = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(all, "sessions"), 1);
  cr_assert(eq(str, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(account, "end_reason")),
               "clean"));
  cr_assert(lt(dbl, 0, e2e_num(account, "lost")), "the account counts nothing undelivered");
  int id =
      (int)e2e_num(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(all, "sessions"), 0), "id");
  cJSON_Delete(all);
  return id;
}

Test(e2e_daemon, kill_9_during_ingest_leaves_an_intact_database_and_a_daemon_stopped_session) {
  int id = kill_daemon_during_ingest();

  e2e_assert_integrity(&env);

  cJSON *all = sessions(0);
  const cJSON *killed = session_id(all, id);
  cr_assert(eq(str, str(killed, "end_reason"), "daemon-stopped"));
  cr_assert(eq(str, str(killed, "end_detail"), "heaptraced stopped without ending the session"));
  cJSON_Delete(all);

  /* heapctl answers about it from what was committed: a prefix of the
   * stream, so every free has its malloc. */
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT SUM(count) FROM event_chunks WHERE session = %d", id);
  long long stored = e2e_sql_number(&env, sql);
  cJSON *st = stats(0, id);
  cr_assert(lt(dbl, 0, e2e_num(st, "events")));
  cr_assert(eq(dbl, e2e_num(st, "events"), (double)stored));
  cr_assert(eq(dbl, e2e_num(st, "allocations") + e2e_num(st, "frees"), e2e_num(st, "events")));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
  cr_assert(
      eq(dbl, e2e_num(st, "current_blocks"), e2e_num(st, "allocations") - e2e_num(st, "frees")));
  cJSON_Delete(st);

  /* A new traced program after the restart is stored whole. */
  char *client[] = {(char *)e2e_bin("ht_stream_client"), "1000", NULL};
  e2e_result_t r = e2e_run(&env, client, NULL);
  cr_assert(eq(int, r.status, 0), "ht_stream_client: %s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 0), "client warned: %s", r.err);
  e2e_result_free(&r);
  all = sessions(0);
  const cJSON *s = session_id(all, id + 2); /* after the account the killed client left */
  cr_assert(eq(str, str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 2 * 1000 + 1));
  cJSON_Delete(all);
  st = stats(0, id + 2);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), 1001));
  cr_assert(eq(dbl, e2e_num(st, "frees"), 1000));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), 64));
  cJSON_Delete(st);
  e2e_stop_daemon(&env); /* the recovered daemon stops cleanly too */
}

Test(e2e_daemon, session_killed_with_the_daemon_lists_the_events_it_stored) {
  int id = kill_daemon_during_ingest();
  cJSON *all = sessions(0);
  double listed = e2e_num(session_id(all, id), "events");
  cJSON_Delete(all);
  cJSON *st = stats(0, id);
  cr_assert(eq(dbl, listed, e2e_num(st, "events")),
            "'heapctl sessions' lists %.0f events, stats replays %.0f", listed,
            e2e_num(st, "events"));
  cJSON_Delete(st);
}

/* The sessions of pid, which must be one. */
static const cJSON *only_session_of(const cJSON *all, pid_t pid) {
  const cJSON *s, *found = NULL;
  int n = 0;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") == pid) {
      found = s;
      n++;
    }
  }
  cr_assert(eq(int, n, 1), "%d sessions of pid %d", n, (int)pid);
  return found;
}

/* Kills the daemon with what it read of a program's session not stored:
 * the program has exited (the daemon had read its END), and the test's
 * own write transaction kept the writer out. The daemon started again
 * counts what the killed one had received and never committed as lost,
 * from the ledger beside the database (daemon/ledger.h): the session's
 * stored and lost events are every event the program made. Before, the
 * session listed what was stored and lost nothing: the rest was gone
 * uncounted. */
Test(e2e_daemon, a_daemon_killed_before_storing_what_it_read_counts_the_rest_as_lost) {
  /* A session stored whole before: its entry is gone, nothing is added. */
  assert_good_session_works(GOOD_PID);

  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  pid_t client = spawn_stream_client_out(STREAM_ROUNDS_FOREVER, err_path, out_path);
  /* Part of the session is stored: a query's barrier commits what came. */
  double stored = 0;
  for (int waited = 0; stored < 1000; waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "nothing of the client's session was stored");
    e2e_sleep_ms(20);
    cJSON *all = sessions(0);
    const cJSON *s = session_of(all, (uint32_t)client);
    stored = s ? e2e_num(s, "events") : 0;
    cJSON_Delete(all);
  }
  sqlite3 *db = shut_out_the_writer();
  kill(client, SIGUSR1); /* ends its rounds */
  cr_assert(eq(int, wait_exit(client, 30000), 0));
  long long rounds = rounds_done(out_path);
  kill_daemon();
  let_the_writer_in(db);
  char ledger[200], kept[200], cp[420];
  snprintf(ledger, sizeof ledger, "%s.ledger", env.db);
  snprintf(kept, sizeof kept, "%s/kept.ledger", env.dir);
  snprintf(cp, sizeof cp, "cp '%s' '%s'", ledger, kept);
  cr_assert(eq(int, system(cp), 0));

  e2e_restart_daemon(&env);
  cr_assert(eq(int, e2e_log_lines(&env, "what it did not store is counted as lost"), 1), "see %s",
            env.log);
  cJSON *all = sessions(0);
  const cJSON *s = only_session_of(all, client);
  cr_assert(eq(str, str(s, "end_reason"), "daemon-stopped"));
  double events = e2e_num(s, "events"), lost = e2e_num(s, "lost");
  cr_assert(ge(dbl, events, stored), "stored %.0f, then %.0f", stored, events);
  cr_assert(lt(dbl, 0, lost), "nothing counted as lost");
  cr_assert(eq(dbl, events + lost, 2.0 * (double)rounds + 1), "stored %.0f lost %.0f of %lld",
            events, lost, 2 * rounds + 1);
  int id = (int)e2e_num(s, "id");
  cJSON_Delete(all);
  cJSON *st = stats(0, id);
  cr_assert(eq(dbl, e2e_num(cJSON_GetObjectItemCaseSensitive(st, "session"), "lost"), lost));
  cJSON_Delete(st);

  /* Counted once, even by a daemon that finds the same entries again (one
   * killed after it counted them and before it cleared them). */
  e2e_stop_daemon(&env);
  cr_assert(eq(int, rename(kept, ledger), 0));
  e2e_restart_daemon(&env);
  all = sessions(0);
  cr_assert(eq(dbl, e2e_num(only_session_of(all, client), "lost"), lost));
  const cJSON *good = session_of(all, GOOD_PID);
  cr_assert(eq(str, str(good, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(good, "lost"), 0));
  cJSON_Delete(all);
  cr_assert(eq(int, e2e_log_lines(&env, "what it did not store is counted as lost"), 1));
}

/* The same when not even the session's start was stored: the session is
 * named from what the ledger kept of its handshake, with every event it
 * made lost. */
Test(e2e_daemon, a_daemon_killed_before_storing_a_sessions_start_names_it_and_counts_it_lost) {
  sqlite3 *db = shut_out_the_writer();
  char err_path[CLIENT_PATH];
  client_paths(err_path, NULL);
  pid_t client = spawn_stream_client("20000", err_path);
  cr_assert(eq(int, wait_exit(client, 30000), 0));
  kill_daemon();
  let_the_writer_in(db);

  e2e_restart_daemon(&env);
  cJSON *all = sessions(0);
  const cJSON *s = only_session_of(all, client);
  cr_assert(eq(str, str(s, "app"), "ht_stream_client"));
  cr_assert(eq(str, str(s, "end_reason"), "daemon-stopped"));
  cr_assert(eq(str, str(s, "end_detail"),
               "heaptraced stopped before it stored the start of the session"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 0));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 2 * 20000 + 1));
  const cJSON *why = cJSON_GetObjectItemCaseSensitive(s, "lost_by_reason");
  cr_assert(eq(int, cJSON_GetArraySize(why), 1));
  cr_assert(eq(dbl, e2e_num(why, "unstored"), 2 * 20000 + 1));
  char ids[16];
  snprintf(ids, sizeof ids, "%.0f", e2e_num(s, "id"));
  cJSON_Delete(all);
  /* heapctl's text says why too. */
  e2e_result_t r = e2e_heapctl(&env, "stats", "-s", ids, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(ne(ptr, strstr(r.out, ", 0 events, 40001 lost (unstored 40001)\n"), NULL), "%s", r.out);
  e2e_result_free(&r);
  /* Its number is its own: the next session gets the one after it. */
  assert_good_session_works(GOOD_PID);
  all = sessions(0);
  cr_assert(eq(dbl, e2e_num(session_of(all, GOOD_PID), "id"),
               e2e_num(only_session_of(all, client), "id") + 1));
  cJSON_Delete(all);
}

/* A ledger that cannot be opened (here a directory where it goes) does not
 * keep the daemon from serving: it says what it cannot count, and why. */
Test(e2e_daemon, a_ledger_that_cannot_be_opened_is_said_and_the_daemon_serves_without_it) {
  e2e_stop_daemon(&env);
  char ledger[200];
  snprintf(ledger, sizeof ledger, "%s.ledger", env.db);
  cr_assert(eq(int, unlink(ledger), 0));
  cr_assert(eq(int, mkdir(ledger, 0700), 0));
  e2e_restart_daemon(&env);
  char line[300];
  snprintf(line, sizeof line, "cannot open the ledger %s: Is a directory; going on without it",
           ledger);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1), "see %s", env.log);
  assert_good_session_works(GOOD_PID);
  e2e_stop_daemon(&env);
  rmdir(ledger);
}

/* Killed while it read nothing (stopped, its socket full): what the client
 * had written and the daemon never read is counted too. The client goes
 * on, reconnects to the daemon started again and says what it wrote on
 * the lost connection (PREVIOUS, proto/PROTOCOL.md); the daemon counts
 * what of it was neither stored nor in its ledger. Over the client's two
 * sessions every event it made is stored or counted as lost, exactly. */
Test(e2e_daemon, a_daemon_killed_with_a_clients_events_unread_counts_them_once_it_reconnects,
     .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  /* Flushed every 100 rounds: many small frames, so that the socket holds
   * whole ones when the daemon dies (the frame a write was in when it
   * failed is the client's to count, as undelivered). */
  pid_t client = spawn_stream_client_flushing(STREAM_ROUNDS_FOREVER, "100", err_path, out_path);
  wait_events_received(1000);
  e2e_signal_daemon(&env, SIGSTOP);
  e2e_sleep_ms(300); /* the client fills its socket and waits */
  kill_daemon();
  e2e_restart_daemon(&env);
  wait_connected(1, "the client's new session");
  e2e_sleep_ms(200);
  int n = end_client_and_count(client, out_path, "daemon-stopped", "clean");
  cr_assert(eq(int, n, 2), "%d sessions of the client; see %s", n, err_path);
  /* The killed session says why it lost what it lost: what the daemon
   * had read and not stored, and what it never read. (Criterion 2.4's
   * gt() passes on equal values: lt() with the sides swapped is strict.) */
  cJSON *all = sessions(0);
  const cJSON *killed = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(all, "sessions"), 0);
  const cJSON *why = cJSON_GetObjectItemCaseSensitive(killed, "lost_by_reason");
  cr_assert(lt(dbl, 0, e2e_num(why, "unread")), "nothing was counted as unread");
  double sum = 0;
  const cJSON *w;
  cJSON_ArrayForEach(w, why) sum += cJSON_GetNumberValue(w);
  cr_assert(eq(dbl, sum, e2e_num(killed, "lost")));
  cJSON_Delete(all);
  cr_assert(eq(int, e2e_log_lines(&env, "events its client wrote were never read"), 1), "see %s",
            env.log);
}

/* Kills the stopped daemon, starts it again and, once ht_stream_client
 * (stdout at out_path, stderr at err_path) has reconnected, ends it: its
 * one session holds every event it made, stored or counted as lost. */
static void kill_and_count_in_one_session(pid_t client, const char *err_path,
                                          const char *out_path) {
  kill_daemon();
  e2e_restart_daemon(&env);
  wait_connected(1, "the client's new session");
  e2e_sleep_ms(200);
  int n = end_client_and_count(client, out_path, "clean", NULL);
  cr_assert(eq(int, n, 1), "%d sessions of the client; see %s", n, err_path);
}

/* A daemon killed before it read anything of a connection, not even its
 * handshake: that connection's session is nowhere, so the events written
 * on it are counted as lost in the session that reports them. */
Test(e2e_daemon, a_connection_never_read_at_all_is_counted_in_the_session_after_it,
     .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  e2e_signal_daemon(&env, SIGSTOP); /* its listening socket still queues connections */
  pid_t client = spawn_stream_client_flushing(STREAM_ROUNDS_FOREVER, "100", err_path, out_path);
  e2e_sleep_ms(500); /* connected, handshake and events written, the socket full */
  kill_and_count_in_one_session(client, err_path, out_path);
  cJSON *all = sessions(0);
  const cJSON *s = only_session_of(all, client);
  cr_assert(lt(dbl, 0, e2e_num(cJSON_GetObjectItemCaseSensitive(s, "lost_by_reason"), "unread")),
            "nothing was counted as unread");
  cJSON_Delete(all);
  cr_assert(eq(int, e2e_log_lines(&env, "was never read, not even its start"), 1), "see %s",
            env.log);
}

/* The same in drop mode: the client gives the never-read connection up
 * after its stall and makes another to the stopped daemon, on which it
 * reports in LOST records what the first could not take; that one is
 * never read either. Once the daemon is back, the client's account of
 * each (PREVIOUS) counts those reports with the events written on it:
 * again every event the client made is stored or counted as lost. */
Test(e2e_daemon, reports_written_on_a_connection_never_read_are_counted_too, .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  e2e_signal_daemon(&env, SIGSTOP);
  setenv("HEAPTRACE_MODE", "drop", 1);
  pid_t client = spawn_stream_client_flushing(STREAM_ROUNDS_FOREVER, "100", err_path, out_path);
  unsetenv("HEAPTRACE_MODE");
  for (int waited = 0;; waited += 50) {
    char *err = e2e_read_file(err_path);
    int given_up = err && strstr(err, "the connection is given up") != NULL;
    free(err);
    if (given_up)
      break;
    cr_assert(lt(int, waited, 30000), "the client did not give its connection up; see %s",
              err_path);
    e2e_sleep_ms(50);
  }
  e2e_sleep_ms(1000); /* a new connection, its reports written; its stall is 5 s away */
  kill_and_count_in_one_session(client, err_path, out_path);
  cr_assert(le(int, 1, e2e_log_lines(&env, "more its client reported lost on it")), "see %s",
            env.log);
}

/* Accounts left beside the daemon's socket (SOCKET.left.*), from env.dir. */
static int accounts_left(void) {
  DIR *d = opendir(env.dir);
  cr_assert(ne(ptr, (void *)d, NULL));
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    n += strstr(de->d_name, ".left.") != NULL;
  closedir(d);
  return n;
}

/* A program that ends while no daemon is there can neither send its END
 * nor say what it wrote on the connection it lost: it leaves that account
 * beside the socket, and the daemon takes it when it starts, as the
 * session of a connection that said just that. Over the client's two
 * sessions every event it made is stored or counted as lost, exactly. */
Test(e2e_daemon, a_program_that_ends_with_no_daemon_leaves_its_account_for_the_next,
     .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  pid_t client = spawn_stream_client_out(STREAM_ROUNDS_FOREVER, err_path, out_path);
  wait_events_received(1000);
  kill_daemon();
  e2e_sleep_ms(300); /* the client goes on, its events undelivered */
  kill(client, SIGUSR1);
  cr_assert(eq(int, wait_exit(client, 60000), 0));
  char *err = e2e_read_file(err_path);
  cr_assert(eq(int, e2e_count_lines(err, "its account is left in"), 1), "%s", err);
  free(err);
  cr_assert(eq(int, accounts_left(), 1));
  e2e_restart_daemon(&env);
  int n = count_client_sessions(client, out_path, "daemon-stopped", "clean");
  cr_assert(eq(int, n, 2), "%d sessions of the client; see %s", n, err_path);
  cr_assert(eq(int, e2e_log_lines(&env, "ended while no heaptraced was there"), 1), "see %s",
            env.log);
  cr_assert(eq(int, accounts_left(), 0), "the account is still there");
}

/* An account, as a client leaves it: HELLO of ACCOUNT_PID and an END
 * counting 42 undelivered events, written under a .tmp name, renamed to
 * SOCKET.left.11.12, whose path goes into path. */
#define ACCOUNT_PID 710011u
static void leave_an_account(char *path, size_t cap) {
  uint8_t buf[1024];
  size_t n =
      raw_encode_account(buf, sizeof buf, ACCOUNT_PID, "account", 1234567890000000000ull, 42);
  char tmp[PATH_MAX + 8];
  snprintf(path, cap, "%s.left.11.12", env.socket);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *fp = fopen(tmp, "wb");
  cr_assert(ne(ptr, (void *)fp, NULL), "cannot write %s", tmp);
  cr_assert(eq(sz, fwrite(buf, 1, n, fp), n));
  cr_assert(eq(int, fclose(fp), 0));
  cr_assert(eq(int, rename(tmp, path), 0));
}

/* A daemon killed while it stores an account (its writer shut out of the
 * database, so that the account waits for its commit) leaves the file,
 * renamed NAME.taking, and the next daemon stores it, once. Before, the
 * file went as it was read, and the account with the killed daemon. */
Test(e2e_daemon, an_account_whose_daemon_was_killed_before_storing_it_is_stored_by_the_next,
     .timeout = 120) {
  sqlite3 *db = shut_out_the_writer();
  char path[PATH_MAX], taking[PATH_MAX + 16];
  leave_an_account(path, sizeof path);
  snprintf(taking, sizeof taking, "%s.taking", path);
  struct stat sb;
  for (int waited = 0; stat(taking, &sb) != 0; waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "the daemon did not take the account in %d ms", WAIT_MS);
    e2e_sleep_ms(20);
  }
  kill_daemon();
  let_the_writer_in(db);
  cr_assert(eq(int, stat(taking, &sb), 0), "the killed daemon's account is gone");
  e2e_restart_daemon(&env);
  cJSON *all = sessions(0);
  int n = 0;
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if (e2e_num(s, "pid") != ACCOUNT_PID)
      continue;
    n++;
    cr_assert(eq(str, str(s, "end_reason"), "clean"));
    cr_assert(eq(dbl, e2e_num(s, "lost"), 42));
  }
  cJSON_Delete(all);
  cr_assert(eq(int, n, 1), "%d sessions of the account", n);
  cr_assert(ne(int, stat(taking, &sb), 0), "the account stored is still there");
  cr_assert(ne(int, stat(path, &sb), 0));
}

/* An exec that fails while no daemon is there: its END, which counts what
 * the client could not deliver until then, is left as an account, and
 * tracing goes on; the session the client makes with the daemon started
 * again counts only what it could not deliver after the exec. Over the
 * client's three sessions every event it made is stored or counted as
 * lost, exactly: counted again there, what the exec's END counted would
 * make more. */
Test(e2e_daemon, a_failed_exec_with_no_daemon_counts_its_undelivered_events_once, .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH], missing[CLIENT_PATH];
  client_paths(err_path, out_path);
  snprintf(missing, sizeof missing, "%s/not-there", env.dir);
  setenv("STREAM_CLIENT_EXEC", missing, 1);
  pid_t client = spawn_stream_client_out(STREAM_ROUNDS_FOREVER, err_path, out_path);
  unsetenv("STREAM_CLIENT_EXEC");
  wait_events_received(1000);
  kill_daemon();
  e2e_sleep_ms(300);     /* the client goes on, its events undelivered */
  kill(client, SIGUSR1); /* the exec, which fails */
  for (int waited = 0; accounts_left() < 1; waited += 20) {
    cr_assert(lt(int, waited, WAIT_MS), "the exec left no account; see %s", err_path);
    e2e_sleep_ms(20);
  }
  e2e_sleep_ms(300); /* undelivered again, after the exec */
  e2e_restart_daemon(&env);
  wait_connected(1, "the client after its exec");
  e2e_sleep_ms(300); /* delivered */
  int n = end_client_and_count(client, out_path, "daemon-stopped", "clean");
  cr_assert(eq(int, n, 3), "%d sessions of the client; see %s", n, err_path);
  char *err = e2e_read_file(err_path);
  cr_assert(eq(int, e2e_count_lines(err, "exec failed: 2"), 1), "%s", err);
  free(err);
  cr_assert(eq(int, accounts_left(), 0), "the account is still there");
}

/* A program given its socket as a relative path (HEAPTRACE_SOCKET=NAME,
 * started in the socket's directory) that then changes its directory, as
 * one that daemonizes does, still finds the daemon when it is started
 * again, and when it ends with no daemon leaves its account beside the
 * socket, not in the directory it moved to. Over its three sessions (two
 * daemons killed under it, then its account) every event it made is
 * stored or counted as lost, exactly. */
Test(e2e_daemon, a_relative_socket_path_holds_when_the_program_changes_directory, .timeout = 120) {
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH], elsewhere[CLIENT_PATH];
  client_paths(err_path, out_path);
  snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", env.dir);
  cr_assert(eq(int, mkdir(elsewhere, 0700), 0));
  pid_t client = spawn_stream_client_in(STREAM_ROUNDS_FOREVER, NULL, elsewhere, err_path, out_path);
  wait_events_received(1000);
  kill_daemon();
  e2e_restart_daemon(&env);
  wait_events_received(1000); /* the client found the new daemon */
  kill_daemon();
  e2e_sleep_ms(300); /* the client goes on, its events undelivered */
  kill(client, SIGUSR1);
  cr_assert(eq(int, wait_exit(client, 60000), 0), "see %s", err_path);
  cr_assert(eq(int, accounts_left(), 1), "see %s", err_path);
  cr_assert(eq(int, rmdir(elsewhere), 0), "the client left something in %s: %s", elsewhere,
            strerror(errno));
  e2e_restart_daemon(&env);
  int n = count_client_sessions(client, out_path, "daemon-stopped", NULL);
  cr_assert(eq(int, n, 3), "%d sessions of the client; see %s", n, err_path);
  cr_assert(eq(int, accounts_left(), 0), "the account is still there");
}

/* The same record from a client that gave up a connection the daemon
 * still holds unread (drop mode, the daemon behind: a stall gives the
 * connection up): the daemon reads and stores the rest later, and only
 * then - once that session has ended - counts what was never read, which
 * is nothing. Counting it when the record came would count as lost what
 * was about to be stored. */
Test(e2e_daemon, a_connection_given_up_is_counted_only_once_its_session_is_stored, .timeout = 120) {
  restart_with_backlog_mib(8);
  sqlite3 *db = shut_out_the_writer();
  char err_path[CLIENT_PATH], out_path[CLIENT_PATH];
  client_paths(err_path, out_path);
  setenv("HEAPTRACE_MODE", "drop", 1);
  pid_t client = spawn_stream_client_out(STREAM_ROUNDS_FOREVER, err_path, out_path);
  unsetenv("HEAPTRACE_MODE");
  /* The backlog fills, the daemon stops reading, the client gives the
   * connection up after its stall and makes a new one, whose first read
   * (handshake and PREVIOUS) the paused daemon still takes. */
  for (int waited = 0; status_number("sessions_connected") < 2; waited += 50) {
    cr_assert(lt(int, waited, 30000), "the client did not give its connection up; see %s",
              err_path);
    e2e_sleep_ms(50);
  }
  e2e_sleep_ms(300);
  let_the_writer_in(db);
  e2e_sleep_ms(500);
  int n = end_client_and_count(client, out_path, NULL, NULL);
  cr_assert(ge(int, n, 2), "%d sessions of the client; see %s", n, err_path);
  cr_assert(eq(llong,
               e2e_sql_number(&env, "SELECT COALESCE(SUM(count), 0) FROM lost WHERE why = "
                                    "'unread'"),
               0));
}

/* A daemon killed with -9 keeps its listening socket until its last thread
 * has exited (up to seconds for a thread at idle priority on a busy
 * machine). A client that connected then went on in a session nobody
 * would read, and lost it again: a second warning. dying_listener holds
 * that moment for as long as the test needs. */
Test(e2e_daemon, a_killed_daemon_that_is_still_exiting_is_not_reconnected_to) {
  char err_path[CLIENT_PATH];
  pid_t client = kill_daemon_under_a_client(err_path);
  unlink(env.socket);
  pid_t dying = spawn_dying_listener(env.socket, NULL);
  /* The client retries 100, 200 and 400 ms after the loss. */
  e2e_sleep_ms(1000);
  char *err = e2e_read_file(err_path); /* before the listener really goes */
  kill(dying, SIGKILL);
  e2e_result_t d = e2e_wait(&env, dying);
  kill(client, SIGUSR1);
  int status = wait_exit(client, 30000);
  cr_assert(eq(int, status, 0));
  cr_assert(eq(str, d.out, "ready\n"), "dying_listener: %s", d.err);
  e2e_result_free(&d);
  cr_assert(eq(int, e2e_count_lines(err, "heaptrace: lost the connection"), 1), "%s", err);
  cr_assert(eq(int, e2e_count_lines(err, "heaptrace: reconnected"), 0), "%s", err);
  free(err);
  unlink(env.socket);
  e2e_restart_daemon(&env);
}

/* The same for the database's lock, held by a predecessor on another
 * socket. */
Test(e2e_daemon, a_start_waits_for_the_database_lock_of_a_killed_predecessor) {
  e2e_stop_daemon(&env);
  char other[200], lock[200];
  snprintf(other, sizeof other, "%s/other.sock", env.dir);
  snprintf(lock, sizeof lock, "%s.lock", env.db);
  pid_t dying = spawn_dying_listener(other, lock);
  pid_t killer = fork();
  cr_assert(ge(int, killer, 0));
  if (killer == 0) {
    e2e_sleep_ms(500);
    kill(dying, SIGKILL);
    _exit(0);
  }
  e2e_restart_daemon(&env); /* returns once it listens: after the lock */
  waitpid(killer, NULL, 0);
  e2e_result_t d = e2e_wait(&env, dying);
  cr_assert(eq(str, d.out, "ready\n"), "dying_listener: %s", d.err);
  e2e_result_free(&d);
  char line[400];
  snprintf(line, sizeof line,
           "database %s is held by heaptraced %d, which was killed and is still exiting; "
           "waiting for it",
           env.db, (int)dying);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1));
  assert_good_session_works(GOOD_PID);
}

Test(e2e_daemon, heapctl_names_a_killed_daemon_that_is_still_exiting) {
  e2e_stop_daemon(&env);
  pid_t dying = spawn_dying_listener(env.socket, NULL);
  e2e_result_t r = e2e_heapctl(&env, "stats", NULL);
  kill(dying, SIGKILL);
  e2e_result_t d = e2e_wait(&env, dying);
  e2e_result_free(&d);
  char msg[300];
  snprintf(msg, sizeof msg,
           "heaptraced at %s (pid %d) was killed and is still exiting; start a new one, or read "
           "a database offline with 'heapctl --db FILE'",
           env.socket, (int)dying);
  cr_assert(eq(int, r.status, 2), "heapctl: %d\n%s", r.status, r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, msg), 1), "heapctl said:\n%s", r.err);
  e2e_result_free(&r);
  unlink(env.socket);
  e2e_restart_daemon(&env);
}

/* ======================================================================
 * Another user
 * ==================================================================== */

static uid_t nobody_uid(void) {
  struct passwd *pw = getpwnam("nobody");
  cr_assert(ne(ptr, (void *)pw, NULL), "no user 'nobody'");
  return pw->pw_uid;
}

/* Runs ht_stream_client 100 as nobody; returns its result. */
static e2e_result_t run_client_as_nobody(void) {
  char *argv[] = {"/usr/bin/setpriv",
                  "--reuid=nobody",
                  "--regid=nogroup",
                  "--clear-groups",
                  (char *)e2e_bin("ht_stream_client"),
                  "100",
                  NULL};
  return e2e_run(&env, argv, NULL);
}

/* Refused by the file system: the socket's directory is 0700, so nobody
 * cannot even reach the socket; the daemon never sees the attempt. */
Test(e2e_daemon, second_user_cannot_reach_the_socket_in_its_private_directory) {
  if (getuid() != 0)
    e2e_skip_test(&env, "needs root to run a client as another user");
  e2e_result_t r = run_client_as_nobody();
  cr_assert(eq(int, r.status, 0), "client as nobody: %s", r.err);
  char warn[300];
  snprintf(warn, sizeof warn,
           "heaptrace: cannot connect to heaptraced at %s (Permission denied); tracing is off.",
           env.socket);
  cr_assert(eq(int, e2e_count_lines(r.err, warn), 1), "client stderr:\n%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 1), "client stderr:\n%s", r.err);
  e2e_result_free(&r);
  cr_assert(eq(int, e2e_log_lines(&env, "refused a connection"), 0));
  cJSON *all = sessions(0);
  cr_assert(eq(int, session_count(all), 0));
  cJSON_Delete(all);
}

/* Refused by SO_PEERCRED: the test opens the directory (0711) and the
 * socket (0666) that the daemon made private, so nobody's connect succeeds
 * and only the daemon's peer check stands in the way. The client's own
 * warning is not checked: whether its writes fail before it exits depends
 * on when the daemon hangs up. */
Test(e2e_daemon, second_user_is_refused_by_peer_credentials_when_the_socket_is_reachable) {
  if (getuid() != 0)
    e2e_skip_test(&env, "needs root to run a client as another user");
  cr_assert(eq(int, chmod(env.dir, 0711), 0));
  cr_assert(eq(int, chmod(env.socket, 0666), 0));
  e2e_result_t r = run_client_as_nobody();
  cr_assert(eq(int, r.status, 0), "client as nobody: %s", r.err);
  e2e_result_free(&r);
  char why[128];
  snprintf(why, sizeof why, ": uid %u is not the daemon's uid %u", (unsigned)nobody_uid(),
           (unsigned)getuid());
  cr_assert(eq(int, e2e_log_lines(&env, why), 1));
  cr_assert(eq(int, e2e_log_lines(&env, "refused a connection from pid"), 1));
  cJSON *all = sessions(0);
  cr_assert(eq(int, session_count(all), 0));
  cJSON_Delete(all);
}

/* A database whose daemon was killed -9 -- WAL and all, the session still
 * marked running, nobody to recover it -- answers heapctl offline: the
 * session's committed events are analysed where they lie. */
Test(e2e_daemon, a_database_left_by_a_killed_daemon_answers_offline) {
  char err_path[CLIENT_PATH];
  pid_t client = kill_daemon_under_a_client(err_path);
  kill(client, SIGUSR1);
  cr_assert(eq(int, wait_exit(client, 30000), 0));
  cJSON *all = sessions(1);
  cr_assert(eq(int, session_count(all), 1));
  const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(all, "sessions"), 0);
  cr_assert(eq(str, str(s, "end_reason"), "running"));
  int id = (int)e2e_num(s, "id");
  cJSON_Delete(all);
  /* heapctl first: the sqlite3 shell below may checkpoint the WAL. */
  cJSON *st = stats(1, id);
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT SUM(count) FROM event_chunks WHERE session = %d", id);
  long long stored = e2e_sql_number(&env, sql);
  cr_assert(lt(long, 0, (long)stored));
  cr_assert(eq(dbl, e2e_num(st, "events"), (double)stored));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
  cr_assert(
      eq(dbl, e2e_num(st, "current_blocks"), e2e_num(st, "allocations") - e2e_num(st, "frees")));
  cJSON_Delete(st);
}
