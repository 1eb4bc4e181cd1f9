/* callbacks.c - the alloc callback (LibHTTP), the failed-alloc hook
 * (ESP-IDF) and the failure path.
 *
 * A transaction is committed while its heap's lock may be held; the user's
 * callback must not run there (it may allocate: with the lock held that
 * would deadlock on the same heap). So ht__commit() only notes the
 * transaction in thread-local storage, and every public entry point calls
 * ht__deliver() as its last step, with no lock held. A thread-local guard
 * keeps a callback that allocates from calling itself again: the nested
 * allocation is served, counted and traced, but not reported to the
 * callback.
 */
#define _GNU_SOURCE
#include <string.h>

#include "caps.h"

_Atomic(ht_alloc_callback_t) ht__alloc_cb;
static _Atomic(ht_alloc_failed_hook_t) failed_hook;

void ht_set_alloc_callback(ht_alloc_callback_t fn) {
  atomic_store_explicit(&ht__alloc_cb, fn, memory_order_release);
}

int ht_caps_register_failed_alloc_callback(ht_alloc_failed_hook_t callback) {
  if (!callback)
    return HT_EINVAL;
  atomic_store_explicit(&failed_hook, callback, memory_order_release);
  return HT_OK;
}

/* LibHTTP's action names: calloc and aligned are "malloc"; a realloc of
 * NULL is committed as a malloc and a realloc to 0 as a free already. */
static const char *action_of(uint32_t op) {
  switch (op) {
  case HT_OP_FREE:
    return "free";
  case HT_OP_REALLOC:
    return "realloc";
  default:
    return "malloc";
  }
}

void ht__deliver_slow(void) {
  ht_tls_t *t = &ht__tls;
  t->armed = 0;
  ht_alloc_callback_t fn = atomic_load_explicit(&ht__alloc_cb, memory_order_acquire);
  if (!fn || t->in_cb)
    return;
  ht_totals_t tot;
  ht_get_totals(&tot);
  /* Copy out: a nested allocation in fn rewrites the note. */
  const char *file = ht__call_file(t->note_call);
  int call_line = ht__call_line(t->note_call);
  unsigned line = call_line > 0 ? (unsigned)call_line : 0;
  const char *action = action_of(t->note_op);
  int64_t bytes = t->note_bytes;
  t->in_cb = 1;
  fn(file, line, action, bytes, tot.cur_blocks, tot.cur_bytes);
  t->in_cb = 0;
}

void ht__fail(ht_call_t *c, uint32_t op, const void *old_ptr, size_t size, uint32_t caps,
              size_t align) {
  ht_tls_t *t = &ht__tls;
  t->armed = 0;
  ht__acct_failure();
  if (ht__tracing_on()) {
    ht_event_t ev = {0};
    ev.op = HT_OP_FAILED;
    ev.failed_op = op;
    ev.old_ptr = (uintptr_t)old_ptr;
    ev.size = size;
    ev.caps = caps;
    ev.align = align;
    ht__trace(c, &ev, 0, 0);
  }
  ht_alloc_failed_hook_t hook = atomic_load_explicit(&failed_hook, memory_order_acquire);
  if (hook && !t->in_hook) {
    t->in_hook = 1;
    hook(size, caps, c->api);
    t->in_hook = 0;
  }
}
