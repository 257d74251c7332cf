/*
 * test_context.c - contexts: run, copy, enter/exit, the mapping view.
 *
 * CPython's Lib/test/test_context.py restated for the C API (its
 * test_context_run_N -> run_N, test_context_manager_* -> enter/exit
 * tests), the enter/exit rules, a context released while entered, the
 * mapping view, NULL arguments and a context of 10,000 bindings, all on
 * the test's own thread.  What threads add is in test_context_mt.c.
 */
#include "config.h"

#include "context_fixture.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static void *set_arg_var(void *arg)
{
    ck_ok(ctx_var_set(arg, P(1), NULL));
    return NULL;
}

START_TEST(context_new_1)
{
    ck_assert_ptr_ne(ca, cb);
    ck_assert_uint_eq(ctx_context_len(ca), 0);
    ck_assert_ptr_eq(ctx_context_retain(ca), ca);
    ctx_context_release(ca);
    ck_assert_uint_eq(ctx_context_len(ca), 0);
}
END_TEST

START_TEST(run_1_2)
{
    void *res = BAD;
    ck_assert_int_eq(ctx_context_run(NULL, count_call, NULL, &res), EINVAL);
    ck_assert_int_eq(ctx_context_run(ca, NULL, NULL, &res), EINVAL);
    ck_assert_ptr_eq(res, BAD);
    ck_assert_int_eq(atomic_load(&calls), 0);
    ck_assert_ptr_eq(run_in(ca, count_call, P(11)), P(11));
    ck_assert_ptr_null(run_in(ca, count_call, NULL));
    ck_ok(ctx_context_run(ca, count_call, P(3), NULL));
    ck_assert_int_eq(atomic_load(&calls), 3);
}
END_TEST

static void *run_4_func2(void *arg UNUSED)
{
    ck_assert_ptr_null(ctx_var_get_or(va, NULL));
    return NULL;
}

static void *run_4_func1(void *arg UNUSED)
{
    ctx_context_t *cur = NULL;
    ck_assert_ptr_null(ctx_var_get_or(va, NULL));
    ck_ok(ctx_var_set(va, P(0x5a), NULL));
    run_in(cb, run_4_func2, NULL);
    ck_assert_ptr_eq(ctx_var_get_or(va, NULL), P(0x5a));
    ck_ok(ctx_copy_context(&cur));
    ck_assert_uint_eq(ctx_context_len(cur), 1);
    ck_assert_ptr_eq(ctx_val(cur, va), P(0x5a));
    return cur;
}

START_TEST(run_4)
{
    ctx_context_t *returned = run_in(ca, run_4_func1, NULL);
    ck_assert_ptr_eq(ctx_val(ca, va), P(0x5a));
    ck_assert_ptr_eq(ctx_val(returned, va), P(0x5a));
    ck_assert(ctx_context_contains(returned, va));
    ck_assert_uint_eq(ctx_context_len(cb), 0);
    ctx_context_release(returned);
}
END_TEST

/* Python's func raises after setting; a C fn simply returns.  Either way
 * the change stays in the context and the caller never sees it. */
START_TEST(run_5)
{
    run_in(ca, set_arg_var, va);
    ck_assert_ptr_null(ctx_var_get_or(va, NULL));
    ck_assert_ptr_eq(ctx_val(ca, va), P(1));
}
END_TEST

static void *run_6_fun(void *arg UNUSED)
{
    void *v = BAD;
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ck_assert_int_eq(ctx_context_get(ca, vdef, &v), ENOENT);
    ck_assert_ptr_eq(v, BAD);
    ck_ok(ctx_var_set(vdef, P(42), NULL));
    ck_assert_ptr_eq(get_val(vdef), P(42));
    ck_assert_ptr_eq(ctx_val(ca, vdef), P(42));
    return NULL;
}

START_TEST(run_6) { run_in(ca, run_6_fun, NULL); }
END_TEST

static void *run_7_fun(void *arg UNUSED)
{
    ck_assert_int_eq(ctx_context_run(ca, count_call, NULL, NULL), EBUSY);
    ck_assert_int_eq(ctx_context_enter(ca), EBUSY);
    return P(7);
}

START_TEST(run_7)
{
    ck_assert_ptr_eq(run_in(ca, run_7_fun, NULL), P(7));
    ck_assert_int_eq(atomic_load(&calls), 0);
    /* The refusals left no trace: ca is free again. */
    ck_assert_ptr_eq(run_in(ca, count_call, P(1)), P(1));
}
END_TEST

static void *copy_1_ctx2_fun(void *arg UNUSED)
{
    ck_assert_ptr_eq(get_val(vdef), P(10));
    ck_ok(ctx_var_set(vdef, P(30), NULL));
    ck_assert_ptr_eq(get_val(vdef), P(30));
    return NULL;
}

