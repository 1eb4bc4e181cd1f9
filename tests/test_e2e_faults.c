/* test_e2e_faults.c - heaptraced when things go wrong around it: killed
 * with SIGKILL at random points of ingest, round after round; a client
 * killed mid-stream; the disk under the database full; the socket's
 * directory removed while it runs.
 *
 * What a client may count on is what a query confirmed: the daemon
 * answers a query once everything it read before is committed, and it has
 * read a session whole when it closes the connection after END (PROTOCOL.md,
 * END and CTL_REQUEST). The kill rounds hold it to that: every session
 * that a query answered after its close, before the kill, must come back
 * clean and whole after the restart, and every other session must be
 * clean and whole or a consistent prefix of what was sent. HT_LONG=1 runs KILL_ROUNDS_LONG
 * rounds instead of KILL_ROUNDS; the seed is printed ("e2e_faults: ...")
 * and can be set with HT_FAULT_SEED.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e.h"
#include "raw_client.h"

#define KILL_ROUNDS 10
#define KILL_ROUNDS_LONG 200
#define KILL_DRIVERS 3
#define KILL_PID_BASE 1000000u /* + round * 1000 + driver * 100 + session */
#define KILL_SESSIONS_MAX 100  /* per driver and round */
#define KILL_FRAMES 10
#define KILL_PAIRS_PER_FRAME 100
#define KILL_EVENTS (KILL_FRAMES * KILL_PAIRS_PER_FRAME * 2)
#define KILL_FRAME_PAUSE_MS 10 /* up to this long between frames: a session spans commits */
#define KILL_DELAY_MIN_MS 20
#define KILL_DELAY_MAX_MS 400
#define GOOD_PID 610001u
#define FULL_PID 610002u
#define FULL_EVENTS 40000 /* random addresses and sizes: chunks zstd cannot shrink */
#define FULL_FS_KB 2048
#define WAIT_MS 20000

E2E_SUITE(e2e_faults, 600);

/* ======================================================================
 * Helpers
 * ==================================================================== */

/* Lines of the daemon's log containing both a and b. */
static int log_lines_with(const char *a, const char *b) {
  char *log = e2e_read_file(env.log);
  int n = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n"))
    n += strstr(line, a) && strstr(line, b);
  free(log);
  return n;
}

static cJSON *stats_of(int offline, int id) {
  char sid[16];
  snprintf(sid, sizeof sid, "%d", id);
  return e2e_heapctl_json(&env, offline, "stats", "-s", sid);
}

/* Every session's event count is what its stored chunks hold. */
static void assert_counts_agree_with_chunks(void) {
  char *out =
      e2e_sql_text(&env, "SELECT id, pid, end_reason, events, (SELECT COALESCE(SUM(count), 0) "
                         "FROM event_chunks WHERE session = s.id) AS stored FROM sessions s "
                         "WHERE events != stored");
  cr_assert(eq(str, out, ""),
            "sessions whose event count is not what is stored "
            "(id|pid|end|events|stored):\n%s",
            out);
  free(out);
}

static uint64_t now_ns(void) {
  return raw_now_ns();
}

/* The session of pid once it is no longer running (through the daemon,
 * or offline). */
static cJSON *wait_session_ended(int offline, long long pid, const cJSON **out) {
  for (int waited = 0;; waited += 20) {
    cJSON *all = e2e_heapctl_json(&env, offline, "sessions", NULL, NULL);
    const cJSON *s = e2e_session_of_pid(all, pid);
    if (s && strcmp(e2e_str(s, "end_reason"), "running") != 0) {
      *out = s;
      return all;
    }
    cJSON_Delete(all);
    cr_assert(lt(int, waited, WAIT_MS), "the session of pid %lld did not end in %d ms", pid,
              WAIT_MS);
    e2e_sleep_ms(20);
  }
}

