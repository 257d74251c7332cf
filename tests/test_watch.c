/*
 * test_watch.c - context-switch watchers: which calls report a switch, on
 * which thread, with which context, in which order; the limits and error
 * codes; what a watcher may and may not do; and that a removed watcher is
 * neither running nor ever called again once ctx_watch_remove() returns,
 * also while other threads switch contexts all the time.
 *
 * Watchers record events (thread, context, the value of `var` as the
 * watcher reads it) into a log; threads other than the test's record the
 * line of their first failed check in thr_fail_line.  "The context
 * current now" is read from the thread state (internal.h), which is what
 * fn must have been given.
 */
#include "config.h"

#include "internal.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define P(n) ((void *)(uintptr_t)(n))
#define MAX_EVENTS 8192
#define NJOBS 64

struct event {
    ctx_context_t *ctx;  /* what fn was given */
    ctx_context_t *now;  /* the thread's current context during the call */
    pthread_t thread;
    void *value;         /* ctx_var_get(var) inside fn, NULL: unbound */
    int tag;             /* the watcher's arg */
};

static ctx_var_t *var;
static struct event events[MAX_EVENTS];
static atomic_int nevents;
static atomic_int seen_value[256]; /* events per small value of var */

static void setup(void)
{
    ck_ok(ctx_var_create(&var, "v", CTX_MISSING, NULL));
    atomic_store(&nevents, 0);
    atomic_store(&thr_fail_line, 0);
}

static void teardown(void)
{
    ctx_var_release(var);
}

static ctx_context_t *current_now(void)
{
    return ctx__ts.current;
}

/* The recording watcher: arg is its tag. */
static void record(ctx_context_t *current, void *arg)
{
    int i = atomic_fetch_add(&nevents, 1);
    THR_CHECK(i < MAX_EVENTS);
    if (i >= MAX_EVENTS)
        return;
    struct event *e = &events[i];
    e->ctx = current;
    e->now = current_now();
    e->thread = pthread_self();
    e->tag = (int)(intptr_t)arg;
    void *v = NULL;
    e->value = ctx_var_get(var, &v) == 0 ? v : NULL;
    if ((uintptr_t)e->value < 256)
        atomic_fetch_add(&seen_value[(uintptr_t)e->value], 1);
}

static int add_recorder(int tag)
{
    int id = 0;
    ck_ok(ctx_watch_add(record, P(tag), &id));
    ck_assert_int_gt(id, 0);
    return id;
}

static ctx_context_t *context_with(void *value)
{
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_enter(c));
    ck_ok(ctx_var_set(var, value, NULL));
    ck_ok(ctx_context_exit(c));
    return c;
}

/* Every event so far was given the context current during the call. */
static void ck_events_consistent(void)
{
    int n = atomic_load(&nevents);
    for (int i = 0; i < n && i < MAX_EVENTS; i++)
        ck_assert_ptr_eq(events[i].ctx, events[i].now);
}

/* ------------------------------------------------------------------
 * Which calls are switches
 * ---------------------------------------------------------------- */

START_TEST(enter_and_exit_report_after_the_change)
{
    ctx_context_t *c = context_with(P(1));
    ck_ok(ctx_var_set(var, P(2), NULL)); /* in the base */
    ctx_context_t *base = current_now();
    int id = add_recorder(0);
    ck_ok(ctx_context_enter(c));
    ck_assert_int_eq(atomic_load(&nevents), 1);
    ck_assert_ptr_eq(events[0].ctx, c);
    ck_assert_ptr_eq(events[0].value, P(1)); /* reads see the new one */
    ck_assert(pthread_equal(events[0].thread, pthread_self()));
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&nevents), 2);
    ck_assert_ptr_eq(events[1].ctx, base);
    ck_assert_ptr_eq(events[1].value, P(2));
    /* Failed calls change nothing and report nothing. */
    ck_assert_int_eq(ctx_context_exit(c), EPERM);
    ck_ok(ctx_context_enter(c));
    ck_assert_int_eq(ctx_context_enter(c), EBUSY);
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_events_consistent();
    ck_ok(ctx_watch_remove(id));
    ck_ok(ctx_context_enter(c));
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ctx_context_release(c);
}
END_TEST

static int seen_in_fn = -1;
static ctx_context_t *current_in_fn;

static void *note_events(void *arg)
{
    (void)arg;
    seen_in_fn = atomic_load(&nevents);
    current_in_fn = current_now();
    return P(9);
}

