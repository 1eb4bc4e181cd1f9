/* test_e2e_schemas.c - every heapctl --json result against its JSON Schema
 * (schemas/), live through the daemon and offline with --db; the control
 * protocol against schemas/control.schema.json; heapctl's answers to bad
 * input (exit status and a message naming the problem); export's atomic
 * write.
 *
 * The sessions: examples/leaky run twice (sessions 1 and 2: system heap
 * only), and for the tests that need a bounded heap a hand-made session
 * (raw_client.c) with a registered region, a typed site and every kind of
 * event, so that the schemas' bounded-heap and per-op branches are checked
 * on real output rather than passing vacuously.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "raw_client.h"

static e2e_t env;

static void run_leaky(void) {
  char *argv[] = {(char *)e2e_bin("leaky"), NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "leaky failed: %s", r.err);
  e2e_result_free(&r);
}

static void setup(void) {
  e2e_start(&env);
  run_leaky();
  run_leaky();
}

static void teardown(void) {
  e2e_stop(&env);
}

TestSuite(e2e_schemas, .init = setup, .fini = teardown, .timeout = 120);

/* ======================================================================
 * Running heapctl with an argument list
 * ==================================================================== */

#define MAX_ARGS 16

/* heapctl FLAG WHERE args... (FLAG: --db or --socket; args NULL-terminated). */
static e2e_result_t heapctl_at(const char *flag, const char *where, const char *const *args) {
  char *argv[MAX_ARGS + 4];
  int n = 0;
  argv[n++] = (char *)e2e_bin("heapctl");
  argv[n++] = (char *)flag;
  argv[n++] = (char *)where;
  for (; *args && n < MAX_ARGS + 3; args++)
    argv[n++] = (char *)*args;
  argv[n] = NULL;
  return e2e_run(&env, argv, NULL);
}

/* heapctl --socket SOCK | --db DB, then args. */
static e2e_result_t heapctl_argv(int offline, const char *const *args) {
  return offline ? heapctl_at("--db", env.db, args) : heapctl_at("--socket", env.socket, args);
}

/* heapctl with exactly the arguments given (no --socket/--db added). */
static e2e_result_t heapctl_raw(const char *first, ...) {
  char *argv[MAX_ARGS + 2];
  int n = 0;
  argv[n++] = (char *)e2e_bin("heapctl");
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && n < MAX_ARGS + 1; a = va_arg(ap, const char *))
    argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  return e2e_run(&env, argv, NULL);
}

static char *join(const char *const *args) {
  static char buf[256];
  buf[0] = '\0';
  for (; *args; args++) {
    strncat(buf, *args, sizeof buf - strlen(buf) - 2);
    strncat(buf, " ", sizeof buf - strlen(buf) - 1);
  }
  return buf;
}

/* Runs args (which end in --json, or export -o -), asserts exit 0 and that
 * stdout is valid against schema. */
static void check_valid(int offline, const char *schema, const char *const *args) {
  e2e_result_t r = heapctl_argv(offline, args);
  cr_assert(eq(int, r.status, 0), "heapctl %s%s exited %d: %s", offline ? "--db " : "", join(args),
            r.status, r.err);
  cr_assert(eq(int, e2e_validate(r.out, schema), 0), "heapctl %s%s: not valid against %s:\n%s",
            offline ? "--db " : "", join(args), schema, r.out);
  e2e_result_free(&r);
}

/* Every command on the leaky sessions (1 and 2), with its schema. */
static const struct {
  const char *schema;
  const char *args[MAX_ARGS];
} leaky_commands[] = {
    {"sessions.schema.json", {"sessions", "--json"}},
    {"leaks.schema.json", {"leaks", "--json"}},
    {"leaks.schema.json", {"leaks", "--by", "site", "--json"}},
    {"leaks.schema.json", {"leaks", "--by", "type", "--json"}},
    {"leaks.schema.json", {"leaks", "--by", "caps", "--json"}},
    {"leaks.schema.json", {"leaks", "--by", "heap", "--json"}},
    {"leaks.schema.json", {"leaks", "-s", "1", "--min-bytes", "100", "--top", "1", "--json"}},
    {"stats.schema.json", {"stats", "--json"}},
    {"stats.schema.json", {"stats", "-s", "1", "--json"}},
    {"lwm.schema.json", {"lwm", "--json"}},
    {"lwm.schema.json", {"lwm", "--caps", "8BIT", "--json"}},
    {"lwm.schema.json", {"lwm", "--since", "0", "--until", "1000", "--json"}},
    {"lwm.schema.json", {"lwm", "--since", "0", "--json"}},
    {"frag.schema.json", {"frag", "--json"}},
    {"top.schema.json", {"top", "--json"}},
    {"top.schema.json", {"top", "--by", "bytes", "--json"}},
    {"top.schema.json", {"top", "--by", "count", "--json"}},
    {"top.schema.json", {"top", "--by", "temporary", "--json"}},
    {"top.schema.json", {"top", "--limit", "1", "--json"}},
    {"timeline.schema.json", {"timeline", "--json"}},
    {"timeline.schema.json", {"timeline", "--step", "1", "--json"}},
    {"diff.schema.json", {"diff", "1", "2", "--json"}},
    {"events.schema.json", {"events", "--limit", "20", "--json"}},
    {"events.schema.json", {"events", "-s", "1", "--from", "250", "--limit", "20", "--json"}},
    {"report.schema.json", {"export", "-o", "-", "--json"}},
    {"report.schema.json", {"export", "-s", "1", "-o", "-"}},
};

