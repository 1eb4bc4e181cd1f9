/* test_e2e_leaky.c - the first slice end to end: examples/leaky through a
 * real heaptraced into SQLite and back out through heapctl.
 *
 * What leaky does is known by construction (see examples/leaky.c): three
 * blocks leak from the lines marked "leaked" (100 bytes, 16 ints, and a
 * 1000-byte block realloc'd to 4000), and the churn loop does 50 rounds of
 * malloc + calloc + realloc + two frees.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>

#include "e2e.h"

#define LEAKY_SRC "examples/leaky.c"

static e2e_t env;

static void setup(void) {
  e2e_start(&env);
  char *argv[] = {(char *)e2e_bin("leaky"), NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "leaky failed: %s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.err, "heaptrace:"), 0), "client warned: %s", r.err);
  e2e_result_free(&r);
}

static void teardown(void) {
  e2e_stop(&env);
}

TestSuite(e2e_leaky, .init = setup, .fini = teardown, .timeout = 60);

/* The three leaks, in the order of their lines in leaky.c. */
static const struct {
  const char *function;
  double bytes;
} expected[3] = {{"make_name", 100}, {"make_table", 16 * sizeof(int)}, {"grow_log", 4000}};

static void check_leaks_json(const cJSON *res) {
  int lines[4];
  cr_assert(eq(int, e2e_marked_lines(LEAKY_SRC, "/* leaked", lines, 4), 3));
  const cJSON *groups = cJSON_GetObjectItemCaseSensitive(res, "groups");
  cr_assert(eq(int, cJSON_GetArraySize(groups), 3));
  for (int i = 0; i < 3; i++) {
    const cJSON *g = NULL, *it;
    cJSON_ArrayForEach(it, groups) {
      if (strcmp(e2e_str(it, "function"), expected[i].function) == 0)
        g = it;
    }
    cr_assert(g != NULL, "no leak reported from %s", expected[i].function);
    cr_assert(eq(str, (char *)e2e_str(g, "file"), LEAKY_SRC));
    cr_assert(eq(dbl, e2e_num(g, "line"), lines[i]));
    cr_assert(eq(dbl, e2e_num(g, "blocks"), 1));
    cr_assert(eq(dbl, e2e_num(g, "bytes"), expected[i].bytes));
    cr_assert(eq(dbl, e2e_num(g, "caps"), 0x1006)); /* DEFAULT|8BIT|32BIT */
    cr_assert(eq(str, (char *)e2e_str(g, "caps_names"), "DEFAULT|8BIT|32BIT"));
  }
  const cJSON *total = cJSON_GetObjectItemCaseSensitive(res, "total");
  cr_assert(eq(dbl, e2e_num(total, "blocks"), 3));
  cr_assert(eq(dbl, e2e_num(total, "bytes"), 100 + 16 * sizeof(int) + 4000));
}

