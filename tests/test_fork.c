/*
 * test_fork.c - fork() from a program whose other threads have contexts
 * entered and whose pool is busy: the child, where those threads do not
 * exist, can still enter those contexts and use the library (new pools,
 * new threads).  The parent is undisturbed.
 */
#include "config.h"

#include "testutil.h"

#include <ctxvars.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static ctx_var_t *v;
static ctx_context_t *held;       /* entered by `holder` across the fork */
static pthread_barrier_t entered; /* holder (or the job) is inside */
static pthread_barrier_t release; /* the parent is done forking */

static void *hold(void *unused)
{
    (void)unused;
    ctx_var_set(v, "set-in-held", NULL);
    pthread_barrier_wait(&entered);
    pthread_barrier_wait(&release);
    return NULL;
}

static void *holder(void *unused)
{
    return (void *)(long)ctx_context_run(held, hold, unused, NULL);
}

static void *read_v(void *unused)
{
    (void)unused;
    return ctx_var_get_or(v, "unset");
}

/* Everything the child checks; returns 0 or the number of the failed step. */
static int child_checks(void)
{
    void *got = NULL;
    if (ctx_context_enter(held) != 0)
        return 1; /* the dead holder's entry was cleared */
    if (strcmp(ctx_var_get_or(v, "unset"), "set-in-held") != 0)
        return 2;
    if (ctx_context_exit(held) != 0)
        return 3;
    ctx_var_set(v, "set-in-child", NULL);
    ctx_pool_t *pool;
    ctx_future_t *f;
    if (ctx_pool_create(&pool, 2) != 0 ||
        ctx_pool_submit(pool, read_v, NULL, &f) != 0 ||
        ctx_future_wait(f, &got) != 0 || strcmp(got, "set-in-child") != 0)
        return 4;
    ctx_future_release(f);
    if (ctx_pool_destroy(pool) != 0)
        return 5;
    pthread_t t;
    if (ctx_thread_create(&t, NULL, read_v, NULL) != 0 ||
        pthread_join(t, &got) != 0 || strcmp(got, "set-in-child") != 0)
        return 6;
    return 0;
}

START_TEST(child_can_use_the_library)
{
    ck_ok(ctx_var_create(&v, "v", CTX_MISSING, NULL));
    ck_ok(ctx_context_new(&held));
    pthread_barrier_init(&entered, NULL, 3);
    pthread_barrier_init(&release, NULL, 3);

    /* One thread holds `held` entered; one pool job holds its snapshot
     * entered on a worker; both stay inside until after the fork. */
    pthread_t t;
    ck_ok(pthread_create(&t, NULL, holder, NULL));
    ctx_pool_t *busy;
    ctx_future_t *job;
    /* One worker, and it is inside the job at the fork: no thread of the
     * parent is in malloc then.  glibc's malloc is fork-safe, but the
     * AddressSanitizer allocator of the clang CI uses is not: a worker
     * that idled and trimmed its records at that instant left the
     * child's allocator locked, and the child's new threads hung. */
    ck_ok(ctx_pool_create(&busy, 1));
    ck_ok(ctx_pool_submit(busy, hold, NULL, &job));
    pthread_barrier_wait(&entered);
    ck_assert_int_eq(ctx_context_enter(held), EBUSY);

    /* The child reports through a pipe, not its exit status: under
     * valgrind, the memory of the threads that do not exist in the child
     * counts as leaked there, and valgrind's --error-exitcode would
     * overwrite a passing child's status. */
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int step = child_checks();
        _exit(write(fd[1], &step, sizeof step) == sizeof step ? 0 : 99);
    }
    close(fd[1]);
    int step = -1, status;
    ck_assert_int_eq(read(fd[0], &step, sizeof step), sizeof step);
    close(fd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(step == 0, "child failed at step %d", step);

    /* The parent's holder is still inside, as it should be. */
    ck_assert_int_eq(ctx_context_enter(held), EBUSY);
    pthread_barrier_wait(&release);
    void *rc;
    ck_ok(pthread_join(t, &rc));
    ck_assert_ptr_null(rc);
    ck_ok(ctx_future_wait(job, NULL));
    ctx_future_release(job);
    ck_ok(ctx_pool_destroy(busy));
    ck_ok(ctx_context_enter(held));
    ck_ok(ctx_context_exit(held));
    ctx_context_release(held);
    ctx_var_release(v);
}
END_TEST

static Suite *fork_suite(void)
{
    Suite *s = suite_create("fork");
    TCase *tc = tcase_create("fork");
    tcase_add_test(tc, child_can_use_the_library);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(fork_suite)
