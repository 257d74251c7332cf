/*
 * context.c - contexts: creation, copies, entering and leaving, and the
 * read-only mapping view (get, contains, len, foreach).
 *
 * Entering is setting the entered flag in ctx->state with a
 * compare-and-swap, so "one thread at a time" needs no lock and the loser
 * learns EBUSY at once.  The claim is an acquire and the exit a release,
 * which hands everything the last owner wrote (root, len, prev) to the next
 * owner.  The flag counts as a reference, so releasing an entered context
 * from another thread cannot pull it out from under its owner.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>

int ctx__context_alloc(ctx__hnode_t *root, size_t len, ctx_context_t **out)
{
    ctx_context_t *c = ctx__spare_take(CTX__SPARE_CONTEXT, sizeof *c);
    if (c == NULL)
        return ENOMEM;
    CTX__SET_MAGIC(c, CTX__MAGIC_CONTEXT);
    atomic_init(&c->state, CTX__REF);
    atomic_init(&c->lock.locked, false);
    c->private_ = false;
    c->root = root;
    c->len = len;
    c->prev = NULL;
    *out = c;
    return 0;
}

int ctx_context_new(ctx_context_t **out)
{
    if (out == NULL)
        return EINVAL;
    return ctx__context_alloc(NULL, 0, out);
}

/* A new context sharing root (a reference the new context takes over). */
static int context_from(ctx__hnode_t *root, size_t len, bool private_,
                        ctx_context_t **out)
{
    int err = ctx__context_alloc(root, len, out);
    if (err != 0) {
        ctx__hamt_release(root);
        return err;
    }
    (*out)->private_ = private_;
    return 0;
}

/* A reference to the root of the calling thread's current context.  A
 * private context whose root nobody else holds is out of every other
 * thread's reach, so a plain store does what the atomic increment would. */
static ctx__hnode_t *retain_own_root(const ctx_context_t *cur)
{
    ctx__hnode_t *root = cur->root;
    if (cur->private_ && root != NULL && ctx__hamt_refcount(root) == 1) {
        ctx__hamt_set_refcount(root, 2);
        return root;
    }
    return ctx__hamt_retain(root);
}

ctx__hnode_t *ctx__snapshot_current(size_t *len)
{
    /* The owner reads its own current context without the lock. */
    const ctx_context_t *cur = ctx__ts.current;
    if (cur == NULL) {
        *len = 0;
        return NULL;
    }
    *len = cur->len;
    return retain_own_root(cur);
}

ctx__hnode_t *ctx__snapshot_of(const ctx_context_t *ctx, size_t *len)
{
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    ctx_context_t *c = (ctx_context_t *)ctx; /* the lock is not content */
    ctx__spin_lock(&c->lock);
    ctx__hnode_t *root = ctx__hamt_retain(c->root);
    *len = c->len;
    ctx__spin_unlock(&c->lock);
    return root;
}

int ctx__copy_current(ctx_context_t **out)
{
    size_t len;
    ctx__hnode_t *root = ctx__snapshot_current(&len);
    return context_from(root, len, true, out);
}

int ctx_copy_context(ctx_context_t **out)
{
    if (out == NULL)
        return EINVAL;
    int err = ctx__copy_current(out);
    if (err == 0)
        (*out)->private_ = false;
    return err;
}

int ctx_context_copy(const ctx_context_t *ctx, ctx_context_t **out)
{
    if (ctx == NULL || out == NULL)
        return EINVAL;
    size_t len;
    ctx__hnode_t *root = ctx__snapshot_of(ctx, &len);
    return context_from(root, len, false, out);
}

ctx_context_t *ctx_context_retain(ctx_context_t *ctx)
{
    if (ctx != NULL) {
        CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
        CTX__CHAOS();
        atomic_fetch_add_explicit(&ctx->state, CTX__REF, memory_order_relaxed);
    }
    return ctx;
}

static void context_free(ctx_context_t *ctx)
{
    CTX__SET_MAGIC(ctx, CTX__MAGIC_DEAD);
    ctx__hamt_release(ctx->root);
    ctx__spare_give(CTX__SPARE_CONTEXT, ctx);
}

