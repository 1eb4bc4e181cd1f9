/* left.c - taking the accounts clients left beside the socket (left.h). */
#define _GNU_SOURCE
#include "left.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "htd.h"

/* Reads the whole of the account at name in directory dir (opened as dfd)
 * into buf (HTD_LEFT_MAX bytes); returns its length, or -1 with why
 * filled when it is not one to take. */
static ssize_t read_account(int dfd, const char *name, uint8_t *buf, char *why, size_t whylen) {
  int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whylen, "%s", strerror(errno));
    return -1;
  }
  struct stat sb;
  ssize_t len = -1;
  if (fstat(fd, &sb) != 0)
    snprintf(why, whylen, "%s", strerror(errno));
  else if (!S_ISREG(sb.st_mode))
    snprintf(why, whylen, "not a regular file");
  else if (sb.st_uid != geteuid())
    snprintf(why, whylen, "owned by uid %u, not this daemon's", (unsigned)sb.st_uid);
  else if (sb.st_size > (off_t)HTD_LEFT_MAX)
    snprintf(why, whylen, "%lld bytes, more than an account's %u", (long long)sb.st_size,
             HTD_LEFT_MAX);
  else
    len = 0;
  while (len >= 0 && (size_t)len < HTD_LEFT_MAX) {
    ssize_t n = read(fd, buf + len, HTD_LEFT_MAX - (size_t)len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(why, whylen, "%s", strerror(errno));
      len = -1;
    }
    if (n <= 0)
      break;
    len += n;
  }
  close(fd);
  return len;
}

/* An account still being written (NAME.tmp) whose writer died before it
 * renamed it, HTD_LEFT_ABANDONED_S ago or more, is removed: it would never
 * be taken. One written now is left to its writer. */
static void drop_if_abandoned(int dfd, const char *dir, const char *name) {
  struct stat sb;
  if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
      sb.st_uid != geteuid() || time(NULL) - sb.st_mtime < HTD_LEFT_ABANDONED_S)
    return;
  if (unlinkat(dfd, name, 0) == 0)
    htd_log(HTD_LOG_WARN, "%s/%s: removed, an account its client did not finish writing", dir,
            name);
}

/* 1 when name ends with suffix. */
static int ends_with(const char *name, size_t nlen, const char *suffix) {
  size_t slen = strlen(suffix);
  return nlen > slen && strcmp(name + nlen - slen, suffix) == 0;
}

size_t htd_left_take(const char *socket_path, int at_start, htd_left_fn fn, void *arg) {
  char dir[PATH_MAX], prefix[NAME_MAX + 8];
  const char *slash = strrchr(socket_path, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == socket_path)
    snprintf(dir, sizeof dir, "/");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - socket_path), socket_path);
  snprintf(prefix, sizeof prefix, "%s.left.", slash ? slash + 1 : socket_path);
  size_t plen = strlen(prefix), taken = 0;
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  uint8_t *buf = NULL; /* the daemon looks every few seconds: only when there is one to read */
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t nlen = strlen(de->d_name);
    if (strncmp(de->d_name, prefix, plen) != 0)
      continue;
    if (ends_with(de->d_name, nlen, ".tmp")) {
      drop_if_abandoned(dirfd(d), dir, de->d_name);
      continue;
    }
    /* One being stored: this daemon's own, or at a start a killed one's. */
    int again = ends_with(de->d_name, nlen, HTD_LEFT_TAKING);
    if (again && !at_start)
      continue;
    if (!buf && !(buf = malloc(HTD_LEFT_MAX)))
      break;
    char why[128];
    ssize_t len = read_account(dirfd(d), de->d_name, buf, why, sizeof why);
    if (len < 0) {
      if (at_start)
        htd_log(HTD_LOG_WARN, "%s/%s: not taken as a client's account: %s", dir, de->d_name, why);
      continue;
    }
    char path[PATH_MAX + NAME_MAX + 2], taking[sizeof path + sizeof HTD_LEFT_TAKING];
    snprintf(path, sizeof path, "%s/%.*s", dir, (int)(nlen - (again ? strlen(HTD_LEFT_TAKING) : 0)),
             de->d_name);
    snprintf(taking, sizeof taking, "%s%s", path, HTD_LEFT_TAKING);
    if (!again && rename(path, taking) != 0) {
      if (at_start)
        htd_log(HTD_LOG_WARN, "%s: not taken as a client's account: cannot rename it: %s", path,
                strerror(errno));
      continue;
    }
    fn(buf, (size_t)len, path, again, arg);
    taken++;
  }
  free(buf);
  closedir(d);
  return taken;
}

void htd_left_remove(const char *path) {
  char taking[PATH_MAX + NAME_MAX + 2 + sizeof HTD_LEFT_TAKING];
  snprintf(taking, sizeof taking, "%s%s", path, HTD_LEFT_TAKING);
  if (unlink(taking) != 0 && errno != ENOENT)
    htd_log(HTD_LOG_WARN, "%s: cannot remove it: %s", taking, strerror(errno));
}
