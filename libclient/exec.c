/* exec.c - a program that replaces itself with exec ends its session
 * whole; one that daemonizes with daemon() loses nothing either.
 *
 * exec replaces the process image without running atexit: the flusher and
 * the rings go with it, and the events recorded since the last shipment
 * (up to a flush interval's) would be lost, counted nowhere, the session
 * cut off "disconnected". libheaptrace defines the exec family itself, so
 * that a program linked with it calls these: each ships everything and
 * ends the session clean, as the exit does (ht__transport_exec), then
 * calls the C library's own function. The program the exec starts, if
 * traced, has a session of its own (the same pid). An exec that fails
 * returns its error as before, and tracing goes on in a new session.
 *
 * The C library's functions are found when the library is loaded
 * (dlsym RTLD_NEXT), so that an exec in a vfork child or a signal
 * handler calls nothing that may take a lock. A program linked fully
 * statically has no next definition to find: there execve, execveat and
 * fexecve are the system calls, the others are built on them, and the
 * PATH-searching forms search PATH here (search_path) and run a script
 * without #! with /bin/sh, as the C library's do.
 * posix_spawn, system and popen exec in a child that runs no traced code:
 * they are not wrapped.
 *
 * daemon() forks and has the parent leave by _exit, which skips atexit:
 * the parent's last events would go with it. Everything is shipped first
 * (the daemon reads what is in the socket after the parent is gone); the
 * parent's session then ends "disconnected", as any _exit does, with
 * nothing lost, and the child goes on in a session of its own, as after
 * any fork.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"

extern char **environ;

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execvpe_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);

static execve_fn next_execve;
static execvpe_fn next_execvpe;
static fexecve_fn next_fexecve;
static execveat_fn next_execveat;
static int (*next_daemon)(int, int);

/* The next definition of name into *fn, a function pointer (copied: ISO C
 * has no conversion from dlsym's object pointer). */
static void find_one(void *fn, size_t size, const char *name) {
  void *p = dlsym(RTLD_NEXT, name);
  if (size == sizeof p)
    memcpy(fn, &p, sizeof p);
}

__attribute__((constructor)) static void find_next(void) {
  find_one(&next_execve, sizeof next_execve, "execve");
  find_one(&next_execvpe, sizeof next_execvpe, "execvpe");
  find_one(&next_fexecve, sizeof next_fexecve, "fexecve");
  find_one(&next_execveat, sizeof next_execveat, "execveat");
  find_one(&next_daemon, sizeof next_daemon, "daemon");
}

/* The C library's functions, or the system calls where there is none. */
static int call_execve(const char *path, char *const argv[], char *const envp[]) {
  if (next_execve)
    return next_execve(path, argv, envp);
  return (int)syscall(SYS_execve, path, argv, envp);
}

static int call_execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                         int flags) {
  if (next_execveat)
    return next_execveat(dirfd, path, argv, envp, flags);
  return (int)syscall(SYS_execveat, dirfd, path, argv, envp, flags);
}

/* Room for n pointers without malloc, which a vfork child must not call:
 * stack (LIST_ON_STACK of them) when they fit, else pages of their own,
 * whose length goes to *map_bytes (0 for the stack). NULL when no pages
 * can be had. */
