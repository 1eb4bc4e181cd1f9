/* test_e2e_order.c - a session's streams merged back into one history
 * where threads hand addresses over.
 *
 * The client reads the clock for an allocation without waiting for the
 * allocator's last loads (PROTOCOL.md, "Event times"), so when one thread
 * frees a block and another gets its address at once, the allocation may
 * carry a time a few nanoseconds before the free. The sessions here are
 * sent by hand (tests/raw_client.c) with exactly such times, on two
 * streams, and heapctl must answer as if the free came first: no double
 * allocation, no unmatched free, the right block leaked. A genuine double
 * allocation (no free ever comes) must still be counted as one. Each case
 * is asked of the ended session (its stored summary) through the daemon
 * and offline, the first also while it runs. Last, a real traced program
 * whose threads free and realloc each other's blocks
 * (tests/programs/handover_client) must come out exact.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "e2e.h"
#include "raw_client.h"
#include "test_rand.h"

E2E_SUITE(e2e_order, 30);

#define SITE_A 1 /* the thread that frees */
#define SITE_B 2 /* the thread that gets the address */
#define ADDR 0x7f0000010000ull
#define OTHER 0x7f0000020000ull

typedef struct {
  raw_client_t c;
  raw_stream_t a, b; /* streams 1 and 2 */
  uint32_t pid;
} session_t;

static void begin(session_t *g, uint32_t pid) {
  g->pid = pid;
  raw_connect(&g->c, env.socket);
  raw_hello(&g->c, pid, "order");
  raw_site(&g->c, SITE_A, 10, "order.c", "producer");
  raw_site(&g->c, SITE_B, 20, "order.c", "consumer");
  uint64_t t0 = raw_now_ns();
  raw_stream_init(&g->a, 1, t0);
  raw_stream_init(&g->b, 2, t0);
}

/* Sets a stream's next event time to t exactly (append_op adds 1000). */
static void at(raw_stream_t *s, uint64_t t) {
  s->time_ns = t - 1000;
}

static void ship(session_t *g) {
  if (g->a.count)
    raw_send_events(&g->c, &g->a);
  if (g->b.count)
    raw_send_events(&g->c, &g->b);
}

static void finish(session_t *g) {
  ship(g);
  raw_end(&g->c);
  shutdown(g->c.fd, SHUT_WR);
  cr_assert(raw_wait_closed(&g->c, RAW_WAIT_MS), "the daemon did not commit the session");
  raw_close(&g->c);
}

static int session_id(uint32_t pid) {
  cJSON *all = e2e_heapctl_json(&env, 0, "sessions", NULL, NULL);
  const cJSON *s = e2e_session_of_pid(all, pid);
  cr_assert(s != NULL, "no session of pid %u", pid);
  int id = (int)e2e_num(s, "id");
  cJSON_Delete(all);
  return id;
}

/* What stats and leaks say about the session, through the daemon or
 * offline. */
typedef struct {
  double allocs, frees, doubles, unmatched, cur_bytes, cur_blocks, peak_bytes;
  double leak_blocks, leak_bytes;
  double leak_line; /* line of the first leak group, 0 if none */
} answer_t;

static answer_t ask(int id, int offline) {
  char ids[16];
  snprintf(ids, sizeof ids, "%d", id);
  answer_t a;
  memset(&a, 0, sizeof a);
  cJSON *st = e2e_heapctl_json(&env, offline, "stats", "-s", ids);
  a.allocs = e2e_num(st, "allocations");
  a.frees = e2e_num(st, "frees");
  a.doubles = e2e_num(st, "double_allocations");
  a.unmatched = e2e_num(st, "unmatched_frees");
  a.cur_bytes = e2e_num(st, "current_bytes");
  a.cur_blocks = e2e_num(st, "current_blocks");
  a.peak_bytes = e2e_num(st, "peak_bytes");
  cJSON_Delete(st);
  cJSON *lk = e2e_heapctl_json(&env, offline, "leaks", "-s", ids);
  const cJSON *total = cJSON_GetObjectItemCaseSensitive(lk, "total");
  a.leak_blocks = e2e_num(total, "blocks");
  a.leak_bytes = e2e_num(total, "bytes");
  const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lk, "groups"), 0);
  a.leak_line = first ? e2e_num(first, "line") : 0;
  cJSON_Delete(lk);
  return a;
}