Test(e2e_schemas, every_live_result_is_valid_against_its_schema) {
  for (size_t i = 0; i < sizeof leaky_commands / sizeof *leaky_commands; i++)
    check_valid(0, leaky_commands[i].schema, leaky_commands[i].args);
  const char *status[] = {"status", "--json", NULL};
  check_valid(0, "status.schema.json", status);
}

Test(e2e_schemas, every_offline_result_is_valid_against_its_schema) {
  e2e_stop_daemon(&env);
  for (size_t i = 0; i < sizeof leaky_commands / sizeof *leaky_commands; i++)
    check_valid(1, leaky_commands[i].schema, leaky_commands[i].args);
}

Test(e2e_schemas, status_has_no_meaning_offline) {
  e2e_stop_daemon(&env);
  e2e_result_t r = e2e_heapctl_db(&env, "status", "--json", NULL);
  cr_assert(eq(int, r.status, 2), "%s", r.err);
  cr_assert(strstr(r.err, "status") != NULL && strstr(r.err, "--db") != NULL, "%s", r.err);
  cr_assert(eq(str, r.out, ""));
  e2e_result_free(&r);
}

/* A schema that accepts anything proves nothing: the validator must
 * reject a real result with one property too many or one missing. */
Test(e2e_schemas, schemas_reject_unknown_and_missing_properties) {
  static const struct {
    const char *schema, *cmd, *remove;
  } cases[] = {
      {"sessions.schema.json", "sessions", "sessions"},
      {"stats.schema.json", "stats", "totals"},
      {"lwm.schema.json", "lwm", "heaps"},
      {"frag.schema.json", "frag", "heaps"},
      {"top.schema.json", "top", "by"},
      {"timeline.schema.json", "timeline", "step_ms"},
      {"events.schema.json", "events", "from"},
      {"status.schema.json", "status", "uptime_s"},
      {"report.schema.json", "export", "timeline"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *args[] = {cases[i].cmd, "--json", strcmp(cases[i].cmd, "export") ? NULL : "-o", "-",
                          NULL};
    e2e_result_t r = heapctl_argv(0, args);
    cr_assert(eq(int, r.status, 0), "%s: %s", cases[i].cmd, r.err);
    cJSON *j = e2e_json(&r);
    cJSON_AddNumberToObject(j, "no_such_field", 1);
    char *text = cJSON_Print(j);
    cr_assert(e2e_validate(text, cases[i].schema) != 0, "%s accepts an unknown property",
              cases[i].schema);
    cJSON_free(text);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "no_such_field");
    cJSON_DeleteItemFromObjectCaseSensitive(j, cases[i].remove);
    text = cJSON_Print(j);
    cr_assert(e2e_validate(text, cases[i].schema) != 0, "%s accepts a result without '%s'",
              cases[i].schema, cases[i].remove);
    cJSON_free(text);
    cJSON_Delete(j);
    e2e_result_free(&r);
  }
  /* Nested: a session without its end_reason, an event with a made-up op. */
  const char *ev[] = {"events", "--limit", "3", "--json", NULL};
  e2e_result_t r = heapctl_argv(0, ev);
  cJSON *j = e2e_json(&r);
  cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "session"),
                                          "end_reason");
  char *text = cJSON_Print(j);
  cr_assert(e2e_validate(text, "events.schema.json") != 0);
  cJSON_free(text);
  cJSON_Delete(j);
  j = e2e_json(&r);
  cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "events"), 0);
  cJSON_ReplaceItemInObjectCaseSensitive(first, "op", cJSON_CreateString("mmap"));
  text = cJSON_Print(j);
  cr_assert(e2e_validate(text, "events.schema.json") != 0);
  cJSON_free(text);
  cJSON_Delete(j);
  e2e_result_free(&r);
}

/* ======================================================================
 * The schemas' shared definitions are copies: they must not drift
 * ==================================================================== */

static cJSON *load_schema(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/schemas/%s", HT_SOURCE_DIR, name);
  FILE *f = fopen(path, "r");
  cr_assert(f != NULL, "cannot open %s", path);
  static char buf[1 << 17];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  cJSON *j = cJSON_Parse(buf);
  cr_assert(j != NULL, "%s is not JSON", path);
  return j;
}

Test(e2e_schemas, shared_definitions_are_the_same_in_every_schema) {
  static const char *const files[] = {
      "sessions.schema.json", "stats.schema.json",    "lwm.schema.json",   "frag.schema.json",
      "top.schema.json",      "timeline.schema.json", "diff.schema.json",  "events.schema.json",
      "status.schema.json",   "control.schema.json",  "report.schema.json"};
  cJSON *all = cJSON_CreateObject(); /* name -> first definition seen */
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    cJSON *s = load_schema(files[i]);
    cr_assert(eq(str, cJSON_GetObjectItemCaseSensitive(s, "$schema")->valuestring,
                 "https://json-schema.org/draft/2020-12/schema"));
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(s, "$defs")) {
      const cJSON *seen = cJSON_GetObjectItemCaseSensitive(all, d->string);
      if (!seen) {
        cJSON_AddItemToObject(all, d->string, cJSON_Duplicate(d, 1));
        continue;
      }
      cr_assert(cJSON_Compare(seen, d, 1), "$defs/%s of %s differs from an earlier schema's",
                d->string, files[i]);
    }
    cJSON_Delete(s);
  }
  cJSON_Delete(all);
}