START_TEST(run_reports_both_halves)
{
    ctx_context_t *c = context_with(P(1));
    ctx_context_t *base = current_now();
    int id = add_recorder(0);
    void *r = NULL;
    ck_ok(ctx_context_run(c, note_events, NULL, &r));
    ck_assert_ptr_eq(r, P(9));
    ck_assert_int_eq(seen_in_fn, 1); /* the entry, before fn ran */
    ck_assert_ptr_eq(current_in_fn, c);
    ck_assert_int_eq(atomic_load(&nevents), 2);
    ck_assert_ptr_eq(events[0].ctx, c);
    ck_assert_ptr_eq(events[0].value, P(1));
    ck_assert_ptr_eq(events[1].ctx, base);
    ck_assert_ptr_eq(events[1].value, NULL);
    ck_events_consistent();
    /* A run refused with EBUSY is no switch. */
    ck_ok(ctx_context_enter(c));
    ck_assert_int_eq(ctx_context_run(c, note_events, NULL, NULL), EBUSY);
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_ok(ctx_watch_remove(id));
    ctx_context_release(c);
}
END_TEST

static void *enter_and_leave_entered(void *arg)
{
    ck_ok(ctx_context_enter(arg)); /* run exits it when we return */
    return NULL;
}

START_TEST(run_unwinding_reports_each_exit)
{
    ctx_context_t *c = context_with(P(1)), *d = context_with(P(2));
    ctx_context_t *base = current_now();
    int id = add_recorder(0);
    ck_ok(ctx_context_run(c, enter_and_leave_entered, d, NULL));
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_assert_ptr_eq(events[0].ctx, c);
    ck_assert_ptr_eq(events[1].ctx, d);
    ck_assert_ptr_eq(events[2].ctx, c); /* d unwound */
    ck_assert_ptr_eq(events[2].value, P(1));
    ck_assert_ptr_eq(events[3].ctx, base);
    ck_events_consistent();
    ck_ok(ctx_watch_remove(id));
    ctx_context_release(c);
    ctx_context_release(d);
}
END_TEST

START_TEST(setting_a_variable_is_no_switch)
{
    int id = add_recorder(0);
    ctx_token_t *t = NULL;
    ck_ok(ctx_var_set(var, P(1), &t));
    ck_ok(ctx_var_set(var, P(2), NULL));
    ck_ok(ctx_var_reset(var, t));
    ctx_token_release(t);
    ctx_context_t *copy = NULL;
    ck_ok(ctx_copy_context(&copy));
    ctx_context_release(copy);
    ck_assert_int_eq(atomic_load(&nevents), 0);
    ck_ok(ctx_watch_remove(id));
}
END_TEST

struct job {
    int index;
    pthread_t thread;
    int events_before;   /* events for this job when it ran, -1: not run */
};

static void *pool_job(void *arg)
{
    struct job *j = arg;
    j->thread = pthread_self();
    void *v = NULL;
    THR_CHECK(ctx_var_get(var, &v) == 0 && v == P(j->index + 1));
    /* (The log itself is being written by the other worker.) */
    j->events_before = atomic_load(&seen_value[j->index + 1]);
    return NULL;
}

START_TEST(pool_job_becomes_current_once_and_is_left)
{
    ctx_pool_t *pool = NULL;
    ck_ok(ctx_pool_create(&pool, 2)); /* before the watcher: workers start */
    static struct job jobs[NJOBS];
    ctx_future_t *f[NJOBS];
    int id = add_recorder(0);
    for (int i = 0; i < NJOBS; i++) {
        jobs[i] = (struct job){.index = i, .events_before = -1};
        ck_ok(ctx_var_set(var, P(i + 1), NULL));
        ck_ok(ctx_pool_submit(pool, pool_job, &jobs[i], &f[i]));
    }
    for (int i = 0; i < NJOBS; i++) {
        ck_ok(ctx_future_wait(f[i], NULL));
        ctx_future_release(f[i]);
    }
    ck_ok(ctx_pool_destroy(pool));
    ck_ok(ctx_watch_remove(id));
    ck_threads_ok();
    int n = atomic_load(&nevents);
    ck_assert_int_eq(n, 2 * NJOBS); /* submitting is no switch */
    ck_events_consistent();
    for (int i = 0; i < NJOBS; i++) {
        ck_assert_int_eq(jobs[i].events_before, 1); /* before fn ran */
        int mine = -1;
        for (int k = 0; k < n; k++)
            if (events[k].value == P(i + 1)) {
                ck_assert_int_eq(mine, -1); /* exactly once */
                mine = k;
            }
        ck_assert_int_ge(mine, 0);
        ck_assert(pthread_equal(events[mine].thread, jobs[i].thread));
        ck_assert(!pthread_equal(events[mine].thread, pthread_self()));
        /* The worker's next event leaves the job: back in its base. */
        int next = -1;
        for (int k = mine + 1; k < n && next < 0; k++)
            if (pthread_equal(events[k].thread, jobs[i].thread))
                next = k;
        ck_assert_int_ge(next, 0);
        ck_assert_ptr_eq(events[next].value, NULL);
        ck_assert_ptr_ne(events[next].ctx, events[mine].ctx);
    }
}
END_TEST

