/*
 * test_var.c - variables and tokens.
 *
 * The getset tests of CPython's Lib/test/test_context.py restated for the
 * C API (test_context_getset_N -> getset_N), then what C adds: reset's
 * error order, NULL as a value, the per-thread get cache, the balance of
 * value ops retain/release, NULL arguments and allocation failure.
 * Every test runs inside a fresh context of its own, as Python's
 * @isolated_context arranges, so none depends on what others left behind
 * (in the thread's base, when Check does not fork).
 */
#include "config.h"

#include "internal.h"
#include "context_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* The default of vdef is 42 here, as in CPython's tests. */
static void setup(void) { isolated_setup_def(P(42)); }

static void assert_unbound(const ctx_var_t *v)
{
    void *out = BAD;
    ck_assert_int_eq(ctx_var_get(v, &out), ENOENT);
    ck_assert_ptr_eq(out, BAD);
}

static size_t current_len(void)
{
    ctx_context_t *c = NULL;
    ck_ok(ctx_copy_context(&c));
    size_t n = ctx_context_len(c);
    ctx_context_release(c);
    return n;
}

static int collect(ctx_var_t *var, void *value, void *arg)
{
    void **seen = arg; /* {count, var, value} */
    seen[0] = P((uintptr_t)seen[0] + 1);
    seen[1] = var;
    seen[2] = value;
    return 0;
}

START_TEST(var_new_name)
{
    char buf[] = "aaa";
    ctx_var_t *v = NULL, *anon = new_var(NULL, CTX_MISSING);
    ck_ok(ctx_var_create(&v, buf, CTX_MISSING, NULL));
    buf[0] = 'z'; /* the name must have been copied */
    ck_assert_str_eq(ctx_var_name(v), "aaa");
    ck_assert_str_eq(ctx_var_name(anon), "");
    /* Same name, distinct variables. */
    ctx_var_t *twin = new_var("aaa", CTX_MISSING);
    ck_ok(ctx_var_set(v, P(1), NULL));
    assert_unbound(twin);
    ck_assert_ptr_eq(ctx_var_retain(twin), twin);
    ctx_var_release(twin);
    ck_assert_str_eq(ctx_var_name(twin), "aaa");
    ctx_var_release(twin);
    ctx_var_release(anon);
    ctx_var_release(v);
}
END_TEST

START_TEST(getset_1)
{
    ctx_token_t *t0 = NULL, *t = NULL;
    ctx_context_t *ctx1 = NULL, *ctx2 = NULL;
    assert_unbound(va);
    ck_assert_ptr_null(ctx_var_get_or(va, NULL));
    ck_ok(ctx_var_set(va, P(42), &t0));
    ck_assert_ptr_eq(get_val(va), P(42));
    ck_assert_ptr_eq(ctx_var_get_or(va, NULL), P(42));
    ck_assert_ptr_eq(ctx_token_old_value(t0), CTX_MISSING);
    ck_assert_ptr_eq(ctx_token_var(t0), va);
    ck_assert(!ctx_token_used(t0));

    ck_ok(ctx_var_set(va, P(0x5a), &t));
    ck_assert_ptr_eq(get_val(va), P(0x5a));
    ck_assert_ptr_eq(ctx_token_old_value(t), P(42));
    ck_ok(ctx_var_reset(va, t));
    ck_assert(ctx_token_used(t));
    ck_assert_ptr_eq(ctx_token_var(t), va); /* still answers once used */
    ck_assert_ptr_eq(get_val(va), P(42));
    ck_assert_ptr_eq(ctx_var_get_or(va, NULL), P(42));

    ck_ok(ctx_var_set(va, P(0x5b), NULL));
    ck_assert_int_eq(ctx_var_reset(va, t), EALREADY);
    ck_assert_ptr_eq(get_val(va), P(0x5b));
    ck_ok(ctx_copy_context(&ctx1));
    ck_assert(ctx_context_contains(ctx1, va));

    ck_ok(ctx_var_reset(va, t0));
    ck_assert_int_eq(ctx_var_reset(va, t0), EALREADY);
    ck_assert_ptr_null(ctx_var_get_or(va, NULL));
    assert_unbound(va);

    /* The copy is a snapshot: the reset did not touch it. */
    void *seen[3] = {P(0), NULL, NULL};
    ck_assert_ptr_eq(ctx_val(ctx1, va), P(0x5b));
    ck_assert_uint_eq(ctx_context_len(ctx1), 1);
    ck_ok(ctx_context_foreach(ctx1, collect, seen));
    ck_assert_ptr_eq(seen[0], P(1));
    ck_assert_ptr_eq(seen[1], va);
    ck_assert_ptr_eq(seen[2], P(0x5b));

    void *v = BAD;
    ck_ok(ctx_copy_context(&ctx2));
    ck_assert(!ctx_context_contains(ctx2, va));
    ck_assert_int_eq(ctx_context_get(ctx2, va, &v), ENOENT);
    ck_assert_ptr_eq(v, BAD);
    ck_assert_uint_eq(ctx_context_len(ctx2), 0);
    seen[0] = P(0);
    ck_ok(ctx_context_foreach(ctx2, collect, seen));
    ck_assert_ptr_eq(seen[0], P(0));
    ctx_context_release(ctx2);
    ctx_context_release(ctx1);
    ctx_token_release(t);
    ctx_token_release(t0);
}
END_TEST