/* ======================================================================
 * A session with a bounded heap, sent by hand
 * ==================================================================== */

#define HEAP_START 0x3ffb0000ull
#define HEAP_SIZE 0x2000ull
#define HEAP_CAPS0 0x1804u /* DEFAULT|INTERNAL|8BIT */
#define HEAP_CAPS1 0x8u    /* DMA, at the second priority level */

static void send_frame(raw_client_t *c, ht_wbuf_t *w, const char *what) {
  cr_assert(w->overflow == 0, "%s does not fit", what);
  cr_assert(eq(int, raw_send(c, w->p, w->len), 0), "sending %s", what);
}

typedef struct {
  raw_stream_t s;
  int64_t bytes, blocks;
  uint64_t total;
} feed_t;

static void feed(feed_t *f, ht_event_t ev, uint64_t old_usable) {
  ev.time_ns = f->s.time_ns += 2000000; /* 2 ms apart: several timeline samples */
  switch (ev.op) {
  case HT_OP_MALLOC:
  case HT_OP_CALLOC:
  case HT_OP_ALIGNED:
    f->bytes += (int64_t)ev.usable, f->blocks++, f->total += ev.usable;
    break;
  case HT_OP_REALLOC:
    ev.old_usable = old_usable;
    f->bytes += (int64_t)ev.usable - (int64_t)old_usable;
    if (ev.usable > old_usable)
      f->total += ev.usable - old_usable;
    break;
  case HT_OP_FREE:
    f->bytes -= (int64_t)ev.size, f->blocks--;
    break;
  }
  ev.cur_bytes = f->bytes;
  ev.cur_blocks = f->blocks;
  ev.total_bytes = f->total;
  raw_stream_append(&f->s, &ev);
}

/* Session 3: heap 1 "dram0" (bounded) and the system heap; a typed site;
 * malloc, calloc, aligned_alloc, realloc, free and a failed malloc. */
static void bounded_session(void) {
  raw_client_t c;
  raw_connect(&c, env.socket);
  raw_hello(&c, 4242, "bounded");
  uint8_t buf[1024];
  ht_wbuf_t w;
  ht_wbuf_init(&w, buf, sizeof buf);
  ht_site_rec_t s1 = {1, 10, ht_str("dev.c"), ht_str("make_item"), ht_str("struct item")};
  ht_site_rec_t s2 = {2, 20, ht_str("dev.c"), ht_str("make_buf"), ht_str("")};
  ht_proto_put_site(&w, &s1);
  ht_proto_put_site(&w, &s2);
  ht_heap_rec_t h = {1, {HEAP_CAPS0, HEAP_CAPS1, 0}, HEAP_START, HEAP_SIZE, ht_str("dram0")};
  ht_proto_put_heap(&w, &h);
  send_frame(&c, &w, "SITE and HEAP");

  feed_t f = {0};
  raw_stream_init(&f.s, 1, raw_now_ns());
  const uint64_t a = HEAP_START + 16, b = HEAP_START + 136, al = HEAP_START + 0x400,
                 moved = HEAP_START + 0x800, sys = 0x7f0000001000ull;
  feed(&f,
       (ht_event_t){.op = HT_OP_MALLOC,
                    .site = 1,
                    .heap = 1,
                    .caps = 0x1004,
                    .ptr = a,
                    .size = 100,
                    .usable = 104},
       0);
  feed(&f,
       (ht_event_t){.op = HT_OP_CALLOC,
                    .site = 2,
                    .heap = 1,
                    .caps = 0x1004,
                    .ptr = b,
                    .size = 200,
                    .usable = 200},
       0);
  feed(&f,
       (ht_event_t){.op = HT_OP_ALIGNED,
                    .site = 2,
                    .heap = 1,
                    .caps = HEAP_CAPS1,
                    .ptr = al,
                    .size = 64,
                    .usable = 64,
                    .align = 64},
       0);
  feed(&f,
       (ht_event_t){.op = HT_OP_REALLOC,
                    .site = 2,
                    .heap = 1,
                    .caps = 0x1004,
                    .ptr = moved,
                    .old_ptr = b,
                    .size = 300,
                    .usable = 304},
       200);
  feed(&f,
       (ht_event_t){.op = HT_OP_FREE, .site = 1, .heap = 1, .caps = 0x1004, .ptr = a, .size = 104},
       0);
  feed(&f,
       (ht_event_t){.op = HT_OP_FAILED,
                    .failed_op = HT_OP_MALLOC,
                    .site = 1,
                    .heap = 1,
                    .caps = 0x1004,
                    .size = 100000},
       0);
  feed(&f,
       (ht_event_t){.op = HT_OP_MALLOC,
                    .site = 1,
                    .heap = 0,
                    .caps = 0x1006,
                    .ptr = sys,
                    .size = 32,
                    .usable = 32},
       0);
  raw_send_events(&c, &f.s);
  raw_end(&c);
  shutdown(c.fd, SHUT_WR);
  cr_assert(raw_wait_closed(&c, RAW_WAIT_MS), "the daemon did not close the session after END");
  raw_close(&c);
  e2e_wait_summary(&env, 3); /* the tests below read the same numbers every time */
}

