/*
 * test_pool.c - the thread pool: each job runs in a private snapshot of its
 * submitter's context; futures; nesting and work helping; draining
 * destroy; error codes; allocation failure; no memory left behind.
 *
 * Jobs never call Check (they run on worker threads): they record the line
 * of their first failed check in thr_fail_line, which the test's own
 * thread asserts on.  Jobs that must be "still running" block on a gate
 * the test opens, never on a timer.
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
#include <time.h>

#define P(n) ((void *)(uintptr_t)(n))
#define N_MANY 100000


static ctx_var_t *var;       /* no default */
static atomic_long ran;      /* jobs that ran */
static sem_t started, gate;  /* a gate job posts started, then waits gate */
static ctx_pool_t *pool;     /* for jobs that need it */

static void setup(void)
{
    ck_ok(ctx_var_create(&var, "v", CTX_MISSING, NULL));
    atomic_store(&ran, 0);
    atomic_store(&thr_fail_line, 0);
    sem_init(&started, 0, 0);
    sem_init(&gate, 0, 0);
    pool = NULL;
}

static void teardown(void)
{
    ctx_var_release(var);
    sem_destroy(&gate);
    sem_destroy(&started);
}

static ctx_pool_t *new_pool(unsigned n)
{
    ctx_pool_t *p = NULL;
    ck_ok(ctx_pool_create(&p, n));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void *wait_ok(ctx_future_t *f)
{
    void *r = P(0xbad);
    ck_ok(ctx_future_wait(f, &r));
    ck_assert(ctx_future_done(f));
    ctx_future_release(f);
    return r;
}

/* The job's view of var (CTX_MISSING: unbound). */
static void *read_var(void *unused)
{
    (void)unused;
    atomic_fetch_add(&ran, 1);
    return ctx_var_get_or(var, CTX_MISSING);
}

static void *set_var(void *value)
{
    THR_CHECK(ctx_var_set(var, value, NULL) == 0);
    return read_var(NULL);
}

static void *count(void *arg)
{
    atomic_fetch_add(&ran, 1);
    return arg;
}

static void *gate_job(void *arg)
{
    sem_post(&started);
    sem_wait(&gate);
    return count(arg);
}

/* Submits a gate job and returns once it runs (the worker is busy). */
static ctx_future_t *block_worker(ctx_pool_t *p)
{
    ctx_future_t *f = NULL;
    ck_ok(ctx_pool_submit(p, gate_job, P(1), &f));
    sem_wait(&started);
    return f;
}

/* ------------------------------------------------------------------ */

START_TEST(job_sees_submitter_value_at_submit)
{
    ctx_pool_t *p = new_pool(1);
    ctx_future_t *g = block_worker(p), *f = NULL, *f2 = NULL;
    ck_ok(ctx_var_set(var, P(1), NULL));
    ck_ok(ctx_pool_submit(p, read_var, NULL, &f));
    ck_ok(ctx_var_set(var, P(2), NULL)); /* after the snapshot */
    ck_ok(ctx_pool_submit(p, set_var, P(3), &f2));
    sem_post(&gate);
    ck_assert_ptr_eq(wait_ok(f), P(1));
    ck_assert_ptr_eq(wait_ok(f2), P(3));
    ck_assert_ptr_eq(ctx_var_get_or(var, NULL), P(2)); /* not the job's 3 */
    ck_assert_ptr_eq(wait_ok(g), P(1));
    ck_ok(ctx_pool_destroy(p));
    ck_threads_ok();
}
END_TEST

START_TEST(no_leak_between_jobs_on_one_worker)
{
    ctx_pool_t *p = new_pool(1);
    ctx_future_t *a = NULL, *b = NULL, *c = NULL;
    ck_ok(ctx_pool_submit(p, set_var, P(7), &a)); /* submitter: unbound */
    ck_assert_ptr_eq(wait_ok(a), P(7));
    ck_ok(ctx_pool_submit(p, read_var, NULL, &b));
    ck_assert_ptr_eq(wait_ok(b), CTX_MISSING);
    ck_ok(ctx_var_set(var, P(5), NULL));
    ck_ok(ctx_pool_submit(p, set_var, P(8), NULL));
    ck_ok(ctx_pool_submit(p, read_var, NULL, &c));
    ck_assert_ptr_eq(wait_ok(c), P(5));
    ck_ok(ctx_pool_destroy(p));
    ck_threads_ok();
}
END_TEST

struct submitter {
    ctx_pool_t *pool;
    uintptr_t id;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    enum { JOBS = 2000 };
    static _Thread_local ctx_future_t *fs[JOBS];
    THR_CHECK(ctx_var_set(var, P(s->id), NULL) == 0);
    for (int i = 0; i < JOBS; i++)
        THR_CHECK(ctx_pool_submit(s->pool, read_var, NULL, &fs[i]) == 0);
    for (int i = 0; i < JOBS; i++) {
        void *r = NULL;
        THR_CHECK(ctx_future_wait(fs[i], &r) == 0 && r == P(s->id));
        ctx_future_release(fs[i]);
    }
    return NULL;
}

START_TEST(submitters_each_see_their_own_value)
{
    ctx_pool_t *p = new_pool(3);
    pthread_t th[4];
    struct submitter s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct submitter){p, (uintptr_t)i + 100};
        ck_ok(pthread_create(&th[i], NULL, submit_many, &s[i]));
    }
    for (int i = 0; i < 4; i++)
        ck_ok(pthread_join(th[i], NULL));
    ck_ok(ctx_pool_destroy(p));
    ck_assert_int_eq(atomic_load(&ran), 4 * 2000);
    ck_threads_ok();
}
END_TEST

