/*
 * pool.c - a thread pool whose jobs run in their submitter's context.
 *
 * A job's snapshot is its submitter's trie root, retained at submit: O(1)
 * and no allocation.  The worker runs the job in a context of its own made
 * of that root, so nothing a job sets reaches anyone else, and reuses the
 * context for the next job unless something (a token) still holds it.
 * The job record is also the future, and records are recycled, so the
 * steady state allocates nothing:
 *
 *  - Workers keep the records they recycle for their own jobs' submits
 *    and give the surplus back in batches to a Treiber stack, which is
 *    only ever emptied whole (so no ABA): by submitters into `spare`, by a
 *    worker whose cache ran dry.  A busy pool keeps every record (its peak
 *    backlog needed them anyway); an idle one trims them to RECORD_CAP.
 *  - Submitters append to the inbox, a list under a spin lock that workers
 *    take once per batch, not per job: a worker takes the whole inbox,
 *    keeps the first job, moves up to half a ring into its ring and puts
 *    the rest back, without walking the list under the lock.
 *  - A job's own submits go to its worker's ring without any lock.  A ring
 *    is a work-stealing deque: its owner takes the oldest job from the
 *    head when it looks for work, and the newest from the tail when it
 *    waits (the child it just submitted, cache-hot, as in TBB); idle
 *    workers steal the oldest job of another's from the head (one at a
 *    time: see ring_steal()), so no job waits behind a blocked one while
 *    a worker idles.
 *  - Idle workers spin a little, then sleep on work_cond.  Publishers check
 *    n_idle after publishing and sleepers bump it before they look for
 *    work, all seq_cst, so no wakeup is lost; `pending` counts wakeups sent
 *    but not taken, and a sleeper takes one before it looks (so a waker
 *    that sees it still counted knows the sleeper will see its work).
 *    Submitters wake after unlocking (a woken worker may preempt them),
 *    counted in `wakers` so that destroy does not free the pool under one.
 *
 * A record is claimed by CAS of its state from QUEUED to RUNNING, by the
 * worker that pops it or by a job of the pool that waits on it and runs
 * it inline; the other finds a tombstone.  The queue holds one reference
 * and the user's future another, and each future holds the pool, so
 * futures outlive ctx_pool_destroy().  Destroy marks the pool draining;
 * it is finished when every worker is idle with no work left, for then no
 * job runs that could submit more, and outsiders are refused.
 *
 * Where each part lives: pool.h has the layout and the small helpers all
 * three files share; this file the public API (create, submit, destroy),
 * the workers' main loop and running jobs in their contexts;
 * pool_queue.c the records and their recycling, the inbox, the rings and
 * stealing, and idle threads waiting for work (the wakeup protocol above);
 * pool_future.c waiting on futures, blocking or helping, and releasing.
 */
#include "config.h"

#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <unistd.h>

CTX__HIDDEN _Thread_local struct worker *ctx__pool_self CTX__TLS_IE;

#define POOL_REF_BATCH 64 /* pool references a worker takes at once */

