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
 *  - Workers give records back in batches to a Treiber stack, which
 *    submitters only ever empty whole (so no ABA) into `spare`.  A busy
 *    pool keeps every record (its peak backlog needed them anyway); an
 *    idle one trims them to RECORD_CAP.
 *  - Submitters append to the inbox, a list under a spin lock that workers
 *    take once per batch, not per job: a worker takes the whole inbox,
 *    keeps the first job, moves the next RING_SIZE into its ring and puts
 *    the rest back, without walking the list under the lock.
 *  - A ring is single-producer multi-consumer; idle workers steal half of
 *    another's, so no job waits behind a blocked one while a worker idles.
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
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE 256u   /* slots per worker ring; a power of two */
#define RING_MASK (RING_SIZE - 1)
#define FREE_BATCH 32u   /* records a worker gives back at once */
#define RECORD_CAP 4096  /* records an idle pool keeps for reuse */
#define CONTEXT_CACHE 4  /* contexts a worker keeps (jobs may nest) */
#define SPIN_ROUNDS 2048 /* idle polls before sleeping (see relax()) */
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
    ctx_future_t *cache, *cache_last; /* records not given back yet */
    unsigned ncache, nctx, index;
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
static _Thread_local struct worker *self_worker CTX__TLS_IE;

static bool is_own_job(const ctx_pool_t *pool)
{
    return self_worker != NULL && self_worker->pool == pool;
}

static bool is_done(const ctx_future_t *f)
{
    return atomic_load_explicit(&((ctx_future_t *)f)->state,
                                memory_order_acquire) == JOB_DONE;
}

static void relax(unsigned round)
{
    if (round % 64 == 0) /* more threads than cores: let others run */
        sched_yield();
    else
        ctx__cpu_relax();
}

static void lock(ctx_pool_t *pool)
{
    unsigned n = 0;
    while (atomic_exchange_explicit(&pool->lock, true, memory_order_acquire))
        while (atomic_load_explicit(&pool->lock, memory_order_relaxed))
            relax(++n);
}

static void unlock(ctx_pool_t *pool)
{
    atomic_store_explicit(&pool->lock, false, memory_order_release);
}

/* Out of memory, a job has nowhere else to go: it waits for memory. */
static void wait_for_memory(void)
{
    nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* ------------------------------------------------------------------
 * Records and contexts
 * ---------------------------------------------------------------- */

static void record_free(ctx_pool_t *pool, ctx_future_t *rec)
{
    atomic_fetch_sub_explicit(&pool->nrecords, 1, memory_order_relaxed);
    ctx__free(rec);
}

static void free_push(ctx_pool_t *pool, ctx_future_t *first,
                      ctx_future_t *last)
{
    ctx_future_t *old =
        atomic_load_explicit(&pool->free_head, memory_order_relaxed);
    do
        last->next = old;
    while (!atomic_compare_exchange_weak_explicit(&pool->free_head, &old,
                                                  first, memory_order_release,
                                                  memory_order_relaxed));
}

static void cache_flush(struct worker *w)
{
    if (w->cache != NULL)
        free_push(w->pool, w->cache, w->cache_last);
    w->cache = NULL;
    w->ncache = 0;
}

/* w: the worker recycling, NULL for other threads.  Records are kept as
 * long as the pool is busy (the peak backlog needed them anyway) and
 * trimmed when a worker goes idle. */
static void recycle(ctx_pool_t *pool, struct worker *w, ctx_future_t *rec)
{
    if (w == NULL) {
        free_push(pool, rec, rec);
    } else {
        if (w->cache == NULL)
            w->cache_last = rec;
        rec->next = w->cache;
        w->cache = rec;
        if (++w->ncache >= FREE_BATCH)
            cache_flush(w);
    }
}

/* Under the lock.  The free stack is only ever emptied whole, so it has
 * no ABA problem; spare then serves submitters without atomics. */
static ctx_future_t *free_pop(ctx_pool_t *pool)
{
    ctx_future_t *rec = pool->spare;
    if (rec == NULL)
        rec = atomic_exchange_explicit(&pool->free_head, NULL,
                                       memory_order_acquire);
    if (rec != NULL)
        pool->spare = rec->next;
    return rec;
}

static void trim_records(ctx_pool_t *pool)
{
    if (atomic_load_explicit(&pool->nrecords, memory_order_relaxed) <=
        RECORD_CAP)
        return;
    lock(pool);
    ctx_future_t *keep = pool->spare, *last;
    pool->spare = NULL;
    unlock(pool);
    for (last = keep; last != NULL && last->next != NULL;)
        last = last->next;
    if (last != NULL)
        last->next = atomic_exchange(&pool->free_head, NULL);
    else
        keep = atomic_exchange(&pool->free_head, NULL);
    while (keep != NULL && atomic_load_explicit(&pool->nrecords,
                                                memory_order_relaxed) >
                               RECORD_CAP / 2) {
        ctx_future_t *next = keep->next;
        record_free(pool, keep);
        keep = next;
    }
    if (keep != NULL) {
        for (last = keep; last->next != NULL;)
            last = last->next;
        free_push(pool, keep, last);
    }
}

/* Drops a reference to rec; true when it was the last. */
static bool unref(ctx_future_t *rec)
{
    /* A sole holder cannot be raced: references are made at submit. */
    return atomic_load_explicit(&rec->refs, memory_order_acquire) == 1 ||
           atomic_fetch_sub_explicit(&rec->refs, 1, memory_order_acq_rel) == 1;
}

static void pool_free(ctx_pool_t *pool);

static void pool_unref(ctx_pool_t *pool)
{
    if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) == 1)
        pool_free(pool);
}

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

