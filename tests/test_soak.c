/*
 * test_soak.c - a long run that must not grow: requests handled the way a
 * server handles them, and fibers created and released by the thousand,
 * with memory measured after a warm-up and at the end.
 *
 * A request is a new context run on the test's thread: a few sets (one
 * with a token, reset at the end), a fan-out to pool jobs that each see
 * the request's values and set their own, and every THREAD_EVERY-th
 * request a thread that does the same.  A fiber is created (in a copy of
 * the current context, or in a context of its own), resumed, set in,
 * suspended, sometimes holding an entered context, sometimes resumed on a
 * pool worker instead, sometimes released while still resumed; released
 * by the batch.
 *
 * The figures (RSS from /proc/self/statm, and mallinfo2()'s heap: bytes
 * the allocator holds from the system and bytes in use) are printed, and
 * growth from the warm-up to the end must stay within GROWTH_LIMIT for
 * both RSS and the bytes in use.  A leak of one small object per request
 * or per fiber is well above it at the full count (CI's soak phase:
 * CTX_SOAK_REQUESTS=1000000); make check runs a small count, where the
 * sanitizers and valgrind catch leaks instead.  Under ASan, TSan or
 * valgrind, which keep freed memory in quarantine or shadow it, RSS and
 * the heap mean nothing: the run is the same, the bound is not checked.
 *
 * Environment: CTX_SOAK_REQUESTS (requests, and fibers unless
 * CTX_SOAK_FIBERS is set; DEFAULT_COUNT by default).
 */
#include "config.h"

#include "testutil.h"

#include <ctxvars.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define ON_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef ON_VALGRIND
#define ON_VALGRIND() 0
#endif

#define P(n) ((void *)(intptr_t)(n))
#define N(p) ((long)(intptr_t)(p))

#define DEFAULT_COUNT 20000
#define VALGRIND_COUNT 1000  /* the default under valgrind */
#define GROWTH_LIMIT (4L << 20)
#define FANOUT 3
#define THREAD_EVERY 1000
#define BATCH 1000           /* fibers alive at once */

static ctx_var_t *req_id, *user, *tag;
static ctx_pool_t *pool;

static void setup(void)
{
    atomic_store(&thr_fail_line, 0);
    ck_ok(ctx_var_create(&req_id, "request_id", CTX_MISSING, NULL));
    ck_ok(ctx_var_create(&user, "user", P(-1), NULL));
    ck_ok(ctx_var_create(&tag, "tag", CTX_MISSING, NULL));
    ck_ok(ctx_pool_create(&pool, 4));
}

static void teardown(void)
{
    ck_ok(ctx_pool_destroy(pool));
    ctx_var_release(tag);
    ctx_var_release(user);
    ctx_var_release(req_id);
}

static long count_from_env(const char *name, long dflt)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return dflt;
    char *end;
    long n = strtol(s, &end, 10);
    if (*end != '\0' || n < 10) { /* also read outside a test: no ck_* */
        fprintf(stderr, "%s=%s: want a count >= 10\n", name, s);
        exit(EXIT_FAILURE);
    }
    return n;
}

static long soak_count(bool fibers)
{
    long n = count_from_env("CTX_SOAK_REQUESTS",
                            ON_VALGRIND() ? VALGRIND_COUNT : DEFAULT_COUNT);
    return fibers ? count_from_env("CTX_SOAK_FIBERS", n) : n;
}

struct mem {
    long rss;      /* resident bytes */
    long heap;     /* bytes the allocator holds: arenas plus mmapped */
    long in_use;   /* bytes allocated and not freed */
};

static struct mem measure(void)
{
    struct mem m;
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    m.rss = resident * sysconf(_SC_PAGESIZE);
    struct mallinfo2 mi = mallinfo2();
    m.heap = (long)(mi.arena + mi.hblkhd);
    m.in_use = (long)(mi.uordblks + mi.hblkhd);
    return m;
}

