/*
 * test_fiber.c - fibers (asyncio's Task for stackful coroutines): a
 * context per fiber that survives every suspend and follows the fiber to
 * any thread.
 *
 * Most tests need no stack switch: the code between ctx_fiber_resume()
 * and ctx_fiber_suspend() stands for the coroutine.  The migration tests
 * switch real stacks (tests/fiber_sched.h, ucontext) and hand a coroutine
 * from thread to thread in the middle of ctx_context_run(), because that
 * is where a library that keeps the thread pointer in a register across
 * the user's call goes wrong.  Built a second time as test_fiber_o3, with
 * FIBER_MIGRATION_ONLY and the library compiled in at -O3, so both -O2
 * (the project's flags) and -O3 code meets the migration.
 *
 * Helper threads never call Check: they record the line of their first
 * failed check in thr_fail_line, which the test's own thread asserts on.
 */
#include "config.h"

#include "internal.h"
#include "testutil.h"

#include "fiber_sched.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define P(n) ((void *)(uintptr_t)(n))
#define BAD P(0xbad)
#define UNUSED __attribute__((unused))

/* Values of `counted` count their holders, so a context that is never
 * freed shows as a hold that never goes. */
static atomic_long holds;
static void hold(void *v) { (void)v; atomic_fetch_add(&holds, 1); }
static void unhold(void *v) { (void)v; atomic_fetch_sub(&holds, 1); }

static ctx_var_t *var, *counted;
static ctx_context_t *c1, *c2, *c3;

static void setup(void)
{
    ctx_value_ops_t ops = {hold, unhold};
    ck_ok(ctx_var_create(&var, "v", CTX_MISSING, NULL));
    ck_ok(ctx_var_create(&counted, "counted", CTX_MISSING, &ops));
    ck_ok(ctx_context_new(&c1));
    ck_ok(ctx_context_new(&c2));
    ck_ok(ctx_context_new(&c3));
    atomic_store(&holds, 0);
    atomic_store(&thr_fail_line, 0);
}

static void teardown(void)
{
    ctx_context_release(c3);
    ctx_context_release(c2);
    ctx_context_release(c1);
    ctx_var_release(counted);
    ctx_var_release(var);
}

static ctx_fiber_t *new_fiber(ctx_context_t *ctx)
{
    ctx_fiber_t *f = BAD;
    ck_ok(ctx_fiber_create(&f, ctx));
    ck_assert_ptr_ne(f, BAD);
    ck_assert_ptr_nonnull(ctx_fiber_context(f));
    return f;
}

/* A fiber whose own context binds var to value. */
static ctx_fiber_t *fiber_with(void *value)
{
    ctx_context_t *c;
    ck_ok(ctx_context_new(&c));
    ctx_fiber_t *f = new_fiber(c);
    ctx_context_release(c); /* the fiber holds it */
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_var_set(var, value, NULL));
    ck_ok(ctx_fiber_suspend(f));
    return f;
}

static void *get_var(void) { return ctx_var_get_or(var, CTX_MISSING); }

/* Runs fn(arg) on a new plain pthread and returns its result. */
static void *on_thread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    void *r = BAD;
    ck_ok(pthread_create(&th, NULL, fn, arg));
    ck_ok(pthread_join(th, &r));
    ck_threads_ok();
    return r;
}

static UNUSED void *try_resume(void *f) { return P(ctx_fiber_resume(f)); }
static UNUSED void *try_suspend(void *f) { return P(ctx_fiber_suspend(f)); }
static UNUSED void *try_enter(void *c)
{
    int err = ctx_context_enter(c);
    if (err == 0)
        THR_CHECK(ctx_context_exit(c) == 0);
    return P(err);
}

#ifndef FIBER_MIGRATION_ONLY
/* ------------------------------------------------------------------
 * Creation and the error codes
 * ---------------------------------------------------------------- */

START_TEST(null_arguments)
{
    ck_assert_int_eq(ctx_fiber_create(NULL, NULL), EINVAL);
    ck_assert_int_eq(ctx_fiber_create(NULL, c1), EINVAL);
    ck_assert_int_eq(ctx_fiber_resume(NULL), EINVAL);
    ck_assert_int_eq(ctx_fiber_suspend(NULL), EINVAL);
    ck_assert_ptr_null(ctx_fiber_context(NULL));
    ctx_fiber_release(NULL);
}
END_TEST

START_TEST(create_null_copies_now)
{
    ck_ok(ctx_var_set(var, P(1), NULL));
    ctx_fiber_t *f = new_fiber(NULL);
    ck_ok(ctx_var_set(var, P(2), NULL)); /* after the copy: invisible */
    ctx_context_t *fc = ctx_fiber_context(f);
    ck_assert_int_eq(ctx_context_len(fc), 1);
    ck_ok(ctx_fiber_resume(f));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_var_set(var, P(3), NULL));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(get_var(), P(2)); /* the creator never sees 3 */
    void *v = BAD;
    ck_ok(ctx_context_get(fc, var, &v));
    ck_assert_ptr_eq(v, P(3));
    /* A new copy each time: two fibers do not share a context. */
    ctx_fiber_t *g = new_fiber(NULL);
    ck_assert_ptr_ne(ctx_fiber_context(g), fc);
    ck_ok(ctx_fiber_resume(g));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_fiber_suspend(g));
    ctx_fiber_release(g);
    ctx_fiber_release(f);
}
END_TEST

START_TEST(create_with_ctx_runs_in_it)
{
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_var_set(var, P(1), NULL));
    ck_ok(ctx_context_exit(c1));
    ctx_fiber_t *f = new_fiber(c1);
    ck_assert_ptr_eq(ctx_fiber_context(f), c1);
    ck_ok(ctx_fiber_resume(f));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_var_set(var, P(5), NULL));
    ck_ok(ctx_fiber_suspend(f));
    void *v = BAD;
    ck_ok(ctx_context_get(c1, var, &v));
    ck_assert_ptr_eq(v, P(5)); /* create_task(coro, context=ctx) */
    ck_assert_int_eq(ctx_var_get(var, &v), ENOENT); /* not the thread's */
    /* The fiber retains ctx: dropping ours does not free it. */
    ctx_context_t *c;
    ck_ok(ctx_context_new(&c));
    ctx_fiber_t *g = new_fiber(c);
    ctx_context_release(c);
    ck_ok(ctx_fiber_resume(g));
    ck_ok(ctx_var_set(counted, P(1), NULL));
    ck_assert_int_eq(atomic_load(&holds), 1);
    ck_ok(ctx_fiber_suspend(g));
    ctx_fiber_release(g);
    ck_assert_int_eq(atomic_load(&holds), 0); /* and it goes with it */
    ctx_fiber_release(f);
}
END_TEST

