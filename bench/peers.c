/*
 * peers.c - the "peers" table of `make bench`: our pool against the pools
 * a user would pick instead (oneTBB's task_group, GLib's GThreadPool) on
 * the same three workloads, and the copy-then-set path against
 * malloc+free.
 *
 *  - flat: 1,000,000 empty jobs from one outside submitter, which then
 *    waits for the last;
 *  - fork-join: fib(30), a task per call above n = 12: each parent
 *    submits fib(n-1), computes fib(n-2) itself and waits for the child;
 *  - fan-out/fan-in: 300 requests, each a job that submits 32 sub-jobs
 *    of ~2 us of real work and waits for all of them.
 *
 * Every pool has two workers and the timing thread runs no job.  GLib's
 * pool has no way for a job to wait for another (a waiting job holds its
 * worker, and with every worker waiting nothing runs), so GLib runs no
 * fork-join, and runs the fan-out as a continuation: the last sub-job of a
 * request finishes it.  That is what a GLib user would write, and it is
 * cheaper than waiting, so the comparison favours GLib.
 *
 * Timings are elapsed time (throughput), sampled in alternation as every
 * comparison of the benchmark is (bench/harness.c), with each pool's
 * process CPU time beneath.  GLib's side is in peers_glib.c, oneTBB's in
 * peers_tbb.cc; this file has the workloads, our side and the table.
 */
#include "bench.h"
#include "peers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define VAL(i) ((void *)(uintptr_t)((i) + 1))

/* ------------------------------------------------------------------
 * The workloads' parts, shared with peers_tbb.cc
 * ---------------------------------------------------------------- */

static uint64_t work_iters = 200; /* calibrated by peers_calibrate() */
static uint64_t expect_request;   /* one request's sum */

uint64_t peers_flat_jobs(void)
{
    return bench_opts.quick ? 100000 : 1000000;
}

long peers_fib_serial(int n)
{
    return n < 2 ? n : peers_fib_serial(n - 1) + peers_fib_serial(n - 2);
}

