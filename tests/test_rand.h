/* test_rand.h - the unit suites' random numbers: xorshift64* from a fixed
 * seed, so that a failing run repeats. Each suite that includes it has its
 * own sequence. */
#ifndef HT_TEST_RAND_H
#define HT_TEST_RAND_H

#include <stdint.h>

static uint64_t test_rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t test_rand(void) {
  test_rng ^= test_rng >> 12;
  test_rng ^= test_rng << 25;
  test_rng ^= test_rng >> 27;
  return test_rng * 0x2545f4914f6cdd1dull;
}

#endif /* HT_TEST_RAND_H */
