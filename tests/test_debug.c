/*
 * test_debug.c - misuse C cannot prevent (double release, use after
 * release) is caught by a --enable-debug build: the library aborts with a
 * message naming the object instead of corrupting memory.  Each test
 * expects SIGABRT.  Without CTX_DEBUG there is nothing to test (exit 77:
 * skipped); CI runs it in the ASan build, which has debug checks on.
 *
 * Released contexts and tokens stay in the thread's spare slot (once the
 * thread has used the library: see use_library), so the second call reads
 * their poisoned magic number, not freed memory, and ASan has nothing to
 * say before the library's own check fires.
 */
#include "config.h"

#include "testutil.h"

#include <ctxvars.h>
#include <signal.h>
#include <stdio.h>

#ifdef CTX_DEBUG
static ctx_var_t *v;

/* A set gives the thread its state, and with it a spare slot. */
static void use_library(void)
{
    ck_ok(ctx_var_create(&v, "v", CTX_MISSING, NULL));
    ck_ok(ctx_var_set(v, NULL, NULL));
}

START_TEST(context_double_release)
{
    ctx_context_t *c;
    ck_ok(ctx_context_new(&c));
    ctx_context_release(c);
    ctx_context_release(c); /* aborts */
}
END_TEST

START_TEST(context_use_after_release)
{
    ctx_context_t *c;
    ck_ok(ctx_context_new(&c));
    ctx_context_release(c);
    (void)ctx_context_len(c); /* aborts */
}
END_TEST

START_TEST(token_double_release)
{
    ctx_token_t *t;
    ck_ok(ctx_var_set(v, NULL, &t));
    ctx_token_release(t);
    ctx_token_release(t); /* aborts */
}
END_TEST

START_TEST(reset_with_released_token)
{
    ctx_token_t *t;
    ck_ok(ctx_var_set(v, NULL, &t));
    ctx_token_release(t);
    (void)ctx_var_reset(v, t); /* aborts */
}
END_TEST

/* The checks must not fire on correct use. */
START_TEST(correct_use_is_quiet)
{
    ctx_context_t *c, *d;
    ck_ok(ctx_context_new(&c));
    ck_ok(ctx_context_copy(c, &d));
    ctx_context_release(c);
    ctx_context_release(d);
    ctx_var_release(v);
}
END_TEST

static Suite *debug_suite(void)
{
    Suite *s = suite_create("debug");
    TCase *tc = tcase_create("misuse");
    tcase_add_checked_fixture(tc, use_library, NULL);
    tcase_add_test_raise_signal(tc, context_double_release, SIGABRT);
    tcase_add_test_raise_signal(tc, context_use_after_release, SIGABRT);
    tcase_add_test_raise_signal(tc, token_double_release, SIGABRT);
    tcase_add_test_raise_signal(tc, reset_with_released_token, SIGABRT);
    tcase_add_test(tc, correct_use_is_quiet);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(debug_suite)
#else
int main(void)
{
    puts("test_debug: skipped (configure --enable-debug to run it)");
    return 77;
}
#endif
