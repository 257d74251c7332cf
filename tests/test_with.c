/*
 * test_with.c - the scoped set, CTX_WITH and CTX_WITH_STATUS.
 *
 * Python's `with var.set(value):` resets the variable however the block is
 * left; the C macros get there through the cleanup attribute.  So every
 * way out of a block (its end, break, continue, return, goto, nested
 * blocks) is taken here and the variable checked afterwards, as are the
 * refusals (NULL var, CTX_MISSING, ENOMEM: the block must not run and
 * nothing may change) and the balance of value ops.
 *
 * Every test runs inside a fresh context of its own (iso), so a binding a
 * broken reset leaves behind shows up as a binding of iso.
 */
#include "config.h"

#include "internal.h"
#include "context_fixture.h"

#include <errno.h>
#include <stdint.h>

/* Unbound in the current context, and get says so without touching out. */
static void assert_unbound(const ctx_var_t *v)
{
    void *out = BAD;
    ck_assert_int_eq(ctx_var_get(v, &out), ENOENT);
    ck_assert_ptr_eq(out, BAD);
    ck_assert(!ctx_context_contains(iso, v));
}

START_TEST(value_visible_then_unbound)
{
    int ran = 0;
    CTX_WITH(va, P(1)) {
        ck_assert_ptr_eq(get_val(va), P(1));
        ck_assert(ctx_context_contains(iso, va));
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    assert_unbound(va);
    ck_assert_uint_eq(ctx_context_len(iso), 0);
}
END_TEST

START_TEST(old_value_restored)
{
    int ran = 0;
    ck_ok(ctx_var_set(va, P(1), NULL));
    CTX_WITH(va, P(2)) {
        ck_assert_ptr_eq(get_val(va), P(2));
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    ck_assert_ptr_eq(get_val(va), P(1));
    ck_assert_uint_eq(ctx_context_len(iso), 1);
}
END_TEST

/* Unbound again means the default shows through, not a binding of it. */
START_TEST(default_shows_again)
{
    CTX_WITH(vdef, P(2)) ck_assert_ptr_eq(get_val(vdef), P(2));
    ck_assert_ptr_eq(get_val(vdef), DEF);
    ck_assert(!ctx_context_contains(iso, vdef));
}
END_TEST

/* NULL is a value like any other: the block runs with it bound. */
START_TEST(null_value)
{
    int ran = 0;
    CTX_WITH(va, NULL) {
        ck_assert_ptr_null(get_val(va));
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    assert_unbound(va);
}
END_TEST

/* The reset undoes the block's own sets too (the token remembers what was
 * there before the block, not what the block set). */
START_TEST(set_inside_is_undone)
{
    int ran = 0;
    ck_ok(ctx_var_set(va, P(1), NULL));
    CTX_WITH(va, P(2)) {
        ck_ok(ctx_var_set(va, P(3), NULL));
        ck_assert_ptr_eq(get_val(va), P(3));
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    ck_assert_ptr_eq(get_val(va), P(1));
}
END_TEST

START_TEST(nested_same_var)
{
    int ran = 0;
    CTX_WITH(va, P(1)) {
        CTX_WITH(va, P(2)) {
            ck_assert_ptr_eq(get_val(va), P(2));
            ran++;
        }
        ck_assert_ptr_eq(get_val(va), P(1));
        ran++;
    }
    ck_assert_int_eq(ran, 2);
    assert_unbound(va);
}
END_TEST

START_TEST(nested_different_vars)
{
    int ran = 0;
    CTX_WITH(va, P(1)) {
        CTX_WITH(vb, P(2)) {
            ck_assert_ptr_eq(get_val(va), P(1));
            ck_assert_ptr_eq(get_val(vb), P(2));
            ran++;
        }
        ck_assert_ptr_eq(get_val(va), P(1));
        assert_unbound(vb);
        ran++;
    }
    ck_assert_int_eq(ran, 2);
    assert_unbound(va);
    assert_unbound(vb);
}
END_TEST

/* The macro is a one-pass for loop, so break and continue inside the
 * block leave the block itself, not a loop around it: the rest of the
 * iteration still runs, after the reset. */
START_TEST(break_leaves_block_only)
{
    int entered = 0, past_break = 0, iterations = 0;
    for (uintptr_t i = 0; i < 3; i++) {
        CTX_WITH(va, P(i + 1)) {
            entered++;
            if (i == 1)
                break;
            past_break++;
        }
        assert_unbound(va);
        iterations++;
    }
    ck_assert_int_eq(entered, 3);
    ck_assert_int_eq(past_break, 2);
    ck_assert_int_eq(iterations, 3);
}
END_TEST

START_TEST(continue_leaves_block)
{
    int entered = 0, past_continue = 0, iterations = 0;
    ck_ok(ctx_var_set(va, P(100), NULL));
    for (uintptr_t i = 0; i < 3; i++) {
        CTX_WITH(va, P(i + 1)) {
            entered++;
            ck_assert_ptr_eq(get_val(va), P(i + 1));
            if (i != 2)
                continue;
            past_continue++;
        }
        ck_assert_ptr_eq(get_val(va), P(100));
        iterations++;
    }
    ck_assert_int_eq(entered, 3);
    ck_assert_int_eq(past_continue, 1);
    ck_assert_int_eq(iterations, 3);
}
END_TEST

/* Returns from inside two nested blocks, with what it saw there. */
static void *return_from_inside(void)
{
    CTX_WITH(va, P(1)) {
        CTX_WITH(vb, P(2)) {
            return P((uintptr_t)get_val(va) + (uintptr_t)get_val(vb));
        }
        ck_abort_msg("after a return");
    }
    ck_abort_msg("after a return");
    return NULL;
}

START_TEST(return_resets)
{
    ck_assert_ptr_eq(return_from_inside(), P(3));
    assert_unbound(va);
    assert_unbound(vb);
    ck_assert_uint_eq(ctx_context_len(iso), 0);
}
END_TEST

START_TEST(goto_out_resets)
{
    int entered = 0;
    ck_ok(ctx_var_set(vb, P(9), NULL));
    for (uintptr_t i = 0; i < 3; i++) {
        CTX_WITH(va, P(1)) {
            CTX_WITH(vb, P(2)) {
                entered++;
                goto out;
            }
            ck_abort_msg("after a goto");
        }
        ck_abort_msg("after a goto");
    }
out:
    ck_assert_int_eq(entered, 1);
    assert_unbound(va);
    ck_assert_ptr_eq(get_val(vb), P(9));
}
END_TEST

START_TEST(status_zero_on_success)
{
    int err = -1, ran = 0;
    CTX_WITH_STATUS(va, P(1), err) {
        ck_assert_int_eq(err, 0);
        ck_assert_ptr_eq(get_val(va), P(1));
        ran++;
    }
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(ran, 1);
    assert_unbound(va);
}
END_TEST

START_TEST(missing_value_refused)
{
    int err = -1, ran = 0;
    CTX_WITH_STATUS(va, CTX_MISSING, err) ran++;
    ck_assert_int_eq(err, EINVAL);
    assert_unbound(va);
    ck_ok(ctx_var_set(va, P(1), NULL));
    err = -1;
    CTX_WITH_STATUS(va, CTX_MISSING, err) ran++;
    ck_assert_int_eq(err, EINVAL);
    CTX_WITH(va, CTX_MISSING) ran++;
    ck_assert_int_eq(ran, 0);
    ck_assert_ptr_eq(get_val(va), P(1));
    ck_assert_uint_eq(ctx_context_len(iso), 1);
}
END_TEST

START_TEST(null_var_refused)
{
    int err = -1, ran = 0;
    CTX_WITH_STATUS(NULL, P(1), err) ran++;
    ck_assert_int_eq(err, EINVAL);
    CTX_WITH(NULL, P(1)) ran++;
    ck_assert_int_eq(ran, 0);
    ck_assert_uint_eq(ctx_context_len(iso), 0);
}
END_TEST

/* ENOMEM on the set: the block does not run and the variable keeps what
 * it had, bound or not; the fault must really have fired. */
static void check_enomem_set(void *before)
{
    int err = -1, ran = 0;
    size_t len = ctx_context_len(iso);
    ctx__fault_fail_after(0);
    CTX_WITH_STATUS(va, P(2), err) ran++;
    bool armed = ctx__fault_armed();
    ctx__fault_fail_after(-1);
    ck_assert(!armed);
    ck_assert_int_eq(err, ENOMEM);
    ck_assert_int_eq(ran, 0);
    ck_assert_uint_eq(ctx_context_len(iso), len);
    if (before == CTX_MISSING)
        assert_unbound(va);
    else
        ck_assert_ptr_eq(get_val(va), before);
    CTX_WITH_STATUS(va, P(2), err) ran++; /* and the next try works */
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(ran, 1);
}

START_TEST(enomem_unbound)
{
    check_enomem_set(CTX_MISSING);
    assert_unbound(va);
}
END_TEST

START_TEST(enomem_bound)
{
    ck_ok(ctx_var_set(vb, P(5), NULL));
    ck_ok(ctx_var_set(va, P(1), NULL));
    check_enomem_set(P(1));
    ck_assert_ptr_eq(get_val(va), P(1));
    ck_assert_ptr_eq(get_val(vb), P(5));
}
END_TEST

/* Values counted by retain and release; ops variables. */
enum { NVALS = 3 };
static int retains[NVALS], releases[NVALS];
static int vals[NVALS];

static int val_index(void *value)
{
    int i = (int)((int *)value - vals);
    ck_assert(i >= 0 && i < NVALS);
    return i;
}

static void count_retain(void *value) { retains[val_index(value)]++; }
static void count_release(void *value) { releases[val_index(value)]++; }

static ctx_var_t *new_ops_var(void)
{
    static const ctx_value_ops_t ops = {count_retain, count_release};
    ctx_var_t *v = NULL;
    ck_ok(ctx_var_create(&v, "ops", CTX_MISSING, &ops));
    return v;
}

static void assert_balanced(int i, int held)
{
    ck_assert_int_eq(retains[i] - releases[i], held);
}

START_TEST(value_ops_balanced)
{
    ctx_var_t *v = new_ops_var();
    ck_ok(ctx_var_set(v, &vals[0], NULL));
    CTX_WITH(v, &vals[1]) {
        ck_assert_ptr_eq(get_val(v), &vals[1]);
        ck_assert_int_ge(retains[1], 1);
        CTX_WITH(v, &vals[2]) ck_assert_ptr_eq(get_val(v), &vals[2]);
        assert_balanced(2, 0);
        ck_assert_int_ge(retains[2], 1);
    }
    ck_assert_ptr_eq(get_val(v), &vals[0]);
    assert_balanced(0, 1); /* iso's binding still holds it */
    assert_balanced(1, 0);
    assert_balanced(2, 0);
    ck_assert_int_ge(retains[1], 1);
    ctx_var_release(v);
}
END_TEST

START_TEST(value_ops_enomem)
{
    ctx_var_t *v = new_ops_var();
    int err = -1, ran = 0;
    ck_ok(ctx_var_set(v, &vals[0], NULL));
    ctx__fault_fail_after(0);
    CTX_WITH_STATUS(v, &vals[1], err) ran++;
    ctx__fault_fail_after(-1);
    ck_assert_int_eq(err, ENOMEM);
    ck_assert_int_eq(ran, 0);
    assert_balanced(0, 1);
    assert_balanced(1, 0);
    ck_assert_ptr_eq(get_val(v), &vals[0]);
    ctx_var_release(v);
}
END_TEST

/* Inside a run the block writes the entered context, and leaves it as it
 * found it. */
static void *with_in_run(void *arg UNUSED)
{
    void *seen = BAD;
    CTX_WITH(va, P(4)) {
        ck_ok(ctx_context_get(ca, va, &seen));
        ck_assert(!ctx_context_contains(iso, va));
    }
    ck_assert(!ctx_context_contains(ca, va));
    return seen;
}

START_TEST(inside_run)
{
    void *res = BAD;
    ck_ok(ctx_context_run(ca, with_in_run, NULL, &res));
    ck_assert_ptr_eq(res, P(4));
    ck_assert_uint_eq(ctx_context_len(ca), 0);
    assert_unbound(va);
}
END_TEST

static void *get_va_or_null(void *arg UNUSED)
{
    return ctx_var_get_or(va, NULL);
}

/* A run inside a block does not see the block's value (the run's context
 * is its own), but a copy taken in the block keeps it after the reset. */
START_TEST(run_and_copy_inside)
{
    ctx_context_t *snap = NULL;
    void *res = BAD;
    CTX_WITH(va, P(6)) {
        ck_ok(ctx_context_run(ca, get_va_or_null, NULL, &res));
        ck_ok(ctx_copy_context(&snap));
    }
    ck_assert_ptr_null(res);
    assert_unbound(va);
    ck_ok(ctx_context_run(snap, get_va_or_null, NULL, &res));
    ck_assert_ptr_eq(res, P(6));
    ctx_context_release(snap);
}
END_TEST

/* The documented exception: a block that leaves a context entered cannot
 * reset (the token belongs to the context it started in), so the binding
 * stays in that one.  Exit what you enter. */
START_TEST(entered_context_skips_reset)
{
    void *out = BAD;
    int ran = 0;
    CTX_WITH(va, P(8)) {
        ck_ok(ctx_context_enter(ca));
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    ck_assert_int_eq(ctx_var_get(va, &out), ENOENT); /* ca is current */
    ck_assert(ctx_context_contains(iso, va));
    ck_ok(ctx_context_exit(ca));
    ck_assert_ptr_eq(get_val(va), P(8));
}
END_TEST

static Suite *with_suite(void)
{
    Suite *s = suite_create("with");
    TCase *tc = tcase_create("scoped set");
    tcase_add_checked_fixture(tc, isolated_setup, isolated_teardown);
    tcase_add_test(tc, value_visible_then_unbound);
    tcase_add_test(tc, old_value_restored);
    tcase_add_test(tc, default_shows_again);
    tcase_add_test(tc, null_value);
    tcase_add_test(tc, set_inside_is_undone);
    tcase_add_test(tc, nested_same_var);
    tcase_add_test(tc, nested_different_vars);
    tcase_add_test(tc, break_leaves_block_only);
    tcase_add_test(tc, continue_leaves_block);
    tcase_add_test(tc, return_resets);
    tcase_add_test(tc, goto_out_resets);
    tcase_add_test(tc, status_zero_on_success);
    tcase_add_test(tc, missing_value_refused);
    tcase_add_test(tc, null_var_refused);
    tcase_add_test(tc, enomem_unbound);
    tcase_add_test(tc, enomem_bound);
    tcase_add_test(tc, value_ops_balanced);
    tcase_add_test(tc, value_ops_enomem);
    tcase_add_test(tc, inside_run);
    tcase_add_test(tc, run_and_copy_inside);
    tcase_add_test(tc, entered_context_skips_reset);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(with_suite)
