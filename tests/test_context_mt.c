/*
 * test_context_mt.c - contexts and threads.
 *
 * CPython's test_context_threads_1 and the thread half of
 * test_context_manager_enter_again_after_exit, then what pthreads add:
 * exits refused from another thread, threads that end, leave through
 * pthread_exit() or are cancelled while inside a context, per-thread base
 * contexts, racing entries and readers of a context its owner is writing.
 *
 * Helper threads never call Check: they record the line of their first
 * failed check in thr_fail_line and the test's own thread asserts on it.
 */
#include "config.h"

#include "context_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>


/* A level-triggered signal between threads. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stage;
};

static struct gate gt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                         0};

static void setup(void)
{
    fixture_setup();
    gt.stage = 0;
    atomic_store(&thr_fail_line, 0);
}

static void gate_bump(void)
{
    pthread_mutex_lock(&gt.mu);
    gt.stage++;
    pthread_cond_broadcast(&gt.cv);
    pthread_mutex_unlock(&gt.mu);
}

static void gate_wait(int stage)
{
    pthread_mutex_lock(&gt.mu);
    while (gt.stage < stage)
        pthread_cond_wait(&gt.cv, &gt.mu);
    pthread_mutex_unlock(&gt.mu);
}

static void join_ok(pthread_t th, void *expect)
{
    void *ret = BAD;
    ck_ok(pthread_join(th, &ret));
    ck_assert_ptr_eq(ret, expect);
    ck_threads_ok();
}

/* test_context_threads_1 with a barrier in place of random sleeps: every
 * thread sets, all wait, every thread reads its own value back. */
enum { T1_THREADS = 10, T1_ROUNDS = 10 };
static pthread_barrier_t barrier;

static void *threads_1_sub(void *arg)
{
    uintptr_t num = (uintptr_t)arg;
    for (uintptr_t i = 0; i < T1_ROUNDS; i++) {
        THR_CHECK(ctx_var_set(va, P(num + i), NULL) == 0);
        pthread_barrier_wait(&barrier);
        THR_CHECK(ctx_var_get_or(va, NULL) == P(num + i));
        pthread_barrier_wait(&barrier);
    }
    return arg;
}

START_TEST(threads_1)
{
    pthread_t th[T1_THREADS];
    ck_ok(pthread_barrier_init(&barrier, NULL, T1_THREADS));
    for (uintptr_t i = 0; i < T1_THREADS; i++)
        ck_ok(pthread_create(&th[i], NULL, threads_1_sub, P(i * 100)));
    for (uintptr_t i = 0; i < T1_THREADS; i++)
        join_ok(th[i], P(i * 100));
    pthread_barrier_destroy(&barrier);
}
END_TEST

static void *reenter_elsewhere(void *arg)
{
    THR_CHECK(ctx_context_enter(arg) == 0);
    THR_CHECK(ctx_var_get_or(vdef, NULL) == P(2));
    THR_CHECK(ctx_var_set(vdef, P(3), NULL) == 0);
    THR_CHECK(ctx_context_exit(arg) == 0);
    return NULL;
}

/* test_context_manager and _enter_again_after_exit, then from a thread. */
START_TEST(enter_again_after_exit)
{
    ctx_context_t *c = NULL;
    pthread_t th;
    ck_ok(ctx_copy_context(&c));
    ck_ok(ctx_context_enter(c));
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ck_ok(ctx_var_set(vdef, P(2), NULL));
    ck_assert_ptr_eq(get_val(vdef), P(2));
    ck_ok(ctx_context_exit(c));
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ck_ok(ctx_context_enter(c));
    ck_assert_ptr_eq(get_val(vdef), P(2));
    ck_ok(ctx_context_exit(c));
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ck_ok(pthread_create(&th, NULL, reenter_elsewhere, c));
    join_ok(th, NULL);
    ck_assert_ptr_eq(ctx_val(c, vdef), P(3));
    ctx_context_release(c);
}
END_TEST

static void *hold_entered(void *arg UNUSED)
{
    THR_CHECK(ctx_context_enter(ca) == 0);
    gate_bump();
    gate_wait(2);
    THR_CHECK(ctx_context_exit(ca) == 0);
    return NULL;
}

