/*
 * uv.c - libctxvars-uv: uv_queue_work() that carries the caller's context.
 *
 * Only ctxvars' public API is used, so this is a library of its own on top
 * of libctxvars.so, and libctxvars itself never depends on libuv.
 *
 * Finding our state from the request.  libuv calls the work and after
 * callbacks with the request alone, and the request must be the user's
 * own: uv_cancel(req) has to reach what libuv queued, so we cannot queue
 * a request of ours in its place, and req->data is the user's, so we
 * cannot hang our record there.  The fields libuv keeps in the request
 * (reserved[], the work fields) are libuv's private business.  What is
 * left is a side table keyed by the request's address: a chained hash
 * table under one mutex.  An address is a sound key, since a request in
 * flight cannot be queued again until its after callback has run, and the
 * record leaves the table before that callback is called, so the callback
 * may queue the same request again.  The lock is held for a lookup and a
 * pointer swap (seldom a rehash), which is nothing next to the trip
 * through libuv's threadpool queue, itself under a mutex.
 *
 * Everything that can fail is done at the call: the record, the two
 * copies of the snapshot (one per callback, so neither sees the other's
 * changes), and the calling thread's first-use setup (see enter_once), so
 * the callbacks never meet an error they could not report.
 */
#include "config.h"

#include <ctxvars-uv.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/* The test suite compiles this file against the convenience library, so
 * that the fault-injection sweep reaches our allocations too. */
#ifdef CTX_UV_FAULTS
#include "internal.h"
#define uv_ctx_malloc ctx__malloc
#define uv_ctx_calloc ctx__calloc
#define uv_ctx_free ctx__free
#else
#define uv_ctx_malloc malloc
#define uv_ctx_calloc calloc
#define uv_ctx_free free
#endif

struct work {
    uv_work_t *req;        /* the key */
    struct work *next;     /* the bucket's chain */
    uv_work_cb work_cb;
    uv_after_work_cb after_cb;
    ctx_context_t *work_ctx;  /* work_cb's copy of the snapshot */
    ctx_context_t *after_ctx; /* after_cb's copy */
    int ran;               /* 0, or UV_ENOMEM: work_cb could not be run */
    int status;            /* for after_cb */
};

/* ------------------------------------------------------------------
 * The side table.  It starts on a static bucket array, so an insert never
 * needs memory; it grows onto the heap when chains get longer than one on
 * average (a failed growth only leaves chains longer), and goes back to
 * the static array when it empties.
 * ---------------------------------------------------------------- */
#define STATIC_BUCKETS 64

static struct {
    pthread_mutex_t lock;
    struct work **buckets;
    size_t mask;  /* buckets - 1, a power of two minus one */
    size_t count;
    struct work *fixed[STATIC_BUCKETS];
} table = {PTHREAD_MUTEX_INITIALIZER, NULL, STATIC_BUCKETS - 1, 0, {NULL}};

static size_t slot_of(const uv_work_t *req, size_t mask)
{
    /* Requests are aligned and often allocated in a row: multiply so the
     * low bits of the address do not pick the bucket alone. */
    uint64_t h = (uint64_t)(uintptr_t)req * UINT64_C(0x9e3779b97f4a7c15);
    return (size_t)(h >> 32) & mask;
}

static struct work **buckets(void)
{
    if (table.buckets == NULL)
        table.buckets = table.fixed;
    return table.buckets;
}

static void grow(void)
{
    size_t n = (table.mask + 1) * 2;
    struct work **b = uv_ctx_calloc(n, sizeof *b);
    if (b == NULL)
        return;
    struct work **old = buckets();
    for (size_t i = 0; i <= table.mask; i++) {
        while (old[i] != NULL) {
            struct work *w = old[i];
            old[i] = w->next;
            size_t s = slot_of(w->req, n - 1);
            w->next = b[s];
            b[s] = w;
        }
    }
    if (old != table.fixed)
        uv_ctx_free(old);
    table.buckets = b;
    table.mask = n - 1;
}

/* false when req is in flight already (the caller's mistake). */
static bool table_put(struct work *w)
{
    bool ok = true;
    pthread_mutex_lock(&table.lock);
    struct work **b = buckets();
    for (struct work *p = b[slot_of(w->req, table.mask)]; p; p = p->next)
        if (p->req == w->req)
            ok = false;
    if (ok) {
        if (table.count > table.mask)
            grow();
        b = buckets();
        size_t s = slot_of(w->req, table.mask);
        w->next = b[s];
        b[s] = w;
        table.count++;
    }
    pthread_mutex_unlock(&table.lock);
    return ok;
}