START_TEST(suspend_eperm)
{
    ctx_fiber_t *f = new_fiber(NULL), *g = new_fiber(NULL);
    ck_assert_int_eq(ctx_fiber_suspend(f), EPERM); /* never resumed */
    ck_ok(ctx_fiber_resume(f));
    /* Resumed here, so not on another thread. */
    ck_assert_ptr_eq(on_thread(try_suspend, f), P(EPERM));
    ck_assert_int_eq(ctx_fiber_suspend(g), EPERM); /* g is not resumed */
    ck_ok(ctx_fiber_resume(g));
    ck_assert_int_eq(ctx_fiber_suspend(f), EPERM); /* g is still inside */
    ck_ok(ctx_fiber_suspend(g));
    ck_assert_int_eq(ctx_fiber_suspend(g), EPERM); /* twice */
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(ctx_fiber_suspend(f), EPERM);
    ctx_fiber_release(g);
    ctx_fiber_release(f);
}
END_TEST

START_TEST(resume_twice_is_ebusy)
{
    ctx_fiber_t *f = fiber_with(P(7));
    ck_ok(ctx_var_set(var, P(1), NULL));
    ck_ok(ctx_fiber_resume(f));
    ck_assert_int_eq(ctx_fiber_resume(f), EBUSY); /* same thread */
    ck_assert_ptr_eq(on_thread(try_resume, f), P(EBUSY)); /* another */
    ck_assert_ptr_eq(get_var(), P(7)); /* nothing changed */
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(get_var(), P(1));
    /* Suspended, any thread may have it. */
    ck_assert_ptr_eq(on_thread(try_resume, f), P(0));
    ctx_fiber_release(f);
}
END_TEST

START_TEST(own_context_entered_by_others_between_runs)
{
    ctx_fiber_t *f = fiber_with(P(7));
    ctx_context_t *fc = ctx_fiber_context(f);
    /* Suspended: its context is free for anyone. */
    ck_ok(ctx_context_enter(fc));
    ck_ok(ctx_var_set(var, P(8), NULL));
    ck_assert_int_eq(ctx_fiber_resume(f), EBUSY);
    ck_assert_ptr_eq(get_var(), P(8)); /* the failed resume changed nothing */
    ck_assert_ptr_eq(on_thread(try_resume, f), P(EBUSY));
    ck_ok(ctx_context_exit(fc));
    /* And while the fiber runs, nobody may enter it. */
    ck_ok(ctx_fiber_resume(f));
    ck_assert_ptr_eq(get_var(), P(8));
    ck_assert_ptr_eq(on_thread(try_enter, fc), P(EBUSY));
    ck_assert_int_eq(ctx_context_enter(fc), EBUSY);
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(on_thread(try_enter, fc), P(0));
    ctx_fiber_release(f);
}
END_TEST

START_TEST(exit_of_own_context_is_eperm)
{
    ctx_fiber_t *f = new_fiber(NULL);
    ctx_context_t *fc = ctx_fiber_context(f);
    ck_ok(ctx_context_enter(c1)); /* the thread's, below the fiber */
    ck_ok(ctx_fiber_resume(f));
    ck_assert_int_eq(ctx_context_exit(fc), EPERM);
    ck_assert_int_eq(ctx_context_exit(c1), EPERM); /* not the fiber's */
    ck_ok(ctx_context_enter(c2));
    ck_assert_int_eq(ctx_context_exit(fc), EPERM);
    ck_ok(ctx_context_exit(c2));
    ck_assert_int_eq(ctx_context_exit(fc), EPERM); /* still: floor */
    ck_ok(ctx_fiber_suspend(f));
    ck_ok(ctx_context_exit(c1));
    ctx_fiber_release(f);
}
END_TEST

/* ------------------------------------------------------------------
 * The thread's stack and the fiber's
 * ---------------------------------------------------------------- */

START_TEST(resume_and_suspend_restore_the_thread_exactly)
{
    ctx_fiber_t *f = new_fiber(NULL); /* copied from the empty base */
    ck_ok(ctx_var_set(var, P(1), NULL));
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_var_set(var, P(2), NULL));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(var, P(3), NULL));
    ck_assert_ptr_eq(get_var(), P(3)); /* cached now */
    for (int round = 0; round < 3; round++) {
        ck_ok(ctx_fiber_resume(f));
        void *v = BAD;
        if (round == 0)
            ck_assert_int_eq(ctx_var_get(var, &v), ENOENT);
        else
            ck_assert_ptr_eq(get_var(), P(100 + round - 1));
        ck_ok(ctx_var_set(var, P(100 + round), NULL));
        ck_assert_int_eq(ctx_context_exit(c2), EPERM); /* not the fiber's */
        ck_ok(ctx_fiber_suspend(f));
        ck_assert_ptr_eq(get_var(), P(3));
    }
    ck_ok(ctx_context_exit(c2));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_context_exit(c1));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_assert_int_eq(ctx_context_exit(c1), EPERM);
    ctx_fiber_release(f);
}
END_TEST

START_TEST(held_contexts_stay_entered_across_suspend)
{
    ctx_fiber_t *f = fiber_with(P(9));
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_var_set(var, P(11), NULL));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(var, P(12), NULL));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(ctx_var_get(var, &(void *){0}), ENOENT);
    /* Held by the fiber: nobody may enter them, here or elsewhere. */
    ck_assert_int_eq(ctx_context_enter(c1), EBUSY);
    ck_assert_int_eq(ctx_context_enter(c2), EBUSY);
    ck_assert_int_eq(ctx_context_run(c2, try_resume, NULL, NULL), EBUSY);
    ck_assert_int_eq(ctx_context_exit(c2), EPERM);
    ck_assert_ptr_eq(on_thread(try_enter, c1), P(EBUSY));
    ck_assert_ptr_eq(on_thread(try_enter, c2), P(EBUSY));
    /* Resumed on another thread, innermost on top. */
    ck_assert_ptr_eq(on_thread(try_resume, f), P(0));
    /* That thread ended with f resumed, which suspended it. */
    ck_ok(ctx_fiber_resume(f));
    ck_assert_ptr_eq(get_var(), P(12));
    ck_ok(ctx_context_exit(c2));
    ck_assert_ptr_eq(get_var(), P(11));
    ck_assert_int_eq(ctx_context_exit(c2), EPERM);
    ck_ok(ctx_context_exit(c1));
    ck_assert_ptr_eq(get_var(), P(9));
    ck_assert_int_eq(ctx_context_exit(ctx_fiber_context(f)), EPERM);
    ck_ok(ctx_fiber_suspend(f));
    /* Exited by the fiber: free again. */
    ck_assert_ptr_eq(on_thread(try_enter, c1), P(0));
    ck_assert_ptr_eq(on_thread(try_enter, c2), P(0));
    ctx_fiber_release(f);
}
END_TEST