/* A well-behaved session, stored exact (live or offline). */
static void assert_good_session(uint32_t pid, int offline) {
  cJSON *all = e2e_heapctl_json(&env, offline, "sessions", NULL, NULL);
  const cJSON *s = e2e_session_of_pid(all, pid);
  cr_assert(ne(ptr, (void *)s, NULL), "no session for pid %u", pid);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), RAW_SESSION_EVENTS));
  cJSON *st = stats_of(offline, (int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(st, "allocations"), RAW_SESSION_ALLOCS));
  cr_assert(eq(dbl, e2e_num(st, "frees"), RAW_SESSION_FREES));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), RAW_SESSION_BYTES));
  cJSON_Delete(st);
  cJSON_Delete(all);
}

static void run_good_session(uint32_t pid) {
  raw_session_t g;
  raw_session_begin(&g, env.socket, pid, "good");
  raw_session_finish(&g);
}

/* Waits for pid's stdout file (from e2e_spawn) to hold needle n times. */
static char *wait_output(pid_t pid, const char *needle, int n) {
  char path[160];
  snprintf(path, sizeof path, "%s/out.%d", env.dir, (int)pid);
  for (int waited = 0;; waited += 10) {
    char *out = e2e_read_file(path);
    if (e2e_count_lines(out, needle) >= n)
      return out;
    free(out);
    int status;
    cr_assert(eq(int, waitpid(pid, &status, WNOHANG), 0), "pid %d exited (status 0x%x)", (int)pid,
              status);
    cr_assert(lt(int, waited, WAIT_MS), "pid %d did not print '%s' %d times", (int)pid, needle, n);
    e2e_sleep_ms(10);
  }
}

/* ======================================================================
 * SIGKILL during ingest, round after round
 * ==================================================================== */

/* One driver: well-formed sessions one after another, each HELLO, a
 * SITE, KILL_FRAMES frames of malloc/free pairs (with random pauses, so
 * that a session spans several of the store's commits) and END; when the
 * daemon has closed one after END and then answered a query, "pid time_ns"
 * goes to the ack file. It stops at the first error (the daemon is gone).
 * Runs in a forked child: plain code, no assertions. */
