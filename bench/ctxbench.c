/*
 * ctxbench.c - the benchmark behind `make bench`: every figure of the
 * performance goals against a baseline measured in the same run, and how
 * get, set and copy scale from 1 to 1,000,000 bindings.
 *
 * Usage: ctxbench [--quick] [--check] [--only small,pools,peers,...]
 *        ctxbench --callgrind OP [N]    (see bench/callgrind.sh)
 *        ctxbench --profile flat|forkjoin|fanout [ROUNDS]  (for perf)
 *        ctxbench --list-ops | --callgrind-mode
 *
 * It is a measurement, not a test: it exits 0 whatever the figures are,
 * unless --check asks it to exit 1 when a goal is missed.  Contexts are
 * grown in the main thread's base context, the one a pthreads program
 * that never enters a context works in.
 */
#include "bench.h"
#include "peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BINDINGS 1000000
#define QUICK_MAX_BINDINGS 100000

/* ------------------------------------------------------------------
 * The results, in the order of the goals table
 * ---------------------------------------------------------------- */

typedef struct {
    double ours, base; /* ns per operation, median */
    double ratio;      /* ours / base, median of paired samples */
} pair_t;

typedef struct {
    pair_t get[3];       /* at 1, 1k, 100k bindings */
    pair_t get_or;
    pair_t set[3];
    pair_t set_reset;
    pair_t copy;         /* at 1 binding */
    pair_t copy_big;     /* at 100k (ours) vs at 1 (base) */
    pair_t run;
    pair_t pool_plain;   /* ns per job: ours, plain pool */
    pair_t pool_glib;    /* ns per job: ours, GLib (base < 0: no GLib) */
    pair_t thread;
    double mem_binding, mem_snapshot;
    size_t mem_bindings, mem_snapshots;
} results_t;

static results_t R;
static pthread_key_t key;

static pair_t pair_of(const contender_t *s, const contender_t *b)
{
    return (pair_t){s->ns, b->ns, bench_ratio(s, b)};
}

static pair_t measure(bench_fn_t *fn, void *arg, bench_fn_t *bfn,
                      void *barg, bench_clock_t clock)
{
    contender_t c[2] = {
        {.name = "subject", .fn = fn, .arg = arg, .clock = clock},
        {.name = "baseline", .fn = bfn, .arg = barg, .clock = clock}};
    bench_measure(c, 2);
    return pair_of(&c[0], &c[1]);
}

/* For figures that involve other threads and the kernel: their samples
 * scatter more, so the median needs more of them. */
static pair_t measure_noisy(bench_fn_t *fn, bench_fn_t *bfn,
                           bench_clock_t clock)
{
    bench_opts_t saved = bench_opts;
    bench_more_rounds();
    pair_t p = measure(fn, NULL, bfn, NULL, clock);
    bench_opts = saved;
    return p;
}

static pair_t measure_pair(bench_fn_t *fn, void *arg, bench_fn_t *bfn,
                           void *barg)
{
    return measure(fn, arg, bfn, barg, CLK_THREAD);
}