/* ------------------------------------------------------------------
 * Queues
 * ---------------------------------------------------------------- */

static bool has_work(ctx_pool_t *pool)
{
    if (atomic_load(&pool->inbox_head) != NULL)
        return true;
    for (unsigned i = 0; i < pool->nworkers; i++)
        if (atomic_load(&pool->workers[i].tail) !=
            atomic_load(&pool->workers[i].head))
            return true;
    return false;
}

/* After publishing work with a seq_cst store: see the top. */
static bool wake_needed(ctx_pool_t *pool)
{
    return atomic_load(&pool->n_idle) > atomic_load(&pool->pending);
}

static void wake_if_idle(ctx_pool_t *pool)
{
    if (!wake_needed(pool))
        return;
    pthread_mutex_lock(&pool->park_m);
    if (atomic_load(&pool->n_idle) > atomic_load(&pool->pending)) {
        atomic_fetch_add(&pool->pending, 1);
        pthread_cond_signal(&pool->work_cond);
    }
    pthread_mutex_unlock(&pool->park_m);
}

/* Owner only. */
static bool ring_push(struct worker *w, ctx_future_t *rec)
{
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&w->head, memory_order_acquire) >= RING_SIZE)
        return false;
    atomic_store_explicit(&w->slot[t & RING_MASK], rec, memory_order_relaxed);
    atomic_store(&w->tail, t + 1);
    return true;
}