/* Every command on session 3, with its schema. */
static const struct {
  const char *schema;
  const char *args[MAX_ARGS];
} bounded_commands[] = {
    {"sessions.schema.json", {"sessions", "--json"}},
    {"leaks.schema.json", {"leaks", "-s", "3", "--json"}},
    {"leaks.schema.json", {"leaks", "-s", "3", "--by", "type", "--json"}},
    {"leaks.schema.json", {"leaks", "-s", "3", "--by", "caps", "--json"}},
    {"leaks.schema.json", {"leaks", "-s", "3", "--by", "heap", "--json"}},
    {"stats.schema.json", {"stats", "-s", "3", "--json"}},
    {"lwm.schema.json", {"lwm", "-s", "3", "--json"}},
    {"lwm.schema.json", {"lwm", "-s", "3", "--heap", "dram0", "--json"}},
    {"lwm.schema.json", {"lwm", "-s", "3", "--caps", "DMA", "--json"}},
    {"lwm.schema.json", {"lwm", "-s", "3", "--since", "3", "--until", "9", "--json"}},
    {"frag.schema.json", {"frag", "-s", "3", "--json"}},
    {"frag.schema.json", {"frag", "-s", "3", "--heap", "1", "--json"}},
    {"top.schema.json", {"top", "-s", "3", "--by", "temporary", "--json"}},
    {"timeline.schema.json", {"timeline", "-s", "3", "--json"}},
    {"timeline.schema.json", {"timeline", "-s", "3", "--step", "5", "--json"}},
    {"diff.schema.json", {"diff", "1", "3", "--json"}},
    {"events.schema.json", {"events", "-s", "3", "--json"}},
    {"report.schema.json", {"export", "-s", "3", "-o", "-"}},
};