START_TEST(nesting_suspends_innermost_first)
{
    ctx_fiber_t *f = fiber_with(P(1));
    ck_ok(ctx_var_set(var, P(100), NULL));
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_var_set(var, P(2), NULL));
    /* A fiber made inside f copies f's current context. */
    ctx_fiber_t *g = new_fiber(NULL);
    ck_ok(ctx_fiber_resume(g));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_var_set(var, P(3), NULL));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(var, P(4), NULL));
    ck_assert_int_eq(ctx_context_exit(c1), EPERM); /* f's, below g */
    ck_assert_int_eq(ctx_fiber_resume(f), EBUSY);
    ck_assert_int_eq(ctx_fiber_suspend(f), EPERM);
    ck_ok(ctx_fiber_suspend(g));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_context_exit(c1));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(get_var(), P(100));
    /* Reversed: g outside, f inside. */
    ck_ok(ctx_fiber_resume(g));
    ck_assert_ptr_eq(get_var(), P(4));
    ck_ok(ctx_fiber_resume(f));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(get_var(), P(4));
    ck_ok(ctx_context_exit(c2));
    ck_assert_ptr_eq(get_var(), P(3));
    ck_ok(ctx_fiber_suspend(g));
    ck_assert_ptr_eq(get_var(), P(100));
    ctx_fiber_release(g);
    ctx_fiber_release(f);
}
END_TEST

/* ------------------------------------------------------------------
 * Everything inside a fiber acts on the fiber
 * ---------------------------------------------------------------- */

static void *read_and_set(void *value)
{
    void *seen = get_var();
    THR_CHECK(ctx_var_set(var, value, NULL) == 0);
    return seen;
}

static void *enter_two_and_return(void *unused)
{
    (void)unused;
    THR_CHECK(ctx_context_enter(c2) == 0);
    THR_CHECK(ctx_context_enter(c3) == 0);
    return NULL;
}

START_TEST(api_inside_a_fiber_acts_on_it)
{
    ctx_fiber_t *f = fiber_with(P(1));
    ck_ok(ctx_var_set(var, P(50), NULL));
    ctx_token_t *outside;
    ck_ok(ctx_var_set(var, P(51), &outside));
    ck_ok(ctx_fiber_resume(f));
    /* Tokens. */
    ck_assert_int_eq(ctx_var_reset(var, outside), EINVAL);
    ctx_token_t *t;
    ck_ok(ctx_var_set(var, P(2), &t));
    ck_assert_ptr_eq(ctx_token_old_value(t), P(1));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_var_reset(var, t));
    ck_assert_ptr_eq(get_var(), P(1));
    ctx_token_release(t);
    /* CTX_WITH. */
    CTX_WITH(var, P(3)) { ck_assert_ptr_eq(get_var(), P(3)); }
    ck_assert_ptr_eq(get_var(), P(1));
    /* ctx_context_run: its changes land in the run's context. */
    void *r = BAD;
    ck_ok(ctx_context_run(c1, read_and_set, P(4), &r));
    ck_assert_ptr_eq(r, CTX_MISSING);
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_context_get(c1, var, &r));
    ck_assert_ptr_eq(r, P(4));
    /* What run's fn left entered is unwound, down to the fiber only. */
    ck_ok(ctx_context_run(c1, enter_two_and_return, NULL, NULL));
    ck_assert_ptr_eq(on_thread(try_enter, c2), P(0));
    ck_assert_ptr_eq(on_thread(try_enter, c3), P(0));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_assert_int_eq(ctx_context_exit(ctx_fiber_context(f)), EPERM);
    /* Enter and exit. */
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(var, P(5), NULL));
    ck_ok(ctx_context_exit(c2));
    ck_assert_ptr_eq(get_var(), P(1));
    /* Copies and snapshots take the fiber's current context. */
    ck_ok(ctx_var_set(var, P(6), NULL));
    ctx_context_t *copy;
    ck_ok(ctx_copy_context(&copy));
    ck_ok(ctx_context_get(copy, var, &r));
    ck_assert_ptr_eq(r, P(6));
    ctx_context_release(copy);
    pthread_t th;
    ck_ok(ctx_thread_create(&th, NULL, read_and_set, P(0)));
    ck_ok(pthread_join(th, &r));
    ck_assert_ptr_eq(r, P(6));
    ctx_pool_t *pool;
    ctx_future_t *fut;
    ck_ok(ctx_pool_create(&pool, 1));
    ck_ok(ctx_pool_submit(pool, read_and_set, P(0), &fut));
    ck_ok(ctx_future_wait(fut, &r));
    ctx_future_release(fut);
    ck_assert_ptr_eq(r, P(6));
    ctx_callable_t *call;
    ck_ok(ctx_callable_create(&call, read_and_set, P(0)));
    ctx_fiber_t *g = new_fiber(NULL);
    ck_ok(ctx_var_set(var, P(7), NULL)); /* after every snapshot */
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_ptr_eq(get_var(), P(51));
    ck_ok(ctx_callable_call(call, &r));
    ck_assert_ptr_eq(r, P(6));
    ck_ok(ctx_pool_submit(pool, read_and_set, P(0), &fut));
    ck_ok(ctx_future_wait(fut, &r));
    ctx_future_release(fut);
    ck_assert_ptr_eq(r, P(51)); /* outside: the thread's again */
    ck_ok(ctx_fiber_resume(g));
    ck_assert_ptr_eq(get_var(), P(6));
    ck_ok(ctx_fiber_suspend(g));
    ck_ok(ctx_var_reset(var, outside));
    ck_assert_ptr_eq(get_var(), P(50));
    ctx_token_release(outside);
    ctx_callable_release(call);
    ck_ok(ctx_pool_destroy(pool));
    ctx_fiber_release(g);
    ctx_fiber_release(f);
    ck_threads_ok();
}
END_TEST