/* Owner only. */
static ctx_future_t *ring_pop(struct worker *w)
{
    unsigned h = atomic_load_explicit(&w->head, memory_order_acquire);
    while (h != atomic_load_explicit(&w->tail, memory_order_relaxed)) {
        ctx_future_t *rec =
            atomic_load_explicit(&w->slot[h & RING_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return rec;
    }
    return NULL;
}

/* Takes half of v's ring, rounded up: returns the first and moves the rest
 * into self's ring, which is empty.  Slots are read before the CAS that
 * claims them; had v reused them, its head moved and the CAS fails. */
static ctx_future_t *ring_steal(struct worker *self, struct worker *v)
{
    unsigned mine = atomic_load_explicit(&self->tail, memory_order_relaxed);
    unsigned h = atomic_load_explicit(&v->head, memory_order_acquire);
    for (;;) {
        unsigned n = atomic_load_explicit(&v->tail, memory_order_acquire) - h;
        if (n == 0)
            return NULL;
        if (n > RING_SIZE) { /* h is stale */
            h = atomic_load_explicit(&v->head, memory_order_acquire);
            continue;
        }
        n -= n / 2;
        for (unsigned i = 1; i < n; i++)
            atomic_store_explicit(
                &self->slot[(mine + i - 1) & RING_MASK],
                atomic_load_explicit(&v->slot[(h + i) & RING_MASK],
                                     memory_order_relaxed),
                memory_order_relaxed);
        ctx_future_t *first =
            atomic_load_explicit(&v->slot[h & RING_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&v->head, &h, h + n,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire)) {
            if (n > 1) {
                atomic_store(&self->tail, mine + n - 1);
                wake_if_idle(self->pool);
            }
            return first;
        }
    }
}

static ctx_future_t *grab_inbox(struct worker *w)
{
    ctx_pool_t *pool = w->pool;
    if (atomic_load_explicit(&pool->inbox_head, memory_order_relaxed) == NULL)
        return NULL;
    lock(pool);
    ctx_future_t *first = atomic_exchange_explicit(&pool->inbox_head, NULL,
                                                   memory_order_relaxed);
    ctx_future_t *last = pool->inbox_tail, *rest;
    pool->inbox_tail = NULL;
    unlock(pool);
    if (first == NULL)
        return NULL;
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed), n = 0;
    unsigned room =
        RING_SIZE - (t - atomic_load_explicit(&w->head, memory_order_acquire));
    for (rest = first->next; rest != NULL && n < room; rest = rest->next)
        atomic_store_explicit(&w->slot[(t + n++) & RING_MASK], rest,
                              memory_order_relaxed);
    atomic_store(&w->tail, t + n);
    if (rest != NULL) { /* back to the head of the inbox */
        lock(pool);
        last->next = atomic_load_explicit(&pool->inbox_head,
                                          memory_order_relaxed);
        if (last->next == NULL)
            pool->inbox_tail = last;
        atomic_store(&pool->inbox_head, rest);
        unlock(pool);
    }
    if (n > 0 || rest != NULL)
        wake_if_idle(pool);
    return first;
}

static ctx_future_t *find_work(struct worker *w)
{
    ctx_future_t *rec = ring_pop(w);
    if (rec == NULL)
        rec = grab_inbox(w);
    unsigned n = w->pool->nworkers;
    for (unsigned i = 1; rec == NULL && i < n; i++)
        rec = ring_steal(w, &w->pool->workers[(w->index + i) % n]);
    return rec;
}

/* ------------------------------------------------------------------
 * Running jobs
 * ---------------------------------------------------------------- */

static void complete(ctx_future_t *rec, void *result)
{
    ctx_pool_t *pool = rec->pool;
    rec->result = result;
    atomic_store(&rec->state, JOB_DONE);
    unsigned waiters = atomic_load(&rec->waiters);
    if (waiters != 0) {
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
    /* c is entered nowhere: this fails only making the thread's state. */
    while (ctx__run(c, rec->fn, rec->arg, &result) != 0)
        wait_for_memory();
    /* Before completing, so what the job held is released once it is done. */
    context_put(w, c);
    return result;
}

static void execute(struct worker *w, ctx_future_t *rec)
{
    complete(rec, run(w, rec));
}

static bool claim(ctx_future_t *rec)
{
    int queued = JOB_QUEUED;
    return atomic_compare_exchange_strong(&rec->state, &queued, JOB_RUNNING);
}

/* Runs a record taken off a queue, unless a waiter ran it already. */
static void run_queued(struct worker *w, ctx_future_t *rec)
{
    if (!rec->future) /* nobody can wait on it, or claim it */
        run(w, rec);
    else if (claim(rec))
        execute(w, rec);
    if (!rec->future || unref(rec))
        recycle(w->pool, w, rec);
}

static int cond_wait(pthread_cond_t *cond, pthread_mutex_t *m,
                     const struct timespec *abstime)
{
    return abstime == NULL ? pthread_cond_wait(cond, m)
                           : pthread_cond_timedwait(cond, m, abstime);
}

/* Under park_m: whether a parked worker is done waiting. */
static bool park_over(ctx_pool_t *pool)
{
    if (has_work(pool))
        return true;
    if (!pool->finished && atomic_load(&pool->draining) &&
        pool->n_parked == pool->nworkers) {
        pool->finished = true; /* all idle, nothing left: nothing can come */
        pthread_cond_broadcast(&pool->work_cond);
    }
    return pool->finished;
}

/* Sleeps until there is work, or until f is done (a helping waiter; the
 * result is the wait's error), or until the pool is finished (a parked
 * worker, f NULL; the result is whether it is). */
static int idle_wait(ctx_pool_t *pool, ctx_future_t *f,
                     const struct timespec *abstime)
{
    int err = 0;
    pthread_mutex_lock(&pool->park_m);
    if (f != NULL)
        atomic_fetch_or(&f->waiters, WAIT_HELPING);
    else
        pool->n_parked++;
    atomic_fetch_add(&pool->n_idle, 1);
    while (err == 0 &&
           !(f != NULL ? is_done(f) || has_work(pool) : park_over(pool))) {
        err = cond_wait(&pool->work_cond, &pool->park_m, abstime);
        if (atomic_load(&pool->pending) > 0)
            atomic_fetch_sub(&pool->pending, 1);
    }
    atomic_fetch_sub(&pool->n_idle, 1);
    if (f == NULL) {
        pool->n_parked--;
        err = pool->finished;
    }
    pthread_mutex_unlock(&pool->park_m);
    return err;
}

static bool spin_for_work(ctx_pool_t *pool)
{
    for (unsigned i = 1; i <= SPIN_ROUNDS; i++) {
        if (has_work(pool))
            return true;
        relax(i);
    }
    return false;
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    self_worker = w;
    for (;;) {
        ctx_future_t *rec = find_work(w);
        if (rec != NULL) {
            run_queued(w, rec);
        } else if (!spin_for_work(w->pool)) {
            cache_flush(w);
            trim_records(w->pool);
            if (idle_wait(w->pool, NULL, NULL))
                break;
        }
    }
    while (w->nctx > 0)
        ctx_context_release(w->ctxs[--w->nctx]);
    self_worker = NULL;
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
    if (err != 0)
        return err;
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
        pthread_mutex_lock(&pool->park_m);
        pool->finished = true;
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
    if (pthread_mutex_init(&pool->park_m, NULL) == 0) {
        if (pthread_cond_init(&pool->work_cond, NULL) == 0) {
            if (pthread_cond_init(&pool->done_cond, NULL) == 0)
                return pool;
            pthread_cond_destroy(&pool->work_cond);
        }
        pthread_mutex_destroy(&pool->park_m);
    }
    ctx__free(mem);
    return NULL;
}

static void pool_free(ctx_pool_t *pool)
{
    ctx_future_t *lists[2] = {atomic_load(&pool->free_head), pool->spare};
    for (int i = 0; i < 2; i++)
        for (ctx_future_t *rec = lists[i], *next; rec != NULL; rec = next) {
            next = rec->next;
            record_free(pool, rec);
        }
    CTX__ASSERT(atomic_load(&pool->nrecords) == 0);
    pthread_cond_destroy(&pool->done_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->park_m);
    ctx__free(pool->mem);
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
    bool again = atomic_exchange(&pool->draining, true);
    unlock(pool);
    if (again)
        return EINVAL;
    pthread_mutex_lock(&pool->park_m);
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->park_m);
    join_workers(pool, pool->nworkers);
    lock(pool); /* a submitter being refused has left */
    unlock(pool);
    while (atomic_load_explicit(&pool->wakers, memory_order_acquire) != 0)
        sched_yield();
    pool_unref(pool);
    return 0;
}

/* ------------------------------------------------------------------
 * Submitting
 * ---------------------------------------------------------------- */

static int admit(ctx_pool_t *pool, bool own)
{
    if (!own && atomic_load_explicit(&pool->draining, memory_order_relaxed))
        return ESHUTDOWN;
    if (pool->max_queued != 0 &&
        atomic_load_explicit(&pool->queued, memory_order_relaxed) >=
            pool->max_queued)
        return EAGAIN;
    return 0;
}

/* Under the lock: admits a job and finds it a record, allocating one when
 * none is free (unlocked meanwhile, so admission is checked again). */
static int reserve(ctx_pool_t *pool, bool own, ctx_future_t **out)
{
    int err = admit(pool, own);
    if (err != 0)
        return err;
    ctx_future_t *rec = free_pop(pool);
    if (rec != NULL) {
        *out = rec;
        return 0;
    }
    unlock(pool);
    rec = ctx__malloc(sizeof *rec);
    if (rec != NULL)
        atomic_fetch_add_explicit(&pool->nrecords, 1, memory_order_relaxed);
    lock(pool);
    if (rec == NULL)
        return ENOMEM;
    if ((err = admit(pool, own)) != 0)
        free_push(pool, rec, rec);
    *out = rec;
    return err;
}

/* Under the lock. */
static void publish(ctx_pool_t *pool, ctx_future_t *rec, bool own)
{
    if (own && ring_push(self_worker, rec))
        return;
    rec->next = NULL;
    if (pool->inbox_tail != NULL)
        pool->inbox_tail->next = rec;
    else
        atomic_store(&pool->inbox_head, rec);
    pool->inbox_tail = rec;
}

/* Queues fn(arg) to run in a context of root, a reference it takes. */
static int enqueue(ctx_pool_t *pool, ctx__hnode_t *root, size_t len,
                   void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    bool own = is_own_job(pool);
    ctx_future_t *rec = NULL;
    lock(pool);
    int err = reserve(pool, own, &rec);
    if (err != 0) {
        unlock(pool);
        ctx__hamt_release(root);
        return err;
    }
    *rec = (ctx_future_t){.fn = fn, .arg = arg, .root = root, .len = len,
                          .pool = pool, .future = future != NULL};
    atomic_init(&rec->refs, future != NULL ? 2 : 1);
    if (future != NULL)
        atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
    if (pool->max_queued != 0)
        atomic_fetch_add_explicit(&pool->queued, 1, memory_order_relaxed);
    publish(pool, rec, own);
    /* Once unlocked the job may run and a concurrent destroy finish: it
     * waits for wakers before it frees the pool. */
    bool wake = wake_needed(pool);
    if (wake)
        atomic_fetch_add(&pool->wakers, 1);
    unlock(pool);
    if (wake) {
        wake_if_idle(pool);
        atomic_fetch_sub_explicit(&pool->wakers, 1, memory_order_release);
    }
    if (future != NULL)
        *future = rec;
    return 0;
}

int ctx_pool_submit(ctx_pool_t *pool, void *(*fn)(void *), void *arg,
                    ctx_future_t **future)
{
    if (pool == NULL || fn == NULL)
        return EINVAL;
    /* As ctx__copy_current(), without a context: a thread reads its own
     * current context without the lock. */
    const ctx_context_t *cur = ctx__ts.current;
    return cur == NULL ? enqueue(pool, NULL, 0, fn, arg, future)
                       : enqueue(pool, ctx__hamt_retain(cur->root), cur->len,
                                 fn, arg, future);
}

int ctx_pool_submit_in(ctx_pool_t *pool, const ctx_context_t *ctx,
                       void *(*fn)(void *), void *arg, ctx_future_t **future)
{
    if (pool == NULL || fn == NULL)
        return EINVAL;
    if (ctx == NULL)
        return enqueue(pool, NULL, 0, fn, arg, future);
    /* As ctx_context_copy(), without a context. */
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    ctx_context_t *c = (ctx_context_t *)ctx; /* the lock is not content */
    ctx__spin_lock(&c->lock);
    ctx__hnode_t *root = ctx__hamt_retain(c->root);
    size_t len = c->len;
    ctx__spin_unlock(&c->lock);
    return enqueue(pool, root, len, fn, arg, future);
}

/* ------------------------------------------------------------------
 * Futures
 * ---------------------------------------------------------------- */

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
    pthread_mutex_lock(&pool->park_m);
    atomic_fetch_or(&f->waiters, WAIT_BLOCKED);
    while (!is_done(f) && err == 0)
        err = cond_wait(&pool->done_cond, &pool->park_m, abstime);
    pthread_mutex_unlock(&pool->park_m);
    return is_done(f) ? 0 : err;
}

/* For jobs of f's pool: runs f inline if it has not started, else other
 * jobs until it is done, so jobs can wait on jobs with any pool size. */
static int help_until_done(struct worker *w, ctx_future_t *f,
                           const struct timespec *abstime)
{
    int err = 0;
    while (!is_done(f) && err == 0) {
        ctx_future_t *rec;
        if (claim(f))
            execute(w, f); /* its queue entry is a tombstone now */
        else if (abstime != NULL && time_is_up(abstime))
            err = ETIMEDOUT;
        else if ((rec = find_work(w)) != NULL)
            run_queued(w, rec);
        else if ((err = idle_wait(w->pool, f, abstime)) != 0 || is_done(f))
            wake_if_idle(w->pool); /* the wakeup may have been for work */
    }
    return is_done(f) ? 0 : err;
}

static int future_wait(ctx_future_t *f, const struct timespec *abstime,
                       void **result)
{
    if (!is_done(f)) {
        int err = is_own_job(f->pool) ? help_until_done(self_worker, f, abstime)
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
    if (unref(future))
        recycle(pool, NULL, future);
    pool_unref(pool);
}