START_TEST(each_job_snapshots_current_value)
{
    ctx_pool_t *p = new_pool(2);
    static ctx_future_t *fs[1000];
    for (int i = 0; i < 1000; i++) {
        ck_ok(ctx_var_set(var, P(i), NULL));
        ck_ok(ctx_pool_submit(p, read_var, NULL, &fs[i]));
    }
    for (int i = 0; i < 1000; i++)
        ck_assert_ptr_eq(wait_ok(fs[i]), P(i));
    ck_ok(ctx_pool_destroy(p));
}
END_TEST

/* Depth-first nesting: each level sets var, submits the next level and
 * waits on it; the child must see the parent job's value. */
static void *nest(void *arg)
{
    uintptr_t depth = (uintptr_t)arg;
    THR_CHECK(depth == 0 || ctx_var_get_or(var, NULL) == P(depth + 1));
    if (depth == 0)
        return P(1);
    THR_CHECK(ctx_var_set(var, P(depth), NULL) == 0);
    ctx_future_t *f = NULL;
    void *r = NULL;
    THR_CHECK(ctx_pool_submit(pool, nest, P(depth - 1), &f) == 0);
    THR_CHECK(ctx_future_wait(f, &r) == 0);
    ctx_future_release(f);
    THR_CHECK(ctx_var_get_or(var, NULL) == P(depth)); /* child's set stayed */
    return P((uintptr_t)r + 1);
}

START_TEST(nested_submit_and_wait_on_one_worker)
{
    pool = new_pool(1);
    ctx_future_t *f[4] = {NULL};
    ck_ok(ctx_var_set(var, P(51), NULL));
    for (int i = 0; i < 4; i++) /* queued siblings get helped too */
        ck_ok(ctx_pool_submit(pool, nest, P(50), &f[i]));
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_eq(wait_ok(f[i]), P(51));
    ck_ok(ctx_pool_destroy(pool));
    ck_threads_ok();
}
END_TEST