/* Prints the figures and, where they mean something, bounds the growth. */
static void check_growth(const char *what, long n, struct mem warm,
                         struct mem end)
{
    long drss = end.rss - warm.rss, duse = end.in_use - warm.in_use;
    printf("soak: %s: %ld; after warm-up rss %ld KiB heap %ld KiB in use "
           "%ld KiB; at the end rss %ld KiB heap %ld KiB in use %ld KiB; "
           "growth rss %+ld KiB in use %+ld KiB (limit %ld KiB)\n",
           what, n, warm.rss >> 10, warm.heap >> 10, warm.in_use >> 10,
           end.rss >> 10, end.heap >> 10, end.in_use >> 10, drss / 1024,
           duse / 1024, GROWTH_LIMIT >> 10);
    fflush(stdout);
#ifdef CTX_SANITIZED
    bool meaningful = false;
#else
    bool meaningful = !ON_VALGRIND();
#endif
    if (!meaningful) {
        printf("soak: %s: memory bound not checked (sanitizer or valgrind)\n",
               what);
        return;
    }
    ck_assert_msg(drss <= GROWTH_LIMIT, "%s: RSS grew by %ld KiB", what,
                  drss / 1024);
    ck_assert_msg(duse <= GROWTH_LIMIT, "%s: heap in use grew by %ld KiB",
                  what, duse / 1024);
}

/* ------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------- */

/* arg: the request id times FANOUT plus the job's index. */
static void *job(void *arg)
{
    long id = N(arg) / FANOUT;
    THR_CHECK(N(ctx_var_get_or(req_id, NULL)) == id);
    THR_CHECK(ctx_var_get_or(tag, NULL) == NULL);
    THR_CHECK(ctx_var_set(tag, arg, NULL) == 0);
    THR_CHECK(ctx_var_set(user, P(N(arg) + 1), NULL) == 0);
    return P(N(ctx_var_get_or(tag, NULL)) + N(ctx_var_get_or(user, NULL)));
}

static void *thread_fn(void *arg)
{
    THR_CHECK(ctx_var_get_or(req_id, NULL) == arg);
    THR_CHECK(ctx_var_set(user, P(-7), NULL) == 0);
    THR_CHECK(ctx_var_set(tag, arg, NULL) == 0);
    return arg;
}

static void *request(void *arg)
{
    long id = N(arg);
    ctx_token_t *tok = NULL;
    THR_CHECK(ctx_var_get_or(req_id, NULL) == NULL);
    THR_CHECK(ctx_var_set(req_id, arg, NULL) == 0);
    THR_CHECK(ctx_var_set(user, P(id % 97), &tok) == 0);
    THR_CHECK(ctx_var_set(user, P(id % 89), NULL) == 0);

    ctx_future_t *fut[FANOUT];
    for (int k = 0; k < FANOUT; k++)
        THR_CHECK(ctx_pool_submit(pool, job, P(id * FANOUT + k), &fut[k]) ==
                  0);
    for (int k = 0; k < FANOUT; k++) {
        void *res = NULL;
        THR_CHECK(ctx_future_wait(fut[k], &res) == 0);
        THR_CHECK(N(res) == 2 * (id * FANOUT + k) + 1);
        ctx_future_release(fut[k]);
    }
    if (id % THREAD_EVERY == 0) {
        pthread_t t;
        void *res = NULL;
        THR_CHECK(ctx_thread_create(&t, NULL, thread_fn, arg) == 0);
        THR_CHECK(pthread_join(t, &res) == 0 && res == arg);
    }
    /* What the jobs and the thread set stayed theirs. */
    THR_CHECK(ctx_var_get_or(tag, NULL) == NULL);
    THR_CHECK(N(ctx_var_get_or(user, NULL)) == id % 89);
    THR_CHECK(ctx_var_reset(user, tok) == 0);
    void *u = NULL;
    THR_CHECK(ctx_var_get(user, &u) == 0 && N(u) == -1); /* its default */
    ctx_token_release(tok);
    return arg;
}

static void requests(long from, long to)
{
    for (long id = from; id < to; id++) {
        ctx_context_t *c = NULL;
        void *res = NULL;
        ck_ok(ctx_context_new(&c));
        ck_ok(ctx_context_run(c, request, P(id), &res));
        ck_assert_ptr_eq(res, P(id));
        ck_assert_uint_eq(ctx_context_len(c), 1); /* req_id: user was reset */
        ctx_context_release(c);
    }
    ck_threads_ok();
}

START_TEST(soak_requests)
{
    long n = soak_count(false), warm = n / 10;
    requests(0, warm);
    struct mem m0 = measure();
    requests(warm, n);
    struct mem m1 = measure();
    check_growth("requests", n, m0, m1);
}
END_TEST

/* ------------------------------------------------------------------
 * Fibers
 * ---------------------------------------------------------------- */