/* The answer, the same through the daemon and offline. */
static answer_t ask_both(int id) {
  answer_t live = ask(id, 0), off = ask(id, 1);
  cr_assert(eq(int, memcmp(&live, &off, sizeof live), 0),
            "session %d: heapctl --db answers differently from the daemon", id);
  return live;
}

/* Stream 1 allocates ADDR and frees it at t; stream 2 gets ADDR at
 * t - early (its allocation timed before the free) and keeps it, as the
 * last event of its frame or with more after. */
static void handover(session_t *g, uint64_t t, uint64_t early) {
  at(&g->a, t - 5000);
  raw_stream_malloc(&g->a, SITE_A, ADDR, 64);
  at(&g->b, t - 3000);
  raw_stream_malloc(&g->b, SITE_B, OTHER, 16);
  at(&g->a, t);
  raw_stream_free(&g->a, SITE_A, ADDR, 64);
  at(&g->b, t - early);
  raw_stream_malloc(&g->b, SITE_B, ADDR, 48);
  raw_stream_free(&g->b, SITE_B, OTHER, 16);
}

static void assert_handed_over(answer_t a) {
  cr_assert(eq(dbl, a.allocs, 3));
  cr_assert(eq(dbl, a.frees, 2));
  cr_assert(eq(dbl, a.doubles, 0), "the handed-over address was allocated twice");
  cr_assert(eq(dbl, a.unmatched, 0), "the free of the handed-over address matched nothing");
  cr_assert(eq(dbl, a.cur_blocks, 1));
  cr_assert(eq(dbl, a.cur_bytes, 48));
  cr_assert(eq(dbl, a.peak_bytes, 80));
  cr_assert(eq(dbl, a.leak_blocks, 1));
  cr_assert(eq(dbl, a.leak_bytes, 48), "the leak is the consumer's 48-byte block");
  cr_assert(eq(dbl, a.leak_line, 20));
}

Test(e2e_order, an_allocation_timed_before_the_free_that_gave_its_address_comes_after_it) {
  session_t g;
  begin(&g, 720001);
  handover(&g, raw_now_ns() + 1000000, 10);
  ship(&g);
  int id = session_id(g.pid);
  assert_handed_over(ask_both(id)); /* running: replayed for the query */
  finish(&g);
  assert_handed_over(ask_both(id)); /* ended: the stored summary */
}

/* The sample address of site A's leak group, through the daemon or
 * offline; the group must hold `blocks` blocks. */
static uint64_t leak_sample(int id, int offline, double blocks) {
  char ids[16];
  snprintf(ids, sizeof ids, "%d", id);
  cJSON *lk = e2e_heapctl_json(&env, offline, "leaks", "-s", ids);
  const cJSON *g, *mine = NULL;
  cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(lk, "groups")) {
    if (e2e_num(g, "line") == 10)
      mine = g;
  }
  cr_assert(mine != NULL, "no leak group of site A");
  cr_assert(eq(dbl, e2e_num(mine, "blocks"), blocks));
  uint64_t at = strtoull(e2e_str(mine, "sample_address"), NULL, 16);
  cJSON_Delete(lk);
  return at;
}

/* A leak group's sample is its oldest live block, however the session's
 * live blocks are held: replayed while it runs, or read back from its
 * stored summary. Before, it was whichever block came first in the
 * table of live blocks, and the replay's table (grown by thousands of
 * blocks freed since) and the summary's differ in size and order. */
Test(e2e_order, a_leak_groups_sample_is_its_oldest_block_replayed_or_summarised) {
  session_t g;
  begin(&g, 720013);
  uint64_t oldest = 0;
  for (int i = 0; i < 40; i++) { /* the leaks: addresses in no order */
    uint64_t p = 0x7f2000000000ull + (test_rand() & 0xffffff0ull);
    oldest = oldest ? oldest : p;
    raw_stream_malloc(&g.a, SITE_A, p, 24);
  }
  for (int round = 0; round < 2; round++) { /* 4000 blocks live at once, then none */
    for (uint64_t i = 0; i < 2000; i++)
      raw_stream_malloc(&g.b, SITE_B, 0x7f3000000000ull + (round * 2000 + i) * 64, 32);
    raw_send_events(&g.c, &g.b);
  }
  for (uint64_t i = 0; i < 4000; i++) {
    raw_stream_free(&g.b, SITE_B, 0x7f3000000000ull + i * 64, 32);
    if (g.b.count == 2000)
      raw_send_events(&g.c, &g.b);
  }
  ship(&g);
  int id = session_id(g.pid);
  cr_assert(eq(u64, leak_sample(id, 0, 40), oldest), "running, replayed");
  finish(&g);
  e2e_wait_summary(&env, id);
  cr_assert(eq(u64, leak_sample(id, 0, 40), oldest), "ended, from its summary");
  cr_assert(eq(u64, leak_sample(id, 1, 40), oldest), "ended, offline");
}