/* Divide and conquer: every job forks two and waits on both. */
static void *tree(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    if (n < 2)
        return P(1);
    ctx_future_t *a = NULL, *b = NULL;
    void *ra = NULL, *rb = NULL;
    THR_CHECK(ctx_pool_submit(pool, tree, P(n / 2), &a) == 0);
    THR_CHECK(ctx_pool_submit(pool, tree, P(n - n / 2), &b) == 0);
    THR_CHECK(ctx_future_wait(b, &rb) == 0);
    THR_CHECK(ctx_future_wait(a, &ra) == 0);
    ctx_future_release(a);
    ctx_future_release(b);
    return P((uintptr_t)ra + (uintptr_t)rb);
}

START_TEST(fork_join_tree)
{
    for (unsigned n = 1; n <= 3; n++) {
        pool = new_pool(n);
        ctx_future_t *f = NULL;
        ck_ok(ctx_pool_submit(pool, tree, P(4096), &f));
        ck_assert_ptr_eq(wait_ok(f), P(4096));
        ck_ok(ctx_pool_destroy(pool));
    }
    ck_threads_ok();
}
END_TEST

/* Two jobs that only finish together: the pool must not leave one queued
 * behind the other while a worker is idle. */
static pthread_barrier_t rendezvous;

static void *meet(void *arg)
{
    pthread_barrier_wait(&rendezvous);
    return count(arg);
}

START_TEST(queued_job_never_stuck_behind_a_blocked_one)
{
    for (unsigned n = 2; n <= 4; n++) {
        for (int round = 0; round < 50; round++) {
            ctx_pool_t *p = new_pool(n);
            pthread_barrier_init(&rendezvous, NULL, n);
            for (unsigned i = 0; i < n; i++)
                ck_ok(ctx_pool_submit(p, meet, NULL, NULL));
            ck_ok(ctx_pool_destroy(p)); /* hangs if one is stuck */
            pthread_barrier_destroy(&rendezvous);
        }
    }
    ck_assert_int_eq(atomic_load(&ran), 50 * (2 + 3 + 4));
}
END_TEST

static atomic_int drain_rc = -1;

static void *submit_during_drain(void *arg)
{
    atomic_store(&drain_rc, ctx_pool_submit(pool, count, arg, NULL));
    return count(arg);
}

static void *destroyer(void *p)
{
    return P(ctx_pool_destroy(p));
}

START_TEST(destroy_drains_and_refuses_outsiders)
{
    pool = new_pool(1);
    ctx_future_t *g = block_worker(pool);
    for (int i = 0; i < 999; i++)
        ck_ok(ctx_pool_submit(pool, count, NULL, NULL));
    ck_ok(ctx_pool_submit(pool, submit_during_drain, NULL, NULL));
    pthread_t th;
    ck_ok(pthread_create(&th, NULL, destroyer, pool));
    /* Submits land until destroy begins; then they are refused. */
    long extra = 0;
    int rc;
    while ((rc = ctx_pool_submit(pool, count, NULL, NULL)) == 0) {
        extra++;
        sched_yield(); /* let the destroyer run */
    }
    ck_assert_int_eq(rc, ESHUTDOWN);
    ck_assert_int_eq(ctx_pool_submit_in(pool, NULL, count, NULL, NULL),
                     ESHUTDOWN);
    ck_assert_int_eq(atomic_load(&ran), 0);
    sem_post(&gate);
    void *ret = P(1);
    ck_ok(pthread_join(th, &ret));
    ck_assert_ptr_eq(ret, P(0));
    ck_assert_int_eq(atomic_load(&drain_rc), 0);
    /* gate + 999 + the drain submitter + its child + the extras */
    ck_assert_int_eq(atomic_load(&ran), 1 + 999 + 1 + 1 + extra);
    ck_assert(ctx_future_done(g));
    ck_assert_ptr_eq(wait_ok(g), P(1)); /* a future outlives its pool */
}
END_TEST

static void *destroy_own_pool(void *unused)
{
    (void)unused;
    return P(ctx_pool_destroy(pool));
}

