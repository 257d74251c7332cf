/*
 * context_fixture.h - the fixture the variable and context suites share
 * (test_var.c, test_with.c, test_context.c, test_context_mt.c).  Each
 * includer is one test program, so the statics below are that program's
 * own; Check forks every test, and the fixture hands each one fresh
 * objects.
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

/* Every test gets two variables without default, one with a default
 * (DEF unless the suite picks its own), two fresh empty contexts and a
 * call counter.  The isolated variant also runs the test inside a fresh
 * context of its own (iso), as Python's @isolated_context arranges, so
 * no test depends on what others left in the thread's base context (when
 * Check does not fork). */
static ctx_var_t *va, *vb, *vdef;
static ctx_context_t *ca, *cb, *iso;
static atomic_int calls;

static inline ctx_var_t *new_var(const char *name, void *def)
{
    ctx_var_t *v = NULL;
    ck_ok(ctx_var_create(&v, name, def, NULL));
    ck_assert_ptr_nonnull(v);
    return v;
}

static inline void fixture_setup_def(void *def)
{
    va = new_var("a", CTX_MISSING);
    vb = new_var("b", CTX_MISSING);
    vdef = new_var("d", def);
    ck_ok(ctx_context_new(&ca));
    ck_ok(ctx_context_new(&cb));
    atomic_store(&calls, 0);
}

static inline void fixture_setup(void) { fixture_setup_def(DEF); }

static inline void fixture_teardown(void)
{
    ctx_context_release(cb);
    ctx_context_release(ca);
    ctx_var_release(vdef);
    ctx_var_release(vb);
    ctx_var_release(va);
}

static inline void isolated_setup_def(void *def)
{
    fixture_setup_def(def);
    ck_ok(ctx_context_new(&iso));
    ck_ok(ctx_context_enter(iso));
}

static inline void isolated_setup(void) { isolated_setup_def(DEF); }

static inline void isolated_teardown(void)
{
    ck_ok(ctx_context_exit(iso));
    ctx_context_release(iso);
    fixture_teardown();
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
