/* paths.c - where heaptraced puts its socket and database by default.
 *
 * Socket: $XDG_RUNTIME_DIR/heaptrace/heaptraced.sock, else
 * /tmp/heaptrace-$UID/heaptraced.sock (the client computes the same path).
 * Database: $XDG_STATE_HOME/heaptrace/heaptrace.db, else
 * ~/.local/state/heaptrace/heaptrace.db.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "htd.h"

static int fits(int n, size_t cap) {
  return n > 0 && (size_t)n < cap ? 0 : -1;
}

int htd_default_socket(char *out, size_t cap) {
  const char *rt = getenv("XDG_RUNTIME_DIR");
  if (rt && rt[0] == '/')
    return fits(snprintf(out, cap, "%s/heaptrace/heaptraced.sock", rt), cap);
  return fits(snprintf(out, cap, "/tmp/heaptrace-%u/heaptraced.sock", (unsigned)getuid()), cap);
}

int htd_default_db(char *out, size_t cap) {
  const char *st = getenv("XDG_STATE_HOME");
  if (st && st[0] == '/')
    return fits(snprintf(out, cap, "%s/heaptrace/heaptrace.db", st), cap);
  const char *home = getenv("HOME");
  if (!home || home[0] != '/') {
    struct passwd *pw = getpwuid(getuid());
    home = pw ? pw->pw_dir : NULL;
  }
  if (!home)
    return -1;
  return fits(snprintf(out, cap, "%s/.local/state/heaptrace/heaptrace.db", home), cap);
}

int htd_mkdir_parent(const char *path, unsigned mode) {
  char dir[PATH_MAX];
  size_t n = strlen(path);
  if (n >= sizeof dir) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(dir, path, n + 1);
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return 0;
  *slash = '\0';
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, (mode_t)mode) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  if (mkdir(dir, (mode_t)mode) != 0 && errno != EEXIST)
    return -1;
  return 0;
}