static cJSON *heapctl_json(int offline, const char *const *args) {
  e2e_result_t r = heapctl_argv(offline, args);
  cr_assert(eq(int, r.status, 0), "heapctl %s: %s", join(args), r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

static const cJSON *get(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  cr_assert(j != NULL, "no '%s'", k);
  return j;
}

/* The output really has the branches the schemas check: a bounded heap in
 * lwm, frag and timeline, a realloc and a failure among the events. */
static void check_bounded_output(int offline) {
  const char *frag[] = {"frag", "-s", "3", "--json", NULL};
  cJSON *j = heapctl_json(offline, frag);
  const cJSON *heaps = get(j, "heaps");
  cr_assert(eq(int, cJSON_GetArraySize(heaps), 1), "frag lists no bounded heap");
  cr_assert(cJSON_IsTrue(get(cJSON_GetArrayItem(heaps, 0), "bounded")));
  cJSON_Delete(j);

  const char *lwm[] = {"lwm", "-s", "3", "--json", NULL};
  j = heapctl_json(offline, lwm);
  int bounded = 0, unbounded = 0;
  const cJSON *h;
  cJSON_ArrayForEach(h, get(j, "heaps")) {
    bounded += cJSON_IsTrue(get(h, "bounded"));
    unbounded += cJSON_IsFalse(get(h, "bounded"));
  }
  cr_assert(bounded == 1 && unbounded == 1, "lwm heaps: %d bounded, %d not", bounded, unbounded);
  cJSON_Delete(j);

  const char *tl[] = {"timeline", "-s", "3", "--json", NULL};
  j = heapctl_json(offline, tl);
  bounded = 0;
  cJSON_ArrayForEach(h, get(j, "heaps")) {
    if (cJSON_IsTrue(get(h, "bounded")))
      bounded = cJSON_GetArraySize(get(h, "points"));
  }
  cr_assert(bounded > 1, "the bounded heap's timeline has %d points", bounded);
  cJSON_Delete(j);

  const char *ev[] = {"events", "-s", "3", "--json", NULL};
  j = heapctl_json(offline, ev);
  int realloc_seen = 0, failed_seen = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, get(j, "events")) {
    realloc_seen += strcmp(get(e, "op")->valuestring, "realloc") == 0;
    failed_seen += strcmp(get(e, "op")->valuestring, "failed") == 0;
  }
  cr_assert(eq(int, cJSON_GetArraySize(get(j, "events")), 7));
  cr_assert(realloc_seen == 1 && failed_seen == 1);
  cJSON_Delete(j);
}

Test(e2e_schemas, bounded_heap_results_are_valid_live_and_offline) {
  bounded_session();
  for (size_t i = 0; i < sizeof bounded_commands / sizeof *bounded_commands; i++)
    check_valid(0, bounded_commands[i].schema, bounded_commands[i].args);
  check_bounded_output(0);
  e2e_stop_daemon(&env);
  for (size_t i = 0; i < sizeof bounded_commands / sizeof *bounded_commands; i++)
    check_valid(1, bounded_commands[i].schema, bounded_commands[i].args);
  check_bounded_output(1);
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  cr_assert(eq(int, system(cmd), 0), "failed: %s", cmd);
}

/* heapctl --db FILE with args; its output (asserts success). Caller frees. */
static char *offline_output(const char *file, const char *const *args) {
  e2e_result_t r = heapctl_at("--db", file, args);
  cr_assert(eq(int, r.status, 0), "heapctl --db %s %s: %s", file, join(args), r.err);
  free(r.err);
  return r.out;
}

/* A running session's answers are replayed from its events; an ended
 * one's are read from its stored summary. The two must be the same to the
 * byte, lists in the same order: every command on session 3 (and the diff
 * with session 1), offline, against a copy of the database with the
 * summaries taken out. */
Test(e2e_schemas, a_summary_and_a_replay_of_the_events_answer_alike) {
  bounded_session();
  e2e_stop_daemon(&env);
  char copy[200];
  snprintf(copy, sizeof copy, "%s/replayed.db", env.dir);
  sh("cp '%s' '%s'", env.db, copy);
  sh("sqlite3 '%s' 'DELETE FROM summaries; DELETE FROM site_stats; DELETE FROM heap_stats; "
     "DELETE FROM heap_samples; DELETE FROM caps_lwm; DELETE FROM caps_stats; "
     "DELETE FROM leak_groups;'",
     copy);
  for (size_t i = 0; i < sizeof bounded_commands / sizeof *bounded_commands; i++) {
    const char *const *args = bounded_commands[i].args;
    char *summarised = offline_output(env.db, args), *replayed = offline_output(copy, args);
    cr_assert(eq(str, replayed, summarised), "heapctl %s", join(args));
    free(summarised);
    free(replayed);
  }
}

/* ======================================================================
 * The control protocol by hand
 * ==================================================================== */

/* Sends request (valid against control.schema.json), validates the raw
 * reply against it, and returns the parsed reply. */
static cJSON *control(const char *request) {
  cr_assert(eq(int, e2e_validate(request, "control.schema.json"), 0),
            "the request %s is not valid against control.schema.json", request);
  char *reply = raw_control(env.socket, request, strlen(request));
  cr_assert(reply != NULL, "no reply to %s", request);
  cr_assert(eq(int, e2e_validate(reply, "control.schema.json"), 0),
            "the reply to %s is not valid against control.schema.json:\n%s", request, reply);
  cJSON *j = cJSON_Parse(reply);
  cr_assert(j != NULL);
  free(reply);
  return j;
}

static void control_ok(const char *request, const char *schema) {
  cJSON *j = control(request);
  cr_assert(cJSON_IsTrue(get(j, "ok")), "%s failed", request);
  char *result = cJSON_Print(get(j, "result"));
  cr_assert(eq(int, e2e_validate(result, schema), 0), "result of %s:\n%s", request, result);
  cJSON_free(result);
  cJSON_Delete(j);
}

static void control_fails(const char *request, int code, const char *message) {
  cJSON *j = control(request);
  cr_assert(cJSON_IsFalse(get(j, "ok")), "%s succeeded", request);
  cr_assert(eq(int, (int)get(j, "code")->valuedouble, code), "%s", request);
  cr_assert(strstr(get(j, "error")->valuestring, message) != NULL, "%s: %s", request,
            get(j, "error")->valuestring);
  cJSON_Delete(j);
}

Test(e2e_schemas, control_requests_and_replies_are_valid_against_control_schema) {
  control_ok("{\"cmd\":\"sessions\"}", "sessions.schema.json");
  control_ok("{\"cmd\":\"leaks\",\"session\":1,\"by\":\"caps\",\"min_bytes\":0,\"top\":2}",
             "leaks.schema.json");
  control_ok("{\"cmd\":\"stats\",\"session\":null,\"sites\":2}", "stats.schema.json");
  control_ok("{\"cmd\":\"lwm\",\"caps\":4,\"since_ms\":0,\"until_ms\":5}", "lwm.schema.json");
  control_ok("{\"cmd\":\"frag\",\"heap\":\"system\"}", "frag.schema.json");
  control_ok("{\"cmd\":\"top\",\"by\":\"count\",\"limit\":3}", "top.schema.json");
  control_ok("{\"cmd\":\"timeline\",\"step_ms\":1}", "timeline.schema.json");
  control_ok("{\"cmd\":\"diff\",\"session1\":1,\"session2\":2}", "diff.schema.json");
  control_ok("{\"cmd\":\"events\",\"from\":5,\"limit\":5}", "events.schema.json");
  control_ok("{\"cmd\":\"export\",\"session\":2}", "report.schema.json");
  control_ok("{\"cmd\":\"status\"}", "status.schema.json");
  control_fails("{\"cmd\":\"leaks\",\"session\":99}", 2, "no session 99");
  control_fails("{\"cmd\":\"diff\",\"session1\":1,\"session2\":99}", 2, "no session 99");
  control_fails("{\"cmd\":\"frag\",\"heap\":\"nope\"}", 2, "no heap 'nope'");
  control_fails("{\"cmd\":\"lwm\",\"since_ms\":9,\"until_ms\":1}", 2, "--until");
}

Test(e2e_schemas, control_schema_rejects_requests_heapctl_would_not_send) {
  static const char *const bad[] = {
      "{}",
      "{\"cmd\":\"nope\"}",
      "{\"cmd\":\"stats\",\"by\":\"site\"}",   /* an option of another command */
      "{\"cmd\":\"top\",\"by\":\"site\"}",     /* leaks' grouping */
      "{\"cmd\":\"leaks\",\"by\":\"count\"}",  /* top's ordering */
      "{\"cmd\":\"leaks\",\"session\":\"1\"}", /* a string */
      "{\"cmd\":\"events\",\"limit\":-1}",
      "{\"cmd\":\"diff\",\"session1\":1}",
      "{\"cmd\":\"status\",\"session\":1}",
      "{\"cmd\":\"lwm\",\"caps\":4294967296}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert(e2e_validate(bad[i], "control.schema.json") != 0, "accepted %s", bad[i]);
  /* The daemon's own answers to bad requests are well-formed replies. */
  char *reply = raw_control(env.socket, "{\"cmd\":\"nope\"}", 14);
  cr_assert(reply != NULL);
  cr_assert(eq(int, e2e_validate(reply, "control.schema.json"), 0), "%s", reply);
  cr_assert(strstr(reply, "unknown command 'nope'") != NULL, "%s", reply);
  free(reply);
  reply = raw_control(env.socket, "not json", 8);
  cr_assert(reply != NULL);
  cr_assert(eq(int, e2e_validate(reply, "control.schema.json"), 0), "%s", reply);
  cr_assert(strstr(reply, "\"code\":2") != NULL, "%s", reply);
  free(reply);
}

/* ======================================================================
 * Bad input: exit status 2 and a message naming the problem
 * ==================================================================== */

static void expect_usage(e2e_result_t r, const char *what, const char *message) {
  cr_assert(eq(int, r.status, 2), "%s: exit %d, want 2; stderr: %s", what, r.status, r.err);
  cr_assert(strstr(r.err, message) != NULL, "%s: stderr does not say '%s':\n%s", what, message,
            r.err);
  cr_assert(eq(str, r.out, ""), "%s printed on stdout: %s", what, r.out);
  e2e_result_free(&r);
}

Test(e2e_schemas, unknown_command_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "frobnicate", NULL), "unknown command",
               "unknown command 'frobnicate'");
}