static void *copy_1_ctx1_fun(void *arg UNUSED)
{
    ctx_context_t *ctx2 = NULL;
    ck_ok(ctx_var_set(vdef, P(10), NULL));
    ck_ok(ctx_context_copy(ca, &ctx2));
    ck_assert_ptr_eq(ctx_val(ctx2, vdef), P(10));
    ck_ok(ctx_var_set(vdef, P(20), NULL));
    ck_assert_ptr_eq(ctx_val(ca, vdef), P(20));
    ck_assert_ptr_eq(ctx_val(ctx2, vdef), P(10));
    run_in(ctx2, copy_1_ctx2_fun, NULL);
    ck_assert_ptr_eq(ctx_val(ca, vdef), P(20));
    ck_assert_ptr_eq(ctx_val(ctx2, vdef), P(30));
    ctx_context_release(ctx2);
    return NULL;
}

START_TEST(copy_1) { run_in(ca, copy_1_ctx1_fun, NULL); }
END_TEST

START_TEST(enter_exit_nested)
{
    ctx_context_t *outer = NULL, *inner = NULL;
    ck_ok(ctx_copy_context(&outer));
    ck_ok(ctx_context_enter(outer));
    ck_ok(ctx_var_set(vdef, P(1), NULL));
    ck_ok(ctx_copy_context(&inner));
    ck_assert_ptr_ne(outer, inner);
    ck_ok(ctx_context_enter(inner));
    ck_assert_ptr_eq(get_val(vdef), P(1));
    ck_ok(ctx_var_set(vdef, P(2), NULL));
    ck_assert_ptr_eq(ctx_val(outer, vdef), P(1));
    ck_assert_ptr_eq(get_val(vdef), P(2));
    ck_ok(ctx_context_exit(inner));
    ck_assert_ptr_eq(get_val(vdef), P(1));
    ck_ok(ctx_context_exit(outer));
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ctx_context_release(inner);
    ctx_context_release(outer);
}
END_TEST

static void *enter_inside(void *arg)
{
    ck_assert_int_eq(ctx_context_enter(arg), EBUSY);
    return NULL;
}

START_TEST(is_not_reentrant)
{
    ck_ok(ctx_context_enter(ca));
    ck_assert_int_eq(ctx_context_enter(ca), EBUSY);
    ck_assert_int_eq(ctx_context_run(ca, count_call, NULL, NULL), EBUSY);
    ck_assert_int_eq(atomic_load(&calls), 0);
    ck_ok(ctx_context_exit(ca));
    ck_assert_int_eq(ctx_context_exit(ca), EPERM);
    run_in(ca, enter_inside, ca);
}
END_TEST

START_TEST(rejects_noncurrent_exit)
{
    ck_assert_int_eq(ctx_context_exit(ca), EPERM); /* never entered */
    ck_ok(ctx_context_enter(ca));
    ck_ok(ctx_context_enter(cb));
    ck_assert_int_eq(ctx_context_exit(ca), EPERM);
    ck_ok(ctx_context_exit(cb));
    ck_ok(ctx_context_exit(ca));
}
END_TEST

static atomic_int releases;

static void count_release(void *value UNUSED)
{
    atomic_fetch_add(&releases, 1);
}

START_TEST(released_while_entered)
{
    static const ctx_value_ops_t ops = {NULL, count_release};
    ctx_var_t *v = NULL;
    ck_ok(ctx_var_create(&v, "v", CTX_MISSING, &ops));
    ck_ok(ctx_context_enter(ca));
    ctx_context_release(ca);
    ck_ok(ctx_var_set(v, P(1), NULL));
    ck_assert_ptr_eq(get_val(v), P(1));
    ck_assert_uint_eq(ctx_context_len(ca), 1);
    ck_assert_int_eq(atomic_load(&releases), 0);
    ck_ok(ctx_context_exit(ca));
    ca = NULL;
    ck_assert_int_eq(atomic_load(&releases), 1); /* the context is gone */
    ck_assert_ptr_null(ctx_var_get_or(v, NULL));
    ctx_var_release(v);
}
END_TEST
/* The mapping view: bindings only, never defaults. */
static int stop_at_second(ctx_var_t *var UNUSED, void *value UNUSED,
                          void *arg)
{
    return ++*(int *)arg == 2 ? 77 : 0;
}

/* Writes into the very context being visited: the walk, on a snapshot,
 * must neither see the new binding nor hold a lock across the call. */
static int write_while_visiting(ctx_var_t *var UNUSED, void *value UNUSED,
                                void *arg)
{
    if ((*(int *)arg)++ == 0)
        run_in(ca, set_arg_var, vdef);
    return 0;
}

START_TEST(mapping_bindings_only)
{
    ctx_var_t *z = new_var("z", CTX_MISSING);
    void *v = BAD;
    int n = 0;
    ck_assert_int_eq(ctx_context_get(ca, vdef, &v), ENOENT);
    ck_assert_ptr_eq(v, BAD);
    ck_assert(!ctx_context_contains(ca, vdef));
    run_in(ca, set_arg_var, va);
    run_in(ca, set_arg_var, vb);
    run_in(ca, set_arg_var, z);
    ck_assert_uint_eq(ctx_context_len(ca), 3);
    ck_assert_int_eq(ctx_context_foreach(ca, stop_at_second, &n), 77);
    ck_assert_int_eq(n, 2);
    n = 0;
    ck_ok(ctx_context_foreach(ca, write_while_visiting, &n));
    ck_assert_int_eq(n, 3);
    ck_assert_uint_eq(ctx_context_len(ca), 4);
    ck_assert_ptr_eq(ctx_val(ca, vdef), P(1));
    ctx_var_release(z);
}
END_TEST

