/* consumer.c - proves that an installed heaptrace links and runs. */
#include <heaptrace/heaptrace.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  char *p = ht_malloc(32);
  if (!p)
    return 1;
  strcpy(p, "installed");
  printf("%s %s\n", p, ht_strerror(HT_EINVAL));
  ht_free(p);
  return 0;
}
