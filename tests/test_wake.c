/* test_wake.c - the loop's wake-up from other threads (daemon/wake.c). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <uv.h>

#include "wake.h"

#define ITEMS 20000

/* A queue as the worker and the store keep theirs: a sender wakes the loop
 * only when it queues into an empty queue, so one lost wake-up leaves items
 * unseen and the deadline fails the test. */
typedef struct {
  pthread_mutex_t lock;
  unsigned queued, taken;
  htd_wake_t wake;
  uv_timer_t deadline;
  pthread_t loop_thread;
  int off_loop; /* fn ran on another thread */
  unsigned calls;
} queue_t;

static void *sender(void *arg) {
  queue_t *q = arg;
  for (unsigned i = 0; i < ITEMS; i++) {
    pthread_mutex_lock(&q->lock);
    int was_empty = q->queued == q->taken;
    q->queued++;
    pthread_mutex_unlock(&q->lock);
    if (was_empty)
      htd_wake_send(&q->wake);
  }
  return NULL;
}

static void take_all(void *arg) {
  queue_t *q = arg;
  q->calls++;
  if (!pthread_equal(pthread_self(), q->loop_thread))
    q->off_loop = 1;
  pthread_mutex_lock(&q->lock);
  q->taken = q->queued;
  int done = q->taken == ITEMS;
  pthread_mutex_unlock(&q->lock);
  if (done) {
    uv_close((uv_handle_t *)&q->wake.poll, NULL);
    uv_close((uv_handle_t *)&q->deadline, NULL);
  }
}

static void give_up(uv_timer_t *t) {
  queue_t *q = t->data;
  uv_close((uv_handle_t *)&q->wake.poll, NULL);
  uv_close((uv_handle_t *)&q->deadline, NULL);
}

Test(wake, every_item_a_thread_queues_is_seen_on_the_loop_thread) {
  uv_loop_t loop;
  cr_assert(eq(int, uv_loop_init(&loop), 0));
  queue_t q = {.lock = PTHREAD_MUTEX_INITIALIZER, .loop_thread = pthread_self()};
  cr_assert(eq(int, htd_wake_init(&loop, &q.wake, take_all, &q), 0));
  uv_timer_init(&loop, &q.deadline);
  q.deadline.data = &q;
  uv_timer_start(&q.deadline, give_up, 10000, 0);
  pthread_t t;
  cr_assert(eq(int, pthread_create(&t, NULL, sender, &q), 0));
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(t, NULL);
  cr_expect(eq(u32, q.taken, ITEMS), "items seen %u of %u", q.taken, ITEMS);
  cr_expect(eq(int, q.off_loop, 0));
  cr_expect(le(u32, q.calls, ITEMS)); /* wake-ups close together may share a call */
  htd_wake_free(&q.wake);
  cr_expect(eq(int, uv_loop_close(&loop), 0));
}

Test(wake, a_send_once_the_loop_stopped_polling_is_harmless) {
  uv_loop_t loop;
  cr_assert(eq(int, uv_loop_init(&loop), 0));
  queue_t q = {.lock = PTHREAD_MUTEX_INITIALIZER, .loop_thread = pthread_self()};
  cr_assert(eq(int, htd_wake_init(&loop, &q.wake, take_all, &q), 0));
  uv_close((uv_handle_t *)&q.wake.poll, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  htd_wake_send(&q.wake); /* as the store's last done-callbacks do at shutdown */
  cr_expect(eq(u32, q.calls, 0));
  htd_wake_free(&q.wake);
  cr_expect(eq(int, q.wake.fd, -1));
  cr_expect(eq(int, uv_loop_close(&loop), 0));
}