START_TEST(rejects_exit_from_different_thread)
{
    pthread_t th;
    ck_ok(pthread_create(&th, NULL, hold_entered, NULL));
    gate_wait(1);
    ck_assert_int_eq(ctx_context_exit(ca), EPERM);
    ck_assert_int_eq(ctx_context_run(ca, count_call, NULL, NULL), EBUSY);
    ck_assert_int_eq(ctx_context_enter(ca), EBUSY);
    ck_assert_int_eq(atomic_load(&calls), 0);
    gate_bump();
    join_ok(th, NULL);
    ck_assert_int_eq(ctx_context_exit(ca), EPERM);
    ck_assert_ptr_eq(run_in(ca, count_call, P(5)), P(5));
}
END_TEST

static void *enter_and_return(void *arg UNUSED)
{
    THR_CHECK(ctx_context_enter(ca) == 0);
    THR_CHECK(ctx_var_set(va, P(9), NULL) == 0);
    return NULL;
}

/* A thread that ends without exiting: its teardown exits for it. */
START_TEST(thread_ends_while_entered)
{
    pthread_t th;
    ck_ok(pthread_create(&th, NULL, enter_and_return, NULL));
    join_ok(th, NULL);
    ck_ok(ctx_context_enter(ca));
    ck_assert_ptr_eq(get_val(va), P(9));
    ck_ok(ctx_context_exit(ca));
}
END_TEST

static void *fresh_thread_base(void *arg UNUSED)
{
    ctx_context_t *c = NULL;
    void *out = BAD;
    THR_CHECK(ctx_var_get(va, &out) == ENOENT && out == BAD);
    THR_CHECK(ctx_copy_context(&c) == 0 && ctx_context_len(c) == 0);
    ctx_context_release(c);
    THR_CHECK(ctx_var_set(va, P(2), NULL) == 0);
    return NULL;
}

/* set outside any run writes the thread's base; plain pthreads start with
 * an empty base of their own. */
START_TEST(base_context_per_thread)
{
    ctx_context_t *c = NULL;
    pthread_t th;
    ck_ok(ctx_var_set(va, P(1), NULL));
    ck_ok(ctx_copy_context(&c)); /* test_context_get_context_1 */
    ck_assert_ptr_eq(ctx_val(c, va), P(1));
    ck_assert_uint_eq(ctx_context_len(c), 1);
    ck_ok(pthread_create(&th, NULL, fresh_thread_base, NULL));
    join_ok(th, NULL);
    ck_assert_ptr_eq(get_val(va), P(1));
    ctx_context_release(c);
}
END_TEST


/* Threads racing to enter one context.  Whoever gets in bumps a counter
 * bound in it, so the final count proves both that entries never
 * overlapped and that each saw the previous one's write. */
enum { RACE_THREADS = 8, RACE_ITERS = 2000 };
static atomic_int inside, entered, refused;

static void *race_body(void *arg UNUSED)
{
    THR_CHECK(atomic_fetch_add(&inside, 1) == 0);
    uintptr_t n = (uintptr_t)ctx_var_get_or(va, P(0));
    THR_CHECK(ctx_var_set(va, P(n + 1), NULL) == 0);
    atomic_fetch_sub(&inside, 1);
    return NULL;
}

static void *race_thread(void *arg)
{
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < RACE_ITERS; i++) {
        /* Half the attempts run, half enter and exit. */
        int rc = i & 1 ? ctx_context_run(ca, race_body, NULL, NULL)
                       : ctx_context_enter(ca);
        if (rc == 0 && !(i & 1)) {
            race_body(NULL);
            THR_CHECK(ctx_context_exit(ca) == 0);
        }
        if (rc == 0) {
            atomic_fetch_add(&entered, 1);
            continue;
        }
        THR_CHECK(rc == EBUSY);
        THR_CHECK(ctx_context_exit(ca) == EPERM);
        atomic_fetch_add(&refused, 1);
    }
    return arg;
}

