/*
 * fuzz_control.c - libFuzzer target for the control protocol: the JSON
 * request of a CTL_REQUEST frame, parsed and answered as heaptraced does.
 *
 * The input is the frame's payload. As in daemon/server.c (control_start,
 * control_work) it is cut at its first NUL byte, parsed with cJSON and, if
 * it parses, run by htq_execute on a database opened read-only by
 * htq_open. The database is made once, at start-up, in a scratch file:
 * the schema of schemas/, then four sessions written the way the store
 * writes them -- one ended with a stored summary, a bounded heap and a
 * typed site; one ended without a summary (queries replay its events);
 * one still running, its events in a zstd chunk; one whose events name
 * sites it never sent -- so that every command reaches its model code,
 * not only its "no such session" branch.
 *
 * Beyond "never crash" (ASan, UBSan: a float that does not fit the integer
 * it is cast to is a crash), every reply must keep what query.h promises:
 * an object with a boolean "ok"; on success an object "result"; on failure
 * "code" 1 or 2 and a non-empty "error"; printable, and what it prints
 * parses again. The connection must have changed nothing in the database.
 *
 * Build and run: scripts/fuzz [SECONDS]. Seeds: tests/fuzz/corpus/control/,
 * the requests heapctl sends for each command (recorded from heapctl).
 */
// fuzz-sources: daemon/query.c daemon/replay.c daemon/livemap.c daemon/heapmodel.c
// fuzz-sources: daemon/model.c daemon/summary.c daemon/chunk.c daemon/pack.c
// fuzz-libs: -lsqlite3 -lcjson -lzstd
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <zstd.h>

#include "chunk.h"
#include "model.h"
#include "pack.h"
#include "query.h"
#include "summary.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_control: check failed: %s (line %d)\n", #cond, __LINE__);              \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

#define HEAP_START 0x3ffb0000ull
#define HEAP_SIZE 0x10000ull
#define EVENTS_PER_SESSION 300

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char db_path[64];
static sqlite3 *db; /* read-only, as the daemon's query workers open it */

/* ======================================================================
 * The database
 * ==================================================================== */

static void remove_db(void) {
  const char *suffix[] = {"", "-wal", "-shm", "-journal"};
  char p[80];
  for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
    snprintf(p, sizeof p, "%s%s", db_path, suffix[i]);
    unlink(p);
  }
}

static void exec_sql(sqlite3 *w, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(w, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "fuzz_control: %s\n  in: %.200s\n", err, sql);
    abort();
  }
}

/* schemas/NAME under $HT_SOURCE_DIR, else under what precedes tests/fuzz/
 * in __FILE__ (scripts/fuzz compiles and runs from the repository root, so
 * that is usually the current directory). */
