/* e2e.c - the end-to-end harness: processes, pipes, scratch directories.
 * See e2e.h. */
#include "e2e.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ht_proto.h"

extern char **environ;

const char *e2e_bin(const char *name) {
  static char path[8][512];
  static int next;
  char *p = path[next++ % 8];
  snprintf(p, sizeof path[0], "%s/%s", HT_BIN_DIR, name);
  return p;
}

static char *slurp(const char *path, size_t *len);

void e2e_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

double e2e_num(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  cr_assert(cJSON_IsNumber(j), "no number '%s'", k);
  return j->valuedouble;
}

const char *e2e_str(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  cr_assert(cJSON_IsString(j), "no string '%s'", k);
  return j->valuestring;
}

char *e2e_read_file(const char *path) {
  return slurp(path, NULL);
}

char *e2e_read_bytes(const char *path, size_t *len) {
  cr_assert(access(path, R_OK) == 0, "cannot read %s: %s", path, strerror(errno));
  return slurp(path, len);
}

cJSON *e2e_heapctl_json(e2e_t *e, int offline, const char *cmd, const char *opt, const char *val) {
  e2e_result_t (*run)(e2e_t *, const char *, ...) = offline ? e2e_heapctl_db : e2e_heapctl;
  e2e_result_t r = opt ? run(e, cmd, opt, val, "--json", NULL) : run(e, cmd, "--json", NULL);
  cr_assert(r.status == 0, "heapctl %s: %s", cmd, r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

const cJSON *e2e_session_of_pid(const cJSON *all, long long pid) {
  const cJSON *s, *found = NULL;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(all, "sessions")) {
    if ((long long)e2e_num(s, "pid") == pid) {
      cr_assert(found == NULL, "two sessions with pid %lld", pid);
      found = s;
    }
  }
  return found;
}

int e2e_log_lines(e2e_t *e, const char *needle) {
  char *log = e2e_read_file(e->log);
  int n = e2e_count_lines(log, needle);
  free(log);
  return n;
}

long e2e_peak_rss_kb(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  cr_assert(f != NULL, "cannot read %s", path);
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
      break;
  fclose(f);
  cr_assert(kb > 0, "no VmHWM in %s", path);
  return kb;
}

void e2e_restart_daemon_small_quarantine(e2e_t *e) {
  e2e_stop_daemon(e);
  const char *old = getenv("ASAN_OPTIONS");
  char opts[512];
  snprintf(opts, sizeof opts, "%s%squarantine_size_mb=16", old ? old : "",
           old && old[0] ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
  e2e_restart_daemon(e);
}

int e2e_settle(e2e_t *e) {
  if (e->daemon <= 0 || kill(e->daemon, 0) != 0)
    return -1;
  static const char req[] = "{\"cmd\":\"sessions\"}";
  uint8_t frame[HT_PROTO_FRAME_PREFIX + 1 + sizeof req - 1];
  uint32_t len = (uint32_t)sizeof req; /* the type byte and the JSON, no NUL */
  for (int i = 0; i < HT_PROTO_FRAME_PREFIX; i++)
    frame[i] = (uint8_t)(len >> (8 * i));
  frame[HT_PROTO_FRAME_PREFIX] = HT_REC_CTL_REQUEST;
  memcpy(frame + HT_PROTO_FRAME_PREFIX + 1, req, sizeof req - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", e->socket);
  struct timeval tv = {10, 0};
  int answered = 0;
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      send(fd, frame, sizeof frame, MSG_NOSIGNAL) == (ssize_t)sizeof frame &&
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0) {
    char buf[4096];                           /* the reply, read to its end */
    ssize_t head = HT_PROTO_FRAME_PREFIX + 1; /* the frame prefix and the type */
    ssize_t n = recv(fd, buf, (size_t)head, MSG_WAITALL);
    answered = n == head && buf[HT_PROTO_FRAME_PREFIX] == HT_REC_CTL_REPLY;
    while (n > 0)
      n = recv(fd, buf, sizeof buf, 0);
  }
  if (fd >= 0)
    close(fd);
  return answered ? 0 : -1;
}

char *e2e_sql_text(e2e_t *e, const char *sql) {
  e2e_settle(e);
  /* The daemon may be writing: wait for its lock rather than fail. */
  char *argv[] = {"/usr/bin/sqlite3", "-cmd", ".timeout 10000", e->db, (char *)sql, NULL};
  e2e_result_t r = e2e_run(e, argv, NULL);
  cr_assert(r.status == 0, "sqlite3 '%s': %s", sql, r.err);
  free(r.err);
  return r.out;
}

long long e2e_sql_number(e2e_t *e, const char *sql) {
  char *out = e2e_sql_text(e, sql);
  char *end;
  long long v = strtoll(out, &end, 10);
  cr_assert(end != out && *end == '\n', "sqlite3 '%s' printed '%s'", sql, out);
  free(out);
  return v;
}

void e2e_wait_summary(e2e_t *e, int session) {
  char sql[96];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM summaries WHERE session = %d", session);
  for (int waited = 0; e2e_sql_number(e, sql) != 1; waited += 25) {
    cr_assert(waited < 5000, "no summary of session %d after 5 s", session);
    e2e_sleep_ms(25);
  }
}

void e2e_assert_integrity(e2e_t *e) {
  char *out = e2e_sql_text(e, "PRAGMA integrity_check");
  cr_assert(strcmp(out, "ok\n") == 0, "integrity_check: %s", out);
  free(out);
}

void e2e_wait_disconnected(e2e_t *e, int limit_ms) {
  for (int waited = 0;; waited += 50) {
    cJSON *st = e2e_heapctl_json(e, 0, "status", NULL, NULL);
    double open = e2e_num(st, "sessions_connected");
    cJSON_Delete(st);
    if (open == 0)
      return;
    cr_assert(waited < limit_ms, "%.0f sessions still connected after %d ms", open, limit_ms);
    e2e_sleep_ms(50);
  }
}

int e2e_long_run(void) {
  const char *v = getenv("HT_LONG");
  return v && strcmp(v, "1") == 0;
}

static int can_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

static void spawn_daemon(e2e_t *e) {
  pid_t pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    int log = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(log, STDERR_FILENO);
    dup2(log, STDOUT_FILENO);
    char backlog[16];
    snprintf(backlog, sizeof backlog, "%u", e->max_backlog_mib);
    execl(e2e_bin("heaptraced"), "heaptraced", "--foreground", "--log-level", "debug", "--socket",
          e->socket, "--db", e->db, e->max_backlog_mib ? "--max-backlog" : (char *)NULL, backlog,
          (char *)NULL);
    _exit(127);
  }
  e->daemon = pid;
  for (int i = 0; i < 500; i++) {
    if (can_connect(e->socket))
      return;
    int status;
    cr_assert(waitpid(pid, &status, WNOHANG) == 0, "heaptraced exited at start; see %s", e->log);
    e2e_sleep_ms(10);
  }
  cr_assert_fail("heaptraced did not accept connections within 5 s; see %s", e->log);
}

void e2e_start(e2e_t *e) {
  memset(e, 0, sizeof *e);
  snprintf(e->dir, sizeof e->dir, "/tmp/ht-e2e-XXXXXX");
  cr_assert(mkdtemp(e->dir) != NULL, "mkdtemp: %s", strerror(errno));
  snprintf(e->socket, sizeof e->socket, "%s/heaptraced.sock", e->dir);
  snprintf(e->db, sizeof e->db, "%s/heaptrace.db", e->dir);
  snprintf(e->log, sizeof e->log, "%s/heaptraced.log", e->dir);
  spawn_daemon(e);
}

void e2e_restart_daemon(e2e_t *e) {
  spawn_daemon(e);
}

void e2e_stop_daemon(e2e_t *e) {
  e2e_stop_daemon_with(e, SIGTERM);
}

void e2e_stop_daemon_with(e2e_t *e, int sig) {
  if (e->daemon <= 0)
    return;
  kill(e->daemon, sig);
  int status = 0;
  waitpid(e->daemon, &status, 0);
  e->daemon = 0;
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "heaptraced did not stop cleanly (status 0x%x); see %s", status, e->log);
}

