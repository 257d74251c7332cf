/*
 * bench.h - what the files of the benchmark (bench/ctxbench) share.
 *
 * Every measured operation is a loop function: fn(arg, n) runs the
 * operation exactly n times.  The harness times whole loops, so the clock
 * is read twice per sample, never per operation.
 */
#ifndef CTXBENCH_H
#define CTXBENCH_H

#include <ctxvars.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void bench_fn_t(void *arg, uint64_t n);

/* Keeps v alive without storing it: the compiler must materialise it in a
 * register, so a call whose result only feeds SINK cannot be dropped. */
#define SINK(v) __asm__ volatile("" : : "r"(v))
/* Makes the compiler forget what it knows about memory. */
#define CLOBBER() __asm__ volatile("" : : : "memory")

/* ------------------------------------------------------------------
 * harness.c
 * ---------------------------------------------------------------- */
typedef struct {
    unsigned samples;   /* per contender, odd, >= 7 unless --quick */
    double target_ns;   /* wanted duration of one sample */
    bool quick;
} bench_opts_t;

extern bench_opts_t bench_opts;

#define BENCH_MAX_SAMPLES 63

/* What a sample's time is.  The calling thread's CPU time by default:
 * time spent preempted (the rule on a loaded two-core machine) is not
 * charged.  Loops that involve other threads need one of the others. */
typedef enum {
    CLK_THREAD = 0,  /* CPU time of the calling thread */
    CLK_PROCESS,     /* CPU time of all the process's threads */
    CLK_WALL,        /* elapsed time (throughput) */
} bench_clock_t;

typedef struct {
    const char *name;
    bench_fn_t *fn;
    void *arg;
    bench_clock_t clock;
    double ns;          /* out: median ns per operation */
    double cpu_ns;      /* out: median process CPU ns per operation (all
                           threads: what a pool burns, spinning included) */
    double s[BENCH_MAX_SAMPLES]; /* out: ns per operation, per round */
} contender_t;

/* Calibrates each contender, then takes bench_opts.samples samples of
 * each, interleaved (round r runs contender (r + j) % k as its j-th), so a
 * change of machine load hits all of them alike; stores medians. */
void bench_measure(contender_t *c, size_t k);
/* Three times the rounds, a third as long each (undo by restoring
 * bench_opts): for figures whose samples scatter widely. */
void bench_more_rounds(void);
/* The median over rounds of a's time / b's time: samples of one round are
 * adjacent in time, so this cancels slow drifts of machine load better
 * than a ratio of medians. */
double bench_ratio(const contender_t *a, const contender_t *b);

_Noreturn void bench_die(const char *what, int err);
void bench_check(int err, const char *what);

/* Counts pool jobs down; the last one wakes the submitter.  One job shape
 * for every pool compared: a decrement and, once, a sem_post. */
typedef struct {
    atomic_long left;
    sem_t done;
} countdown_t;

void countdown_init(countdown_t *cd);
void countdown_destroy(countdown_t *cd);
void countdown_arm(countdown_t *cd, uint64_t n);
void countdown_wait(countdown_t *cd);
void *countdown_job(void *cd);   /* the job: fn(arg) with arg = cd */

/* ------------------------------------------------------------------
 * baselines.c
 * ---------------------------------------------------------------- */
bench_fn_t base_getspecific;     /* arg: pthread_key_t *, set to non-NULL */
bench_fn_t base_malloc_free;     /* malloc(64) + free; arg unused */
bench_fn_t base_pthread_create;  /* create + join; arg unused */
bench_fn_t base_plain_pool;      /* arg: plain_pool_t * */
bench_fn_t base_glib_pool;       /* arg: glib_pool_t * */

typedef struct plain_pool plain_pool_t;
plain_pool_t *plain_pool_create(unsigned nthreads);
void plain_pool_destroy(plain_pool_t *p);

/* NULL when built without GLib; destroy accepts NULL. */
typedef struct glib_pool glib_pool_t;
glib_pool_t *glib_pool_create(unsigned nthreads);
void glib_pool_destroy(glib_pool_t *p);
const char *glib_version_string(void);

/* ------------------------------------------------------------------
 * ops.c: the library's side of every figure
 * ---------------------------------------------------------------- */
typedef struct {
    ctx_var_t **vars;       /* vars[0..nbound) bound in the current context */
    size_t nbound;
    size_t cycle_idx;       /* op_get_cycle's position and stride */
    size_t cycle_step;
    ctx_var_t *unbound;     /* never bound anywhere */
    ctx_context_t *run_ctx; /* an empty context for op_run */
    ctx_pool_t *pool;
    countdown_t cd;
} ctx_state_t;

