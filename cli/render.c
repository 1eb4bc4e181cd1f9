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
#include "ht_proto.h"

static double num(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(j) ? j->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(j) ? j->valuestring : "";
}

/* What a traced program named (files, functions, argv) is shown escaped:
 * see ht_str_printable. */
static const char *clean(const char *s, char *out, size_t cap) {
  return ht_str_printable(s, strlen(s), out, cap);
}

static void when(double ms, char *out, size_t cap) {
  time_t t = (time_t)(ms / 1e3);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

static void render_sessions(FILE *out, const cJSON *r) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "sessions");
  fprintf(out, "%6s %8s %-20s %-19s %10s %-15s %10s %6s\n", "ID", "PID", "APP", "START", "DURATION",
          "END", "EVENTS", "LOST");
  const cJSON *s;
  cJSON_ArrayForEach(s, list) {
    char app[64], start[32], dur[32];
    when(num(s, "start_ms"), start, sizeof start);
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(s, "end_ms");
    if (cJSON_IsNumber(end))
      snprintf(dur, sizeof dur, "%.3fs", (end->valuedouble - num(s, "start_ms")) / 1e3);
    else
      snprintf(dur, sizeof dur, "-");
    fprintf(out, "%6.0f %8.0f %-20s %-19s %10s %-15s %10.0f %6.0f\n", num(s, "id"), num(s, "pid"),
            clean(str(s, "app"), app, 21), start, dur, str(s, "end_reason"), num(s, "events"),
            num(s, "lost"));
  }
}

/* " (unstored 5, unread 2)": why the session's events were lost. */
static void lost_reasons(const cJSON *s, char *out, size_t cap) {
  const cJSON *why = cJSON_GetObjectItemCaseSensitive(s, "lost_by_reason"), *w;
  size_t n = 0;
  out[0] = '\0';
  cJSON_ArrayForEach(w, why) {
    char name[32];
    int len = snprintf(out + n, cap - n, "%s%s %.0f", n ? ", " : " (",
                       clean(w->string, name, sizeof name), cJSON_GetNumberValue(w));
    if (len < 0 || (size_t)len >= cap - n - 1)
      break;
    n += (size_t)len;
  }
  if (n)
    snprintf(out + n, cap - n, ")");
}

static void session_line(FILE *out, const cJSON *r) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "session");
  char app[128], why[160];
  lost_reasons(s, why, sizeof why);
  fprintf(out, "session %.0f: %s (pid %.0f), %s, %.0f events, %.0f lost%s\n", num(s, "id"),
          clean(str(s, "app"), app, sizeof app), num(s, "pid"), str(s, "end_reason"),
          num(s, "events"), num(s, "lost"), why);
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
  fprintf(out, "%-22s %14.0f  in %.0f blocks, at %.3f ms\n", "peak bytes", num(r, "peak_bytes"),
          num(r, "peak_blocks"), num(r, "peak_at_ms"));
  fprintf(out, "%-22s %14.0f\n", "bytes allocated", num(r, "total_bytes"));
  if (num(r, "unmatched_frees") > 0)
    fprintf(out, "%-22s %14.0f  (frees of blocks never seen allocated)\n", "unmatched frees",
            num(r, "unmatched_frees"));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "totals");
  const cJSON *agree = cJSON_GetObjectItemCaseSensitive(t, "agree");
  fprintf(out, "client totals %s: client %.0f usable bytes in %.0f blocks, daemon %.0f in %.0f\n",
          cJSON_IsTrue(agree) ? "agree" : "DISAGREE", num(t, "client_usable_bytes"),
          num(t, "client_blocks"), num(t, "daemon_usable_bytes"), num(t, "daemon_blocks"));
  const cJSON *o;
  fprintf(out, "\n%-4s %-16s %-30s %12s %12s %12s %12s\n", "HEAP", "NAME", "CAPS", "ALLOCATIONS",
          "IN USE", "PEAK IN USE", "AT (ms)");
  cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(r, "heaps")) {
    char name[64];
    fprintf(out, "%-4.0f %-16s %-30s %12.0f %12.0f %12.0f %12.3f\n", num(o, "heap"),
            clean(str(o, "name"), name, 17), str(o, "caps_names"), num(o, "allocations"),
            num(o, "used_bytes"), num(o, "peak_used_bytes"), num(o, "peak_at_ms"));
  }
  fprintf(out, "\n%-30s %12s %14s %12s %14s\n", "CAPS REQUESTED", "ALLOCATIONS", "BYTES",
          "LIVE BLOCKS", "LIVE BYTES");
  cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(r, "caps")) {
    fprintf(out, "%-30s %12.0f %14.0f %12.0f %14.0f\n", str(o, "caps_names"), num(o, "allocations"),
            num(o, "bytes"), num(o, "live_blocks"), num(o, "live_bytes"));
  }
  const cJSON *types = cJSON_GetObjectItemCaseSensitive(r, "types");
  if (cJSON_GetArraySize(types) > 0) {
    fprintf(out, "\n%-30s %12s %14s %12s %14s\n", "TYPE", "ALLOCATIONS", "BYTES", "LIVE BLOCKS",
            "LIVE BYTES");
    cJSON_ArrayForEach(o, types) {
      char type[64];
      fprintf(out, "%-30s %12.0f %14.0f %12.0f %14.0f\n", clean(str(o, "type"), type, 31),
              num(o, "allocations"), num(o, "bytes"), num(o, "live_blocks"), num(o, "live_bytes"));
    }
  }
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

