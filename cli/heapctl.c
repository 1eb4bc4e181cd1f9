/* heapctl.c - the heaptrace command line: asks heaptraced, or reads a
 * database file offline, and prints a table or JSON.
 *
 *   heapctl [--socket PATH | --db FILE] [--json] COMMAND [options]
 *
 * A command becomes one JSON request. With --db the request runs here,
 * through the same query code as the daemon's; otherwise it is sent on the
 * daemon's socket as a CTL_REQUEST frame and the reply read back. Exit
 * status: 0 success, 1 a failed check, 2 usage or connection errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hctl.h"
#include "ht_proto.h"
#include "peer.h"
#include "query.h"

#define EXIT_USAGE 2

typedef struct {
  const char *socket_path;
  const char *db_path;
  const char *output; /* export -o */
  int json;
} globals_t;

typedef struct {
  const char *name;
  const char *args;
  const char *help;
  unsigned opts;
} command_help_t;

/* Which options a command takes: one flag per option. */
enum {
  OPT_SESSION = 1 << 0,
  OPT_BY_GROUP = 1 << 1,
  OPT_MIN = 1 << 2,
  OPT_TOP = 1 << 3,
  OPT_HEAP = 1 << 4,
  OPT_CAPS = 1 << 5,
  OPT_WINDOW = 1 << 6,
  OPT_BY_TOP = 1 << 7,
  OPT_LIMIT = 1 << 8,
  OPT_STEP = 1 << 9,
  OPT_FROM = 1 << 10,
  OPT_OUTPUT = 1 << 11,
  OPT_TWO_SESSIONS = 1 << 12,
};

static const command_help_t commands[] = {
    {"sessions", "", "sessions: pid, program, start, duration, end state, events, lost", 0},
    {"leaks", "[-s SESSION] [--by site|type|caps|heap] [--min-bytes N] [--top N]",
     "blocks live at the end of a session (default: the latest), grouped",
     OPT_SESSION | OPT_BY_GROUP | OPT_MIN | OPT_TOP},
    {"stats", "[-s SESSION]",
     "allocations, frees, reallocs, failures; current and peak; per caps, heap, type, site",
     OPT_SESSION},
    {"lwm", "[-s SESSION] [--heap H] [--caps MASK] [--since MS --until MS]",
     "low-water marks: per heap the minimum free and when; per caps the minimum of the sum",
     OPT_SESSION | OPT_HEAP | OPT_CAPS | OPT_WINDOW},
    {"frag", "[-s SESSION] [--heap H]",
     "fragmentation per heap: free, largest free block, free blocks, now and at its worst",
     OPT_SESSION | OPT_HEAP},
    {"top", "[-s SESSION] [--by bytes|count|temporary] [--limit N]", "the hottest call sites",
     OPT_SESSION | OPT_BY_TOP | OPT_LIMIT},
    {"timeline", "[-s SESSION] [--heap H] [--step MS]", "in use and free over time, per heap",
     OPT_SESSION | OPT_HEAP | OPT_STEP},
    {"diff", "S1 S2", "per-site differences in leaks and peak between two sessions",
     OPT_TWO_SESSIONS},
    {"events", "[-s SESSION] [--from N] [--limit N]", "raw events in time order",
     OPT_SESSION | OPT_FROM | OPT_LIMIT},
    {"export", "[-s SESSION] [-o FILE|-]",
     "one JSON report (schemas/report.schema.json), written atomically", OPT_SESSION | OPT_OUTPUT},
    {"status", "", "daemon health: uptime, sessions connected, events/s, queue, buffers, database",
     0},
};

