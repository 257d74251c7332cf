/*
 * context_fixture.h - the fixture test_context.c and test_context_mt.c
 * share.  Each includer is one test program, so the statics below are
 * that program's own; Check forks every test, and the fixture hands each
 * one fresh objects.
 */
#ifndef CTXVARS_CONTEXT_FIXTURE_H
#define CTXVARS_CONTEXT_FIXTURE_H

#include <ctxvars.h>

#include "testutil.h"

#include <stdatomic.h>
#include <stdint.h>

#define P(n) ((void *)(uintptr_t)(n))
#define BAD P(0xbad) /* what an out-pointer holds before a failing call */
#define DEF P(0xdef)
#define UNUSED __attribute__((unused))

/* Every test gets two variables without default, one whose default is
 * DEF, two fresh empty contexts and a call counter. */
static ctx_var_t *va, *vb, *vdef;
static ctx_context_t *ca, *cb;
static atomic_int calls;

static inline ctx_var_t *new_var(const char *name, void *def)
{
    ctx_var_t *v = NULL;
    ck_ok(ctx_var_create(&v, name, def, NULL));
    return v;
}

static inline void fixture_setup(void)
{
    va = new_var("a", CTX_MISSING);
    vb = new_var("b", CTX_MISSING);
    vdef = new_var("d", DEF);
    ck_ok(ctx_context_new(&ca));
    ck_ok(ctx_context_new(&cb));
    atomic_store(&calls, 0);
}

static inline void fixture_teardown(void)
{
    ctx_context_release(cb);
    ctx_context_release(ca);
    ctx_var_release(vdef);
    ctx_var_release(vb);
    ctx_var_release(va);
}

static inline void *run_in(ctx_context_t *ctx, void *(*fn)(void *), void *arg)
{
    void *res = BAD;
    ck_ok(ctx_context_run(ctx, fn, arg, &res));
    return res;
}

static inline void *get_val(const ctx_var_t *v)
{
    void *out = BAD;
    ck_ok(ctx_var_get(v, &out));
    return out;
}

static inline void *ctx_val(const ctx_context_t *c, const ctx_var_t *v)
{
    void *out = BAD;
    ck_ok(ctx_context_get(c, v, &out));
    return out;
}

static inline void *count_call(void *arg)
{
    atomic_fetch_add(&calls, 1);
    return arg;
}

#endif