static void render_lwm(FILE *out, const cJSON *r) {
  session_line(out, r);
  const cJSON *heaps = cJSON_GetObjectItemCaseSensitive(r, "heaps"), *h;
  fprintf(out, "%-4s %-16s %-30s %12s %12s %12s %12s\n", "HEAP", "NAME", "CAPS", "CAPACITY",
          "FREE NOW", "MIN FREE", "AT (ms)");
  cJSON_ArrayForEach(h, heaps) {
    char name[64];
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "bounded")))
      fprintf(out, "%-4.0f %-16s %-30s %12.0f %12.0f %12.0f %12.3f\n", num(h, "heap"),
              clean(str(h, "name"), name, 17), str(h, "caps_names"), num(h, "capacity_bytes"),
              num(h, "free_bytes"), num(h, "minimum_free_bytes"), num(h, "at_ms"));
    else
      fprintf(out, "%-4.0f %-16s %-30s %12s %12s %12s %12.3f  peak in use %.0f bytes\n",
              num(h, "heap"), clean(str(h, "name"), name, 17), str(h, "caps_names"), "-", "-", "-",
              num(h, "at_ms"), num(h, "peak_used_bytes"));
  }
  const cJSON *caps = cJSON_GetObjectItemCaseSensitive(r, "caps"), *k;
  if (cJSON_GetArraySize(caps) == 0)
    return;
  fprintf(out, "\n%-30s %12s %12s %12s %12s %16s\n", "CAPS", "TOTAL", "FREE NOW", "MIN FREE",
          "AT (ms)", "SUM OF MINIMA");
  cJSON_ArrayForEach(k, caps) {
    fprintf(out, "%-30s %12.0f %12.0f %12.0f %12.3f %16.0f\n", str(k, "caps_names"),
            num(k, "total_bytes"), num(k, "free_bytes"), num(k, "minimum_free_bytes"),
            num(k, "at_ms"), num(k, "sum_of_heap_minima"));
  }
  fprintf(out, "(MIN FREE: the true minimum of the heaps' summed free bytes at one instant; "
               "SUM OF MINIMA: what ESP-IDF reports)\n");
}

static void render_frag(FILE *out, const cJSON *r) {
  session_line(out, r);
  const cJSON *heaps = cJSON_GetObjectItemCaseSensitive(r, "heaps"), *h;
  if (cJSON_GetArraySize(heaps) == 0) {
    fprintf(out, "no caps heaps in this session: the system heap has no bounds to measure\n");
    return;
  }
  fprintf(out, "%-4s %-16s %12s %12s %8s %6s  %7s %12s %12s %8s %10s\n", "HEAP", "NAME", "FREE",
          "LARGEST", "BLOCKS", "FRAG", "WORST", "FREE", "LARGEST", "BLOCKS", "AT (ms)");
  cJSON_ArrayForEach(h, heaps) {
    char name[64];
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(h, "worst");
    fprintf(out, "%-4.0f %-16s %12.0f %12.0f %8.0f %5.1f%%  ", num(h, "heap"),
            clean(str(h, "name"), name, 17), num(h, "free_bytes"), num(h, "largest_free_block"),
            num(h, "free_blocks"), 100 * num(h, "fragmentation"));
    if (num(w, "fragmentation") > 0)
      fprintf(out, "%6.1f%% %12.0f %12.0f %8.0f %10.3f\n", 100 * num(w, "fragmentation"),
              num(w, "free_bytes"), num(w, "largest_free_block"), num(w, "free_blocks"),
              num(w, "at_ms"));
    else
      fprintf(out, "%7s %12s %12s %8s %10s\n", "never", "-", "-", "-", "-");
  }
  fprintf(out, "(FRAG = 1 - largest free block / free bytes)\n");
}

static void render_top(FILE *out, const cJSON *r) {
  session_line(out, r);
  fprintf(out, "%-40s %-24s %12s %14s %10s %14s\n", "SITE", "FUNCTION", "ALLOCATIONS", "BYTES",
          "TEMPORARY", "PEAK LIVE");
  const cJSON *s;
  cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "sites")) {
    char key[64], fn[32];
    fprintf(out, "%-40s %-24s %12.0f %14.0f %10.0f %14.0f\n", clean(str(s, "key"), key, 41),
            clean(str(s, "function"), fn, 25), num(s, "allocations"), num(s, "bytes"),
            num(s, "temporary"), num(s, "peak_live_bytes"));
  }
}