#define LIST_ON_STACK 64
static char **pointer_room(char **stack, size_t n, size_t *map_bytes) {
  *map_bytes = 0;
  if (n <= LIST_ON_STACK)
    return stack;
  void *m =
      mmap(NULL, n * sizeof(char *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  *map_bytes = n * sizeof(char *);
  return m;
}

/* Gives pointer_room's pages back; errno is kept. */
static void pointer_room_free(char **room, size_t map_bytes) {
  if (map_bytes) {
    int err = errno;
    munmap(room, map_bytes);
    errno = err;
  }
}

/* A file found by the PATH-searching forms that is no executable (ENOEXEC)
 * is a shell script without #!: POSIX has it run as `/bin/sh path arg...`
 * (argv[0] is path's place). Returns only when that failed. */
static int exec_script(const char *path, char *const argv[], char *const envp[]) {
  size_t n = 0;
  while (argv[n])
    n++;
  char *stack[LIST_ON_STACK], **sh;
  size_t map_bytes, count = (n > 1 ? n - 1 : 0) + 3; /* sh, path, the rest, NULL */
  if (!(sh = pointer_room(stack, count, &map_bytes)))
    return -1;
  sh[0] = (char *)"/bin/sh";
  sh[1] = (char *)path;
  for (size_t i = 1; i < n; i++)
    sh[i + 1] = argv[i];
  sh[count - 1] = NULL;
  call_execve("/bin/sh", sh, envp);
  pointer_room_free(sh, map_bytes);
  return -1;
}

/* execvpe's search of PATH, for a program linked fully statically, whose
 * own execvpe this file's replaced: each directory of PATH (default
 * /bin:/usr/bin; an empty one is the working directory) in turn, as
 * POSIX has it - a file not found there, or in a directory that cannot
 * be searched, sends the search on; any other error ends it; EACCES is
 * reported if no directory had the file. A file found that is no
 * executable (ENOEXEC: a script without #!) is run with the shell
 * (exec_script), as glibc's execvp does. */
static int search_path(const char *file, char *const argv[], char *const envp[]) {
  if (!*file) {
    errno = ENOENT;
    return -1;
  }
  const char *dirs = getenv("PATH");
  if (!dirs)
    dirs = "/bin:/usr/bin";
  size_t flen = strlen(file);
  int denied = 0;
  for (const char *d = dirs;; d++) {
    const char *end = strchrnul(d, ':');
    size_t dlen = (size_t)(end - d);
    char path[PATH_MAX];
    if (dlen + 1 + flen < sizeof path) {
      memcpy(path, d, dlen);
      path[dlen] = '/';
      memcpy(path + (dlen ? dlen + 1 : 0), file, flen + 1);
      call_execve(path, argv, envp);
      if (errno == ENOEXEC)
        return exec_script(path, argv, envp);
      if (errno == EACCES)
        denied = 1;
      else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV &&
               errno != ETIMEDOUT)
        return -1;
    }
    if (!*end)
      break;
    d = end;
  }
  errno = denied ? EACCES : ENOENT;
  return -1;
}

static int call_execvpe(const char *file, char *const argv[], char *const envp[]) {
  if (next_execvpe)
    return next_execvpe(file, argv, envp);
  if (!strchr(file, '/'))
    return search_path(file, argv, envp);
  if (call_execve(file, argv, envp) != 0 && errno == ENOEXEC)
    return exec_script(file, argv, envp);
  return -1;
}

static int call_fexecve(int fd, char *const argv[], char *const envp[]) {
  if (next_fexecve)
    return next_fexecve(fd, argv, envp);
  return call_execveat(fd, "", argv, envp, AT_EMPTY_PATH);
}

/* One exec, in whichever form: the path or file name (BY_FILE searches
 * PATH), or the descriptor (BY_FD, fexecve) or directory and flags (BY_AT,
 * execveat). */
typedef struct {
  enum { BY_PATH, BY_FILE, BY_FD, BY_AT } form;
  int dirfd, flags;
  const char *path;
  char *const *argv, *const *envp;
} exec_t;

/* The exec, around the session's end: it returns only when it failed. */
static int run_exec(exec_t x) {
  int ended = ht__transport_exec();
  int rc;
  switch (x.form) {
  case BY_PATH:
    rc = call_execve(x.path, x.argv, x.envp);
    break;
  case BY_FILE:
    rc = call_execvpe(x.path, x.argv, x.envp);
    break;
  case BY_FD:
    rc = call_fexecve(x.dirfd, x.argv, x.envp);
    break;
  default:
    rc = call_execveat(x.dirfd, x.path, x.argv, x.envp, x.flags);
    break;
  }
  if (ended)
    ht__transport_exec_failed();
  return rc;
}

HT_EXTERN int execve(const char *path, char *const argv[], char *const envp[]) {
  return run_exec((exec_t){.form = BY_PATH, .path = path, .argv = argv, .envp = envp});
}

HT_EXTERN int execv(const char *path, char *const argv[]) {
  return run_exec((exec_t){.form = BY_PATH, .path = path, .argv = argv, .envp = environ});
}

HT_EXTERN int execvpe(const char *file, char *const argv[], char *const envp[]) {
  return run_exec((exec_t){.form = BY_FILE, .path = file, .argv = argv, .envp = envp});
}

HT_EXTERN int execvp(const char *file, char *const argv[]) {
  return run_exec((exec_t){.form = BY_FILE, .path = file, .argv = argv, .envp = environ});
}

HT_EXTERN int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags) {
  return run_exec((exec_t){BY_AT, dirfd, flags, path, argv, envp});
}