static int never_called(ctx_var_t *var UNUSED, void *value UNUSED,
                        void *arg UNUSED)
{
    return 1;
}

START_TEST(context_null_args)
{
    ctx_context_t *out = BAD;
    void *val = BAD;
    ck_assert_int_eq(ctx_context_new(NULL), EINVAL);
    ck_assert_int_eq(ctx_copy_context(NULL), EINVAL);
    ck_assert_int_eq(ctx_context_copy(NULL, &out), EINVAL);
    ck_assert_ptr_eq(out, BAD);
    ck_assert_int_eq(ctx_context_copy(ca, NULL), EINVAL);
    ck_assert_ptr_null(ctx_context_retain(NULL));
    ctx_context_release(NULL);
    ck_assert_int_eq(ctx_context_enter(NULL), EINVAL);
    ck_assert_int_eq(ctx_context_exit(NULL), EINVAL);
    ck_assert_int_eq(ctx_context_get(NULL, va, &val), EINVAL);
    ck_assert_int_eq(ctx_context_get(ca, NULL, &val), EINVAL);
    ck_assert_int_eq(ctx_context_get(ca, va, NULL), EINVAL);
    ck_assert_ptr_eq(val, BAD);
    ck_assert(!ctx_context_contains(NULL, va));
    ck_assert(!ctx_context_contains(ca, NULL));
    ck_assert_uint_eq(ctx_context_len(NULL), 0);
    ck_assert_int_eq(ctx_context_foreach(NULL, never_called, NULL), EINVAL);
    ck_assert_int_eq(ctx_context_foreach(ca, NULL, NULL), EINVAL);
}
END_TEST

enum { MANY = 10000 };

struct many {
    ctx_var_t *vars[MANY];
    ctx_token_t *toks[MANY];
    unsigned char seen[MANY];
    ctx_context_t *copy;
};

static int mark_seen(ctx_var_t *var, void *value, void *arg)
{
    struct many *m = arg;
    uintptr_t i = (uintptr_t)value - 1;
    ck_assert_uint_lt(i, MANY);
    ck_assert_ptr_eq(var, m->vars[i]);
    m->seen[i]++;
    return 0;
}

static void *many_body(void *arg)
{
    struct many *m = arg;
    for (uintptr_t i = 0; i < MANY; i++)
        ck_ok(ctx_var_set(m->vars[i], P(i + 1), &m->toks[i]));
    ck_assert_uint_eq(ctx_context_len(ca), MANY);
    for (uintptr_t i = 0; i < MANY; i++)
        ck_assert_ptr_eq(ctx_var_get_or(m->vars[i], NULL), P(i + 1));
    ck_ok(ctx_copy_context(&m->copy));
    for (uintptr_t i = 0; i < MANY; i++)
        ck_ok(ctx_var_set(m->vars[i], P(i + 1 + MANY), NULL));
    for (uintptr_t i = 0; i < MANY; i++)
        ck_assert_ptr_eq(ctx_val(m->copy, m->vars[i]), P(i + 1));
    for (uintptr_t i = MANY; i-- > 0;)
        ck_ok(ctx_var_reset(m->vars[i], m->toks[i]));
    ck_assert_uint_eq(ctx_context_len(ca), 0);
    return NULL;
}

START_TEST(bindings_10000)
{
    struct many *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    for (int i = 0; i < MANY; i++)
        m->vars[i] = new_var("many", CTX_MISSING);
    run_in(ca, many_body, m);
    ck_assert_uint_eq(ctx_context_len(m->copy), MANY);
    ck_ok(ctx_context_foreach(m->copy, mark_seen, m));
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(m->seen[i], 1);
        ck_assert(!ctx_context_contains(ca, m->vars[i]));
        ctx_token_release(m->toks[i]);
        ctx_var_release(m->vars[i]);
    }
    ctx_context_release(m->copy);
    free(m);
}
END_TEST

static Suite *context_suite(void)
{
    Suite *s = suite_create("context");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, context_new_1);
    tcase_add_test(tc, run_1_2);
    tcase_add_test(tc, run_4);
    tcase_add_test(tc, run_5);
    tcase_add_test(tc, run_6);
    tcase_add_test(tc, run_7);
    tcase_add_test(tc, copy_1);
    tcase_add_test(tc, enter_exit_nested);
    tcase_add_test(tc, is_not_reentrant);
    tcase_add_test(tc, rejects_noncurrent_exit);
    tcase_add_test(tc, released_while_entered);
    tcase_add_test(tc, mapping_bindings_only);
    tcase_add_test(tc, context_null_args);
    tcase_add_test(tc, bindings_10000);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(context_suite)