START_TEST(race_to_enter)
{
    pthread_t th[RACE_THREADS];
    ck_ok(pthread_barrier_init(&barrier, NULL, RACE_THREADS));
    for (int i = 0; i < RACE_THREADS; i++)
        ck_ok(pthread_create(&th[i], NULL, race_thread, NULL));
    for (int i = 0; i < RACE_THREADS; i++)
        join_ok(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    ck_assert_int_eq(atomic_load(&entered) + atomic_load(&refused),
                     RACE_THREADS * RACE_ITERS);
    ck_assert_int_ge(atomic_load(&entered), 1);
    ck_assert_ptr_eq(ctx_val(ca, va), P(atomic_load(&entered)));
}
END_TEST

/* Readers of a context its owner is writing.  The owner sets a = i then
 * b = i for i = 1..N, and binds one more variable every 1000 steps; so
 * every snapshot has a == b or a == b + 1, and values and the number of
 * bindings only grow.  Half way, the owner waits until every reader has
 * seen its writes, so readers surely overlap the second half. */
enum { RD_SETS = 20000, RD_READERS = 2, RD_EXTRAS = 16 };
static ctx_var_t *extra[RD_EXTRAS];
static atomic_bool owner_done;

static void *owner_body(void *arg)
{
    for (uintptr_t i = 1; i <= RD_SETS; i++) {
        THR_CHECK(ctx_var_set(va, P(i), NULL) == 0);
        THR_CHECK(ctx_var_set(vb, P(i), NULL) == 0);
        if (i == RD_SETS / 2)
            gate_wait(RD_READERS);
        if (i % 1000 == 0 && i / 1000 <= RD_EXTRAS)
            THR_CHECK(ctx_var_set(extra[i / 1000 - 1], P(i), NULL) == 0);
    }
    return arg;
}

static void *owner_thread(void *arg)
{
    pthread_barrier_wait(&barrier);
    THR_CHECK(ctx_context_run(ca, owner_body, NULL, NULL) == 0);
    atomic_store(&owner_done, true);
    return arg;
}

static int count_binding(ctx_var_t *var UNUSED, void *value, void *arg)
{
    THR_CHECK((uintptr_t)value <= RD_SETS);
    ++*(size_t *)arg;
    return 0;
}

static void read_snapshot(uintptr_t *last_a)
{
    ctx_context_t *c = NULL;
    void *va_ = NULL, *vb_ = NULL;
    size_t n = 0;
    THR_CHECK(ctx_context_copy(ca, &c) == 0);
    THR_CHECK(ctx_context_get(c, va, &va_) == 0);
    THR_CHECK(ctx_context_get(c, vb, &vb_) == 0);
    uintptr_t a = (uintptr_t)va_, b = (uintptr_t)vb_;
    THR_CHECK(a == b || a == b + 1);
    THR_CHECK(a >= *last_a && a <= RD_SETS);
    *last_a = a;
    THR_CHECK(ctx_context_foreach(c, count_binding, &n) == 0);
    THR_CHECK(n == ctx_context_len(c));
    THR_CHECK(n >= 2 && n - 2 <= a / 1000);
    ctx_context_release(c);
}

static void read_direct(size_t *last_len)
{
    void *a = NULL, *b = NULL;
    size_t len, n = 0;
    THR_CHECK(ctx_context_get(ca, vb, &b) == 0);
    THR_CHECK(ctx_context_get(ca, va, &a) == 0);
    THR_CHECK((uintptr_t)a >= (uintptr_t)b);
    len = ctx_context_len(ca);
    THR_CHECK(len >= *last_len && len <= 2 + RD_EXTRAS);
    THR_CHECK(ctx_context_foreach(ca, count_binding, &n) == 0);
    THR_CHECK(n >= len && n <= 2 + RD_EXTRAS);
    THR_CHECK(ctx_context_contains(ca, va));
    *last_len = len;
}

static void *reader_thread(void *arg)
{
    uintptr_t last_a = 0;
    size_t last_len = 0;
    bool done, halfway = false;
    pthread_barrier_wait(&barrier);
    do {
        done = atomic_load(&owner_done);
        read_snapshot(&last_a);
        read_direct(&last_len);
        if (!halfway && last_a >= RD_SETS / 2) {
            halfway = true;
            gate_bump();
        }
    } while (!done);
    THR_CHECK(last_a == RD_SETS);
    return arg;
}

static void *bind_zero(void *arg UNUSED)
{
    ck_ok(ctx_var_set(va, P(0), NULL));
    ck_ok(ctx_var_set(vb, P(0), NULL));
    return NULL;
}

START_TEST(readers_copy_while_owner_sets)
{
    pthread_t th[RD_READERS + 1];
    for (int i = 0; i < RD_EXTRAS; i++)
        extra[i] = new_var("extra", CTX_MISSING);
    run_in(ca, bind_zero, NULL);
    ck_ok(pthread_barrier_init(&barrier, NULL, RD_READERS + 1));
    ck_ok(pthread_create(&th[0], NULL, owner_thread, NULL));
    for (int i = 1; i <= RD_READERS; i++)
        ck_ok(pthread_create(&th[i], NULL, reader_thread, NULL));
    for (int i = 0; i <= RD_READERS; i++)
        join_ok(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    ck_assert_ptr_eq(ctx_val(ca, vb), P(RD_SETS));
    ck_assert_uint_eq(ctx_context_len(ca), 2 + RD_EXTRAS);
    for (int i = 0; i < RD_EXTRAS; i++)
        ctx_var_release(extra[i]);
}
END_TEST

/* Leaving two nested runs (ca, then cb) through pthread_exit() or
 * cancellation: the dying thread must exit both. */
static sem_t ready;

static void *leave_body(void *arg)
{
    THR_CHECK(ctx_var_set(va, P(7), NULL) == 0);
    if (arg == NULL)
        pthread_exit(P(1));
    sem_post(&ready);
    for (;;)
        pause(); /* a cancellation point */
}

static void *leave_outer(void *arg)
{
    THR_CHECK(ctx_var_set(va, P(6), NULL) == 0);
    THR_CHECK(ctx_context_run(cb, leave_body, arg, NULL) == 0);
    THR_CHECK(false); /* never returns */
    return NULL;
}

static void *leave_thread(void *arg)
{
    THR_CHECK(ctx_context_run(ca, leave_outer, arg, NULL) == 0);
    THR_CHECK(false);
    return NULL;
}

static void check_left(bool cancel)
{
    pthread_t th;
    ck_ok(sem_init(&ready, 0, 0));
    ck_ok(pthread_create(&th, NULL, leave_thread, cancel ? P(1) : NULL));
    if (cancel) {
        while (sem_wait(&ready) != 0)
            continue;
        ck_ok(pthread_cancel(th));
    }
    join_ok(th, cancel ? PTHREAD_CANCELED : P(1));
    ck_ok(ctx_context_enter(ca));
    ck_assert_ptr_eq(get_val(va), P(6));
    ck_ok(ctx_context_enter(cb));
    ck_assert_ptr_eq(get_val(va), P(7));
    ck_ok(ctx_context_exit(cb));
    ck_ok(ctx_context_exit(ca));
    ck_assert_ptr_eq(run_in(cb, count_call, P(2)), P(2));
    sem_destroy(&ready);
}

START_TEST(pthread_exit_inside_run) { check_left(false); }
END_TEST

START_TEST(cancel_inside_run) { check_left(true); }
END_TEST

static Suite *context_mt_suite(void)
{
    Suite *s = suite_create("context_mt");
    TCase *th = tcase_create("threads");
    tcase_add_checked_fixture(th, setup, fixture_teardown);
    tcase_add_test(th, threads_1);
    tcase_add_test(th, enter_again_after_exit);
    tcase_add_test(th, rejects_exit_from_different_thread);
    tcase_add_test(th, thread_ends_while_entered);
    tcase_add_test(th, base_context_per_thread);
    tcase_add_test(th, race_to_enter);
    tcase_add_test(th, readers_copy_while_owner_sets);
    tcase_add_test(th, pthread_exit_inside_run);
    tcase_add_test(th, cancel_inside_run);
    suite_add_tcase(s, th);
    return s;
}

CTX_TEST_MAIN(context_mt_suite)