static void usage(FILE *to) {
  fprintf(to, "usage: heapctl [--socket PATH | --db FILE] [--json] COMMAND [options]\n\n"
              "Asks heaptraced (on its default socket, or --socket PATH) or reads a\n"
              "database file offline (--db FILE).\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    fprintf(to, "  %-9s %s\n", commands[i].name, commands[i].help);
  fprintf(to, "\n'heapctl COMMAND --help' shows a command's options.\n"
              "exit status: 0 success, 1 a failed check, 2 usage or connection error\n");
}

static const command_help_t *find_command(const char *name) {
  for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  return NULL;
}

/* Parses a non-negative integer option; exits with a message if it is not. */
static double parse_count(const char *opt, const char *v) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-') {
    fprintf(stderr, "heapctl: %s takes a non-negative integer, not '%s'\n", opt, v);
    exit(EXIT_USAGE);
  }
  return (double)n;
}

/* Parses a caps mask: a number (0x1006) or names joined by '|'
 * (DEFAULT|8BIT). Exits with a message if it is neither. */
static double parse_caps(const char *v) {
  static const char *const names[] = {
      "EXEC", "32BIT", "8BIT",   "DMA",      "PID2",    "PID3",      "PID4",      "PID5",
      "PID6", "PID7",  "SPIRAM", "INTERNAL", "DEFAULT", "IRAM_8BIT", "RETENTION", "RTCRAM"};
  char *end;
  errno = 0;
  unsigned long n = strtoul(v, &end, 0);
  if (!errno && end != v && !*end && n <= UINT32_MAX)
    return (double)n;
  uint32_t mask = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", v);
  for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
    const char *name = strncasecmp(tok, "MALLOC_CAP_", 11) == 0 ? tok + 11 : tok;
    size_t i = 0;
    while (i < sizeof names / sizeof *names && strcasecmp(name, names[i]) != 0)
      i++;
    if (i == sizeof names / sizeof *names) {
      fprintf(stderr,
              "heapctl: --caps: '%s' is not a capability (EXEC, 32BIT, 8BIT, DMA, "
              "SPIRAM, INTERNAL, DEFAULT, ...) nor a number\n",
              tok);
      exit(EXIT_USAGE);
    }
    mask |= 1u << i;
  }
  return (double)mask;
}

static int one_of(const char *v, const char *const *set) {
  for (; *set; set++)
    if (strcmp(v, *set) == 0)
      return 1;
  return 0;
}