static void fmt_time(char *buf, size_t len, double ns)
{
    if (ns < 1e3)
        snprintf(buf, len, "%.2f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, len, "%.2f us", ns / 1e3);
    else
        snprintf(buf, len, "%.2f ms", ns / 1e6);
}

/* ------------------------------------------------------------------
 * Measurements
 * ---------------------------------------------------------------- */

static void measure_small(ctx_state_t *s)
{
    ops_check(s);
    R.get_or = measure_pair(op_get_or, s, base_getspecific, &key);
    R.set_reset = measure_pair(op_set_reset, s, base_malloc_free, NULL);
    R.run = measure_pair(op_run, s, base_malloc_free, NULL);
    /* CPU time of both threads: creation's elapsed time on a loaded VM is
     * dominated by when the scheduler gets round to the child (samples
     * of the same loop vary fourfold), which is not ours to count. */
    R.thread = measure_noisy(op_thread, base_pthread_create, CLK_PROCESS);
}

static void measure_pools(ctx_state_t *s)
{
    bench_check(ctx_pool_create(&s->pool, 2), "ctx_pool_create");
    plain_pool_t *plain = plain_pool_create(2);
    glib_pool_t *glib = glib_pool_create(2);
    contender_t c[3] = {
        {.name = "ctx_pool", .fn = op_pool, .arg = s, .clock = CLK_WALL},
        {.name = "mutex+condvar", .fn = base_plain_pool, .arg = plain,
         .clock = CLK_WALL},
        {.name = "GThreadPool", .fn = base_glib_pool, .arg = glib,
         .clock = CLK_WALL},
    };
    size_t k = glib != NULL ? 3 : 2;
    /* Throughput of three threads on few cores swings between samples
     * (a pool whose workers happen to sleep pays a futex wake per job). */
    bench_opts_t saved = bench_opts;
    bench_more_rounds();
    bench_measure(c, k);
    R.pool_plain = pair_of(&c[0], &c[1]);
    R.pool_glib = glib != NULL ? pair_of(&c[0], &c[2])
                               : (pair_t){c[0].ns, -1, -1};
    bench_opts = saved;
    printf("\nPools, 2 workers, empty jobs (wall time per job; process CPU "
           "time per job, all threads)\n");
    for (size_t i = 0; i < k; i++)
        printf("  %-14s %8.0f ns/job  %8.0f ns CPU/job\n", c[i].name, c[i].ns,
               c[i].cpu_ns);
    fflush(stdout);
    glib_pool_destroy(glib);
    plain_pool_destroy(plain);
    bench_check(ctx_pool_destroy(s->pool), "ctx_pool_destroy");
    s->pool = NULL;
}

static void print_cell(pair_t p)
{
    char t[24], cell[40];
    fmt_time(t, sizeof t, p.ours);
    snprintf(cell, sizeof cell, "%s (%.2fx)", t, p.ratio);
    printf(" %20s", cell);
}

/* One row of the scaling table; remembers what the goals need. */
static void scaling_row(ctx_state_t *s, size_t n)
{
    ops_grow(s, n);
    ops_check(s);
    pair_t get = measure_pair(op_get, s, base_getspecific, &key);
    pair_t cyc = measure_pair(op_get_cycle, s, base_getspecific, &key);
    pair_t set = measure_pair(op_set, s, base_malloc_free, NULL);
    pair_t copy = measure_pair(op_copy, s, base_malloc_free, NULL);
    pair_t cset = measure_pair(op_copy_set, s, base_malloc_free, NULL);
    int slot = n == 1 ? 0 : n == 1000 ? 1 : n == 100000 ? 2 : -1;
    if (slot >= 0) {
        R.get[slot] = get;
        R.set[slot] = set;
    }
    if (n == 1)
        R.copy = copy;
    printf("%9zu", n);
    print_cell(get);
    print_cell(cyc);
    print_cell(set);
    print_cell(copy);
    print_cell(cset);
    printf("\n");
    fflush(stdout);
}

static void measure_scaling(ctx_state_t *s, size_t max)
{
    printf("\nScaling: ns per operation (ratio to pthread_getspecific for the "
           "gets, to malloc(64)+free for the rest)\n");
    printf("%9s %20s %20s %20s %20s %20s\n", "bindings", "get (same var)",
           "get (cycle all)", "set", "copy+release", "copy+set+release");
    for (size_t n = 1; n <= max; n *= 10)
        scaling_row(s, n);
}

/* Copy cost against size, measured against each other directly: both
 * copy the current context of the same thread, entered for the sample. */
static void measure_copy_big(ctx_state_t *s)
{
    ctx_context_t *big = ops_context_with(s, 100000);
    ctx_context_t *one = ops_context_with(s, 1);
    R.copy_big = measure_pair(op_copy_in, big, op_copy_in, one);
    ctx_context_release(one);
    ctx_context_release(big);
}

static void measure_memory(ctx_state_t *s, size_t max)
{
    R.mem_bindings = max;
    R.mem_snapshots = bench_opts.quick ? 10000 : 100000;
    R.mem_binding = mem_per_binding(s, max);
    R.mem_snapshot = mem_per_snapshot(s, 1000, R.mem_snapshots);
}

/* ------------------------------------------------------------------
 * The goals table
 * ---------------------------------------------------------------- */

static unsigned n_goals, n_met, n_skipped;

/* --only: rows of sections that did not run are left out. */
static bool measured(pair_t p)
{
    return p.ours > 0;
}

static void goal_line(const char *figure, const char *ours, const char *base,
                      double ratio, const char *goal, bool met)
{
    char r[16] = "-";
    if (ratio >= 0)
        snprintf(r, sizeof r, "%.2fx", ratio);
    printf("%-46s %12s %26s %8s %9s  %s\n", figure, ours, base, r, goal,
           met ? "yes" : "NO");
    n_goals++;
    n_met += met;
}

static void goal_time(const char *figure, pair_t p, const char *base_name,
                      double goal)
{
    char ours[24], bt[24], base[40], g[16];
    if (!measured(p))
        return;
    fmt_time(ours, sizeof ours, p.ours);
    fmt_time(bt, sizeof bt, p.base);
    snprintf(base, sizeof base, "%s %s", bt, base_name);
    snprintf(g, sizeof g, "<= %.2gx", goal);
    goal_line(figure, ours, base, p.ratio, g, p.ratio <= goal);
}

/* Throughput: higher is better, so the ratio is base time / our time. */
static void goal_rate(const char *figure, pair_t p, const char *base_name)
{
    char ours[24], base[40];
    if (!measured(p))
        return;
    if (p.base < 0) {
        printf("%-46s %12s %26s %8s %9s  %s\n", figure, "-", base_name, "-",
               ">= 1.0x", "skipped (no GLib)");
        n_skipped++;
        return;
    }
    snprintf(ours, sizeof ours, "%.0f kjob/s", 1e6 / p.ours);
    snprintf(base, sizeof base, "%.0f kjob/s %s", 1e6 / p.base, base_name);
    goal_line(figure, ours, base, 1 / p.ratio, ">= 1.0x", 1 / p.ratio >= 1.0);
}

static void goal_bytes(const char *figure, double bytes, double goal)
{
    char ours[24], g[16];
    if (bytes == 0)
        return;
    if (bytes < 0) {
        printf("%-46s %12s %26s %8s %9s  %s\n", figure, "-", "-", "-", "-",
               "skipped (no mallinfo2)");
        n_skipped++;
        return;
    }
    snprintf(ours, sizeof ours, "%.1f B", bytes);
    snprintf(g, sizeof g, "<= %.0f B", goal);
    goal_line(figure, ours, "-", -1, g, bytes <= goal);
}

static void print_goals(void)
{
    char f[64];
    bench_opts_t o = bench_opts;
    bench_more_rounds();
    printf("\nGoals (medians of %u interleaved samples of ~%.0f ms each; "
           "%u of ~%.0f ms for pools and threads)\n",
           o.samples, o.target_ns / 1e6, bench_opts.samples,
           bench_opts.target_ns / 1e6);
    bench_opts = o;
    printf("%-46s %12s %26s %8s %9s  %s\n", "figure", "ours", "baseline",
           "ratio", "goal", "met?");
    static const char *const at[3] = {"1", "1,000", "100,000"};
    static const double get_goal[3] = {1.5, 1.5, 2}, set_goal[3] = {3, 5, 8};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "get, bound var, %s binding%s", at[i],
                 i > 0 ? "s" : "");
        goal_time(f, R.get[i], "getspecific", get_goal[i]);
    }
    goal_time("get_or, unbound var", R.get_or, "getspecific", 1.5);
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "set, new value, %s binding%s", at[i],
                 i > 0 ? "s" : "");
        goal_time(f, R.set[i], "malloc+free", set_goal[i]);
    }
    goal_time("set+reset+token_release, 1 binding", R.set_reset,
              "malloc+free", 6);
    goal_time("copy_context+release, 1 binding", R.copy, "malloc+free", 1.5);
    goal_time("copy_context+release, 100,000 vs 1 binding", R.copy_big,
              "at 1", 1.3);
    goal_time("context_run, trivial function", R.run, "malloc+free", 2);
    goal_rate("pool, 2 workers, empty jobs, vs GThreadPool", R.pool_glib,
              "GLib");
    goal_rate("pool, 2 workers, empty jobs, vs mutex+condvar",
              R.pool_plain, "plain");
    goal_time("thread_create+join", R.thread, "pthread", 1.10);
    goal_time("fiber resume+suspend, 1 held context",
              (pair_t){fiber_vs_malloc.ours, fiber_vs_malloc.base,
                       fiber_vs_malloc.ratio},
              "malloc+free", 2);
    goal_time("fiber resume+suspend, 16 vs 1 held",
              (pair_t){fiber_16_vs_1.ours, fiber_16_vs_1.base,
                       fiber_16_vs_1.ratio},
              "1 held", 1.2);
    snprintf(f, sizeof f, "memory per binding, %zu bindings", R.mem_bindings);
    goal_bytes(f, R.mem_binding, 48);
    snprintf(f, sizeof f, "memory per snapshot, 1,000 bindings (%zu)",
             R.mem_snapshots);
    goal_bytes(f, R.mem_snapshot, 64);
    printf("\ngoals met: %u of %u", n_met, n_goals);
    if (n_skipped > 0)
        printf(" (%u skipped)", n_skipped);
    printf("\n");
}