Test(e2e_schemas, unknown_option_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "leaks", "--frobnicate", NULL), "unknown command option",
               "'--frobnicate'");
  expect_usage(e2e_heapctl(&env, "--frobnicate", "leaks", NULL), "unknown global option",
               "'--frobnicate'");
  expect_usage(e2e_heapctl(&env, "leaks", "-s", NULL), "option without its value", "'-s'");
}

Test(e2e_schemas, option_of_another_command_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "stats", "--by", "site", NULL), "stats --by",
               "--by does not apply");
  expect_usage(e2e_heapctl(&env, "sessions", "-s", "1", NULL), "sessions -s", "-s does not apply");
  expect_usage(e2e_heapctl(&env, "top", "--by", "site", NULL), "top --by site", "'site'");
  expect_usage(e2e_heapctl(&env, "leaks", "--by", "count", NULL), "leaks --by count", "'count'");
}

Test(e2e_schemas, session_that_is_not_a_number_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "leaks", "-s", "abc", NULL), "-s abc", "'abc'");
  expect_usage(e2e_heapctl(&env, "leaks", "-s", "-1", NULL), "-s -1", "'-1'");
  expect_usage(e2e_heapctl(&env, "leaks", "-s", "1x", NULL), "-s 1x", "'1x'");
}

Test(e2e_schemas, unknown_session_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "leaks", "-s", "99", NULL), "live -s 99", "no session 99");
  expect_usage(e2e_heapctl(&env, "leaks", "-s", "99", "--json", NULL), "live -s 99 --json",
               "no session 99");
  e2e_stop_daemon(&env);
  expect_usage(e2e_heapctl_db(&env, "stats", "-s", "99", NULL), "offline -s 99", "no session 99");
}

Test(e2e_schemas, missing_database_file_is_named) {
  char path[200];
  snprintf(path, sizeof path, "%s/no-such.db", env.dir);
  expect_usage(heapctl_raw("--db", path, "leaks", NULL), "--db missing file", path);
  cr_assert(access(path, F_OK) != 0, "heapctl created %s", path);
}

Test(e2e_schemas, directory_given_as_database_is_named) {
  expect_usage(heapctl_raw("--db", env.dir, "leaks", NULL), "--db a directory", "is a directory");
}

static void write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert(f != NULL, "cannot create %s", path);
  cr_assert(eq(sz, fwrite(p, 1, n, f), n));
  fclose(f);
}

Test(e2e_schemas, file_that_is_not_a_database_is_a_usage_error) {
  char path[200], garbage[4096];
  snprintf(path, sizeof path, "%s/garbage.db", env.dir);
  for (size_t i = 0; i < sizeof garbage; i++)
    garbage[i] = (char)(i * 7 + 13);
  write_file(path, garbage, sizeof garbage);
  expect_usage(heapctl_raw("--db", path, "leaks", NULL), "--db garbage",
               "not a heaptrace database");
}

Test(e2e_schemas, empty_sqlite_database_is_not_a_heaptrace_database) {
  char path[200];
  snprintf(path, sizeof path, "%s/empty.db", env.dir);
  sh("sqlite3 '%s' 'CREATE TABLE t(x); DROP TABLE t;'", path);
  expect_usage(heapctl_raw("--db", path, "leaks", NULL), "--db empty database",
               "not a heaptrace database");
  expect_usage(heapctl_raw("--db", path, "sessions", NULL), "--db empty database, sessions",
               "not a heaptrace database");
}