/* A new thread checks that its base was reported, on it, before fn.
 * (Events from first_event on: a joined thread's id may be reused.) */
static int first_event;

static void *thread_body(void *arg)
{
    (void)arg;
    int n = atomic_load(&nevents), mine = 0;
    for (int i = first_event; i < n; i++)
        if (pthread_equal(events[i].thread, pthread_self())) {
            mine++;
            THR_CHECK(events[i].ctx == current_now());
            THR_CHECK(events[i].value == P(7));
        }
    THR_CHECK(mine == 1);
    return P(mine);
}

START_TEST(new_thread_base_is_reported_before_it_runs)
{
    ck_ok(ctx_var_set(var, P(7), NULL));
    int id = add_recorder(0);
    pthread_t t;
    void *r = NULL;
    ck_ok(ctx_thread_create(&t, NULL, thread_body, NULL));
    ck_ok(pthread_join(t, &r));
    ck_assert_ptr_eq(r, P(1));
    /* ctx_thread_wrap + ctx_thread_start (the preload shim's path). */
    void *start = NULL;
    first_event = atomic_load(&nevents);
    ck_ok(ctx_thread_wrap(thread_body, NULL, &start));
    ck_ok(pthread_create(&t, NULL, ctx_thread_start, start));
    ck_ok(pthread_join(t, &r));
    ck_assert_ptr_eq(r, P(1));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&nevents), 2);
    ck_ok(ctx_watch_remove(id));
}
END_TEST

static void *start_on_used_thread(void *arg)
{
    (void)arg;
    ck_ok(ctx_var_set(var, P(3), NULL)); /* this thread uses ctxvars */
    void *start = NULL;
    ck_ok(ctx_thread_wrap(note_events, NULL, &start));
    return ctx_thread_start(start); /* runs inside the snapshot */
}

START_TEST(thread_start_on_a_used_thread_is_a_run)
{
    int id = add_recorder(0);
    ck_assert_ptr_eq(start_on_used_thread(NULL), P(9));
    ck_assert_int_eq(atomic_load(&nevents), 2);
    ck_assert_int_eq(seen_in_fn, 1);
    ck_assert_ptr_eq(events[0].value, P(3));
    ck_assert_ptr_eq(events[0].ctx, current_in_fn);
    ck_assert_ptr_eq(events[1].ctx, current_now());
    ck_ok(ctx_watch_remove(id));
}
END_TEST

START_TEST(callable_call_is_a_run)
{
    ck_ok(ctx_var_set(var, P(3), NULL));
    ctx_callable_t *cl = NULL;
    ck_ok(ctx_callable_create(&cl, note_events, NULL));
    ck_ok(ctx_var_set(var, P(4), NULL));
    int id = add_recorder(0);
    void *r = NULL;
    ck_ok(ctx_callable_call(cl, &r));
    ck_assert_ptr_eq(r, P(9));
    ck_assert_int_eq(seen_in_fn, 1);
    ck_assert_int_eq(atomic_load(&nevents), 2);
    ck_assert_ptr_eq(events[0].ctx, current_in_fn);
    ck_assert_ptr_eq(events[0].value, P(3));
    ck_assert_ptr_eq(events[1].value, P(4));
    ck_assert_ptr_eq(events[1].ctx, current_now());
    ctx_callable_invoke_once(cl); /* a call too: two more */
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_ok(ctx_watch_remove(id));
}
END_TEST

START_TEST(fiber_resume_and_suspend)
{
    ck_ok(ctx_var_set(var, P(5), NULL));
    ctx_fiber_t *f = NULL;
    ck_ok(ctx_fiber_create(&f, NULL)); /* a copy: 5 */
    ck_ok(ctx_var_set(var, P(6), NULL));
    ctx_context_t *base = current_now(), *inner = context_with(P(8));
    int id = add_recorder(0);
    ck_ok(ctx_fiber_resume(f));
    ck_assert_int_eq(atomic_load(&nevents), 1);
    ck_assert_ptr_eq(events[0].ctx, ctx_fiber_context(f));
    ck_assert_ptr_eq(events[0].value, P(5));
    ck_ok(ctx_context_enter(inner)); /* held by the fiber */
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(atomic_load(&nevents), 3);
    ck_assert_ptr_eq(events[2].ctx, base);
    ck_assert_ptr_eq(events[2].value, P(6));
    ck_ok(ctx_fiber_resume(f)); /* back in what it held */
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_assert_ptr_eq(events[3].ctx, inner);
    ck_assert_ptr_eq(events[3].value, P(8));
    /* Refused calls report nothing. */
    ck_assert_int_eq(ctx_fiber_resume(f), EBUSY);
    ck_assert_int_eq(atomic_load(&nevents), 4);
    ck_ok(ctx_context_exit(inner));
    ck_ok(ctx_fiber_suspend(f));
    ck_assert_int_eq(atomic_load(&nevents), 6);
    ck_assert_ptr_eq(events[5].ctx, base);
    ck_assert_int_eq(ctx_fiber_suspend(f), EPERM);
    ck_assert_int_eq(atomic_load(&nevents), 6);
    ck_events_consistent();
    ck_ok(ctx_watch_remove(id));
    ctx_fiber_release(f);
    ctx_context_release(inner);
}
END_TEST