START_TEST(destroy_from_a_job_is_edeadlk)
{
    pool = new_pool(2);
    ctx_future_t *f = NULL;
    ck_ok(ctx_pool_submit(pool, destroy_own_pool, NULL, &f));
    ck_assert_ptr_eq(wait_ok(f), P(EDEADLK));
    ck_ok(ctx_pool_submit(pool, count, P(3), &f)); /* still works */
    ck_assert_ptr_eq(wait_ok(f), P(3));
    ck_ok(ctx_pool_destroy(pool));
}
END_TEST

/* A value that counts its holders: a job snapshot that is never freed
 * keeps the binding its job made, and so a hold. */
static atomic_long holds;
static void hold(void *v) { (void)v; atomic_fetch_add(&holds, 1); }
static void unhold(void *v) { (void)v; atomic_fetch_sub(&holds, 1); }
static char counted;

static void *set_counted(void *f)
{
    ctx_var_t *cv = f;
    THR_CHECK(ctx_var_set(cv, &counted, NULL) == 0);
    atomic_fetch_add(&ran, 1);
    return NULL;
}

static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
}

static void many_jobs(ctx_var_t *cv, long n)
{
    ctx_pool_t *p = new_pool(2);
    for (long i = 0; i < n; i++) {
        ctx_future_t *f = NULL;
        ck_ok(ctx_pool_submit(p, read_var, NULL, &f));
        if (i % 3 == 0) {
            ck_assert_ptr_eq(wait_ok(f), P(9));
        } else {
            ctx_future_release(f); /* released unwaited */
        }
        ck_ok(ctx_pool_submit(p, set_counted, cv, NULL));
    }
    ck_ok(ctx_pool_destroy(p));
}

START_TEST(many_jobs_leave_no_memory)
{
    ctx_value_ops_t ops = {hold, unhold};
    ctx_var_t *cv = NULL;
    ck_ok(ctx_var_create(&cv, "counted", CTX_MISSING, &ops));
    ck_ok(ctx_var_set(var, P(9), NULL));
    many_jobs(cv, 1000); /* warm up the allocator */
    size_t before = heap_in_use();
    many_jobs(cv, N_MANY);
    size_t after = heap_in_use();
    ck_assert_int_eq(atomic_load(&ran), 2 * (N_MANY + 1000));
    ck_assert_int_eq(atomic_load(&holds), 0);
    /* 2e5 jobs: a leak of even one small block per job shows as MBs. */
    ck_assert_msg(after < before + 512 * 1024, "heap grew by %zu bytes",
                  after - before);
    ctx_var_release(cv);
    ck_threads_ok();
}
END_TEST

static struct timespec in_ms(long ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += (ms % 1000) * 1000000L;
    t.tv_sec += ms / 1000 + t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    return t;
}

static void *timed_wait_job(void *f)
{
    struct timespec t = in_ms(20);
    return P(ctx_future_timedwait(f, &t, NULL));
}

START_TEST(timedwait_times_out)
{
    pool = new_pool(2);
    ctx_future_t *g = block_worker(pool), *h = NULL;
    struct timespec t = in_ms(20), past = {0, 0}, bad = {0, 1000000000L};
    void *r = P(0xbad);
    ck_assert_int_eq(ctx_future_timedwait(g, &t, &r), ETIMEDOUT);
    ck_assert_int_eq(ctx_future_timedwait(g, &past, &r), ETIMEDOUT);
    ck_assert_int_eq(ctx_future_timedwait(g, &bad, &r), EINVAL);
    ck_assert_ptr_eq(r, P(0xbad));
    ck_assert(!ctx_future_done(g));
    /* A job's timed wait helps, then times out all the same. */
    ck_ok(ctx_pool_submit(pool, timed_wait_job, g, &h));
    ck_assert_ptr_eq(wait_ok(h), P(ETIMEDOUT));
    sem_post(&gate);
    t = in_ms(60000);
    ck_ok(ctx_future_timedwait(g, &t, &r));
    ck_assert_ptr_eq(r, P(1));
    ck_ok(ctx_future_timedwait(g, &past, &r)); /* done: time is no matter */
    ctx_future_release(g);
    ck_ok(ctx_pool_destroy(pool));
}
END_TEST

