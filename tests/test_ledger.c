/* test_ledger.c - the ledger of received events (daemon/ledger.c).
 *
 * A daemon killed with -9 leaves the file as it was; closing it without
 * finishing its sessions is the same thing here, and opening it again is
 * the next daemon's start. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "htd.h"
#include "ledger.h"

static char dir[64], path[128];

/* The daemon's log, here: what the ledger said last. */
static char said[1024];
static int said_count;

void htd_log(htd_level_t level, const char *fmt, ...) {
  (void)level;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(said, sizeof said, fmt, ap);
  va_end(ap);
  said_count++;
}

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/ht-ledger-XXXXXX");
  cr_assert(ne(ptr, mkdtemp(dir), NULL));
  snprintf(path, sizeof path, "%s/t.db.ledger", dir);
}

static void teardown(void) {
  unlink(path);
  rmdir(dir);
}

TestSuite(ledger, .init = setup, .fini = teardown);

static htd_ledger_t *open_ledger(void) {
  char msg[256] = "";
  htd_ledger_t *l = htd_ledger_open(path, msg, sizeof msg);
  cr_assert(ne(ptr, l, NULL), "open: %s", msg);
  return l;
}

static ht_str_t wire_str(const char *s) {
  return (ht_str_t){s, strlen(s)};
}

static ht_hello_t hello(uint32_t pid, const char *app) {
  ht_hello_t h = {0};
  h.pid = pid;
  h.ppid = pid - 1;
  h.flags = 0x2;
  h.start_realtime_ns = 1000u * pid;
  h.start_mono_ns = 7u * pid;
  h.app = wire_str(app);
  h.exe = wire_str("/usr/bin/prog");
  return h;
}

/* The left entry of session, or NULL. */
static const htd_ledger_entry_t *left_of(const htd_ledger_t *l, int64_t session) {
  size_t n;
  const htd_ledger_entry_t *e = htd_ledger_left(l, &n);
  for (size_t i = 0; i < n; i++)
    if (e[i].session == session)
      return &e[i];
  return NULL;
}

Test(ledger, what_a_killed_daemon_received_is_there_at_the_next_start) {
  htd_ledger_t *l = open_ledger();
  size_t n;
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, 0));
  ht_hello_t h1 = hello(100, "first"), h2 = hello(200, "second"), h3 = hello(300, "third");
  int a = htd_ledger_begin(l, 1, &h1), b = htd_ledger_begin(l, 2, &h2),
      c = htd_ledger_begin(l, 3, &h3);
  cr_assert(a >= 0 && b >= 0 && c >= 0 && a != b && b != c && a != c);
  htd_ledger_add(l, a, 10, 1, 2);
  htd_ledger_add(l, a, 5, 0, 1);
  htd_ledger_add(l, b, 7, 0, 0);
  htd_ledger_add(l, c, 3, 0, 0);
  htd_ledger_add(l, -1, 99, 99, 99); /* a session without an entry: ignored */
  htd_ledger_finish(l, 2);           /* stored: nothing to account for */
  cr_assert(eq(sz, htd_ledger_sessions(l), 2));
  htd_ledger_close(l); /* killed */

  l = open_ledger();
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, 2));
  const htd_ledger_entry_t *e = left_of(l, 1);
  cr_assert(ne(ptr, (void *)e, NULL));
  cr_assert(eq(u64, e->events, 15));
  cr_assert(eq(u64, e->dropped, 1));
  cr_assert(eq(u64, e->undelivered, 3));
  cr_assert(eq(u32, e->pid, 100));
  cr_assert(eq(u32, e->ppid, 99));
  cr_assert(eq(u32, e->flags, 0x2));
  cr_assert(eq(i64, e->start_ns, 100000));
  cr_assert(eq(i64, e->start_mono_ns, 700));
  cr_assert(eq(str, (char *)e->app, "first"));
  cr_assert(eq(str, (char *)e->exe, "/usr/bin/prog"));
  cr_assert(eq(ptr, (void *)left_of(l, 2), NULL));
  cr_assert(eq(u64, left_of(l, 3)->events, 3));
  /* Left entries stay taken until settled: a new session gets another. */
  ht_hello_t h4 = hello(400, "fourth");
  int d = htd_ledger_begin(l, 4, &h4);
  htd_ledger_add(l, d, 1, 0, 0);
  cr_assert(eq(sz, htd_ledger_sessions(l), 3));
  htd_ledger_settle(l);
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, 0));
  cr_assert(eq(sz, htd_ledger_sessions(l), 1));
  htd_ledger_close(l);

  /* Settled entries are gone for good; the new session's stays. */
  l = open_ledger();
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, 1));
  cr_assert(eq(u64, left_of(l, 4)->events, 1));
  htd_ledger_close(l);
}

Test(ledger, it_grows_past_its_first_size_and_keeps_every_entry) {
  enum { SESSIONS = 2500 };
  htd_ledger_t *l = open_ledger();
  ht_hello_t h = hello(500, "many");
  for (int64_t s = 1; s <= SESSIONS; s++)
    htd_ledger_add(l, htd_ledger_begin(l, s, &h), (uint64_t)s, 0, 0);
  for (int64_t s = 1; s <= SESSIONS; s += 2)
    htd_ledger_finish(l, s);
  htd_ledger_close(l);
  l = open_ledger();
  size_t n;
  const htd_ledger_entry_t *e = htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, SESSIONS / 2));
  for (size_t i = 0; i < n; i++) {
    cr_assert(eq(i64, e[i].session % 2, 0), "session %lld was finished", (long long)e[i].session);
    cr_assert(eq(u64, e[i].events, (uint64_t)e[i].session));
  }
  htd_ledger_close(l);
}

