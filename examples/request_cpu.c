/*
 * request_cpu.c - per-request CPU accounting with a context-switch watcher.
 *
 * Each request is a value of the variable `request`, set once where the
 * request starts; the work then runs on threads, pool jobs and fibers
 * that carry the context along.  One watcher does all the accounting:
 * every time a thread's current context changes, it reads the thread's
 * CPU clock and charges the time since the previous change to the request
 * of the context being left.  Nobody else calls into the accounting, so
 * the work itself knows nothing about it.
 *
 * Each thread remembers, in thread-local storage, the context it last saw
 * become current (a reference, so it stays readable) and its CPU clock at
 * that moment.  The request is read from that context when it is left,
 * with ctx_context_get(), so a request id set inside the context counts
 * too.  Threads that end inside a request call account_flush() for the
 * last stretch; the others drop their reference in a TSD destructor.
 *
 * Prints one line per request: its name, the CPU time charged to it in
 * milliseconds, and what ran it.  Every request burns a known minimum of
 * CPU time (measured on the same clock), so the figures can be checked.
 */
#include <ctxvars.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct request {
    const char *name;
    const char *where;
    double min_ms;          /* what one piece of its work burns at least
                               (fibers run three pieces) */
    atomic_llong cpu_ns;    /* charged by the watcher */
};

static struct request requests[] = {
    {"busy", "thread", 40, 0},      {"idle", "thread", 1, 0},
    {"pool-1", "pool job", 3, 0},   {"pool-2", "pool job", 6, 0},
    {"pool-3", "pool job", 9, 0},   {"pool-4", "pool job", 12, 0},
    {"fiber-a", "fiber", 4, 0},     {"fiber-b", "fiber", 1, 0},
    {"main-run", "context_run", 5, 0},
};
enum { NREQUESTS = sizeof requests / sizeof requests[0] };
static atomic_llong unattributed_ns; /* contexts without a request */

static ctx_var_t *request_var;
static pthread_key_t last_key;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "request_cpu: %s failed (error %d)\n", what, rc);
        exit(EXIT_FAILURE);
    }
}

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------
 * The accounting: one watcher and two thread-local words
 * ---------------------------------------------------------------- */

static _Thread_local ctx_context_t *last_ctx; /* a reference, or NULL */
static _Thread_local long long last_ns;

/* Charges the time since the last switch to last_ctx's request. */
static void charge(long long now)
{
    if (last_ctx == NULL)
        return;
    void *value = NULL;
    long long delta = now - last_ns;
    if (ctx_context_get(last_ctx, request_var, &value) == 0)
        atomic_fetch_add(&((struct request *)value)->cpu_ns, delta);
    else
        atomic_fetch_add(&unattributed_ns, delta);
}

/* The watcher: runs on the thread whose context changed, after the
 * change.  Reads and retain/release are allowed here; switching is not. */
static void on_switch(ctx_context_t *current, void *arg)
{
    (void)arg;
    long long now = thread_cpu_ns();
    charge(now);
    ctx_context_release(last_ctx);
    last_ctx = ctx_context_retain(current);
    last_ns = now;
    /* Only for the destructor to run; the value is not used. */
    pthread_setspecific(last_key, &last_ctx);
}

/* For a thread that ends inside a request: charge the last stretch. */
static void account_flush(void)
{
    charge(thread_cpu_ns());
    ctx_context_release(last_ctx);
    last_ctx = NULL;
}

/* Pool workers end in their own (request-less) context: drop it. */
static void drop_last(void *unused)
{
    (void)unused;
    ctx_context_release(last_ctx);
    last_ctx = NULL;
}

/* ------------------------------------------------------------------
 * The work
 * ---------------------------------------------------------------- */

/* Uses at least ms of this thread's CPU time. */
static void burn(double ms)
{
    long long until = thread_cpu_ns() + (long long)(ms * 1e6);
    volatile unsigned x = 1;
    while (thread_cpu_ns() < until)
        for (int i = 0; i < 1000; i++)
            x = x * 1664525u + 1013904223u;
}

static struct request *find(const char *name)
{
    for (int i = 0; i < NREQUESTS; i++)
        if (strcmp(requests[i].name, name) == 0)
            return &requests[i];
    fprintf(stderr, "request_cpu: no request %s\n", name);
    exit(EXIT_FAILURE);
}

/* Whatever runs reads its request from the context, as real code would
 * (to log it, say), and works as much as that request needs. */
