/* rowbase.c - the one-row-per-event baseline of bench/ingest.
 *
 *   rowbase --db PATH [--rows N] [--batch B] [--seed S]
 *
 * What storing events the obvious way costs: a fresh SQLite database with
 * the daemon's pragmas (journal_mode=WAL, synchronous=NORMAL), one table of
 * seven integer columns (session, stream, seq, time, op, ptr, size), and a
 * prepared INSERT per event, B rows per transaction (default 100 000). The
 * values look like events (time rising by tens of ns, pointers recycled
 * from a small pool, sizes mostly small) so that the record sizes are
 * realistic. No index besides the rowid: the cheapest possible row store.
 *
 * Output, one line on stdout:
 *   rowbase: rows=N seconds=S rows_per_s=R db_bytes=B bytes_per_row=X
 * seconds covers the inserts and the last commit; db_bytes is the database
 * file plus its WAL after the last commit. Exit status 0, 1 on failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t xorshift(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static int exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK)
    return 0;
  fprintf(stderr, "rowbase: %s: %s\n", sql, err ? err : sqlite3_errmsg(db));
  sqlite3_free(err);
  return -1;
}

static uint64_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static uint64_t parse_num(const char *opt, const char *v) {
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || end == v || *end || d < 1 || d > 1e12) {
    fprintf(stderr, "rowbase: %s takes a positive number, not '%s'\n", opt, v);
    exit(1);
  }
  return (uint64_t)d;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  uint64_t rows = 5000000, batch = 100000, seed = 1;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && !strcmp(argv[i], "--db"))
      path = argv[++i];
    else if (i + 1 < argc && !strcmp(argv[i], "--rows"))
      rows = parse_num(argv[i], argv[i + 1]), i++;
    else if (i + 1 < argc && !strcmp(argv[i], "--batch"))
      batch = parse_num(argv[i], argv[i + 1]), i++;
    else if (i + 1 < argc && !strcmp(argv[i], "--seed"))
      seed = parse_num(argv[i], argv[i + 1]), i++;
    else {
      fprintf(stderr, "usage: rowbase --db PATH [--rows N] [--batch B] [--seed S]\n");
      return 1;
    }
  }
  if (!path) {
    fprintf(stderr, "usage: rowbase --db PATH [--rows N] [--batch B] [--seed S]\n");
    return 1;
  }
  char wal[4096];
  snprintf(wal, sizeof wal, "%s-wal", path);
  remove(path);
  remove(wal);
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK) {
    fprintf(stderr, "rowbase: cannot open %s: %s\n", path, sqlite3_errmsg(db));
    return 1;
  }
  sqlite3_stmt *ins;
  if (exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;") != 0 ||
      exec(db, "CREATE TABLE events (session INTEGER NOT NULL, stream INTEGER NOT NULL,"
               " seq INTEGER NOT NULL, t INTEGER NOT NULL, op INTEGER NOT NULL,"
               " ptr INTEGER NOT NULL, size INTEGER NOT NULL)") != 0 ||
      sqlite3_prepare_v3(db, "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1,
                         SQLITE_PREPARE_PERSISTENT, &ins, NULL) != SQLITE_OK) {
    fprintf(stderr, "rowbase: setting up %s: %s\n", path, sqlite3_errmsg(db));
    return 1;
  }
  uint64_t x = 0x9e3779b97f4a7c15ull ^ (seed * 0x2545f4914f6cdd1dull);
  uint64_t t = 1000000000000ull, seq[4] = {0};
  uint64_t pool[256];
  for (int i = 0; i < 256; i++)
    pool[i] = 0x7f0000000000ull + (xorshift(&x) & 0xffffff0ull);
  double t0 = now_s();
  for (uint64_t n = 0; n < rows; n++) {
    if (n % batch == 0 && exec(db, n ? "COMMIT; BEGIN" : "BEGIN") != 0)
      return 1;
    uint64_t r = xorshift(&x);
    unsigned stream = (unsigned)(r & 3);
    t += 20 + (r >> 8) % 200;
    uint64_t size = (r >> 20) % 8 ? 16 + (r >> 24) % 240 : 256 + (r >> 24) % 8000;
    sqlite3_bind_int64(ins, 1, 1);
    sqlite3_bind_int64(ins, 2, stream + 1);
    sqlite3_bind_int64(ins, 3, (int64_t)seq[stream]++);
    sqlite3_bind_int64(ins, 4, (int64_t)t);
    sqlite3_bind_int64(ins, 5, (r >> 4) % 2 ? 1 : 5);
    sqlite3_bind_int64(ins, 6, (int64_t)pool[(r >> 40) & 255]);
    sqlite3_bind_int64(ins, 7, (int64_t)size);
    if (sqlite3_step(ins) != SQLITE_DONE) {
      fprintf(stderr, "rowbase: insert: %s\n", sqlite3_errmsg(db));
      return 1;
    }
    sqlite3_reset(ins);
  }
  if (exec(db, "COMMIT") != 0)
    return 1;
  double secs = now_s() - t0;
  uint64_t bytes = file_size(path) + file_size(wal);
  sqlite3_finalize(ins);
  sqlite3_close(db);
  printf("rowbase: rows=%" PRIu64 " seconds=%.3f rows_per_s=%.0f db_bytes=%" PRIu64
         " bytes_per_row=%.2f\n",
         rows, secs, (double)rows / secs, bytes, (double)bytes / (double)rows);
  return 0;
}