static void render_timeline(FILE *out, const cJSON *r) {
  session_line(out, r);
  const cJSON *h;
  cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(r, "heaps")) {
    char name[64];
    int bounded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(h, "bounded"));
    fprintf(out, "\nheap %.0f (%s)\n%12s %14s", num(h, "heap"), clean(str(h, "name"), name, 40),
            "T (ms)", "IN USE");
    if (bounded)
      fprintf(out, " %14s %14s %14s %8s", "FREE", "MIN FREE", "LARGEST", "BLOCKS");
    fputc('\n', out);
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(h, "points")) {
      fprintf(out, "%12.3f %14.0f", num(p, "t_ms"), num(p, "used_bytes"));
      if (bounded)
        fprintf(out, " %14.0f %14.0f %14.0f %8.0f", num(p, "free_bytes"), num(p, "min_free_bytes"),
                num(p, "largest_free_block"), num(p, "free_blocks"));
      fputc('\n', out);
    }
  }
}

static void render_diff(FILE *out, const cJSON *r) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(r, "session1");
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "session2");
  fprintf(out, "session %.0f -> %.0f: leaked %.0f -> %.0f bytes, peak %.0f -> %.0f bytes\n",
          num(a, "id"), num(b, "id"), num(r, "leaked_bytes_1"), num(r, "leaked_bytes_2"),
          num(r, "peak_bytes_1"), num(r, "peak_bytes_2"));
  const cJSON *sites = cJSON_GetObjectItemCaseSensitive(r, "sites"), *s;
  if (cJSON_GetArraySize(sites) == 0) {
    fprintf(out, "no per-site differences in leaks or peak\n");
    return;
  }
  fprintf(out, "%-40s %-20s %12s %12s %12s %12s\n", "SITE", "FUNCTION", "LEAKED 1", "LEAKED 2",
          "PEAK 1", "PEAK 2");
  cJSON_ArrayForEach(s, sites) {
    char key[64], fn[32];
    fprintf(out, "%-40s %-20s %12.0f %12.0f %12.0f %12.0f\n", clean(str(s, "key"), key, 41),
            clean(str(s, "function"), fn, 21), num(s, "leaked_bytes_1"), num(s, "leaked_bytes_2"),
            num(s, "peak_bytes_1"), num(s, "peak_bytes_2"));
  }
}

static void render_events(FILE *out, const cJSON *r) {
  session_line(out, r);
  fprintf(out, "%8s %12s %6s %8s %-14s %-16s %10s %5s %s\n", "N", "T (ms)", "STREAM", "SEQ", "OP",
          "PTR", "SIZE", "HEAP", "SITE");
  const cJSON *e;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "events")) {
    char site[128];
    fprintf(out, "%8.0f %12.3f %6.0f %8.0f %-14s %-16s %10.0f %5.0f %s\n", num(e, "n"),
            num(e, "t_ms"), num(e, "stream"), num(e, "seq"), str(e, "op"), str(e, "ptr"),
            num(e, "size"), num(e, "heap"), clean(str(e, "site"), site, sizeof site));
  }
}

static void render_status(FILE *out, const cJSON *r) {
  fprintf(out, "heaptraced pid %.0f, up %.1f s\n", num(r, "pid"), num(r, "uptime_s"));
  fprintf(out, "socket      %s\ndatabase    %s (%.0f bytes)\n", str(r, "socket"), str(r, "db"),
          num(r, "db_bytes"));
  fprintf(out, "sessions    %.0f connected\nevents      %.0f received, %.0f/s now\n",
          num(r, "sessions_connected"), num(r, "events_received"), num(r, "events_per_s"));
  fprintf(out, "queue       %.0f bytes not stored yet, of %.0f MiB allowed%s\n",
          num(r, "queue_bytes"), num(r, "queue_limit_bytes") / (1024.0 * 1024.0),
          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "paused")) ? " (clients paused)" : "");
  fprintf(out, "buffers     %.0f bytes kept for the next programs' events\n",
          num(r, "buffers_kept_bytes"));
}

void hctl_render(FILE *out, const char *cmd, const cJSON *result) {
  static const struct {
    const char *name;
    void (*fn)(FILE *, const cJSON *);
  } renderers[] = {
      {"sessions", render_sessions}, {"leaks", render_leaks}, {"stats", render_stats},
      {"lwm", render_lwm},           {"frag", render_frag},   {"top", render_top},
      {"timeline", render_timeline}, {"diff", render_diff},   {"events", render_events},
      {"status", render_status},
  };
  for (size_t i = 0; i < sizeof renderers / sizeof *renderers; i++) {
    if (strcmp(renderers[i].name, cmd) == 0) {
      renderers[i].fn(out, result);
      return;
    }
  }
  char *text = cJSON_Print(result);
  fprintf(out, "%s\n", text ? text : "{}");
  cJSON_free(text);
}
