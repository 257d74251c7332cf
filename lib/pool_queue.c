/*
 * pool_queue.c - where the pool's jobs wait: the job records and their
 * recycling, the inbox, the per-worker rings and stealing, and idle
 * threads waiting for work (the wakeup protocol).  See the top of pool.c.
 */
#include "config.h"

#include "pool.h"

#define FREE_BATCH 32u   /* records a worker gives back at once */
#define CACHE_MAX 64u    /* records a busy worker keeps for itself */
#define RECORD_CAP 4096  /* records an idle pool keeps for reuse */
#define SPIN_ROUNDS 2048 /* idle polls before sleeping (see relax()) */

/* ------------------------------------------------------------------
 * Records
 * ---------------------------------------------------------------- */

static void record_free(ctx_pool_t *pool, ctx_future_t *rec)
{
    CTX__CHAOS();
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

/* Gives every record of w's cache back to the free stack. */
static void cache_flush(struct worker *w)
{
    ctx_future_t *last = w->cache;
    if (last == NULL)
        return;
    while (last->next != NULL)
        last = last->next;
    free_push(w->pool, w->cache, last);
    w->cache = NULL;
    w->ncache = 0;
}

/* w: the worker recycling, NULL for other threads.  A worker keeps what it
 * recycles for its own jobs' submits (no lock, no shared line) and gives a
 * batch back whenever it holds more than CACHE_MAX.  Records are kept as
 * long as the pool is busy (the peak backlog needed them anyway) and
 * trimmed when a worker goes idle. */
void ctx__pool_recycle(ctx_pool_t *pool, struct worker *w, ctx_future_t *rec)
{
    if (w == NULL) {
        free_push(pool, rec, rec);
        return;
    }
    rec->next = w->cache;
    w->cache = rec;
    if (++w->ncache > CACHE_MAX) {
        ctx_future_t *last = rec;
        for (unsigned i = 1; i < FREE_BATCH; i++)
            last = last->next;
        w->cache = last->next;
        w->ncache -= FREE_BATCH;
        free_push(pool, rec, last);
    }
}

/* A record for a submit by w's job: from w's cache, else the whole free
 * stack becomes the cache.  Emptying it whole keeps it free of ABA, as for
 * ctx__pool_free_pop(), without the submitters' lock.  ncache counts only
 * what w recycled (counting the stack would walk it, a cache miss per
 * record), which is what CACHE_MAX is about. */
ctx_future_t *ctx__pool_cache_pop(struct worker *w)
{
    ctx_future_t *rec = w->cache;
    if (rec == NULL) {
        CTX__CHAOS();
        rec = atomic_exchange_explicit(&w->pool->free_head, NULL,
                                       memory_order_acquire);
        if (rec == NULL)
            return NULL;
    }
    w->ncache -= w->ncache > 0;
    w->cache = rec->next;
    return rec;
}

/* Under the lock.  The free stack is only ever emptied whole, so it has
 * no ABA problem; spare then serves submitters without atomics. */
ctx_future_t *ctx__pool_free_pop(ctx_pool_t *pool)
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
    CTX__CHAOS();
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

/* Every record left, once the pool is being freed. */
void ctx__pool_free_records(ctx_pool_t *pool)
{
    ctx_future_t *lists[2] = {atomic_load(&pool->free_head), pool->spare};
    for (int i = 0; i < 2; i++)
        for (ctx_future_t *rec = lists[i], *next; rec != NULL; rec = next) {
            next = rec->next;
            record_free(pool, rec);
        }
}

/* ------------------------------------------------------------------
 * Queues
 * ---------------------------------------------------------------- */

static bool has_work(ctx_pool_t *pool)
{
    CTX__CHAOS();
    if (atomic_load(&pool->inbox_head) != NULL)
        return true;
    for (unsigned i = 0; i < pool->nworkers; i++)
        if (atomic_load(&pool->workers[i].tail) !=
            atomic_load(&pool->workers[i].head))
            return true;
    return false;
}

/* After publishing work with a seq_cst store: see the top of pool.c. */
bool ctx__pool_wake_needed(ctx_pool_t *pool)
{
    CTX__CHAOS();
    return atomic_load(&pool->n_idle) > atomic_load(&pool->pending);
}

void ctx__pool_wake_if_idle(ctx_pool_t *pool)
{
    if (!ctx__pool_wake_needed(pool))
        return;
    CTX__CHAOS();
    pthread_mutex_lock(&pool->park_m);
    CTX__CHAOS();
    if (atomic_load(&pool->n_idle) > atomic_load(&pool->pending)) {
        CTX__CHAOS();
        atomic_fetch_add(&pool->pending, 1);
        CTX__CHAOS();
        pthread_cond_signal(&pool->work_cond);
    }
    pthread_mutex_unlock(&pool->park_m);
}

/* Owner only. */
static bool ring_push(struct worker *w, ctx_future_t *rec)
{
    CTX__CHAOS();
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed);
    if (t - atomic_load_explicit(&w->head, memory_order_acquire) >= RING_SIZE)
        return false;
    CTX__CHAOS();
    atomic_store_explicit(&w->slot[t & RING_MASK], rec, memory_order_relaxed);
    CTX__CHAOS();
    atomic_store(&w->tail, t + 1);
    return true;
}

