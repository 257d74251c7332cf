/*
 * watch.c - context-switch watchers (CPython 3.14's context watchers).
 *
 * Every switch of every thread tests one global word, the gate, which is
 * the number of watchers installed plus the number of calls to them under
 * way; only when it is non-zero does a switch come here.  So the watchers may cost what they like, and the
 * price of having none is one predictable branch.
 *
 * A watcher is a record (fn, arg, id, dead, inflight) in a static array.
 * The order of calls lives in small tables of (record, id) pairs that are
 * immutable once published: adding writes a new table into a spare buffer
 * and publishes it, so calls follow the order of adding.  A thread that
 * fires pins the current table by counting itself in its readers and
 * checking that it is still current (both sides sequentially consistent:
 * either the writer sees the reader or the reader sees the new table), so
 * no buffer is rewritten under a reader.
 *
 * Removing is per record, so it never waits for calls to other watchers:
 * it marks the record dead and waits until its inflight count, which every
 * caller raises before it looks at `dead` and drops after the call, is
 * zero (one, when the remover is inside this very watcher: removing
 * oneself is allowed).  A caller that raised the count after the mark sees
 * it and skips; one that raised it before is waited for.  Stale tables may
 * still name a dead record, and a record may be reused by a later add; the
 * id in the table entry then no longer matches the record's, and the
 * caller skips it.  The adder rewrites a record only when it is dead with
 * no caller inside, and clears `dead` last, so a caller that sees it alive
 * also sees its new id.  Nothing here allocates.
 *
 * Two watchers that remove each other while both run, on two threads,
 * wait for each other forever, as two threads joining each other would;
 * the header says so.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>

#define MAX_WATCHERS 8
#define NRECORDS 16 /* live ones, plus dead ones a caller is still inside */
#define NTABLES 8   /* the current one, plus stale ones callers still read */

struct record {
    _Atomic(ctx_watch_fn) fn;
    _Atomic(void *) arg;
    atomic_int id;          /* 0: never used */
    atomic_bool dead;
    atomic_uint inflight;   /* callers between their check and return */
};

struct table {
    atomic_uint readers;
    unsigned n;
    struct {
        struct record *rec;
        int id;
    } w[MAX_WATCHERS];
};

CTX__HIDDEN atomic_uint ctx__watch_gate;

static struct record records[NRECORDS];
static struct table tables[NTABLES];
static _Atomic(struct table *) current = &tables[0];
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER; /* add, remove */
static int last_id;                                         /* writer's */

static void call(ctx__tstate_t *ts, struct record *r, int id)
{
    CTX__CHAOS();
    atomic_fetch_add(&r->inflight, 1);
    CTX__CHAOS();
    if (!atomic_load(&r->dead) && atomic_load(&r->id) == id) {
        void *outer = ts->watch_pinned;
        ts->watch_pinned = r;
        CTX__CHAOS();
        atomic_load(&r->fn)(ts->current, atomic_load(&r->arg));
        ts->watch_pinned = outer;
    }
    CTX__CHAOS();
    atomic_fetch_sub_explicit(&r->inflight, 1, memory_order_release);
}

void ctx__watch_fire(ctx__tstate_t *ts)
{
    struct table *t;
    for (;;) {
        CTX__CHAOS();
        t = atomic_load(&current);
        CTX__CHAOS();
        atomic_fetch_add(&t->readers, 1);
        CTX__CHAOS();
        if (atomic_load(&current) == t)
            break;
        CTX__CHAOS();
        atomic_fetch_sub(&t->readers, 1); /* replaced meanwhile: again */
    }
    /* The gate counts us too, so a watcher that removes the last one
     * still gets EDEADLK for the switches it tries. */
    CTX__CHAOS();
    atomic_fetch_add(&ctx__watch_gate, 1);
    ts->in_watch++;
    for (unsigned i = 0; i < t->n; i++)
        call(ts, t->w[i].rec, t->w[i].id);
    ts->in_watch--;
    CTX__CHAOS();
    atomic_fetch_sub_explicit(&ctx__watch_gate, 1, memory_order_relaxed);
    CTX__CHAOS();
    atomic_fetch_sub_explicit(&t->readers, 1, memory_order_release);
}