static void driver(int k, int round, const char *ack_path) {
  int ack = open(ack_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  srand((unsigned)rand() + (unsigned)k * 7919u);
  static raw_stream_t s;
  for (int j = 0; j < KILL_SESSIONS_MAX; j++) {
    uint32_t pid = KILL_PID_BASE + (uint32_t)(round * 1000 + k * 100 + j);
    raw_client_t c = {socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", env.socket);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&sa, sizeof sa) != 0)
      _exit(0);
    uint8_t buf[512];
    size_t n = raw_encode_hello(buf, sizeof buf, pid, "killround");
    if (raw_send(&c, buf, n) != 0)
      _exit(0);
    ht_site_rec_t site = {1, 7, ht_str("kill.c"), ht_str("round"), ht_str("")};
    ht_wbuf_t w;
    ht_wbuf_init(&w, buf, sizeof buf);
    ht_proto_put_site(&w, &site);
    if (raw_send(&c, buf, w.len) != 0)
      _exit(0);
    raw_stream_init(&s, 1, raw_now_ns());
    for (int f = 0; f < KILL_FRAMES; f++) {
      for (int e = 0; e < KILL_PAIRS_PER_FRAME; e++) {
        uint64_t p = 0x10000000ull + (uint64_t)(f * KILL_PAIRS_PER_FRAME + e) * 0x40;
        raw_stream_malloc(&s, 1, p, 16 + (uint64_t)e);
        raw_stream_free(&s, 1, p, 16 + (uint64_t)e);
      }
      if (raw_send_events_as(&c, &s, s.next_seq, s.count) != 0)
        _exit(0);
      e2e_sleep_ms(rand() % KILL_FRAME_PAUSE_MS);
    }
    ht_end_rec_t end = {.reason = HT_END_CLEAN};
    ht_wbuf_init(&w, buf, sizeof buf);
    ht_proto_put_end(&w, &end);
    if (raw_send(&c, buf, w.len) != 0)
      _exit(0);
    shutdown(c.fd, SHUT_WR);
    struct pollfd p = {c.fd, POLLIN, 0};
    char byte;
    if (poll(&p, 1, WAIT_MS) != 1 || recv(c.fd, &byte, 1, 0) != 0 || e2e_settle(&env) != 0)
      _exit(0);
    dprintf(ack, "%u %llu\n", pid, (unsigned long long)now_ns());
    close(c.fd);
  }
  _exit(0);
}

typedef struct {
  int acked; /* sessions a query confirmed before the kill */
  int cut;   /* sessions the kill interrupted (daemon-stopped) */
  int late;  /* committed, but not confirmed before the kill */
} round_result_t;

/* The pids confirmed (query answered before kill_ns) in ack_path. */
static int read_acks(const char *ack_path, uint64_t kill_ns, uint32_t *pids, int max) {
  char *text = e2e_read_file(ack_path);
  int n = 0;
  unsigned pid;
  unsigned long long t;
  int used;
  for (const char *p = text; n < max && sscanf(p, "%u %llu\n%n", &pid, &t, &used) == 2; p += used)
    if (t < kill_ns)
      pids[n++] = pid;
  free(text);
  return n;
}

/* Checks the round's sessions after the restart against its acks. */
static void check_round(int round, const uint32_t *acked, int nacked, round_result_t *res) {
  char sql[512];
  unsigned lo = KILL_PID_BASE + (unsigned)round * 1000, hi = lo + 999;
  snprintf(sql, sizeof sql,
           "SELECT pid, end_reason, events, lost, (SELECT COALESCE(SUM(count), 0) FROM "
           "event_chunks WHERE session = s.id), (SELECT COALESCE(MIN(first_seq), 0) FROM "
           "event_chunks WHERE session = s.id), (SELECT COALESCE(MAX(first_seq + count), 0) "
           "FROM event_chunks WHERE session = s.id) FROM sessions s WHERE pid BETWEEN %u AND "
           "%u ORDER BY pid",
           lo, hi);
  char *out = e2e_sql_text(&env, sql);
  int found = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    unsigned pid;
    char reason[32];
    long long events, lost, stored, first, end;
    cr_assert(eq(int,
                 sscanf(line, "%u|%31[^|]|%lld|%lld|%lld|%lld|%lld", &pid, reason, &events, &lost,
                        &stored, &first, &end),
                 7),
              "round %d: '%s'", round, line);
    int is_acked = 0;
    for (int i = 0; i < nacked; i++)
      is_acked |= acked[i] == pid;
    found += is_acked;
    cr_assert(eq(llong, stored, events), "round %d, pid %u: lists %lld events, stores %lld", round,
              pid, events, stored);
    /* A cut session counts as lost what the killed daemon had read and
     * not stored (daemon/ledger.h): with what it stored, no more than the
     * driver sent. */
    if (strcmp(reason, "clean") == 0)
      cr_assert(eq(llong, lost, 0), "round %d, pid %u", round, pid);
    else
      cr_assert(le(llong, events + lost, KILL_EVENTS), "round %d, pid %u: %lld + %lld lost", round,
                pid, events, lost);
    if (stored > 0) /* a prefix of the stream: from event 0, no hole */
      cr_assert(eq(int, first == 0 && end == stored, 1),
                "round %d, pid %u: chunks cover %lld..%lld, %lld events", round, pid, first, end,
                stored);
    if (is_acked || strcmp(reason, "clean") == 0) {
      cr_assert(eq(str, reason, "clean"), "round %d: confirmed pid %u is %s", round, pid, reason);
      cr_assert(eq(llong, events, KILL_EVENTS), "round %d, pid %u", round, pid);
      res->late += !is_acked;
    } else {
      cr_assert(eq(str, reason, "daemon-stopped"), "round %d, pid %u", round, pid);
      res->cut++;
    }
  }
  free(out);
  cr_assert(eq(int, found, nacked), "round %d: %d confirmed sessions, %d found", round, nacked,
            found);
  res->acked += nacked;
}

/* Every confirmed session of every round is still whole at the end. */
static void check_all_acked(int nacked) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT COUNT(*) FROM sessions WHERE pid >= %u AND end_reason = 'clean' AND "
           "events = %d",
           KILL_PID_BASE, KILL_EVENTS);
  cr_assert(ge(llong, e2e_sql_number(&env, sql), (long long)nacked));
}