/* Owner only: the oldest job of w's ring (FIFO, for fairness between
 * unrelated jobs). */
static ctx_future_t *ring_pop(struct worker *w)
{
    CTX__CHAOS();
    unsigned h = atomic_load_explicit(&w->head, memory_order_acquire);
    while (h != atomic_load_explicit(&w->tail, memory_order_relaxed)) {
        ctx_future_t *rec =
            atomic_load_explicit(&w->slot[h & RING_MASK], memory_order_relaxed);
        CTX__CHAOS();
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return rec;
    }
    return NULL;
}

/* Owner only: the newest job of w's ring (LIFO: the one just submitted,
 * cache-hot, usually what its submitter is about to wait for), or NULL;
 * with want set, only if the newest is want.  As in Chase and Lev's deque:
 * the owner lowers tail, then reads head, both seq_cst, and thieves read
 * head, then tail, seq_cst; a thief takes at most half of what it saw,
 * rounded up, so it can reach the slot being popped only when that is the
 * last one, and then the two settle it by CAS on head. */
ctx_future_t *ctx__pool_ring_pop_newest(struct worker *w, ctx_future_t *want)
{
    CTX__CHAOS();
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed) - 1;
    CTX__CHAOS();
    unsigned h = atomic_load_explicit(&w->head, memory_order_relaxed);
    if ((int)(t - h) < 0)
        return NULL; /* empty */
    ctx_future_t *rec =
        atomic_load_explicit(&w->slot[t & RING_MASK], memory_order_relaxed);
    if (want != NULL && rec != want)
        return NULL;
    CTX__CHAOS();
    atomic_store(&w->tail, t);
    CTX__CHAOS();
    h = atomic_load(&w->head);
    if ((int)(t - h) > 0)
        return rec; /* no thief can reach slot t */
    if (t == h && !atomic_compare_exchange_strong(&w->head, &h, h + 1))
        rec = NULL; /* a thief took the last one */
    else if (t != h)
        rec = NULL; /* taken before we lowered tail */
    CTX__CHAOS();
    atomic_store_explicit(&w->tail, t + 1, memory_order_release);
    return rec;
}

/* Owner only: whether want is among the newest `depth` jobs of w's ring
 * (only the owner writes the slots from head to tail). */
bool ctx__pool_ring_holds(struct worker *w, const ctx_future_t *want,
                          unsigned depth)
{
    CTX__CHAOS();
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed);
    CTX__CHAOS();
    unsigned h = atomic_load_explicit(&w->head, memory_order_acquire);
    for (unsigned i = t; (int)(i - h) > 0 && t - i < depth; i--)
        if (atomic_load_explicit(&w->slot[(i - 1) & RING_MASK],
                                 memory_order_relaxed) == want)
            return true;
    return false;
}

/* Takes the oldest job of v's ring: Chase and Lev's steal (head, then
 * tail, seq_cst; see ctx__pool_ring_pop_newest()).  One job, not half of
 * the ring: the owner pops its newest jobs from the tail without moving
 * head and may push new ones into the slots it freed, so slots a thief
 * read beyond the one at head may be stale by the time its CAS on head
 * succeeds (an unchanged head proves nothing about them).  The slot at
 * head itself is safe: the owner can reuse it only after taking it, which
 * moves head (the last-job CAS), and then the thief's CAS fails. */
static ctx_future_t *ring_steal(struct worker *v)
{
    for (;;) {
        CTX__CHAOS();
        unsigned h = atomic_load(&v->head);
        int avail = (int)(atomic_load(&v->tail) - h);
        if (avail <= 0)
            return NULL; /* empty, or its owner is popping the last one */
        if (avail > (int)RING_SIZE)
            continue; /* h is stale */
        ctx_future_t *first =
            atomic_load_explicit(&v->slot[h & RING_MASK], memory_order_relaxed);
        CTX__CHAOS();
        if (atomic_compare_exchange_strong_explicit(&v->head, &h, h + 1,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire))
            return first;
    }
}

