/* test_state.c - ht_get_state / ht_set_state (libclient/state.c).
 *
 * A round trip must give back the same bytes; a blob damaged anywhere -
 * every byte flipped in turn - must give -1 and change nothing; a blob
 * from a newer version, intact, must give -2. The test knows the header
 * layout documented in docs/allocator.md (and computes CRC-32 itself) to
 * forge intact blobs.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <heaptrace/heaptrace.h>

static _Alignas(64) unsigned char dram[64 * 1024];

typedef struct {
  int id;
  double x;
} sample_t;

static void setup(void) {
  setenv("HEAPTRACE_DISABLE", "1", 1);
  const uint32_t caps[3] = {HT_CAP_DEFAULT | HT_CAP_8BIT | HT_CAP_DMA, 0, 0};
  cr_assert(eq(int,
               ht_heap_add_region_with_caps_named("DRAM", caps, (intptr_t)dram,
                                                  (intptr_t)dram + sizeof dram),
               HT_OK));
}

TestSuite(state, .init = setup, .timeout = 120);

/* Some bookkeeping worth saving: typed and plain blocks, a failure, a
 * caps heap that went low and came back. */
static void activity(void) {
  sample_t *s = HT_NEW(sample_t, 3);
  void *big = ht_caps_malloc(40000, HT_CAP_DMA);
  ht_caps_free(big);
  void *p = ht_malloc(100);
  p = ht_realloc(p, 300);
  ht_free(p);
  ht_free(s);
  (void)HT_NEW(sample_t, 1); /* stays live */
  ht_caps_malloc(10, HT_CAP_RTCRAM);
}

static uint32_t crc32(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & -(c & 1u));
  }
  return ~c;
}

/* Recomputes the crc of a blob the test edited (the field at 16 counts
 * as zero). */
static void reseal(uint8_t *b, size_t len) {
  memset(b + 16, 0, 4);
  uint32_t c = crc32(b, len);
  memcpy(b + 16, &c, 4);
}

static uint8_t *copy_of(const void *blob, size_t *len) {
  *len = ht_state_size(blob);
  uint8_t *c = malloc(*len);
  memcpy(c, blob, *len);
  return c;
}

Test(state, a_round_trip_gives_back_the_same_bytes) {
  activity();
  void *a = ht_get_state();
  cr_assert(ne(ptr, a, NULL));
  cr_assert(eq(int, memcmp(a, "HTST", 4), 0));
  cr_assert(eq(int, ht_set_state(a), 0));
  void *b = ht_get_state();
  cr_assert(eq(sz, ht_state_size(b), ht_state_size(a)));
  cr_assert(eq(int, memcmp(a, b, ht_state_size(a)), 0));
  ht_free_state(a);
  ht_free_state(b);
  ht_free_state(NULL);
}

Test(state, set_state_brings_counters_types_sites_and_minima_back) {
  activity();
  void *saved = ht_get_state();
  ht_totals_t before;
  ht_get_totals(&before);
  ht_type_stats_t tbefore;
  cr_assert(eq(int, ht_type_stats(sample_t, &tbefore), HT_OK));
  size_t min_before = ht_caps_get_minimum_free_size(HT_CAP_DMA);
  /* More of everything. */
  for (int i = 0; i < 10; i++)
    ht_free(HT_NEW(sample_t, 2));
  void *lower = ht_caps_malloc(60000, HT_CAP_DMA);
  ht_caps_free(lower);
  ht_free(ht_malloc(5));
  cr_assert(lt(sz, ht_caps_get_minimum_free_size(HT_CAP_DMA), min_before));
  cr_assert(eq(int, ht_set_state(saved), 0));
  ht_totals_t after;
  ht_get_totals(&after);
  cr_assert(eq(u64, after.allocs, before.allocs));
  cr_assert(eq(u64, after.frees, before.frees));
  cr_assert(eq(u64, after.reallocs, before.reallocs));
  cr_assert(eq(u64, after.failures, before.failures));
  cr_assert(eq(i64, after.cur_bytes, before.cur_bytes));
  cr_assert(eq(i64, after.cur_blocks, before.cur_blocks));
  cr_assert(eq(u64, after.total_bytes, before.total_bytes));
  ht_type_stats_t tafter;
  ht_type_stats(sample_t, &tafter);
  cr_assert(eq(u64, tafter.allocs, tbefore.allocs));
  cr_assert(eq(i64, tafter.peak_bytes, tbefore.peak_bytes));
  cr_assert(eq(sz, ht_caps_get_minimum_free_size(HT_CAP_DMA), min_before));
  ht_free_state(saved);
}

