/* testutil.h - small helpers shared by the Check suites. */
#ifndef CTXVARS_TESTUTIL_H
#define CTXVARS_TESTUTIL_H

#include <check.h>
#include <stdlib.h>

/* Asserts that an int-returning library call succeeded (returned 0). */
#define ck_ok(expr) ck_assert_int_eq((expr), 0)

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