/* ------------------------------------------------------------------
 * Many watchers, order, limits, errors
 * ---------------------------------------------------------------- */

static int order[64];
static atomic_int norder;

static void note_order(ctx_context_t *current, void *arg)
{
    (void)current;
    int i = atomic_fetch_add(&norder, 1);
    if (i < 64)
        order[i] = (int)(intptr_t)arg;
}

static void ck_order(const int *want, int n)
{
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    atomic_store(&norder, 0);
    ck_ok(ctx_context_enter(c));
    ck_assert_int_eq(atomic_load(&norder), n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(order[i], want[i]);
    atomic_store(&norder, 0);
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&norder), n);
    ctx_context_release(c);
}

START_TEST(eight_watchers_called_in_the_order_added)
{
    int id[10];
    for (int i = 0; i < 8; i++)
        ck_ok(ctx_watch_add(note_order, P(i), &id[i]));
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < i; k++)
            ck_assert_int_ne(id[i], id[k]);
    ck_order((int[]){0, 1, 2, 3, 4, 5, 6, 7}, 8);
    int extra = -5;
    ck_assert_int_eq(ctx_watch_add(note_order, P(8), &extra), EAGAIN);
    ck_assert_int_eq(extra, -5);
    ck_order((int[]){0, 1, 2, 3, 4, 5, 6, 7}, 8);
    /* Removing keeps the others' order; re-adding goes last. */
    ck_ok(ctx_watch_remove(id[2]));
    ck_ok(ctx_watch_remove(id[5]));
    ck_order((int[]){0, 1, 3, 4, 6, 7}, 6);
    ck_ok(ctx_watch_add(note_order, P(2), &id[2]));
    ck_ok(ctx_watch_add(note_order, P(20), &id[8]));
    ck_order((int[]){0, 1, 3, 4, 6, 7, 2, 20}, 8);
    ck_assert_int_eq(ctx_watch_add(note_order, P(9), &extra), EAGAIN);
    ck_ok(ctx_watch_remove(id[0]));
    ck_ok(ctx_watch_add(note_order, P(0), &id[0]));
    ck_order((int[]){1, 3, 4, 6, 7, 2, 20, 0}, 8);
    /* The same fn and arg twice are two watchers. */
    ck_ok(ctx_watch_remove(id[1]));
    ck_ok(ctx_watch_remove(id[3]));
    ck_ok(ctx_watch_add(note_order, P(0), &id[1]));
    ck_order((int[]){4, 6, 7, 2, 20, 0, 0}, 7);
    int all[] = {id[0], id[1], id[2], id[4], id[6], id[7], id[8]};
    for (unsigned i = 0; i < sizeof all / sizeof *all; i++)
        ck_ok(ctx_watch_remove(all[i]));
    ck_order(NULL, 0);
    /* Churn: many rounds of add and remove never run out of room. */
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 8; i++)
            ck_ok(ctx_watch_add(note_order, P(i), &id[i]));
        for (int i = 0; i < 8; i++)
            ck_ok(ctx_watch_remove(id[i]));
    }
    ck_order(NULL, 0);
}
END_TEST

START_TEST(bad_arguments)
{
    int id = 0;
    ck_assert_int_eq(ctx_watch_add(NULL, NULL, &id), EINVAL);
    ck_assert_int_eq(ctx_watch_add(record, NULL, NULL), EINVAL);
    ck_assert_int_eq(ctx_watch_remove(0), EINVAL);
    ck_assert_int_eq(ctx_watch_remove(-1), EINVAL);
    ck_assert_int_eq(ctx_watch_remove(12345), EINVAL);
    ck_ok(ctx_watch_add(record, NULL, &id));
    ck_assert_int_eq(ctx_watch_remove(id + 1), EINVAL);
    ck_ok(ctx_watch_remove(id));
    ck_assert_int_eq(ctx_watch_remove(id), EINVAL); /* twice */
    /* Nothing is installed: a switch reports nothing. */
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_enter(c));
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&nevents), 0);
    ctx_context_release(c);
}
END_TEST