void e2e_stop(e2e_t *e) {
  if (e->daemon > 0) {
    kill(e->daemon, SIGKILL);
    waitpid(e->daemon, NULL, 0);
    e->daemon = 0;
  }
  if (e->dir[0] && !getenv("HT_KEEP_E2E")) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    int rc = system(cmd);
    (void)rc;
  }
}

/* Reads both pipes to the end without deadlocking on either. */
static void drain(int out_fd, int err_fd, e2e_result_t *r) {
  size_t cap[2] = {4096, 4096}, len[2] = {0, 0};
  char *buf[2] = {malloc(cap[0]), malloc(cap[1])};
  struct pollfd p[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(p, 2, -1) < 0 && errno == EINTR)
      continue;
    for (int i = 0; i < 2; i++) {
      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      if (cap[i] - len[i] < 2048) {
        cap[i] *= 2;
        buf[i] = realloc(buf[i], cap[i]);
      }
      ssize_t n = read(p[i].fd, buf[i] + len[i], cap[i] - len[i] - 1);
      if (n <= 0) {
        close(p[i].fd);
        p[i].fd = -1;
        open_fds--;
      } else {
        len[i] += (size_t)n;
      }
    }
  }
  buf[0][len[0]] = '\0';
  buf[1][len[1]] = '\0';
  r->out = buf[0];
  r->err = buf[1];
}