/* A fiber resumed inside ctx_context_run() and left resumed: the run's
 * unwinding must not exit anything of the fiber's. */
static void *resume_and_return(void *f)
{
    THR_CHECK(ctx_fiber_resume(f) == 0);
    return NULL;
}

START_TEST(run_never_unwinds_into_a_fiber)
{
    ctx_fiber_t *f = fiber_with(P(1));
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(var, P(2), NULL));
    ck_ok(ctx_fiber_suspend(f));
    ck_ok(ctx_context_run(c1, resume_and_return, f, NULL));
    ck_threads_ok();
    ck_assert_ptr_eq(get_var(), P(2)); /* c2, f's, untouched */
    ck_assert_int_eq(ctx_fiber_resume(f), EBUSY);
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(ctx_context_enter(c2), EBUSY); /* still f's */
    /* c1 could not be exited under the fiber; the thread has it now. */
    ck_ok(ctx_context_exit(c1));
    ctx_fiber_release(f);
}
END_TEST

/* ------------------------------------------------------------------
 * The get cache
 * ---------------------------------------------------------------- */

static void *cache_round(void *fibers)
{
    ctx_fiber_t **fs = fibers;
    THR_CHECK(ctx_var_set(var, P(1000), NULL) == 0);
    for (int i = 0; i < 2000; i++) {
        int k = i % 3;
        THR_CHECK(get_var() == P(1000));
        THR_CHECK(ctx_fiber_resume(fs[k]) == 0);
        THR_CHECK(get_var() == P(k + 1));
        if (i % 7 == 0) {
            /* A fiber's own write is seen at once, and only by it. */
            THR_CHECK(ctx_var_set(var, P(k + 1), NULL) == 0);
            THR_CHECK(get_var() == P(k + 1));
        }
        if (i % 5 == 0) {
            int j = (k + 1) % 3;
            THR_CHECK(ctx_fiber_resume(fs[j]) == 0);
            THR_CHECK(get_var() == P(j + 1));
            THR_CHECK(ctx_fiber_suspend(fs[j]) == 0);
            THR_CHECK(get_var() == P(k + 1));
        }
        THR_CHECK(ctx_fiber_suspend(fs[k]) == 0);
    }
    THR_CHECK(get_var() == P(1000));
    return NULL;
}

START_TEST(get_never_sees_another_context)
{
    ctx_fiber_t *fs[3] = {fiber_with(P(1)), fiber_with(P(2)), fiber_with(P(3))};
    /* A fiber whose context has no binding must not see the thread's. */
    ctx_fiber_t *empty = new_fiber(NULL);
    ck_ok(ctx_var_set(var, P(1000), NULL));
    ck_assert_ptr_eq(get_var(), P(1000));
    ck_ok(ctx_fiber_resume(empty));
    ck_assert_int_eq(ctx_var_get(var, &(void *){0}), ENOENT);
    ck_ok(ctx_fiber_suspend(empty));
    ck_assert_ptr_eq(get_var(), P(1000));
    cache_round(fs);
    on_thread(cache_round, fs); /* and on a thread with its own cache */
    ck_threads_ok();
    for (int i = 0; i < 3; i++)
        ctx_fiber_release(fs[i]);
    ctx_fiber_release(empty);
}
END_TEST

/* ------------------------------------------------------------------
 * Lifetime
 * ---------------------------------------------------------------- */

START_TEST(release_while_holding_exits_held)
{
    ctx_fiber_t *f = new_fiber(NULL);
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_var_set(counted, P(1), NULL));
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_var_set(counted, P(2), NULL));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_var_set(counted, P(3), NULL));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(ctx_context_enter(c1), EBUSY);
    ck_assert_int_eq(atomic_load(&holds), 3);
    ctx_fiber_release(f);
    /* Exited, and enterable again, here or anywhere. */
    ck_assert_ptr_eq(on_thread(try_enter, c1), P(0));
    ck_ok(ctx_context_enter(c2));
    ck_ok(ctx_context_exit(c2));
    /* The fiber's own context went with it; c1 and c2 are ours still. */
    ck_assert_int_eq(atomic_load(&holds), 2);
    ctx_context_release(c1);
    ctx_context_release(c2);
    c1 = c2 = NULL;
    ck_assert_int_eq(atomic_load(&holds), 0);
}
END_TEST

/* The last reference to a held context is the fiber's hold. */
START_TEST(release_while_holding_frees_what_only_it_held)
{
    ctx_fiber_t *f = new_fiber(NULL);
    ctx_context_t *c;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_fiber_resume(f));
    ck_ok(ctx_context_enter(c));
    ctx_context_release(c);
    ck_ok(ctx_var_set(counted, P(1), NULL));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(atomic_load(&holds), 1);
    ctx_fiber_release(f);
    ck_assert_int_eq(atomic_load(&holds), 0);
}
END_TEST

static void *release_it(void *f)
{
    ctx_fiber_release(f);
    return NULL;
}

START_TEST(release_while_resumed_frees_at_suspend)
{
    for (int from_other = 0; from_other < 2; from_other++) {
        ctx_fiber_t *f = new_fiber(NULL);
        ck_ok(ctx_fiber_resume(f));
        ck_ok(ctx_var_set(counted, P(1), NULL));
        ck_ok(ctx_context_enter(c1));
        ck_ok(ctx_var_set(counted, P(2), NULL));
        if (from_other)
            on_thread(release_it, f);
        else
            ctx_fiber_release(f);
        /* Still alive and running. */
        ck_assert_ptr_eq(ctx_var_get_or(counted, NULL), P(2));
        ck_ok(ctx_var_set(var, P(3), NULL));
        ck_assert_int_eq(atomic_load(&holds), 2);
        ck_ok(ctx_fiber_suspend(f));
        /* Freed: its context's binding went, c1 was exited (ours). */
        ck_assert_int_eq(atomic_load(&holds), 1);
        ck_ok(ctx_context_enter(c1));
        ck_ok(ctx_var_set(counted, P(4), NULL));
        ck_ok(ctx_context_exit(c1));
        ck_assert_int_eq(atomic_load(&holds), 1);
    }
}
END_TEST

