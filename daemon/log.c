/* log.c - the daemon's log: one line per message on stderr, with the
 * local time and the level. In the background stderr is the log file. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "htd.h"

htd_level_t htd_log_level = HTD_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int htd_log_parse_level(const char *s, htd_level_t *out) {
  for (size_t i = 0; i < sizeof level_names / sizeof *level_names; i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *out = (htd_level_t)i;
      return 0;
    }
  }
  return -1;
}

void htd_log(htd_level_t level, const char *fmt, ...) {
  if (level > htd_log_level)
    return;
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  char msg[1024], shown[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* Messages quote what clients sent (program names, reasons): a line of
   * the log is one line, and no escape sequence reaches a terminal. */
  ht_str_printable(msg, strlen(msg), shown, sizeof shown);
  fprintf(stderr, "%s heaptraced[%s]: %s\n", stamp, level_names[level], shown);
  fflush(stderr);
}