/* heapctl events lists the session in the order the analysis used: the
 * free of ADDR (stream 1) before its allocation by stream 2, though the
 * allocation's time is earlier. */
Test(e2e_order, the_event_listing_puts_the_free_before_the_allocation_it_made_possible) {
  session_t g;
  begin(&g, 720006);
  handover(&g, raw_now_ns() + 1000000, 10);
  finish(&g);
  char ids[16];
  snprintf(ids, sizeof ids, "%d", session_id(g.pid));
  for (int offline = 0; offline < 2; offline++) {
    cJSON *j = e2e_heapctl_json(&env, offline, "events", "-s", ids);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "events"), *ev;
    char addr[32];
    snprintf(addr, sizeof addr, "0x%llx", (unsigned long long)ADDR);
    int freed_at = -1, taken_at = -1, i = 0;
    cJSON_ArrayForEach(ev, list) {
      if (strcmp(e2e_str(ev, "ptr"), addr) == 0) {
        if (strcmp(e2e_str(ev, "op"), "free") == 0)
          freed_at = i;
        else if (e2e_num(ev, "stream") == 2)
          taken_at = i;
      }
      i++;
    }
    cr_assert(eq(int, i, 5), "%s", cJSON_PrintUnformatted(list));
    cr_assert(ge(int, freed_at, 0), "no free of the address listed");
    cr_assert(lt(int, freed_at, taken_at), "the allocation is listed before the free (%s)",
              offline ? "offline" : "through the daemon");
    cJSON_Delete(j);
  }
}

Test(e2e_order, a_realloc_that_moves_into_an_address_freed_a_moment_later_comes_after_it) {
  session_t g;
  begin(&g, 720002);
  uint64_t t = raw_now_ns() + 1000000;
  at(&g.a, t - 5000);
  raw_stream_malloc(&g.a, SITE_A, ADDR, 64);
  at(&g.b, t - 4000);
  raw_stream_malloc(&g.b, SITE_B, OTHER, 16);
  at(&g.a, t);
  raw_stream_free(&g.a, SITE_A, ADDR, 64);
  at(&g.b, t - 40);
  raw_stream_realloc(&g.b, SITE_B, OTHER, ADDR, 16, 48);
  finish(&g);
  answer_t a = ask_both(session_id(g.pid));
  cr_assert(eq(dbl, a.doubles, 0));
  cr_assert(eq(dbl, a.unmatched, 0));
  cr_assert(eq(dbl, a.cur_blocks, 1));
  cr_assert(eq(dbl, a.cur_bytes, 48));
  cr_assert(eq(dbl, a.leak_bytes, 48));
  cr_assert(eq(dbl, a.leak_line, 20));
}

Test(e2e_order, frames_of_the_two_streams_in_either_order_give_the_same_history) {
  session_t g;
  begin(&g, 720003);
  handover(&g, raw_now_ns() + 1000000, 2000);
  raw_send_events(&g.c, &g.b); /* the consumer's frame first */
  raw_send_events(&g.c, &g.a);
  finish(&g);
  assert_handed_over(ask_both(session_id(g.pid)));
}

/* A realloc that moves gives its old address back inside the allocator
 * and is timed after it returns; its thread may be preempted in between.
 * THIRD and FOURTH are two more addresses. */
#define THIRD 0x7f0000030000ull
#define FOURTH 0x7f0000040000ull

/* Stream 1 holds ADDR from t and reallocs it to THIRD, timed `late` after
 * stream 2 got ADDR at t + 1000. */
static answer_t moved_late(uint32_t pid, uint64_t late) {
  session_t g;
  begin(&g, pid);
  uint64_t t = raw_now_ns() + 1000000;
  at(&g.a, t);
  raw_stream_malloc(&g.a, SITE_A, ADDR, 64);
  at(&g.b, t + 1000);
  raw_stream_malloc(&g.b, SITE_B, ADDR, 48);
  at(&g.a, t + 1000 + late);
  raw_stream_realloc(&g.a, SITE_A, ADDR, THIRD, 64, 128);
  finish(&g);
  return ask_both(session_id(pid));
}