static void reap(pid_t pid) {
  for (int waited = 0; waitpid(pid, NULL, WNOHANG) == 0; waited += 10) {
    if (waited > WAIT_MS) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      cr_fatal("driver %d did not stop after the daemon died", (int)pid);
    }
    e2e_sleep_ms(10);
  }
}

Test(e2e_faults, daemon_killed_9_at_random_points_keeps_every_confirmed_session) {
  int rounds = e2e_long_run() ? KILL_ROUNDS_LONG : KILL_ROUNDS;
  const char *seed_env = getenv("HT_FAULT_SEED");
  unsigned seed =
      seed_env ? (unsigned)strtoul(seed_env, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();
  srand(seed);
  round_result_t res = {0};
  static uint32_t acked[KILL_DRIVERS * KILL_SESSIONS_MAX];
  for (int round = 0; round < rounds; round++) {
    char ack_path[160];
    snprintf(ack_path, sizeof ack_path, "%s/acks.%d", env.dir, round);
    pid_t drivers[KILL_DRIVERS];
    for (int k = 0; k < KILL_DRIVERS; k++) {
      drivers[k] = fork();
      cr_assert(ge(int, drivers[k], 0));
      if (drivers[k] == 0)
        driver(k, round, ack_path);
    }
    e2e_sleep_ms(KILL_DELAY_MIN_MS + rand() % (KILL_DELAY_MAX_MS - KILL_DELAY_MIN_MS));
    uint64_t kill_ns = now_ns();
    e2e_signal_daemon(&env, SIGKILL);
    for (int k = 0; k < KILL_DRIVERS; k++)
      reap(drivers[k]);
    int n = read_acks(ack_path, kill_ns, acked, KILL_DRIVERS * KILL_SESSIONS_MAX);
    e2e_restart_daemon(&env);
    e2e_assert_integrity(&env);
    check_round(round, acked, n, &res);
  }
  check_all_acked(res.acked);
  fprintf(stderr,
          "e2e_faults: seed %u: %d kill rounds survived; %d sessions confirmed and whole, %d "
          "cut by a kill and stored as a consistent prefix, %d committed as the kill came\n",
          seed, rounds, res.acked, res.cut, res.late);
  cr_assert(lt(int, 0, res.acked), "no session was ever confirmed: nothing was proved");

  /* A cut session answers from what was committed: every free has its
   * malloc. */
  long long id =
      e2e_sql_number(&env, "SELECT COALESCE(MAX(id), 0) FROM sessions WHERE end_reason = "
                           "'daemon-stopped' AND events > 0");
  if (id > 0) {
    cJSON *st = stats_of(0, (int)id);
    cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
    cr_assert(eq(dbl, e2e_num(st, "allocations") + e2e_num(st, "frees"), e2e_num(st, "events")));
    double live = e2e_num(st, "allocations") - e2e_num(st, "frees");
    cr_assert(eq(int, live == 0 || live == 1, 1), "%.0f blocks live in a prefix of pairs", live);
    cJSON_Delete(st);
  }
  run_good_session(GOOD_PID);
  assert_good_session(GOOD_PID, 0);
  e2e_stop_daemon(&env);
}

/* ======================================================================
 * A client killed mid-stream
 * ==================================================================== */

Test(e2e_faults, client_killed_9_after_a_flush_is_disconnected_with_every_flushed_event) {
  char *argv[] = {(char *)e2e_bin("load_client"), "hang", "3", "20000", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  char *out = wait_output(pid, "flushed", 1);
  kill(pid, SIGKILL);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 128 + SIGKILL));
  const cJSON *s;
  cJSON *all = wait_session_ended(0, pid, &s);
  int id = (int)e2e_num(s, "id");
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "disconnected"));
  cr_assert(eq(dbl, e2e_num(s, "events"), (double)e2e_field(out, "events")), "%s", out);
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(all);
  cJSON *st = stats_of(0, id);
  cr_assert(eq(dbl, e2e_num(st, "allocations"), (double)e2e_field(out, "allocations")));
  cr_assert(eq(dbl, e2e_num(st, "frees"), (double)e2e_field(out, "frees")));
  cr_assert(eq(dbl, e2e_num(st, "reallocs"), (double)e2e_field(out, "reallocs")));
  cr_assert(eq(dbl, e2e_num(st, "current_blocks"), (double)e2e_field(out, "live_blocks")));
  cr_assert(eq(dbl, e2e_num(st, "current_bytes"), (double)e2e_field(out, "live_bytes")));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
  cJSON_Delete(st);
  char line[96];
  snprintf(line, sizeof line, "session %d: client disconnected without END", id);
  cr_assert(eq(int, e2e_log_lines(&env, line), 1));
  free(out);
  e2e_result_free(&r);
  assert_counts_agree_with_chunks();
  e2e_stop_daemon(&env);
}