START_TEST(getset_2)
{
    ctx_token_t *t1 = NULL;
    ck_ok(ctx_var_set(va, P(42), &t1));
    ck_assert_int_eq(ctx_var_reset(vb, t1), EINVAL);
    /* The refused reset changed nothing. */
    ck_assert(!ctx_token_used(t1));
    ck_assert_ptr_eq(get_val(va), P(42));
    assert_unbound(vb);
    ck_ok(ctx_var_reset(va, t1));
    assert_unbound(va);
    ctx_token_release(t1);
}
END_TEST

static void *getset_3_fun(void *arg UNUSED)
{
    void *v = BAD;
    ctx_token_t *t = NULL;
    ck_assert_ptr_eq(get_val(vdef), P(42));
    ck_assert_int_eq(ctx_context_get(ca, vdef, &v), ENOENT);
    ck_assert_ptr_eq(v, BAD);
    ck_assert(!ctx_context_contains(ca, vdef));
    ck_assert_uint_eq(ctx_context_len(ca), 0);

    ck_ok(ctx_var_set(vdef, P(1), &t));
    ck_assert_uint_eq(ctx_context_len(ca), 1);
    ck_assert_ptr_eq(ctx_val(ca, vdef), P(1));

    ck_ok(ctx_var_reset(vdef, t));
    ck_assert_uint_eq(ctx_context_len(ca), 0);
    ck_assert(!ctx_context_contains(ca, vdef));
    ck_assert_int_eq(ctx_context_get(ca, vdef, &v), ENOENT);
    ck_assert_ptr_eq(get_val(vdef), P(42));
    ctx_token_release(t);
    return NULL;
}

START_TEST(getset_3) { run_in(ca, getset_3_fun, NULL); }
END_TEST

static void *set_1_token(void *arg)
{
    ctx_token_t *t = NULL;
    ck_ok(ctx_var_set(arg, P(1), &t));
    return t;
}

static void *reset_token(void *arg)
{
    ctx_token_t *t = arg;
    return P(ctx_var_reset(ctx_token_var(t), t));
}

START_TEST(getset_4)
{
    ctx_token_t *tok = run_in(ca, set_1_token, vdef);
    ck_assert_int_eq(ctx_var_reset(vdef, tok), EINVAL);
    ck_assert(!ctx_token_used(tok));
    /* Back in the context that made it, the token works. */
    ck_assert_ptr_eq(run_in(ca, reset_token, tok), P(0));
    ck_assert(!ctx_context_contains(ca, vdef));
    ctx_token_release(tok);
}
END_TEST