START_TEST(max_queued_gives_eagain)
{
    ctx_pool_options_t o = {0};
    o.nthreads = 1;
    o.max_queued = 2;
    ctx_pool_t *p = NULL;
    ck_ok(ctx_pool_create_ex(&p, &o));
    ctx_future_t *g = block_worker(p), *f = NULL;
    ck_ok(ctx_pool_submit(p, count, NULL, NULL));
    ck_ok(ctx_pool_submit(p, count, NULL, NULL));
    ck_assert_int_eq(ctx_pool_submit(p, count, NULL, &f), EAGAIN);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(ctx_pool_submit_in(p, NULL, count, NULL, NULL), EAGAIN);
    sem_post(&gate);
    wait_ok(g);
    ck_ok(ctx_pool_destroy(p));
    ck_assert_int_eq(atomic_load(&ran), 3);
}
END_TEST

START_TEST(submit_in_explicit_and_empty_context)
{
    ctx_pool_t *p = new_pool(2);
    ctx_context_t *c = NULL;
    ctx_future_t *f = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_var_set(var, P(1), NULL)); /* the submitter's own */
    ck_ok(ctx_context_run(c, set_var, P(7), NULL));
    ck_ok(ctx_pool_submit_in(p, c, set_var, P(8), &f));
    ck_assert_ptr_eq(wait_ok(f), P(8));
    ck_ok(ctx_pool_submit_in(p, c, read_var, NULL, &f));
    ck_assert_ptr_eq(wait_ok(f), P(7)); /* a copy: c kept its 7 */
    void *v = NULL;
    ck_ok(ctx_context_get(c, var, &v));
    ck_assert_ptr_eq(v, P(7));
    ck_ok(ctx_pool_submit_in(p, NULL, read_var, NULL, &f));
    ck_assert_ptr_eq(wait_ok(f), CTX_MISSING);
    ctx_context_release(c);
    ck_ok(ctx_pool_destroy(p));
    ck_threads_ok();
}
END_TEST

START_TEST(null_arguments)
{
    ctx_pool_t *p = new_pool(1);
    ctx_future_t *f = NULL;
    struct timespec t = in_ms(0);
    ck_assert_int_eq(ctx_pool_create(NULL, 1), EINVAL);
    ck_assert_int_eq(ctx_pool_create_ex(NULL, NULL), EINVAL);
    ck_assert_int_eq(ctx_pool_submit(NULL, count, NULL, &f), EINVAL);
    ck_assert_int_eq(ctx_pool_submit(p, NULL, NULL, &f), EINVAL);
    ck_assert_int_eq(ctx_pool_submit_in(NULL, NULL, count, NULL, &f), EINVAL);
    ck_assert_int_eq(ctx_pool_submit_in(p, NULL, NULL, NULL, &f), EINVAL);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(ctx_future_wait(NULL, NULL), EINVAL);
    ck_assert_int_eq(ctx_future_timedwait(NULL, &t, NULL), EINVAL);
    ck_ok(ctx_pool_submit(p, count, P(2), &f));
    ck_assert_int_eq(ctx_future_timedwait(f, NULL, NULL), EINVAL);
    ck_ok(ctx_future_wait(f, NULL)); /* result may be NULL */
    ctx_future_release(f);
    ck_assert(!ctx_future_done(NULL));
    ctx_future_release(NULL);
    ck_assert_int_eq(ctx_pool_destroy(NULL), EINVAL);
    ck_ok(ctx_pool_destroy(p));
    ctx_pool_t *q = NULL; /* NULL options: the defaults */
    ck_ok(ctx_pool_create_ex(&q, NULL));
    ck_ok(ctx_pool_destroy(q));
}
END_TEST

