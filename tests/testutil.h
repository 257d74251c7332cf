/* testutil.h - small helpers shared by the Check suites. */
#ifndef CTXVARS_TESTUTIL_H
#define CTXVARS_TESTUTIL_H

#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Asserts that an int-returning library call succeeded (returned 0). */
#define ck_ok(expr) ck_assert_int_eq((expr), 0)

/* Check's assertions must run on the test's own thread.  Other threads
 * record the line of their first failed check with THR_CHECK, and the
 * test thread asserts ck_threads_ok() after joining them.  Reset
 * thr_fail_line to 0 in each test's setup. */
static __attribute__((unused)) atomic_int thr_fail_line;
#define THR_CHECK(cond)                                                      \
    do {                                                                     \
        int zero_ = 0;                                                       \
        if (!(cond))                                                         \
            atomic_compare_exchange_strong(&thr_fail_line, &zero_, __LINE__);\
    } while (0)
#define ck_threads_ok()                                                      \
    ck_assert_msg(atomic_load(&thr_fail_line) == 0,                          \
                  "check in a thread failed at line %d",                     \
                  atomic_load(&thr_fail_line))

/* One main() per suite file: runs every test case, forked per test so a
 * crash fails that test alone, and exits non-zero if anything failed. */
#define CTX_TEST_MAIN(make_suite)                                            \
    int main(void)                                                           \
    {                                                                        \
        SRunner *sr_ = srunner_create(make_suite());                         \
        srunner_run_all(sr_, CK_NORMAL);                                     \
        int failed_ = srunner_ntests_failed(sr_);                            \
        srunner_free(sr_);                                                   \
        return failed_ == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                   \
    }

#endif
