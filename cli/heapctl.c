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
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hctl.h"
#include "ht_proto.h"
#include "query.h"

#define EXIT_USAGE 2

typedef struct {
  const char *socket_path;
  const char *db_path;
  int json;
} globals_t;

typedef struct {
  const char *name;
  const char *args;
  const char *help;
} command_help_t;

static const command_help_t commands[] = {
    {"sessions", "", "list sessions: pid, program, start, duration, end state, events, lost"},
    {"leaks", "[-s SESSION] [--by site|type|caps|heap] [--min-bytes N] [--top N]",
     "blocks still live at the end of a session (default: the latest), grouped"},
    {"stats", "[-s SESSION]",
     "allocations, frees, reallocs, failures; current and peak bytes; per site"},
    {"status", "", "daemon health: uptime, sessions connected, events/s, queue, database"},
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

/* Builds the request of command cmd from its options (argv[0] is cmd). */
static cJSON *build_request(const command_help_t *cmd, int argc, char **argv, globals_t *g) {
  enum { O_SESSION = 's', O_BY = 1000, O_MIN, O_TOP, O_JSON, O_HELP };
  static const struct option opts[] = {{"session", required_argument, NULL, O_SESSION},
                                       {"by", required_argument, NULL, O_BY},
                                       {"min-bytes", required_argument, NULL, O_MIN},
                                       {"top", required_argument, NULL, O_TOP},
                                       {"json", no_argument, NULL, O_JSON},
                                       {"help", no_argument, NULL, O_HELP},
                                       {NULL, 0, NULL, 0}};
  int takes_session = strcmp(cmd->name, "leaks") == 0 || strcmp(cmd->name, "stats") == 0;
  int is_leaks = strcmp(cmd->name, "leaks") == 0;
  cJSON *req = cJSON_CreateObject();
  cJSON_AddStringToObject(req, "cmd", cmd->name);
  optind = 1;
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
    const char *bad = NULL;
    switch (o) {
    case O_SESSION:
      if (!takes_session)
        bad = "-s";
      else
        cJSON_AddNumberToObject(req, "session", parse_count("-s", optarg));
      break;
    case O_BY:
      if (!is_leaks)
        bad = "--by";
      else if (strcmp(optarg, "site") && strcmp(optarg, "type") && strcmp(optarg, "caps") &&
               strcmp(optarg, "heap")) {
        fprintf(stderr, "heapctl: --by takes site, type, caps or heap, not '%s'\n", optarg);
        exit(EXIT_USAGE);
      } else
        cJSON_AddStringToObject(req, "by", optarg);
      break;
    case O_MIN:
    case O_TOP:
      if (!is_leaks)
        bad = o == O_MIN ? "--min-bytes" : "--top";
      else
        cJSON_AddNumberToObject(req, o == O_MIN ? "min_bytes" : "top",
                                parse_count(o == O_MIN ? "--min-bytes" : "--top", optarg));
      break;
    case O_JSON:
      g->json = 1;
      break;
    case O_HELP:
      printf("usage: heapctl %s %s\n  %s\n", cmd->name, cmd->args, cmd->help);
      exit(0);
    default:
      fprintf(stderr, "heapctl %s: unknown or incomplete option '%s'\n", cmd->name,
              argv[optind - 1]);
      fprintf(stderr, "usage: heapctl %s %s\n", cmd->name, cmd->args);
      exit(EXIT_USAGE);
    }
    if (bad) {
      fprintf(stderr, "heapctl %s: %s does not apply to this command\nusage: heapctl %s %s\n",
              cmd->name, bad, cmd->name, cmd->args);
      exit(EXIT_USAGE);
    }
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
    ssize_t w = send(fd, (const char *)buf + put, n - put, MSG_NOSIGNAL);
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
  uint32_t body = (uint32_t)rh[0] | (uint32_t)rh[1] << 8 | (uint32_t)rh[2] << 16 |
                  (uint32_t)rh[3] << 24;
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

int main(int argc, char **argv) {
  globals_t g = {0};
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
    if (g.json) {
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