uint64_t peers_work(uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;
    for (uint64_t i = 0; i < work_iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static uint64_t request_sum(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < PEERS_FANOUT; i++)
        sum += peers_work((uint64_t)i);
    return sum;
}

void peers_check_fib(long r)
{
    static long want;
    if (want == 0)
        want = peers_fib_serial(PEERS_FIB_N);
    if (r != want)
        bench_die("fork-join (wrong result)", EPROTO);
}

void peers_check_fanout(const uint64_t *sums, int n)
{
    for (int i = 0; i < n; i++)
        if (sums[i] != expect_request)
            bench_die("fan-out (wrong result)", EPROTO);
}

static double clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double thread_ns(void)
{
    return clock_of(CLOCK_THREAD_CPUTIME_ID);
}

static double wall_ns(void)
{
    return clock_of(CLOCK_MONOTONIC);
}

/* ~2 us per peers_work() on this machine, measured on this thread. */
static double peers_calibrate(void)
{
    double per = 0;
    for (work_iters = 64;; work_iters *= 2) {
        double t0 = thread_ns();
        for (int i = 0; i < 1000; i++)
            SINK(peers_work((uint64_t)i));
        per = (thread_ns() - t0) / 1000;
        if (per > 500 || work_iters >= (1u << 24))
            break;
    }
    work_iters = (uint64_t)((double)work_iters * 2000 / per);
    if (work_iters == 0)
        work_iters = 1;
    expect_request = request_sum();
    double t0 = thread_ns();
    for (int i = 0; i < 1000; i++)
        SINK(peers_work((uint64_t)i));
    return (thread_ns() - t0) / 1000;
}

void peers_set_work(uint64_t iters)
{
    work_iters = iters;
    expect_request = request_sum();
}

struct peers_done {
    countdown_t cd;
};

peers_done_t *peers_done_create(void)
{
    peers_done_t *d = malloc(sizeof *d);
    if (d == NULL)
        bench_die("malloc", ENOMEM);
    countdown_init(&d->cd);
    return d;
}

void peers_done_destroy(peers_done_t *d)
{
    countdown_destroy(&d->cd);
    free(d);
}

void peers_done_arm(peers_done_t *d, uint64_t n)
{
    countdown_arm(&d->cd, n);
}

void peers_done_wait(peers_done_t *d)
{
    countdown_wait(&d->cd);
}

void peers_done_hit(peers_done_t *d)
{
    countdown_job(&d->cd);
}

/* ------------------------------------------------------------------
 * Our side
 * ---------------------------------------------------------------- */

static ctx_pool_t *our_pool; /* the jobs below submit to it */
static uint64_t our_sums[PEERS_REQUESTS];

static ctx_future_t *submit(void *(*fn)(void *), void *arg)
{
    ctx_future_t *f = NULL;
    bench_check(ctx_pool_submit(our_pool, fn, arg, &f), "ctx_pool_submit");
    return f;
}

static void *await(ctx_future_t *f)
{
    void *r = NULL;
    bench_check(ctx_future_wait(f, &r), "ctx_future_wait");
    ctx_future_release(f);
    return r;
}

static void ctx_flat(void *arg, uint64_t n)
{
    countdown_t *cd = arg;
    for (uint64_t b = 0; b < n; b++) {
        uint64_t jobs = peers_flat_jobs();
        countdown_arm(cd, jobs);
        for (uint64_t i = 0; i < jobs; i++)
            bench_check(ctx_pool_submit(our_pool, countdown_job, cd, NULL),
                        "ctx_pool_submit");
        countdown_wait(cd);
    }
}

static long ctx_fib(int n);

static void *fib_job(void *arg)
{
    return (void *)(intptr_t)ctx_fib((int)(intptr_t)arg);
}

static long ctx_fib(int n)
{
    if (n <= PEERS_FIB_CUTOFF)
        return peers_fib_serial(n);
    ctx_future_t *f = submit(fib_job, (void *)(intptr_t)(n - 1));
    long y = ctx_fib(n - 2);
    return (long)(intptr_t)await(f) + y;
}

static void ctx_forkjoin(void *arg, uint64_t n)
{
    (void)arg;
    for (uint64_t i = 0; i < n; i++)
        peers_check_fib((long)(intptr_t)await(
            submit(fib_job, (void *)(intptr_t)PEERS_FIB_N)));
}

static void *work_job(void *arg)
{
    return (void *)(uintptr_t)peers_work((uint64_t)(uintptr_t)arg);
}

typedef struct {
    countdown_t *cd;
    uint64_t *sum;
} request_t;

static void *request_job(void *arg)
{
    request_t *rq = arg;
    ctx_future_t *f[PEERS_FANOUT];
    for (int i = 0; i < PEERS_FANOUT; i++)
        f[i] = submit(work_job, (void *)(uintptr_t)i);
    uint64_t sum = 0;
    for (int i = 0; i < PEERS_FANOUT; i++)
        sum += (uint64_t)(uintptr_t)await(f[i]);
    *rq->sum = sum;
    countdown_job(rq->cd);
    return NULL;
}

static void ctx_fanout(void *arg, uint64_t n)
{
    static request_t rq[PEERS_REQUESTS];
    countdown_t *cd = arg;
    for (uint64_t b = 0; b < n; b++) {
        countdown_arm(cd, PEERS_REQUESTS);
        for (int i = 0; i < PEERS_REQUESTS; i++) {
            rq[i] = (request_t){cd, &our_sums[i]};
            bench_check(ctx_pool_submit(our_pool, request_job, &rq[i], NULL),
                        "ctx_pool_submit");
        }
        countdown_wait(cd);
        peers_check_fanout(our_sums, PEERS_REQUESTS);
    }
}

/* For callgrind: n times, inside one job, submit an empty child and wait
 * for it (the child is normally run inline by the waiter). */
static void *trivial(void *arg)
{
    return arg;
}

static void *nested_loop(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++)
        SINK(await(submit(trivial, VAL(i))));
    return NULL;
}