/* Drops `amount` from the state word (a reference, or the entered flag). */
static void context_put(ctx_context_t *ctx, size_t amount)
{
    /* A sole reference with no entered flag cannot be raced: taking a new
     * reference needs an existing one.  So skip the atomic RMW. */
    CTX__CHAOS();
    if (atomic_load_explicit(&ctx->state, memory_order_acquire) == amount ||
        atomic_fetch_sub_explicit(&ctx->state, amount, memory_order_acq_rel) ==
            amount)
        context_free(ctx);
}

void ctx_context_release(ctx_context_t *ctx)
{
    if (ctx == NULL)
        return;
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    context_put(ctx, CTX__REF);
}

void ctx__context_leave(ctx_context_t *ctx)
{
    /* As in enter: nobody else can hold a private context, so its flag
     * clears with a store.  (Not for shared contexts: there the last other
     * reference may be dropped at this very moment.) */
    if (ctx->private_ && atomic_load_explicit(&ctx->state,
                                              memory_order_relaxed) ==
                             (CTX__REF | CTX__ENTERED)) {
        CTX__CHAOS();
        atomic_store_explicit(&ctx->state, CTX__REF, memory_order_release);
        return;
    }
    context_put(ctx, CTX__ENTERED);
}

/* ------------------------------------------------------------------
 * Entering and leaving
 * ---------------------------------------------------------------- */

int ctx__context_claim(ctx_context_t *ctx)
{
    CTX__CHAOS();
    size_t s = atomic_load_explicit(&ctx->state, memory_order_acquire);
    if (ctx->private_ && s == CTX__REF) {
        /* A private context (a pool job's) has no handle outside this
         * thread, so no other thread can touch its state: skip the CAS. */
        CTX__CHAOS();
        atomic_store_explicit(&ctx->state, s | CTX__ENTERED,
                              memory_order_relaxed);
        return 0;
    }
    do {
        if (s & CTX__ENTERED)
            return EBUSY;
        CTX__CHAOS(); /* between reading the word and claiming it */
    } while (!atomic_compare_exchange_weak_explicit(
        &ctx->state, &s, s | CTX__ENTERED, memory_order_acquire,
        memory_order_relaxed));
    return 0;
}

/* The switches below come in two builds, picked by one test of the
 * watcher gate per public call (so with no watcher a switch, and a whole
 * ctx_context_run(), costs one predictable branch): `watch` false is the
 * plain path; true also refuses to switch inside a watcher (that would
 * recurse into the watchers and pull the context out from under the one
 * watching) and tells the watchers afterwards.  A watcher added while a
 * plain run is under way may miss its second half, as documented. */
static inline int enter_on(ctx__tstate_t *ts, ctx_context_t *ctx, bool watch)
{
    if (watch && ts->in_watch != 0)
        return EDEADLK;
    /* Creating the base first also registers the thread's teardown, which
     * is what exits ctx if the thread dies inside it. */
    ctx_context_t *cur = ctx__current();
    if (CTX__UNLIKELY(cur == NULL))
        return ENOMEM;
    int err = ctx__context_claim(ctx);
    if (err != 0)
        return err;
    ctx->prev = cur;
    CTX__PUBLISH(ts->current, ctx);
    ctx__ts_bump(ts);
    if (watch)
        ctx__watch_fire(ts);
    return 0;
}

static inline int exit_on(ctx__tstate_t *ts, ctx_context_t *ctx, bool watch)
{
    /* Only this thread writes ts->current, so comparing with it answers
     * "is ctx my innermost?" without touching ctx's shared fields.  The
     * floor (the base, or a resumed fiber's own context) is never exited
     * here: only ctx_fiber_suspend() takes a fiber off the thread. */
    if (ctx != ts->current || ctx == ctx__stack_floor(ts))
        return EPERM;
    if (watch && ts->in_watch != 0)
        return EDEADLK;
    CTX__PUBLISH(ts->current, ctx->prev);
    ctx->prev = NULL;
    ctx__ts_bump(ts);
    if (watch)
        ctx__watch_fire(ts);
    ctx__context_leave(ctx);
    return 0;
}