/* Builds the request of command cmd from its options (argv[0] is cmd). */
static cJSON *build_request(const command_help_t *cmd, int argc, char **argv, globals_t *g) {
  enum {
    O_SESSION = 's',
    O_OUTPUT = 'o',
    O_BY = 1000,
    O_MIN,
    O_TOP,
    O_HEAP,
    O_CAPS,
    O_SINCE,
    O_UNTIL,
    O_LIMIT,
    O_STEP,
    O_FROM,
    O_JSON,
    O_HELP
  };
  static const struct option opts[] = {{"session", required_argument, NULL, O_SESSION},
                                       {"by", required_argument, NULL, O_BY},
                                       {"min-bytes", required_argument, NULL, O_MIN},
                                       {"top", required_argument, NULL, O_TOP},
                                       {"heap", required_argument, NULL, O_HEAP},
                                       {"caps", required_argument, NULL, O_CAPS},
                                       {"since", required_argument, NULL, O_SINCE},
                                       {"until", required_argument, NULL, O_UNTIL},
                                       {"limit", required_argument, NULL, O_LIMIT},
                                       {"step", required_argument, NULL, O_STEP},
                                       {"from", required_argument, NULL, O_FROM},
                                       {"output", required_argument, NULL, O_OUTPUT},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, O_HELP},
                                       {NULL, 0, NULL, 0}};
  static const char *const groups[] = {"site", "type", "caps", "heap", NULL};
  static const char *const tops[] = {"bytes", "count", "temporary", NULL};
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "cmd", cmd->name);
  optind = 1;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "s:o:", opts, NULL)) != -1) {
    unsigned need = 0;
    const char *key = NULL;
    char flag[32] = "?";
    for (const struct option *p = opts; p->name; p++) {
      if (p->val != o)
        continue;
      if (o < 256)
        snprintf(flag, sizeof flag, "-%c", o);
      else
        snprintf(flag, sizeof flag, "--%s", p->name);
    }
    switch (o) {
    case O_SESSION:
      need = OPT_SESSION, key = "session";
      break;
    case O_BY:
      need = cmd->opts & OPT_BY_TOP ? OPT_BY_TOP : OPT_BY_GROUP, key = "by";
      break;
    case O_MIN:
      need = OPT_MIN, key = "min_bytes";
      break;
    case O_TOP:
      need = OPT_TOP, key = "top";
      break;
    case O_HEAP:
      need = OPT_HEAP, key = "heap";
      break;
    case O_CAPS:
      need = OPT_CAPS, key = "caps";
      break;
    case O_SINCE:
      need = OPT_WINDOW, key = "since_ms";
      break;
    case O_UNTIL:
      need = OPT_WINDOW, key = "until_ms";
      break;
    case O_LIMIT:
      need = OPT_LIMIT, key = "limit";
      break;
    case O_STEP:
      need = OPT_STEP, key = "step_ms";
      break;
    case O_FROM:
      need = OPT_FROM, key = "from";
      break;
    case O_OUTPUT:
      need = OPT_OUTPUT;
      break;
    case O_JSON:
      g->json = 1;
      continue;
    case O_HELP:
      printf("usage: heapctl %s %s\n  %s\n", cmd->name, cmd->args, cmd->help);
      exit(0);
    default:
      fprintf(stderr, "heapctl %s: unknown or incomplete option '%s'\nusage: heapctl %s %s\n",
              cmd->name, argv[optind - 1], cmd->name, cmd->args);
      exit(EXIT_USAGE);
    }
    if (!(cmd->opts & need)) {
      fprintf(stderr, "heapctl %s: %s does not apply to this command\nusage: heapctl %s %s\n",
              cmd->name, flag, cmd->name, cmd->args);
      exit(EXIT_USAGE);
    }
    if (o == O_OUTPUT) {
      g->output = optarg;
    } else if (o == O_BY) {
      if (!one_of(optarg, need == OPT_BY_TOP ? tops : groups)) {
        fprintf(stderr, "heapctl %s: --by takes %s, not '%s'\n", cmd->name,
                need == OPT_BY_TOP ? "bytes, count or temporary" : "site, type, caps or heap",
                optarg);
        exit(EXIT_USAGE);
      }
      cJSON_AddStringToObject(req, key, optarg);
    } else if (o == O_HEAP) {
      cJSON_AddStringToObject(req, key, optarg);
    } else if (o == O_CAPS) {
      cJSON_AddNumberToObject(req, key, parse_caps(optarg));
    } else {
      cJSON_AddNumberToObject(req, key, parse_count(flag, optarg));
    }
  }
  if (cmd->opts & OPT_TWO_SESSIONS) {
    if (argc - optind != 2) {
      fprintf(stderr, "heapctl %s: needs two session ids\nusage: heapctl %s %s\n", cmd->name,
              cmd->name, cmd->args);
      exit(EXIT_USAGE);
    }
    cJSON_AddNumberToObject(req, "session1", parse_count("S1", argv[optind]));
    cJSON_AddNumberToObject(req, "session2", parse_count("S2", argv[optind + 1]));
    optind += 2;
  }
  if (optind < argc) {
    fprintf(stderr, "heapctl %s: unexpected argument '%s'\n", cmd->name, argv[optind]);
    exit(EXIT_USAGE);
  }
  return req;
}

/* ======================================================================
 * Getting the reply
 * ==================================================================== */

static int read_full(int fd, void *buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  for (size_t put = 0; put < n;) {
    ssize_t w = write(fd, (const char *)buf + put, n - put);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    put += (size_t)w;
  }
  return 0;
}

