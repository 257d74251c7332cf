/*
 * pool_future.c - waiting on a pool's jobs: a job record is also its
 * future.  Outsiders block; the pool's own jobs help, running the job
 * awaited or others until it is done.  See the top of pool.c.
 */
#include "config.h"

#include "pool.h"

#include <errno.h>

#define HELP_SPINS 1024 /* polls for work or f before a waiter sleeps */
#define LIFO_DEPTH 64   /* how deep in its ring a waiter looks for f */

static bool time_is_up(const struct timespec *abstime)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > abstime->tv_sec ||
           (now.tv_sec == abstime->tv_sec && now.tv_nsec >= abstime->tv_nsec);
}

/* For threads that are not workers of f's pool. */
static int block_until_done(ctx_future_t *f, const struct timespec *abstime)
{
    ctx_pool_t *pool = f->pool;
    int err = 0;
    CTX__CHAOS();
    pthread_mutex_lock(&pool->park_m);
    CTX__CHAOS();
    atomic_fetch_or(&f->waiters, WAIT_BLOCKED);
    while (!is_done(f) && err == 0)
        err = cond_wait(&pool->done_cond, &pool->park_m, abstime);
    pthread_mutex_unlock(&pool->park_m);
    return is_done(f) ? 0 : err;
}

/* For jobs of f's pool: runs f inline if it has not started, else other
 * jobs until it is done, so jobs can wait on jobs with any pool size.
 *
 * Waiting for a job it submitted itself, a job finds it among the newest
 * of its worker's ring and runs the ring from the tail (LIFO, as TBB
 * does) down to it: what is above it was submitted after it by this same
 * thread, and taking jobs back from the tail leaves no tombstones behind
 * (fork-join's child is the very newest; a fan-out waiting for its first
 * sub-job runs them all).  Otherwise f is claimed and run inline if it has
 * not started; if it has, it is helped along by running this worker's
 * newest jobs, then any job of the pool (the inbox, other rings), and a
 * wait with nothing to run spins a while before it sleeps: a child run by
 * the other worker usually ends sooner than a futex round trip would. */
static int help_until_done(struct worker *w, ctx_future_t *f,
                           const struct timespec *abstime)
{
    int err = 0;
    unsigned idle = 0;
    /* Fork-join's child is the newest: take it without a scan. */
    ctx_future_t *rec = ctx__pool_ring_pop_newest(w, f);
    if (rec != NULL)
        ctx__pool_run_queued(w, rec); /* a tombstone if another ran it */
    bool lifo = rec == NULL && ctx__pool_ring_holds(w, f, LIFO_DEPTH);
    while (!is_done(f) && err == 0) {
        if (lifo && (rec = ctx__pool_ring_pop_newest(w, NULL)) != NULL) {
            lifo = rec != f;
            ctx__pool_run_queued(w, rec); /* a tombstone if another ran it */
        } else if (claim(f)) {
            ctx__pool_execute(w, f); /* its queue entry is a tombstone now */
        } else if (abstime != NULL && time_is_up(abstime)) {
            err = ETIMEDOUT;
        } else if ((rec = ctx__pool_ring_pop_newest(w, NULL)) != NULL ||
                   (rec = ctx__pool_find_work(w)) != NULL) {
            ctx__pool_run_queued(w, rec);
            idle = 0;
        } else if (++idle <= HELP_SPINS) {
            relax(idle);
        } else if ((err = ctx__pool_idle_wait(w->pool, f, abstime)) != 0 ||
                   is_done(f)) { /* the wakeup may have been for work */
            ctx__pool_wake_if_idle(w->pool);
        }
    }
    return is_done(f) ? 0 : err;
}

static int future_wait(ctx_future_t *f, const struct timespec *abstime,
                       void **result)
{
    if (!is_done(f)) {
        /* A watcher called on one of the pool's workers cannot run jobs
         * (each would switch contexts under it: EDEADLK, and the helping
         * loop would retry that for ever), and blocking instead may wait
         * for a job only this worker would run: refuse, as switches are. */
        if (CTX__UNLIKELY(ctx__ts.in_watch != 0) && is_own_job(f->pool))
            return EDEADLK;
        int err = is_own_job(f->pool)
                      ? help_until_done(ctx__pool_self, f, abstime)
                      : block_until_done(f, abstime);
        if (err != 0)
            return err;
    }
    if (result != NULL)
        *result = f->result;
    return 0;
}

int ctx_future_wait(ctx_future_t *future, void **result)
{
    return future == NULL ? EINVAL : future_wait(future, NULL, result);
}

int ctx_future_timedwait(ctx_future_t *future, const struct timespec *abstime,
                         void **result)
{
    if (future == NULL || abstime == NULL || abstime->tv_nsec < 0 ||
        abstime->tv_nsec >= 1000000000L)
        return EINVAL;
    return future_wait(future, abstime, result);
}

bool ctx_future_done(const ctx_future_t *future)
{
    return future != NULL && is_done(future);
}

void ctx_future_release(ctx_future_t *future)
{
    if (future == NULL)
        return;
    ctx_pool_t *pool = future->pool;
    struct worker *w = is_own_job(pool) ? ctx__pool_self : NULL;
    if (unref(future)) /* a worker keeps it for its jobs' next submit */
        ctx__pool_recycle(pool, w, future);
    ctx__pool_unref_by(pool, w);
}
