/*
 * watch.c - context-switch watchers (CPython 3.14's context watchers).
 *
 * Every switch of every thread tests one global word, the gate, which is
 * the number of watchers installed; only when it is non-zero does a
 * switch come here.  So the watchers may cost what they like, and the
 * price of having none is one predictable branch.
 *
 * The watchers live in small tables that are immutable once published.
 * A thread that fires pins the current table by counting itself in its
 * readers (and checking the table is still current after that, which,
 * both sides being sequentially consistent, either the writer sees or the
 * reader does).  Adding writes a new table into a spare buffer that no
 * thread reads and publishes it, so the order of calls is the order of
 * adding.  Removing marks the watcher's entry dead in the current table
 * (and in the one the remover itself is calling from, if it is a watcher
 * removing itself or another), publishes a table without it, and then
 * waits until no other thread reads the old ones: from then on nobody is
 * inside the removed function or can start calling it.  A remover that is
 * itself a reader waits for the others only.  The buffers are static, so
 * neither call allocates: a spare is a buffer that is not current and has
 * no readers.  Old tables stay pinned only while a watcher call made from
 * them lasts, so eight buffers leave one unless six threads sit inside
 * watchers at once (then the writer waits for them).
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>

#define MAX_WATCHERS 8
#define NTABLES 8

struct table {
    atomic_uint readers;
    unsigned n;
    struct {
        ctx_watch_fn fn;
        void *arg;
        int id;
        atomic_bool dead;
    } w[MAX_WATCHERS];
};

CTX__HIDDEN atomic_uint ctx__watch_gate;

static struct table tables[NTABLES];
static _Atomic(struct table *) current = &tables[0];
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER; /* add, remove */
static int last_id;                                         /* writer's */

void ctx__watch_fire(ctx__tstate_t *ts)
{
    struct table *t;
    for (;;) {
        t = atomic_load(&current);
        atomic_fetch_add(&t->readers, 1);
        if (atomic_load(&current) == t)
            break;
        atomic_fetch_sub(&t->readers, 1); /* replaced meanwhile: again */
    }
    ts->in_watch = 1;
    ts->watch_pinned = t;
    for (unsigned i = 0; i < t->n; i++)
        if (!atomic_load(&t->w[i].dead))
            t->w[i].fn(ts->current, t->w[i].arg);
    ts->watch_pinned = NULL;
    ts->in_watch = 0;
    atomic_fetch_sub_explicit(&t->readers, 1, memory_order_release);
}

/* Under the writer lock: a buffer nobody reads, to build the next table. */
static struct table *spare(void)
{
    struct table *cur = atomic_load(&current);
    for (;;) {
        for (unsigned i = 0; i < NTABLES; i++)
            if (&tables[i] != cur && atomic_load(&tables[i].readers) == 0)
                return &tables[i];
        sched_yield(); /* others are still calling from old tables */
    }
}

/* Waits until the calling thread is t's only reader, if it reads t, or
 * until t has no reader at all. */
static void drain(struct table *t)
{
    unsigned self = ctx__ts.watch_pinned == t;
    while (atomic_load(&t->readers) > self)
        sched_yield();
}

/* Under the writer lock: publishes a table of cur's live watchers but
 * `drop`, plus fn/arg when fn is not NULL.  EAGAIN when that is too many. */
static int publish(struct table *cur, int drop, ctx_watch_fn fn, void *arg)
{
    struct table *next = spare();
    unsigned n = 0;
    for (unsigned i = 0; i < cur->n; i++) {
        if (cur->w[i].id == drop || atomic_load(&cur->w[i].dead))
            continue;
        next->w[n].fn = cur->w[i].fn;
        next->w[n].arg = cur->w[i].arg;
        next->w[n].id = cur->w[i].id;
        atomic_store(&next->w[n].dead, false);
        n++;
    }
    if (fn != NULL) {
        if (n == MAX_WATCHERS)
            return EAGAIN;
        /* Ids are positive and not reused until the int wraps. */
        last_id = last_id == __INT_MAX__ ? 1 : last_id + 1;
        next->w[n].fn = fn;
        next->w[n].arg = arg;
        next->w[n].id = last_id;
        atomic_store(&next->w[n].dead, false);
        n++;
    }
    next->n = n;
    atomic_store(&current, next);
    return 0;
}

int ctx_watch_add(ctx_watch_fn fn, void *arg, int *id)
{
    if (fn == NULL || id == NULL)
        return EINVAL;
    pthread_mutex_lock(&writer);
    int err = publish(atomic_load(&current), 0, fn, arg);
    if (err == 0) {
        atomic_fetch_add(&ctx__watch_gate, 1);
        *id = last_id;
    }
    pthread_mutex_unlock(&writer);
    return err;
}

/* Marks watcher id dead in t; false if t has no live entry for it. */
static bool kill(struct table *t, int id)
{
    for (unsigned i = 0; i < t->n; i++)
        if (t->w[i].id == id && !atomic_load(&t->w[i].dead)) {
            atomic_store(&t->w[i].dead, true);
            return true;
        }
    return false;
}

int ctx_watch_remove(int id)
{
    pthread_mutex_lock(&writer);
    struct table *cur = atomic_load(&current);
    if (id <= 0 || !kill(cur, id)) {
        pthread_mutex_unlock(&writer);
        return EINVAL;
    }
    /* A watcher that removes one while it runs goes on iterating the
     * table it pinned, which may be older than cur: the entry dies there
     * too, and other threads may still be reading that one as well. */
    struct table *mine = ctx__ts.watch_pinned;
    if (mine != NULL && mine != cur)
        kill(mine, id);
    (void)publish(cur, id, NULL, NULL); /* fewer: cannot be too many */
    atomic_fetch_sub(&ctx__watch_gate, 1);
    pthread_mutex_unlock(&writer);
    /* Unlocked, so a watcher that adds or removes while we wait for it
     * cannot deadlock us.  Nobody starts on cur or mine any more (neither
     * is current); those inside finish. */
    drain(cur);
    if (mine != NULL && mine != cur)
        drain(mine);
    return 0;
}
