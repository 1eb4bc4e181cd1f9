/* clock.c - event times: CLOCK_MONOTONIC nanoseconds from the TSC.
 *
 * Every event carries a CLOCK_MONOTONIC time, and a vDSO clock_gettime()
 * is a large share of what tracing one allocation costs. Where the kernel
 * itself keeps time with the TSC (x86-64, clocksource "tsc": it has found
 * the counter invariant and synchronised across CPUs), the client reads
 * the counter and maps it to nanoseconds with a piecewise-linear function
 * f, one segment {tsc0, ns0, mult}: f(t) = ns0 + (t - tsc0) * mult / 2^32.
 *
 * The daemon merges streams by time, so f must be one increasing function
 * that every thread evaluates alike: then time never goes backwards in a
 * thread, and an allocation that happens after a free in another thread
 * gets a later time. The flusher re-anchors f (ht__clock_anchor) to follow
 * clock_gettime, every HT_CLOCK_ANCHOR_NS once the counter's rate is
 * known over that long, sooner before: the new segment starts where
 * the old one ends (continuous) with a slope that closes the gap to the
 * real clock over the next HT_CLOCK_HORIZON_NS. It starts a little in the
 * future, and the published parameters keep the previous segment, so a
 * reader that sees the new parameters with a counter value from before
 * the switch evaluates the old segment: f does not depend on which
 * parameters a reader happened to see. The parameters are published
 * through a seqlock: readers retry in the rare case a write overlapped.
 *
 * The rate is measured from a (counter, clock_gettime) sample taken at
 * start-up (moved every HT_CLOCK_REBASE_NS) to the anchor's sample. The
 * first rate is used as soon as it is exact to HT_CLOCK_RATE_PPM - the
 * samples' own uncertainty against the interval, a couple of milliseconds
 * on an idle machine (HT_CLOCK_FIRST_NS at the earliest) - so that a busy
 * program is on the counter within milliseconds of its first event; until
 * then readers call clock_gettime(). Each later anchor is due after as
 * long as the rate in force was measured over (2, 4, 8 ... ms, then every
 * HT_CLOCK_ANCHOR_NS), so the rate is refined over ever longer intervals
 * while the drift a young rate allows stays at a few sample errors.
 *
 * A segment is trusted for HT_CLOCK_SPAN_NS, and at most HT_CLOCK_TRUST
 * times the interval its rate was measured over: the rate's error then
 * adds at most that many sample errors (tens of nanoseconds each). A
 * reader past it (the flusher has not re-anchored: the machine was
 * suspended, or is starved) calls clock_gettime(), as readers do before
 * the first anchor and everywhere the TSC is not the kernel's clock. f
 * stays within a few microseconds of clock_gettime, so such a switch can
 * step back by at most that much; it does not happen while the flusher
 * runs. Nothing here allocates.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#if HT_CLOCK_TSC
#include <cpuid.h>
#endif

#define HT_CLOCK_ANCHOR_NS (50u * 1000000u)      /* re-anchor this often, once the rate is known */
#define HT_CLOCK_FIRST_NS (2u * 1000000u)        /* the first rate is measured over this at least */
#define HT_CLOCK_RATE_PPM 30u                    /* ... and is this exact (samples vs. interval) */
#define HT_CLOCK_TRUST 16u                       /* a segment's span: times its rate's interval */
#define HT_CLOCK_HORIZON_NS (200u * 1000000u)    /* a gap to the real clock closes over this */
#define HT_CLOCK_MARGIN_NS (1000000u)            /* a new segment starts this far ahead */
#define HT_CLOCK_BUMP_NS 2000u                   /* the first segment starts this far ahead */
#define HT_CLOCK_REBASE_NS (10ull * 1000000000u) /* the rate is measured over 10..20 s */
#define HT_CLOCK_MAX_JUMP_NS (10u * 1000000u)    /* off by more: start afresh at the real clock */
#define HT_CLOCK_SPAN_NS (250u * 1000000u)       /* a segment is trusted this long */

ht_clock_t ht__clock;

static pthread_mutex_t anchor_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t ht__clock_real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if HT_CLOCK_TSC

