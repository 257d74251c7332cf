/*
 * test_uv.c - libctxvars-uv: ctx_uv_queue_work().
 *
 * What the issue promises, each checked on a real loop and libuv's real
 * threadpool: work_cb sees the caller's context as it was at the call,
 * on a pool thread; after_work_cb sees the same snapshot, on the loop
 * thread, cancelled or not; neither's changes reach the other, the caller
 * or the loop thread; req->data stays the caller's and uv_cancel(req)
 * works; thousands of requests from many contexts (and from many loops on
 * many threads at once) each find their own context; bad arguments and
 * ENOMEM (the fault-injection sweep) queue nothing and leak nothing.
 *
 * The loop runs on the test's thread inside iso, the test's own context.
 */
#include "config.h"

#include "internal.h"
#include "context_fixture.h"

#include <ctxvars-uv.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define POOL_THREADS 4 /* UV_THREADPOOL_SIZE, set before libuv starts it */

static uv_loop_t loop;
static pthread_t loop_thread;

static void uv_setup(void)
{
    setenv("UV_THREADPOOL_SIZE", "4", 1);
    isolated_setup();
    ck_ok(uv_loop_init(&loop));
    loop_thread = pthread_self();
    atomic_store(&thr_fail_line, 0);
}

static void uv_teardown(void)
{
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_ok(uv_loop_close(&loop));
    isolated_teardown();
}

/* One request and what its callbacks saw. */
struct job {
    uv_work_t req;
    uintptr_t want;      /* va in the caller's context at the call */
    atomic_int worked;   /* work_cb calls */
    int after;           /* after_work_cb calls */
    int status;          /* after_work_cb's status */
    bool work_on_loop;   /* work_cb ran on the loop thread (it must not) */
    bool after_off_loop; /* after_work_cb ran elsewhere (it must not) */
};

static void job_init(struct job *j, uintptr_t want)
{
    *j = (struct job){.want = want, .status = 12345};
    j->req.data = j;
}

/* Checks va and vb, then scribbles on both, which nobody else may see. */
static void job_work(uv_work_t *req)
{
    struct job *j = req->data;
    THR_CHECK(j->req.data == j);
    THR_CHECK((uintptr_t)ctx_var_get_or(va, P(0)) == j->want);
    THR_CHECK(!ctx_context_contains(iso, vb) &&
              ctx_var_get_or(vb, BAD) == BAD);
    THR_CHECK(ctx_var_set(va, P(0xaaaa), NULL) == 0);
    THR_CHECK(ctx_var_set(vb, P(0xbbbb), NULL) == 0);
    j->work_on_loop = pthread_equal(pthread_self(), loop_thread);
    atomic_fetch_add(&j->worked, 1);
}

static void job_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    /* the same snapshot, untouched by the work's sets.  THR_CHECK: some
     * tests run loops on threads of their own. */
    THR_CHECK((uintptr_t)ctx_var_get_or(va, P(0)) == j->want);
    THR_CHECK(ctx_var_get_or(vb, BAD) == BAD);
    THR_CHECK(ctx_var_set(va, P(0xcccc), NULL) == 0);
    THR_CHECK(ctx_var_set(vb, P(0xdddd), NULL) == 0);
    j->after_off_loop = !pthread_equal(pthread_self(), loop_thread);
    j->status = status;
    j->after++;
}

static void assert_job_done(const struct job *j)
{
    ck_assert_int_eq(atomic_load(&j->worked), 1);
    ck_assert_int_eq(j->after, 1);
    ck_assert_int_eq(j->status, 0);
    ck_assert(!j->work_on_loop);
    ck_assert(!j->after_off_loop);
    ck_assert_ptr_eq(j->req.data, j);
}

/* The caller's context is as it was: va as set, vb unbound. */
static void assert_caller_untouched(uintptr_t va_value)
{
    ck_assert_uint_eq((uintptr_t)get_val(va), va_value);
    ck_assert(!ctx_context_contains(iso, vb));
    ck_assert_uint_eq(ctx_context_len(iso), 1);
}

START_TEST(context_in_both_callbacks)
{
    struct job j;
    job_init(&j, 7);
    ck_ok(ctx_var_set(va, P(7), NULL));
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, job_after));
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    assert_job_done(&j);
    assert_caller_untouched(7);
}
END_TEST

/* The snapshot is taken at the call: sets after it are not seen. */
START_TEST(snapshot_at_the_call)
{
    struct job j;
    job_init(&j, 1);
    ck_ok(ctx_var_set(va, P(1), NULL));
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, job_after));
    ck_ok(ctx_var_set(va, P(2), NULL));
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    assert_job_done(&j);
    assert_caller_untouched(2);
}
END_TEST