/* Out of memory, a job has nowhere else to go: it waits for memory. */
static void wait_for_memory(void)
{
    nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* ------------------------------------------------------------------
 * Running jobs
 * ---------------------------------------------------------------- */

/* A context of root for one job, private to it: what ctx__copy_current()
 * would make, from the worker's cache when it has one. */
static ctx_context_t *context_get(struct worker *w, ctx__hnode_t *root,
                                  size_t len)
{
    ctx_context_t *c;
    if (w->nctx > 0) {
        c = w->ctxs[--w->nctx];
        c->root = root;
        c->len = len;
        return c;
    }
    while (ctx__context_alloc(root, len, &c) != 0)
        wait_for_memory();
    c->private_ = true;
    return c;
}

static void context_put(struct worker *w, ctx_context_t *c)
{
    /* Only we hold it (no token does): keep it, emptied. */
    if (w->nctx < CONTEXT_CACHE &&
        atomic_load_explicit(&c->state, memory_order_acquire) == CTX__REF) {
        ctx__hnode_t *root = c->root;
        c->root = NULL;
        c->len = 0;
        ctx__hamt_release(root);
        w->ctxs[w->nctx++] = c;
    } else {
        ctx_context_release(c);
    }
}

static void complete(ctx_future_t *rec, void *result)
{
    ctx_pool_t *pool = rec->pool;
    rec->result = result;
    CTX__CHAOS();
    atomic_store(&rec->state, JOB_DONE);
    CTX__CHAOS();
    unsigned waiters = atomic_load(&rec->waiters);
    if (waiters != 0) {
        CTX__CHAOS();
        pthread_mutex_lock(&pool->park_m);
        if (waiters & WAIT_BLOCKED)
            pthread_cond_broadcast(&pool->done_cond);
        if (waiters & WAIT_HELPING)
            pthread_cond_broadcast(&pool->work_cond);
        pthread_mutex_unlock(&pool->park_m);
    }
}

/* Runs a record this thread has claimed (or the only one who can see). */
static void *run(struct worker *w, ctx_future_t *rec)
{
    if (rec->pool->max_queued != 0)
        atomic_fetch_sub_explicit(&rec->pool->queued, 1, memory_order_relaxed);
    ctx_context_t *c = context_get(w, rec->root, rec->len);
    void *result = NULL;
    /* c is entered nowhere: this fails only making the thread's state
     * (a worker's first job), where no test can arm fault injection: it
     * counts per thread, and a worker runs no test code before its first
     * job. */
    /* GCOVR_EXCL_START */
    while (ctx__run(c, rec->fn, rec->arg, &result) != 0)
        wait_for_memory();
    /* GCOVR_EXCL_STOP */
    /* Before completing, so what the job held is released once it is done. */
    context_put(w, c);
    return result;
}

void ctx__pool_execute(struct worker *w, ctx_future_t *rec)
{
    complete(rec, run(w, rec));
}

/* Runs a record taken off a queue, unless a waiter ran it already. */
void ctx__pool_run_queued(struct worker *w, ctx_future_t *rec)
{
    if (!rec->future) /* nobody can wait on it, or claim it */
        run(w, rec);
    else if (claim(rec))
        ctx__pool_execute(w, rec);
    if (!rec->future || unref(rec))
        ctx__pool_recycle(w->pool, w, rec);
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    ctx__pool_self = w;
    for (;;) {
        ctx_future_t *rec = ctx__pool_find_work(w);
        if (rec != NULL)
            ctx__pool_run_queued(w, rec);
        else if (ctx__pool_park(w))
            break;
    }
    while (w->nctx > 0)
        ctx_context_release(w->ctxs[--w->nctx]);
    /* destroy holds the pool's own reference until every worker is joined */
    CTX__CHAOS();
    atomic_fetch_sub_explicit(&w->pool->refs, w->pool_refs,
                              memory_order_release);
    w->pool_refs = 0;
    ctx__pool_self = NULL;
    return NULL;
}

/* ------------------------------------------------------------------
 * Creating and destroying
 * ---------------------------------------------------------------- */

static void join_workers(ctx_pool_t *pool, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        pthread_join(pool->workers[i].thread, NULL);
}

static int start_workers(ctx_pool_t *pool, size_t stack_size)
{
    pthread_attr_t attr;
    int err = pthread_attr_init(&attr);
    /* GCOVR_EXCL_START: glibc's pthread_attr_init cannot fail */
    if (err != 0)
        return err;
    /* GCOVR_EXCL_STOP */
    if (stack_size != 0) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        if (stack_size < (size_t)PTHREAD_STACK_MIN)
            stack_size = (size_t)PTHREAD_STACK_MIN;
        err = pthread_attr_setstacksize(&attr, (stack_size + page - 1) /
                                                   page * page);
    }
    unsigned n = 0;
    while (err == 0 && n < pool->nworkers) {
        err = pthread_create(&pool->workers[n].thread, &attr, worker_main,
                             &pool->workers[n]);
        n += err == 0;
    }
    pthread_attr_destroy(&attr);
    if (err != 0) { /* stop those that started: they find no work */
        CTX__CHAOS();
        pthread_mutex_lock(&pool->park_m);
        pool->finished = true;
        CTX__CHAOS();
        pthread_cond_broadcast(&pool->work_cond);
        pthread_mutex_unlock(&pool->park_m);
        join_workers(pool, n);
    }
    return err;
}

static ctx_pool_t *pool_alloc(unsigned nworkers)
{
    /* One block, aligned by hand for the LINE members. */
    size_t size = 64 + sizeof(ctx_pool_t) + nworkers * sizeof(struct worker);
    char *mem = ctx__calloc(1, size);
    if (mem == NULL)
        return NULL;
    ctx_pool_t *pool = (ctx_pool_t *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    pool->mem = mem;
    pool->workers = (struct worker *)(pool + 1);
    pool->nworkers = nworkers;
    for (unsigned i = 0; i < nworkers; i++) {
        pool->workers[i].pool = pool;
        pool->workers[i].index = i;
    }
    atomic_init(&pool->refs, 1);
    /* With default attributes glibc's mutex and condition variable
     * initialisers cannot fail, so the unwinding below never runs. */
    if (pthread_mutex_init(&pool->park_m, NULL) == 0) {
        if (pthread_cond_init(&pool->work_cond, NULL) == 0) {
            if (pthread_cond_init(&pool->done_cond, NULL) == 0)
                return pool;
            pthread_cond_destroy(&pool->work_cond); /* GCOVR_EXCL_LINE */
        }
        pthread_mutex_destroy(&pool->park_m); /* GCOVR_EXCL_LINE */
    }
    ctx__free(mem); /* GCOVR_EXCL_LINE */
    return NULL;    /* GCOVR_EXCL_LINE */
}

static void pool_free(ctx_pool_t *pool)
{
    ctx__pool_free_records(pool);
    CTX__ASSERT(atomic_load(&pool->nrecords) == 0);
    pthread_cond_destroy(&pool->done_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->park_m);
    ctx__free(pool->mem);
}

void ctx__pool_unref(ctx_pool_t *pool)
{
    CTX__CHAOS();
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1)
        pool_free(pool);
}