static cJSON *ask_daemon(const char *path, const cJSON *req) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return htq_error(EXIT_USAGE, "socket path %s is too long", path);
  memcpy(sa.sun_path, path, strlen(path) + 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int err = errno;
    if (fd >= 0)
      close(fd);
    return htq_error(EXIT_USAGE,
                     "cannot reach heaptraced at %s (%s); start it with 'heaptraced', or read "
                     "a database offline with 'heapctl --db FILE'",
                     path, strerror(err));
  }
  int pid = ht_peer_pid(fd);
  if (ht_pid_exiting(pid)) { /* it would never answer (proto/peer.h) */
    close(fd);
    return htq_error(EXIT_USAGE,
                     "heaptraced at %s (pid %d) was killed and is still exiting; start a new "
                     "one, or read a database offline with 'heapctl --db FILE'",
                     path, pid);
  }
  char *text = cJSON_PrintUnformatted(req);
  size_t n = text ? strlen(text) : 0;
  uint8_t head[5] = {(uint8_t)(n + 1), (uint8_t)((n + 1) >> 8), (uint8_t)((n + 1) >> 16),
                     (uint8_t)((n + 1) >> 24), HT_REC_CTL_REQUEST};
  cJSON *reply = NULL;
  if (!text || write_full(fd, head, sizeof head) != 0 || write_full(fd, text, n) != 0) {
    reply = htq_error(EXIT_USAGE, "sending the request to heaptraced at %s failed", path);
    goto out;
  }
  uint8_t rh[5];
  if (read_full(fd, rh, sizeof rh) != 0) {
    reply = htq_error(EXIT_USAGE, "heaptraced at %s closed the connection without a reply", path);
    goto out;
  }
  uint32_t body =
      (uint32_t)rh[0] | (uint32_t)rh[1] << 8 | (uint32_t)rh[2] << 16 | (uint32_t)rh[3] << 24;
  if (body < 1 || body > HT_CTL_MAX_REPLY || rh[4] != HT_REC_CTL_REPLY) {
    reply = htq_error(EXIT_USAGE, "heaptraced at %s sent a malformed reply", path);
    goto out;
  }
  char *json = malloc(body);
  if (!json || read_full(fd, json, body - 1) != 0) {
    free(json);
    reply = htq_error(EXIT_USAGE, "the reply of heaptraced at %s was cut short", path);
    goto out;
  }
  json[body - 1] = '\0';
  reply = cJSON_Parse(json);
  free(json);
  if (!reply)
    reply = htq_error(EXIT_USAGE, "heaptraced at %s sent a reply that is not JSON", path);
out:
  free(text);
  close(fd);
  return reply;
}

static cJSON *ask_database(const char *path, const cJSON *req) {
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
  if (strcmp(cmd->valuestring, "status") == 0)
    return htq_error(EXIT_USAGE, "'status' asks the daemon; it has no meaning with --db");
  sqlite3 *db;
  char err[1024];
  if (htq_open(path, &db, err, sizeof err) != 0)
    return htq_error(EXIT_USAGE, "%s", err);
  cJSON *reply = htq_execute(db, req);
  sqlite3_close(db);
  return reply;
}

/* Writes text to path atomically: a temporary file beside it, fsync'd,
 * renamed over it. A symbolic link is followed (the file it names is
 * replaced, not the link); what is not a regular file -- a FIFO, a device
 * such as /dev/null -- is written into directly, never replaced. Returns 0
 * or -1 with errno set. */
static int write_atomically(const char *path, const char *text) {
  size_t len = strlen(text);
  struct stat sb;
  char target[4096];
  if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
    if (S_ISDIR(sb.st_mode)) {
      errno = EISDIR;
      return -1;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
      return -1;
    int ok = write_full(fd, text, len) == 0 && write_full(fd, "\n", 1) == 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return ok ? 0 : -1;
  }
  if (realpath(path, target) != NULL)
    path = target; /* an existing file, through any links */
  char tmp[4200];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = mkstemp(tmp);
  if (fd < 0)
    return -1;
  int ok = write_full(fd, text, len) == 0 && write_full(fd, "\n", 1) == 0 && fsync(fd) == 0;
  int saved = errno;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    saved = ok ? errno : saved;
    unlink(tmp);
    errno = saved;
    return -1;
  }
  return 0;
}