static ctx_future_t *grab_inbox(struct worker *w)
{
    ctx_pool_t *pool = w->pool;
    CTX__CHAOS();
    if (atomic_load_explicit(&pool->inbox_head, memory_order_relaxed) == NULL)
        return NULL;
    lock(pool);
    CTX__CHAOS();
    ctx_future_t *first = atomic_exchange_explicit(&pool->inbox_head, NULL,
                                                   memory_order_relaxed);
    ctx_future_t *last = pool->inbox_tail, *rest;
    pool->inbox_tail = NULL;
    unlock(pool);
    if (first == NULL)
        return NULL;
    CTX__CHAOS();
    unsigned t = atomic_load_explicit(&w->tail, memory_order_relaxed), n = 0;
    /* Half the ring at most: the rest is room for what these jobs submit,
     * which would otherwise go through the inbox and its lock. */
    unsigned used = t - atomic_load_explicit(&w->head, memory_order_acquire);
    unsigned room = used < RING_SIZE / 2 ? RING_SIZE / 2 - used : 0;
    for (rest = first->next; rest != NULL && n < room; rest = rest->next)
        atomic_store_explicit(&w->slot[(t + n++) & RING_MASK], rest,
                              memory_order_relaxed);
    CTX__CHAOS();
    atomic_store(&w->tail, t + n);
    if (rest != NULL) { /* back to the head of the inbox */
        lock(pool);
        last->next = atomic_load_explicit(&pool->inbox_head,
                                          memory_order_relaxed);
        if (last->next == NULL)
            pool->inbox_tail = last;
        CTX__CHAOS();
        atomic_store(&pool->inbox_head, rest);
        unlock(pool);
    }
    if (n > 0 || rest != NULL)
        ctx__pool_wake_if_idle(pool);
    return first;
}

ctx_future_t *ctx__pool_find_work(struct worker *w)
{
    ctx_future_t *rec = ring_pop(w);
    if (rec == NULL)
        rec = grab_inbox(w);
    unsigned n = w->pool->nworkers;
    for (unsigned i = 1; rec == NULL && i < n; i++)
        rec = ring_steal(&w->pool->workers[(w->index + i) % n]);
    return rec;
}

/* Owner only, no lock: false when w's ring is full. */
bool ctx__pool_push_own(struct worker *w, ctx_future_t *rec)
{
    return ring_push(w, rec);
}

/* Under the lock. */
void ctx__pool_publish(ctx_pool_t *pool, ctx_future_t *rec)
{
    rec->next = NULL;
    if (pool->inbox_tail != NULL)
        pool->inbox_tail->next = rec;
    else
        atomic_store(&pool->inbox_head, rec);
    pool->inbox_tail = rec;
}

/* ------------------------------------------------------------------
 * Idling
 * ---------------------------------------------------------------- */

/* Under park_m: whether a parked worker is done waiting. */
static bool park_over(ctx_pool_t *pool)
{
    if (has_work(pool))
        return true;
    if (!pool->finished && atomic_load(&pool->draining) &&
        pool->n_parked == pool->nworkers) {
        pool->finished = true; /* all idle, nothing left: nothing can come */
        CTX__CHAOS();
        pthread_cond_broadcast(&pool->work_cond);
    }
    return pool->finished;
}

/* Sleeps until there is work, or until f is done (a helping waiter; the
 * result is the wait's error), or until the pool is finished (a parked
 * worker, f NULL; the result is whether it is). */
int ctx__pool_idle_wait(ctx_pool_t *pool, ctx_future_t *f,
                        const struct timespec *abstime)
{
    int err = 0;
    CTX__CHAOS();
    pthread_mutex_lock(&pool->park_m);
    if (f != NULL)
        atomic_fetch_or(&f->waiters, WAIT_HELPING);
    else
        pool->n_parked++;
    CTX__CHAOS();
    atomic_fetch_add(&pool->n_idle, 1);
    while (err == 0 &&
           !(f != NULL ? is_done(f) || has_work(pool) : park_over(pool))) {
        err = cond_wait(&pool->work_cond, &pool->park_m, abstime);
        CTX__CHAOS();
        if (atomic_load(&pool->pending) > 0)
            atomic_fetch_sub(&pool->pending, 1);
    }
    CTX__CHAOS();
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

/* An idle worker: spins, then gives its records back and sleeps.  True
 * when the pool is finished. */
bool ctx__pool_park(struct worker *w)
{
    if (spin_for_work(w->pool))
        return false;
    cache_flush(w);
    trim_records(w->pool);
    return ctx__pool_idle_wait(w->pool, NULL, NULL) != 0;
}