START_TEST(enomem_queues_nothing)
{
    ck_ok(ctx_var_set(var, P(4), NULL));
    ctx_pool_t *p = new_pool(1);
    ctx_future_t *f = P(0x5a);
    /* A fresh pool has no record to reuse: submit must allocate one. */
    long k = 0;
    for (;; k++) {
        ctx__fault_fail_after(k);
        int err = ctx_pool_submit(p, read_var, NULL, &f);
        if (ctx__fault_armed())
            break;
        ck_assert_int_eq(err, ENOMEM);
        ck_assert_ptr_eq(f, P(0x5a)); /* and nothing queued: see below */
    }
    ctx__fault_fail_after(-1);
    ck_assert_int_ge(k, 1);
    ck_assert_ptr_eq(wait_ok(f), P(4));
    ck_ok(ctx_pool_destroy(p));
    ck_assert_int_eq(atomic_load(&ran), 1);
    p = new_pool(1);
    ctx__fault_fail_after(0);
    ck_assert_int_eq(ctx_pool_submit_in(p, NULL, count, NULL, &f), ENOMEM);
    ctx__fault_fail_after(-1);
    ck_ok(ctx_pool_destroy(p));
    ck_assert_int_eq(atomic_load(&ran), 1);
    ctx__fault_fail_after(0);
    ck_assert_int_eq(ctx_pool_create(&p, 1), ENOMEM);
    ctx__fault_fail_after(-1);
}
END_TEST

static void *stack_size_of_worker(void *unused)
{
    (void)unused;
    pthread_attr_t attr;
    size_t size = 0;
    THR_CHECK(pthread_getattr_np(pthread_self(), &attr) == 0);
    THR_CHECK(pthread_attr_getstacksize(&attr, &size) == 0);
    pthread_attr_destroy(&attr);
    return P(size);
}

START_TEST(options_stack_size_and_default_workers)
{
    enum { STACK = 512 * 1024 };
    ctx_pool_options_t o = {0};
    o.stack_size = STACK;
    o.nthreads = 2;
    ctx_pool_t *p = NULL;
    ctx_future_t *f = NULL;
    ck_ok(ctx_pool_create_ex(&p, &o));
    ck_ok(ctx_pool_submit(p, stack_size_of_worker, NULL, &f));
    uintptr_t size = (uintptr_t)wait_ok(f);
    ck_assert_uint_ge(size, STACK);
    ck_assert_uint_lt(size, 2 * STACK);
    ck_ok(ctx_pool_destroy(p));
    ck_threads_ok();
    ck_ok(ctx_pool_create(&p, 0)); /* one per CPU */
    ck_ok(ctx_pool_submit(p, count, NULL, &f));
    wait_ok(f);
    ck_ok(ctx_pool_destroy(p));
}
END_TEST

/* ------------------------------------------------------------------
 * Waiting jobs help: any queued job, from the inbox or another worker's
 * ring, runs on a waiter's thread while what it waits for runs elsewhere.
 * ---------------------------------------------------------------- */

static void *post_gate(void *arg)
{
    sem_post(&gate);
    return count(arg);
}

/* Runs on one worker and holds it until post_gate has run; when
 * arg is set it queues that job on its own ring first. */
static void *hold_until_helped(void *own)
{
    if (own != NULL)
        THR_CHECK(ctx_pool_submit(pool, post_gate, NULL, NULL) == 0);
    sem_post(&started);
    sem_wait(&gate);
    return P(7);
}

static void *wait_on(void *f)
{
    sem_post(&started);
    void *r = NULL;
    THR_CHECK(ctx_future_wait(f, &r) == 0);
    return r;
}

START_TEST(waiter_runs_any_queued_job)
{
    /* 0: the job it needs is in the inbox (submitted from outside);
     * 1: on the blocked worker's own ring, so the waiter must steal it. */
    for (int own = 0; own < 2; own++) {
        pool = new_pool(2);
        ctx_future_t *b = NULL, *w = NULL;
        ck_ok(ctx_pool_submit(pool, hold_until_helped, P(own), &b));
        sem_wait(&started);
        ck_ok(ctx_pool_submit(pool, wait_on, b, &w));
        sem_wait(&started); /* both workers busy: only the waiter is free */
        if (!own)
            ck_ok(ctx_pool_submit(pool, post_gate, NULL, NULL));
        ck_assert_ptr_eq(wait_ok(w), P(7)); /* hangs unless it helped */
        ck_assert_ptr_eq(wait_ok(b), P(7));
        ck_ok(ctx_pool_destroy(pool));
    }
    ck_assert_int_eq(atomic_load(&ran), 2);
    ck_threads_ok();
}
END_TEST