/* Writer state, under anchor_lock. */
static struct {
  int usable;           /* the TSC is the kernel's clocksource */
  uint64_t base_tsc[2]; /* rate baselines: [0] older, [1] newer */
  uint64_t base_ns[2];
  uint64_t base_err[2];     /* their uncertainty, counter ticks */
  uint64_t last_anchor_ns;  /* real time of the last anchor */
  uint64_t tsc0, ns0, mult; /* the segment in force, as published */
  uint64_t rate;            /* the counter's measured rate, as a mult */
  uint64_t rate_ns;         /* the interval it was measured over, 0 while unknown */
} w;

uint64_t ht__clock_now_slow(void) {
  for (;;) {
    uint32_t seq = HT__CLOCK_LOAD(seq);
    if (!HT__CLOCK_LOAD(on))
      return ht__clock_real_ns();
    uint64_t t = ht__tsc_ordered();
    uint64_t tsc0 = HT__CLOCK_LOAD(tsc0), span = HT__CLOCK_LOAD(span), v;
    if (t - tsc0 < span)
      v = ht__clock_eval(t, tsc0, HT__CLOCK_LOAD(ns0), HT__CLOCK_LOAD(mult));
    else if (t < tsc0 && tsc0 - t < span) /* published ahead of time */
      v = ht__clock_eval(t, HT__CLOCK_LOAD(prev_tsc0), HT__CLOCK_LOAD(prev_ns0),
                         HT__CLOCK_LOAD(prev_mult));
    else /* far from the segment: not re-anchored (a suspend?), or the counter went back */
      return ht__clock_real_ns();
    if ((seq & 1) == 0 && HT__CLOCK_LOAD(seq) == seq)
      return v;
  }
}

/* One (counter, real time) pair: clock_gettime() bracketed by two counter
 * reads, the narrowest of a few tries, so that a preemption in between
 * does not skew it. Returns its uncertainty: half the bracket, in ticks. */
static uint64_t sample(uint64_t *tsc, uint64_t *ns) {
  uint64_t best = UINT64_MAX;
  for (int i = 0; i < 5; i++) {
    uint64_t a = ht__tsc_ordered();
    uint64_t r = ht__clock_real_ns();
    uint64_t b = ht__tsc_ordered();
    if (b - a < best) {
      best = b - a;
      *tsc = a + (b - a) / 2;
      *ns = r;
    }
  }
  return best / 2 + 1;
}

/* 1 when the kernel keeps time with the TSC. open/read, not stdio: this
 * runs inside the first traced allocation and must not allocate. */
static int tsc_is_kernel_clock(void) {
  char buf[32];
  int fd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n == 4 && memcmp(buf, "tsc\n", 4) == 0;
}

/* mult such that `ticks` counter ticks are `ns` nanoseconds. */
static uint64_t mult_of(uint64_t ns, uint64_t ticks) {
  return ticks ? (uint64_t)(((ht_u128)ns << 32) / ticks) : 0;
}

/* How long a segment with the rate in force is trusted: the rate's error
 * grows with the time it is applied for, in proportion to the interval
 * it was measured over. */
static uint64_t trust_ns(void) {
  uint64_t ns = (uint64_t)HT_CLOCK_TRUST * w.rate_ns;
  return ns < HT_CLOCK_SPAN_NS ? ns : HT_CLOCK_SPAN_NS;
}

/* Publishes segment {tsc0, ns0, mult}, trusted for trust_ns(), keeping
 * the one in force as the previous segment; a first segment is its own
 * previous one (readers before its start extrapolate it back).
 * seq_cst stores: the odd sequence number is visible before any field
 * changes (readers load with acquire). */
static void publish(uint64_t tsc0, uint64_t ns0, uint64_t mult, int first) {
  ht_clock_t *c = &ht__clock;
  uint32_t seq = atomic_load_explicit(&c->seq, memory_order_relaxed);
  atomic_store(&c->seq, seq + 1);
  atomic_store(&c->prev_tsc0, first ? tsc0 : w.tsc0);
  atomic_store(&c->prev_ns0, first ? ns0 : w.ns0);
  atomic_store(&c->prev_mult, first ? mult : w.mult);
  atomic_store(&c->tsc0, tsc0);
  atomic_store(&c->ns0, ns0);
  atomic_store(&c->mult, mult);
  atomic_store(&c->span, (uint64_t)(((ht_u128)trust_ns() << 32) / w.rate));
  atomic_store(&c->on, 1);
  atomic_store(&c->seq, seq + 2);
  w.tsc0 = tsc0;
  w.ns0 = ns0;
  w.mult = mult;
}