/* ------------------------------------------------------------------
 * Inside a watcher
 * ---------------------------------------------------------------- */

static ctx_context_t *other;
static ctx_fiber_t *fib;
static atomic_int fn_ran, inside_calls;

static void *count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fn_ran, 1);
    return NULL;
}

static int count_binding(ctx_var_t *v, void *value, void *arg)
{
    if (v == var)
        *(void **)arg = value;
    return 0;
}

/* Reads work; every switch is refused and changes nothing. */
static void misbehave(ctx_context_t *current, void *arg)
{
    (void)arg;
    atomic_fetch_add(&inside_calls, 1);
    ctx_context_t *before = current_now();
    uint64_t ver = ctx__ts.ver;
    int ran = atomic_load(&fn_ran);
    THR_CHECK(before == current);
    void *v = NULL, *w = NULL, *x = NULL;
    int got = ctx_var_get(var, &v);
    THR_CHECK(ctx_context_get(current, var, &w) == got);
    THR_CHECK(v == w);
    ctx_context_t *copy = NULL;
    THR_CHECK(ctx_copy_context(&copy) == 0);
    THR_CHECK(ctx_context_len(copy) == ctx_context_len(current));
    THR_CHECK(ctx_context_foreach(copy, count_binding, &x) == 0);
    THR_CHECK(x == w);
    THR_CHECK(ctx_context_foreach(current, count_binding, &x) == 0);
    ctx_context_release(copy);

    THR_CHECK(ctx_context_enter(other) == EDEADLK);
    if (current != ctx__stack_floor(&ctx__ts))
        THR_CHECK(ctx_context_exit(current) == EDEADLK);
    THR_CHECK(ctx_context_run(other, count_run, NULL, NULL) == EDEADLK);
    ctx_callable_t *cl = NULL;
    THR_CHECK(ctx_callable_create(&cl, count_run, NULL) == 0);
    THR_CHECK(ctx_callable_call(cl, NULL) == EDEADLK);
    ctx_callable_release(cl);
    if (ctx__ts.fiber == fib)
        THR_CHECK(ctx_fiber_suspend(fib) == EDEADLK);
    else
        THR_CHECK(ctx_fiber_resume(fib) == EDEADLK);
    THR_CHECK(current_now() == before);
    THR_CHECK(ctx__ts.ver == ver);
    THR_CHECK(atomic_load(&fn_ran) == ran);
}

START_TEST(inside_reads_work_and_switches_are_edeadlk)
{
    ctx_context_t *c = context_with(P(1));
    other = context_with(P(2));
    atomic_store(&fn_ran, 0);
    atomic_store(&inside_calls, 0);
    ck_ok(ctx_fiber_create(&fib, NULL));
    int id = 0;
    ck_ok(ctx_watch_add(misbehave, NULL, &id));
    ck_ok(ctx_context_enter(c));
    ck_ok(ctx_context_exit(c));
    ck_ok(ctx_context_run(c, count_run, NULL, NULL));
    ck_ok(ctx_fiber_resume(fib));
    ck_ok(ctx_fiber_suspend(fib));
    ck_assert_int_eq(atomic_load(&inside_calls), 6);
    ck_assert_int_eq(atomic_load(&fn_ran), 1); /* the outer run only */
    ck_threads_ok();
    ck_ok(ctx_watch_remove(id));
    /* Nothing was left entered by the refused calls. */
    ck_ok(ctx_context_enter(other));
    ck_ok(ctx_context_exit(other));
    ck_ok(ctx_fiber_resume(fib));
    ck_ok(ctx_fiber_suspend(fib));
    ctx_fiber_release(fib);
    ctx_context_release(c);
    ctx_context_release(other);
}
END_TEST

static int self_id, victim_id;
static atomic_int self_calls, victim_calls, bystander_calls;

static void removes_itself_and_victim(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    atomic_fetch_add(&self_calls, 1);
    THR_CHECK(ctx_watch_remove(self_id) == 0);
    THR_CHECK(ctx_watch_remove(victim_id) == 0);
    THR_CHECK(ctx_watch_remove(self_id) == EINVAL);
}

static void victim(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    atomic_fetch_add(&victim_calls, 1);
}

static void bystander(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    atomic_fetch_add(&bystander_calls, 1);
}

