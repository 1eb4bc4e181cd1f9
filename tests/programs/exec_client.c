/* exec_client.c - a traced program that replaces itself with exec, for the
 * transport's end-to-end tests.
 *
 *   exec_client ROUNDS [HOW PATH ARG...]   (at most 8 ARGs; 3 with le)
 *
 * Does ROUNDS malloc/free pairs and leaks one 48-byte block: 2 * ROUNDS + 1
 * events, none shipped yet when it goes on at once. Then, with HOW, it
 * execs PATH with the arguments ARG... (argv[0] included) in one of the
 * exec family's forms, named by HOW: v, vp, ve, l, lp, le, fd (fexecve of
 * PATH opened), at (execveat); or fork-v, vfork-v: the program does its
 * rounds, then a child - forked, after rounds of its own, or vforked,
 * doing nothing else - does the execv while the parent waits (after a
 * vfork the parent does its rounds again). Before the exec it prints
 *   pid=P events=E
 * (the process whose events E are; a vforked child prints nothing), and
 * when the exec fails, does its rounds again in the image it still has,
 * prints
 *   failed=ERRNO events_after=E
 * and exits 0. A child's exec that fails exits it 126. With fork-v and
 * vfork-v the parent prints at its end
 *   parent=P parent_events=E cancel_on=1
 * (0 if its thread's cancellation was left off) and exits with the child's status. With HOW daemon
 * (no PATH), the program does its rounds, prints parent=P parent_events=E and calls daemon(1, 1);
 * the daemonized child does its rounds and prints pid=C events=E
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <heaptrace/heaptrace.h>

#define LEAK_BYTES 48
#define MAX_ARGS 8

extern char **environ;

static long rounds;

/* The rounds and the leak; returns the events they made. */
static long long work(void) {
  for (long i = 0; i < rounds; i++) {
    char *p = ht_malloc((size_t)(8 + i % 100));
    if (!p)
      abort();
    p[0] = 1;
    ht_free(p);
  }
  if (!ht_malloc(LEAK_BYTES))
    abort();
  return 2 * (long long)rounds + 1;
}

/* execs path in the form how names; returns only when it failed (-1),
 * or -2 for an unknown form. */
static int exec_as(const char *how, const char *path, char **args, int nargs) {
  char *a[MAX_ARGS + 1] = {NULL};
  for (int i = 0; i < nargs && i < MAX_ARGS; i++)
    a[i] = args[i];
  if (strcmp(how, "v") == 0)
    return execv(path, a);
  if (strcmp(how, "vp") == 0)
    return execvp(path, a);
  if (strcmp(how, "ve") == 0)
    return execve(path, a, environ);
  if (strcmp(how, "l") == 0)
    return execl(path, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], (char *)NULL);
  if (strcmp(how, "lp") == 0)
    return execlp(path, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], (char *)NULL);
  if (strcmp(how, "le") == 0) /* the environment follows the first NULL */
    return nargs == 1   ? execle(path, a[0], (char *)NULL, environ)
           : nargs == 2 ? execle(path, a[0], a[1], (char *)NULL, environ)
                        : execle(path, a[0], a[1], a[2], (char *)NULL, environ);
  if (strcmp(how, "fd") == 0 || strcmp(how, "at") == 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return -1;
    int rc = strcmp(how, "fd") == 0 ? fexecve(fd, a, environ)
                                    : execveat(fd, "", a, environ, AT_EMPTY_PATH);
    int err = errno;
    close(fd);
    errno = err;
    return rc;
  }
  return -2;
}

/* A child's exec that failed: 126, as a shell says it. */
static int child_exec(const char *path, char **args, int nargs) {
  exec_as("v", path, args, nargs);
  _exit(126);
}

int main(int argc, char **argv) {
  rounds = argc >= 2 ? atol(argv[1]) : -1;
  if (rounds < 0 || (argc == 3 && strcmp(argv[2], "daemon") != 0) || argc - 4 > MAX_ARGS) {
    fprintf(stderr, "usage: exec_client ROUNDS [HOW PATH ARG...]\n");
    return 2;
  }
  const char *how = argc > 2 ? argv[2] : NULL, *path = argc > 3 ? argv[3] : NULL;
  char **args = argv + 4;
  int nargs = argc - 4;
  if (how && strcmp(how, "daemon") == 0) {
    printf("parent=%d parent_events=%lld\n", (int)getpid(), work());
    fflush(stdout);
    if (daemon(1, 1) != 0)
      return 1;
    printf("pid=%d events=%lld\n", (int)getpid(), work());
    return 0;
  }
  if (how && (strcmp(how, "fork-v") == 0 || strcmp(how, "vfork-v") == 0)) {
    int vf = how[0] == 'v';
    long long mine = work();
    fflush(stdout);
    pid_t child = vf ? vfork() : fork();
    if (child < 0)
      return 1;
    if (child == 0) {
      if (!vf) {
        printf("pid=%d events=%lld\n", (int)getpid(), work());
        fflush(stdout);
      }
      child_exec(path, args, nargs);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status))
      return 1;
    if (vf)
      mine += work();
    /* A vforked child runs on the parent's thread state: the library must
     * have left it as it was (cancellation on). */
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &cancel);
    printf("parent=%d parent_events=%lld cancel_on=%d\n", (int)getpid(), mine,
           cancel == PTHREAD_CANCEL_ENABLE);
    return WEXITSTATUS(status);
  }
  long long events = work();
  printf("pid=%d events=%lld\n", (int)getpid(), events);
  fflush(stdout);
  if (!how)
    return 0;
  int rc = exec_as(how, path, args, nargs);
  if (rc == -2) {
    fprintf(stderr, "exec_client: no exec form %s\n", how);
    return 2;
  }
  int err = errno;
  printf("failed=%d events_after=%lld\n", err, work());
  return 0;
}