/* Queued from inside an entered context: that context is the snapshot,
 * and the loop thread's own (iso) neither shows through nor changes. */
START_TEST(from_an_entered_context)
{
    struct job j;
    job_init(&j, 5);
    ck_ok(ctx_var_set(va, P(9), NULL)); /* iso's value, not seen */
    CTX_ENTER(ca) {
        ck_ok(ctx_var_set(va, P(5), NULL));
        ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, job_after));
    }
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    assert_job_done(&j);
    assert_caller_untouched(9);
    ck_assert_ptr_eq(ctx_val(ca, va), P(5));
    ck_assert(!ctx_context_contains(ca, vb));
}
END_TEST

START_TEST(after_cb_may_be_null)
{
    struct job j;
    job_init(&j, 3);
    ck_ok(ctx_var_set(va, P(3), NULL));
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, NULL));
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&j.worked), 1);
    ck_assert_int_eq(j.after, 0);
    assert_caller_untouched(3);
}
END_TEST

/* after_work_cb queues the same request again, from its own copy: each
 * round's snapshot is the previous after callback's context. */
enum { ROUNDS = 20 };

static void requeue_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq((uintptr_t)ctx_var_get_or(va, P(0)), j->want);
    j->after++;
    if (j->after < ROUNDS) {
        j->want++;
        ck_ok(ctx_var_set(va, P(j->want), NULL));
        ck_ok(ctx_uv_queue_work(&loop, req, job_work, requeue_after));
    }
}

START_TEST(requeue_from_after)
{
    struct job j;
    job_init(&j, 100);
    ck_ok(ctx_var_set(va, P(100), NULL));
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, requeue_after));
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&j.worked), ROUNDS);
    ck_assert_int_eq(j.after, ROUNDS);
    ck_assert_uint_eq(j.want, 100 + ROUNDS - 1);
    assert_caller_untouched(100);
}
END_TEST

/* Thousands of requests from many contexts, all in flight at once. */
enum { NCTX = 64, PER_CTX = 64 };

static void many_from_contexts(uv_loop_t *l, struct job *jobs)
{
    ctx_context_t *cs[NCTX];
    for (int c = 0; c < NCTX; c++) {
        ck_ok(ctx_context_new(&cs[c]));
        CTX_ENTER(cs[c]) {
            ck_ok(ctx_var_set(va, P(c + 1), NULL));
            for (int k = 0; k < PER_CTX; k++) {
                struct job *j = &jobs[c * PER_CTX + k];
                job_init(j, (uintptr_t)c + 1);
                ck_ok(ctx_uv_queue_work(l, &j->req, job_work, job_after));
            }
        }
    }
    ck_ok(uv_run(l, UV_RUN_DEFAULT));
    for (int c = 0; c < NCTX; c++) {
        ck_assert_ptr_eq(ctx_val(cs[c], va), P(c + 1));
        ck_assert_uint_eq(ctx_context_len(cs[c]), 1);
        ctx_context_release(cs[c]);
    }
}

START_TEST(thousands_from_many_contexts)
{
    struct job *jobs = calloc(NCTX * PER_CTX, sizeof *jobs);
    ck_assert_ptr_nonnull(jobs);
    ck_ok(ctx_var_set(va, P(999), NULL));
    many_from_contexts(&loop, jobs);
    ck_threads_ok();
    for (int i = 0; i < NCTX * PER_CTX; i++)
        assert_job_done(&jobs[i]);
    assert_caller_untouched(999);
    free(jobs);
}
END_TEST

/* Several loops on several threads share the threadpool (and the
 * library's side table) at once; each thread runs its own loop. */
enum { NLOOPS = 4, PER_LOOP = 500 };

struct loop_thread {
    pthread_t t;
    uintptr_t id;
    uv_loop_t loop;
    struct job jobs[PER_LOOP];
    int after_ok;
};

static void thread_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    THR_CHECK(status == 0);
    THR_CHECK((uintptr_t)ctx_var_get_or(va, P(0)) == j->want);
    THR_CHECK(ctx_var_get_or(vb, BAD) == BAD);
    j->after++;
}

