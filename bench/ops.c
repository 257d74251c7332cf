/*
 * ops.c - the library's side of every figure, as loop functions, and the
 * state they run against.
 *
 * Loops call the public API through the shared library exactly as a user
 * would and check nothing per iteration (the baselines check nothing
 * either); ops_check() proves once, before anything is timed, that each
 * operation does what it should.  Values are small integers cast to
 * pointers: with no value ops the library never looks at them.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define VAL(i) ((void *)(uintptr_t)((i) + 1))

static void *trivial(void *arg)
{
    return arg;
}

void ops_init(ctx_state_t *s, size_t nvars)
{
    s->vars = malloc(nvars * sizeof *s->vars);
    if (s->vars == NULL)
        bench_die("malloc", ENOMEM);
    for (size_t i = 0; i < nvars; i++)
        bench_check(ctx_var_create(&s->vars[i], NULL, CTX_MISSING, NULL),
                    "ctx_var_create");
    s->nbound = 0;
    s->cycle_idx = 0;
    s->cycle_step = 1;
    bench_check(ctx_var_create(&s->unbound, "unbound", CTX_MISSING, NULL),
                "ctx_var_create");
    bench_check(ctx_context_new(&s->run_ctx), "ctx_context_new");
    s->pool = NULL;
    countdown_init(&s->cd);
}

void ops_fini(ctx_state_t *s)
{
    ctx_context_release(s->run_ctx);
    ctx_var_release(s->unbound);
    countdown_destroy(&s->cd);
    /* The variables stay: the thread's base context holds them anyway
     * until exit. */
}

/* A stride that visits all n bound variables in a scattered order: a
 * prime that does not divide any power of ten is coprime to every n the
 * tables use. */
static size_t cycle_step(size_t n)
{
    return n > 1 ? (size_t)1000003 % n : 0;
}

void ops_grow(ctx_state_t *s, size_t n)
{
    for (size_t i = s->nbound; i < n; i++)
        bench_check(ctx_var_set(s->vars[i], VAL(i), NULL), "ctx_var_set");
    if (n > s->nbound)
        s->nbound = n;
    s->cycle_idx = 0;
    s->cycle_step = cycle_step(s->nbound);
}

typedef struct {
    ctx_state_t *s;
    size_t n;
} grow_arg_t;

static void *grow_in(void *arg)
{
    grow_arg_t *g = arg;
    for (size_t i = 0; i < g->n; i++)
        bench_check(ctx_var_set(g->s->vars[i], VAL(i), NULL), "ctx_var_set");
    return NULL;
}

ctx_context_t *ops_context_with(ctx_state_t *s, size_t n)
{
    ctx_context_t *c;
    bench_check(ctx_context_new(&c), "ctx_context_new");
    grow_arg_t g = {s, n};
    bench_check(ctx_context_run(c, grow_in, &g, NULL), "ctx_context_run");
    if (ctx_context_len(c) != n)
        bench_die("ops_context_with (wrong length)", EPROTO);
    return c;
}

static void expect(bool ok, const char *what)
{
    if (!ok)
        bench_die(what, EPROTO);
}

void ops_check(ctx_state_t *s)
{
    void *p = NULL;
    expect(s->nbound > 0 && ctx_var_get(s->vars[0], &p) == 0, "get (bound)");
    expect(ctx_var_get_or(s->unbound, VAL(7)) == VAL(7), "get_or (unbound)");
    expect(ctx_var_set(s->vars[0], VAL(41), NULL) == 0 &&
               ctx_var_get_or(s->vars[0], NULL) == VAL(41),
           "set");
    ctx_token_t *t = NULL;
    expect(ctx_var_set(s->vars[0], VAL(42), &t) == 0 &&
               ctx_var_reset(s->vars[0], t) == 0 &&
               ctx_var_get_or(s->vars[0], NULL) == VAL(41),
           "set + reset");
    ctx_token_release(t);
    ctx_context_t *c = NULL;
    expect(ctx_copy_context(&c) == 0 && ctx_context_len(c) == s->nbound,
           "copy");
    ctx_context_release(c);
    void *r = NULL;
    expect(ctx_context_run(s->run_ctx, trivial, VAL(3), &r) == 0 &&
               r == VAL(3),
           "run");
}

