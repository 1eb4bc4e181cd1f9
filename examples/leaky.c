/* leaky.c - a program that leaks on purpose, for a first look at heaptrace.
 *
 * It allocates with ht_malloc/ht_calloc/ht_realloc/ht_free, frees most of
 * what it allocates and leaks exactly three blocks from three lines:
 * a 100-byte name buffer, a table of 16 ints and a 4000-byte log buffer.
 *
 *   heaptraced              # once, in the background
 *   ./leaky
 *   heapctl leaks
 */
#include <stdio.h>
#include <string.h>

#include <heaptrace/heaptrace.h>

static char *make_name(const char *who) {
  char *name = ht_malloc(100); /* leaked */
  snprintf(name, 100, "hello, %s", who);
  return name;
}

static int *make_table(void) {
  return ht_calloc(16, sizeof(int)); /* leaked */
}

static char *grow_log(void) {
  char *log = ht_malloc(1000);
  memset(log, 'x', 1000);
  return ht_realloc(log, 4000); /* leaked: the realloc'd block */
}

static void churn(void) {
  for (int i = 0; i < 50; i++) {
    void *p = ht_malloc((size_t)(i + 1) * 8);
    void *q = ht_calloc(4, 32);
    p = ht_realloc(p, (size_t)(i + 1) * 16);
    ht_free(q);
    ht_free(p);
  }
}

int main(void) {
  churn();
  char *name = make_name("heaptrace");
  int *table = make_table();
  char *log = grow_log();
  printf("%s: table at %p, log at %p\n", name, (void *)table, (void *)log);
  return 0;
}
