/* peer.c - the process at the other end of a Unix socket (peer.h). */
#define _GNU_SOURCE
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ht_peer_pid(int fd) {
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || cr.pid < 0)
    return 0;
  return (int)cr.pid;
}

int ht_pid_exiting(int pid) {
  if (pid <= 0)
    return 0;
  char path[32] = "/proc/", digits[12], stat[512];
  size_t at = strlen(path), nd = 0;
  for (unsigned v = (unsigned)pid; v; v /= 10)
    digits[nd++] = (char)('0' + v % 10);
  while (nd)
    path[at++] = digits[--nd];
  memcpy(path + at, "/stat", sizeof "/stat");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT && access("/proc/self/stat", R_OK) == 0;
  ssize_t n = read(fd, stat, sizeof stat - 1);
  close(fd);
  if (n <= 0)
    return 0;
  stat[n] = '\0';
  /* "pid (comm) S ...": the state follows the last ')'; comm may hold any. */
  const char *end = strrchr(stat, ')');
  return end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X');
}