/* A new segment from the sample (tsc, ns), rate `rate` (a mult). Returns
 * 0 when the segment in force has not been in force for a margin yet: a
 * reader that sees the new parameters must be past the previous segment's
 * start, since only that one is kept. anchor_lock held. */
static int reanchor(uint64_t tsc, uint64_t ns, uint64_t rate) {
  uint64_t ahead = (uint64_t)(((ht_u128)HT_CLOCK_MARGIN_NS << 32) / rate);
  uint64_t horizon = (uint64_t)(((ht_u128)HT_CLOCK_HORIZON_NS << 32) / rate);
  uint64_t a = tsc + ahead;                  /* where the new segment starts */
  uint64_t real_a = ns + HT_CLOCK_MARGIN_NS; /* the real clock there */
  if (!atomic_load_explicit(&ht__clock.on, memory_order_relaxed) || tsc < w.tsc0) {
    /* From clock_gettime to f (at first, or after the counter went back
     * across a suspend: readers are on clock_gettime below the segment):
     * start a hair ahead, so that no reader who just had clock_gettime's
     * answer gets a smaller one from f. */
    publish(a, real_a + HT_CLOCK_BUMP_NS, rate, 1);
    return 1;
  }
  if (tsc < w.tsc0 + ahead)
    return 0;
  if (ht__tsc_ordered() >= tsc + ahead / 2)
    return 0; /* preempted since the sample: the new segment would start too soon */
  uint64_t fa = ht__clock_eval(a, w.tsc0, w.ns0, w.mult); /* continuity */
  if (real_a > fa + HT_CLOCK_MAX_JUMP_NS) {
    /* Far behind: a step forward keeps time increasing, and closing the
     * gap by slewing would take long. */
    publish(a, real_a, rate, 0);
    return 1;
  }
  if (fa > real_a + HT_CLOCK_MAX_JUMP_NS) {
    /* Far ahead: the counter ran on while CLOCK_MONOTONIC did not (a
     * suspend). Past the segment's span readers have been on clock_gettime;
     * start afresh from it. Only times handed out within the span after
     * the resume can be later than the next ones. */
    publish(a, real_a + HT_CLOCK_BUMP_NS, rate, 1);
    return 1;
  }
  /* The slope that meets the real clock at a + horizon, within 1/64 of the
   * measured rate: f stays increasing whatever the gap. */
  uint64_t goal = real_a + HT_CLOCK_HORIZON_NS;
  uint64_t mult = goal > fa ? mult_of(goal - fa, horizon) : 0;
  uint64_t lo = rate - rate / 64, hi = rate + rate / 64;
  mult = mult < lo ? lo : mult > hi ? hi : mult;
  publish(a, fa, mult, 0);
  return 1;
}

/* Both baselines become the sample (tsc, ns) of uncertainty err. */
static void rebase_at(uint64_t tsc, uint64_t ns, uint64_t err) {
  w.base_tsc[0] = w.base_tsc[1] = tsc;
  w.base_ns[0] = w.base_ns[1] = ns;
  w.base_err[0] = w.base_err[1] = err;
}

/* 1 when the CPU has rdtscp (CPUID 0x80000001, EDX bit 27); a hypervisor
 * may hide it. */
static int has_rdtscp(void) {
  unsigned a, b, c, d;
  return __get_cpuid(0x80000001, &a, &b, &c, &d) && (d >> 27 & 1);
}

void ht__clock_init(int use_tsc) {
  pthread_mutex_lock(&anchor_lock);
  if (atomic_load_explicit(&ht__clock.on, memory_order_relaxed)) {
    /* Once published, the mapping stays: dropping back to clock_gettime()
     * or to a fresh mapping could hand out an earlier time. */
    pthread_mutex_unlock(&anchor_lock);
    return;
  }
  memset(&w, 0, sizeof w);
  w.usable = use_tsc > 0 || (use_tsc < 0 && tsc_is_kernel_clock());
  atomic_store_explicit(&ht__clock.rdtscp, has_rdtscp(), memory_order_release);
  if (w.usable) {
    uint64_t tsc, ns, err = sample(&tsc, &ns);
    rebase_at(tsc, ns, err);
    w.last_anchor_ns = ns;
  }
  pthread_mutex_unlock(&anchor_lock);
}