static void *getset_5_fun(void *arg UNUSED)
{
    ck_ok(ctx_var_set(vdef, P(0x11), NULL));
    ck_assert_ptr_eq(get_val(vdef), P(0x11));
    return NULL;
}

START_TEST(getset_5)
{
    ctx_context_t *cp = NULL;
    ck_ok(ctx_var_set(vdef, P(0x10), NULL));
    ck_ok(ctx_copy_context(&cp));
    run_in(cp, getset_5_fun, NULL);
    ck_assert_ptr_eq(get_val(vdef), P(0x10));
    ctx_context_release(cp);
}
END_TEST

START_TEST(token_keeps_var_alive)
{
    ctx_var_t *v = new_var("kept", CTX_MISSING);
    ctx_token_t *t = NULL;
    ck_ok(ctx_var_set(v, P(1), &t));
    ctx_var_release(v);
    v = ctx_token_var(t);
    ck_assert_str_eq(ctx_var_name(v), "kept");
    ck_ok(ctx_var_reset(v, t));
    assert_unbound(v);
    ctx_token_release(t);
}
END_TEST

/* CPython checks "used" first, then the variable, then the context. */
START_TEST(reset_error_order)
{
    ctx_token_t *used = NULL, *foreign = run_in(ca, set_1_token, va);
    ck_ok(ctx_var_set(va, P(2), &used));
    ck_ok(ctx_var_reset(va, used));
    ck_assert_int_eq(ctx_var_reset(vb, used), EALREADY);
    ck_assert_int_eq(ctx_var_reset(vb, foreign), EINVAL);
    ck_assert_int_eq(ctx_var_reset(va, foreign), EINVAL);
    ck_assert_ptr_eq(run_in(ca, reset_token, foreign), P(0));
    ck_assert_int_eq(ctx_var_reset(va, foreign), EALREADY);
    ctx_token_release(foreign);
    ctx_token_release(used);
}
END_TEST

/* Contexts made after the token's own was released, some perhaps in its
 * memory, must never be taken for it. */
START_TEST(reset_other_context_same_address)
{
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    ctx_token_t *tok = run_in(c, set_1_token, va);
    ctx_context_release(c);
    for (int i = 0; i < 32; i++) {
        ck_ok(ctx_context_new(&c));
        ck_assert_ptr_eq(run_in(c, reset_token, tok), P(EINVAL));
        ctx_context_release(c);
    }
    ck_assert(!ctx_token_used(tok));
    ctx_token_release(tok);
}
END_TEST

/* A token works only while the context that made it is the current one. */
START_TEST(reset_token_inside_other_run)
{
    ctx_token_t *tok = NULL;
    ck_ok(ctx_var_set(va, P(1), &tok));
    ck_assert_ptr_eq(run_in(ca, reset_token, tok), P(EINVAL));
    ck_ok(ctx_context_enter(ca));
    ck_assert_int_eq(ctx_var_reset(va, tok), EINVAL);
    ck_ok(ctx_context_exit(ca));
    ck_ok(ctx_var_reset(va, tok));
    assert_unbound(va);
    ctx_token_release(tok);
}
END_TEST

START_TEST(reset_restores)
{
    ctx_token_t *t1 = NULL, *t2 = NULL;
    ck_ok(ctx_var_set(vb, P(7), NULL));
    ck_ok(ctx_var_set(vdef, P(1), &t1));
    ck_ok(ctx_var_set(vdef, P(2), &t2));
    ck_assert_ptr_eq(ctx_token_old_value(t2), P(1));
    ck_assert_uint_eq(current_len(), 2);
    /* Out of order, as Python allows: t1 removes the binding... */
    ck_ok(ctx_var_reset(vdef, t1));
    ck_assert_uint_eq(current_len(), 1);
    ck_assert_ptr_eq(get_val(vdef), P(42));
    /* ... and t2 puts back what it saw. */
    ck_ok(ctx_var_reset(vdef, t2));
    ck_assert_ptr_eq(ctx_var_get_or(vdef, NULL), P(1));
    ck_assert_uint_eq(current_len(), 2);
    ck_assert_ptr_eq(get_val(vb), P(7));
    ctx_token_release(t2);
    ctx_token_release(t1);
}
END_TEST

