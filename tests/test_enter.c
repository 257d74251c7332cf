/*
 * test_enter.c - the scoped enter, CTX_ENTER and CTX_ENTER_STATUS.
 *
 * Python's `with ctx:` exits the context however the block is left.  So
 * every way out of a block (its end, break, continue, return, goto, nested
 * blocks) is taken here, and afterwards the test checks that the context
 * is really exited: iso is current again, the block's sets stayed in the
 * entered context, and the context can be entered again (by this thread
 * and by another).  Then the refusals (EBUSY from this thread and from
 * another, EINVAL, ENOMEM: the block must not run and nothing may change)
 * and the blocks that exit, or over-enter, on their own.
 *
 * Every test runs inside a fresh context of its own (iso).
 */
#include "config.h"

#include "internal.h"
#include "context_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

/* ctx is not entered anywhere: this thread cannot exit it, and it enters
 * (and exits) again. */
static void assert_free(ctx_context_t *ctx)
{
    ck_assert_int_eq(ctx_context_exit(ctx), EPERM);
    ck_ok(ctx_context_enter(ctx));
    ck_ok(ctx_context_exit(ctx));
}

/* iso is current again: a set lands there, and is taken back. */
static void assert_iso_current(void)
{
    ctx_token_t *t = NULL;
    ck_ok(ctx_var_set(vb, P(77), &t));
    ck_assert_ptr_eq(ctx_val(iso, vb), P(77));
    ck_ok(ctx_var_reset(vb, t));
    ctx_token_release(t);
    ck_assert(!ctx_context_contains(iso, vb));
}