/* A thread that ends with f (and g inside it) resumed. */
static void *resume_two_and_exit(void *fibers)
{
    ctx_fiber_t **fs = fibers;
    THR_CHECK(ctx_fiber_resume(fs[0]) == 0);
    THR_CHECK(ctx_context_enter(c1) == 0);
    THR_CHECK(ctx_var_set(var, P(10), NULL) == 0);
    THR_CHECK(ctx_fiber_resume(fs[1]) == 0);
    THR_CHECK(ctx_context_enter(c2) == 0);
    THR_CHECK(ctx_var_set(var, P(20), NULL) == 0);
    return NULL;
}

START_TEST(thread_exit_suspends_resumed_fibers)
{
    ctx_fiber_t *fs[2] = {fiber_with(P(1)), fiber_with(P(2))};
    on_thread(resume_two_and_exit, fs);
    /* Suspended, holding what they had entered. */
    ck_assert_int_eq(ctx_context_enter(c1), EBUSY);
    ck_assert_int_eq(ctx_context_enter(c2), EBUSY);
    ck_assert_int_eq(ctx_fiber_suspend(fs[0]), EPERM);
    ck_ok(ctx_fiber_resume(fs[1]));
    ck_assert_ptr_eq(get_var(), P(20));
    ck_ok(ctx_context_exit(c2));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_fiber_suspend(fs[1]));
    ck_ok(ctx_fiber_resume(fs[0]));
    ck_assert_ptr_eq(get_var(), P(10));
    ck_ok(ctx_context_exit(c1));
    ck_assert_ptr_eq(get_var(), P(1));
    ck_ok(ctx_fiber_suspend(fs[0]));
    ctx_fiber_release(fs[0]);
    ctx_fiber_release(fs[1]);
}
END_TEST

/* A fiber released while resumed on a thread that then exits. */
static void *resume_release_exit(void *f)
{
    THR_CHECK(ctx_fiber_resume(f) == 0);
    THR_CHECK(ctx_context_enter(c1) == 0);
    THR_CHECK(ctx_var_set(counted, P(1), NULL) == 0);
    ctx_fiber_release(f);
    return NULL;
}

START_TEST(thread_exit_frees_released_fiber)
{
    ctx_fiber_t *f = new_fiber(NULL);
    on_thread(resume_release_exit, f);
    ck_ok(ctx_context_enter(c1)); /* exited with the fiber */
    ck_ok(ctx_context_exit(c1));
    ck_assert_int_eq(atomic_load(&holds), 1); /* c1's binding: ours */
}
END_TEST

/* fork() while another thread has a fiber resumed, in the middle of a
 * write to a context the fiber entered (its lock held): in the child the
 * fiber is suspended with what it held, and resumable, locks open. */
static sem_t fork_ready, fork_done;

static void *resume_and_hold_lock(void *f)
{
    THR_CHECK(ctx_fiber_resume(f) == 0);
    THR_CHECK(ctx_context_enter(c1) == 0);
    THR_CHECK(ctx_var_set(var, P(10), NULL) == 0);
    ctx__spin_lock(&c1->lock);
    ctx__spin_lock(&ctx_fiber_context(f)->lock);
    sem_post(&fork_ready);
    sem_wait(&fork_done);
    ctx__spin_unlock(&ctx_fiber_context(f)->lock);
    ctx__spin_unlock(&c1->lock);
    THR_CHECK(ctx_context_exit(c1) == 0);
    THR_CHECK(ctx_fiber_suspend(f) == 0);
    return NULL;
}

static int fork_child_checks(ctx_fiber_t *f)
{
    signal(SIGALRM, SIG_DFL); /* not Check's handler, which kills all */
    alarm(10);                /* a lock left closed hangs: fail instead */
    void *v = NULL;
    if (ctx_context_enter(c1) != EBUSY) /* still the fiber's */
        return 1;
    if (ctx_fiber_resume(f) != 0 || get_var() != P(10))
        return 2;
    if (ctx_context_get(c1, var, &v) != 0 || v != P(10))
        return 3;
    if (ctx_context_len(ctx_fiber_context(f)) != 1)
        return 4;
    if (ctx_context_exit(c1) != 0 || get_var() != P(1))
        return 5;
    if (ctx_fiber_suspend(f) != 0 || ctx_context_enter(c1) != 0)
        return 6;
    return 0;
}

START_TEST(fork_child_resumes_fibers_of_other_threads)
{
    ctx_fiber_t *f = fiber_with(P(1));
    sem_init(&fork_ready, 0, 0);
    sem_init(&fork_done, 0, 0);
    pthread_t th;
    ck_ok(pthread_create(&th, NULL, resume_and_hold_lock, f));
    sem_wait(&fork_ready);
    /* The child reports through a pipe, not its exit status: under
     * valgrind, what the threads missing in the child owned counts as
     * leaked there, and --error-exitcode would overwrite the status. */
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int step = fork_child_checks(f);
        _exit(write(fd[1], &step, sizeof step) == sizeof step ? 0 : 99);
    }
    close(fd[1]);
    int step = -1, status = 0;
    ssize_t got = read(fd[0], &step, sizeof step);
    close(fd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    sem_post(&fork_done);
    ck_ok(pthread_join(th, NULL));
    ck_threads_ok();
    ck_assert_msg(got == sizeof step && step == 0,
                  "child failed at step %d (status %d)", step, status);
    sem_destroy(&fork_done);
    sem_destroy(&fork_ready);
    ctx_fiber_release(f);
}
END_TEST

/* Resume and suspend are switches: watchers see the context made
 * current, and may not switch from inside (EDEADLK, nothing changes). */
static ctx_context_t *seen_ctx[8];
static int nseen, inner_resume_rc, inner_suspend_rc;
static ctx_fiber_t *watch_f, *watch_g;

static void watcher(ctx_context_t *current, void *arg)
{
    (void)arg;
    if (nseen < 8)
        seen_ctx[nseen++] = current;
    inner_resume_rc = ctx_fiber_resume(watch_g);
    inner_suspend_rc = ctx_fiber_suspend(watch_f);
}

