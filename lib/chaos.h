/*
 * chaos.h - schedule perturbation for the chaos build (--enable-chaos).
 *
 * A race that needs one thread to be preempted between two particular
 * instructions shows up on 2 cores by luck, if ever.  CTX__CHAOS() placed
 * between such instructions makes it likely: driven by a seeded per-thread
 * PRNG, each call sometimes yields the CPU (sched_yield), sometimes spins
 * a few hundred nanoseconds, and mostly does nothing.  The suites then run
 * under many different interleavings, and a failure is replayed by
 * setting the seed it printed.
 *
 * In a normal build CTX__CHAOS() is ((void)0): no instruction, no call,
 * no load, so the points can sit on the hottest paths (get, set, run,
 * submit).
 *
 * Seed: CTX_CHAOS_SEED=N (decimal or 0x hex) in the environment; without
 * it a random seed is drawn.  Either way the library prints it once, to
 * stderr, at the first chaos point:
 *     ctxvars: chaos seed 12345 (replay: CTX_CHAOS_SEED=12345)
 * Each thread's PRNG (xorshift64) starts from the seed mixed with the
 * thread's number, counted in the order threads reach their first chaos
 * point.  So a seed replays every thread's sequence of decisions exactly
 * when threads arrive in the same order, and in practice makes a failure
 * far more likely to recur; it cannot make an OS schedule deterministic.
 *
 * WHERE THE POINTS BELONG.  A point goes immediately before (and, for a
 * two-step protocol, between the steps of) every place where threads
 * synchronise or race, so the thread is preempted exactly where another
 * thread's interleaving would matter:
 *  - every atomic operation on shared state: loads and stores of flags
 *    and counters other threads read, fetch_add/fetch_sub of reference
 *    counts (a release that may free: before the fetch_sub), exchanges;
 *  - every compare-and-swap, in particular the entered-flag CAS of
 *    ctx->state (enter, run, and the fetch_sub of exit/leave);
 *  - every lock and unlock: ctx__spin_lock/unlock (done here, in
 *    internal.h), pthread_mutex_lock/unlock, before pthread_cond_wait and
 *    signal/broadcast;
 *  - the pool's queues: ring push and pop, inbox push and drain (between
 *    reading and publishing head/tail), work stealing;
 *  - the wakeup protocol: between publishing work and testing whether a
 *    worker sleeps, and between a worker's last empty check and its sleep;
 *  - future completion and wait (publishing the result, the done flag);
 *  - fiber resume and suspend (before the switch, after it returns);
 *  - watcher add and remove, and the notification walk;
 *  - the snapshot of another thread's context (ctx__snapshot_of) and the
 *    TLS hand-off on thread start and teardown.
 * Points are placed in every file of lib/ that synchronises: the spin
 * lock (internal.h), context.c, tstate.c, fiber.c, watch.c, pool*.c,
 * hamt.c and var.c (outside the get path), token.c, thread.c, callable.c
 * and the spare hand-off in alloc.c.
 *
 * A point never goes inside a signal handler path that must stay
 * async-signal-safe (sched_yield and clock_gettime are, but the first
 * call initialises the seed with getenv and stdio).
 */
#ifndef CTXVARS_CHAOS_H
#define CTXVARS_CHAOS_H

#ifdef CTX_CHAOS
__attribute__((visibility("hidden"))) void ctx__chaos(void);
/* Test aids: the seed in use (initialising it if needed), and how many
 * points this thread has passed and how many of them yielded or spun. */
__attribute__((visibility("hidden"))) unsigned long long
ctx__chaos_seed(void);
__attribute__((visibility("hidden"))) void
ctx__chaos_stats(unsigned long *points, unsigned long *perturbed);
#define CTX__CHAOS() ctx__chaos()
#else
#define CTX__CHAOS() ((void)0)
#endif

#endif /* CTXVARS_CHAOS_H */