START_TEST(watcher_removes_itself_and_another)
{
    int by = 0;
    ck_ok(ctx_watch_add(removes_itself_and_victim, NULL, &self_id));
    ck_ok(ctx_watch_add(victim, NULL, &victim_id));
    ck_ok(ctx_watch_add(bystander, NULL, &by));
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_enter(c));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&self_calls), 1);
    ck_assert_int_eq(atomic_load(&victim_calls), 0); /* removed before */
    ck_assert_int_eq(atomic_load(&bystander_calls), 1);
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&self_calls), 1);
    ck_assert_int_eq(atomic_load(&victim_calls), 0);
    ck_assert_int_eq(atomic_load(&bystander_calls), 2);
    ck_ok(ctx_watch_remove(by));
    ctx_context_release(c);
}
END_TEST

/* The last watcher removes itself, then tries to switch. */
static void removes_last_then_switches(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    atomic_fetch_add(&self_calls, 1);
    ctx_context_t *before = current_now();
    THR_CHECK(ctx_watch_remove(self_id) == 0);
    THR_CHECK(ctx_context_enter(other) == EDEADLK);
    THR_CHECK(ctx_context_run(other, count_run, NULL, NULL) == EDEADLK);
    THR_CHECK(current_now() == before);
    /* Adding from inside works; the new one is not called this time. */
    THR_CHECK(ctx_watch_add(victim, NULL, &victim_id) == 0);
}

START_TEST(removing_the_last_from_inside_still_refuses_switches)
{
    other = context_with(P(2));
    atomic_store(&fn_ran, 0);
    ck_ok(ctx_watch_add(removes_last_then_switches, NULL, &self_id));
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_enter(c));
    ck_threads_ok();
    ck_assert_int_eq(atomic_load(&self_calls), 1);
    ck_assert_int_eq(atomic_load(&fn_ran), 0);
    ck_ok(ctx_context_exit(c));
    ck_assert_int_eq(atomic_load(&self_calls), 1);
    ck_assert_int_eq(atomic_load(&victim_calls), 1);
    ck_ok(ctx_watch_remove(victim_id));
    ck_ok(ctx_context_enter(other)); /* was never entered */
    ck_ok(ctx_context_exit(other));
    ctx_context_release(c);
    ctx_context_release(other);
}
END_TEST

/* A watcher on a worker cannot run jobs, so it cannot wait for one of
 * its pool's (that used to retry the refused run for ever); elsewhere a
 * watcher may wait. */
static ctx_future_t *waited;       /* written before armed is set */
static atomic_bool armed;
static sem_t job_gate;
static pthread_t test_thread;
static atomic_int wait_err_worker = -1, wait_err_main = -1;

static void *job_value(void *arg)
{
    return arg;
}

static void *gated_job(void *arg)
{
    sem_wait(&job_gate);
    return arg;
}

static void waits_for_a_job(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    if (!atomic_load(&armed))
        return;
    void *r = NULL;
    if (!pthread_equal(pthread_self(), test_thread)) {
        /* The worker, leaving the gated job: `waited` is queued behind. */
        int expect = -1;
        if (atomic_load(&wait_err_worker) == -1) {
            int err = ctx_future_wait(waited, &r);
            atomic_compare_exchange_strong(&wait_err_worker, &expect, err);
        }
    } else if (atomic_load(&wait_err_main) == -1) {
        int err = ctx_future_wait(waited, &r);
        THR_CHECK(err != 0 || r == P(42));
        atomic_store(&wait_err_main, err);
    }
}

START_TEST(future_wait_inside_a_watcher)
{
    ctx_pool_t *pool = NULL;
    ctx_future_t *first = NULL;
    sem_init(&job_gate, 0, 0);
    test_thread = pthread_self();
    ck_ok(ctx_pool_create(&pool, 1));
    int id = 0;
    ck_ok(ctx_watch_add(waits_for_a_job, NULL, &id));
    ck_ok(ctx_pool_submit(pool, gated_job, P(7), &first));
    ck_ok(ctx_pool_submit(pool, job_value, P(42), &waited));
    atomic_store(&armed, true);
    sem_post(&job_gate);
    void *r = NULL;
    ck_ok(ctx_future_wait(first, &r));
    ck_assert_ptr_eq(r, P(7));
    /* On this thread (no worker): it waits, then the switch completes. */
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_enter(c));
    ck_assert_int_eq(atomic_load(&wait_err_main), 0);
    ck_ok(ctx_context_exit(c));
    ck_ok(ctx_watch_remove(id));
    ck_assert_int_eq(atomic_load(&wait_err_worker), EDEADLK);
    ck_threads_ok();
    ctx_future_release(first);
    ctx_future_release(waited);
    ck_ok(ctx_pool_destroy(pool));
    ctx_context_release(c);
    sem_destroy(&job_gate);
}
END_TEST

