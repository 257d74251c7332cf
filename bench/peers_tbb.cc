/*
 * peers_tbb.cc - oneTBB's side of the peers table (bench/peers.c), in
 * C++ because TBB's API is C++; it exposes plain C functions to the C
 * harness (declared in bench.h).
 *
 * Same shape as our side of each figure, so only the pools differ:
 *  - two worker threads, and the thread that times the loop never runs a
 *    job: an arena of two slots none of which is reserved for an outside
 *    thread, and a global_control allowing the two workers (TBB otherwise
 *    starts one worker fewer than there are CPUs);
 *  - outside work goes in with task_arena::enqueue (TBB's fire-and-forget
 *    submission from a thread that does not join the arena, as
 *    ctx_pool_submit from main is ours) and signals the countdown;
 *  - nested work uses task_group: run() a child, do the other half,
 *    wait(), which is TBB's recommended fork-join and lets the waiter run
 *    other tasks meanwhile.
 */
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

#include <cstdio>
#include <new>

#include "peers.h"

struct tbb_peer {
    tbb::global_control limit;
    tbb::task_arena arena;
    peers_done_t *done;
    explicit tbb_peer(unsigned n)
        : limit(tbb::global_control::max_allowed_parallelism, n + 1),
          arena(static_cast<int>(n), 0), done(peers_done_create())
    {
        arena.initialize();
    }
    ~tbb_peer() { peers_done_destroy(done); }
};

extern "C" tbb_peer_t *tbb_peer_create(unsigned nthreads)
{
    return new (std::nothrow) tbb_peer(nthreads);
}

extern "C" void tbb_peer_destroy(tbb_peer_t *p)
{
    delete p;
}

extern "C" const char *tbb_version_string(void)
{
    static char buf[32];
    std::snprintf(buf, sizeof buf, "%d.%d", TBB_VERSION_MAJOR,
                  TBB_VERSION_MINOR);
    return buf;
}

extern "C" void tbb_flat(void *arg, uint64_t n)
{
    tbb_peer_t *p = static_cast<tbb_peer_t *>(arg);
    for (uint64_t b = 0; b < n; b++) {
        uint64_t jobs = peers_flat_jobs();
        peers_done_arm(p->done, jobs);
        for (uint64_t i = 0; i < jobs; i++)
            p->arena.enqueue([p] { peers_done_hit(p->done); });
        peers_done_wait(p->done);
    }
}

static long fib(int n)
{
    if (n <= PEERS_FIB_CUTOFF)
        return peers_fib_serial(n);
    long x = 0;
    tbb::task_group tg;
    tg.run([&x, n] { x = fib(n - 1); });
    long y = fib(n - 2);
    tg.wait();
    return x + y;
}

extern "C" void tbb_forkjoin(void *arg, uint64_t n)
{
    tbb_peer_t *p = static_cast<tbb_peer_t *>(arg);
    for (uint64_t i = 0; i < n; i++) {
        long r = 0;
        peers_done_arm(p->done, 1);
        p->arena.enqueue([p, &r] {
            r = fib(PEERS_FIB_N);
            peers_done_hit(p->done);
        });
        peers_done_wait(p->done);
        peers_check_fib(r);
    }
}

static void request(uint64_t *out)
{
    uint64_t part[PEERS_FANOUT];
    tbb::task_group tg;
    for (int i = 0; i < PEERS_FANOUT; i++)
        tg.run([&part, i] { part[i] = peers_work(static_cast<uint64_t>(i)); });
    tg.wait();
    uint64_t sum = 0;
    for (int i = 0; i < PEERS_FANOUT; i++)
        sum += part[i];
    *out = sum;
}

extern "C" void tbb_fanout(void *arg, uint64_t n)
{
    tbb_peer_t *p = static_cast<tbb_peer_t *>(arg);
    static uint64_t sums[PEERS_REQUESTS];
    for (uint64_t b = 0; b < n; b++) {
        peers_done_arm(p->done, PEERS_REQUESTS);
        for (int i = 0; i < PEERS_REQUESTS; i++)
            p->arena.enqueue([p, i] {
                request(&sums[i]);
                peers_done_hit(p->done);
            });
        peers_done_wait(p->done);
        peers_check_fanout(sums, PEERS_REQUESTS);
    }
}
