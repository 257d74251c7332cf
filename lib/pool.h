/*
 * pool.h - the thread pool's layout, shared by pool.c (API, workers,
 * running jobs), pool_queue.c (records, queues, idling) and pool_future.c
 * (waiting on jobs) and nobody else.  See the top of pool.c for the design.
 */
#ifndef CTXVARS_POOL_H
#define CTXVARS_POOL_H

#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#define RING_SIZE 256u   /* slots per worker ring; a power of two */
#define RING_MASK (RING_SIZE - 1)
#define CONTEXT_CACHE 4  /* contexts a worker keeps (jobs may nest) */
#define LINE _Alignas(64)

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
enum { WAIT_BLOCKED = 1u, WAIT_HELPING = 2u };

struct ctx_future {
    ctx_future_t *next;  /* inbox and free stack */
    void *(*fn)(void *);
    void *arg;
    ctx__hnode_t *root;  /* the snapshot (a reference) until it runs */
    size_t len;
    ctx_pool_t *pool;
    void *result;        /* fn's return, once state is JOB_DONE */
    atomic_int state;
    atomic_uint waiters; /* WAIT_*: whom completion must wake */
    atomic_uint refs;    /* the queue's and the user's */
    bool future;         /* whether anyone but the queue may see it */
};

struct worker {
    LINE atomic_uint head; /* consumers (owner, thieves) advance it by CAS */
    LINE atomic_uint tail; /* only the owner writes it */
    LINE _Atomic(ctx_future_t *) slot[RING_SIZE];
    ctx_pool_t *pool;
    ctx_future_t *cache; /* records for its jobs' submits (pool_queue.c) */
    unsigned ncache, nctx, index;
    size_t pool_refs; /* pool references taken in bulk, not yet handed out */
    ctx_context_t *ctxs[CONTEXT_CACHE];
    pthread_t thread;
};

struct ctx_pool {
    LINE atomic_bool lock; /* submitters; guards inbox_tail, spare */
    ctx_future_t *inbox_tail;
    ctx_future_t *spare;   /* records taken off the free stack */
    atomic_bool draining;
    size_t max_queued;
    LINE _Atomic(ctx_future_t *) inbox_head; /* peeked at without the lock */
    LINE _Atomic(ctx_future_t *) free_head;
    atomic_long nrecords;
    LINE atomic_uint n_idle; /* threads waiting on work_cond */
    atomic_uint pending;     /* wakeups sent and not yet taken */
    atomic_uint wakers;      /* submitters waking a worker, unlocked */
    LINE atomic_size_t refs; /* 1 until destroyed, plus one per future */
    atomic_size_t queued;    /* kept only when max_queued is set */
    LINE pthread_mutex_t park_m; /* guards the rest */
    pthread_cond_t work_cond;    /* idle workers and helping waiters */
    pthread_cond_t done_cond;    /* other waiters */
    unsigned n_parked, nworkers;
    bool finished;
    struct worker *workers;
    void *mem;
};

/* The worker this thread is, NULL elsewhere: "one of the pool's jobs". */
extern CTX__HIDDEN _Thread_local struct worker *ctx__pool_self CTX__TLS_IE;

static inline bool is_own_job(const ctx_pool_t *pool)
{
    return ctx__pool_self != NULL && ctx__pool_self->pool == pool;
}

static inline bool is_done(const ctx_future_t *f)
{
    return atomic_load_explicit(&((ctx_future_t *)f)->state,
                                memory_order_acquire) == JOB_DONE;
}

static inline bool claim(ctx_future_t *rec)
{
    int queued = JOB_QUEUED;
    return atomic_compare_exchange_strong(&rec->state, &queued, JOB_RUNNING);
}

/* Drops a reference to rec; true when it was the last. */
static inline bool unref(ctx_future_t *rec)
{
    /* A sole holder cannot be raced: references are made at submit. */
    return atomic_load_explicit(&rec->refs, memory_order_acquire) == 1 ||
           atomic_fetch_sub_explicit(&rec->refs, 1, memory_order_acq_rel) == 1;
}

static inline void relax(unsigned round)
{
    if (round % 64 == 0) /* more threads than cores: let others run */
        sched_yield();
    else
        ctx__cpu_relax();
}

static inline void lock(ctx_pool_t *pool)
{
    unsigned n = 0;
    while (atomic_exchange_explicit(&pool->lock, true, memory_order_acquire))
        while (atomic_load_explicit(&pool->lock, memory_order_relaxed))
            relax(++n);
}

static inline void unlock(ctx_pool_t *pool)
{
    atomic_store_explicit(&pool->lock, false, memory_order_release);
}

static inline int cond_wait(pthread_cond_t *cond, pthread_mutex_t *m,
                            const struct timespec *abstime)
{
    return abstime == NULL ? pthread_cond_wait(cond, m)
                           : pthread_cond_timedwait(cond, m, abstime);
}

/* pool.c: running jobs, and the pool's own reference count. */
CTX__HIDDEN void ctx__pool_execute(struct worker *w, ctx_future_t *rec);
CTX__HIDDEN void ctx__pool_run_queued(struct worker *w, ctx_future_t *rec);
CTX__HIDDEN void ctx__pool_unref(ctx_pool_t *pool);
CTX__HIDDEN void ctx__pool_unref_by(ctx_pool_t *pool, struct worker *w);

/* pool_queue.c: records. */
CTX__HIDDEN ctx_future_t *ctx__pool_free_pop(ctx_pool_t *pool);
CTX__HIDDEN ctx_future_t *ctx__pool_cache_pop(struct worker *w);
CTX__HIDDEN void ctx__pool_recycle(ctx_pool_t *pool, struct worker *w,
                                   ctx_future_t *rec);
CTX__HIDDEN void ctx__pool_free_records(ctx_pool_t *pool);

/* pool_queue.c: queues and idling. */
CTX__HIDDEN void ctx__pool_publish(ctx_pool_t *pool, ctx_future_t *rec);
CTX__HIDDEN bool ctx__pool_push_own(struct worker *w, ctx_future_t *rec);
CTX__HIDDEN ctx_future_t *ctx__pool_ring_pop_newest(struct worker *w,
                                                    ctx_future_t *want);
CTX__HIDDEN bool ctx__pool_ring_holds(struct worker *w,
                                      const ctx_future_t *want,
                                      unsigned depth);
CTX__HIDDEN bool ctx__pool_wake_needed(ctx_pool_t *pool);
CTX__HIDDEN void ctx__pool_wake_if_idle(ctx_pool_t *pool);
CTX__HIDDEN ctx_future_t *ctx__pool_find_work(struct worker *w);
CTX__HIDDEN int ctx__pool_idle_wait(ctx_pool_t *pool, ctx_future_t *f,
                                    const struct timespec *abstime);
CTX__HIDDEN bool ctx__pool_park(struct worker *w);

#endif