START_TEST(get_semantics)
{
    ctx_var_t *nulldef = new_var("z", NULL);
    /* get_or never consults the default; get does. */
    ck_assert_ptr_eq(get_val(vdef), P(42));
    ck_assert_ptr_eq(ctx_var_get_or(vdef, P(5)), P(5));
    ck_assert_ptr_null(get_val(nulldef));
    ck_assert_ptr_eq(ctx_var_get_or(nulldef, P(5)), P(5));
    ck_assert_ptr_eq(ctx_var_get_or(va, P(5)), P(5));
    /* NULL is a value like any other. */
    ck_ok(ctx_var_set(va, NULL, NULL));
    ck_assert_ptr_null(get_val(va));
    ck_assert_ptr_null(ctx_var_get_or(va, P(5)));
    /* CTX_MISSING is refused and changes nothing. */
    ctx_token_t *t = BAD;
    ck_ok(ctx_var_set(vdef, P(10), NULL));
    ck_assert_int_eq(ctx_var_set(vdef, CTX_MISSING, &t), EINVAL);
    ck_assert_ptr_eq(t, BAD);
    ck_assert_ptr_eq(get_val(vdef), P(10));
    ctx_var_release(nulldef);
}
END_TEST

static void *cache_fun(void *arg)
{
    ck_assert_ptr_eq(ctx_var_get_or(arg, P(0)), P(0));
    ck_ok(ctx_var_set(arg, P(2), NULL));
    ck_assert_ptr_eq(ctx_var_get_or(arg, P(0)), P(2));
    return NULL;
}

/* get_or's per-thread cache must follow every change of what it sees. */
START_TEST(get_cache_follows_changes)
{
    ck_ok(ctx_var_set(va, P(1), NULL));
    ck_assert_ptr_eq(ctx_var_get_or(va, P(0)), P(1));
    run_in(ca, cache_fun, va);
    ck_assert_ptr_eq(ctx_var_get_or(va, P(0)), P(1));
    ck_ok(ctx_context_enter(ca));
    ck_assert_ptr_eq(ctx_var_get_or(va, P(0)), P(2));
    ck_ok(ctx_context_exit(ca));
    ck_ok(ctx_var_set(va, P(3), NULL));
    ck_assert_ptr_eq(ctx_var_get_or(va, P(0)), P(3));
    /* Fresh variables, some perhaps in a freed one's memory, never hit
     * another variable's cached entry. */
    ck_ok(ctx_context_enter(ca));
    for (int i = 0; i < 8; i++) {
        ctx_var_t *v = new_var("fresh", CTX_MISSING);
        ck_assert_ptr_eq(ctx_var_get_or(v, P(0)), P(0));
        ctx_var_release(v);
    }
    ck_ok(ctx_context_exit(ca));
}
END_TEST

START_TEST(var_null_args)
{
    ctx_token_t *t = BAD;
    void *v = BAD;
    ck_assert_int_eq(ctx_var_create(NULL, "x", CTX_MISSING, NULL), EINVAL);
    ctx_var_release(NULL);
    ck_assert_ptr_null(ctx_var_retain(NULL));
    ck_assert_ptr_null(ctx_var_name(NULL));
    ck_assert_int_eq(ctx_var_get(NULL, &v), EINVAL);
    ck_assert_int_eq(ctx_var_get(va, NULL), EINVAL);
    ck_assert_ptr_eq(v, BAD);
    ck_assert_ptr_eq(ctx_var_get_or(NULL, P(4)), P(4));
    ck_assert_int_eq(ctx_var_set(NULL, P(1), &t), EINVAL);
    ck_assert_ptr_eq(t, BAD);
    ck_ok(ctx_var_set(va, P(1), &t));
    ck_assert_int_eq(ctx_var_reset(NULL, t), EINVAL);
    ck_assert_int_eq(ctx_var_reset(va, NULL), EINVAL);
    ck_assert(!ctx_token_used(t));
    ck_assert_ptr_null(ctx_token_var(NULL));
    ck_assert_ptr_eq(ctx_token_old_value(NULL), CTX_MISSING);
    ck_assert(!ctx_token_used(NULL));
    ctx_token_release(NULL);
    ctx_token_release(t);
}
END_TEST