Test(e2e_faults, client_killed_9_while_streaming_keeps_a_consistent_prefix) {
  char *argv[] = {(char *)e2e_bin("load_client"), "stream", NULL};
  pid_t pid = e2e_spawn(&env, argv, NULL);
  free(wait_output(pid, "checkpoint", 3));
  e2e_sleep_ms(rand() % 30);
  kill(pid, SIGKILL);
  e2e_result_t r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 128 + SIGKILL));
  /* The last checkpoint it printed: every event up to there was sent. */
  long long flushed = 0;
  for (const char *at = strstr(r.out, "checkpoint events="); at;
       at = strstr(at + 1, "checkpoint events="))
    flushed = atoll(at + strlen("checkpoint events="));
  cr_assert(lt(llong, 0, flushed));
  const cJSON *s;
  cJSON *all = wait_session_ended(0, pid, &s);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "disconnected"));
  double events = e2e_num(s, "events");
  cr_assert(ge(dbl, events, (double)flushed));
  cJSON *st = stats_of(0, (int)e2e_num(s, "id"));
  cr_assert(eq(dbl, e2e_num(st, "events"), events));
  cr_assert(eq(dbl, e2e_num(st, "allocations") + e2e_num(st, "frees"), events));
  cr_assert(eq(dbl, e2e_num(st, "unmatched_frees"), 0));
  double live = e2e_num(st, "allocations") - e2e_num(st, "frees");
  cr_assert(eq(int, live == 0 || live == 1, 1), "%.0f blocks live in a prefix of pairs", live);
  cr_assert(eq(dbl, e2e_num(st, "current_blocks"), live));
  cJSON_Delete(st);
  cJSON_Delete(all);
  e2e_result_free(&r);
  assert_counts_agree_with_chunks();
  e2e_stop_daemon(&env);
}

/* ======================================================================
 * Disk full
 * ==================================================================== */

static char full_dir[72];
static int full_mounted;
static int full_fsize_limited;

/* A test fini: whatever happened, the tmpfs goes away. */
static void unmount_full(void) {
  if (env.daemon > 0) {
    kill(env.daemon, SIGKILL);
    waitpid(env.daemon, NULL, 0);
    env.daemon = 0;
  }
  if (full_mounted)
    umount2(full_dir, MNT_DETACH);
  full_mounted = 0;
  e2e_stop(&env);
}

/* Moves the database onto a FULL_FS_KB tmpfs, or, where mounting is not
 * permitted, keeps it where it is and limits the daemon's file size
 * (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write fails with EFBIG
 * instead of killing it). Restarts the daemon on it. */
