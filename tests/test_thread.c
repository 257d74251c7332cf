/*
 * test_thread.c - ctx_thread_create() and callables: a new thread starts
 * in a copy of its creator's context taken at the call, and neither side
 * sees the other's later changes; pthread attributes are honoured; a
 * thread's base context goes when the thread does; a callable runs on any
 * thread, foreign ones included, in a fresh copy of its snapshot per call.
 *
 * Helper threads never call Check: they record the line of their first
 * failed check in thr_fail_line, which the test's own thread asserts on.
 */
#include "config.h"

#include "internal.h"
#include "testutil.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>

#define P(n) ((void *)(uintptr_t)(n))
#define BAD P(0xbad)


/* Values of `counted` count their holders, so a context that is never
 * freed shows as a hold that never goes. */
static atomic_long holds;
static void hold(void *v) { (void)v; atomic_fetch_add(&holds, 1); }
static void unhold(void *v) { (void)v; atomic_fetch_sub(&holds, 1); }
static char value_a, value_b;

static ctx_var_t *var, *counted;
static sem_t go, done;
static atomic_int ran;

static void setup(void)
{
    ctx_value_ops_t ops = {hold, unhold};
    ck_ok(ctx_var_create(&var, "v", CTX_MISSING, NULL));
    ck_ok(ctx_var_create(&counted, "counted", CTX_MISSING, &ops));
    atomic_store(&holds, 0);
    atomic_store(&ran, 0);
    atomic_store(&thr_fail_line, 0);
    sem_init(&go, 0, 0);
    sem_init(&done, 0, 0);
}

static void teardown(void)
{
    ctx_var_release(counted);
    ctx_var_release(var);
    sem_destroy(&done);
    sem_destroy(&go);
}

static void *read_var(void *unused)
{
    (void)unused;
    atomic_fetch_add(&ran, 1);
    return ctx_var_get_or(var, CTX_MISSING);
}

static void *join_ok(pthread_t th)
{
    void *ret = BAD;
    ck_ok(pthread_join(th, &ret));
    ck_threads_ok();
    return ret;
}

/* ------------------------------------------------------------------ */

static void *child_of_changing_parent(void *unused)
{
    (void)unused;
    sem_wait(&go); /* the creator has changed var by now */
    THR_CHECK(ctx_var_get_or(var, NULL) == P(1));
    THR_CHECK(ctx_var_set(var, P(3), NULL) == 0);
    THR_CHECK(ctx_var_set(counted, &value_b, NULL) == 0);
    sem_post(&done);
    return ctx_var_get_or(var, NULL);
}

START_TEST(inherits_at_create_time_only)
{
    pthread_t th;
    ck_ok(ctx_var_set(var, P(1), NULL));
    ck_ok(ctx_var_set(counted, &value_a, NULL));
    ck_ok(ctx_thread_create(&th, NULL, child_of_changing_parent, NULL));
    ck_ok(ctx_var_set(var, P(2), NULL));
    sem_post(&go);
    sem_wait(&done);
    ck_assert_ptr_eq(ctx_var_get_or(var, NULL), P(2)); /* child's 3 stayed */
    ck_assert_ptr_eq(join_ok(th), P(3));
    /* The child's base (holding value_b) went with it. */
    ck_assert_int_eq(atomic_load(&holds), 1);
}
END_TEST

static void *spawn_inside(void *out)
{
    THR_CHECK(ctx_var_set(var, P(1), NULL) == 0);
    THR_CHECK(ctx_thread_create(out, NULL, child_of_changing_parent, NULL) ==
              0);
    THR_CHECK(ctx_var_set(var, P(7), NULL) == 0);
    return NULL;
}

START_TEST(inherits_the_entered_context)
{
    ctx_context_t *c = NULL;
    pthread_t th;
    void *v = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_var_set(var, P(5), NULL)); /* the base, not current then */
    ck_ok(ctx_context_run(c, spawn_inside, &th, NULL));
    sem_post(&go);
    sem_wait(&done);
    ck_assert_ptr_eq(join_ok(th), P(3));
    ck_ok(ctx_context_get(c, var, &v));
    ck_assert_ptr_eq(v, P(7)); /* the child's 3 did not reach c */
    ck_assert_ptr_eq(ctx_var_get_or(var, NULL), P(5));
    ck_assert_int_eq(atomic_load(&holds), 0);
    ctx_context_release(c);
}
END_TEST