START_TEST(block_runs_in_ctx)
{
    int ran = 0;
    ck_ok(ctx_var_set(va, P(1), NULL)); /* in iso */
    CTX_ENTER(ca) {
        /* ca is empty: iso's binding is not visible in it */
        ck_assert_ptr_eq(ctx_var_get_or(va, BAD), BAD);
        ck_ok(ctx_var_set(va, P(2), NULL));
        ck_assert_ptr_eq(get_val(va), P(2));
        ck_assert_int_eq(ctx_context_exit(iso), EPERM); /* not innermost */
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    ck_assert_ptr_eq(get_val(va), P(1));
    ck_assert_ptr_eq(ctx_val(ca, va), P(2)); /* the set stayed in ca */
    ck_assert_uint_eq(ctx_context_len(iso), 1);
    assert_free(ca);
    assert_iso_current();
}
END_TEST

START_TEST(status_zero_on_success)
{
    int err = -1, ran = 0;
    CTX_ENTER_STATUS(ca, err) {
        ck_assert_int_eq(err, 0);
        ck_ok(ctx_var_set(va, P(3), NULL));
        ran++;
    }
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(ran, 1);
    ck_assert_ptr_eq(ctx_val(ca, va), P(3));
    assert_free(ca);
}
END_TEST

START_TEST(nested)
{
    int ran = 0;
    CTX_ENTER(ca) {
        ck_ok(ctx_var_set(va, P(1), NULL));
        CTX_ENTER(cb) {
            ck_assert_ptr_eq(ctx_var_get_or(va, BAD), BAD);
            ck_ok(ctx_var_set(va, P(2), NULL));
            ck_assert_int_eq(ctx_context_exit(ca), EPERM);
            ran++;
        }
        ck_assert_ptr_eq(get_val(va), P(1)); /* ca is current again */
        ck_assert_int_eq(ctx_context_exit(cb), EPERM);
        ran++;
    }
    ck_assert_int_eq(ran, 2);
    ck_assert_ptr_eq(ctx_val(ca, va), P(1));
    ck_assert_ptr_eq(ctx_val(cb, va), P(2));
    ck_assert_uint_eq(ctx_context_len(iso), 0);
    assert_free(ca);
    assert_free(cb);
    assert_iso_current();
}
END_TEST

/* With CTX_WITH inside and out: each undoes its own. */
START_TEST(mixed_with_with)
{
    CTX_WITH(va, P(1)) {
        CTX_ENTER(ca) {
            CTX_WITH(va, P(2)) ck_assert_ptr_eq(get_val(va), P(2));
            ck_assert(!ctx_context_contains(ca, va));
        }
        ck_assert_ptr_eq(get_val(va), P(1));
    }
    ck_assert(!ctx_context_contains(iso, va));
    assert_free(ca);
}
END_TEST

/* A one-pass for loop: break and continue leave the block, not the loop
 * around it, and the rest of the iteration runs after the exit. */
START_TEST(break_leaves_block_only)
{
    int entered = 0, past_break = 0, iterations = 0;
    for (uintptr_t i = 0; i < 3; i++) {
        CTX_ENTER(ca) {
            entered++;
            ck_ok(ctx_var_set(va, P(i + 1), NULL));
            if (i == 1)
                break;
            past_break++;
        }
        ck_assert(!ctx_context_contains(iso, va));
        ck_assert_ptr_eq(ctx_val(ca, va), P(i + 1));
        assert_free(ca);
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
    for (uintptr_t i = 0; i < 3; i++) {
        CTX_ENTER(ca) {
            entered++;
            if (i != 2)
                continue;
            past_continue++;
        }
        assert_free(ca);
        assert_iso_current();
        iterations++;
    }
    ck_assert_int_eq(entered, 3);
    ck_assert_int_eq(past_continue, 1);
    ck_assert_int_eq(iterations, 3);
}
END_TEST

/* Returns from inside two nested blocks what it read there. */
static void *return_from_inside(void)
{
    CTX_ENTER(ca) {
        CTX_ENTER(cb) {
            ck_ok(ctx_var_set(vb, P(5), NULL));
            return get_val(vb);
        }
        ck_abort_msg("after a return");
    }
    ck_abort_msg("after a return");
    return NULL;
}

START_TEST(return_exits)
{
    ck_assert_ptr_eq(return_from_inside(), P(5));
    ck_assert_ptr_eq(ctx_val(cb, vb), P(5));
    assert_free(ca);
    assert_free(cb);
    assert_iso_current();
}
END_TEST

START_TEST(goto_out_exits)
{
    int entered = 0;
    for (int i = 0; i < 3; i++) {
        CTX_ENTER(ca) {
            CTX_ENTER(cb) {
                entered++;
                goto out;
            }
            ck_abort_msg("after a goto");
        }
        ck_abort_msg("after a goto");
    }
out:
    ck_assert_int_eq(entered, 1);
    assert_free(ca);
    assert_free(cb);
    assert_iso_current();
}
END_TEST

/* goto within the block, backwards, leaves nothing: the block still
 * exits once, at its end. */
START_TEST(goto_inside_block)
{
    int loops = 0;
    CTX_ENTER(ca) {
    again:
        if (++loops < 3)
            goto again;
        ck_assert_int_eq(ctx_context_exit(iso), EPERM);
    }
    ck_assert_int_eq(loops, 3);
    assert_free(ca);
}
END_TEST

/* Entering a context this thread has entered already: EBUSY, the inner
 * block does not run and the outer one is not disturbed. */
START_TEST(ebusy_recursive)
{
    int err = -1, ran = 0, inner = 0;
    CTX_ENTER(ca) {
        ck_ok(ctx_var_set(va, P(1), NULL));
        CTX_ENTER_STATUS(ca, err) inner++;
        ck_assert_int_eq(err, EBUSY);
        CTX_ENTER(ca) inner++;
        /* still in ca, which is still innermost */
        ck_assert_ptr_eq(get_val(va), P(1));
        ck_assert_int_eq(ctx_context_exit(iso), EPERM);
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    ck_assert_int_eq(inner, 0);
    /* and iso, entered below us, is refused too */
    err = -1;
    CTX_ENTER_STATUS(iso, err) inner++;
    ck_assert_int_eq(err, EBUSY);
    ck_assert_int_eq(inner, 0);
    assert_free(ca);
    assert_iso_current();
}
END_TEST

/* Another thread holds ca entered until told to go. */
static pthread_barrier_t held, go;

static void *hold_ca(void *arg UNUSED)
{
    int err = -1;
    CTX_ENTER_STATUS(ca, err) {
        ctx_var_set(va, P(9), NULL);
        pthread_barrier_wait(&held);
        pthread_barrier_wait(&go);
    }
    return P(err);
}

START_TEST(ebusy_other_thread)
{
    pthread_t t;
    void *res = BAD;
    int err = -1, ran = 0;

    ck_ok(pthread_barrier_init(&held, NULL, 2));
    ck_ok(pthread_barrier_init(&go, NULL, 2));
    ck_ok(pthread_create(&t, NULL, hold_ca, NULL));
    pthread_barrier_wait(&held);
    CTX_ENTER_STATUS(ca, err) ran++;
    ck_assert_int_eq(err, EBUSY);
    CTX_ENTER(ca) ran++;
    ck_assert_int_eq(ran, 0);
    ck_assert_int_eq(ctx_context_exit(ca), EPERM); /* not ours */
    assert_iso_current();
    pthread_barrier_wait(&go);
    ck_ok(pthread_join(t, &res));
    ck_assert_ptr_eq(res, P(0));
    /* the other thread's block exited ca: it is ours to enter now */
    CTX_ENTER_STATUS(ca, err) {
        ck_assert_ptr_eq(get_val(va), P(9));
        ran++;
    }
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(ran, 1);
    pthread_barrier_destroy(&held);
    pthread_barrier_destroy(&go);
}
END_TEST

START_TEST(null_refused)
{
    int err = -1, ran = 0;
    CTX_ENTER_STATUS(NULL, err) ran++;
    ck_assert_int_eq(err, EINVAL);
    CTX_ENTER(NULL) ran++;
    ck_assert_int_eq(ran, 0);
    assert_iso_current();
}
END_TEST

/* ENOMEM: the first enter on a fresh thread must create the thread's base
 * context; if that allocation fails the block does not run, and the next
 * try works. */
static void *enomem_first_use(void *arg UNUSED)
{
    int err = -1, ran = 0;
    ctx__fault_fail_after(0);
    CTX_ENTER_STATUS(ca, err) ran++;
    bool armed = ctx__fault_armed();
    ctx__fault_fail_after(-1);
    THR_CHECK(!armed);
    THR_CHECK(err == ENOMEM);
    THR_CHECK(ran == 0);
    THR_CHECK(ctx_context_exit(ca) == EPERM);
    CTX_ENTER_STATUS(ca, err) ran++;
    THR_CHECK(err == 0);
    THR_CHECK(ran == 1);
    return NULL;
}

START_TEST(enomem_refused)
{
    pthread_t t;
    atomic_store(&thr_fail_line, 0);
    ck_ok(pthread_create(&t, NULL, enomem_first_use, NULL));
    ck_ok(pthread_join(t, NULL));
    ck_threads_ok();
    assert_free(ca);
}
END_TEST

/* The block exits ctx itself: the exit at the end is skipped, so iso (the
 * context below) is not exited in its stead. */
START_TEST(block_exits_itself)
{
    int ran = 0;
    CTX_ENTER(ca) {
        ck_ok(ctx_context_exit(ca));
        assert_iso_current();
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    assert_iso_current();
    assert_free(ca);
}
END_TEST

/* ... and even drops the last reference: the block's own reference keeps
 * ctx alive for the skipped exit (ASan and valgrind see the difference). */
START_TEST(block_exits_and_releases)
{
    ctx_context_t *c = NULL;
    int ran = 0;
    ck_ok(ctx_context_new(&c));
    CTX_ENTER(c) {
        ck_ok(ctx_context_exit(c));
        ctx_context_release(c);
        ran++;
    }
    ck_assert_int_eq(ran, 1);
    assert_iso_current();
}
END_TEST

/* The same, and a new context entered afterwards: without the block's
 * reference the new one could reuse the freed one's address, and the exit
 * at the end would take it for ctx and exit it. */
START_TEST(block_exits_releases_enters_new)
{
    ctx_context_t *c = NULL, *d = NULL;
    ck_ok(ctx_context_new(&c));
    CTX_ENTER(c) {
        ck_ok(ctx_context_exit(c));
        ctx_context_release(c);
        ck_ok(ctx_context_new(&d));
        ck_ok(ctx_context_enter(d));
    }
    /* d is still entered and current: the block exited nothing more */
    ck_ok(ctx_var_set(va, P(6), NULL));
    ck_assert_ptr_eq(ctx_val(d, va), P(6));
    ck_assert(!ctx_context_contains(iso, va));
    ck_ok(ctx_context_exit(d));
    ctx_context_release(d);
    assert_iso_current();
}
END_TEST

/* Releasing one's reference inside the block is fine: entered, ctx lives
 * on until the block exits it. */
START_TEST(block_releases_only)
{
    ctx_context_t *c = NULL;
    ck_ok(ctx_context_new(&c));
    CTX_ENTER(c) {
        ctx_context_release(c);
        ck_ok(ctx_var_set(va, P(1), NULL));
        ck_assert_ptr_eq(get_val(va), P(1));
    }
    assert_iso_current();
    ck_assert(!ctx_context_contains(iso, va));
}
END_TEST

/* The block exits ctx and enters it again: it is innermost at the end, so
 * the block exits it. */
START_TEST(block_reenters)
{
    CTX_ENTER(ca) {
        ck_ok(ctx_context_exit(ca));
        ck_ok(ctx_context_enter(ca));
    }
    assert_free(ca);
    assert_iso_current();
}
END_TEST

/* The block leaves cb entered above ca: ca is not innermost, so the exit
 * is skipped and both stay entered (the documented rule: exit what you
 * enter).  Exiting them by hand, innermost first, works. */
START_TEST(block_leaves_inner_entered)
{
    CTX_ENTER(ca) ck_ok(ctx_context_enter(cb));
    ck_assert_int_eq(ctx_context_exit(ca), EPERM);
    ck_ok(ctx_var_set(va, P(4), NULL));
    ck_assert_ptr_eq(ctx_val(cb, va), P(4));
    ck_ok(ctx_context_exit(cb));
    ck_ok(ctx_context_exit(ca));
    assert_free(ca);
    assert_free(cb);
    assert_iso_current();
}
END_TEST

/* Two blocks on one line (one __COUNTER__ each) do not collide. */
#define TWICE(c1, c2) CTX_ENTER(c1) CTX_ENTER(c2) ran++
START_TEST(two_on_one_line)
{
    int ran = 0;
    TWICE(ca, cb);
    ck_assert_int_eq(ran, 1);
    assert_free(ca);
    assert_free(cb);
}
END_TEST

/* The callback style the macro is for: many short entries into many
 * contexts, each with its own state. */
START_TEST(many_contexts_interleaved)
{
    enum { N = 64, ROUNDS = 50 };
    ctx_context_t *cs[N];
    for (int i = 0; i < N; i++)
        ck_ok(ctx_context_new(&cs[i]));
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < N; i++)
            CTX_ENTER(cs[i]) {
                uintptr_t n = (uintptr_t)ctx_var_get_or(va, P(0));
                ck_assert_uint_eq(n, r == 0 ? 0 : (uintptr_t)r * 1000 + i);
                ck_ok(ctx_var_set(va, P((uintptr_t)(r + 1) * 1000 + i),
                                  NULL));
            }
    for (int i = 0; i < N; i++) {
        ck_assert_ptr_eq(ctx_val(cs[i], va), P(ROUNDS * 1000 + i));
        assert_free(cs[i]);
        ctx_context_release(cs[i]);
    }
    ck_assert(!ctx_context_contains(iso, va));
}
END_TEST

static Suite *enter_suite(void)
{
    Suite *s = suite_create("enter");
    TCase *tc = tcase_create("enter");

    tcase_add_checked_fixture(tc, isolated_setup, isolated_teardown);
    tcase_add_test(tc, block_runs_in_ctx);
    tcase_add_test(tc, status_zero_on_success);
    tcase_add_test(tc, nested);
    tcase_add_test(tc, mixed_with_with);
    tcase_add_test(tc, break_leaves_block_only);
    tcase_add_test(tc, continue_leaves_block);
    tcase_add_test(tc, return_exits);
    tcase_add_test(tc, goto_out_exits);
    tcase_add_test(tc, goto_inside_block);
    tcase_add_test(tc, ebusy_recursive);
    tcase_add_test(tc, ebusy_other_thread);
    tcase_add_test(tc, null_refused);
    tcase_add_test(tc, enomem_refused);
    tcase_add_test(tc, block_exits_itself);
    tcase_add_test(tc, block_exits_and_releases);
    tcase_add_test(tc, block_exits_releases_enters_new);
    tcase_add_test(tc, block_releases_only);
    tcase_add_test(tc, block_reenters);
    tcase_add_test(tc, block_leaves_inner_entered);
    tcase_add_test(tc, two_on_one_line);
    tcase_add_test(tc, many_contexts_interleaved);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(enter_suite)
