/* config.c - HEAPTRACE_* options, read once without allocating.
 *
 * Every option has a default; a value that does not parse warns once on
 * stderr and keeps the default, so a typo never stops the application.
 * getenv() and the copies below touch no heap memory, which matters
 * because this runs inside the first traced allocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

void ht__warn(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  size_t len = (size_t)n < sizeof line - 2 ? (size_t)n : sizeof line - 2;
  line[len++] = '\n';
  int cancel = ht__cancel_off(); /* callers may hold a lock */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
  ht__cancel_restore(cancel);
}

static int copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap)
    return HT_EINVAL;
  memcpy(dst, src, n + 1);
  return 0;
}

int ht__default_socket_path(char *out, size_t cap) {
  const char *rt = getenv("XDG_RUNTIME_DIR");
  int n;
  if (rt && rt[0] == '/')
    n = snprintf(out, cap, "%s/heaptrace/heaptraced.sock", rt);
  else
    n = snprintf(out, cap, "/tmp/heaptrace-%u/heaptraced.sock", (unsigned)getuid());
  return n > 0 && (size_t)n < cap ? 0 : HT_EINVAL;
}

/* Booleans accept 1/0, yes/no, true/false, on/off. Returns -1 if none. */
static int parse_bool(const char *v) {
  static const char *const yes[] = {"1", "yes", "true", "on"};
  static const char *const no[] = {"0", "no", "false", "off", ""};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    if (strcasecmp(v, yes[i]) == 0)
      return 1;
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    if (strcasecmp(v, no[i]) == 0)
      return 0;
  return -1;
}

/* A relative socket path is taken from the working directory the program
 * has now: made absolute, so that a program that changes its directory
 * later - a daemon's chdir("/") - still reconnects to the daemon it
 * started with, and leaves its account (transport.c) beside that daemon's
 * socket. When the absolute path does not fit, the relative one is kept,
 * and said. */
static void socket_from_here(ht_config_t *cfg) {
  char cwd[sizeof cfg->socket_path], rel[sizeof cfg->socket_path], why[80];
  memcpy(rel, cfg->socket_path, sizeof rel);
  const char *r = rel;
  while (r[0] == '.' && r[1] == '/')
    r += 2 + strspn(r + 2, "/");
  const char *here = getcwd(cwd, sizeof cwd);
  if (!here && errno != ERANGE)
    snprintf(why, sizeof why, "the working directory cannot be read: %s", strerror(errno));
  else if (!here || snprintf(cfg->socket_path, sizeof cfg->socket_path, "%s/%s",
                             strcmp(cwd, "/") == 0 ? "" : cwd, r) >= (int)sizeof cfg->socket_path)
    snprintf(why, sizeof why, "with the working directory it is longer than %zu bytes",
             sizeof cfg->socket_path - 1);
  else
    return;
  memcpy(cfg->socket_path, rel, sizeof rel);
  ht__warn("heaptrace: HEAPTRACE_SOCKET=%s is relative and is kept so (%s): the program reaches "
           "the daemon only while its working directory is this one",
           rel, why);
}

void ht__config_load(ht_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->mode = HT_MODE_BLOCK;

  const char *v = getenv("HEAPTRACE_DISABLE");
  if (v) {
    int b = parse_bool(v);
    if (b < 0)
      ht__warn("heaptrace: HEAPTRACE_DISABLE=%s is not a boolean (1/0, yes/no); "
               "tracing stays on",
               v);
    else
      cfg->disabled = b;
  }

  v = getenv("HEAPTRACE_MODE");
  if (v) {
    if (strcmp(v, "drop") == 0)
      cfg->mode = HT_MODE_DROP;
    else if (strcmp(v, "block") != 0)
      ht__warn("heaptrace: HEAPTRACE_MODE=%s is neither 'block' nor 'drop'; "
               "using 'block' (lossless)",
               v);
  }

  v = getenv("HEAPTRACE_APP");
  if (v && copy_str(cfg->app, sizeof cfg->app, v) != 0)
    ht__warn("heaptrace: HEAPTRACE_APP is longer than %zu bytes; ignored", sizeof cfg->app - 1);

  v = getenv("HEAPTRACE_SOCKET");
  if (v && v[0] != '\0') {
    if (copy_str(cfg->socket_path, sizeof cfg->socket_path, v) == 0) {
      if (v[0] != '/')
        socket_from_here(cfg);
      return;
    }
    ht__warn("heaptrace: HEAPTRACE_SOCKET is longer than %zu bytes; using the "
             "default socket",
             sizeof cfg->socket_path - 1);
  }
  if (ht__default_socket_path(cfg->socket_path, sizeof cfg->socket_path) != 0)
    cfg->socket_path[0] = '\0';
}