Test(e2e_schemas, newer_database_schema_is_refused) {
  char path[200];
  e2e_stop_daemon(&env);
  snprintf(path, sizeof path, "%s/newer.db", env.dir);
  sh("cp '%s' '%s'", env.db, path);
  sh("sqlite3 '%s' 'PRAGMA user_version=99'", path);
  expect_usage(heapctl_raw("--db", path, "leaks", NULL), "--db newer", "newer");
  /* The original still reads. */
  e2e_result_t r = e2e_heapctl_db(&env, "leaks", NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  e2e_result_free(&r);
}

Test(e2e_schemas, no_daemon_says_to_start_it_or_use_db) {
  e2e_stop_daemon(&env);
  e2e_result_t r = e2e_heapctl(&env, "leaks", NULL);
  cr_assert(eq(int, r.status, 2), "exit %d: %s", r.status, r.err);
  cr_assert(strstr(r.err, env.socket) != NULL, "%s", r.err);
  cr_assert(strstr(r.err, "heaptraced") != NULL, "%s", r.err);
  cr_assert(strstr(r.err, "--db") != NULL, "%s", r.err);
  e2e_result_free(&r);
}

Test(e2e_schemas, socket_and_db_together_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "--db", env.db, "leaks", NULL), "--socket with --db", "not both");
}

Test(e2e_schemas, diff_with_one_session_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "diff", "1", NULL), "diff 1", "two session");
  expect_usage(e2e_heapctl(&env, "diff", "1", "2", "3", NULL), "diff 1 2 3", "two session");
  expect_usage(e2e_heapctl(&env, "diff", "1", "x", NULL), "diff 1 x", "'x'");
}

Test(e2e_schemas, export_to_a_missing_directory_is_a_usage_error) {
  expect_usage(e2e_heapctl(&env, "export", "-o", "/nonexistent-dir/x.json", NULL),
               "export -o /nonexistent-dir/x.json", "/nonexistent-dir/x.json");
}

/* ======================================================================
 * export -o FILE: atomic
 * ==================================================================== */