START_TEST(watchers_see_resume_and_suspend)
{
    watch_f = fiber_with(P(1));
    watch_g = fiber_with(P(2));
    ck_ok(ctx_context_enter(c2));
    int id = 0;
    nseen = 0;
    ck_ok(ctx_watch_add(watcher, NULL, &id));
    ck_ok(ctx_fiber_resume(watch_f));
    ck_assert_int_eq(nseen, 1);
    ck_assert_ptr_eq(seen_ctx[0], ctx_fiber_context(watch_f));
    ck_assert_int_eq(inner_resume_rc, EDEADLK);
    ck_assert_int_eq(inner_suspend_rc, EDEADLK);
    ck_ok(ctx_context_enter(c1));
    ck_ok(ctx_fiber_suspend(watch_f));
    ck_assert_int_eq(nseen, 3);
    ck_assert_ptr_eq(seen_ctx[1], c1);
    ck_assert_ptr_eq(seen_ctx[2], c2); /* the thread's, again */
    ck_assert_int_eq(inner_suspend_rc, EPERM); /* no longer resumed */
    ck_ok(ctx_fiber_resume(watch_f));
    ck_assert_ptr_eq(seen_ctx[3], c1); /* what it held, on top */
    ck_ok(ctx_watch_remove(id));
    ck_ok(ctx_context_exit(c1));
    ck_ok(ctx_fiber_suspend(watch_f));
    ck_assert_int_eq(nseen, 4);
    ck_assert_ptr_eq(get_var(), CTX_MISSING); /* c2's: never set */
    ck_ok(ctx_context_exit(c2));
    /* g was never resumed by the watcher. */
    ck_ok(ctx_fiber_resume(watch_g));
    ck_assert_ptr_eq(get_var(), P(2));
    ck_ok(ctx_fiber_suspend(watch_g));
    ctx_fiber_release(watch_g);
    ctx_fiber_release(watch_f);
}
END_TEST

/* ------------------------------------------------------------------
 * Racing resumes: exactly one per fiber per round wins
 * ---------------------------------------------------------------- */

#define RACE_FIBERS 2000
#define RACE_THREADS 4
#define RACE_ROUNDS 8

static ctx_fiber_t *race_fib[RACE_FIBERS];
static atomic_int race_wins[RACE_FIBERS];
static atomic_long race_busy;
static pthread_barrier_t race_bar;

static void *racer(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    static _Thread_local int won[RACE_FIBERS];
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(&race_bar);
        int n = 0;
        for (unsigned k = 0; k < RACE_FIBERS; k++) {
            /* Each thread starts somewhere else and goes its own way. */
            unsigned i = (me & 1) ? (k + me * 500) % RACE_FIBERS
                                  : (RACE_FIBERS - 1 - (k + me * 500) %
                                                           RACE_FIBERS);
            int err = ctx_fiber_resume(race_fib[i]);
            if (err == EBUSY) {
                atomic_fetch_add(&race_busy, 1);
                continue;
            }
            THR_CHECK(err == 0);
            /* Held: nested inside the fibers this thread already won. */
            THR_CHECK(get_var() == P(i + 1));
            atomic_fetch_add(&race_wins[i], 1);
            won[n++] = (int)i;
        }
        pthread_barrier_wait(&race_bar); /* everyone has tried everything */
        while (n > 0)
            THR_CHECK(ctx_fiber_suspend(race_fib[won[--n]]) == 0);
        THR_CHECK(ctx_var_get(var, &(void *){0}) == ENOENT);
        pthread_barrier_wait(&race_bar);
    }
    return NULL;
}

START_TEST(racing_resumes_one_wins)
{
    for (int i = 0; i < RACE_FIBERS; i++) {
        race_fib[i] = fiber_with(P(i + 1));
        atomic_store(&race_wins[i], 0);
    }
    atomic_store(&race_busy, 0);
    pthread_barrier_init(&race_bar, NULL, RACE_THREADS);
    pthread_t th[RACE_THREADS];
    for (unsigned t = 0; t < RACE_THREADS; t++)
        ck_ok(pthread_create(&th[t], NULL, racer, P(t)));
    for (unsigned t = 0; t < RACE_THREADS; t++)
        ck_ok(pthread_join(th[t], NULL));
    ck_threads_ok();
    pthread_barrier_destroy(&race_bar);
    for (int i = 0; i < RACE_FIBERS; i++) {
        ck_assert_int_eq(atomic_load(&race_wins[i]), RACE_ROUNDS);
        ctx_fiber_release(race_fib[i]);
    }
    ck_assert_int_eq(atomic_load(&race_busy),
                     (long)RACE_FIBERS * RACE_ROUNDS * (RACE_THREADS - 1));
}
END_TEST

#endif /* !FIBER_MIGRATION_ONLY */

/* ------------------------------------------------------------------
 * Migration: real stacks, switched in on one thread and then another
 * ---------------------------------------------------------------- */

/* A coroutine with its fiber, driven the way a scheduler does it. */
typedef struct {
    tco_t *co;
    ctx_fiber_t *fiber;
    int hops;             /* yields so far */
    atomic_int bad_line;  /* the first failed check inside it */
} mig_t;

#define MIG_CHECK(m, cond)                                                   \
    do {                                                                     \
        int zero_ = 0;                                                       \
        if (!(cond))                                                         \
            atomic_compare_exchange_strong(&(m)->bad_line, &zero_, __LINE__);\
    } while (0)

/* One step on the calling thread: resume, run until it yields, suspend. */
static int mig_step(mig_t *m)
{
    int err = ctx_fiber_resume(m->fiber);
    if (err != 0)
        return err;
    tco_switch_in(m->co);
    return ctx_fiber_suspend(m->fiber);
}

static void mig_yield(mig_t *m)
{
    m->hops++;
    tco_yield(m->co);
}

/* Each run below spans an odd number of yields, so with two threads
 * taking turns it is entered on one thread and exited on the other. */
static void *mig_inner(void *arg)
{
    mig_t *m = arg;
    MIG_CHECK(m, get_var() == CTX_MISSING); /* c2 is a new context */
    MIG_CHECK(m, ctx_var_set(var, P(3), NULL) == 0);
    mig_yield(m);
    MIG_CHECK(m, get_var() == P(3));
    return P(33);
}

static void *mig_outer(void *arg)
{
    mig_t *m = arg;
    MIG_CHECK(m, ctx_var_set(var, P(2), NULL) == 0);
    mig_yield(m);
    void *r = NULL;
    /* c2 is entered on one thread and exited on the other, by the
     * ctx_context_run() call that entered it; so is c1 around it. */
    MIG_CHECK(m, ctx_context_run(c2, mig_inner, m, &r) == 0);
    MIG_CHECK(m, r == P(33));
    MIG_CHECK(m, get_var() == P(2));
    mig_yield(m);
    MIG_CHECK(m, get_var() == P(2));
    return P(22);
}