int ctx_pool_create_ex(ctx_pool_t **out, const ctx_pool_options_t *options)
{
    static const ctx_pool_options_t defaults = {0};
    if (out == NULL)
        return EINVAL;
    if (options == NULL)
        options = &defaults;
    unsigned n = options->nthreads;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > 1024 ? 1024 : (unsigned)cpus;
    }
    ctx_pool_t *pool = pool_alloc(n);
    if (pool == NULL)
        return ENOMEM;
    pool->max_queued = options->max_queued;
    int err = start_workers(pool, options->stack_size);
    if (err != 0) {
        pool_free(pool);
        return err == ENOMEM ? ENOMEM : EAGAIN;
    }
    *out = pool;
    return 0;
}

int ctx_pool_create(ctx_pool_t **out, unsigned nthreads)
{
    ctx_pool_options_t options = {0};
    options.nthreads = nthreads;
    return ctx_pool_create_ex(out, &options);
}

int ctx_pool_destroy(ctx_pool_t *pool)
{
    if (pool == NULL)
        return EINVAL;
    if (is_own_job(pool))
        return EDEADLK;
    lock(pool);
    CTX__CHAOS();
    bool again = atomic_exchange(&pool->draining, true);
    unlock(pool);
    if (again)
        return EINVAL;
    CTX__CHAOS();
    pthread_mutex_lock(&pool->park_m);
    CTX__CHAOS();
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->park_m);
    join_workers(pool, pool->nworkers);
    lock(pool); /* a submitter being refused has left */
    unlock(pool);
    CTX__CHAOS();
    while (atomic_load_explicit(&pool->wakers, memory_order_acquire) != 0)
        sched_yield();
    ctx__pool_unref(pool);
    return 0;
}

/* ------------------------------------------------------------------
 * Submitting
 * ---------------------------------------------------------------- */

/* Counts a job against max_queued, if set; false when the queue is full.
 * A CAS, so that submitters with and without the lock never overshoot. */
static bool count_queued(ctx_pool_t *pool)
{
    if (pool->max_queued == 0)
        return true;
    CTX__CHAOS();
    size_t q = atomic_load_explicit(&pool->queued, memory_order_relaxed);
    do
        if (q >= pool->max_queued)
            return false;
    while (!atomic_compare_exchange_weak_explicit(&pool->queued, &q, q + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed));
    return true;
}

static void uncount_queued(ctx_pool_t *pool)
{
    if (pool->max_queued != 0)
        atomic_fetch_sub_explicit(&pool->queued, 1, memory_order_relaxed);
}

static ctx_future_t *record_alloc(ctx_pool_t *pool)
{
    ctx_future_t *rec = ctx__malloc(sizeof *rec);
    if (rec != NULL)
        atomic_fetch_add_explicit(&pool->nrecords, 1, memory_order_relaxed);
    return rec;
}

/* Under the lock: admits an outside job and finds it a record, allocating
 * one when none is free (unlocked meanwhile, so shutdown is checked
 * again). */
static int reserve(ctx_pool_t *pool, ctx_future_t **out)
{
    CTX__CHAOS();
    if (atomic_load_explicit(&pool->draining, memory_order_relaxed))
        return ESHUTDOWN;
    if (!count_queued(pool))
        return EAGAIN;
    ctx_future_t *rec = ctx__pool_free_pop(pool);
    if (rec != NULL) {
        *out = rec;
        return 0;
    }
    unlock(pool);
    rec = record_alloc(pool);
    lock(pool);
    int err = rec == NULL ? ENOMEM : 0;
    if (err == 0 &&
        atomic_load_explicit(&pool->draining, memory_order_relaxed)) {
        ctx__pool_recycle(pool, NULL, rec);
        err = ESHUTDOWN;
    }
    if (err != 0)
        uncount_queued(pool);
    *out = rec;
    return err;
}