static void *work(void *arg)
{
    (void)arg;
    struct request *r = ctx_var_get_or(request_var, NULL);
    if (r == NULL) {
        fprintf(stderr, "request_cpu: work outside a request\n");
        exit(EXIT_FAILURE);
    }
    burn(r->min_ms);
    return NULL;
}

static void *idle_thread(void *arg)
{
    work(arg);
    nanosleep(&(struct timespec){0, 30 * 1000 * 1000}, NULL); /* no CPU */
    (void)arg;
    account_flush();
    return NULL;
}

static void *busy_thread(void *arg)
{
    work(arg);
    account_flush();
    return NULL;
}

/* Starts a request the way a server would: in a context of its own, so
 * that the dispatcher's own context never carries a request. */
struct start {
    const char *name;
    void (*fn)(void);
};

static void *in_request(void *arg)
{
    const struct start *s = arg;
    check(ctx_var_set(request_var, find(s->name), NULL), "ctx_var_set");
    s->fn();
    return NULL;
}

static void begin(const char *name, void (*fn)(void))
{
    ctx_context_t *c;
    struct start s = {name, fn};
    check(ctx_context_new(&c), "ctx_context_new");
    check(ctx_context_run(c, in_request, &s, NULL), "ctx_context_run");
    ctx_context_release(c);
}

static pthread_t busy, idle;
static ctx_pool_t *pool;
static ctx_future_t *jobs[4];
static int njobs;
static ctx_fiber_t *fa, *fb;

/* Threads start in a copy of their creator's context, request and all. */
static void start_busy(void)
{
    check(ctx_thread_create(&busy, NULL, busy_thread, NULL), "thread");
}

static void start_idle(void)
{
    check(ctx_thread_create(&idle, NULL, idle_thread, NULL), "thread");
}

/* Pool jobs run in a snapshot of their submitter's context. */
static void submit_job(void)
{
    check(ctx_pool_submit(pool, work, NULL, &jobs[njobs++]), "submit");
}

/* A fiber takes a copy of its creator's context. */
static void make_fiber_a(void)
{
    check(ctx_fiber_create(&fa, NULL), "ctx_fiber_create");
}

static void make_fiber_b(void)
{
    check(ctx_fiber_create(&fb, NULL), "ctx_fiber_create");
}

static void work_here(void)
{
    work(NULL);
}

int main(void)
{
    check(ctx_var_create(&request_var, "request", CTX_MISSING, NULL),
          "ctx_var_create");
    check(pthread_key_create(&last_key, drop_last), "pthread_key_create");
    check(ctx_pool_create(&pool, 2), "ctx_pool_create");
    int watcher;
    check(ctx_watch_add(on_switch, NULL, &watcher), "ctx_watch_add");

    begin("busy", start_busy);
    begin("idle", start_idle);
    begin("pool-1", submit_job);
    begin("pool-2", submit_job);
    begin("pool-3", submit_job);
    begin("pool-4", submit_job);
    begin("main-run", work_here);

    /* Two coroutines, switched on this thread without stack switching:
     * the scheduler resumes one, it works, it is suspended. */
    begin("fiber-a", make_fiber_a);
    begin("fiber-b", make_fiber_b);
    for (int round = 0; round < 3; round++) {
        check(ctx_fiber_resume(fa), "ctx_fiber_resume");
        work(NULL);
        check(ctx_fiber_suspend(fa), "ctx_fiber_suspend");
        check(ctx_fiber_resume(fb), "ctx_fiber_resume");
        work(NULL);
        check(ctx_fiber_suspend(fb), "ctx_fiber_suspend");
    }

    for (int i = 0; i < njobs; i++) {
        check(ctx_future_wait(jobs[i], NULL), "ctx_future_wait");
        ctx_future_release(jobs[i]);
    }
    check(pthread_join(busy, NULL), "pthread_join");
    check(pthread_join(idle, NULL), "pthread_join");
    check(ctx_pool_destroy(pool), "ctx_pool_destroy"); /* workers exit */
    account_flush();
    check(ctx_watch_remove(watcher), "ctx_watch_remove");

    printf("%-10s %10s  %s\n", "request", "cpu_ms", "ran in");
    for (int i = 0; i < NREQUESTS; i++)
        printf("%-10s %10.3f  %s\n", requests[i].name,
               atomic_load(&requests[i].cpu_ns) / 1e6, requests[i].where);
    printf("(outside any request: %.3f ms)\n",
           atomic_load(&unattributed_ns) / 1e6);

    ctx_fiber_release(fa);
    ctx_fiber_release(fb);
    ctx_var_release(request_var);
    pthread_key_delete(last_key);
    return 0;
}
