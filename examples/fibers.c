/*
 * fibers.c - one coroutine per request on two scheduler threads, each
 * coroutine with a context of its own that follows it from thread to
 * thread.
 *
 * 1,000 "requests" are each handled by a ucontext coroutine.  main()
 * sets the request id and creates the fiber, which takes a copy of the
 * context right then (asyncio.create_task()).  The handler goes through a
 * small call tree: ctx_context_run() inside ctx_context_run(), and a
 * context entered with ctx_context_enter(); it yields in each of them.
 * Two scheduler threads share one run queue, so a coroutine usually comes
 * back on the other thread; deep in the tree, log_event() reads the
 * request id and the stage from context variables that nobody passes
 * down.  Thread-local storage would print the wrong request here.
 *
 * The scheduler's only duty towards ctxvars is two calls around its own
 * stack switch:
 *
 *     ctx_fiber_resume(co->fiber);
 *     switch_in(co);                 // runs until the coroutine yields
 *     ctx_fiber_suspend(co->fiber);
 *
 * Each output line is "fiber=N thread=T req=ID stage=S event=E"; the last
 * is a summary that `make check` verifies (tests/test_fibers_example.sh).
 *
 * Under AddressSanitizer, ThreadSanitizer and valgrind a program that
 * switches stacks must say so, or the tools report errors that are not
 * there; the annotations below are what that takes.
 */
#include <ctxvars.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define USE_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(USE_ASAN)
#define USE_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(USE_TSAN)
#define USE_TSAN 1
#endif
#ifdef USE_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef USE_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define USE_VALGRIND 1
#endif

#define NFIBERS 1000
#define NTHREADS 2
#define STACK_SIZE (128 * 1024)

static ctx_var_t *request_id; /* the request this fiber handles */
static ctx_var_t *stage;      /* how far it got */

struct co {
    ucontext_t uc;
    ucontext_t *sched;   /* where to yield to: the thread running it now */
    char *stack;
    ctx_fiber_t *fiber;
    int no;
    int last_thread;     /* -1: never ran */
    bool migrated;
    bool done;
    char id[24];
#ifdef USE_ASAN
    void *fake_stack;
    const void *sched_stack;
    size_t sched_size;
#endif
#ifdef USE_TSAN
    void *tsan_fiber, *tsan_sched;
#endif
#ifdef USE_VALGRIND
    unsigned vg_stack;
#endif
};

static struct co coros[NFIBERS];
static pthread_t threads[NTHREADS]; /* set by each scheduler itself */
static pthread_barrier_t started;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static struct co *queue[NFIBERS];
static int head, queued, finished;
static long lines, mismatches, switches;

static void check(int err, const char *what)
{
    if (err != 0) {
        fprintf(stderr, "fibers: %s: %s\n", what, strerror(err));
        exit(1);
    }
}

/* ------------------------------------------------------------------
 * Switching stacks (what any coroutine library does for you)
 * ---------------------------------------------------------------- */

static void co_main(unsigned hi, unsigned lo);