/* ------------------------------------------------------------------
 * Removal waits for calls under way, and is final
 * ---------------------------------------------------------------- */

static sem_t in_fn, release_fn;
static atomic_int remove_returned;
static int blocker_id;

static void blocks(ctx_context_t *current, void *arg)
{
    (void)current;
    (void)arg;
    sem_post(&in_fn);
    sem_wait(&release_fn);
}

static void *switch_once(void *arg)
{
    ctx_context_t *c = NULL;
    THR_CHECK(ctx_context_new(&c) == 0);
    THR_CHECK(ctx_context_enter(c) == 0); /* blocks in the watcher */
    THR_CHECK(ctx_context_exit(c) == 0);
    ctx_context_release(c);
    return arg;
}

static void *remove_blocker(void *arg)
{
    THR_CHECK(ctx_watch_remove(blocker_id) == 0);
    atomic_store(&remove_returned, 1);
    return arg;
}

START_TEST(remove_waits_for_a_call_under_way)
{
    sem_init(&in_fn, 0, 0);
    sem_init(&release_fn, 0, 0);
    ck_ok(ctx_watch_add(blocks, NULL, &blocker_id));
    pthread_t sw, rm;
    ck_ok(pthread_create(&sw, NULL, switch_once, NULL));
    sem_wait(&in_fn); /* the switcher is inside fn */
    ck_ok(pthread_create(&rm, NULL, remove_blocker, NULL));
    /* A wrong remove returns at once; give it the time to show it. */
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    ck_assert_int_eq(atomic_load(&remove_returned), 0);
    sem_post(&release_fn);
    ck_ok(pthread_join(rm, NULL));
    ck_assert_int_eq(atomic_load(&remove_returned), 1);
    ck_ok(pthread_join(sw, NULL)); /* its exit was not reported: no post */
    ck_threads_ok();
    sem_destroy(&in_fn);
    sem_destroy(&release_fn);
}
END_TEST

/*
 * The stress: switchers enter, exit and run contexts (and resume and
 * suspend fibers) in a loop; the controller installs watchers on slots and
 * removes them.  Each watcher counts itself inside its slot while it runs
 * and checks that its slot is not marked removed; the controller marks
 * the slot removed right after ctx_watch_remove() returns and then checks
 * that nobody is inside.  Both must never fail.
 */
#define NSWITCHERS 3
#define NSLOTS 6

struct slot {
    atomic_int inside;
    atomic_bool removed;
    atomic_long calls;
    int id;
};

static struct slot slots[NSLOTS];
static atomic_bool stop;
static atomic_long violations, total_calls, switches;

static void stress_watcher(ctx_context_t *current, void *arg)
{
    struct slot *s = arg;
    atomic_fetch_add(&s->inside, 1);
    if (atomic_load(&s->removed))
        atomic_fetch_add(&violations, 1);
    if (current != ctx__ts.current)
        atomic_fetch_add(&violations, 1);
    for (volatile int i = 0; i < 50; i++)
        ;
    if (atomic_load(&s->removed))
        atomic_fetch_add(&violations, 1);
    atomic_fetch_add(&s->calls, 1);
    atomic_fetch_add(&total_calls, 1);
    atomic_fetch_sub(&s->inside, 1);
}

static void *noop(void *arg)
{
    return arg;
}

static void *switcher(void *arg)
{
    (void)arg;
    ctx_context_t *c = NULL, *d = NULL;
    ctx_fiber_t *f = NULL;
    THR_CHECK(ctx_context_new(&c) == 0);
    THR_CHECK(ctx_context_new(&d) == 0);
    THR_CHECK(ctx_fiber_create(&f, NULL) == 0);
    long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        THR_CHECK(ctx_context_enter(c) == 0);
        THR_CHECK(ctx_context_run(d, noop, NULL, NULL) == 0);
        THR_CHECK(ctx_context_exit(c) == 0);
        THR_CHECK(ctx_fiber_resume(f) == 0);
        THR_CHECK(ctx_fiber_suspend(f) == 0);
        n++;
    }
    atomic_fetch_add(&switches, n);
    ctx_fiber_release(f);
    ctx_context_release(c);
    ctx_context_release(d);
    return NULL;
}