static void mig_body(tco_t *co, void *arg)
{
    (void)co;
    mig_t *m = arg;
    MIG_CHECK(m, get_var() == P(1));
    void *r = NULL;
    MIG_CHECK(m, ctx_context_run(c1, mig_outer, m, &r) == 0);
    MIG_CHECK(m, r == P(22));
    MIG_CHECK(m, get_var() == P(1));
    /* An entered context, exited after a hop. */
    MIG_CHECK(m, ctx_context_enter(c3) == 0);
    MIG_CHECK(m, ctx_var_set(var, P(4), NULL) == 0);
    mig_yield(m);
    MIG_CHECK(m, get_var() == P(4));
    MIG_CHECK(m, ctx_context_exit(c3) == 0);
    MIG_CHECK(m, get_var() == P(1));
    MIG_CHECK(m, ctx_context_exit(ctx_fiber_context(m->fiber)) == EPERM);
}

/* Two scheduler threads take turns: each step runs on the other one. */
#define MIG_THREADS 2
static sem_t mig_turn[MIG_THREADS];
static mig_t *mig_cur;
static atomic_int mig_steps[MIG_THREADS];

static void *mig_sched(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    /* The scheduler thread's own binding must never leak in or out. */
    THR_CHECK(ctx_var_set(var, P(900 + me), NULL) == 0);
    for (;;) {
        sem_wait(&mig_turn[me]);
        mig_t *m = mig_cur;
        if (m == NULL || m->co->done) {
            sem_post(&mig_turn[(me + 1) % MIG_THREADS]);
            return NULL;
        }
        THR_CHECK(get_var() == P(900 + me));
        THR_CHECK(mig_step(m) == 0);
        THR_CHECK(get_var() == P(900 + me));
        atomic_fetch_add(&mig_steps[me], 1);
        sem_post(&mig_turn[(me + 1) % MIG_THREADS]);
    }
}

static void migrate_once(void)
{
    teardown(); /* fresh contexts every time */
    setup();
    mig_t m = {0};
    m.fiber = fiber_with(P(1));
    m.co = tco_new(mig_body, &m);
    mig_cur = &m;
    for (int i = 0; i < MIG_THREADS; i++) {
        sem_init(&mig_turn[i], 0, 0);
        atomic_store(&mig_steps[i], 0);
    }
    pthread_t th[MIG_THREADS];
    for (unsigned i = 0; i < MIG_THREADS; i++)
        ck_ok(pthread_create(&th[i], NULL, mig_sched, P(i)));
    sem_post(&mig_turn[0]);
    for (unsigned i = 0; i < MIG_THREADS; i++)
        ck_ok(pthread_join(th[i], NULL));
    ck_threads_ok();
    ck_assert_msg(atomic_load(&m.bad_line) == 0,
                  "check in the coroutine failed at line %d",
                  atomic_load(&m.bad_line));
    ck_assert(m.co->done);
    ck_assert_int_eq(m.hops, 4);
    ck_assert_int_eq(atomic_load(&mig_steps[0]), 3);
    ck_assert_int_eq(atomic_load(&mig_steps[1]), 2);
    /* Every context it entered was exited, wherever it was by then. */
    for (int i = 0; i < 3; i++) {
        ctx_context_t *c = i == 0 ? c1 : i == 1 ? c2 : c3;
        ck_ok(ctx_context_enter(c));
        ck_ok(ctx_context_exit(c));
    }
    void *v = BAD;
    ck_ok(ctx_context_get(c2, var, &v));
    ck_assert_ptr_eq(v, P(3));
    ck_ok(ctx_context_get(ctx_fiber_context(m.fiber), var, &v));
    ck_assert_ptr_eq(v, P(1));
    for (int i = 0; i < MIG_THREADS; i++)
        sem_destroy(&mig_turn[i]);
    tco_free(m.co);
    ctx_fiber_release(m.fiber);
}

START_TEST(migrating_fiber_finishes_run_on_new_thread)
{
    for (int i = 0; i < 20; i++)
        migrate_once();
}
END_TEST

/* The coroutine suspends its own fiber before it yields (the other
 * convention the header allows), and resumes on whichever thread. */
typedef struct {
    tco_t *co;
    ctx_fiber_t *fiber;
    atomic_int bad_line;
} self_t;

static void self_yield(self_t *s)
{
    MIG_CHECK(s, ctx_fiber_suspend(s->fiber) == 0);
    tco_yield(s->co);
    /* The scheduler resumed us before switching in. */
}

static void *self_inner(void *arg)
{
    self_t *s = arg;
    for (int i = 0; i < 4; i++) {
        MIG_CHECK(s, ctx_var_set(var, P(10 + i), NULL) == 0);
        self_yield(s);
        MIG_CHECK(s, get_var() == P(10 + i));
    }
    return NULL;
}

static void self_body(tco_t *co, void *arg)
{
    (void)co;
    self_t *s = arg;
    MIG_CHECK(s, ctx_context_run(c1, self_inner, s, NULL) == 0);
    MIG_CHECK(s, get_var() == P(1));
    MIG_CHECK(s, ctx_fiber_suspend(s->fiber) == 0);
}

static void *self_step(void *arg)
{
    self_t *s = arg;
    THR_CHECK(ctx_var_set(var, P(500), NULL) == 0);
    THR_CHECK(ctx_fiber_resume(s->fiber) == 0);
    tco_switch_in(s->co);
    THR_CHECK(get_var() == P(500)); /* it suspended itself */
    return NULL;
}

START_TEST(self_suspending_fiber_migrates)
{
    self_t s = {0};
    s.fiber = fiber_with(P(1));
    s.co = tco_new(self_body, &s);
    while (!s.co->done)
        on_thread(self_step, &s); /* a new thread every time */
    ck_assert_msg(atomic_load(&s.bad_line) == 0,
                  "check in the coroutine failed at line %d",
                  atomic_load(&s.bad_line));
    ck_ok(ctx_context_enter(c1));
    ck_assert_ptr_eq(get_var(), P(13));
    ck_ok(ctx_context_exit(c1));
    tco_free(s.co);
    ctx_fiber_release(s.fiber);
}
END_TEST

/* Many coroutines on a shared run queue of several threads. */
#define POOL_COS 200
#define POOL_THREADS 3
#define POOL_YIELDS 6

typedef struct {
    tco_t *co;
    ctx_fiber_t *fiber;
    long id;
    pthread_t last;       /* valid once started */
    bool started;
    atomic_int moved;
    atomic_int bad_line;
} job_t;