void ops_init(ctx_state_t *s, size_t nvars);
void ops_fini(ctx_state_t *s);
/* Binds vars[nbound..n) in the current context (n <= nvars). */
void ops_grow(ctx_state_t *s, size_t n);
/* Dies unless every operation below does what it should, now. */
void ops_check(ctx_state_t *s);
/* A new context in which vars[0..n) are bound. */
ctx_context_t *ops_context_with(ctx_state_t *s, size_t n);

bench_fn_t op_get;        /* ctx_var_get of vars[0] */
bench_fn_t op_get_cycle;  /* ctx_var_get of every bound var in turn */
bench_fn_t op_get_or;     /* ctx_var_get_or of the unbound var */
bench_fn_t op_set;        /* ctx_var_set of vars[0], a new value each time */
bench_fn_t op_set_reset;  /* set + reset + token release */
bench_fn_t op_copy;       /* ctx_copy_context + release */
bench_fn_t op_copy_in;    /* op_copy inside ctx_context_run(arg) */
bench_fn_t op_copy_set;   /* copy, set vars[0], release: the path copy */
bench_fn_t op_run;        /* ctx_context_run(run_ctx, trivial) */
bench_fn_t op_thread;     /* ctx_thread_create + pthread_join */
bench_fn_t op_pool;       /* n ctx_pool_submit, wait for all */

/* ------------------------------------------------------------------
 * peers.c: the peers table (oneTBB, GLib) and the copy-then-set path
 * ---------------------------------------------------------------- */
/* Measures and prints the table; adds its goals to *n_goals, *n_met. */
void peers_run(ctx_state_t *s, unsigned *n_goals, unsigned *n_met);
/* Sub-job work in xorshift rounds (callgrind sets 0: overhead only). */
void peers_set_work(uint64_t iters);
/* ctxbench --profile WHAT [ROUNDS]: our side of one workload alone. */
int peers_profile(const char *what, const char *rounds);

/* peers_glib.c: NULL from create when built without GLib. */
typedef struct glib_peer glib_peer_t;
glib_peer_t *glib_peer_create(unsigned nthreads);
void glib_peer_destroy(glib_peer_t *p);
bench_fn_t glib_peer_flat;   /* n rounds of peers_flat_jobs() empty jobs */
bench_fn_t glib_peer_fanout; /* n rounds of 300 requests, continuations */

typedef struct {
    ctx_context_t *ctx; /* run inside it */
    ctx_var_t *var;     /* the variable set */
} cset_arg_t;

bench_fn_t op_copy_enter_set_in; /* arg: cset_arg_t *; copy, enter, set,
                                    exit, release */
bench_fn_t op_pool_nested;       /* arg: ctx_state_t * with a pool: inside
                                    one job, submit + wait an empty child */
bench_fn_t op_pool_fanout;       /* arg: as above; a request of 32 sub-jobs
                                    submitted and waited for by a job */

/* ------------------------------------------------------------------
 * memory.c
 * ---------------------------------------------------------------- */
/* Heap bytes per binding of a fresh context binding vars[0..n); -1 when
 * mallinfo2() is not available. */
double mem_per_binding(ctx_state_t *s, size_t n);
/* Heap bytes per ctx_copy_context() of a context of nbind bindings,
 * averaged over nsnap live snapshots. */
double mem_per_snapshot(ctx_state_t *s, size_t nbind, size_t nsnap);

/* ------------------------------------------------------------------
 * fiber.c: resume + suspend of a fiber holding entered contexts
 * ---------------------------------------------------------------- */
typedef struct fiber_bench fiber_bench_t;
fiber_bench_t *fiber_bench_new(size_t nheld); /* a fiber holding nheld */
void fiber_bench_free(fiber_bench_t *fb);
bench_fn_t op_fiber_switch;   /* arg: fiber_bench_t * */
bench_fn_t op_fiber_switch1;  /* its own fiber holding 1; arg unused */
bench_fn_t op_fiber_switch16; /* ... holding 16 */

typedef struct {
    double ours, base, ratio; /* ours 0: not measured */
} fiber_figure_t;
extern fiber_figure_t fiber_vs_malloc, fiber_16_vs_1;
/* Measures both figures in one run and prints them. */
void fiber_measure(void);

/* ------------------------------------------------------------------
 * callgrind.c
 * ---------------------------------------------------------------- */
void cg_list(void);
int cg_mode(void);                    /* prints how to count; returns 0 */
int cg_run(const char *op, const char *n_arg);

#endif /* CTXBENCH_H */