/* ------------------------------------------------------------------
 * Value ops: each value is a counter; a release must match an earlier
 * retain of the same value, and in the end every retain is released.
 * ---------------------------------------------------------------- */
struct counter {
    atomic_int retains, releases, live;
};

enum { NVALS = 8 };
static struct counter vals[NVALS + 1]; /* the last one stands for NULL */
static atomic_int bad_releases;

static struct counter *counter_of(void *value)
{
    return value == NULL ? &vals[NVALS] : value;
}

static void ops_retain(void *value)
{
    struct counter *c = counter_of(value);
    atomic_fetch_add(&c->retains, 1);
    atomic_fetch_add(&c->live, 1);
}

static void ops_release(void *value)
{
    struct counter *c = counter_of(value);
    if (atomic_fetch_sub(&c->live, 1) <= 0)
        atomic_fetch_add(&bad_releases, 1);
    atomic_fetch_add(&c->releases, 1);
}

static ctx_var_t *new_counted_var(void *def)
{
    static const ctx_value_ops_t ops = {ops_retain, ops_release};
    ctx_var_t *v = NULL;
    ck_ok(ctx_var_create(&v, "counted", def, &ops));
    return v;
}

static void *set_4_then_5(void *arg)
{
    ctx_token_t *t = NULL;
    ck_ok(ctx_var_set(arg, &vals[4], &t));
    ck_ok(ctx_var_set(arg, &vals[5], NULL));
    ctx_token_release(t);
    return NULL;
}

/* Runs on a thread of its own, so that its base context goes too; the
 * test's thread only waits, so Check's fork mode reports its failures. */
static void *ops_workload(void *arg UNUSED)
{
    ctx_var_t *v = new_counted_var(&vals[0]);
    ctx_token_t *t1 = NULL, *t2 = NULL, *t3 = NULL;
    ctx_context_t *c1 = NULL, *c2 = NULL, *c3 = NULL;
    ck_ok(ctx_context_new(&c2));
    ck_ok(ctx_var_set(v, &vals[1], NULL));
    ck_ok(ctx_var_set(v, &vals[2], &t1));
    ck_ok(ctx_copy_context(&c1));
    ck_ok(ctx_var_set(v, &vals[3], &t2));
    ck_ok(ctx_var_set(v, NULL, &t3));
    ck_ok(ctx_var_reset(v, t3));
    ck_ok(ctx_var_reset(v, t1)); /* t2 is dropped unused */
    ctx_token_release(t3);
    ctx_token_release(t2);
    ctx_token_release(t1);

    run_in(c2, set_4_then_5, v);
    ck_ok(ctx_context_copy(c2, &c3));
    ctx_context_release(c2);
    ck_ok(ctx_context_enter(c3));
    ck_ok(ctx_var_set(v, &vals[6], NULL));
    ck_assert_ptr_eq(get_val(v), &vals[6]);
    ck_ok(ctx_context_exit(c3));
    ctx_context_release(c3);
    ctx_context_release(c1);
    ctx_var_release(v);
    /* The base still binds v; the thread's teardown lets it go. */
    ck_assert_int_ge(atomic_load(&vals[1].live), 1);
    return NULL;
}

START_TEST(value_ops_balance)
{
    pthread_t th;
    ck_ok(pthread_create(&th, NULL, ops_workload, NULL));
    ck_ok(pthread_join(th, NULL));
    ck_assert_int_eq(atomic_load(&bad_releases), 0);
    for (int i = 0; i <= NVALS; i++) {
        int got = atomic_load(&vals[i].retains);
        ck_assert_msg(got == atomic_load(&vals[i].releases),
                      "value %d: %d retains, %d releases", i, got,
                      atomic_load(&vals[i].releases));
        ck_assert_msg(got >= 1 || i == 7, "value %d never retained", i);
    }
}
END_TEST