static void *detached_child(void *unused)
{
    (void)unused;
    pthread_attr_t attr;
    int state = -1;
    THR_CHECK(pthread_getattr_np(pthread_self(), &attr) == 0);
    THR_CHECK(pthread_attr_getdetachstate(&attr, &state) == 0);
    pthread_attr_destroy(&attr);
    THR_CHECK(state == PTHREAD_CREATE_DETACHED);
    THR_CHECK(ctx_var_get_or(var, NULL) == P(5));
    THR_CHECK(ctx_var_set(counted, &value_b, NULL) == 0);
    sem_post(&done);
    return NULL;
}

START_TEST(detached_thread)
{
    pthread_attr_t attr;
    pthread_t th;
    ck_ok(pthread_attr_init(&attr));
    ck_ok(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED));
    ck_ok(ctx_var_set(var, P(5), NULL));
    ck_ok(ctx_thread_create(&th, &attr, detached_child, NULL));
    pthread_attr_destroy(&attr);
    sem_wait(&done);
    /* Its base context is freed as it exits; nothing to join, so wait for
     * that to be seen (a leak hangs here until the test's timeout). */
    while (atomic_load(&holds) != 0)
        sched_yield();
    ck_threads_ok();
}
END_TEST

static void *stack_size_of_self(void *unused)
{
    (void)unused;
    pthread_attr_t attr;
    size_t size = 0;
    THR_CHECK(pthread_getattr_np(pthread_self(), &attr) == 0);
    THR_CHECK(pthread_attr_getstacksize(&attr, &size) == 0);
    pthread_attr_destroy(&attr);
    THR_CHECK(ctx_var_get_or(var, NULL) == P(6));
    return P(size);
}

START_TEST(stack_size_honoured)
{
    enum { STACK = 384 * 1024 };
    pthread_attr_t attr;
    pthread_t th;
    ck_ok(pthread_attr_init(&attr));
    ck_ok(pthread_attr_setstacksize(&attr, STACK));
    ck_ok(ctx_var_set(var, P(6), NULL));
    ck_ok(ctx_thread_create(&th, &attr, stack_size_of_self, NULL));
    pthread_attr_destroy(&attr);
    uintptr_t size = (uintptr_t)join_ok(th);
    ck_assert_uint_ge(size, STACK);
    ck_assert_uint_lt(size, 2 * STACK);
}
END_TEST

START_TEST(pthread_create_errors_pass_through)
{
    pthread_attr_t attr;
    pthread_t th;
    ck_ok(pthread_attr_init(&attr));
    /* No address space holds this stack. */
    ck_ok(pthread_attr_setstacksize(&attr, (size_t)1 << 60));
    int expect = pthread_create(&th, &attr, read_var, NULL);
    if (expect == 0) { /* an unusual system: nothing to compare */
        pthread_join(th, NULL);
        pthread_attr_destroy(&attr);
        return;
    }
    ck_assert_int_eq(ctx_thread_create(&th, &attr, read_var, NULL), expect);
    pthread_attr_destroy(&attr);
    ck_assert_int_eq(atomic_load(&ran), 0);
}
END_TEST

static void *set_and_leave(void *unused)
{
    (void)unused;
    THR_CHECK(ctx_var_set(counted, &value_b, NULL) == 0);
    pthread_exit(P(4));
}

START_TEST(pthread_exit_frees_the_base)
{
    pthread_t th;
    ck_ok(ctx_var_set(counted, &value_a, NULL));
    ck_ok(ctx_thread_create(&th, NULL, set_and_leave, NULL));
    ck_assert_ptr_eq(join_ok(th), P(4));
    ck_assert_int_eq(atomic_load(&holds), 1);
}
END_TEST

static void *short_lived(void *unused)
{
    THR_CHECK(ctx_var_set(counted, &value_b, NULL) == 0);
    return read_var(unused);
}

