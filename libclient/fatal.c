/* fatal.c - a program killed by a signal: its events shipped, its session
 * marked "killed".
 *
 * A signal that ends the process skips atexit, so without help the rings'
 * last events (up to one flush interval) would be lost and the daemon
 * would only see the connection drop. For the signals whose default
 * action ends the process, and only where the program leaves them at that
 * default, heaptrace installs a handler. The handler asks the flusher
 * thread to ship every ring and send END "killed" with the signal number
 * (transport.c), waits for it, at most HT_FATAL_WAIT_MS, then lets the
 * signal take its default course: the handler is reset on entry
 * (SA_RESETHAND) and the signal raised again, so the exit status and any
 * core dump are what they would be without tracing.
 *
 * Everything in the handler is async-signal-safe: atomics, futex and
 * clock_gettime system calls, raise. SIGKILL cannot be caught; such a
 * session ends "disconnected". A program that installs its own handler
 * replaces this one, and heaptrace never replaces a program's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define HT_FATAL_WAIT_MS 2000

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
                                    SIGTERM, SIGINT, SIGHUP, SIGQUIT};
#define N_FATAL (sizeof fatal_signals / sizeof *fatal_signals)

static _Atomic int pending;       /* the signal to report, 0 if none */
static _Atomic uint32_t reported; /* futex word: the flusher is done with it */
static _Thread_local int on_flusher;

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits until the flusher has reported the signal, or the time is up. */
static void wait_reported(void) {
  uint64_t until = mono_ms() + HT_FATAL_WAIT_MS;
  for (;;) {
    if (atomic_load(&reported))
      return;
    uint64_t now = mono_ms();
    if (now >= until)
      return;
    uint64_t left = until - now;
    struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
    syscall(SYS_futex, &reported, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
  }
}

static void on_fatal(int sig) {
  int saved = errno;
  int none = 0;
  /* The flusher cannot wait for itself; a second signal waits for the
   * report of the first. */
  if (!on_flusher && ht__transport_flusher_alive()) {
    if (atomic_compare_exchange_strong(&pending, &none, sig))
      ht__transport_kick();
    wait_reported();
  }
  errno = saved;
  raise(sig); /* SA_RESETHAND: the default action now, SA_NODEFER: at once */
}

void ht__fatal_install(void) {
  for (size_t i = 0; i < N_FATAL; i++) {
    struct sigaction old;
    if (sigaction(fatal_signals[i], NULL, &old) != 0)
      continue;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
      continue; /* the program's own, or ignored: left alone */
    struct sigaction sa = {.sa_handler = on_fatal, .sa_flags = SA_RESETHAND | SA_NODEFER};
    sigemptyset(&sa.sa_mask);
    sigaction(fatal_signals[i], &sa, NULL);
  }
}

void ht__fatal_block_async(sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

void ht__fatal_on_flusher(void) {
  on_flusher = 1;
}

int ht__fatal_pending(void) {
  return atomic_load_explicit(&pending, memory_order_acquire);
}

void ht__fatal_reported(void) {
  atomic_store(&reported, 1);
  syscall(SYS_futex, &reported, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

void ht__fatal_forget(void) {
  atomic_store(&pending, 0);
  atomic_store(&reported, 0);
}
