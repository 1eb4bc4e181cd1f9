/* test_e2e_store.c - the store's schema versions end to end: a database of
 * the first schema is migrated and stays readable; a newer one is refused
 * with a message that says so, by the daemon and by heapctl. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "e2e.h"
#include "ht_proto.h"

E2E_SUITE(e2e_store, 60);

static void exec_sql(sqlite3 *db, const char *sql) {
  char *err = NULL;
  cr_assert(eq(int, sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK), "%s: %s", sql,
            err ? err : "");
}

/* The first schema, exactly as schemas/schema.sql has it. */
static void create_v1(const char *path) {
  char file[512];
  snprintf(file, sizeof file, "%s/schemas/schema.sql", HT_SOURCE_DIR);
  FILE *f = fopen(file, "r");
  cr_assert(f != NULL);
  static char sql[16384];
  size_t n = fread(sql, 1, sizeof sql - 1, f);
  fclose(f);
  sql[n] = '\0';
  sqlite3 *db;
  cr_assert(eq(int, sqlite3_open(path, &db), SQLITE_OK));
  exec_sql(db, sql);
  /* One ended session: a site and a chunk in the first format (events from
   * a zero state), two mallocs and a free: 48 bytes leaked. */
  exec_sql(db, "INSERT INTO sessions(id, pid, ppid, app, exe, argv, flags, start_ns,"
               " start_mono_ns, end_ns, end_reason, events, lost)"
               " VALUES(1, 42, 1, 'old', '/bin/old', '[]', 0, 1000000000, 5000, 2000000000,"
               " 'clean', 3, 0)");
  exec_sql(db, "INSERT INTO sites VALUES(1, 1, 'old.c', 7, 'main', '')");
  uint8_t chunk[256];
  size_t len = 16;
  ht_evstate_t st = {0};
  ht_event_t ev[3] = {
      {.op = HT_OP_MALLOC,
       .time_ns = 6000,
       .site = 1,
       .caps = HT_SYSTEM_HEAP_CAPS,
       .ptr = 0x1000,
       .size = 40,
       .usable = 48,
       .cur_bytes = 48,
       .cur_blocks = 1,
       .total_bytes = 48},
      {.op = HT_OP_MALLOC,
       .time_ns = 7000,
       .site = 1,
       .caps = HT_SYSTEM_HEAP_CAPS,
       .ptr = 0x2000,
       .size = 48,
       .usable = 48,
       .cur_bytes = 96,
       .cur_blocks = 2,
       .total_bytes = 96},
      {.op = HT_OP_FREE,
       .time_ns = 8000,
       .site = 1,
       .caps = HT_SYSTEM_HEAP_CAPS,
       .ptr = 0x1000,
       .size = 48,
       .usable = 48,
       .cur_bytes = 48,
       .cur_blocks = 1,
       .total_bytes = 96},
  };
  for (int i = 0; i < 3; i++)
    len += ht_proto_event_encode(chunk + len, &st, &ev[i]);
  uint8_t head[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0};
  memcpy(chunk, head, sizeof head);
  sqlite3_stmt *s;
  cr_assert(eq(int,
               sqlite3_prepare_v2(db, "INSERT INTO event_chunks VALUES(1, 1, 0, 3, 6000, 8000, ?1)",
                                  -1, &s, NULL),
               SQLITE_OK));
  sqlite3_bind_blob(s, 1, chunk, (int)len, SQLITE_STATIC);
  cr_assert(eq(int, sqlite3_step(s), SQLITE_DONE));
  sqlite3_finalize(s);
  sqlite3_close(db);
}