/* Under the writer lock: a buffer nobody reads, to build the next table. */
static struct table *spare_table(void)
{
    CTX__CHAOS();
    struct table *cur = atomic_load(&current);
    for (;;) {
        for (unsigned i = 0; i < NTABLES; i++)
            if (&tables[i] != cur && atomic_load(&tables[i].readers) == 0)
                return &tables[i];
        sched_yield(); /* callers are still reading stale tables */
    }
}

/* Under the writer lock: a record no table entry can still call. */
static struct record *spare_record(void)
{
    for (unsigned i = 0; i < NRECORDS; i++) {
        struct record *r = &records[i];
        if ((atomic_load(&r->id) == 0 || atomic_load(&r->dead)) &&
            atomic_load(&r->inflight) == 0)
            return r;
    }
    return NULL;
}

static bool live(const struct table *t, unsigned i)
{
    const struct record *r = t->w[i].rec;
    CTX__CHAOS();
    return !atomic_load(&r->dead) && atomic_load(&r->id) == t->w[i].id;
}

int ctx_watch_add(ctx_watch_fn fn, void *arg, int *id)
{
    if (fn == NULL || id == NULL)
        return EINVAL;
    CTX__CHAOS();
    pthread_mutex_lock(&writer);
    CTX__CHAOS();
    struct table *cur = atomic_load(&current);
    unsigned n = 0;
    for (unsigned i = 0; i < cur->n; i++)
        n += live(cur, i);
    struct record *r = n < MAX_WATCHERS ? spare_record() : NULL;
    if (r == NULL) {
        pthread_mutex_unlock(&writer);
        return EAGAIN;
    }
    struct table *next = spare_table();
    n = 0;
    for (unsigned i = 0; i < cur->n; i++)
        if (live(cur, i))
            next->w[n++] = cur->w[i];
    /* Ids are positive and not reused until the int wraps. */
    last_id = last_id == __INT_MAX__ ? 1 : last_id + 1;
    CTX__CHAOS();
    atomic_store(&r->fn, fn);
    CTX__CHAOS();
    atomic_store(&r->arg, arg);
    CTX__CHAOS();
    atomic_store(&r->id, last_id);
    CTX__CHAOS();
    atomic_store(&r->dead, false);
    next->w[n].rec = r;
    next->w[n].id = last_id;
    next->n = n + 1;
    CTX__CHAOS();
    atomic_store(&current, next);
    CTX__CHAOS();
    atomic_fetch_add(&ctx__watch_gate, 1);
    *id = last_id;
    pthread_mutex_unlock(&writer);
    return 0;
}

int ctx_watch_remove(int id)
{
    if (id <= 0)
        return EINVAL;
    CTX__CHAOS();
    pthread_mutex_lock(&writer);
    struct record *r = NULL;
    for (unsigned i = 0; i < NRECORDS && r == NULL; i++)
        if (atomic_load(&records[i].id) == id &&
            !atomic_load(&records[i].dead))
            r = &records[i];
    if (r == NULL) {
        pthread_mutex_unlock(&writer);
        return EINVAL;
    }
    CTX__CHAOS();
    atomic_store(&r->dead, true);
    CTX__CHAOS();
    atomic_fetch_sub(&ctx__watch_gate, 1);
    pthread_mutex_unlock(&writer);
    /* Unlocked, so a watcher that adds or removes while we wait for it to
     * return cannot deadlock us.  The record cannot be reused meanwhile:
     * it is reused only with no caller inside. */
    unsigned self = ctx__ts.watch_pinned == r;
    CTX__CHAOS();
    while (atomic_load(&r->inflight) > self)
        sched_yield();
    return 0;
}