/* The pool reference a future holds.  A worker takes them in bulk and
 * hands them out to its jobs' futures, and takes back those its jobs
 * release (ctx__pool_unref_by), so fork-join does not bounce pool->refs
 * between the cores; what it still holds it returns when it exits. */
static void ref_for_future(ctx_pool_t *pool, struct worker *w)
{
    if (w == NULL) {
        CTX__CHAOS();
        atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
        return;
    }
    if (w->pool_refs == 0) {
        CTX__CHAOS();
        atomic_fetch_add_explicit(&pool->refs, POOL_REF_BATCH,
                                  memory_order_relaxed);
        w->pool_refs = POOL_REF_BATCH;
    }
    w->pool_refs--;
}

void ctx__pool_unref_by(ctx_pool_t *pool, struct worker *w)
{
    if (w != NULL && w->pool == pool && w->pool_refs < 2 * POOL_REF_BATCH)
        w->pool_refs++; /* the worker's own still keep the pool alive */
    else
        ctx__pool_unref(pool);
}

static void record_init(ctx_pool_t *pool, struct worker *w,
                        ctx_future_t *rec, ctx__hnode_t *root, size_t len,
                        void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    *rec = (ctx_future_t){.fn = fn, .arg = arg, .root = root, .len = len,
                          .pool = pool, .future = future != NULL};
    atomic_init(&rec->refs, future != NULL ? 2 : 1);
    if (future != NULL) {
        ref_for_future(pool, w);
        *future = rec;
    }
}

/* Wakes an idle thread for work just published; see the top of this file
 * for why destroy waits for `wakers`. */
static void wake_for(ctx_pool_t *pool, bool wake)
{
    if (wake) {
        ctx__pool_wake_if_idle(pool);
        CTX__CHAOS();
        atomic_fetch_sub_explicit(&pool->wakers, 1, memory_order_release);
    }
}

/* A job of the pool submits: a record from its worker's cache, and its
 * own ring, without the submitters' lock.  The pool cannot be destroyed
 * under a running job, so neither shutdown nor `wakers` concern it. */
static int enqueue_own(struct worker *w, ctx__hnode_t *root, size_t len,
                       void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    ctx_pool_t *pool = w->pool;
    if (!count_queued(pool)) {
        ctx__hamt_release(root);
        return EAGAIN;
    }
    ctx_future_t *rec = ctx__pool_cache_pop(w);
    if (rec == NULL) {
        lock(pool);
        rec = ctx__pool_free_pop(pool);
        unlock(pool);
    }
    if (rec == NULL && (rec = record_alloc(pool)) == NULL) {
        uncount_queued(pool);
        ctx__hamt_release(root);
        return ENOMEM;
    }
    record_init(pool, w, rec, root, len, fn, arg, future);
    if (!ctx__pool_push_own(w, rec)) { /* ring full: the inbox */
        lock(pool);
        ctx__pool_publish(pool, rec);
        unlock(pool);
    }
    /* seq_cst: the push (or the unlock) came first; see the top. */
    if (ctx__pool_wake_needed(pool))
        ctx__pool_wake_if_idle(pool);
    return 0;
}

/* Queues fn(arg) to run in a context of root, a reference it takes. */
static int enqueue(ctx_pool_t *pool, ctx__hnode_t *root, size_t len,
                   void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    if (is_own_job(pool))
        return enqueue_own(ctx__pool_self, root, len, fn, arg, future);
    ctx_future_t *rec = NULL;
    lock(pool);
    int err = reserve(pool, &rec);
    if (err != 0) {
        unlock(pool);
        ctx__hamt_release(root);
        return err;
    }
    record_init(pool, NULL, rec, root, len, fn, arg, future);
    ctx__pool_publish(pool, rec);
    /* Once unlocked the job may run and a concurrent destroy finish: it
     * waits for wakers before it frees the pool. */
    bool wake = ctx__pool_wake_needed(pool);
    if (wake)
        atomic_fetch_add(&pool->wakers, 1);
    unlock(pool);
    wake_for(pool, wake);
    return 0;
}

int ctx_pool_submit(ctx_pool_t *pool, void *(*fn)(void *), void *arg,
                    ctx_future_t **future)
{
    if (pool == NULL || fn == NULL)
        return EINVAL;
    size_t len;
    ctx__hnode_t *root = ctx__snapshot_current(&len);
    return enqueue(pool, root, len, fn, arg, future);
}

int ctx_pool_submit_in(ctx_pool_t *pool, const ctx_context_t *ctx,
                       void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    if (pool == NULL || fn == NULL)
        return EINVAL;
    if (ctx == NULL)
        return enqueue(pool, NULL, 0, fn, arg, future);
    size_t len;
    ctx__hnode_t *root = ctx__snapshot_of(ctx, &len);
    return enqueue(pool, root, len, fn, arg, future);
}