/* The default lives as long as the variable, which lives as long as any
 * binding of it. */
START_TEST(value_ops_default_lifetime)
{
    ctx_var_t *v = new_counted_var(&vals[0]);
    ck_assert_int_ge(atomic_load(&vals[0].live), 1);
    run_in(ca, set_4_then_5, v);
    ctx_var_release(v);
    ck_assert_int_ge(atomic_load(&vals[0].live), 1);
    ck_assert_int_ge(atomic_load(&vals[5].live), 1);
    ctx_context_release(ca);
    ca = NULL;
    for (int i = 0; i <= NVALS; i++)
        ck_assert_int_eq(atomic_load(&vals[i].live), 0);
    ck_assert_int_eq(atomic_load(&bad_releases), 0);
}
END_TEST

/* ------------------------------------------------------------------
 * Allocation failure: every failing step must leave state unchanged.
 * ---------------------------------------------------------------- */
START_TEST(set_enomem_keeps_binding)
{
    ctx_context_t *snap = NULL;
    int failures = 0;
    ck_ok(ctx_var_set(va, P(1), NULL));
    ck_ok(ctx_copy_context(&snap)); /* shares the trie: set must copy */
    for (long k = 0;; k++) {
        ctx_token_t *t = BAD;
        ctx__fault_fail_after(k);
        int rc = ctx_var_set(va, P(2), &t);
        ctx__fault_fail_after(-1);
        if (rc == 0) {
            ctx_token_release(t);
            break;
        }
        ck_assert_int_eq(rc, ENOMEM);
        ck_assert_ptr_eq(t, BAD);
        ck_assert_ptr_eq(get_val(va), P(1));
        failures++;
    }
    ck_assert_int_ge(failures, 1); /* the token at least is allocated */
    ck_assert_ptr_eq(get_val(va), P(2));
    ck_assert_ptr_eq(ctx_val(snap, va), P(1));
    ctx_context_release(snap);
}
END_TEST

START_TEST(reset_enomem_keeps_token)
{
    ctx_token_t *t = NULL;
    ctx_context_t *snap = NULL;
    ck_ok(ctx_var_set(vb, P(5), NULL));
    ck_ok(ctx_var_set(va, P(1), &t));
    ck_ok(ctx_copy_context(&snap));
    for (long k = 0;; k++) {
        ctx__fault_fail_after(k);
        int rc = ctx_var_reset(va, t);
        ctx__fault_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, ENOMEM);
        ck_assert(!ctx_token_used(t));
        ck_assert_ptr_eq(get_val(va), P(1));
    }
    assert_unbound(va);
    ck_assert_ptr_eq(get_val(vb), P(5));
    ck_assert(ctx_context_contains(snap, va));
    ctx_context_release(snap);
    ctx_token_release(t);
}
END_TEST

static Suite *var_suite(void)
{
    Suite *s = suite_create("var");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, isolated_teardown);
    tcase_add_test(tc, var_new_name);
    tcase_add_test(tc, getset_1);
    tcase_add_test(tc, getset_2);
    tcase_add_test(tc, getset_3);
    tcase_add_test(tc, getset_4);
    tcase_add_test(tc, getset_5);
    tcase_add_test(tc, token_keeps_var_alive);
    tcase_add_test(tc, reset_error_order);
    tcase_add_test(tc, reset_other_context_same_address);
    tcase_add_test(tc, reset_token_inside_other_run);
    tcase_add_test(tc, reset_restores);
    tcase_add_test(tc, get_semantics);
    tcase_add_test(tc, get_cache_follows_changes);
    tcase_add_test(tc, var_null_args);
    tcase_add_test(tc, value_ops_balance);
    tcase_add_test(tc, value_ops_default_lifetime);
    tcase_add_test(tc, set_enomem_keeps_binding);
    tcase_add_test(tc, reset_enomem_keeps_token);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(var_suite)