int ctx_context_enter(ctx_context_t *ctx)
{
    if (ctx == NULL)
        return EINVAL;
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    if (ctx__watching())
        return enter_on(&ctx__ts, ctx, true);
    return enter_on(&ctx__ts, ctx, false);
}

int ctx_context_exit(ctx_context_t *ctx)
{
    if (ctx == NULL)
        return EINVAL;
    if (ctx__watching())
        return exit_on(&ctx__ts, ctx, true);
    return exit_on(&ctx__ts, ctx, false);
}

/* fn returned with ctx not innermost.  If ctx is still on this thread's
 * innermost stack, fn left contexts entered above it: exit them, innermost
 * first, as CPython refuses to leave them dangling (otherwise every later
 * set would land in them, and other threads would get EBUSY forever).  If
 * fn exited ctx itself, the stack below is the caller's; if fn left a
 * fiber resumed, what lies above ctx is that fiber's: leave both alone.
 * The walk stops at the floor, so it never goes into or through a fiber. */
static void unwind_above(ctx__tstate_t *ts, ctx_context_t *ctx, bool watch)
{
    ctx_context_t *c = ts->current, *floor = ctx__stack_floor(ts);
    while (c != NULL && c != ctx && c != floor)
        c = c->prev;
    if (c != ctx)
        return;
    while (ts->current != ctx)
        exit_on(ts, ts->current, watch);
}

/* ctx__ts_reload(), inline where the instruction set allows: the two
 * instructions of an initial-exec TLS address, from the thread pointer as
 * it is now.  The asm is volatile and clobbers memory, so it is neither
 * merged with an earlier address nor moved above the call before it. */
static inline ctx__tstate_t *fresh_ts(void)
{
#if defined(__x86_64__) && defined(__ELF__)
    ctx__tstate_t *ts;
    __asm__ __volatile__("movq ctx__ts@gottpoff(%%rip), %0\n\t"
                         "addq %%fs:0, %0"
                         : "=r"(ts)
                         :
                         : "memory");
    return ts;
#else
    return ctx__ts_reload();
#endif
}

static inline int run(ctx_context_t *ctx, void *(*fn)(void *), void *arg,
                      void **result, bool watch)
{
    int err = enter_on(&ctx__ts, ctx, watch);
    if (err != 0)
        return err;
    void *r = fn(arg);
    /* fn may have yielded a fiber that came back on another thread. */
    ctx__tstate_t *ts = fresh_ts();
    if (CTX__UNLIKELY(ts->current != ctx))
        unwind_above(ts, ctx, watch);
    exit_on(ts, ctx, watch);
    if (result != NULL)
        *result = r;
    return 0;
}

__attribute__((noinline)) static int run_watched(ctx_context_t *ctx,
                                                 void *(*fn)(void *),
                                                 void *arg, void **result)
{
    return run(ctx, fn, arg, result, true);
}

int ctx__run(ctx_context_t *ctx, void *(*fn)(void *), void *arg,
             void **result)
{
    if (ctx__watching())
        return run_watched(ctx, fn, arg, result);
    return run(ctx, fn, arg, result, false);
}

__attribute__((noinline)) ctx__tstate_t *ctx__ts_reload(void)
{
    ctx__tstate_t *ts = &ctx__ts;
    __asm__ __volatile__("" : "+r"(ts));
    return ts;
}

int ctx_context_run(ctx_context_t *ctx, void *(*fn)(void *), void *arg,
                    void **result)
{
    if (ctx == NULL || fn == NULL)
        return EINVAL;
    return ctx__run(ctx, fn, arg, result);
}

/* ------------------------------------------------------------------
 * The owner's writes
 * ---------------------------------------------------------------- */

static void write_lock(ctx_context_t *c)
{
    if (!c->private_)
        ctx__spin_lock(&c->lock);
}