/* fib the fork-join way: submit fib(n-1), compute fib(n-2) here, wait.
 * Each level binds var to n: the child sees its parent's value at submit,
 * and nothing the child sets reaches the parent. */
static void *fib_job(void *arg)
{
    uintptr_t n = (uintptr_t)arg;
    THR_CHECK(ctx_var_get_or(var, NULL) == P(n + 1)); /* the parent's */
    if (n < 2)
        return P(n);
    THR_CHECK(ctx_var_set(var, P(n), NULL) == 0);
    ctx_future_t *f = NULL;
    void *x = NULL;
    THR_CHECK(ctx_pool_submit(pool, fib_job, P(n - 1), &f) == 0);
    THR_CHECK(ctx_var_set(var, P(n - 1), NULL) == 0);
    uintptr_t y = (uintptr_t)fib_job(P(n - 2));
    THR_CHECK(ctx_var_set(var, P(n), NULL) == 0);
    THR_CHECK(ctx_future_wait(f, &x) == 0);
    ctx_future_release(f);
    THR_CHECK(ctx_var_get_or(var, NULL) == P(n));
    return P((uintptr_t)x + y);
}

/* A request job: n sub-jobs, each submitted with var bound to its index,
 * waited for in submission order (or reversed), so the waiter runs the
 * newer ones from its ring first. */
static void *sub_job(void *unused)
{
    (void)unused;
    atomic_fetch_add(&ran, 1);
    return ctx_var_get_or(var, NULL);
}

static void *fan_out(void *arg)
{
    uintptr_t n = (uintptr_t)arg & 0xffff;
    bool reverse = ((uintptr_t)arg >> 16) != 0;
    ctx_future_t *f[600];
    for (uintptr_t i = 0; i < n; i++) {
        THR_CHECK(ctx_var_set(var, P(i + 1), NULL) == 0);
        THR_CHECK(ctx_pool_submit(pool, sub_job, NULL, &f[i]) == 0);
    }
    uintptr_t bad = 0;
    for (uintptr_t k = 0; k < n; k++) {
        uintptr_t i = reverse ? n - 1 - k : k;
        void *r = NULL;
        THR_CHECK(ctx_future_wait(f[i], &r) == 0);
        bad += r != P(i + 1);
        ctx_future_release(f[i]);
    }
    return P(bad);
}

START_TEST(nested_fork_join_on_one_and_two_workers)
{
    static const uintptr_t fib[] = {0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55,
                                    89, 144, 233, 377, 610, 987, 1597};
    for (unsigned n = 1; n <= 2; n++) {
        pool = new_pool(n);
        for (uintptr_t k = 0; k < 18; k++) {
            ck_ok(ctx_var_set(var, P(k + 1), NULL));
            ctx_future_t *f = NULL;
            ck_ok(ctx_pool_submit(pool, fib_job, P(k), &f));
            ck_assert_ptr_eq(wait_ok(f), P(fib[k]));
        }
        /* Fan-outs of up to 600, more than a ring holds (RING_SIZE). */
        static const uintptr_t sizes[] = {1, 32, 300, 600};
        for (int i = 0; i < 4; i++)
            for (uintptr_t rev = 0; rev < 2; rev++) {
                ctx_future_t *f[3];
                for (int j = 0; j < 3; j++) /* requests side by side */
                    ck_ok(ctx_pool_submit(pool, fan_out,
                                          P(sizes[i] | rev << 16), &f[j]));
                for (int j = 0; j < 3; j++)
                    ck_assert_ptr_eq(wait_ok(f[j]), P(0));
            }
        ck_ok(ctx_pool_destroy(pool));
    }
    ck_assert_int_eq(atomic_load(&ran), 2 * 2 * 3 * (1 + 32 + 300 + 600));
    ck_threads_ok();
}
END_TEST