struct fib {
    ctx_fiber_t *f;
    ctx_context_t *held;  /* entered in the fiber and left entered */
    long id;
};

/* The fiber's life between a resume and a suspend, on whatever thread. */
static void fiber_step(struct fib *x)
{
    THR_CHECK(ctx_var_set(tag, P(x->id), NULL) == 0);
    THR_CHECK(N(ctx_var_get_or(tag, NULL)) == x->id);
    if (x->id % 3 == 0) {
        THR_CHECK(ctx_context_new(&x->held) == 0);
        THR_CHECK(ctx_context_enter(x->held) == 0);
        THR_CHECK(ctx_var_set(user, P(x->id), NULL) == 0);
    }
}

/* A fiber resumed on a pool worker: the fiber migrates there and back. */
static void *resume_on_worker(void *arg)
{
    struct fib *x = arg;
    THR_CHECK(ctx_fiber_resume(x->f) == 0);
    fiber_step(x);
    THR_CHECK(ctx_fiber_suspend(x->f) == 0);
    return NULL;
}

static void fiber_batch(long from, long to, ctx_context_t *own)
{
    static struct fib batch[BATCH];
    for (long id = from; id < to; id += BATCH) {
        int n = (int)(to - id < BATCH ? to - id : BATCH);
        for (int i = 0; i < n; i++) {
            struct fib *x = &batch[i];
            x->id = id + i;
            x->held = NULL;
            /* Every fourth in a context of its own, retained. */
            ck_ok(ctx_fiber_create(&x->f, x->id % 4 == 1 ? own : NULL));
            if (x->id % 4 == 1) {
                /* own is shared: no two of them may be resumed at once,
                 * so these run and are released one at a time. */
                ck_ok(ctx_fiber_resume(x->f));
                ck_assert_int_eq(ctx_context_enter(own), EBUSY);
                fiber_step(x);
                ck_ok(ctx_fiber_suspend(x->f));
                ctx_fiber_release(x->f);
                x->f = NULL;
            } else if (x->id % 100 == 0) {
                ctx_future_t *fut = NULL;
                ck_ok(ctx_pool_submit(pool, resume_on_worker, x, &fut));
                ck_ok(ctx_future_wait(fut, NULL));
                ctx_future_release(fut);
            } else if (x->id % 10 == 7) {
                /* Released while resumed: the suspend frees it. */
                ck_ok(ctx_fiber_resume(x->f));
                fiber_step(x);
                ctx_fiber_release(x->f);
                ck_ok(ctx_fiber_suspend(x->f));
                x->f = NULL;
            } else {
                ck_ok(ctx_fiber_resume(x->f));
                fiber_step(x);
                ck_ok(ctx_fiber_suspend(x->f));
            }
            /* Suspended: what it still holds is its own. */
            if (x->held != NULL && x->f != NULL)
                ck_assert_int_eq(ctx_context_enter(x->held), EBUSY);
            ck_assert_ptr_null(ctx_var_get_or(tag, NULL));
        }
        for (int i = 0; i < n; i++) {
            struct fib *x = &batch[i];
            ctx_fiber_release(x->f);
            if (x->held != NULL) {
                /* The release (or the suspend) exited it. */
                ck_ok(ctx_context_enter(x->held));
                ck_ok(ctx_context_exit(x->held));
                ctx_context_release(x->held);
            }
        }
    }
    ck_threads_ok();
}

START_TEST(soak_fibers)
{
    long n = soak_count(true), warm = n / 10;
    ctx_context_t *own = NULL;
    ck_ok(ctx_context_new(&own));
    fiber_batch(0, warm, own);
    struct mem m0 = measure();
    fiber_batch(warm, n, own);
    struct mem m1 = measure();
    check_growth("fibers", n, m0, m1);
    /* Every fourth fiber set tag in own; the last one's value stays. */
    void *v = NULL;
    ck_ok(ctx_context_get(own, tag, &v));
    ck_assert_int_eq(N(v) % 4, 1);
    ctx_context_release(own);
}
END_TEST

static Suite *soak_suite(void)
{
    Suite *s = suite_create("soak");
    TCase *tc = tcase_create("soak");
    tcase_add_checked_fixture(tc, setup, teardown);
    /* The full million takes a while; make check's count a few seconds. */
    tcase_set_timeout(tc, 60.0 + (double)soak_count(false) / 500.0);
    tcase_add_test(tc, soak_requests);
    tcase_add_test(tc, soak_fibers);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(soak_suite)