static void write_unlock(ctx_context_t *c)
{
    if (!c->private_)
        ctx__spin_unlock(&c->lock);
}

/* previous (may be NULL) receives the value var had, CTX_MISSING if
 * unbound, held for the caller per var's ops. */
int ctx__context_assoc(ctx_context_t *c, ctx_var_t *var, void *value,
                       void **previous)
{
    ctx__hgarbage_t g = CTX__HGARBAGE_INIT;
    bool added = false;
    write_lock(c);
    ctx__hres_t r = ctx__hamt_assoc(&c->root, var, value, &added, &g);
    if (added)
        c->len++;
    write_unlock(c);
    /* The cache forgets the old binding before the garbage releases its
     * value: a signal handler that interrupts the release must not find
     * the value in the cache. */
    if (r != CTX__H_ERROR)
        ctx__ts_changed();
    if (previous != NULL && r != CTX__H_ERROR) {
        /* Hold it before the garbage may drop the trie's hold. */
        ctx__value_retain(var, g.previous);
        *previous = g.previous;
    }
    ctx__hgarbage_dispose(&g);
    return r == CTX__H_ERROR ? ENOMEM : 0;
}

int ctx__context_without(ctx_context_t *c, const ctx_var_t *var)
{
    ctx__hgarbage_t g = CTX__HGARBAGE_INIT;
    write_lock(c);
    ctx__hres_t r = ctx__hamt_without(&c->root, var, &g);
    if (r == CTX__H_FOUND)
        c->len--;
    write_unlock(c);
    if (r == CTX__H_FOUND)
        ctx__ts_changed(); /* before the garbage goes, as in assoc */
    ctx__hgarbage_dispose(&g);
    if (r == CTX__H_ERROR)
        return ENOMEM;
    /* Unreachable from the API: a binding is removed only by resetting
     * the one unused token whose set found the variable unbound, so no
     * other such token can meet it unbound.  Kept as a guard. */
    /* GCOVR_EXCL_START */
    if (r == CTX__H_NOT_FOUND)
        return ENOENT;
    /* GCOVR_EXCL_STOP */
    return 0;
}

/* ------------------------------------------------------------------
 * The mapping view: any thread, any time
 * ---------------------------------------------------------------- */

int ctx_context_get(const ctx_context_t *ctx, const ctx_var_t *var,
                    void **value)
{
    if (ctx == NULL || var == NULL || value == NULL)
        return EINVAL;
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    ctx_context_t *c = (ctx_context_t *)ctx;
    void *v = CTX_MISSING;
    ctx__spin_lock(&c->lock);
    ctx__hres_t r = ctx__hamt_find(c->root, var, &v);
    ctx__spin_unlock(&c->lock);
    if (r != CTX__H_FOUND)
        return ENOENT;
    *value = v;
    return 0;
}

bool ctx_context_contains(const ctx_context_t *ctx, const ctx_var_t *var)
{
    void *ignored;
    return ctx != NULL && var != NULL &&
           ctx_context_get(ctx, var, &ignored) == 0;
}

size_t ctx_context_len(const ctx_context_t *ctx)
{
    if (ctx == NULL)
        return 0;
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    ctx_context_t *c = (ctx_context_t *)ctx;
    ctx__spin_lock(&c->lock);
    size_t len = c->len;
    ctx__spin_unlock(&c->lock);
    return len;
}

int ctx_context_foreach(const ctx_context_t *ctx,
                        int (*fn)(ctx_var_t *var, void *value, void *arg),
                        void *arg)
{
    if (ctx == NULL || fn == NULL)
        return EINVAL;
    CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
    ctx_context_t *c = (ctx_context_t *)ctx;
    /* Iterate a snapshot: the extra reference freezes the trie, so fn may
     * set variables (in ctx too) while we walk. */
    ctx__spin_lock(&c->lock);
    ctx__hnode_t *root = ctx__hamt_retain(c->root);
    ctx__spin_unlock(&c->lock);
    int rc = ctx__hamt_foreach(root, fn, arg);
    ctx__hamt_release(root);
    return rc;
}