static e2e_result_t run_argv(char *const argv[], char *const env[]) {
  int out[2], err[2];
  cr_assert(pipe(out) == 0 && pipe(err) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    close(out[0]);
    close(err[0]);
    for (size_t i = 0; env && env[i]; i++)
      putenv(env[i]);
    execve(argv[0], argv, environ);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  e2e_result_t r = {0};
  drain(out[0], err[0], &r);
  int status;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

static char *slurp(const char *path, size_t *lenp) {
  FILE *f = fopen(path, "r");
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (f && buf) {
    if (cap - len < 1024)
      buf = realloc(buf, cap *= 2);
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    if (n == 0)
      break;
    len += n;
  }
  if (f)
    fclose(f);
  buf[len] = '\0';
  if (lenp)
    *lenp = len;
  return buf;
}

static void client_env(e2e_t *e, char *const env[], char **all, char *sock, size_t socklen);

pid_t e2e_spawn(e2e_t *e, char *const argv[], char *const env[]) {
  char sock[400], out[200], err[200];
  char *all[32];
  client_env(e, env, all, sock, sizeof sock);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    snprintf(out, sizeof out, "%s/out.%d", e->dir, (int)getpid());
    snprintf(err, sizeof err, "%s/err.%d", e->dir, (int)getpid());
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int r = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(o, STDOUT_FILENO);
    dup2(r, STDERR_FILENO);
    for (size_t i = 0; all[i]; i++)
      putenv(all[i]);
    execve(argv[0], argv, environ);
    _exit(127);
  }
  return pid;
}

e2e_result_t e2e_wait(e2e_t *e, pid_t pid) {
  int status;
  cr_assert(waitpid(pid, &status, 0) == pid);
  char out[200], err[200];
  snprintf(out, sizeof out, "%s/out.%d", e->dir, (int)pid);
  snprintf(err, sizeof err, "%s/err.%d", e->dir, (int)pid);
  e2e_result_t r = {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                    slurp(out, NULL), slurp(err, NULL)};
  return r;
}

void e2e_signal_daemon(e2e_t *e, int sig) {
  cr_assert(e->daemon > 0, "no daemon running");
  kill(e->daemon, sig);
  if (sig == SIGKILL) {
    waitpid(e->daemon, NULL, 0);
    e->daemon = 0;
  }
}

long long e2e_field(const char *text, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "%s=", key);
  for (const char *at = strstr(text, pat); at; at = strstr(at + 1, pat))
    if (at == text || at[-1] == ' ' || at[-1] == '\n')
      return atoll(at + strlen(pat));
  return -1;
}