void op_pool_nested(void *arg, uint64_t n)
{
    ctx_state_t *s = arg;
    our_pool = s->pool;
    await(submit(nested_loop, &n));
}

/* For callgrind: n requests of 32 sub-jobs, the work as set. */
void op_pool_fanout(void *arg, uint64_t n)
{
    ctx_state_t *s = arg;
    our_pool = s->pool;
    request_t rq;
    for (uint64_t i = 0; i < n; i++) {
        rq = (request_t){&s->cd, &our_sums[0]};
        countdown_arm(&s->cd, 1);
        bench_check(ctx_pool_submit(our_pool, request_job, &rq, NULL),
                    "ctx_pool_submit");
        countdown_wait(&s->cd);
    }
}

/* ------------------------------------------------------------------
 * The copy-then-set path: copy the current context, enter the copy, set
 * one variable, exit, release (every pool job's, fiber's and thread's
 * first write).  Run inside a context of the wanted size.
 * ---------------------------------------------------------------- */

typedef struct {
    ctx_var_t *var;
    uint64_t n;
} cset_loop_t;

static void *cset_loop(void *arg)
{
    cset_loop_t *l = arg;
    for (uint64_t i = 0; i < l->n; i++) {
        ctx_context_t *c = NULL;
        SINK(ctx_copy_context(&c));
        SINK(ctx_context_enter(c));
        SINK(ctx_var_set(l->var, VAL(i), NULL));
        SINK(ctx_context_exit(c));
        ctx_context_release(c);
    }
    return NULL;
}

void op_copy_enter_set_in(void *arg, uint64_t n)
{
    cset_arg_t *a = arg;
    cset_loop_t l = {a->var, n};
    bench_check(ctx_context_run(a->ctx, cset_loop, &l, NULL),
                "ctx_context_run");
}

#ifndef HAVE_TBB
tbb_peer_t *tbb_peer_create(unsigned nthreads)
{
    (void)nthreads;
    return NULL;
}
void tbb_peer_destroy(tbb_peer_t *p)
{
    (void)p;
}
const char *tbb_version_string(void)
{
    return NULL;
}
void tbb_flat(void *p, uint64_t n) { (void)p, (void)n; }
void tbb_forkjoin(void *p, uint64_t n) { (void)p, (void)n; }
void tbb_fanout(void *p, uint64_t n) { (void)p, (void)n; }
#endif

/* ------------------------------------------------------------------
 * The table
 * ---------------------------------------------------------------- */

static unsigned *goals_n, *goals_met;