/* ------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to, "usage: ctxbench [--quick] [--check] [--only SECTIONS]\n"
                "       (SECTIONS: any of small,pools,peers,scaling,copy,memory)\n"
                "       ctxbench --callgrind OP [N]\n"
                "       ctxbench --profile flat|forkjoin|fanout [ROUNDS]\n"
                "       ctxbench --list-ops | --callgrind-mode\n");
}

static void print_header(size_t max)
{
    const char *gv = glib_version_string();
    printf("ctxbench: ctxvars %d.%d.%d, %ld CPUs online, %s mode, "
           "contexts up to %zu bindings\n",
           CTXVARS_VERSION_MAJOR, CTXVARS_VERSION_MINOR,
           CTXVARS_VERSION_PATCH, sysconf(_SC_NPROCESSORS_ONLN),
           bench_opts.quick ? "quick (smoke test only)" : "full", max);
    const char *tv = tbb_version_string();
    printf("compiler: %s; GLib: %s; oneTBB: %s\n", __VERSION__,
           gv != NULL ? gv : "not found, skipped",
           tv != NULL ? tv : "not found, peers skipped");
    fflush(stdout);
}

enum {
    SEC_SMALL = 1,
    SEC_POOLS = 2,
    SEC_SCALING = 4,
    SEC_COPY = 8,
    SEC_MEMORY = 16,
    SEC_PEERS = 32,
    SEC_ALL = 63
};

static const char *const section_names[] = {"small", "pools", "scaling",
                                            "copy", "memory", "peers"};

static unsigned parse_sections(const char *list)
{
    unsigned m = 0;
    for (size_t i = 0; i < 6; i++)
        if (strstr(list, section_names[i]) != NULL)
            m |= 1u << i;
    return m;
}

static int run_all(bool check, unsigned sections)
{
    size_t max = bench_opts.quick ? QUICK_MAX_BINDINGS : MAX_BINDINGS;
    bench_check(pthread_key_create(&key, NULL), "pthread_key_create");
    bench_check(pthread_setspecific(key, &key), "pthread_setspecific");
    print_header(max);
    ctx_state_t s;
    ops_init(&s, max);
    ops_grow(&s, 1);
    if (sections & SEC_SMALL)
        measure_small(&s);
    if (sections & SEC_SMALL)
        fiber_measure();
    if (sections & SEC_POOLS)
        measure_pools(&s);
    if (sections & SEC_PEERS)
        peers_run(&s, &n_goals, &n_met);
    if (sections & SEC_SCALING)
        measure_scaling(&s, max);
    if (sections & SEC_COPY)
        measure_copy_big(&s);
    if (sections & SEC_MEMORY)
        measure_memory(&s, max);
    ops_fini(&s);
    print_goals();
    return check && n_met < n_goals ? 1 : 0;
}

int main(int argc, char **argv)
{
    bool check = false;
    unsigned sections = SEC_ALL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            bench_opts.quick = true;
            bench_opts.samples = 3;
            bench_opts.target_ns = 2e6;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            sections = parse_sections(argv[++i]);
        } else if (strcmp(argv[i], "--callgrind") == 0 && i + 1 < argc) {
            return cg_run(argv[i + 1], i + 2 < argc ? argv[i + 2] : NULL);
        } else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc) {
            return peers_profile(argv[i + 1], i + 2 < argc ? argv[i + 2]
                                                           : NULL);
        } else if (strcmp(argv[i], "--list-ops") == 0) {
            cg_list();
            return 0;
        } else if (strcmp(argv[i], "--callgrind-mode") == 0) {
            return cg_mode();
        } else {
            usage(strcmp(argv[i], "--help") == 0 ? stdout : stderr);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    return run_all(check, sections);
}