/* 5 ms late, far past the 50 us an allocation waits for a free: the
 * realloc, next in its stream, still comes first. */
Test(e2e_order, a_realloc_timed_well_after_another_thread_got_its_old_address_comes_first) {
  answer_t a = moved_late(720007, 5000000);
  cr_assert(eq(dbl, a.doubles, 0), "the old address was allocated twice");
  cr_assert(eq(dbl, a.unmatched, 0));
  cr_assert(eq(dbl, a.cur_blocks, 2));
  cr_assert(eq(dbl, a.cur_bytes, 48 + 128));
  cr_assert(eq(dbl, a.peak_bytes, 64 + 128), "the realloc holds both blocks for a moment");
  cr_assert(eq(dbl, a.leak_bytes, 48 + 128));
}

/* Two threads preempted in a realloc, one after the other: stream 3
 * moved OTHER to FOURTH, stream 1 then got OTHER for ADDR, and stream 2
 * then got ADDR; both reallocs are timed after stream 2's allocation. */
Test(e2e_order, a_chain_of_late_reallocs_comes_out_in_the_order_they_gave_addresses_back) {
  session_t g;
  begin(&g, 720009);
  raw_stream_t c;
  uint64_t t = raw_now_ns() + 1000000;
  raw_stream_init(&c, 3, t);
  at(&g.a, t);
  raw_stream_malloc(&g.a, SITE_A, ADDR, 64);
  at(&c, t + 100);
  raw_stream_malloc(&c, SITE_A, OTHER, 16);
  at(&g.b, t + 2000);
  raw_stream_malloc(&g.b, SITE_B, ADDR, 48);
  at(&g.a, t + 5000000);
  raw_stream_realloc(&g.a, SITE_A, ADDR, OTHER, 64, 128);
  at(&c, t + 4000000);
  raw_stream_realloc(&c, SITE_A, OTHER, FOURTH, 16, 32);
  raw_send_events(&g.c, &c);
  finish(&g);
  answer_t a = ask_both(session_id(g.pid));
  cr_assert(eq(dbl, a.doubles, 0), "an address was allocated twice");
  cr_assert(eq(dbl, a.unmatched, 0));
  cr_assert(eq(dbl, a.cur_blocks, 3));
  cr_assert(eq(dbl, a.cur_bytes, 48 + 128 + 32));
  cr_assert(eq(dbl, a.leak_bytes, 48 + 128 + 32));
}

/* How far ahead a realloc is looked for has its bound (HTQ_MOVE_NS, 1 s):
 * one timed 2 s later stays where it is, and the allocation counts as a
 * double. */
Test(e2e_order, a_realloc_more_than_a_second_late_is_not_waited_for) {
  answer_t a = moved_late(720008, 2000000000);
  cr_assert(eq(dbl, a.doubles, 1));
}

/* No free of the address ever comes: the allocation waits for the other
 * streams to be HTQ_REORDER_NS (50 us) past it, then counts as what it is,
 * before the free 200 us later (the peak shows where it went). */
Test(e2e_order, a_double_allocation_with_no_free_to_wait_for_is_still_counted) {
  session_t g;
  begin(&g, 720004);
  uint64_t t = raw_now_ns() + 1000000;
  at(&g.a, t);
  raw_stream_malloc(&g.a, SITE_A, ADDR, 64);
  at(&g.b, t + 1000);
  raw_stream_malloc(&g.b, SITE_B, ADDR, 200);
  at(&g.a, t + 2000);
  raw_stream_malloc(&g.a, SITE_A, OTHER, 16);
  at(&g.a, t + 200000); /* well past the wait */
  raw_stream_free(&g.a, SITE_A, OTHER, 16);
  finish(&g);
  answer_t a = ask_both(session_id(g.pid));
  cr_assert(eq(dbl, a.allocs, 3));
  cr_assert(eq(dbl, a.doubles, 1), "the second allocation of one address is not counted");
  cr_assert(eq(dbl, a.unmatched, 0));
  cr_assert(eq(dbl, a.cur_blocks, 1), "the replaced block no longer counts as live");
  cr_assert(eq(dbl, a.peak_bytes, 64 + 16 - 64 + 200), "not placed before the free of OTHER");
  cr_assert(eq(dbl, a.leak_bytes, 200), "the later allocation is the live one");
  cr_assert(eq(dbl, a.leak_line, 20));
}