static void *run_loop_thread(void *arg)
{
    struct loop_thread *lt = arg;
    THR_CHECK(uv_loop_init(&lt->loop) == 0);
    THR_CHECK(ctx_var_set(va, P(lt->id * 1000), NULL) == 0);
    for (int k = 0; k < PER_LOOP; k++) {
        struct job *j = &lt->jobs[k];
        job_init(j, lt->id * 1000 + (uintptr_t)k);
        /* a fresh value per request: each snapshot is its own */
        THR_CHECK(ctx_var_set(va, P(j->want), NULL) == 0);
        THR_CHECK(ctx_uv_queue_work(&lt->loop, &j->req, job_work,
                                    thread_after) == 0);
    }
    THR_CHECK(uv_run(&lt->loop, UV_RUN_DEFAULT) == 0);
    for (int k = 0; k < PER_LOOP; k++)
        lt->after_ok += lt->jobs[k].after == 1 &&
                        atomic_load(&lt->jobs[k].worked) == 1;
    THR_CHECK(uv_loop_close(&lt->loop) == 0);
    return NULL;
}

START_TEST(many_loops_many_threads)
{
    struct loop_thread *lts = calloc(NLOOPS, sizeof *lts);
    ck_assert_ptr_nonnull(lts);
    for (int i = 0; i < NLOOPS; i++) {
        lts[i].id = (uintptr_t)i + 1;
        ck_ok(ctx_thread_create(&lts[i].t, NULL, run_loop_thread, &lts[i]));
    }
    for (int i = 0; i < NLOOPS; i++)
        ck_ok(pthread_join(lts[i].t, NULL));
    ck_threads_ok();
    for (int i = 0; i < NLOOPS; i++)
        ck_assert_int_eq(lts[i].after_ok, PER_LOOP);
    free(lts);
}
END_TEST

/* Cancellation.  Blockers occupy every pool thread until released, so the
 * victim is certainly still queued when uv_cancel() reaches it. */
static uv_sem_t started, release;

static void block_work(uv_work_t *req)
{
    (void)req;
    uv_sem_post(&started);
    uv_sem_wait(&release);
}

static void block_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    ck_assert_int_eq(status, 0);
    j->after++;
}

static void cancelled_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    ck_assert_uint_eq((uintptr_t)ctx_var_get_or(va, P(0)), j->want);
    ck_ok(ctx_var_set(va, P(0xeeee), NULL));
    j->status = status;
    j->after++;
}

static void check_cancel(uv_after_work_cb after)
{
    struct job blockers[POOL_THREADS], victim;
    ck_ok(uv_sem_init(&started, 0));
    ck_ok(uv_sem_init(&release, 0));
    for (int i = 0; i < POOL_THREADS; i++) {
        job_init(&blockers[i], 0);
        ck_ok(ctx_uv_queue_work(&loop, &blockers[i].req, block_work,
                                block_after));
    }
    for (int i = 0; i < POOL_THREADS; i++)
        uv_sem_wait(&started);
    ck_ok(ctx_var_set(va, P(42), NULL));
    job_init(&victim, 42);
    ck_ok(ctx_uv_queue_work(&loop, &victim.req, job_work, after));
    ck_ok(uv_cancel((uv_req_t *)&victim.req));
    for (int i = 0; i < POOL_THREADS; i++)
        uv_sem_post(&release);
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&victim.worked), 0);
    if (after != NULL) {
        ck_assert_int_eq(victim.after, 1);
        ck_assert_int_eq(victim.status, UV_ECANCELED);
    }
    ck_assert_ptr_eq(victim.req.data, &victim);
    for (int i = 0; i < POOL_THREADS; i++)
        ck_assert_int_eq(blockers[i].after, 1);
    assert_caller_untouched(42);
    uv_sem_destroy(&started);
    uv_sem_destroy(&release);
}

START_TEST(cancel_runs_after_in_snapshot)
{
    check_cancel(cancelled_after);
}
END_TEST

/* No after callback: the snapshot is still released (ASan, valgrind). */
START_TEST(cancel_without_after_cb)
{
    check_cancel(NULL);
}
END_TEST

/* A request that already ran cannot be cancelled: libuv says so, and the
 * after callback came with status 0. */
START_TEST(cancel_too_late)
{
    struct job j;
    job_init(&j, 0);
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, job_after));
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_assert_int_eq(uv_cancel((uv_req_t *)&j.req), UV_EBUSY);
    ck_threads_ok();
    assert_job_done(&j);
}
END_TEST

