/*
 * memory.c - heap bytes per binding and per snapshot.
 *
 * Measured as the growth of glibc's "bytes in use" (mallinfo2: uordblks
 * for arena chunks plus hblkhd for mmapped ones) across the operation.
 * That counts what malloc really hands out, chunk headers and rounding
 * included, which is what a user's process pays; summing requested sizes
 * would flatter any design that makes many small allocations.  Everything
 * the measurement itself needs is allocated before the first reading.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>

#if defined(__GLIBC__) &&                                                  \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define HAVE_MALLINFO2 1

static double heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (double)mi.uordblks + (double)mi.hblkhd;
}
#else
static double heap_in_use(void)
{
    return -1;
}
#endif

double mem_per_binding(ctx_state_t *s, size_t n)
{
#ifndef HAVE_MALLINFO2
    (void)s;
    (void)n;
    return -1;
#else
    /* Built in a context of its own, never snapshotted: what a thread
     * that sets n variables keeps. */
    double before = heap_in_use();
    ctx_context_t *c = ops_context_with(s, n);
    double after = heap_in_use();
    ctx_context_release(c);
    return (after - before) / (double)n;
#endif
}

typedef struct {
    ctx_context_t **snaps;
    size_t n;
    double before, after;
} snap_arg_t;

static void *take_snapshots(void *arg)
{
    snap_arg_t *a = arg;
    a->before = heap_in_use();
    for (size_t i = 0; i < a->n; i++)
        bench_check(ctx_copy_context(&a->snaps[i]), "ctx_copy_context");
    a->after = heap_in_use();
    return NULL;
}

double mem_per_snapshot(ctx_state_t *s, size_t nbind, size_t nsnap)
{
#ifndef HAVE_MALLINFO2
    (void)s;
    (void)nbind;
    (void)nsnap;
    return -1;
#else
    snap_arg_t a = {malloc(nsnap * sizeof(ctx_context_t *)), nsnap, 0, 0};
    if (a.snaps == NULL)
        bench_die("malloc", ENOMEM);
    ctx_context_t *c = ops_context_with(s, nbind);
    bench_check(ctx_context_run(c, take_snapshots, &a, NULL),
                "ctx_context_run");
    for (size_t i = 0; i < nsnap; i++)
        ctx_context_release(a.snaps[i]);
    ctx_context_release(c);
    free(a.snaps);
    return (a.after - a.before) / (double)nsnap;
#endif
}
