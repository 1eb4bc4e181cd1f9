/* main.c - heaptraced's command line: options, defaults, backgrounding.
 *
 * Without --foreground the daemon forks; the child sets everything up
 * (database, socket) with stderr still on the terminal, so that a failure
 * is printed where the user sees it, and only then tells the parent it is
 * ready and moves its log to a file. The parent exits 0 once the socket
 * accepts connections, 1 if the child failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "htd.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: heaptraced [--socket PATH] [--db PATH] [--foreground]\n"
          "                  [--log-level error|warn|info|debug] [--log FILE] [--pidfile FILE]\n"
          "                  [--max-backlog MIB]\n"
          "\n"
          "Receives heap events from programs linked with libheaptrace and stores them\n"
          "in SQLite for heapctl.\n"
          "\n"
          "  --socket PATH   listen here (default $XDG_RUNTIME_DIR/heaptrace/heaptraced.sock,\n"
          "                  else /tmp/heaptrace-$UID/heaptraced.sock)\n"
          "  --db PATH       database (default $XDG_STATE_HOME/heaptrace/heaptrace.db,\n"
          "                  else ~/.local/state/heaptrace/heaptrace.db)\n"
          "  --foreground    stay attached; log to stderr\n"
          "  --log FILE      log file in the background (default: heaptraced.log beside the db)\n"
          "  --log-level L   error, warn, info (default) or debug\n"
          "  --pidfile FILE  write the daemon's pid here\n"
          "  --max-backlog MIB\n"
          "                  memory for what clients sent and is not stored yet (default %u,\n"
          "                  %u to %u); past it, clients wait until the daemon catches up\n"
          "  --version       print the version\n",
          HTD_BACKLOG_DEFAULT_MIB, HTD_BACKLOG_MIN_MIB, HTD_BACKLOG_MAX_MIB);
}

/* A whole number of MiB within the range --max-backlog accepts. */
static int parse_backlog(const char *s, size_t *bytes) {
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  char *end;
  unsigned long long mib = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || mib < HTD_BACKLOG_MIN_MIB || mib > HTD_BACKLOG_MAX_MIB ||
      mib > (SIZE_MAX >> 20))
    return -1;
  *bytes = (size_t)mib << 20;
  return 0;
}

static int write_pidfile(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -1;
  dprintf(fd, "%d\n", (int)getpid());
  close(fd);
  return 0;
}

/* Background: returns in the child (with *ready_fd set); the parent exits. */
static void daemonize(int *ready_fd, const char *log_path) {
  int fds[2];
  if (pipe(fds) != 0) {
    perror("heaptraced: pipe");
    exit(1);
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("heaptraced: fork");
    exit(1);
  }
  if (pid > 0) {
    close(fds[1]);
    char ok = 0;
    ssize_t n = read(fds[0], &ok, 1);
    if (n == 1 && ok == 1) {
      printf("heaptraced: running as pid %d, log %s\n", (int)pid, log_path);
      exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    exit(1);
  }
  close(fds[0]);
  setsid();
  *ready_fd = fds[1];
}

/* After setup succeeded: detach stdio, log to the file. */
static void detach_stdio(const char *log_path) {
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
  }
  dup2(log >= 0 ? log : null, STDERR_FILENO);
  if (null > 2)
    close(null);
  if (log > 2)
    close(log);
}

int main(int argc, char **argv) {
  static char sock[PATH_MAX], db[PATH_MAX], log_path[PATH_MAX];
  const char *pidfile = NULL;
  int foreground = 0;
  size_t backlog = (size_t)HTD_BACKLOG_DEFAULT_MIB << 20;
  enum {
    OPT_SOCKET = 1,
    OPT_DB,
    OPT_FG,
    OPT_LEVEL,
    OPT_LOG,
    OPT_PID,
    OPT_BACKLOG,
    OPT_VERSION,
    OPT_HELP
  };
  static const struct option opts[] = {{"socket", required_argument, NULL, OPT_SOCKET},
                                       {"db", required_argument, NULL, OPT_DB},
                                       {"foreground", no_argument, NULL, OPT_FG},
                                       {"log-level", required_argument, NULL, OPT_LEVEL},
                                       {"log", required_argument, NULL, OPT_LOG},
                                       {"pidfile", required_argument, NULL, OPT_PID},
                                       {"max-backlog", required_argument, NULL, OPT_BACKLOG},
                                       {"version", no_argument, NULL, OPT_VERSION},
                                       {"help", no_argument, NULL, OPT_HELP},
                                       {NULL, 0, NULL, 0}};
  int o;
  opterr = 0;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case OPT_SOCKET:
      snprintf(sock, sizeof sock, "%s", optarg);
      break;
    case OPT_DB:
      snprintf(db, sizeof db, "%s", optarg);
      break;
    case OPT_FG:
      foreground = 1;
      break;
    case OPT_LEVEL:
      if (htd_log_parse_level(optarg, &htd_log_level) != 0) {
        fprintf(stderr, "heaptraced: --log-level takes error, warn, info or debug, not '%s'\n",
                optarg);
        return 2;
      }
      break;
    case OPT_LOG:
      snprintf(log_path, sizeof log_path, "%s", optarg);
      break;
    case OPT_PID:
      pidfile = optarg;
      break;
    case OPT_BACKLOG:
      if (parse_backlog(optarg, &backlog) != 0) {
        fprintf(stderr, "heaptraced: --max-backlog takes a number of MiB from %u to %u, not '%s'\n",
                HTD_BACKLOG_MIN_MIB, HTD_BACKLOG_MAX_MIB, optarg);
        return 2;
      }
      break;
    case OPT_VERSION:
      printf("heaptraced %d.%d.%d\n", HT_VERSION_MAJOR, HT_VERSION_MINOR, HT_VERSION_PATCH);
      return 0;
    case OPT_HELP:
      usage(stdout);
      return 0;
    default:
      fprintf(stderr, "heaptraced: unknown or incomplete option '%s'\n", argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "heaptraced: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (!sock[0] && htd_default_socket(sock, sizeof sock) != 0) {
    fprintf(stderr, "heaptraced: no usable default socket path; give --socket PATH\n");
    return 2;
  }
  if (!db[0] && htd_default_db(db, sizeof db) != 0) {
    fprintf(stderr, "heaptraced: no usable default database path; give --db PATH\n");
    return 2;
  }
  if (!log_path[0]) {
    snprintf(log_path, sizeof log_path, "%s", db);
    char *slash = strrchr(log_path, '/');
    size_t at = slash ? (size_t)(slash - log_path + 1) : 0;
    snprintf(log_path + at, sizeof log_path - at, "heaptraced.log");
  }
  int ready[2] = {-1, -1};
  if (!foreground) {
    daemonize(&ready[1], log_path);
  } else if (pipe(ready) != 0) {
    ready[0] = ready[1] = -1;
  }
  if (pidfile && write_pidfile(pidfile) != 0) {
    fprintf(stderr, "heaptraced: cannot write pidfile %s: %s\n", pidfile, strerror(errno));
    return 1;
  }
  htd_options_t opt = {sock, db, foreground ? NULL : log_path, ready[1], backlog};
  int rc = htd_serve(&opt, foreground ? NULL : detach_stdio);
  if (pidfile)
    unlink(pidfile);
  if (ready[0] >= 0)
    close(ready[0]);
  return rc;
}