static void fmt(char *buf, size_t len, double ns)
{
    if (ns < 1e3)
        snprintf(buf, len, "%.1f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, len, "%.2f us", ns / 1e3);
    else
        snprintf(buf, len, "%.2f ms", ns / 1e6);
}

/* One peer's cell: its time, how many times slower than ours it is
 * (median of per-round ratios), the goal and whether it is met. */
static void peer_cell(const contender_t *ours, const contender_t *peer,
                      double goal, double scale)
{
    char t[24], g[16] = "-";
    if (peer == NULL) {
        printf(" %11s %7s %7s %4s", "n/a", "-", "-", "");
        return;
    }
    double speedup = bench_ratio(peer, ours);
    fmt(t, sizeof t, peer->ns * scale);
    if (goal > 0)
        snprintf(g, sizeof g, ">=%.1fx", goal);
    printf(" %11s %6.2fx %7s %4s", t, speedup, g,
           goal <= 0 ? "" : speedup >= goal ? "yes" : "NO");
    if (goal > 0) {
        (*goals_n)++;
        *goals_met += speedup >= goal;
    }
}

static void peer_row(const char *figure, contender_t *c, size_t k,
                     bool has_glib, double tbb_goal, double glib_goal,
                     double scale, const char *unit)
{
    char t[24];
    bench_measure(c, k);
    fmt(t, sizeof t, c[0].ns * scale);
    printf("%-30s %9s%-4s", figure, t, unit);
    peer_cell(&c[0], &c[1], tbb_goal, scale);
    peer_cell(&c[0], has_glib ? &c[2] : NULL, glib_goal, scale);
    printf("\n");
    /* CPU time of all threads, spinning included: on a machine whose
     * cores are busy with others, elapsed time measures the share the
     * scheduler gave, and this what each pool needs. */
    char cpu[3][24];
    for (size_t i = 0; i < 3; i++)
        if (i < k)
            fmt(cpu[i], sizeof cpu[i], c[i].cpu_ns * scale);
        else
            snprintf(cpu[i], sizeof cpu[i], "-");
    printf("%-30s %9s%-4s %11s %24s\n", "  (process CPU time)", cpu[0], "",
           cpu[1], cpu[2]);
    fflush(stdout);
}

static void measure_pool_peers(tbb_peer_t *tbb)
{
    ctx_pool_t *pool;
    bench_check(ctx_pool_create(&pool, 2), "ctx_pool_create");
    our_pool = pool;
    glib_peer_t *gpeer = glib_peer_create(2);
    bool has_glib = gpeer != NULL;
    countdown_t cd;
    countdown_init(&cd);
    double work = peers_calibrate();

    printf("\nPeers, 2 workers each, elapsed time (x: how many times longer "
           "the peer takes than ctxvars, median of %u interleaved rounds)\n",
           bench_opts.samples);
    printf("  sub-job work: %.2f us (%llu xorshift rounds); TBB: "
           "task_arena::enqueue from outside, task_group inside jobs\n",
           work / 1e3, (unsigned long long)work_iters);
    printf("%-30s %13s %11s %7s %7s %4s %11s %7s %7s %4s\n", "figure",
           "ctxvars", "oneTBB", "x", "goal", "met", "GLib", "x", "goal", "met");

    double per_job = 1.0 / (double)peers_flat_jobs();
    contender_t flat[3] = {
        {.name = "ctxvars", .fn = ctx_flat, .arg = &cd, .clock = CLK_WALL},
        {.name = "oneTBB", .fn = tbb_flat, .arg = tbb, .clock = CLK_WALL},
        {.name = "GLib", .fn = glib_peer_flat, .arg = gpeer, .clock = CLK_WALL},
    };
    peer_row("flat, empty jobs, per job", flat, has_glib ? 3 : 2, has_glib,
             1.3, 2.0, per_job, "");

    contender_t fj[2] = {
        {.name = "ctxvars", .fn = ctx_forkjoin, .clock = CLK_WALL},
        {.name = "oneTBB", .fn = tbb_forkjoin, .arg = tbb, .clock = CLK_WALL},
    };
    peer_row("fork-join, fib(30)", fj, 2, false, 1.0, 0, 1, "");

    contender_t fo[3] = {
        {.name = "ctxvars", .fn = ctx_fanout, .arg = &cd, .clock = CLK_WALL},
        {.name = "oneTBB", .fn = tbb_fanout, .arg = tbb, .clock = CLK_WALL},
        {.name = "GLib", .fn = glib_peer_fanout, .arg = gpeer, .clock = CLK_WALL},
    };
    peer_row("fan-out 300 x 32, per request", fo, has_glib ? 3 : 2, has_glib,
             1.0, 0, 1.0 / PEERS_REQUESTS, "");
    printf("  GLib: no fork-join (a GThreadPool job cannot wait for another "
           "without risking deadlock);\n  its fan-out is a continuation (the "
           "last sub-job finishes the request), no waiting.\n");
    countdown_destroy(&cd);
    glib_peer_destroy(gpeer);
    bench_check(ctx_pool_destroy(pool), "ctx_pool_destroy");
    our_pool = NULL;
}

static void measure_copy_set(ctx_state_t *s)
{
    static const size_t sizes[] = {1, 10, 100, 1000, 100000};
    static const double goal[] = {0, 4, 0, 12, 0};
    printf("\nCopy-then-set: copy the current context, enter the copy, set "
           "one variable, exit, release\n");
    printf("%-30s %13s %13s %8s %8s %4s\n", "bindings", "ctxvars",
           "malloc+free", "ratio", "goal", "met");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char t[24], b[24], g[16] = "-";
        cset_arg_t a = {ops_context_with(s, sizes[i]), s->vars[0]};
        contender_t c[2] = {
            {.name = "copy-set", .fn = op_copy_enter_set_in, .arg = &a},
            {.name = "malloc+free", .fn = base_malloc_free},
        };
        bench_measure(c, 2);
        double r = bench_ratio(&c[0], &c[1]);
        fmt(t, sizeof t, c[0].ns);
        fmt(b, sizeof b, c[1].ns);
        if (goal[i] > 0) {
            snprintf(g, sizeof g, "<=%.0fx", goal[i]);
            (*goals_n)++;
            *goals_met += r <= goal[i];
        }
        printf("%-30zu %13s %13s %7.2fx %8s %4s\n", sizes[i], t, b, r, g,
               goal[i] <= 0 ? "" : r <= goal[i] ? "yes" : "NO");
        fflush(stdout);
        ctx_context_release(a.ctx);
    }
}