/* ------------------------------------------------------------------
 * Reads
 * ---------------------------------------------------------------- */

void op_get(void *arg, uint64_t n)
{
    const ctx_state_t *s = arg;
    const ctx_var_t *v = s->vars[0];
    for (uint64_t i = 0; i < n; i++) {
        void *p = NULL;
        SINK(ctx_var_get(v, &p));
        SINK(p);
    }
}

void op_get_cycle(void *arg, uint64_t n)
{
    ctx_state_t *s = arg;
    ctx_var_t *const *vars = s->vars;
    size_t idx = s->cycle_idx, step = s->cycle_step, nb = s->nbound;
    for (uint64_t i = 0; i < n; i++) {
        void *p = NULL;
        SINK(ctx_var_get(vars[idx], &p));
        SINK(p);
        idx += step;
        if (idx >= nb)
            idx -= nb;
    }
    s->cycle_idx = idx;
}

void op_get_or(void *arg, uint64_t n)
{
    const ctx_var_t *v = ((const ctx_state_t *)arg)->unbound;
    for (uint64_t i = 0; i < n; i++)
        SINK(ctx_var_get_or(v, NULL));
}

/* ------------------------------------------------------------------
 * Writes
 * ---------------------------------------------------------------- */

void op_set(void *arg, uint64_t n)
{
    ctx_var_t *v = ((ctx_state_t *)arg)->vars[0];
    for (uint64_t i = 0; i < n; i++)
        SINK(ctx_var_set(v, VAL(i), NULL));
}

void op_set_reset(void *arg, uint64_t n)
{
    ctx_var_t *v = ((ctx_state_t *)arg)->vars[0];
    for (uint64_t i = 0; i < n; i++) {
        ctx_token_t *t = NULL;
        SINK(ctx_var_set(v, VAL(i), &t));
        SINK(ctx_var_reset(v, t));
        ctx_token_release(t);
    }
}

/* ------------------------------------------------------------------
 * Snapshots and contexts
 * ---------------------------------------------------------------- */

void op_copy(void *arg, uint64_t n)
{
    (void)arg;
    for (uint64_t i = 0; i < n; i++) {
        ctx_context_t *c = NULL;
        SINK(ctx_copy_context(&c));
        ctx_context_release(c);
    }
}

typedef struct {
    uint64_t n;
} copy_arg_t;

static void *copy_loop(void *arg)
{
    op_copy(NULL, ((copy_arg_t *)arg)->n);
    return NULL;
}

void op_copy_in(void *ctx, uint64_t n)
{
    copy_arg_t a = {n};
    bench_check(ctx_context_run(ctx, copy_loop, &a, NULL), "ctx_context_run");
}

void op_copy_set(void *arg, uint64_t n)
{
    ctx_var_t *v = ((ctx_state_t *)arg)->vars[0];
    for (uint64_t i = 0; i < n; i++) {
        ctx_context_t *c = NULL;
        SINK(ctx_copy_context(&c));
        SINK(ctx_var_set(v, VAL(i), NULL));
        ctx_context_release(c);
    }
}

void op_run(void *arg, uint64_t n)
{
    ctx_context_t *c = ((ctx_state_t *)arg)->run_ctx;
    for (uint64_t i = 0; i < n; i++) {
        void *r = NULL;
        SINK(ctx_context_run(c, trivial, NULL, &r));
        SINK(r);
    }
}

/* ------------------------------------------------------------------
 * Threads and pools
 * ---------------------------------------------------------------- */

void op_thread(void *arg, uint64_t n)
{
    (void)arg;
    for (uint64_t i = 0; i < n; i++) {
        pthread_t t;
        bench_check(ctx_thread_create(&t, NULL, trivial, NULL),
                    "ctx_thread_create");
        pthread_join(t, NULL);
    }
}

void op_pool(void *arg, uint64_t n)
{
    ctx_state_t *s = arg;
    countdown_arm(&s->cd, n);
    for (uint64_t i = 0; i < n; i++)
        bench_check(ctx_pool_submit(s->pool, countdown_job, &s->cd, NULL),
                    "ctx_pool_submit");
    countdown_wait(&s->cd);
}