static void database_on_a_small_disk(void) {
  e2e_stop_daemon(&env);
  snprintf(full_dir, sizeof full_dir, "%s/full", env.dir);
  cr_assert(eq(int, mkdir(full_dir, 0700), 0));
  char opts[64];
  snprintf(opts, sizeof opts, "size=%dk,mode=0700", FULL_FS_KB);
  if (mount("tmpfs", full_dir, "tmpfs", 0, opts) == 0) {
    full_mounted = 1;
    snprintf(env.db, sizeof env.db, "%s/heaptrace.db", full_dir);
    fprintf(stderr, "e2e_faults: disk full on a %d KiB tmpfs\n", FULL_FS_KB);
  } else {
    full_fsize_limited = 1;
    fprintf(stderr, "e2e_faults: mount refused (%s): disk full through RLIMIT_FSIZE\n",
            strerror(errno));
  }
  signal(SIGXFSZ, SIG_IGN); /* inherited by the daemon through exec */
  e2e_restart_daemon(&env);
  signal(SIGXFSZ, SIG_DFL);
}

static off_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* No space left: a ballast file takes the rest of the tmpfs; or the
 * daemon may not grow any file past what it has. */
static void fill_the_disk(void) {
  if (full_fsize_limited) {
    char wal[128];
    snprintf(wal, sizeof wal, "%s-wal", env.db);
    off_t most = file_size(env.db) > file_size(wal) ? file_size(env.db) : file_size(wal);
    struct rlimit rl = {(rlim_t)most, (rlim_t)most};
    cr_assert(eq(int, prlimit(env.daemon, RLIMIT_FSIZE, &rl, NULL), 0), "prlimit: %s",
              strerror(errno));
    return;
  }
  char path[128];
  snprintf(path, sizeof path, "%s/ballast", full_dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  cr_assert(ge(int, fd, 0));
  static char block[4096];
  memset(block, 0xa5, sizeof block);
  while (write(fd, block, sizeof block) > 0) {
  }
  cr_assert(eq(int, errno, ENOSPC), "filling the tmpfs: %s", strerror(errno));
  close(fd);
}

static void free_the_disk(void) {
  if (full_fsize_limited) {
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    cr_assert(eq(int, prlimit(env.daemon, RLIMIT_FSIZE, &rl, NULL), 0));
    return;
  }
  char path[128];
  snprintf(path, sizeof path, "%s/ballast", full_dir);
  cr_assert(eq(int, unlink(path), 0));
}

/* Sends a session of n events at random addresses with random sizes and
 * its END; the connection is left open for the caller to see when the
 * daemon closes it. */
static void send_incompressible_session(raw_client_t *cp, uint32_t pid, int n) {
  raw_client_t c;
  raw_stream_t s;
  raw_connect(&c, env.socket);
  raw_hello(&c, pid, "filler");
  raw_site(&c, 1, 1, "fill.c", "fill");
  raw_stream_init(&s, 1, raw_now_ns());
  unsigned r = 12345;
  for (int i = 0; i < n; i++) {
    r = r * 1103515245u + 12345u;
    uint64_t p = ((uint64_t)r << 20) ^ ((uint64_t)rand() << 4);
    raw_stream_malloc(&s, 1, p, 1 + (uint64_t)(rand() % 100000));
    if (s.count == 2000)
      raw_send_events(&c, &s);
  }
  if (s.count)
    raw_send_events(&c, &s);
  raw_end(&c);
  shutdown(c.fd, SHUT_WR);
  *cp = c;
}

/* The log says the disk refused writes (polls: the writer retries). */
static void wait_for_store_errors(void) {
  for (int waited = 0; e2e_log_lines(&env, "heaptraced[error]: store: ") == 0; waited += 50) {
    cr_assert(lt(int, waited, WAIT_MS), "nothing in %s says the disk is full", env.log);
    e2e_sleep_ms(50);
  }
}

Test(e2e_faults, full_disk_is_reported_and_ingest_resumes_when_space_returns,
     .fini = unmount_full) {
  database_on_a_small_disk();
  run_good_session(GOOD_PID);
  assert_good_session(GOOD_PID, 0); /* stored before the disk fills */
  fill_the_disk();
  raw_client_t full;
  send_incompressible_session(&full, FULL_PID, FULL_EVENTS);
  wait_for_store_errors();

  /* Reported, in the log, naming the database. */
  int errors = e2e_log_lines(&env, "heaptraced[error]: store: ");
  cr_assert(eq(int, log_lines_with("heaptraced[error]: store: ", env.db), errors));
  /* Alive, its socket answering, what it had stored readable. */
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0), "heaptraced died; see %s", env.log);
  cJSON *st = e2e_heapctl_json(&env, 0, "status", NULL, NULL);
  cJSON_Delete(st);
  assert_good_session(GOOD_PID, 0);

  /* Space returns: the waiting session is stored, and the next one is
   * stored whole. */
  free_the_disk();
  raw_close(&full);
  run_good_session(GOOD_PID + 10);
  assert_good_session(GOOD_PID + 10, 0);
  assert_good_session(GOOD_PID, 0);
  e2e_stop_daemon(&env);
  e2e_assert_integrity(&env);
  assert_counts_agree_with_chunks();
}