static void short_lived_batch(int i)
{
    enum { BATCH = 50 };
    pthread_t th[BATCH];
    ck_ok(ctx_var_set(var, P(i), NULL));
    for (int j = 0; j < BATCH; j++)
        ck_ok(ctx_thread_create(&th[j], NULL, short_lived, NULL));
    ck_ok(ctx_var_set(var, P(-1), NULL)); /* not seen by the batch */
    for (int j = 0; j < BATCH; j++)
        ck_assert_ptr_eq(join_ok(th[j]), P(i));
}

START_TEST(thousands_of_short_lived_threads)
{
    ck_ok(ctx_var_set(counted, &value_a, NULL));
    short_lived_batch(0); /* fills glibc's cache of thread stacks */
    size_t before = mallinfo2().uordblks;
    for (int i = 1; i <= 40; i++)
        short_lived_batch(i);
    size_t after = mallinfo2().uordblks;
    ck_assert_int_eq(atomic_load(&ran), 41 * 50);
    ck_assert_int_eq(atomic_load(&holds), 1); /* each base went */
    ck_assert_msg(after < before + 64 * 1024, "heap grew by %zu bytes",
                  after - before);
}
END_TEST

START_TEST(thread_null_arguments)
{
    pthread_t th;
    ck_assert_int_eq(ctx_thread_create(NULL, NULL, read_var, NULL), EINVAL);
    ck_assert_int_eq(ctx_thread_create(&th, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(atomic_load(&ran), 0);
}
END_TEST

START_TEST(thread_enomem_is_eagain)
{
    pthread_t th;
    ck_ok(ctx_var_set(var, P(8), NULL));
    long k = 0;
    for (;; k++) {
        ctx__fault_fail_after(k);
        int err = ctx_thread_create(&th, NULL, read_var, NULL);
        if (!ctx__fault_armed()) { /* the fault fired: the call failed */
            ck_assert_int_eq(err, EAGAIN);
            continue;
        }
        ctx__fault_fail_after(-1);
        ck_ok(err);
        break;
    }
    ck_assert_int_ge(k, 1);
    ck_assert_ptr_eq(join_ok(th), P(8));
    ck_assert_int_eq(atomic_load(&ran), 1); /* failed calls ran nothing */
}
END_TEST

/* ------------------------------------------------------------------
 * Callables
 * ---------------------------------------------------------------- */

static void *read_then_set(void *unused)
{
    void *v = read_var(unused);
    THR_CHECK(ctx_var_set(var, P(99), NULL) == 0);
    THR_CHECK(ctx_var_set(counted, &value_b, NULL) == 0);
    return v;
}

static void *foreign_caller(void *callable)
{
    void *r1 = BAD, *r2 = BAD;
    THR_CHECK(ctx_var_get_or(var, NULL) == NULL); /* its own base */
    THR_CHECK(ctx_callable_call(callable, &r1) == 0);
    THR_CHECK(ctx_callable_call(callable, &r2) == 0);
    THR_CHECK(r1 == P(5) && r2 == P(5)); /* calls are independent */
    THR_CHECK(ctx_var_get_or(var, NULL) == NULL);
    THR_CHECK(ctx_callable_call(callable, NULL) == 0);
    return NULL;
}

START_TEST(callable_from_a_foreign_thread)
{
    ctx_callable_t *c = NULL;
    pthread_t th;
    ck_ok(ctx_var_set(var, P(5), NULL));
    ck_ok(ctx_callable_create(&c, read_then_set, NULL));
    ck_ok(ctx_var_set(var, P(6), NULL)); /* after the snapshot */
    ck_ok(pthread_create(&th, NULL, foreign_caller, c));
    join_ok(th);
    ck_assert_ptr_eq(ctx_var_get_or(var, NULL), P(6));
    ck_assert_int_eq(atomic_load(&ran), 3);
    ck_assert_int_eq(atomic_load(&holds), 0); /* each call's copy freed */
    ctx_callable_release(c);
}
END_TEST

static pthread_barrier_t both;

static void *meet_inside(void *unused)
{
    pthread_barrier_wait(&both); /* both calls are inside at once */
    return read_var(unused);
}

static void *call_it(void *callable)
{
    void *r = BAD;
    THR_CHECK(ctx_callable_call(callable, &r) == 0);
    return r;
}

START_TEST(callable_runs_concurrently)
{
    ctx_callable_t *c = NULL;
    pthread_t th[2];
    pthread_barrier_init(&both, NULL, 2);
    ck_ok(ctx_var_set(var, P(3), NULL));
    ck_ok(ctx_callable_create(&c, meet_inside, NULL));
    for (int i = 0; i < 2; i++)
        ck_ok(pthread_create(&th[i], NULL, call_it, c));
    for (int i = 0; i < 2; i++)
        ck_assert_ptr_eq(join_ok(th[i]), P(3));
    ctx_callable_release(c);
    pthread_barrier_destroy(&both);
}
END_TEST

static void *make_callable(void *out)
{
    THR_CHECK(ctx_var_set(counted, &value_a, NULL) == 0);
    THR_CHECK(ctx_callable_create(out, read_var, NULL) == 0);
    return NULL;
}

static void *invoke_once_on_thread(void *callable)
{
    ctx_callable_invoke_once(callable);
    return NULL;
}

START_TEST(invoke_once_releases)
{
    ctx_context_t *c = NULL;
    ctx_callable_t *call = NULL;
    pthread_t th;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_run(c, make_callable, &call, NULL));
    ctx_context_release(c); /* the snapshot now holds value_a alone */
    ck_assert_int_eq(atomic_load(&holds), 1);
    ck_ok(pthread_create(&th, NULL, invoke_once_on_thread, call));
    join_ok(th);
    ck_assert_int_eq(atomic_load(&ran), 1);
    ck_assert_int_eq(atomic_load(&holds), 0);
}
END_TEST

START_TEST(callable_null_arguments_and_enomem)
{
    ctx_callable_t *c = P(0x5a);
    ck_assert_int_eq(ctx_callable_create(NULL, read_var, NULL), EINVAL);
    ck_assert_int_eq(ctx_callable_create(&c, NULL, NULL), EINVAL);
    ck_assert_int_eq(ctx_callable_call(NULL, NULL), EINVAL);
    ctx_callable_release(NULL);
    ck_ok(ctx_var_set(var, P(2), NULL));
    for (long k = 0; k < 2; k++) {
        ctx__fault_fail_after(k);
        ck_assert_int_eq(ctx_callable_create(&c, read_var, NULL), ENOMEM);
        ck_assert(!ctx__fault_armed());
        ck_assert_ptr_eq(c, P(0x5a));
    }
    ctx__fault_fail_after(-1);
    ck_ok(ctx_callable_create(&c, read_var, NULL));
    void *r = BAD;
    ctx__fault_fail_after(0);
    ck_assert_int_eq(ctx_callable_call(c, &r), ENOMEM);
    ctx__fault_fail_after(-1);
    ck_assert_ptr_eq(r, BAD);
    ck_assert_int_eq(atomic_load(&ran), 0);
    ck_ok(ctx_callable_call(c, &r));
    ck_assert_ptr_eq(r, P(2));
    ctx_callable_release(c);
}
END_TEST

static Suite *thread_suite(void)
{
    Suite *s = suite_create("thread");
    TCase *tc = tcase_create("thread");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, inherits_at_create_time_only);
    tcase_add_test(tc, inherits_the_entered_context);
    tcase_add_test(tc, detached_thread);
    tcase_add_test(tc, stack_size_honoured);
    tcase_add_test(tc, pthread_create_errors_pass_through);
    tcase_add_test(tc, pthread_exit_frees_the_base);
    tcase_add_test(tc, thousands_of_short_lived_threads);
    tcase_add_test(tc, thread_null_arguments);
    tcase_add_test(tc, thread_enomem_is_eagain);
    suite_add_tcase(s, tc);
    TCase *cc = tcase_create("callable");
    tcase_add_checked_fixture(cc, setup, teardown);
    tcase_add_test(cc, callable_from_a_foreign_thread);
    tcase_add_test(cc, callable_runs_concurrently);
    tcase_add_test(cc, invoke_once_releases);
    tcase_add_test(cc, callable_null_arguments_and_enomem);
    suite_add_tcase(s, cc);
    return s;
}

CTX_TEST_MAIN(thread_suite)
