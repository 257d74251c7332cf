/*
 * test_chaos.c - the chaos build (--enable-chaos) finds races.
 *
 * A tiny two-step protocol, "the first thread to arrive claims the slot",
 * written here in the test (never in the library), in three versions:
 *   broken:  if (load(slot) == 0) { CTX__CHAOS(); store(slot, me); }
 *   quiet:   the same bug with no chaos point between the steps
 *   correct: CTX__CHAOS(); CAS(slot, 0 -> me)
 * Two threads meet at a barrier and race for a fresh slot, round after
 * round.  The window between the load and the store is a few
 * instructions, much narrower than the skew with which the barrier
 * releases the two threads, so the quiet bug is almost never seen.  The
 * test asserts that with the chaos point the bug is caught within a
 * second, that over the same number of rounds the point catches it more
 * often than plain luck does (it prints both counts), and that the
 * correct version, perturbed the same way, never is.
 *
 * Also: the seed comes from CTX_CHAOS_SEED and replays a thread's
 * decisions, and the points perturb at the rate chaos.c promises.
 * Skipped (exit 77) in a build without --enable-chaos.
 */
#include "config.h"

#include "chaos.h"

#ifndef CTX_CHAOS
#include <stdio.h>
int main(void)
{
    puts("test_chaos: SKIP: not a chaos build (./configure --enable-chaos)");
    return 77;
}
#else

#include "testutil.h"

#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum version { BROKEN, QUIET, CORRECT };

static atomic_int slot, wins;
static pthread_barrier_t meet;
static enum version version;
static atomic_bool go; /* false: no more rounds */

static void *racer(void *unused)
{
    (void)unused;
    for (;;) {
        pthread_barrier_wait(&meet); /* the slot is fresh */
        if (!atomic_load(&go))
            return NULL;
        if (version == CORRECT) {
            int zero = 0;
            CTX__CHAOS();
            if (atomic_compare_exchange_strong(&slot, &zero, 1))
                atomic_fetch_add(&wins, 1);
        } else if (atomic_load(&slot) == 0) {
            if (version == BROKEN)
                CTX__CHAOS(); /* check-then-act: the bug */
            atomic_store(&slot, 1);
            atomic_fetch_add(&wins, 1);
        }
        pthread_barrier_wait(&meet); /* both are done with it */
    }
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) +
           (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

typedef struct {
    long rounds;  /* rounds run */
    long doubled; /* rounds in which both threads claimed the slot */
    double secs;
} outcome_t;

/* Races v for n rounds, or until the first double claim when stop_early,
 * or until `limit` seconds have passed. */
static outcome_t race(enum version v, long n, bool stop_early, double limit)
{
    pthread_t t[2];
    outcome_t o = {0, 0, 0};
    struct timespec t0;
    version = v;
    ck_assert_int_eq(pthread_barrier_init(&meet, NULL, 3), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, racer, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool nobody = false;
    while (o.rounds < n && !nobody && !(stop_early && o.doubled > 0) &&
           seconds_since(&t0) < limit) {
        atomic_store(&slot, 0);
        atomic_store(&wins, 0);
        atomic_store(&go, true);
        pthread_barrier_wait(&meet);
        pthread_barrier_wait(&meet);
        int w = atomic_load(&wins);
        nobody = w < 1;
        o.rounds++;
        o.doubled += w > 1;
    }
    o.secs = seconds_since(&t0);
    atomic_store(&go, false);
    pthread_barrier_wait(&meet); /* releases the racers to their end */
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&meet);
    ck_assert_msg(!nobody, "round %ld: the slot was claimed by nobody",
                  o.rounds);
    return o;
}

enum { MAX_ROUNDS = 200000, COMPARE_ROUNDS = 5000 };

START_TEST(broken_protocol_is_caught)
{
    outcome_t o = race(BROKEN, MAX_ROUNDS, true, 1.0);
    ck_assert_msg(o.doubled > 0,
                  "the broken protocol survived %ld rounds (%.2f s) of chaos",
                  o.rounds, o.secs);
    printf("broken protocol caught in round %ld (%.3f s)\n", o.rounds,
           o.secs);
}
END_TEST

START_TEST(chaos_not_luck_catches_it)
{
    outcome_t with = race(BROKEN, COMPARE_ROUNDS, false, 60);
    outcome_t without = race(QUIET, COMPARE_ROUNDS, false, 60);
    printf("over %d rounds the bug showed %ld times with the chaos point, "
           "%ld times without\n", COMPARE_ROUNDS, with.doubled,
           without.doubled);
    ck_assert_int_gt(with.doubled, without.doubled);
}
END_TEST

START_TEST(correct_protocol_passes)
{
    /* At least as long as the broken one was given. */
    outcome_t o = race(CORRECT, MAX_ROUNDS, false, 1.0);
    ck_assert_int_eq(o.doubled, 0);
    printf("correct protocol: %ld rounds (%.2f s), never claimed twice\n",
           o.rounds, o.secs);
}
END_TEST

/* Runs n points on a fresh process's main thread under the given seed and
 * returns how many perturbed (through a pipe: the seed is per process). */
static long perturbed_under(const char *seed, int n)
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("CTX_CHAOS_SEED", seed, 1);
        for (int i = 0; i < n; i++)
            CTX__CHAOS();
        unsigned long points, perturbed;
        ctx__chaos_stats(&points, &perturbed);
        long out = points == (unsigned long)n ? (long)perturbed : -1;
        if (ctx__chaos_seed() != strtoull(seed, NULL, 0))
            out = -2;
        _exit(write(fd[1], &out, sizeof out) == sizeof out ? 0 : 1);
    }
    close(fd[1]);
    long got = -3;
    ck_assert_int_eq(read(fd[0], &got, sizeof got), (long)sizeof got);
    close(fd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return got;
}

START_TEST(seed_replays)
{
    enum { N = 20000 };
    long a = perturbed_under("12345", N);
    long b = perturbed_under("12345", N);
    long c = perturbed_under("0x2a", N);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(a, b); /* same seed, same thread number: same choices */
    /* 3 in 16 points act: expect ~3750 of 20000 */
    ck_assert_int_gt(a, N / 10);
    ck_assert_int_lt(a, N * 3 / 10);
    ck_assert_int_gt(c, N / 10);
    ck_assert_int_lt(c, N * 3 / 10);
}
END_TEST

static Suite *chaos_suite(void)
{
    Suite *s = suite_create("chaos");
    TCase *tc = tcase_create("protocol");
    tcase_add_test(tc, broken_protocol_is_caught);
    tcase_add_test(tc, chaos_not_luck_catches_it);
    tcase_add_test(tc, correct_protocol_passes);
    tcase_add_test(tc, seed_replays);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(chaos_suite)

#endif /* CTX_CHAOS */