/* A job's submits skip the submitters' lock: max_queued and the strong
 * ENOMEM guarantee must hold for them all the same. */
static void *own_limits(void *unused)
{
    (void)unused;
    ctx_future_t *a = NULL, *b = NULL, *c = P(0x5a);
    THR_CHECK(ctx_pool_submit(pool, count, NULL, &a) == 0);
    THR_CHECK(ctx_pool_submit(pool, count, NULL, &b) == 0);
    THR_CHECK(ctx_pool_submit(pool, count, NULL, &c) == EAGAIN);
    THR_CHECK(c == P(0x5a));
    /* Waiting for the older runs the ring down to it: both. */
    THR_CHECK(ctx_future_wait(a, NULL) == 0);
    THR_CHECK(ctx_future_done(b));
    ctx_future_release(a);
    ctx_future_release(b);
    return P(1);
}

static void *own_enomem(void *unused)
{
    (void)unused;
    ctx_future_t *f = P(0x5a);
    long k = 0;
    for (;; k++) {
        ctx__fault_fail_after(k);
        int err = ctx_pool_submit(pool, read_var, NULL, &f);
        if (ctx__fault_armed())
            break;
        THR_CHECK(err == ENOMEM);
        THR_CHECK(f == P(0x5a));
    }
    ctx__fault_fail_after(-1);
    void *r = NULL;
    THR_CHECK(ctx_future_wait(f, &r) == 0);
    ctx_future_release(f);
    return P(k > 0 && r == P(6));
}

START_TEST(own_submits_keep_max_queued_and_enomem)
{
    ctx_pool_options_t o = {0};
    o.nthreads = 1;
    o.max_queued = 2;
    ck_ok(ctx_pool_create_ex(&pool, &o));
    ctx_future_t *f = NULL;
    ck_ok(ctx_pool_submit(pool, own_limits, NULL, &f));
    ck_assert_ptr_eq(wait_ok(f), P(1));
    ck_ok(ctx_pool_destroy(pool));
    ck_assert_int_eq(atomic_load(&ran), 2);
    /* A fresh pool: the job's submit finds no record and must allocate. */
    pool = new_pool(1);
    ck_ok(ctx_var_set(var, P(6), NULL));
    ck_ok(ctx_pool_submit(pool, own_enomem, NULL, &f));
    ck_assert_ptr_eq(wait_ok(f), P(1));
    ck_ok(ctx_pool_destroy(pool));
    ck_assert_int_eq(atomic_load(&ran), 3); /* read_var ran once */
    ck_threads_ok();
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, job_sees_submitter_value_at_submit);
    tcase_add_test(tc, no_leak_between_jobs_on_one_worker);
    tcase_add_test(tc, submitters_each_see_their_own_value);
    tcase_add_test(tc, each_job_snapshots_current_value);
    tcase_add_test(tc, nested_submit_and_wait_on_one_worker);
    tcase_add_test(tc, fork_join_tree);
    tcase_add_test(tc, queued_job_never_stuck_behind_a_blocked_one);
    tcase_add_test(tc, destroy_drains_and_refuses_outsiders);
    tcase_add_test(tc, destroy_from_a_job_is_edeadlk);
    tcase_add_test(tc, many_jobs_leave_no_memory);
    tcase_add_test(tc, timedwait_times_out);
    tcase_add_test(tc, max_queued_gives_eagain);
    tcase_add_test(tc, submit_in_explicit_and_empty_context);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, enomem_queues_nothing);
    tcase_add_test(tc, options_stack_size_and_default_workers);
    tcase_add_test(tc, waiter_runs_any_queued_job);
    tcase_add_test(tc, nested_fork_join_on_one_and_two_workers);
    tcase_add_test(tc, own_submits_keep_max_queued_and_enomem);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(pool_suite)