/* export: the report goes to a file (atomically) or, with -o -, stdout. */
static int write_report(const globals_t *g, const cJSON *result) {
  char *text = cJSON_Print(result);
  if (!text) {
    fprintf(stderr, "heapctl: out of memory printing the report\n");
    return 1;
  }
  char name[64];
  const char *path = g->output;
  if (!path) {
    const cJSON *ses = cJSON_GetObjectItemCaseSensitive(result, "session");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ses, "id");
    snprintf(name, sizeof name, "heaptrace-session-%.0f.json",
             cJSON_IsNumber(id) ? id->valuedouble : 0);
    path = name;
  }
  int status = 0;
  if (strcmp(path, "-") == 0) {
    printf("%s\n", text);
  } else if (write_atomically(path, text) != 0) {
    fprintf(stderr, "heapctl: cannot write %s: %s\n", path, strerror(errno));
    status = EXIT_USAGE;
  } else {
    fprintf(stderr, "heapctl: wrote %s (%zu bytes)\n", path, strlen(text) + 1);
  }
  cJSON_free(text);
  return status;
}

int main(int argc, char **argv) {
  globals_t g = {0};
  signal(SIGPIPE, SIG_IGN); /* a daemon that hangs up is an error return */
  static char sock[108];
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if ((!strcmp(a, "--socket") || !strcmp(a, "--db")) && i + 1 < argc) {
      *(a[2] == 's' ? &g.socket_path : &g.db_path) = argv[++i];
    } else if (!strcmp(a, "--json")) {
      g.json = 1;
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--version")) {
      printf("heapctl %d.%d.%d\n", HT_VERSION_MAJOR, HT_VERSION_MINOR, HT_VERSION_PATCH);
      return 0;
    } else {
      fprintf(stderr, "heapctl: unknown or incomplete option '%s'\n\n", a);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (g.socket_path && g.db_path) {
    fprintf(stderr, "heapctl: give --socket or --db, not both\n");
    return EXIT_USAGE;
  }
  const command_help_t *cmd = find_command(argv[i]);
  if (!cmd) {
    fprintf(stderr, "heapctl: unknown command '%s'; 'heapctl --help' lists them\n", argv[i]);
    return EXIT_USAGE;
  }
  cJSON *req = build_request(cmd, argc - i, argv + i, &g);
  if (!g.db_path && !g.socket_path) {
    const char *env = getenv("HEAPTRACE_SOCKET");
    if (env && env[0])
      g.socket_path = env;
    else {
      const char *rt = getenv("XDG_RUNTIME_DIR");
      if (rt && rt[0] == '/')
        snprintf(sock, sizeof sock, "%s/heaptrace/heaptraced.sock", rt);
      else
        snprintf(sock, sizeof sock, "/tmp/heaptrace-%u/heaptraced.sock", (unsigned)getuid());
      g.socket_path = sock;
    }
  }
  cJSON *reply = g.db_path ? ask_database(g.db_path, req) : ask_daemon(g.socket_path, req);
  cJSON_Delete(req);
  int status = 0;
  if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"))) {
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(reply, "code");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");
    fprintf(stderr, "heapctl: %s\n", cJSON_IsString(err) ? err->valuestring : "request failed");
    status = cJSON_IsNumber(code) ? (int)code->valuedouble : EXIT_USAGE;
  } else {
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(reply, "result");
    if (strcmp(cmd->name, "export") == 0) {
      status = write_report(&g, result);
    } else if (g.json) {
      char *text = cJSON_Print(result);
      printf("%s\n", text ? text : "null");
      cJSON_free(text);
    } else {
      hctl_render(stdout, cmd->name, result);
    }
  }
  cJSON_Delete(reply);
  return status;
}