static void client_env(e2e_t *e, char *const env[], char **all, char *sock, size_t socklen) {
  size_t n = 0;
  snprintf(sock, socklen, "HEAPTRACE_SOCKET=%s", e->socket);
  all[n++] = sock;
  /* Client programs under test leak on purpose; the sanitizer's leak
   * report is for the daemon and heapctl, not for them. */
  all[n++] = "ASAN_OPTIONS=detect_leaks=0";
  for (size_t i = 0; env && env[i] && n < 31; i++)
    all[n++] = env[i];
  all[n] = NULL;
}

e2e_result_t e2e_run(e2e_t *e, char *const argv[], char *const env[]) {
  char sock[400];
  char *all[32];
  client_env(e, env, all, sock, sizeof sock);
  return run_argv(argv, all);
}

static e2e_result_t heapctl_va(const char *flag, const char *value, const char *first, va_list ap) {
  char *argv[32];
  size_t n = 0;
  argv[n++] = (char *)e2e_bin("heapctl");
  argv[n++] = (char *)flag;
  argv[n++] = (char *)value;
  for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
    argv[n++] = (char *)a;
  argv[n] = NULL;
  return run_argv(argv, NULL);
}

e2e_result_t e2e_heapctl(e2e_t *e, const char *first, ...) {
  va_list ap;
  va_start(ap, first);
  e2e_result_t r = heapctl_va("--socket", e->socket, first, ap);
  va_end(ap);
  return r;
}

e2e_result_t e2e_heapctl_db(e2e_t *e, const char *first, ...) {
  e2e_settle(e);
  va_list ap;
  va_start(ap, first);
  e2e_result_t r = heapctl_va("--db", e->db, first, ap);
  va_end(ap);
  return r;
}

void e2e_result_free(e2e_result_t *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

cJSON *e2e_json(const e2e_result_t *r) {
  cJSON *j = cJSON_Parse(r->out);
  cr_assert(j != NULL, "heapctl printed no valid JSON:\n%s\nstderr: %s", r->out, r->err);
  return j;
}

int e2e_validate(const char *text, const char *schema_name) {
  char path[512], tmp[] = "/tmp/ht-json-XXXXXX";
  int fd = mkstemp(tmp);
  cr_assert(fd >= 0);
  size_t len = strlen(text);
  cr_assert(write(fd, text, len) == (ssize_t)len);
  close(fd);
  snprintf(path, sizeof path, "%s/schemas/%s", HT_SOURCE_DIR, schema_name);
  char *argv[] = {"/usr/bin/python3", HT_SOURCE_DIR "/tests/validate_json.py", path, tmp, NULL};
  e2e_result_t r = run_argv(argv, NULL);
  unlink(tmp);
  if (r.status != 0)
    fprintf(stderr, "schema %s: %s%s\n", schema_name, r.out, r.err);
  int status = r.status;
  e2e_result_free(&r);
  return status;
}

int e2e_marked_lines(const char *file, const char *marker, int *lines, int max) {
  char path[512], line[1024];
  snprintf(path, sizeof path, "%s/%s", HT_SOURCE_DIR, file);
  FILE *f = fopen(path, "r");
  cr_assert(f != NULL, "cannot open %s", path);
  int n = 0, no = 0;
  while (fgets(line, sizeof line, f)) {
    no++;
    if (strstr(line, marker) && n < max)
      lines[n++] = no;
  }
  fclose(f);
  return n;
}

int e2e_count_lines(const char *s, const char *needle) {
  int n = 0;
  while (s && *s) {
    const char *eol = strchr(s, '\n');
    size_t len = eol ? (size_t)(eol - s) : strlen(s);
    const char *hit = memmem(s, len, needle, strlen(needle));
    n += hit != NULL;
    s += len + (eol != NULL);
  }
  return n;
}