Test(e2e_leaky, leaks_json_names_exactly_the_three_leaked_blocks) {
  e2e_result_t r = e2e_heapctl(&env, "leaks", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl: %s", r.err);
  cJSON *j = e2e_json(&r);
  check_leaks_json(j);
  cJSON_Delete(j);
  e2e_result_free(&r);
}

Test(e2e_leaky, leaks_json_is_valid_against_its_schema) {
  e2e_result_t r = e2e_heapctl(&env, "--json", "leaks", NULL);
  cr_assert(eq(int, r.status, 0));
  cr_assert(eq(int, e2e_validate(r.out, "leaks.schema.json"), 0));
  e2e_result_free(&r);
}

Test(e2e_leaky, leaks_table_prints_site_function_size_and_caps_of_each_leak) {
  int lines[3];
  e2e_marked_lines(LEAKY_SRC, "/* leaked", lines, 3);
  e2e_result_t r = e2e_heapctl(&env, "leaks", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl: %s", r.err);
  for (int i = 0; i < 3; i++) {
    char site[64], bytes[32];
    snprintf(site, sizeof site, "%s:%d ", LEAKY_SRC, lines[i]);
    snprintf(bytes, sizeof bytes, " %.0f ", expected[i].bytes);
    cr_assert(eq(int, e2e_count_lines(r.out, site), 1), "no row for %s in\n%s", site, r.out);
    char row[256];
    const char *at = strstr(r.out, site);
    size_t len = strcspn(at, "\n");
    snprintf(row, sizeof row, "%.*s", (int)len, at);
    cr_assert(strstr(row, expected[i].function) != NULL, "row: %s", row);
    cr_assert(strstr(row, bytes) != NULL, "row: %s", row);
    cr_assert(strstr(row, "DEFAULT|8BIT|32BIT") != NULL, "row: %s", row);
  }
  /* Nothing else: three rows name leaky.c, and the total says three. */
  cr_assert(eq(int, e2e_count_lines(r.out, LEAKY_SRC), 3), "%s", r.out);
  cr_assert(eq(int, e2e_count_lines(r.out, "total: 3 blocks, 4164 bytes leaked"), 1), "%s", r.out);
  e2e_result_free(&r);
}

Test(e2e_leaky, stats_match_what_the_program_did) {
  e2e_result_t r = e2e_heapctl(&env, "stats", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl: %s", r.err);
  cJSON *j = e2e_json(&r);
  /* churn: 50 x (malloc, calloc, realloc, free, free); then malloc,
   * calloc, malloc + realloc. */
  cr_assert(eq(dbl, e2e_num(j, "allocations"), 50 * 2 + 3));
  cr_assert(eq(dbl, e2e_num(j, "frees"), 50 * 2));
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), 50 + 1));
  cr_assert(eq(dbl, e2e_num(j, "failed"), 0));
  cr_assert(eq(dbl, e2e_num(j, "events"), 103 + 100 + 51));
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), 3));
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), 4164));
  /* The churn never holds more than 800 + 128 + 400 bytes; the peak is the
   * moving realloc of grow_log, when its 1000-byte and 4000-byte blocks
   * are both live beside the other two leaks. */
  cr_assert(eq(dbl, e2e_num(j, "peak_bytes"), 100 + 64 + 1000 + 4000));
  double churn = 0;
  for (int i = 1; i <= 50; i++)
    churn += i * 8 + 4 * 32 + i * 16;
  cr_assert(eq(dbl, e2e_num(j, "total_bytes"), churn + 100 + 64 + 1000 + 4000));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "totals");
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(t, "agree")), "%s", r.out);
  cJSON_Delete(j);
  e2e_result_free(&r);
}

Test(e2e_leaky, stats_table_shows_the_counts) {
  e2e_result_t r = e2e_heapctl(&env, "stats", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl: %s", r.err);
  cr_assert(eq(int, e2e_count_lines(r.out, "allocations                       103"), 1), "%s",
            r.out);
  cr_assert(eq(int, e2e_count_lines(r.out, "current bytes                    4164"), 1), "%s",
            r.out);
  cr_assert(eq(int, e2e_count_lines(r.out, "peak bytes                       5164"), 1), "%s",
            r.out);
  cr_assert(eq(int, e2e_count_lines(r.out, "client totals agree"), 1), "%s", r.out);
  e2e_result_free(&r);
}

Test(e2e_leaky, session_ended_cleanly_with_every_event_stored) {
  e2e_result_t r = e2e_heapctl(&env, "sessions", "--json", NULL);
  cr_assert(eq(int, r.status, 0));
  cJSON *j = e2e_json(&r);
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "sessions");
  cr_assert(eq(int, cJSON_GetArraySize(list), 1));
  const cJSON *s = cJSON_GetArrayItem(list, 0);
  cr_assert(eq(str, (char *)e2e_str(s, "end_reason"), "clean"));
  cr_assert(eq(str, (char *)e2e_str(s, "app"), "leaky"));
  cr_assert(eq(dbl, e2e_num(s, "events"), 254));
  cr_assert(eq(dbl, e2e_num(s, "lost"), 0));
  cJSON_Delete(j);
  e2e_result_free(&r);
}

Test(e2e_leaky, offline_database_gives_the_same_leaks_after_the_daemon_stops) {
  e2e_stop_daemon(&env);
  e2e_result_t r = e2e_heapctl_db(&env, "leaks", "--json", NULL);
  cr_assert(eq(int, r.status, 0), "heapctl --db: %s", r.err);
  cJSON *j = e2e_json(&r);
  check_leaks_json(j);
  cJSON_Delete(j);
  e2e_result_free(&r);
}
