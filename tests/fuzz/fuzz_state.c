/* fuzz_state.c - libFuzzer target for the state blob parser.
 *
 * The input is tried twice with ht_set_state_sized (ht_set_state itself,
 * like malloc_set_state, must trust the length a blob claims): as it is
 * (the header checks must refuse it or accept it whole), and with its
 * header's length, ~length and checksum made right, so that the body
 * parser, not only the checksum, meets the fuzzed bytes. Either way the
 * answer is 0, -1 or -2, and nothing reads outside the input.
 */
// fuzz-sources: libclient/clock.c libclient/config.c libclient/sites.c libclient/stream.c
// fuzz-sources: libclient/sysheap.c
// fuzz-sources: libclient/transport.c libclient/tlsf.c libclient/registry.c libclient/poison.c
// fuzz-sources: libclient/caps.c libclient/capsinfo.c libclient/account.c libclient/callbacks.c
// fuzz-sources: libclient/typed.c libclient/state.c libclient/fatal.c
// fuzz-libs: -lpthread
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <heaptrace/heaptrace.h>

#include "client.h"

#define HEADER 24
#define MAX_INPUT (256u * 1024u) /* the fuzzer's inputs stay far below STATE_MAX */

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      abort();                                                                                     \
  } while (0)

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* The header fields as a writer would set them for a blob of len bytes. */
static void seal(uint8_t *b, uint32_t len) {
  memcpy(b, "HTST", 4);
  put32(b + 8, len);
  put32(b + 12, ~len);
  put32(b + 20, 0);
  put32(b + 16, ht__state_crc(b, len));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setenv("HEAPTRACE_DISABLE", "1", 1); /* no daemon: state only */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > MAX_INPUT)
    return 0;
  /* Exactly the claimed size is readable: a longer read is an ASan report. */
  uint8_t *b = malloc(size > HEADER ? size : HEADER);
  memset(b, 0, size > HEADER ? size : HEADER);
  memcpy(b, data, size);
  int rc = ht_set_state_sized(b, size);
  CHECK(rc == 0 || rc == -1 || rc == -2);
  if (size >= HEADER) {
    seal(b, (uint32_t)size);
    rc = ht_set_state_sized(b, size);
    CHECK(rc == 0 || rc == -1 || rc == -2);
  }
  free(b);
  return 0;
}
