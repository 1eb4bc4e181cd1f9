/* test_e2e_heaps.c - low-water marks and fragmentation of caps heaps, end
 * to end, against what the allocator itself says and against arithmetic.
 *
 * tests/programs/caps_frag fills a 64 KiB region with 1000-byte blocks,
 * frees every other one, and prints the allocator's own figures. The
 * daemon rebuilds each heap's free space from the events alone; its
 * answers must be those figures exactly -- live and offline. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "e2e.h"

static e2e_t env;
static e2e_result_t prog;

static void setup(void) {
  e2e_start(&env);
  char *argv[] = {(char *)e2e_bin("caps_frag"), NULL};
  prog = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, prog.status, 0), "%s", prog.err);
  cr_assert(lt(long, 10, e2e_field(prog.out, "blocks")), "%s", prog.out);
}

static void teardown(void) {
  e2e_result_free(&prog);
  e2e_stop(&env);
}

TestSuite(e2e_heaps, .init = setup, .fini = teardown, .timeout = 60);

static double field(const char *k) {
  return (double)e2e_field(prog.out, k);
}

static cJSON *query(int offline, const char *cmd, const char *a, const char *b) {
  e2e_result_t r = offline ? (a ? e2e_heapctl_db(&env, cmd, a, b, "--json", NULL)
                                : e2e_heapctl_db(&env, cmd, "--json", NULL))
                           : (a ? e2e_heapctl(&env, cmd, a, b, "--json", NULL)
                                : e2e_heapctl(&env, cmd, "--json", NULL));
  cr_assert(eq(int, r.status, 0), "heapctl %s: %s", cmd, r.err);
  cJSON *j = e2e_json(&r);
  e2e_result_free(&r);
  return j;
}

static const cJSON *by_key(const cJSON *list, const char *key, const char *value) {
  const cJSON *it;
  cJSON_ArrayForEach(it, list) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, key);
    if (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0)
      return it;
  }
  cr_fatal("no entry with %s = %s", key, value);
  return NULL;
}

static void check_lwm(int offline) {
  cJSON *j = query(offline, "lwm", NULL, NULL);
  const cJSON *h = by_key(cJSON_GetObjectItem(j, "heaps"), "name", "frag64");
  cr_assert(eq(dbl, e2e_num(h, "minimum_free_bytes"), field("min_free")));
  cr_assert(eq(dbl, e2e_num(h, "free_bytes"), field("free")));
  const cJSON *spare = by_key(cJSON_GetObjectItem(j, "heaps"), "name", "spare");
  cr_assert(eq(dbl, e2e_num(spare, "minimum_free_bytes"), field("spare_min")));
  /* caps 8BIT is served by both heaps, whose minima came at different
   * moments: the true minimum of the sum is frag64's minimum with spare
   * back to full; ESP-IDF's answer, the sum of minima, is lower. */
  const cJSON *k = by_key(cJSON_GetObjectItem(j, "caps"), "caps_names", "8BIT");
  cr_assert(eq(dbl, e2e_num(k, "minimum_free_bytes"), field("min_free") + field("spare_free")));
  cr_assert(eq(dbl, e2e_num(k, "sum_of_heap_minima"), field("min_free") + field("spare_min")));
  const cJSON *dma = by_key(cJSON_GetObjectItem(j, "caps"), "caps_names", "DMA");
  cr_assert(eq(dbl, e2e_num(dma, "minimum_free_bytes"), field("min_free")));
  cJSON_Delete(j);
}

static void check_frag(int offline) {
  cJSON *j = query(offline, "frag", "--heap", "frag64");
  cr_assert(eq(int, cJSON_GetArraySize(cJSON_GetObjectItem(j, "heaps")), 1));
  const cJSON *h = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "heaps"), 0);
  double free_now = field("free"), largest = field("largest");
  cr_assert(eq(dbl, e2e_num(h, "free_bytes"), free_now));
  cr_assert(eq(dbl, e2e_num(h, "free_blocks"), field("free_blocks")));
  cr_assert(eq(dbl, e2e_num(h, "largest_free_block"), largest));
  cr_assert(lt(dbl, fabs(e2e_num(h, "fragmentation") - (1 - largest / free_now)), 1e-12));
  /* By construction: every freed block is a gap of one block's footprint
   * (its payload is that minus the 16-byte header), except the last one,
   * which merged with the tail that was free at the low-water mark. The
   * worst moment is just before that last free. */
  double footprint = largest - field("min_free");
  double gap = footprint - 16;
  double freed = (double)(e2e_field(prog.out, "blocks") / 2);
  double worst_free = (freed - 1) * gap + field("min_free");
  const cJSON *w = cJSON_GetObjectItem(h, "worst");
  cr_assert(eq(dbl, e2e_num(w, "free_bytes"), worst_free));
  cr_assert(eq(dbl, e2e_num(w, "largest_free_block"), gap));
  cr_assert(eq(dbl, e2e_num(w, "free_blocks"), freed));
  cr_assert(lt(dbl, fabs(e2e_num(w, "fragmentation") - (1 - gap / worst_free)), 1e-12));
  cJSON_Delete(j);
}

Test(e2e_heaps, low_water_marks_are_the_allocators_own_and_caps_sums_are_exact) {
  check_lwm(0);
}

Test(e2e_heaps, fragmentation_now_and_at_its_worst_match_the_arithmetic) {
  check_frag(0);
}

Test(e2e_heaps, the_same_answers_come_offline_from_the_database) {
  e2e_stop_daemon(&env);
  check_lwm(1);
  check_frag(1);
}

Test(e2e_heaps, timeline_points_hold_the_low_water_mark) {
  cJSON *j = query(0, "timeline", "--heap", "frag64");
  const cJSON *h = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "heaps"), 0);
  double lowest = 1e18;
  const cJSON *p;
  cJSON_ArrayForEach(p, cJSON_GetObjectItem(h, "points")) {
    if (e2e_num(p, "min_free_bytes") < lowest)
      lowest = e2e_num(p, "min_free_bytes");
  }
  cr_assert(eq(dbl, lowest, field("min_free")));
  cJSON_Delete(j);
}