static struct work *table_find(const uv_work_t *req)
{
    pthread_mutex_lock(&table.lock);
    struct work *w = buckets()[slot_of(req, table.mask)];
    while (w != NULL && w->req != req)
        w = w->next;
    pthread_mutex_unlock(&table.lock);
    return w;
}

static struct work *table_take(const uv_work_t *req)
{
    pthread_mutex_lock(&table.lock);
    struct work **pp = &buckets()[slot_of(req, table.mask)];
    while (*pp != NULL && (*pp)->req != req)
        pp = &(*pp)->next;
    struct work *w = *pp;
    if (w != NULL) {
        *pp = w->next;
        if (--table.count == 0 && table.buckets != table.fixed) {
            uv_ctx_free(table.buckets);
            table.buckets = table.fixed;
            table.mask = STATIC_BUCKETS - 1;
        }
    }
    pthread_mutex_unlock(&table.lock);
    return w;
}

/* ------------------------------------------------------------------
 * The callbacks libuv calls.
 * ---------------------------------------------------------------- */

static void work_free(struct work *w)
{
    ctx_context_release(w->work_ctx);
    ctx_context_release(w->after_ctx);
    uv_ctx_free(w);
}

static void *call_work(void *arg)
{
    struct work *w = arg;
    w->work_cb(w->req);
    return NULL;
}

static void *call_after(void *arg)
{
    struct work *w = arg;
    w->after_cb(w->req, w->status);
    return NULL;
}

/* On a threadpool thread.  The record stays in the table: only the after
 * callback, which libuv runs once this has returned, takes it out.
 * ctx_context_run() rather than CTX_ENTER: it also exits what work_cb
 * leaves entered, so the pool thread is clean for the next request. */
static void work_trampoline(uv_work_t *req)
{
    struct work *w = table_find(req);
    if (w == NULL)
        abort(); /* cannot happen: put before queueing, taken after */
    if (ctx_context_run(w->work_ctx, call_work, w, NULL) != 0)
        w->ran = UV_ENOMEM; /* the thread's first use: nowhere to report */
}

/* On the loop thread, when the work ran or was cancelled. */
static void after_trampoline(uv_work_t *req, int status)
{
    struct work *w = table_take(req);
    if (w == NULL)
        abort();
    w->status = status == 0 ? w->ran : status;
    /* after_ctx is ours alone and this thread passed enter_once(), so
     * the run cannot fail when libuv's rules were kept; if it does, the
     * callback is still owed its call, with the reason. */
    if (w->after_cb != NULL &&
        ctx_context_run(w->after_ctx, call_after, w, NULL) != 0) {
        w->status = UV_ENOMEM;
        w->after_cb(req, w->status);
    }
    work_free(w);
}

/* Entering a context fails only with ENOMEM, and only on a thread's first
 * use of ctxvars (its base context).  The after callback runs on the loop
 * thread, which is this one (libuv wants uv_queue_work() called there), so
 * one enter here takes that failure now, where it can be reported. */
static int enter_once(ctx_context_t *ctx)
{
    if (ctx_context_enter(ctx) != 0)
        return UV_ENOMEM;
    (void)ctx_context_exit(ctx);
    return 0;
}

int ctx_uv_queue_work(uv_loop_t *loop, uv_work_t *req, uv_work_cb work_cb,
                      uv_after_work_cb after_work_cb)
{
    if (loop == NULL || req == NULL || work_cb == NULL)
        return UV_EINVAL;
    struct work *w = uv_ctx_malloc(sizeof *w);
    if (w == NULL)
        return UV_ENOMEM;
    *w = (struct work){.req = req, .work_cb = work_cb,
                       .after_cb = after_work_cb};
    /* Copies fail only with ENOMEM (the arguments are good). */
    if (ctx_copy_context(&w->work_ctx) != 0 ||
        ctx_context_copy(w->work_ctx, &w->after_ctx) != 0) {
        work_free(w);
        return UV_ENOMEM;
    }
    int err = enter_once(w->after_ctx);
    if (err == 0 && !table_put(w))
        err = UV_EBUSY;
    if (err != 0) {
        work_free(w);
        return err;
    }
    err = uv_queue_work(loop, req, work_trampoline, after_trampoline);
    if (err != 0)
        work_free(table_take(req));
    return err;
}