static int leftovers(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  cr_assert(d != NULL);
  int n = 0;
  const struct dirent *e;
  while ((e = readdir(d)))
    n += strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strcmp(e->d_name, prefix) != 0;
  closedir(d);
  return n;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert(f != NULL, "%s was not written", path);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static void check_export_to(const char *path) {
  e2e_result_t r = e2e_heapctl(&env, "export", "-o", path, NULL);
  cr_assert(eq(int, r.status, 0), "export: %s", r.err);
  cr_assert(strstr(r.err, path) != NULL, "export does not say where it wrote: %s", r.err);
  e2e_result_free(&r);
  char *text = slurp(path);
  cJSON *j = cJSON_Parse(text);
  cr_assert(j != NULL, "%s does not parse:\n%s", path, text);
  cr_assert(eq(str, get(j, "format")->valuestring, "heaptrace-report"));
  cr_assert(eq(int, (int)get(get(j, "session"), "id")->valuedouble, 2));
  cJSON_Delete(j);
  cr_assert(eq(int, e2e_validate(text, "report.schema.json"), 0));
}

Test(e2e_schemas, export_writes_a_valid_report_atomically) {
  char dir[200], path[300];
  snprintf(dir, sizeof dir, "%s/out", env.dir);
  sh("mkdir '%s'", dir);
  snprintf(path, sizeof path, "%s/report.json", dir);
  check_export_to(path);
  cr_assert(eq(int, leftovers(dir, "report.json"), 0), "temporary files left beside %s", path);
  /* Over an existing file: replaced whole. */
  write_file(path, "old", 3);
  check_export_to(path);
  cr_assert(eq(int, leftovers(dir, "report.json"), 0), "temporary files left beside %s", path);
  /* A target that cannot be replaced (a directory): exit 2, no temp file. */
  char sub[300];
  snprintf(sub, sizeof sub, "%s/taken", dir);
  sh("mkdir '%s'", sub);
  expect_usage(e2e_heapctl(&env, "export", "-o", sub, NULL), "export over a directory", sub);
  cr_assert(eq(int, leftovers(dir, "taken"), 0), "temporary files left beside %s", sub);
}

/* export -o to something that is not a regular file (here a FIFO; as root,
 * /dev/null) must not replace it with a regular file: write into it, or
 * refuse. A reader drains the FIFO meanwhile so that writing into it
 * cannot block. */
Test(e2e_schemas, export_to_a_fifo_does_not_replace_it) {
  char fifo[200];
  snprintf(fifo, sizeof fifo, "%s/report.fifo", env.dir);
  cr_assert(eq(int, mkfifo(fifo, 0600), 0));
  pid_t reader = fork();
  cr_assert(reader >= 0);
  if (reader == 0) {
    alarm(10);
    int fd = open(fifo, O_RDONLY);
    char buf[4096];
    while (fd >= 0 && read(fd, buf, sizeof buf) > 0)
      ;
    _exit(0);
  }
  e2e_result_t r = e2e_heapctl(&env, "export", "-o", fifo, NULL);
  kill(reader, SIGKILL); /* blocked for good if heapctl never opened the FIFO */
  waitpid(reader, NULL, 0);
  struct stat sb;
  cr_assert(eq(int, lstat(fifo, &sb), 0));
  int still_fifo = S_ISFIFO(sb.st_mode);
  cr_assert(still_fifo,
            "export -o FIFO (exit %d) replaced the FIFO with a regular file; as root, "
            "'export -o /dev/null' replaces /dev/null the same way",
            r.status);
  cr_assert(r.status == 0 || r.status == 2, "exit %d: %s", r.status, r.err);
  e2e_result_free(&r);
}

/* ======================================================================
 * Consistency of the bounded-heap numbers across commands
 * ==================================================================== */

static const cJSON *heap_named(const cJSON *result, const char *name) {
  const cJSON *h, *found = NULL;
  cJSON_ArrayForEach(h, get(result, "heaps")) {
    if (strcmp(get(h, "name")->valuestring, name) == 0)
      found = h;
  }
  cr_assert(found != NULL, "no heap '%s'", name);
  return found;
}

/* A caps mask that only dram0 can serve has dram0's free bytes and
 * minimum, with and without a window. */
static void check_masks_of_one_heap(const char *const *args) {
  cJSON *j = heapctl_json(0, args);
  const cJSON *h = heap_named(j, "dram0"), *k;
  int n = 0;
  cJSON_ArrayForEach(k, get(j, "caps")) {
    const cJSON *hs = get(k, "heaps");
    if (cJSON_GetArraySize(hs) != 1 || strcmp(cJSON_GetArrayItem(hs, 0)->valuestring, "dram0"))
      continue;
    n++;
    cr_assert(eq(dbl, e2e_num(k, "minimum_free_bytes"), e2e_num(h, "minimum_free_bytes")),
              "%s: caps %s (served by dram0 alone) has minimum_free_bytes %.0f, dram0 has %.0f "
              "(at %.3f ms)",
              join(args), get(k, "caps_names")->valuestring, e2e_num(k, "minimum_free_bytes"),
              e2e_num(h, "minimum_free_bytes"), e2e_num(h, "at_ms"));
    cr_assert(eq(dbl, e2e_num(k, "free_bytes"), e2e_num(h, "free_bytes")), "%s: caps %s free_bytes",
              join(args), get(k, "caps_names")->valuestring);
  }
  cr_assert(n > 0, "%s: no caps mask served by dram0 alone", join(args));
  cJSON_Delete(j);
}

Test(e2e_schemas, caps_mask_of_one_heap_has_that_heaps_low_water_mark) {
  bounded_session();
  const char *whole[] = {"lwm", "-s", "3", "--json", NULL};
  check_masks_of_one_heap(whole);
  /* The first event (2 ms) is before the window, the realloc that makes
   * the minimum (8 ms) inside it. */
  const char *window[] = {"lwm", "-s", "3", "--since", "3", "--until", "9", "--json", NULL};
  check_masks_of_one_heap(window);
}

/* A timeline point holds the extremes of its interval: the point of the
 * heap's peak shows the peak (here reached inside a moving realloc, when
 * both blocks are live), the point of its low-water mark the minimum. */
Test(e2e_schemas, timeline_shows_the_peak_and_the_low_water_mark) {
  bounded_session();
  const char *stats[] = {"stats", "-s", "3", "--json", NULL};
  const char *lwm[] = {"lwm", "-s", "3", "--json", NULL};
  const char *tl[] = {"timeline", "-s", "3", "--json", NULL};
  cJSON *js = heapctl_json(0, stats), *jl = heapctl_json(0, lwm), *jt = heapctl_json(0, tl);
  const cJSON *hs = heap_named(js, "dram0"), *hl = heap_named(jl, "dram0");
  const cJSON *ht = heap_named(jt, "dram0");
  const cJSON *at_peak = NULL, *at_min = NULL, *p;
  cJSON_ArrayForEach(p, get(ht, "points")) {
    if (e2e_num(p, "t_ms") == e2e_num(hs, "peak_at_ms"))
      at_peak = p;
    if (e2e_num(p, "t_ms") == e2e_num(hl, "at_ms"))
      at_min = p;
  }
  cr_assert(at_peak != NULL, "no timeline point at the peak (%.6f ms)", e2e_num(hs, "peak_at_ms"));
  cr_assert(eq(dbl, e2e_num(at_peak, "peak_used_bytes"), e2e_num(hs, "peak_used_bytes")),
            "the timeline point at %.6f ms (a realloc) shows a peak of %.0f bytes used; stats "
            "says the peak, %.0f, was reached then",
            e2e_num(at_peak, "t_ms"), e2e_num(at_peak, "peak_used_bytes"),
            e2e_num(hs, "peak_used_bytes"));
  cr_assert(at_min != NULL, "no timeline point at the low-water mark");
  cr_assert(eq(dbl, e2e_num(at_min, "min_free_bytes"), e2e_num(hl, "minimum_free_bytes")),
            "the timeline point at %.6f ms shows %.0f bytes free; lwm says the minimum, %.0f, "
            "was reached then",
            e2e_num(at_min, "t_ms"), e2e_num(at_min, "min_free_bytes"),
            e2e_num(hl, "minimum_free_bytes"));
  cJSON_Delete(js);
  cJSON_Delete(jl);
  cJSON_Delete(jt);
}

Test(e2e_schemas, worst_fragmentation_is_at_least_the_current_one) {
  bounded_session();
  const char *frag[] = {"frag", "-s", "3", "--json", NULL};
  cJSON *j = heapctl_json(0, frag);
  const cJSON *h = heap_named(j, "dram0");
  cr_assert(e2e_num(h, "fragmentation") <= e2e_num(get(h, "worst"), "fragmentation"),
            "fragmentation now %.17g, at its worst %.17g", e2e_num(h, "fragmentation"),
            e2e_num(get(h, "worst"), "fragmentation"));
  cJSON_Delete(j);
}
