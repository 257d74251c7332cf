/*
 * harness.c - timing: calibration, interleaved samples, medians.
 *
 * Machines running this are shared and noisy.  Four things keep the
 * figures honest anyway: a sample is long (milliseconds, so timer
 * resolution does not matter), loops are charged CPU time, not elapsed
 * time, wherever that answers the question (a preempted loop is not
 * slower), the result is a median (a sample disturbed by a neighbour's
 * cache traffic is an outlier, not a shift), and the contenders of a
 * comparison are sampled in alternation (so a load change during the
 * measurement hits both sides, and the ratio stays put).  Pool throughput
 * is elapsed time by definition, and is the noisiest figure for it.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bench_opts_t bench_opts = {11, 20e6, false};

static double clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}


void bench_die(const char *what, int err)
{
    fprintf(stderr, "ctxbench: %s failed: %s\n", what, strerror(err));
    exit(2);
}

void bench_check(int err, const char *what)
{
    if (err != 0)
        bench_die(what, err);
}

static double time_loop(const contender_t *c, uint64_t n, double *cpu)
{
    static const clockid_t ids[] = {CLOCK_THREAD_CPUTIME_ID,
                                    CLOCK_PROCESS_CPUTIME_ID, CLOCK_MONOTONIC};
    clockid_t id = ids[c->clock];
    CLOBBER();
    double c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    double t0 = clock_ns(id);
    c->fn(c->arg, n);
    double t1 = clock_ns(id);
    double c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    CLOBBER();
    if (cpu != NULL)
        *cpu = c1 - c0;
    return t1 - t0;
}

/* Iterations for one sample of about target_ns.  Growing tenfold while a
 * loop is far too short, then scaling by the last timing, gets there in a
 * handful of loops; these also warm caches and branch predictors. */
static uint64_t calibrate(const contender_t *c)
{
    double target = bench_opts.target_ns;
    uint64_t n = 1;
    for (;;) {
        double t = time_loop(c, n, NULL);
        if (t >= target / 8 || n >= (UINT64_C(1) << 40)) {
            double want = (double)n * target / (t > 1 ? t : 1);
            return want < 1 ? 1 : (uint64_t)want;
        }
        n *= t < target / 100 ? 10 : 2;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_CONTENDERS 4

void bench_measure(contender_t *c, size_t k)
{
    uint64_t iters[MAX_CONTENDERS];
    double tmp[BENCH_MAX_SAMPLES], cpu[MAX_CONTENDERS][BENCH_MAX_SAMPLES];
    unsigned ns = bench_opts.samples;
    if (k > MAX_CONTENDERS || ns > BENCH_MAX_SAMPLES || ns == 0)
        bench_die("bench_measure (bad arguments)", EINVAL);
    for (size_t i = 0; i < k; i++)
        iters[i] = calibrate(&c[i]);
    for (unsigned r = 0; r < ns; r++)
        for (size_t j = 0; j < k; j++) {
            size_t i = (r + j) % k;
            double n = (double)iters[i];
            c[i].s[r] = time_loop(&c[i], iters[i], &cpu[i][r]) / n;
            cpu[i][r] /= n;
        }
    for (size_t i = 0; i < k; i++) {
        memcpy(tmp, c[i].s, ns * sizeof *tmp);
        c[i].ns = median(tmp, ns);
        c[i].cpu_ns = median(cpu[i], ns);
    }
}

void bench_more_rounds(void)
{
    bench_opts.samples = bench_opts.samples * 3;
    if (bench_opts.samples > BENCH_MAX_SAMPLES)
        bench_opts.samples = BENCH_MAX_SAMPLES;
    bench_opts.target_ns /= 3;
}

double bench_ratio(const contender_t *a, const contender_t *b)
{
    double r[BENCH_MAX_SAMPLES];
    for (unsigned i = 0; i < bench_opts.samples; i++)
        r[i] = a->s[i] / b->s[i];
    return median(r, bench_opts.samples);
}

/* ------------------------------------------------------------------
 * Pool job completion
 * ---------------------------------------------------------------- */

void countdown_init(countdown_t *cd)
{
    atomic_init(&cd->left, 0);
    if (sem_init(&cd->done, 0, 0) != 0)
        bench_die("sem_init", errno);
}

void countdown_destroy(countdown_t *cd)
{
    sem_destroy(&cd->done);
}

void countdown_arm(countdown_t *cd, uint64_t n)
{
    atomic_store_explicit(&cd->left, (long)n, memory_order_relaxed);
}

void countdown_wait(countdown_t *cd)
{
    while (sem_wait(&cd->done) != 0)
        if (errno != EINTR)
            bench_die("sem_wait", errno);
}

void *countdown_job(void *arg)
{
    countdown_t *cd = arg;
    if (atomic_fetch_sub_explicit(&cd->left, 1, memory_order_acq_rel) == 1)
        sem_post(&cd->done);
    return NULL;
}