static double stress_seconds(void)
{
    const char *s = getenv("CTX_STRESS_SECONDS");
    double v = s != NULL ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void slot_remove(struct slot *s)
{
    THR_CHECK(ctx_watch_remove(s->id) == 0);
    atomic_store(&s->removed, true);
    if (atomic_load(&s->inside) != 0)
        atomic_fetch_add(&violations, 1);
    s->id = 0;
}

START_TEST(removed_watcher_is_never_running_nor_called)
{
    pthread_t t[NSWITCHERS];
    for (int i = 0; i < NSWITCHERS; i++)
        ck_ok(pthread_create(&t[i], NULL, switcher, NULL));
    double end = now_seconds() + stress_seconds() / 2;
    unsigned seed = 1;
    long rounds = 0;
    while (now_seconds() < end || rounds < 50) {
        struct slot *s = &slots[rand_r(&seed) % NSLOTS];
        if (s->id == 0) {
            atomic_store(&s->removed, false);
            ck_ok(ctx_watch_add(stress_watcher, s, &s->id));
        } else {
            slot_remove(s);
        }
        for (int k = rand_r(&seed) % 4; k > 0; k--)
            sched_yield();
        rounds++;
    }
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].id != 0)
            slot_remove(&slots[i]);
    /* Removed for good: switches go on, and no watcher may see them. */
    long before = atomic_load(&total_calls);
    for (int k = 0; k < 1000; k++)
        sched_yield();
    ck_assert_int_eq(atomic_load(&total_calls), before);
    atomic_store(&stop, true);
    for (int i = 0; i < NSWITCHERS; i++)
        ck_ok(pthread_join(t[i], NULL));
    ck_threads_ok();
    long bad = atomic_load(&violations), calls = atomic_load(&total_calls);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_gt(calls, 0); /* it did race */
    ck_assert_int_gt(atomic_load(&switches), 0);
}
END_TEST

/* Two threads add and remove watchers of their own while the switchers
 * run. */
static void *churner(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    int id[3] = {0, 0, 0};
    double end = now_seconds() + stress_seconds() / 2;
    for (int round = 0; round < 2000 && (round < 50 || now_seconds() < end);
         round++) {
        int k = rand_r(&seed) % 3;
        if (id[k] == 0) {
            int err = ctx_watch_add(bystander, NULL, &id[k]);
            THR_CHECK(err == 0 || err == EAGAIN);
            if (err != 0)
                id[k] = 0;
        } else {
            THR_CHECK(ctx_watch_remove(id[k]) == 0);
            id[k] = 0;
        }
        if (round % 16 == 0)
            sched_yield();
    }
    for (int k = 0; k < 3; k++)
        if (id[k] != 0)
            THR_CHECK(ctx_watch_remove(id[k]) == 0);
    return NULL;
}

START_TEST(concurrent_adders_and_removers)
{
    pthread_t t[NSWITCHERS], c[2];
    for (int i = 0; i < NSWITCHERS; i++)
        ck_ok(pthread_create(&t[i], NULL, switcher, NULL));
    for (int i = 0; i < 2; i++)
        ck_ok(pthread_create(&c[i], NULL, churner, P(i + 1)));
    for (int i = 0; i < 2; i++)
        ck_ok(pthread_join(c[i], NULL));
    atomic_store(&stop, true);
    for (int i = 0; i < NSWITCHERS; i++)
        ck_ok(pthread_join(t[i], NULL));
    ck_threads_ok();
    /* All gone: the table is empty again, with room for eight. */
    int id[8];
    for (int i = 0; i < 8; i++)
        ck_ok(ctx_watch_add(note_order, P(i), &id[i]));
    ck_order((int[]){0, 1, 2, 3, 4, 5, 6, 7}, 8);
    for (int i = 0; i < 8; i++)
        ck_ok(ctx_watch_remove(id[i]));
}
END_TEST

static Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("watch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60 + stress_seconds());
    tcase_add_test(tc, enter_and_exit_report_after_the_change);
    tcase_add_test(tc, run_reports_both_halves);
    tcase_add_test(tc, run_unwinding_reports_each_exit);
    tcase_add_test(tc, setting_a_variable_is_no_switch);
    tcase_add_test(tc, pool_job_becomes_current_once_and_is_left);
    tcase_add_test(tc, new_thread_base_is_reported_before_it_runs);
    tcase_add_test(tc, thread_start_on_a_used_thread_is_a_run);
    tcase_add_test(tc, callable_call_is_a_run);
    tcase_add_test(tc, fiber_resume_and_suspend);
    tcase_add_test(tc, eight_watchers_called_in_the_order_added);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, inside_reads_work_and_switches_are_edeadlk);
    tcase_add_test(tc, watcher_removes_itself_and_another);
    tcase_add_test(tc, removing_the_last_from_inside_still_refuses_switches);
    tcase_add_test(tc, future_wait_inside_a_watcher);
    tcase_add_test(tc, remove_waits_for_a_call_under_way);
    tcase_add_test(tc, removed_watcher_is_never_running_nor_called);
    tcase_add_test(tc, concurrent_adders_and_removers);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(watch_suite)
