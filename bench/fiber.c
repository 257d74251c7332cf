/*
 * fiber.c - the fiber figures of `make bench`: ctx_fiber_resume() +
 * ctx_fiber_suspend() of a fiber holding one entered context against
 * malloc(64)+free, and the same pair for a fiber holding 16 against one
 * holding 1 (a switch must not cost more for a fiber that holds more).
 * All three run in one interleaved measurement, so both ratios compare
 * samples taken side by side.  A scheduler makes exactly this pair of
 * calls around every stack switch.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_HELD 16

struct fiber_bench {
    ctx_fiber_t *f;
    ctx_context_t *held[MAX_HELD];
    size_t nheld;
};

fiber_figure_t fiber_vs_malloc, fiber_16_vs_1;

static void expect(bool ok, const char *what)
{
    if (!ok)
        bench_die(what, EPROTO);
}

fiber_bench_t *fiber_bench_new(size_t nheld)
{
    fiber_bench_t *fb = calloc(1, sizeof *fb);
    if (fb == NULL || nheld > MAX_HELD)
        bench_die("fiber_bench_new", ENOMEM);
    bench_check(ctx_fiber_create(&fb->f, NULL), "ctx_fiber_create");
    bench_check(ctx_fiber_resume(fb->f), "ctx_fiber_resume");
    for (size_t i = 0; i < nheld; i++) {
        bench_check(ctx_context_new(&fb->held[i]), "ctx_context_new");
        bench_check(ctx_context_enter(fb->held[i]), "ctx_context_enter");
    }
    fb->nheld = nheld;
    bench_check(ctx_fiber_suspend(fb->f), "ctx_fiber_suspend");
    /* Proves, once, that the pair does what it should: while suspended
     * the fiber holds its contexts, and a resume puts the innermost back
     * on top. */
    ctx_context_t *top = nheld > 0 ? fb->held[nheld - 1] : NULL;
    expect(top == NULL || ctx_context_enter(top) == EBUSY,
           "fiber: a held context is not held");
    bench_check(ctx_fiber_resume(fb->f), "ctx_fiber_resume");
    expect(top == NULL || (ctx_context_exit(top) == 0 &&
                           ctx_context_enter(top) == 0),
           "fiber: the held context is not on top after resume");
    bench_check(ctx_fiber_suspend(fb->f), "ctx_fiber_suspend");
    return fb;
}

void fiber_bench_free(fiber_bench_t *fb)
{
    /* Releasing a suspended fiber exits what it holds. */
    ctx_fiber_release(fb->f);
    for (size_t i = 0; i < fb->nheld; i++)
        ctx_context_release(fb->held[i]);
    free(fb);
}

void op_fiber_switch(void *arg, uint64_t n)
{
    ctx_fiber_t *f = ((fiber_bench_t *)arg)->f;
    for (uint64_t i = 0; i < n; i++) {
        SINK(ctx_fiber_resume(f));
        SINK(ctx_fiber_suspend(f));
    }
}

/* For callgrind.c's table, which has no per-op setup: the fiber is made
 * by the first call (the uncounted warm-up) and kept until exit. */
void op_fiber_switch1(void *arg, uint64_t n)
{
    static fiber_bench_t *fb;
    (void)arg;
    if (fb == NULL)
        fb = fiber_bench_new(1);
    op_fiber_switch(fb, n);
}

void op_fiber_switch16(void *arg, uint64_t n)
{
    static fiber_bench_t *fb;
    (void)arg;
    if (fb == NULL)
        fb = fiber_bench_new(MAX_HELD);
    op_fiber_switch(fb, n);
}

void fiber_measure(void)
{
    fiber_bench_t *one = fiber_bench_new(1), *many = fiber_bench_new(16);
    contender_t c[3] = {
        {.name = "1 held", .fn = op_fiber_switch, .arg = one},
        {.name = "16 held", .fn = op_fiber_switch, .arg = many},
        {.name = "malloc+free", .fn = base_malloc_free},
    };
    bench_measure(c, 3);
    fiber_vs_malloc =
        (fiber_figure_t){c[0].ns, c[2].ns, bench_ratio(&c[0], &c[2])};
    fiber_16_vs_1 =
        (fiber_figure_t){c[1].ns, c[0].ns, bench_ratio(&c[1], &c[0])};
    printf("\nFibers: ctx_fiber_resume + ctx_fiber_suspend, ns per pair\n");
    printf("  1 held context    %8.2f ns  (%.2fx malloc(64)+free, %.2f ns)\n",
           c[0].ns, fiber_vs_malloc.ratio, c[2].ns);
    printf("  16 held contexts  %8.2f ns  (%.2fx 1 held)\n", c[1].ns,
           fiber_16_vs_1.ratio);
    fflush(stdout);
    fiber_bench_free(many);
    fiber_bench_free(one);
}
