/*
 * test_inherit.c - runs the unmodified program tests/inherit_prog with and
 * without LD_PRELOAD=libctxvars-inherit.so and checks what its threads see.
 */
#include "config.h"

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CTX_SANITIZED
/* Runs inherit_prog, with `preload` in LD_PRELOAD if not NULL, and returns
 * its whole stdout (static buffer). */
static const char *run_prog(const char *preload)
{
    static char out[4096];
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        if (preload != NULL)
            setenv("LD_PRELOAD", preload, 1);
        else
            unsetenv("LD_PRELOAD");
        execl(TESTS_DIR "/inherit_prog", "inherit_prog", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fd[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "inherit_prog failed (status %d), output:\n%s", status, out);
    return out;
}

START_TEST(without_preload)
{
    ck_assert_str_eq(run_prog(NULL), "pthread_create: (unset)\n"
                                     "ctx_thread_create: bob\n"
                                     "main: bob\n");
}
END_TEST

START_TEST(with_preload)
{
    /* The plain thread gets a copy taken at the create ("alice", not the
     * later "bob"); no child change reaches main. */
    ck_assert_str_eq(run_prog(SHIM_PATH), "pthread_create: alice\n"
                                          "ctx_thread_create: bob\n"
                                          "main: bob\n");
}
END_TEST

static Suite *inherit_suite(void)
{
    Suite *s = suite_create("inherit");
    TCase *tc = tcase_create("preload");
    tcase_add_test(tc, without_preload);
    tcase_add_test(tc, with_preload);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(inherit_suite)
#else
/* A sanitizer runtime must come first in the library list, so preloading
 * anything else aborts the program: nothing to test in such a build. */
int main(void)
{
    puts("test_inherit: skipped in a sanitizer build");
    return 77;
}
#endif