static int user_version(const char *path) {
  sqlite3 *db;
  sqlite3_stmt *s;
  int v = -1;
  cr_assert(eq(int, sqlite3_open(path, &db), SQLITE_OK));
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

Test(e2e_store, a_first_schema_database_is_migrated_and_its_session_still_answers) {
  char path[200];
  snprintf(path, sizeof path, "%s/v1.db", env.dir);
  create_v1(path);
  cr_assert(eq(int, user_version(path), 1));
  char *argv[] = {
      (char *)e2e_bin("heaptraced"), "--foreground", "--socket", NULL, "--db", path, NULL};
  char sock[200];
  snprintf(sock, sizeof sock, "%s/v1.sock", env.dir);
  argv[3] = sock;
  /* A short-lived daemon on the old database: it migrates at start. */
  pid_t pid = e2e_spawn(&env, argv, NULL);
  e2e_result_t r;
  for (int i = 0; i < 100; i++) {
    char *ctl[] = {(char *)e2e_bin("heapctl"), "--socket", sock, "status", NULL};
    r = e2e_run(&env, ctl, NULL);
    int ok = r.status == 0;
    e2e_result_free(&r);
    if (ok)
      break;
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGTERM);
  r = e2e_wait(&env, pid);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cr_assert(strstr(r.err, "migrating the database from schema version 1 to 4") != NULL, "%s",
            r.err);
  e2e_result_free(&r);
  cr_assert(eq(int, user_version(path), 4));
  char *q[] = {(char *)e2e_bin("heapctl"), "--db", path, "leaks", "-s", "1", "--json", NULL};
  r = e2e_run(&env, q, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cJSON *j = e2e_json(&r);
  const cJSON *total = cJSON_GetObjectItem(j, "total");
  cr_assert(eq(dbl, cJSON_GetObjectItem(total, "blocks")->valuedouble, 1));
  cr_assert(eq(dbl, cJSON_GetObjectItem(total, "bytes")->valuedouble, 48));
  const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0);
  cr_assert(eq(str, cJSON_GetObjectItem(g, "key")->valuestring, "old.c:7"));
  cJSON_Delete(j);
  e2e_result_free(&r);
}

Test(e2e_store, a_newer_schema_is_refused_by_the_daemon_and_by_heapctl) {
  e2e_stop_daemon(&env);
  sqlite3 *db;
  cr_assert(eq(int, sqlite3_open(env.db, &db), SQLITE_OK));
  exec_sql(db, "PRAGMA user_version = 99");
  sqlite3_close(db);
  char *argv[] = {
      (char *)e2e_bin("heaptraced"), "--foreground", "--socket", env.socket, "--db", env.db, NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(ne(int, r.status, 0));
  cr_assert(strstr(r.err, "schema version 99 is newer") != NULL, "%s", r.err);
  e2e_result_free(&r);
  r = e2e_heapctl_db(&env, "sessions", NULL);
  cr_assert(eq(int, r.status, 2));
  cr_assert(strstr(r.err, "newer") != NULL, "%s", r.err);
  e2e_result_free(&r);
  cr_assert(eq(int, user_version(env.db), 99), "the refused database was changed");
}

/* A summary written by another version of the model is not trusted: the
 * session is analysed again from its events. */
Test(e2e_store, a_summary_of_another_model_version_is_not_used) {
  char *argv[] = {(char *)e2e_bin("leaky"), NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0));
  e2e_result_free(&r);
  sqlite3 *db;
  cr_assert(eq(int, sqlite3_open(env.db, &db), SQLITE_OK));
  int rows = 0;
  for (int i = 0; i < 100 && rows == 0; i++) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM summaries", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
      rows = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    struct timespec ts = {0, 50000000};
    if (rows == 0)
      nanosleep(&ts, NULL);
  }
  cr_assert(eq(int, rows, 1), "the daemon wrote no summary");
  e2e_stop_daemon(&env);
  exec_sql(db, "UPDATE summaries SET peak_bytes = 1, version = 0");
  sqlite3_close(db);
  r = e2e_heapctl_db(&env, "stats", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cJSON *j = e2e_json(&r);
  cr_assert(eq(dbl, cJSON_GetObjectItem(j, "peak_bytes")->valuedouble, 5164));
  cJSON_Delete(j);
  e2e_result_free(&r);
}

/* The number of a single-valued query's result, or -1. */
static int64_t sql_number(sqlite3 *db, const char *sql) {
  sqlite3_stmt *s;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

/* A summary of model version 1 kept every live block in live_blocks; the
 * daemon started on such a database writes the summary again, leaks by
 * group, and the old rows go. The same leaks are answered after. */
Test(e2e_store, the_daemon_writes_a_first_model_summary_again_with_its_leaks_by_group) {
  char *argv[] = {(char *)e2e_bin("leaky"), NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0));
  e2e_result_free(&r);
  e2e_wait_summary(&env, 1);
  e2e_stop_daemon(&env);
  r = e2e_heapctl_db(&env, "leaks", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  char *before = strdup(r.out);
  e2e_result_free(&r);

  sqlite3 *db;
  cr_assert(eq(int, sqlite3_open(env.db, &db), SQLITE_OK));
  /* what a first-model summary left: a version 1 row and live blocks */
  exec_sql(db, "UPDATE summaries SET version = 1; DELETE FROM leak_groups;"
               "INSERT INTO live_blocks VALUES(1, 4096, 8, 8, 1, 0, 0, 1, 1, 1)");
  e2e_restart_daemon(&env);
  int64_t version = 0;
  for (int i = 0; i < 200 && version != 2; i++) {
    struct timespec ts = {0, 25000000};
    nanosleep(&ts, NULL);
    version = sql_number(db, "SELECT version FROM summaries WHERE session = 1");
  }
  cr_assert(eq(i64, version, 2), "the summary was not written again");
  cr_assert(lt(i64, 0, sql_number(db, "SELECT COUNT(*) FROM leak_groups WHERE session = 1")));
  cr_assert(eq(i64, sql_number(db, "SELECT COUNT(*) FROM live_blocks"), 0));
  sqlite3_close(db);
  r = e2e_heapctl_db(&env, "leaks", "--json", NULL);
  cr_assert(eq(str, r.out, before));
  e2e_result_free(&r);
  free(before);
}