Test(state, every_single_byte_flip_is_refused_and_changes_nothing) {
  activity();
  void *blob = ht_get_state();
  size_t len;
  uint8_t *b = copy_of(blob, &len);
  cr_assert(lt(sz, 100, len));
  for (size_t i = 0; i < len; i++) {
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    for (size_t f = 0; f < sizeof flips; f++) {
      b[i] ^= flips[f];
      cr_assert(eq(int, ht_set_state(b), -1), "byte %zu ^ 0x%02x accepted", i, flips[f]);
      b[i] ^= flips[f];
    }
  }
  void *again = ht_get_state();
  cr_assert(eq(int, memcmp(again, blob, len), 0), "refused blobs changed nothing");
  cr_assert(eq(int, ht_set_state(b), 0), "the intact copy is still good");
  free(b);
  ht_free_state(blob);
  ht_free_state(again);
}

Test(state, a_blob_from_a_newer_version_gives_minus_two) {
  void *blob = ht_get_state();
  size_t len;
  uint8_t *b = copy_of(blob, &len);
  b[4] = HT_STATE_VERSION + 1; /* u16 version, little-endian */
  cr_assert(eq(int, ht_set_state(b), -1), "not resealed: damaged");
  reseal(b, len);
  cr_assert(eq(int, ht_set_state(b), -2));
  b[4] = 0;
  reseal(b, len);
  cr_assert(eq(int, ht_set_state(b), -1), "version 0 does not exist");
  free(b);
  ht_free_state(blob);
}

Test(state, malformed_blobs_with_a_valid_checksum_give_minus_one) {
  activity();
  void *blob = ht_get_state();
  size_t len;
  uint8_t *b = copy_of(blob, &len);
  /* Inconsistent counters: cur_blocks must be allocs - frees. */
  b[24] ^= 1;
  reseal(b, len);
  cr_assert(eq(int, ht_set_state(b), -1));
  memcpy(b, blob, len);
  /* A length shorter than the content (and its complement to match). */
  uint32_t short_len = (uint32_t)len - 8, inv = ~short_len;
  memcpy(b + 8, &short_len, 4);
  memcpy(b + 12, &inv, 4);
  reseal(b, short_len);
  cr_assert(eq(int, ht_set_state(b), -1));
  memcpy(b, blob, len);
  b[0] = 'X';
  cr_assert(eq(int, ht_set_state(b), -1), "bad magic");
  cr_assert(eq(int, ht_set_state(NULL), -1));
  cr_assert(eq(sz, ht_state_size(b), 0));
  free(b);
  ht_free_state(blob);
}

Test(state, a_blob_restores_names_the_process_has_never_seen) {
  /* Take a blob, then damage the copy's type name consistently: the
   * reader must intern "sample_u" and keep it after the blob is gone. */
  activity();
  void *blob = ht_get_state();
  size_t len;
  uint8_t *b = copy_of(blob, &len);
  uint8_t *at = memmem(b, len, "sample_t", 8);
  cr_assert(ne(ptr, at, NULL));
  at[7] = 'u';
  reseal(b, len);
  cr_assert(eq(int, ht_set_state(b), 0));
  memset(b, 0, len);
  free(b);
  ht_type_stats_t st;
  cr_assert(eq(int, ht_get_type_stats("sample_u", &st), HT_OK));
  cr_assert(eq(str, (char *)st.name, "sample_u"));
  cr_assert(eq(u64, st.allocs, 2));
  cr_assert(eq(int, ht_get_type_stats("sample_t", &st), HT_OK));
  cr_assert(eq(u64, st.allocs, 0), "types not in the blob are zeroed");
  ht_free_state(blob);
}

Test(state, a_sized_blob_claiming_more_than_its_size_is_malformed) {
  activity();
  void *a = ht_get_state();
  size_t n = ht_state_size(a);
  cr_assert(eq(int, ht_set_state_sized(a, n), 0));
  cr_assert(eq(int, ht_set_state_sized(a, n - 1), -1));
  cr_assert(eq(int, ht_set_state_sized(a, 10), -1));
  ht_free_state(a);
}