/* PROTOCOL.md, END: the daemon closes the connection once it has read END,
 * not once the session is stored, so a full disk does not hold a client's
 * exit. The session waits in the daemon and is stored whole once space
 * returns. */
Test(e2e_faults, a_session_sent_while_the_disk_is_full_is_let_go_and_stored_after,
     .fini = unmount_full) {
  database_on_a_small_disk();
  fill_the_disk();
  raw_client_t full;
  send_incompressible_session(&full, FULL_PID, FULL_EVENTS);
  wait_for_store_errors();
  cr_assert(eq(int, raw_wait_closed(&full, WAIT_MS), 1),
            "the daemon kept the client waiting for the full disk");
  raw_close(&full);
  free_the_disk();
  /* The writer tries again every second; a query that comes while a try
   * is failing is answered with what is stored (queries do not wait for a
   * full disk), so the session is waited for, not asked for once. */
  const cJSON *s;
  cJSON *all = wait_session_ended(0, FULL_PID, &s);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), FULL_EVENTS));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(all);
}

/* ======================================================================
 * The socket's directory removed
 * ==================================================================== */

static char run_dir[72];

/* The daemon's socket in a directory of its own, so that removing it
 * leaves the database and the log alone. */
static void socket_in_its_own_directory(void) {
  e2e_stop_daemon(&env);
  snprintf(run_dir, sizeof run_dir, "%s/run", env.dir);
  snprintf(env.socket, sizeof env.socket, "%s/heaptraced.sock", run_dir);
  e2e_restart_daemon(&env);
}

static void remove_run_dir(void) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
  cr_assert(eq(int, system(cmd), 0));
  struct stat sb;
  cr_assert(ne(int, stat(run_dir, &sb), 0));
}

