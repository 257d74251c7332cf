/*
 * chaos.c - the chaos build's schedule perturbation (see chaos.h for what
 * it is for and where the points go).  Compiled only with --enable-chaos.
 *
 * The decision at each point must be cheap and independent between
 * threads (a shared PRNG would itself synchronise them, and hide races),
 * so every thread has its own xorshift64 state in TLS, derived from the
 * process seed and the thread's arrival number.
 */
#include "config.h"

#include "chaos.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;
static atomic_uint_fast64_t threads_seen;

static _Thread_local uint64_t prng
    __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned long points, perturbed
    __attribute__((tls_model("initial-exec")));

/* splitmix64's finaliser: spreads a counter or a clock over all 64 bits,
 * so nearby seeds and thread numbers give unrelated sequences. */
static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void init_seed(void)
{
    const char *s = getenv("CTX_CHAOS_SEED");
    char *end = NULL;
    if (s != NULL && *s != '\0') {
        seed = strtoull(s, &end, 0);
        if (*end != '\0')
            fprintf(stderr, "ctxvars: CTX_CHAOS_SEED=%s is not a number; "
                            "using %llu\n", s, (unsigned long long)seed);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                   ((uint64_t)getpid() << 16)) >> 1; /* fits strtoull */
    }
    fprintf(stderr, "ctxvars: chaos seed %llu (replay: CTX_CHAOS_SEED=%llu)\n",
            (unsigned long long)seed, (unsigned long long)seed);
}

static uint64_t next(void)
{
    uint64_t x = prng;
    if (x == 0) { /* this thread's first point */
        pthread_once(&seed_once, init_seed);
        uint64_t n = atomic_fetch_add(&threads_seen, 1);
        x = mix(seed ^ mix(n));
        if (x == 0) /* xorshift's one fixed point */
            x = 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    prng = x;
    return x;
}

void ctx__chaos(void)
{
    uint64_t r = next();
    points++;
    /* Mostly nothing, so the program still makes progress and the points
     * that do act are scattered; 1 in 16 yields (another thread runs
     * between our two steps), 1 in 8 spins 100-611 ns (a preemption too
     * short for the scheduler, the width of a cache miss or a few). */
    switch ((r >> 60) & 15) {
    case 0:
        perturbed++;
        sched_yield();
        break;
    case 1:
    case 2: {
        perturbed++;
        uint64_t until = now_ns() + 100 + ((r >> 20) & 511);
        while (now_ns() < until)
            ;
        break;
    }
    default:
        break;
    }
}

unsigned long long ctx__chaos_seed(void)
{
    pthread_once(&seed_once, init_seed);
    return (unsigned long long)seed;
}

void ctx__chaos_stats(unsigned long *p, unsigned long *q)
{
    *p = points;
    *q = perturbed;
}