/* A disk without room for more: the ledger does not grow (its blocks are
 * reserved before they are used, never a SIGBUS), says so once, and keeps
 * every entry it has. */
Test(ledger, a_ledger_that_cannot_grow_keeps_what_it_has) {
  htd_ledger_t *l = open_ledger();
  ht_hello_t h = hello(900, "full");
  struct stat sb;
  cr_assert(eq(int, stat(path, &sb), 0));
  size_t cap = ((size_t)sb.st_size - 64) / sizeof(htd_ledger_entry_t); /* after the header */
  int64_t s = 0;
  while (htd_ledger_sessions(l) < cap) /* every entry the file has */
    htd_ledger_add(l, htd_ledger_begin(l, ++s, &h), 1, 0, 0);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit was, rl;
  getrlimit(RLIMIT_FSIZE, &was);
  rl = was;
  rl.rlim_cur = (rlim_t)sb.st_size;
  cr_assert(eq(int, setrlimit(RLIMIT_FSIZE, &rl), 0));
  said_count = 0;
  cr_assert(eq(int, htd_ledger_begin(l, ++s, &h), -1));
  cr_assert(eq(int, htd_ledger_begin(l, ++s, &h), -1));
  cr_assert(eq(int, said_count, 1));
  cr_assert(ne(ptr, strstr(said, "cannot grow"), NULL), "said: %s", said);
  cr_assert(eq(int, setrlimit(RLIMIT_FSIZE, &was), 0));
  size_t had = htd_ledger_sessions(l);
  htd_ledger_close(l);
  l = open_ledger();
  size_t n;
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, had));
  htd_ledger_close(l);
}

Test(ledger, long_names_are_cut_short_and_terminated) {
  char app[300];
  memset(app, 'a', sizeof app - 1);
  app[sizeof app - 1] = '\0';
  htd_ledger_t *l = open_ledger();
  ht_hello_t h = hello(600, app);
  h.exe = wire_str(app);
  htd_ledger_begin(l, 9, &h);
  htd_ledger_close(l);
  l = open_ledger();
  const htd_ledger_entry_t *e = left_of(l, 9);
  cr_assert(eq(sz, strlen(e->app), HTD_LEDGER_APP - 1));
  cr_assert(eq(sz, strlen(e->exe), HTD_LEDGER_EXE - 1));
  htd_ledger_close(l);
}

/* The names go into the database as the daemon's own would: well-formed
 * UTF-8, a character never cut in two. */
Test(ledger, names_are_kept_as_well_formed_utf8) {
  char app[HTD_LEDGER_APP + 8];
  memset(app, 'a', HTD_LEDGER_APP - 2);
  memcpy(app + HTD_LEDGER_APP - 2, "\xc3\xa9", 3); /* an e-acute across the last byte */
  htd_ledger_t *l = open_ledger();
  ht_hello_t h = hello(650, app);
  h.exe = (ht_str_t){"/bin/\xff\x80x", 8};
  htd_ledger_begin(l, 11, &h);
  htd_ledger_close(l);
  l = open_ledger();
  const htd_ledger_entry_t *e = left_of(l, 11);
  cr_assert(eq(sz, strlen(e->app), HTD_LEDGER_APP - 2), "the e-acute was cut in two");
  cr_assert(eq(str, (char *)e->exe, "/bin/\xef\xbf\xbd\xef\xbf\xbdx"));
  htd_ledger_close(l);
}

/* A file that is not a whole ledger - another program's, cut short by a
 * full disk - only ever held counts: it is started afresh, not trusted. */
static void assert_started_afresh(const void *bytes, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  cr_assert(eq(sz, (size_t)write(fd, bytes, len), len));
  close(fd);
  said_count = 0;
  htd_ledger_t *l = open_ledger();
  cr_assert(eq(int, said_count, 1));
  cr_assert(
      ne(ptr, strstr(said, "is not a ledger this heaptraced wrote; starting it afresh"), NULL),
      "said: %s", said);
  size_t n;
  htd_ledger_left(l, &n);
  cr_assert(eq(sz, n, 0));
  ht_hello_t h = hello(700, "after");
  htd_ledger_add(l, htd_ledger_begin(l, 5, &h), 4, 0, 0);
  htd_ledger_close(l);
  l = open_ledger();
  cr_assert(eq(u64, left_of(l, 5)->events, 4));
  htd_ledger_close(l);
}

Test(ledger, a_file_that_is_not_a_whole_ledger_is_started_afresh) {
  assert_started_afresh("not a ledger at all\n", 20);
  /* a real ledger cut short */
  htd_ledger_t *l = open_ledger();
  ht_hello_t h = hello(800, "cut");
  htd_ledger_add(l, htd_ledger_begin(l, 6, &h), 4, 0, 0);
  htd_ledger_close(l);
  struct stat sb;
  cr_assert(eq(int, stat(path, &sb), 0));
  size_t len = (size_t)sb.st_size - 100;
  unsigned char *whole = malloc((size_t)sb.st_size);
  int fd = open(path, O_RDONLY);
  cr_assert(eq(sz, (size_t)read(fd, whole, (size_t)sb.st_size), (size_t)sb.st_size));
  close(fd);
  assert_started_afresh(whole, len);
  free(whole);
}

Test(ledger, a_path_that_is_not_a_regular_file_is_refused_naming_it) {
  cr_assert(eq(int, mkdir(path, 0700), 0));
  char msg[256] = "";
  cr_assert(eq(ptr, htd_ledger_open(path, msg, sizeof msg), NULL));
  cr_assert(ne(ptr, strstr(msg, path), NULL), "said: %s", msg);
  rmdir(path);
}