Test(e2e_order, threads_that_free_each_others_blocks_come_out_exact) {
  char *argv[] = {(char *)e2e_bin("handover_client"), "4", "50000", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", "1");
  cr_assert(eq(dbl, e2e_num(j, "allocations"), (double)e2e_field(r.out, "allocations")), "%s",
            r.out);
  cr_assert(eq(dbl, e2e_num(j, "frees"), (double)e2e_field(r.out, "frees")));
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), (double)e2e_field(r.out, "reallocs")));
  cr_assert(lt(dbl, 0, e2e_num(j, "reallocs")));
  cr_assert(eq(dbl, e2e_num(j, "events"), (double)e2e_field(r.out, "events")));
  cr_assert(eq(dbl, e2e_num(j, "double_allocations"), 0));
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  cr_assert(eq(dbl, e2e_num(j, "current_blocks"), (double)e2e_field(r.out, "live_blocks")));
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), (double)e2e_field(r.out, "live_bytes")));
  cr_assert(cJSON_IsTrue(
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "totals"), "agree")));
  cJSON_Delete(j);
  e2e_result_free(&r);
}

/* A session made to tangle the merge: TANGLE_STREAMS streams of random
 * events on TANGLE_ADDRS shared addresses (allocations, frees and
 * reallocs that move) at random times, so that allocations find their
 * addresses held, wait, time out, and reallocs are put first, chains of
 * them too, in every combination. Whatever the order, each event is
 * handed out exactly once: the counts by op add up to what was sent,
 * through the daemon and offline. */
#define TANGLE_STREAMS 16
#define TANGLE_EVENTS 3000 /* per stream */
#define TANGLE_ADDRS 8

Test(e2e_order, a_tangle_of_reallocs_on_a_few_addresses_replays_every_event_once) {
  session_t g;
  begin(&g, 720010);
  static raw_stream_t s[TANGLE_STREAMS];
  uint64_t t = raw_now_ns() + 1000000, x = 0x9e3779b97f4a7c15ull;
  double sent[3] = {0}; /* allocations, frees, reallocs */
  for (uint32_t i = 0; i < TANGLE_STREAMS; i++)
    raw_stream_init(&s[i], 10 + i, t);
  for (int n = 0; n < TANGLE_EVENTS; n++) {
    for (uint32_t i = 0; i < TANGLE_STREAMS; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      raw_stream_t *r = &s[i];
      r->time_ns += x % 100000; /* up to 100 us apart, 1000 ns more below */
      uint64_t a = ADDR + 0x100 * ((x >> 20) % TANGLE_ADDRS);
      uint64_t b = ADDR + 0x100 * ((x >> 30) % TANGLE_ADDRS);
      int op = (int)((x >> 40) % 3);
      if (op == 0)
        raw_stream_malloc(r, SITE_A, a, 64);
      else if (op == 1)
        raw_stream_free(r, SITE_A, a, 64);
      else
        raw_stream_realloc(r, SITE_B, a, a == b ? b + 0x80 : b, 64, 64);
      sent[op]++;
      if (r->len > sizeof r->buf - 4 * HT_PROTO_MAX_EVENT_BYTES)
        raw_send_events(&g.c, r);
    }
  }
  /* Last, each stream's final event is a realloc timed 5 ms late, moving
   * away from a block the next stream allocates at its address first: it
   * is put first from the middle of the merge, and its stream ends. */
  uint64_t end = 0;
  for (uint32_t i = 0; i < TANGLE_STREAMS; i++)
    end = s[i].time_ns > end ? s[i].time_ns : end;
  for (uint32_t i = 0; i < TANGLE_STREAMS; i++) {
    uint32_t prev = (i + TANGLE_STREAMS - 1) % TANGLE_STREAMS;
    at(&s[i], end + 10000 + i);
    raw_stream_malloc(&s[i], SITE_A, FOURTH + 0x100 * i, 64);
    at(&s[i], end + 20000 + i);
    raw_stream_malloc(&s[i], SITE_B, FOURTH + 0x100 * prev, 64);
    at(&s[i], end + 5000000 + i);
    raw_stream_realloc(&s[i], SITE_A, FOURTH + 0x100 * i, FOURTH + 0x10000 + 0x100 * i, 64, 64);
    sent[0] += 2;
    sent[2]++;
    raw_send_events(&g.c, &s[i]);
  }
  finish(&g);
  char ids[16];
  snprintf(ids, sizeof ids, "%d", session_id(g.pid));
  for (int offline = 0; offline < 2; offline++) {
    cJSON *st = e2e_heapctl_json(&env, offline, "stats", "-s", ids);
    cr_assert(eq(dbl, e2e_num(st, "allocations"), sent[0]), "offline %d", offline);
    cr_assert(eq(dbl, e2e_num(st, "frees"), sent[1]), "offline %d", offline);
    cr_assert(eq(dbl, e2e_num(st, "reallocs"), sent[2]), "offline %d", offline);
    cr_assert(eq(dbl, e2e_num(st, "events"), (double)TANGLE_STREAMS * (TANGLE_EVENTS + 3)));
    cJSON_Delete(st);
  }
}