static job_t pool_jobs[POOL_COS];
static pthread_mutex_t rq_lock = PTHREAD_MUTEX_INITIALIZER;
static job_t *rq[POOL_COS];
static int rq_head, rq_len, pool_left;

static void *deep_read(void *arg)
{
    job_t *j = arg;
    MIG_CHECK(j, get_var() == P(j->id));
    tco_yield(j->co);
    MIG_CHECK(j, get_var() == P(j->id));
    return NULL;
}

static void pool_body(tco_t *co, void *arg)
{
    (void)co;
    job_t *j = arg;
    MIG_CHECK(j, ctx_var_set(var, P(j->id), NULL) == 0);
    for (int i = 0; i < POOL_YIELDS; i++) {
        ctx_context_t *c;
        MIG_CHECK(j, ctx_copy_context(&c) == 0);
        MIG_CHECK(j, ctx_context_run(c, deep_read, j, NULL) == 0);
        ctx_context_release(c);
        tco_yield(j->co);
        MIG_CHECK(j, get_var() == P(j->id));
    }
}

/* Takes the first queued coroutine that last ran on another thread, so
 * that every switch after the first is a migration. */
static job_t *rq_take(pthread_t self)
{
    for (int k = 0; k < rq_len; k++) {
        int at = (rq_head + k) % POOL_COS;
        job_t *j = rq[at];
        if (pthread_equal(j->last, self))
            continue;
        /* Close the gap: move the ones before it up by one. */
        for (; k > 0; k--) {
            int prev = (rq_head + k - 1) % POOL_COS;
            rq[(rq_head + k) % POOL_COS] = rq[prev];
        }
        rq_head = (rq_head + 1) % POOL_COS;
        rq_len--;
        return j;
    }
    return NULL;
}

static void *pool_worker(void *unused)
{
    (void)unused;
    pthread_t self = pthread_self();
    for (;;) {
        pthread_mutex_lock(&rq_lock);
        if (pool_left == 0) {
            pthread_mutex_unlock(&rq_lock);
            return NULL;
        }
        job_t *j = rq_take(self);
        pthread_mutex_unlock(&rq_lock);
        if (j == NULL) {
            sched_yield();
            continue;
        }
        if (j->started)
            atomic_fetch_add(&j->moved, 1);
        j->started = true;
        j->last = self;
        THR_CHECK(ctx_var_get(var, &(void *){0}) == ENOENT);
        THR_CHECK(ctx_fiber_resume(j->fiber) == 0);
        tco_switch_in(j->co);
        THR_CHECK(ctx_fiber_suspend(j->fiber) == 0);
        THR_CHECK(ctx_var_get(var, &(void *){0}) == ENOENT);
        pthread_mutex_lock(&rq_lock);
        if (j->co->done)
            pool_left--;
        else
            rq[(rq_head + rq_len++) % POOL_COS] = j;
        pthread_mutex_unlock(&rq_lock);
    }
}

START_TEST(many_coroutines_on_a_shared_queue)
{
    rq_head = rq_len = 0;
    pool_left = POOL_COS;
    for (int i = 0; i < POOL_COS; i++) {
        job_t *j = &pool_jobs[i];
        j->id = 1000 + i;
        j->fiber = new_fiber(NULL);
        j->co = tco_new(pool_body, j);
        j->started = false;
        atomic_store(&j->moved, 0);
        atomic_store(&j->bad_line, 0);
        rq[rq_len++] = j;
    }
    pthread_t th[POOL_THREADS];
    for (int t = 0; t < POOL_THREADS; t++)
        ck_ok(pthread_create(&th[t], NULL, pool_worker, NULL));
    for (int t = 0; t < POOL_THREADS; t++)
        ck_ok(pthread_join(th[t], NULL));
    ck_threads_ok();
    for (int i = 0; i < POOL_COS; i++) {
        job_t *j = &pool_jobs[i];
        ck_assert_msg(atomic_load(&j->bad_line) == 0,
                      "coroutine %d: check failed at line %d", i,
                      atomic_load(&j->bad_line));
        ck_assert(j->co->done);
        void *v = BAD;
        ck_ok(ctx_context_get(ctx_fiber_context(j->fiber), var, &v));
        ck_assert_ptr_eq(v, P(j->id));
        /* Two switches in per round and one to finish: all but the
         * first on another thread than the one before. */
        ck_assert_int_eq(atomic_load(&j->moved), 2 * POOL_YIELDS);
        tco_free(j->co);
        ctx_fiber_release(j->fiber);
    }
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *fiber_suite(void)
{
    Suite *s = suite_create("fiber");
    TCase *tc = tcase_create("migration");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, migrating_fiber_finishes_run_on_new_thread);
    tcase_add_test(tc, self_suspending_fiber_migrates);
    tcase_add_test(tc, many_coroutines_on_a_shared_queue);
    suite_add_tcase(s, tc);
#ifndef FIBER_MIGRATION_ONLY
    tc = tcase_create("fiber");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, create_null_copies_now);
    tcase_add_test(tc, create_with_ctx_runs_in_it);
    tcase_add_test(tc, suspend_eperm);
    tcase_add_test(tc, resume_twice_is_ebusy);
    tcase_add_test(tc, own_context_entered_by_others_between_runs);
    tcase_add_test(tc, exit_of_own_context_is_eperm);
    tcase_add_test(tc, resume_and_suspend_restore_the_thread_exactly);
    tcase_add_test(tc, held_contexts_stay_entered_across_suspend);
    tcase_add_test(tc, nesting_suspends_innermost_first);
    tcase_add_test(tc, api_inside_a_fiber_acts_on_it);
    tcase_add_test(tc, run_never_unwinds_into_a_fiber);
    tcase_add_test(tc, get_never_sees_another_context);
    tcase_add_test(tc, release_while_holding_exits_held);
    tcase_add_test(tc, release_while_holding_frees_what_only_it_held);
    tcase_add_test(tc, release_while_resumed_frees_at_suspend);
    tcase_add_test(tc, thread_exit_suspends_resumed_fibers);
    tcase_add_test(tc, thread_exit_frees_released_fiber);
    tcase_add_test(tc, fork_child_resumes_fibers_of_other_threads);
    tcase_add_test(tc, watchers_see_resume_and_suspend);
    tcase_add_test(tc, racing_resumes_one_wins);
    suite_add_tcase(s, tc);
#endif
    return s;
}

CTX_TEST_MAIN(fiber_suite)