/* `ctxbench --profile WHAT [ROUNDS]`: one side of one workload alone, for
 * perf record / perf stat to look at; tbb-WHAT runs oneTBB's.  Prints the
 * elapsed and CPU time per round and the context switches, voluntary (a
 * thread slept) and not (it was preempted). */
int peers_profile(const char *what, const char *rounds)
{
    static const struct {
        const char *name;
        bench_fn_t *fn;
        bool tbb;
    } w[] = {{"flat", ctx_flat, false},         {"forkjoin", ctx_forkjoin, false},
             {"fanout", ctx_fanout, false},     {"tbb-flat", tbb_flat, true},
             {"tbb-forkjoin", tbb_forkjoin, true}, {"tbb-fanout", tbb_fanout, true}};
    uint64_t n = rounds != NULL ? strtoull(rounds, NULL, 10) : 100;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        if (strcmp(what, w[i].name) != 0)
            continue;
        countdown_t cd;
        countdown_init(&cd);
        tbb_peer_t *tbb = NULL;
        if (w[i].tbb && (tbb = tbb_peer_create(2)) == NULL)
            bench_die("--profile (built without oneTBB)", ENOSYS);
        bench_check(ctx_pool_create(&our_pool, 2), "ctx_pool_create");
        double work = peers_calibrate();
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        double t0 = wall_ns(), c0 = clock_of(CLOCK_PROCESS_CPUTIME_ID);
        w[i].fn(w[i].tbb ? (void *)tbb : (void *)&cd, n);
        double t = wall_ns() - t0;
        double c = clock_of(CLOCK_PROCESS_CPUTIME_ID) - c0;
        getrusage(RUSAGE_SELF, &r1);
        bench_check(ctx_pool_destroy(our_pool), "ctx_pool_destroy");
        tbb_peer_destroy(tbb);
        countdown_destroy(&cd);
        printf("%s: %llu rounds, %.3f ms elapsed and %.3f ms CPU per round; "
               "context switches %ld voluntary, %ld preempted (sub-job work "
               "%.2f us)\n",
               what, (unsigned long long)n, t / (double)n / 1e6,
               c / (double)n / 1e6, r1.ru_nvcsw - r0.ru_nvcsw,
               r1.ru_nivcsw - r0.ru_nivcsw, work / 1e3);
        return 0;
    }
    fprintf(stderr, "ctxbench: --profile [tbb-]flat|forkjoin|fanout "
                    "[ROUNDS]\n");
    return 2;
}

void peers_run(ctx_state_t *s, unsigned *n_goals, unsigned *n_met)
{
    goals_n = n_goals;
    goals_met = n_met;
    tbb_peer_t *tbb = tbb_peer_create(2);
    if (tbb != NULL)
        measure_pool_peers(tbb);
    else
        printf("\nPeers: pool rows skipped: built without oneTBB (install "
               "libtbb-dev and a C++ compiler, then re-run configure)\n");
    tbb_peer_destroy(tbb);
    measure_copy_set(s);
}
