/* fork_client.c - forks in the middle of a traced run, for the transport's
 * end-to-end tests.
 *
 * The parent leaks 111 bytes, forks, waits for the child, does 1000
 * malloc/free pairs and leaks 333 bytes. The child does 1000 pairs and
 * leaks 222 bytes. Each becomes its own session; it prints
 *   parent=PID child=PID
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

static void pairs(int n) {
  for (int i = 0; i < n; i++)
    ht_free(ht_malloc((size_t)(8 + i % 64)));
}

int main(void) {
  char *before = ht_malloc(111);
  pairs(100);
  fflush(stdout);
  pid_t child = fork();
  if (child < 0)
    return 1;
  if (child == 0) {
    pairs(1000);
    char *mine = ht_malloc(222);
    (void)mine;
    exit(0);
  }
  int status;
  waitpid(child, &status, 0);
  pairs(1000);
  char *after = ht_malloc(333);
  printf("parent=%d child=%d\n", (int)getpid(), (int)child);
  (void)before;
  (void)after;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