START_TEST(bad_arguments)
{
    struct job j;
    job_init(&j, 0);
    ck_assert_int_eq(ctx_uv_queue_work(NULL, &j.req, job_work, job_after),
                     UV_EINVAL);
    ck_assert_int_eq(ctx_uv_queue_work(&loop, NULL, job_work, job_after),
                     UV_EINVAL);
    ck_assert_int_eq(ctx_uv_queue_work(&loop, &j.req, NULL, job_after),
                     UV_EINVAL);
    ck_assert_int_eq(uv_loop_alive(&loop), 0); /* nothing queued */
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_assert_int_eq(atomic_load(&j.worked), 0);
    ck_assert_int_eq(j.after, 0);
    ck_assert_ptr_eq(j.req.data, &j);
}
END_TEST

/* Queueing a request that is still in flight is refused (libuv would
 * corrupt its queue); the one in flight is not disturbed. */
START_TEST(in_flight_refused)
{
    struct job j;
    job_init(&j, 0);
    ck_ok(ctx_uv_queue_work(&loop, &j.req, job_work, job_after));
    ck_assert_int_eq(ctx_uv_queue_work(&loop, &j.req, job_work, job_after),
                     UV_EBUSY);
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    assert_job_done(&j);
}
END_TEST

/* ENOMEM at every allocation the call makes: UV_ENOMEM, nothing queued,
 * nothing leaked, the caller's context unchanged; then it works. */
START_TEST(enomem_sweep)
{
    struct job j;
    int failures = 0;
    ck_ok(ctx_var_set(va, P(11), NULL));
    for (long k = 0;; k++) {
        job_init(&j, 11);
        ctx__fault_fail_after(k);
        int rc = ctx_uv_queue_work(&loop, &j.req, job_work, job_after);
        bool armed = ctx__fault_armed();
        ctx__fault_fail_after(-1);
        if (rc == 0) {
            ck_assert(armed); /* no allocation failed: the sweep is over */
            break;
        }
        ck_assert(!armed);
        ck_assert_int_eq(rc, UV_ENOMEM);
        ck_assert_int_eq(uv_loop_alive(&loop), 0);
        assert_caller_untouched(11);
        failures++;
        ck_assert_int_lt(k, 100);
    }
    ck_assert_int_ge(failures, 2); /* the record and the copies */
    ck_ok(uv_run(&loop, UV_RUN_DEFAULT));
    ck_threads_ok();
    assert_job_done(&j);
    assert_caller_untouched(11);
}
END_TEST

/* A loop thread that has never used ctxvars: the first call sets it up,
 * and an ENOMEM there is reported by the call (not met in a callback). */
static void *fresh_loop_thread(void *arg)
{
    struct job *j = arg;
    uv_loop_t l;
    int failed = 0;
    THR_CHECK(uv_loop_init(&l) == 0);
    for (long k = 0;; k++) {
        job_init(j, 0);
        ctx__fault_fail_after(k);
        int rc = ctx_uv_queue_work(&l, &j->req, job_work, job_after);
        ctx__fault_fail_after(-1);
        if (rc == 0)
            break;
        THR_CHECK(rc == UV_ENOMEM);
        failed++;
        if (k > 100)
            break;
    }
    THR_CHECK(failed >= 2); /* the record, the copies, the thread's base */
    THR_CHECK(uv_run(&l, UV_RUN_DEFAULT) == 0);
    THR_CHECK(uv_loop_close(&l) == 0);
    return NULL;
}

START_TEST(fresh_thread_enomem)
{
    pthread_t t;
    struct job j;
    ck_ok(pthread_create(&t, NULL, fresh_loop_thread, &j));
    ck_ok(pthread_join(t, NULL));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&j.worked), 1);
    ck_assert_int_eq(j.after, 1);
    ck_assert_int_eq(j.status, 0);
    ck_assert(j.after_off_loop); /* loop_thread is the test's, not t */
}
END_TEST

static Suite *uv_suite(void)
{
    Suite *s = suite_create("uv");
    TCase *tc = tcase_create("uv");

    tcase_add_checked_fixture(tc, uv_setup, uv_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, context_in_both_callbacks);
    tcase_add_test(tc, snapshot_at_the_call);
    tcase_add_test(tc, from_an_entered_context);
    tcase_add_test(tc, after_cb_may_be_null);
    tcase_add_test(tc, requeue_from_after);
    tcase_add_test(tc, thousands_from_many_contexts);
    tcase_add_test(tc, many_loops_many_threads);
    tcase_add_test(tc, cancel_runs_after_in_snapshot);
    tcase_add_test(tc, cancel_without_after_cb);
    tcase_add_test(tc, cancel_too_late);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, in_flight_refused);
    tcase_add_test(tc, enomem_sweep);
    tcase_add_test(tc, fresh_thread_enomem);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(uv_suite)