/* A session made to keep many streams waiting at once: STREAMS streams
 * allocate one address that nothing frees, then one stream sends MANY
 * allocate/free pairs of other addresses. At most 64 wait at a time (the
 * replay's bound on what one event costs, whatever a session holds); every
 * event is replayed once, and each allocation of the address after the
 * first counts as a double one. */
#define STREAMS 2000
#define MANY 20000

Test(e2e_order, two_thousand_streams_waiting_on_one_address_are_each_counted_once) {
  session_t g;
  begin(&g, 720005);
  uint64_t t = raw_now_ns() + 1000000;
  static raw_stream_t s;
  for (uint32_t i = 0; i < STREAMS; i++) {
    raw_stream_init(&s, 10 + i, t + i);
    raw_stream_malloc(&s, SITE_B, ADDR, 8);
    raw_send_events(&g.c, &s);
  }
  at(&g.a, t + STREAMS + 1000);
  for (uint32_t i = 0; i < MANY; i++) {
    raw_stream_malloc(&g.a, SITE_A, OTHER + 16 * (i % 64), 16);
    raw_stream_free(&g.a, SITE_A, OTHER + 16 * (i % 64), 16);
    if (g.a.len > sizeof g.a.buf - 4 * HT_PROTO_MAX_EVENT_BYTES)
      raw_send_events(&g.c, &g.a);
  }
  finish(&g);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  answer_t a = ask_both(session_id(g.pid));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  cr_assert(eq(dbl, a.allocs, STREAMS + MANY));
  cr_assert(eq(dbl, a.frees, MANY));
  cr_assert(eq(dbl, a.doubles, STREAMS - 1));
  cr_assert(eq(dbl, a.unmatched, 0));
  cr_assert(eq(dbl, a.cur_blocks, 1));
  cr_assert(eq(dbl, a.cur_bytes, 8));
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  fprintf(stderr,
          "e2e_order: %d streams waiting on one address, %d events: both answers in %.0f ms\n",
          STREAMS, STREAMS + 2 * MANY, ms);
}

/* A buffer grown a page at a time (tests/programs/grower): glibc grows it
 * in place or moves it without a copy, traced as untraced, and every
 * realloc in place or not comes out exact. */
Test(e2e_order, a_buffer_grown_a_page_at_a_time_moves_as_seldom_as_untraced_and_counts_exactly) {
  char *argv[] = {(char *)e2e_bin("grower"), "8", NULL};
  e2e_result_t r = e2e_run(&env, argv, NULL);
  cr_assert(eq(int, r.status, 0), "%s", r.err);
  long reallocs = e2e_field(r.out, "reallocs"), moves = e2e_field(r.out, "moves");
  cr_assert(le(long, moves, e2e_field(r.out, "plain_moves") + reallocs / 16), "%s", r.out);
  cJSON *j = e2e_heapctl_json(&env, 0, "stats", "-s", "1");
  cr_assert(eq(dbl, e2e_num(j, "allocations"), 1));
  cr_assert(eq(dbl, e2e_num(j, "frees"), 1));
  cr_assert(eq(dbl, e2e_num(j, "reallocs"), (double)reallocs));
  cr_assert(eq(dbl, e2e_num(j, "double_allocations"), 0));
  cr_assert(eq(dbl, e2e_num(j, "unmatched_frees"), 0));
  cr_assert(eq(dbl, e2e_num(j, "current_bytes"), 0));
  cr_assert(ge(dbl, e2e_num(j, "peak_bytes"), 8 << 20), "the requested bytes at the end");
  cr_assert(cJSON_IsTrue(
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "totals"), "agree")));
  cJSON_Delete(j);
  e2e_result_free(&r);
}