/* 1 when a rate measured over `ticks` from samples of uncertainty err
 * (both ends) is exact to HT_CLOCK_RATE_PPM, over HT_CLOCK_FIRST_NS at
 * least. A preempted sample or a noisy machine only delays it. */
static int rate_is_exact(uint64_t ticks, uint64_t ns, uint64_t err) {
  return ns >= HT_CLOCK_FIRST_NS && (ht_u128)err * 1000000u <= (ht_u128)ticks * HT_CLOCK_RATE_PPM;
}

/* Updates w.rate (a mult) and w.rate_ns from the baselines to the sample
 * (tsc, ns) of uncertainty err, once the rate is exact enough; the rate
 * known before holds meanwhile. The baselines move every
 * HT_CLOCK_REBASE_NS, so that the rate follows what NTP does to
 * CLOCK_MONOTONIC. anchor_lock held. */
static void measure_rate(uint64_t tsc, uint64_t ns, uint64_t err) {
  if (ns - w.base_ns[1] >= HT_CLOCK_REBASE_NS) {
    w.base_tsc[0] = w.base_tsc[1];
    w.base_ns[0] = w.base_ns[1];
    w.base_err[0] = w.base_err[1];
    w.base_tsc[1] = tsc;
    w.base_ns[1] = ns;
    w.base_err[1] = err;
  }
  if (tsc <= w.base_tsc[0])
    return;
  uint64_t ticks = tsc - w.base_tsc[0], span = ns - w.base_ns[0];
  if (!rate_is_exact(ticks, span, err + w.base_err[0]))
    return; /* too short to tell anything, even a jump */
  uint64_t rate = mult_of(span, ticks);
  uint64_t off = rate > w.rate ? rate - w.rate : w.rate - rate;
  if (w.rate && off > w.rate / 1024) {
    /* The counter's rate is constant: a jump means the counter and the
     * clock parted (a suspend). Measure afresh from here. */
    rebase_at(tsc, ns, err);
    return;
  }
  w.rate = rate;
  w.rate_ns = span;
}

/* How long after the last anchor the next one is due: the first as soon
 * as a rate can be exact, then after as long as the rate in force was
 * measured over (each anchor doubles that interval), at most
 * HT_CLOCK_ANCHOR_NS. */
static uint64_t anchor_gap_ns(void) {
  uint64_t gap = w.rate_ns < HT_CLOCK_FIRST_NS ? HT_CLOCK_FIRST_NS : w.rate_ns;
  return gap < HT_CLOCK_ANCHOR_NS ? gap : HT_CLOCK_ANCHOR_NS;
}

int ht__clock_anchor(int force) {
  if (pthread_mutex_trylock(&anchor_lock) != 0)
    return 0; /* someone else is at it */
  int done = 0;
  if (w.usable) {
    uint64_t tsc, ns;
    uint64_t err = sample(&tsc, &ns);
    if (force || ns - w.last_anchor_ns >= anchor_gap_ns()) {
      measure_rate(tsc, ns, err);
      if (force && !w.rate && tsc > w.base_tsc[0]) { /* tests: any interval will do */
        w.rate = mult_of(ns - w.base_ns[0], tsc - w.base_tsc[0]);
        w.rate_ns = ns - w.base_ns[0];
      }
      if (w.rate) {
        done = reanchor(tsc, ns, w.rate);
        if (done)
          w.last_anchor_ns = ns;
      }
    }
  }
  pthread_mutex_unlock(&anchor_lock);
  return done;
}

uint64_t ht__clock_anchor_due_ns(void) {
  pthread_mutex_lock(&anchor_lock);
  uint64_t wait = UINT64_MAX;
  if (w.usable) {
    uint64_t due = w.last_anchor_ns + anchor_gap_ns(), now = ht__clock_real_ns();
    wait = due > now ? due - now : 0;
  }
  pthread_mutex_unlock(&anchor_lock);
  return wait;
}

void ht__clock_hold(int hold) {
  if (hold)
    pthread_mutex_lock(&anchor_lock);
  else
    pthread_mutex_unlock(&anchor_lock);
}

#else /* no TSC: clock_gettime() always */

void ht__clock_init(int use_tsc) {
  (void)use_tsc;
}

int ht__clock_anchor(int force) {
  (void)force;
  return 0;
}

uint64_t ht__clock_anchor_due_ns(void) {
  return UINT64_MAX;
}

void ht__clock_hold(int hold) {
  (void)hold;
}

#endif