static char *read_schema(const char *name) {
  char path[512];
  const char *root = getenv("HT_SOURCE_DIR");
  const char *here = __FILE__, *at = strstr(here, "tests/fuzz/");
  if (root && root[0])
    snprintf(path, sizeof path, "%s/schemas/%s", root, name);
  else
    snprintf(path, sizeof path, "%.*sschemas/%s", at ? (int)(at - here) : 0, here, name);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr,
            "fuzz_control: cannot open %s (run from the repository root or set "
            "HT_SOURCE_DIR)\n",
            path);
    abort();
  }
  static char buf[64 * 1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

/* One stream's events, encoded as a client sends them, into a chunk as the
 * store keeps it (daemon/chunk.h). */
typedef struct {
  uint8_t buf[HTD_CHUNK_HEAD_MAX + EVENTS_PER_SESSION * HT_PROTO_MAX_EVENT_BYTES];
  size_t len;
  uint32_t count;
  ht_evstate_t enc;
  ht_event_t last;
  uint64_t t0;
} chunk_t;

static void chunk_begin(chunk_t *c, uint32_t stream) {
  memset(c, 0, sizeof *c);
  c->len = htd_chunk_head(c->buf, stream, 0, &c->enc);
}

static void chunk_add(chunk_t *c, ht_event_t ev) {
  ev.cur_bytes = c->last.cur_bytes;
  ev.cur_blocks = c->last.cur_blocks;
  ev.total_bytes = c->last.total_bytes;
  if (ev.op == HT_OP_FREE) {
    ev.cur_bytes -= (int64_t)ev.size;
    ev.cur_blocks--;
  } else if (ev.op == HT_OP_REALLOC) {
    ev.cur_bytes += (int64_t)ev.usable - (int64_t)ev.old_usable;
    if (ev.usable > ev.old_usable)
      ev.total_bytes += ev.usable - ev.old_usable;
  } else if (ev.op != HT_OP_FAILED) {
    ev.cur_bytes += (int64_t)ev.usable;
    ev.cur_blocks++;
    ev.total_bytes += ev.usable;
  }
  if (c->count == 0)
    c->t0 = ev.time_ns;
  c->len += ht_proto_event_encode(c->buf + c->len, &c->enc, &ev);
  c->count++;
  c->last = ev;
}

/* Every operation, on the system heap and on a bounded heap (id 1), from
 * three sites; some blocks stay live (leaks). */
static void fill_events(chunk_t *c, uint64_t t, int with_heap) {
  uint64_t sys = 0x7f0000001000ull, dram = HEAP_START + 0x100;
  for (int i = 0; c->count + 8 <= EVENTS_PER_SESSION; i++) {
    uint64_t p = sys + (uint64_t)i * 0x1000, size = 16 + (uint64_t)(i % 7) * 40;
    t += 1000 + (uint64_t)(i % 5) * 300000;
    chunk_add(c, (ht_event_t){.op = HT_OP_MALLOC,
                              .time_ns = t,
                              .site = 1,
                              .caps = 0x1006,
                              .ptr = p,
                              .size = size,
                              .usable = size});
    if (i % 3 == 0) {
      chunk_add(c, (ht_event_t){.op = HT_OP_REALLOC,
                                .time_ns = t + 10,
                                .site = 2,
                                .caps = 0x1006,
                                .ptr = p + 0x800,
                                .old_ptr = p,
                                .size = size * 2,
                                .usable = size * 2,
                                .old_usable = size});
      p += 0x800;
      size *= 2;
    }
    if (i % 4 != 3)
      chunk_add(c, (ht_event_t){.op = HT_OP_FREE,
                                .time_ns = t + 20,
                                .site = 1,
                                .caps = 0x1006,
                                .ptr = p,
                                .size = size});
    if (i % 9 == 0)
      chunk_add(c, (ht_event_t){.op = HT_OP_FAILED,
                                .failed_op = HT_OP_ALIGNED,
                                .time_ns = t + 30,
                                .site = 3,
                                .caps = 0x8,
                                .size = 1 << 20,
                                .align = 64});
    if (with_heap && i < 24) {
      uint64_t q = dram + (uint64_t)i * 0x200;
      chunk_add(c, (ht_event_t){.op = i % 2 ? HT_OP_CALLOC : HT_OP_ALIGNED,
                                .time_ns = t + 40,
                                .site = 3,
                                .heap = 1,
                                .caps = 0x808,
                                .ptr = q,
                                .size = 100,
                                .usable = 104,
                                .align = i % 2 ? 0 : 8});
      if (i % 3 == 1)
        chunk_add(c, (ht_event_t){.op = HT_OP_FREE,
                                  .time_ns = t + 50,
                                  .site = 3,
                                  .heap = 1,
                                  .caps = 0x808,
                                  .ptr = q,
                                  .size = 104});
    }
  }
}

static void insert_session(sqlite3 *w, int64_t id, const char *end_reason, int with_heap,
                           int with_sites, int codec) {
  char sql[1024];
  uint64_t mono0 = 1000000000ull * (uint64_t)id;
  snprintf(sql, sizeof sql,
           "INSERT INTO sessions(id, pid, ppid, app, exe, argv, flags, start_ns, start_mono_ns,"
           " end_ns, end_reason, events) VALUES(%lld, %lld, 1, 'app%lld', '/bin/app',"
           " '[\"app\",\"-v\"]', 0, 1700000000000000000, %llu, %s, '%s', %d);",
           (long long)id, (long long)(4000 + id), (long long)id, (unsigned long long)mono0,
           strcmp(end_reason, "running") ? "1700000001000000000" : "NULL", end_reason,
           EVENTS_PER_SESSION);
  exec_sql(w, sql);
  if (with_sites) {
    snprintf(sql, sizeof sql,
             "INSERT INTO sites VALUES(%lld, 1, 'src/main.c', 42, 'main', ''),"
             " (%lld, 2, 'src/list.c', 7, 'grow', 'struct node'),"
             " (%lld, 3, 'src/dma.c', 9, 'dma_buf', '');",
             (long long)id, (long long)id, (long long)id);
    exec_sql(w, sql);
  }
  if (with_heap) {
    snprintf(sql, sizeof sql, "INSERT INTO heaps VALUES(%lld, 1, 'dram', %u, %u, 0, %llu, %llu)",
             (long long)id, 0x1806u, 0x8u, HEAP_START, HEAP_SIZE);
    exec_sql(w, sql);
  }
  static chunk_t c;
  chunk_begin(&c, 1);
  fill_events(&c, mono0 + 5000, with_heap);
  htd_chunk_set_count(c.buf, c.count);
  static uint8_t z[sizeof c.buf + 1024];
  const uint8_t *blob = c.buf;
  size_t blob_len = c.len;
  if (codec == HTD_CODEC_ZSTD) { /* how schema 2 stored chunks */
    CHECK(ZSTD_compressBound(c.len) <= sizeof z);
    blob_len = ZSTD_compress(z, sizeof z, c.buf, c.len, 1);
    CHECK(!ZSTD_isError(blob_len));
    blob = z;
  } else if (codec == HTD_CODEC_PACKED) { /* how the daemon stores them now */
    htd_chunk_reader_t rd;
    CHECK(htd_chunk_open(&rd, c.buf, c.len, HTD_CODEC_RAW) == 0);
    htd_packer_t *pk = htd_packer_new(1, 0, &rd.st);
    CHECK(pk != NULL);
    ht_event_t ev;
    while (htd_chunk_next(&rd, &ev) == 1)
      CHECK(htd_pack_event(pk, &ev) == 0);
    uint8_t *packed = htd_packer_finish(pk, &blob_len);
    CHECK(packed != NULL);
    htd_squeezer_t *q = htd_squeezer_new();
    CHECK(q != NULL);
    size_t squeezed = htd_squeeze(q, packed, blob_len);
    blob_len = squeezed ? squeezed : blob_len;
    htd_squeezer_free(q);
    CHECK(blob_len <= sizeof z);
    memcpy(z, packed, blob_len);
    free(packed);
    htd_packer_free(pk);
    blob = z;
  }
  sqlite3_stmt *s;
  CHECK(sqlite3_prepare_v2(w,
                           "INSERT INTO event_chunks(session, stream, first_seq, count, t0, t1,"
                           " codec, data) VALUES(?1, 1, 0, ?2, ?3, ?4, ?5, ?6)",
                           -1, &s, NULL) == SQLITE_OK);
  sqlite3_bind_int64(s, 1, id);
  sqlite3_bind_int64(s, 2, c.count);
  sqlite3_bind_int64(s, 3, (int64_t)c.t0);
  sqlite3_bind_int64(s, 4, (int64_t)c.last.time_ns);
  sqlite3_bind_int(s, 5, codec);
  sqlite3_bind_blob(s, 6, blob, (int)blob_len, SQLITE_STATIC);
  CHECK(sqlite3_step(s) == SQLITE_DONE);
  sqlite3_finalize(s);
  snprintf(sql, sizeof sql,
           "UPDATE sessions SET events = %u WHERE id = %lld;"
           "INSERT INTO lost VALUES(%lld, 1, 0, 3, 'dropped')",
           c.count, (long long)id, (long long)id);
  exec_sql(w, sql);
}

static void write_summary(sqlite3 *w, int64_t id) {
  htq_model_t m;
  char err[512];
  CHECK(htq_model_init(&m, w, id, err, sizeof err) == 0);
  CHECK(htq_model_build(&m, w, id, err, sizeof err) == 0);
  CHECK(htq_summary_write(w, id, &m, err, sizeof err) == 0);
  htq_model_free(&m);
}

static void make_database(void) {
  snprintf(db_path, sizeof db_path, "/tmp/ht-fuzz-control-%d.db", (int)getpid());
  remove_db();
  sqlite3 *w;
  CHECK(sqlite3_open(db_path, &w) == SQLITE_OK);
  exec_sql(w, "PRAGMA journal_mode = WAL");
  exec_sql(w, read_schema("schema.sql"));
  exec_sql(w, read_schema("migrate-2.sql"));
  exec_sql(w, read_schema("migrate-3.sql"));
  exec_sql(w, read_schema("migrate-4.sql"));
  insert_session(w, 1, "clean", 1, 1, HTD_CODEC_RAW);
  insert_session(w, 2, "disconnected", 0, 1, HTD_CODEC_PACKED);
  insert_session(w, 3, "running", 1, 1, HTD_CODEC_ZSTD);
  insert_session(w, 4, "protocol-error", 0, 0, HTD_CODEC_RAW); /* its SITE records never came */
  write_summary(w, 1);
  CHECK(sqlite3_close(w) == SQLITE_OK);
  atexit(remove_db);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_database();
  char err[512];
  if (htq_open(db_path, &db, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_control: %s\n", err);
    abort();
  }
  return 0;
}

/* ======================================================================
 * One request
 * ==================================================================== */

static void check_reply(const cJSON *reply) {
  CHECK(cJSON_IsObject(reply));
  const cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok");
  CHECK(cJSON_IsBool(ok));
  if (cJSON_IsTrue(ok)) {
    CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(reply, "result")));
    return;
  }
  const cJSON *code = cJSON_GetObjectItemCaseSensitive(reply, "code");
  const cJSON *error = cJSON_GetObjectItemCaseSensitive(reply, "error");
  CHECK(cJSON_IsNumber(code) && (code->valueint == HTQ_FAILED || code->valueint == HTQ_USAGE));
  CHECK(cJSON_IsString(error) && error->valuestring[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* As the daemon: the payload as a C string (htd_strndup), then cJSON. */
  char *text = malloc(size + 1);
  CHECK(text != NULL);
  memcpy(text, data, size);
  text[size] = '\0';
  cJSON *req = cJSON_Parse(text);
  free(text);
  if (!req)
    return 0; /* the daemon answers "not valid JSON" without looking further */
  int changes = sqlite3_total_changes(db);
  cJSON *reply = htq_execute(db, req);
  cJSON_Delete(req);
  CHECK(reply != NULL);
  check_reply(reply);
  char *printed = cJSON_PrintUnformatted(reply);
  CHECK(printed != NULL);
  cJSON *again = cJSON_Parse(printed);
  CHECK(again != NULL);
  cJSON_Delete(again);
  cJSON_free(printed);
  cJSON_Delete(reply);
  CHECK(sqlite3_total_changes(db) == changes);
  return 0;
}