static void co_init(struct co *co)
{
    co->stack = malloc(STACK_SIZE);
    if (co->stack == NULL || getcontext(&co->uc) != 0)
        check(12 /* ENOMEM */, "coroutine stack");
    co->uc.uc_stack.ss_sp = co->stack;
    co->uc.uc_stack.ss_size = STACK_SIZE;
    uintptr_t p = (uintptr_t)co;
    makecontext(&co->uc, (void (*)(void))co_main, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
#ifdef USE_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
#ifdef USE_VALGRIND
    co->vg_stack = VALGRIND_STACK_REGISTER(co->stack, co->stack + STACK_SIZE);
#endif
}

static void co_destroy(struct co *co)
{
#ifdef USE_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
#ifdef USE_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->vg_stack);
#endif
    free(co->stack);
}

/* Scheduler side: run co here until it yields or ends. */
static __attribute__((noinline)) void switch_in(struct co *co)
{
    ucontext_t here;
    co->sched = &here;
#ifdef USE_TSAN
    co->tsan_sched = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(co->tsan_fiber, 0);
#endif
#ifdef USE_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, co->stack, STACK_SIZE);
#endif
    swapcontext(&here, &co->uc);
#ifdef USE_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* Coroutine side: back to the scheduler; returns when some scheduler
 * thread, maybe another one, switches us in again. */
static __attribute__((noinline)) void yield(struct co *co)
{
#ifdef USE_ASAN
    __sanitizer_start_switch_fiber(&co->fake_stack, co->sched_stack,
                                   co->sched_size);
#endif
#ifdef USE_TSAN
    __tsan_switch_to_fiber(co->tsan_sched, 0);
#endif
    swapcontext(&co->uc, co->sched);
#ifdef USE_ASAN
    __sanitizer_finish_switch_fiber(co->fake_stack, &co->sched_stack,
                                    &co->sched_size);
#endif
}

/* ------------------------------------------------------------------
 * The request handler: knows nothing about threads
 * ---------------------------------------------------------------- */

static int thread_no(void)
{
    return pthread_equal(pthread_self(), threads[0]) ? 0 : 1;
}

/* Which coroutine's stack we are on: for the log's check only, so that
 * it learns the answer from somewhere else than ctxvars. */
static int coroutine_no(void)
{
    const char *sp = __builtin_frame_address(0);
    for (int i = 0; i < NFIBERS; i++)
        if (sp >= coros[i].stack && sp < coros[i].stack + STACK_SIZE)
            return i;
    return -1;
}

/* Deep in the call tree: who am I working for? */
static void log_event(const char *event)
{
    const char *id = ctx_var_get_or(request_id, (void *)"none");
    const char *where = ctx_var_get_or(stage, (void *)"-");
    int t = thread_no();
    int no = coroutine_no();
    pthread_mutex_lock(&lock);
    lines++;
    mismatches += strcmp(id, coros[no].id) != 0;
    printf("fiber=%d thread=%d req=%s stage=%s event=%s\n", no, t, id, where,
           event);
    pthread_mutex_unlock(&lock);
}

static void *query_db(void *arg)
{
    check(ctx_var_set(stage, "db", NULL), "set stage");
    yield(arg); /* waiting for the database */
    log_event("db-reply");
    return NULL;
}

static void *parse(void *arg)
{
    check(ctx_var_set(stage, "parse", NULL), "set stage");
    yield(arg); /* reading the rest of the request */
    ctx_context_t *sub;
    check(ctx_copy_context(&sub), "copy");
    check(ctx_context_run(sub, query_db, arg, NULL), "run query_db");
    ctx_context_release(sub);
    log_event("parsed"); /* query_db's stage stayed in its copy */
    return NULL;
}

static void handle_request(struct co *co)
{
    log_event("accepted");
    ctx_context_t *c;
    check(ctx_copy_context(&c), "copy");
    check(ctx_context_run(c, parse, co, NULL), "run parse");
    ctx_context_release(c);
    /* A context entered across a yield stays the fiber's. */
    ctx_context_t *txn;
    check(ctx_copy_context(&txn), "copy");
    check(ctx_context_enter(txn), "enter txn");
    check(ctx_var_set(stage, "commit", NULL), "set stage");
    yield(co); /* waiting for the commit */
    log_event("committed");
    check(ctx_context_exit(txn), "exit txn");
    ctx_context_release(txn);
    log_event("done");
}

static void co_main(unsigned hi, unsigned lo)
{
    struct co *co = (struct co *)(((uintptr_t)hi << 32) | lo);
#ifdef USE_ASAN
    __sanitizer_finish_switch_fiber(NULL, &co->sched_stack, &co->sched_size);
#endif
    handle_request(co);
    co->done = true;
#ifdef USE_ASAN
    __sanitizer_start_switch_fiber(NULL, co->sched_stack, co->sched_size);
#endif
#ifdef USE_TSAN
    __tsan_switch_to_fiber(co->tsan_sched, 0);
#endif
    setcontext(co->sched);
}

/* ------------------------------------------------------------------
 * The scheduler: two threads, one run queue
 * ---------------------------------------------------------------- */

/* The oldest queued coroutine that last ran on another thread.  (A real
 * scheduler takes the head; skipping our own makes every yield a
 * migration, which is what this program is about.)  NULL: all done. */
static struct co *take(int me)
{
    pthread_mutex_lock(&lock);
    for (;;) {
        if (finished == NFIBERS) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        for (int k = 0; k < queued; k++) {
            struct co *co = queue[(head + k) % NFIBERS];
            if (co->last_thread == me)
                continue;
            for (; k > 0; k--)
                queue[(head + k) % NFIBERS] = queue[(head + k - 1) % NFIBERS];
            head = (head + 1) % NFIBERS;
            queued--;
            pthread_mutex_unlock(&lock);
            return co;
        }
        pthread_cond_wait(&changed, &lock);
    }
}

static void put(struct co *co)
{
    pthread_mutex_lock(&lock);
    if (co->done)
        finished++;
    else
        queue[(head + queued++) % NFIBERS] = co;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void *scheduler(void *arg)
{
    int me = (int)(intptr_t)arg;
    threads[me] = pthread_self();
    pthread_barrier_wait(&started); /* thread_no() works from here */
    struct co *co;
    while ((co = take(me)) != NULL) {
        if (co->last_thread >= 0)
            co->migrated = true;
        co->last_thread = me;
        check(ctx_fiber_resume(co->fiber), "resume");
        switch_in(co);
        check(ctx_fiber_suspend(co->fiber), "suspend");
        __atomic_fetch_add(&switches, 1, __ATOMIC_RELAXED);
        put(co);
    }
    return NULL;
}

int main(void)
{
    check(ctx_var_create(&request_id, "request_id", CTX_MISSING, NULL),
          "create var");
    check(ctx_var_create(&stage, "stage", CTX_MISSING, NULL), "create var");
    /* Requests arrive: each fiber starts with a copy of main's context
     * as it is when the fiber is made. */
    for (int i = 0; i < NFIBERS; i++) {
        struct co *co = &coros[i];
        co->no = i;
        co->last_thread = -1;
        snprintf(co->id, sizeof co->id, "req-%05d", 7 * i + 3);
        check(ctx_var_set(request_id, co->id, NULL), "set request_id");
        check(ctx_fiber_create(&co->fiber, NULL), "create fiber");
        co_init(co);
        queue[queued++] = co;
    }
    /* The fibers set no request_id of main's: this is main's last. */
    const char *mine = ctx_var_get_or(request_id, NULL);
    pthread_barrier_init(&started, NULL, NTHREADS);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++)
        check(pthread_create(&th[t], NULL, scheduler, (void *)(intptr_t)t),
              "pthread_create");
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&started);
    int migrated = 0;
    for (int i = 0; i < NFIBERS; i++) {
        migrated += coros[i].migrated;
        co_destroy(&coros[i]);
        ctx_fiber_release(coros[i].fiber);
    }
    printf("summary: fibers=%d threads=%d lines=%ld switches=%ld "
           "migrated=%d mismatches=%ld main=%s\n",
           NFIBERS, NTHREADS, lines, switches, migrated, mismatches,
           strcmp(mine, coros[NFIBERS - 1].id) == 0 ? "intact" : "changed");
    ctx_var_release(stage);
    ctx_var_release(request_id);
    return mismatches == 0 ? 0 : 1;
}
