/*
 * test_chaos.c - the chaos build (--enable-chaos) finds races.
 *
 * A tiny two-step protocol, "the first thread to arrive claims the slot",
 * written twice here in the test (never in the library):
 *   broken:  if (load(slot) == 0) { CTX__CHAOS(); store(slot, me); }
 *   correct: CTX__CHAOS(); CAS(slot, 0 -> me)
 * Two threads race through the same row of slots.  Without perturbation
 * the broken version is nearly always right: one thread runs ahead and
 * the window between its load and its store is a few instructions.  With
 * chaos points the leader stalls in that window and the follower claims
 * the same slot: the test asserts that this is caught within a second, and
 * that the correct version, under the same perturbation, never is.
 *
 * Also: the seed comes from CTX_CHAOS_SEED and replays a thread's
 * decisions, and the points do perturb at a sane rate.
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

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { SLOTS = 256, RACERS = 2 };

static atomic_int slot[SLOTS];
static atomic_int wins[SLOTS];
static pthread_barrier_t start;
static bool broken;

static void *racer(void *arg)
{
    int me = (int)(intptr_t)arg;
    pthread_barrier_wait(&start);
    for (int i = 0; i < SLOTS; i++) {
        if (broken) {
            if (atomic_load(&slot[i]) == 0) {
                CTX__CHAOS(); /* check-then-act: the bug */
                atomic_store(&slot[i], me);
                atomic_fetch_add(&wins[i], 1);
            }
        } else {
            int zero = 0;
            CTX__CHAOS();
            if (atomic_compare_exchange_strong(&slot[i], &zero, me))
                atomic_fetch_add(&wins[i], 1);
        }
    }
    return NULL;
}

/* One race through the row; returns how many slots were claimed twice,
 * and fails the test if any was claimed by nobody. */
static int one_round(void)
{
    pthread_t t[RACERS];
    for (int i = 0; i < SLOTS; i++) {
        atomic_store(&slot[i], 0);
        atomic_store(&wins[i], 0);
    }
    pthread_barrier_init(&start, NULL, RACERS);
    for (int r = 0; r < RACERS; r++)
        ck_assert_int_eq(
            pthread_create(&t[r], NULL, racer, (void *)(intptr_t)(r + 1)), 0);
    for (int r = 0; r < RACERS; r++)
        pthread_join(t[r], NULL);
    pthread_barrier_destroy(&start);
    int doubled = 0;
    for (int i = 0; i < SLOTS; i++) {
        int w = atomic_load(&wins[i]);
        ck_assert_msg(w >= 1, "slot %d claimed by nobody", i);
        doubled += w > 1;
    }
    return doubled;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) +
           (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}


START_TEST(broken_protocol_is_caught)
{
    broken = true;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long rounds = 0;
    int doubled = 0;
    while (doubled == 0 && seconds_since(&t0) < 1.0) {
        doubled = one_round();
        rounds++;
    }
    ck_assert_msg(doubled > 0,
                  "the broken protocol survived %ld rounds (1 s) of chaos",
                  rounds);
    printf("broken protocol caught in round %ld (%.3f s), %d slots claimed "
           "twice\n", rounds, seconds_since(&t0), doubled);
}
END_TEST

START_TEST(correct_protocol_passes)
{
    broken = false;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long rounds = 0;
    /* At least as many rounds as the broken one can take in a second. */
    while (seconds_since(&t0) < 1.0 || rounds < 50) {
        ck_assert_int_eq(one_round(), 0);
        rounds++;
    }
    printf("correct protocol: %ld rounds, no slot claimed twice\n", rounds);
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
    tcase_add_test(tc, correct_protocol_passes);
    tcase_add_test(tc, seed_replays);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(chaos_suite)

#endif /* CTX_CHAOS */
