/* render.c - heapctl's tables: every reply's result printed for people.
 *
 * Strings that came from a traced program (file names, functions, argv)
 * are printed with control characters escaped, so a hostile session cannot
 * drive the terminal.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "hctl.h"

static double num(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(j) ? j->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(j) ? j->valuestring : "";
}

/* Copies s into out with control bytes shown as \xNN; a string that does
 * not fit ends in "...". */
static const char *clean(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    size_t need = (c < 0x20 || c == 0x7f) ? 4 : 1;
    if (n + need + 4 > cap) {
      memcpy(out + n, "...", 4);
      return out;
    }
    if (need == 4)
      n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
    else
      out[n++] = (char)c;
  }
  out[n] = '\0';
  return out;
}

static void when(double ms, char *out, size_t cap) {
  time_t t = (time_t)(ms / 1e3);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

static void render_sessions(FILE *out, const cJSON *r) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "sessions");
  fprintf(out, "%6s %8s %-20s %-19s %10s %-15s %10s %6s\n", "ID", "PID", "APP", "START",
          "DURATION", "END", "EVENTS", "LOST");
  const cJSON *s;
  cJSON_ArrayForEach(s, list) {
    char app[64], start[32], dur[32];
    when(num(s, "start_ms"), start, sizeof start);
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(s, "end_ms");
    if (cJSON_IsNumber(end))
      snprintf(dur, sizeof dur, "%.3fs", (end->valuedouble - num(s, "start_ms")) / 1e3);
    else
      snprintf(dur, sizeof dur, "-");
    fprintf(out, "%6.0f %8.0f %-20s %-19s %10s %-15s %10.0f %6.0f\n", num(s, "id"),
            num(s, "pid"), clean(str(s, "app"), app, 21), start, dur, str(s, "end_reason"),
            num(s, "events"), num(s, "lost"));
  }
}

static void session_line(FILE *out, const cJSON *r) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "session");
  char app[128];
  fprintf(out, "session %.0f: %s (pid %.0f), %s, %.0f events, %.0f lost\n", num(s, "id"),
          clean(str(s, "app"), app, sizeof app), num(s, "pid"), str(s, "end_reason"),
          num(s, "events"), num(s, "lost"));
}

static void render_leaks(FILE *out, const cJSON *r) {
  session_line(out, r);
  const cJSON *groups = cJSON_GetObjectItemCaseSensitive(r, "groups");
  const cJSON *total = cJSON_GetObjectItemCaseSensitive(r, "total");
  if (num(total, "blocks") == 0) {
    fprintf(out, "no leaks: every block was freed\n");
    return;
  }
  int by_site = strcmp(str(r, "by"), "site") == 0;
  fprintf(out, "%-40s %-24s %7s %10s  %-24s %s\n", by_site ? "SITE" : "GROUP",
          by_site ? "FUNCTION" : "", "BLOCKS", "BYTES", by_site ? "CAPS" : "", "SAMPLE");
  const cJSON *g;
  cJSON_ArrayForEach(g, groups) {
    char key[256], fn[128];
    fprintf(out, "%-40s %-24s %7.0f %10.0f  %-24s %s\n", clean(str(g, "key"), key, 41),
            clean(str(g, "function"), fn, 25), num(g, "blocks"), num(g, "bytes"),
            str(g, "caps_names"), str(g, "sample_address"));
  }
  fprintf(out, "total: %.0f blocks, %.0f bytes leaked\n", num(total, "blocks"),
          num(total, "bytes"));
}

static void render_stats(FILE *out, const cJSON *r) {
  session_line(out, r);
  fprintf(out, "%-22s %14.0f\n", "allocations", num(r, "allocations"));
  fprintf(out, "%-22s %14.0f\n", "frees", num(r, "frees"));
  fprintf(out, "%-22s %14.0f\n", "reallocs", num(r, "reallocs"));
  fprintf(out, "%-22s %14.0f\n", "failed", num(r, "failed"));
  fprintf(out, "%-22s %14.0f  in %.0f blocks\n", "current bytes", num(r, "current_bytes"),
          num(r, "current_blocks"));
  fprintf(out, "%-22s %14.0f  in %.0f blocks, at +%.6fs\n", "peak bytes", num(r, "peak_bytes"),
          num(r, "peak_blocks"), num(r, "peak_at_ns") / 1e9);
  fprintf(out, "%-22s %14.0f\n", "bytes allocated", num(r, "total_bytes"));
  if (num(r, "unmatched_frees") > 0)
    fprintf(out, "%-22s %14.0f  (frees of blocks never seen allocated)\n", "unmatched frees",
            num(r, "unmatched_frees"));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "totals");
  const cJSON *agree = cJSON_GetObjectItemCaseSensitive(t, "agree");
  fprintf(out, "client totals %s: client %.0f usable bytes in %.0f blocks, daemon %.0f in %.0f\n",
          cJSON_IsTrue(agree) ? "agree" : "DISAGREE", num(t, "client_usable_bytes"),
          num(t, "client_blocks"), num(t, "daemon_usable_bytes"), num(t, "daemon_blocks"));
  const cJSON *sites = cJSON_GetObjectItemCaseSensitive(r, "sites");
  if (cJSON_GetArraySize(sites) == 0)
    return;
  fprintf(out, "\n%-40s %-24s %12s %14s\n", "SITE", "FUNCTION", "ALLOCATIONS", "BYTES");
  const cJSON *s;
  cJSON_ArrayForEach(s, sites) {
    char file[256], site[300], fn[128];
    snprintf(site, sizeof site, "%s:%.0f", clean(str(s, "file"), file, sizeof file),
             num(s, "line"));
    fprintf(out, "%-40s %-24s %12.0f %14.0f\n", site, clean(str(s, "function"), fn, 25),
            num(s, "allocations"), num(s, "bytes"));
  }
}

void hctl_render(FILE *out, const char *cmd, const cJSON *result) {
  if (strcmp(cmd, "sessions") == 0)
    render_sessions(out, result);
  else if (strcmp(cmd, "leaks") == 0)
    render_leaks(out, result);
  else if (strcmp(cmd, "stats") == 0)
    render_stats(out, result);
  else {
    char *text = cJSON_Print(result);
    fprintf(out, "%s\n", text ? text : "{}");
    cJSON_free(text);
  }
}