Test(e2e_faults, socket_directory_removed_leaves_connected_clients_whole_and_new_ones_untraced) {
  socket_in_its_own_directory();
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  char *argv[] = {(char *)e2e_bin("load_client"), "run", "2", "1500", "100000000", NULL};
  pid_t busy = e2e_spawn(&env, argv, NULL);
  for (int waited = 0;; waited += 10) { /* the busy client is connected */
    cJSON *st = e2e_heapctl_json(&env, 0, "status", NULL, NULL);
    double n = e2e_num(st, "sessions_connected");
    cJSON_Delete(st);
    if (n == 2)
      break;
    cr_assert(lt(int, waited, WAIT_MS));
    e2e_sleep_ms(10);
  }
  remove_run_dir();

  /* Connected clients go on and are stored whole. */
  raw_session_finish(&g);
  e2e_result_t r = e2e_wait(&env, busy);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 0), "%s", r.err);
  /* A new program cannot reach the daemon: it says so once and runs. */
  char *late[] = {(char *)e2e_bin("ht_stream_client"), "100", NULL};
  e2e_result_t l = e2e_run(&env, late, NULL);
  cr_assert(eq(int, l.status, 0));
  cr_assert(eq(int, e2e_count_lines(l.err, "tracing is off"), 1), "%s", l.err);
  e2e_result_free(&l);
  int status;
  cr_assert(eq(int, waitpid(env.daemon, &status, WNOHANG), 0), "heaptraced died");
  e2e_stop_daemon(&env); /* exit 0, though its socket is gone */

  assert_good_session(GOOD_PID, 1);
  cJSON *all = e2e_heapctl_json(&env, 1, "sessions", NULL, NULL);
  const cJSON *s = e2e_session_of_pid(all, busy);
  cr_assert(ne(ptr, (void *)s, NULL));
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(dbl, e2e_num(s, "events"), (double)e2e_field(r.out, "events")), "%s", r.out);
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(all);
  e2e_result_free(&r);

  /* Started again, it makes the directory (0700) and the socket anew. */
  e2e_restart_daemon(&env);
  struct stat sb;
  cr_assert(eq(int, stat(run_dir, &sb), 0));
  cr_assert(eq(u32, (unsigned)(sb.st_mode & 07777), 0700));
  run_good_session(GOOD_PID + 1);
  assert_good_session(GOOD_PID + 1, 0);
}

/* With the socket gone, nothing stops a second heaptraced on the same
 * socket path: it must still not take over the first one's database,
 * whose live sessions it would mark as stopped. */
Test(e2e_faults, second_daemon_after_the_socket_directory_is_removed_leaves_the_database_alone) {
  socket_in_its_own_directory();
  raw_session_t g;
  raw_session_begin(&g, env.socket, GOOD_PID, "good");
  for (int waited = 0;; waited += 10) {
    cJSON *all = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
    const cJSON *s = e2e_session_of_pid(all, GOOD_PID);
    int ok = s && e2e_num(s, "events") == 6;
    cJSON_Delete(all);
    if (ok)
      break;
    cr_assert(lt(int, waited, WAIT_MS));
    e2e_sleep_ms(10);
  }
  remove_run_dir();

  char log2[128];
  snprintf(log2, sizeof log2, "%s/second.log", env.dir);
  pid_t second = fork();
  cr_assert(ge(int, second, 0));
  if (second == 0) {
    int fd = open(log2, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execl(e2e_bin("heaptraced"), "heaptraced", "--foreground", "--socket", env.socket, "--db",
          env.db, (char *)NULL);
    _exit(127);
  }
  int exited = 0, status = 0;
  for (int waited = 0; waited < 3000 && !exited; waited += 10) {
    exited = waitpid(second, &status, WNOHANG) == second;
    if (!exited)
      e2e_sleep_ms(10);
  }
  /* What the first daemon's live session looks like now. */
  cJSON *all = e2e_heapctl_json(&env, 1, "sessions", NULL, NULL);
  char reason[32];
  snprintf(reason, sizeof reason, "%s", e2e_str(e2e_session_of_pid(all, GOOD_PID), "end_reason"));
  cJSON_Delete(all);
  if (!exited) {
    kill(second, SIGKILL);
    waitpid(second, NULL, 0);
  }
  char *said = e2e_read_file(log2);
  cr_assert(eq(int, exited &&WIFEXITED(status) && WEXITSTATUS(status) == 1, 1),
            "a second heaptraced on a database in use %s; it said:\n%s",
            exited ? "exited, but not with status 1" : "kept running", said);
  free(said);
  cr_assert(eq(str, reason, "running"),
            "a second heaptraced re-marked the first one's live session");
  /* (The socket path may now hold the killed second daemon's socket.) */
  raw_session_finish(&g);
  /* No query reaches the first daemon now: its file shows the session
   * once the daemon has stored it. */
  const cJSON *s;
  cJSON_Delete(wait_session_ended(1, GOOD_PID, &s));
  assert_good_session(GOOD_PID, 1);
}