HT_EXTERN int fexecve(int fd, char *const argv[], char *const envp[]) {
  return run_exec((exec_t){.form = BY_FD, .dirfd = fd, .argv = argv, .envp = envp});
}

/* daemon(3), for a program linked fully statically, whose own daemon this
 * file replaced: the parent leaves, the child leads a session of its own,
 * in / unless nochdir, its standard descriptors on /dev/null unless
 * noclose. */
static int own_daemon(int nochdir, int noclose) {
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid > 0)
    _exit(0);
  if (setsid() < 0)
    return -1;
  if (!nochdir && chdir("/") != 0)
    return -1;
  if (!noclose) {
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0)
      return -1;
    for (int std = 0; std <= 2; std++)
      if (dup2(fd, std) < 0)
        return -1;
    if (fd > 2)
      close(fd);
  }
  return 0;
}

HT_EXTERN int daemon(int nochdir, int noclose) {
  ht_flush();
  return next_daemon ? next_daemon(nochdir, noclose) : own_daemon(nochdir, noclose);
}

/* ======================================================================
 * The list forms (execl, execlp, execle): the arguments gathered into an
 * array (pointer_room).
 * ==================================================================== */

/* Execs x with arg0 and the arguments after it (ap), up to the NULL that
 * ends them, as its argv; with with_env, the pointer after that NULL is
 * its environment (execle). Returns only when the exec failed (-1, errno
 * set), its pages given back. */
static int exec_list(exec_t x, const char *arg0, va_list ap, int with_env) {
  va_list again;
  va_copy(again, ap);
  size_t n = 0; /* arguments, arg0 among them */
  if (arg0)
    for (n = 1; va_arg(again, char *) != NULL; n++) {
    }
  va_end(again);
  char *stack[LIST_ON_STACK], **argv;
  size_t map_bytes;
  if (!(argv = pointer_room(stack, n + 1, &map_bytes)))
    return -1;
  argv[0] = (char *)arg0;
  for (size_t i = 1; i < n; i++)
    argv[i] = va_arg(ap, char *);
  argv[n] = NULL;
  if (arg0)
    (void)va_arg(ap, char *); /* the NULL */
  if (with_env)
    x.envp = va_arg(ap, char *const *);
  x.argv = argv;
  int rc = run_exec(x);
  pointer_room_free(argv, map_bytes);
  return rc;
}

HT_EXTERN int execl(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int rc = exec_list((exec_t){.form = BY_PATH, .path = path, .envp = environ}, arg, ap, 0);
  va_end(ap);
  return rc;
}

HT_EXTERN int execlp(const char *file, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int rc = exec_list((exec_t){.form = BY_FILE, .path = file, .envp = environ}, arg, ap, 0);
  va_end(ap);
  return rc;
}

HT_EXTERN int execle(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  int rc = exec_list((exec_t){.form = BY_PATH, .path = path}, arg, ap, 1);
  va_end(ap);
  return rc;
}
