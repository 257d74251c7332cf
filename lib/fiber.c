/*
 * fiber.c - fibers: a context, and the stack of contexts entered in it,
 * that follow a coroutine from one resume to the next, on any thread.
 *
 * The model.  A thread's contexts form one stack, linked through
 * ctx->prev from ts->current down to its base.  Resuming a fiber enters
 * the fiber's own context on top of that stack (its prev is what the
 * thread had current) and puts back on top of it the contexts the fiber
 * held at its last suspend: they are still linked to each other and, at
 * the bottom, to the fiber's context, because the fiber entered them on
 * top of it.  So a resume or a suspend moves two pointers whatever the
 * fiber holds, and everything that walks the stack (exit, unwinding,
 * teardown, gdb) sees one list.  ts->fiber marks the floor: nothing but
 * ctx_fiber_suspend() goes below the innermost fiber's own context.
 *
 * Claiming.  The entered flag of the fiber's context is the fiber's lock:
 * the CAS that enters it fails while the fiber is resumed anywhere (or
 * someone else has its context entered), so "exactly one resume wins"
 * costs no second atomic.  The contexts the fiber holds keep their entered
 * flags while it is suspended, so others get EBUSY on them; they are
 * written only by whoever has the fiber resumed, and the acquire of that
 * CAS (paired with the release of the suspend's exit) hands them, and
 * f->top, from thread to thread.
 *
 * Lifetime.  f->state has a RESUMED and a RELEASED bit.  A release while
 * the fiber is resumed (on any thread) only sets RELEASED, and the suspend
 * that then takes it off its thread frees it; each side learns from one
 * atomic exchange which of them goes last.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>

int ctx_fiber_create(ctx_fiber_t **out, ctx_context_t *ctx)
{
    if (out == NULL)
        return EINVAL;
    ctx_fiber_t *f = ctx__malloc(sizeof *f);
    if (f == NULL)
        return ENOMEM;
    if (ctx != NULL) {
        CTX__CHECK_MAGIC(ctx, CTX__MAGIC_CONTEXT, "context");
        f->ctx = ctx_context_retain(ctx);
    } else if (ctx_copy_context(&f->ctx) != 0) {
        ctx__free(f);
        return ENOMEM;
    }
    CTX__SET_MAGIC(f, CTX__MAGIC_FIBER);
    f->top = NULL;
    f->outer = NULL;
    atomic_init(&f->state, 0);
    *out = f;
    return 0;
}

ctx_context_t *ctx_fiber_context(const ctx_fiber_t *fiber)
{
    return fiber != NULL ? fiber->ctx : NULL;
}

/* Exits what a suspended fiber still holds, innermost first, and frees
 * it.  Its contexts were entered by the fiber, so their prev links are
 * its own to clear. */
static void fiber_free(ctx_fiber_t *f)
{
    ctx_context_t *c = f->top;
    while (c != NULL && c != f->ctx) {
        ctx_context_t *below = c->prev;
        c->prev = NULL;
        ctx__context_leave(c);
        c = below;
    }
    ctx_context_release(f->ctx);
    CTX__SET_MAGIC(f, CTX__MAGIC_DEAD);
    ctx__free(f);
}

void ctx_fiber_release(ctx_fiber_t *fiber)
{
    if (fiber == NULL)
        return;
    CTX__CHECK_MAGIC(fiber, CTX__MAGIC_FIBER, "fiber");
    CTX__CHAOS();
    unsigned was = atomic_fetch_or_explicit(&fiber->state, CTX__FIBER_RELEASED,
                                            memory_order_acq_rel);
    if (!(was & CTX__FIBER_RESUMED))
        fiber_free(fiber);
}

int ctx_fiber_resume(ctx_fiber_t *fiber)
{
    if (fiber == NULL)
        return EINVAL;
    CTX__CHECK_MAGIC(fiber, CTX__MAGIC_FIBER, "fiber");
    ctx__tstate_t *ts = &ctx__ts;
    bool watch = ctx__watching();
    if (watch && ts->in_watch != 0)
        return EDEADLK;
    ctx_context_t *cur = ctx__current();
    if (CTX__UNLIKELY(cur == NULL))
        return ENOMEM;
    ctx_context_t *c = fiber->ctx;
    int err = ctx__context_claim(c);
    if (err != 0)
        return err;
    /* Ours now: the claim's acquire made the last suspend's writes ours. */
    c->prev = cur;
    fiber->outer = ts->fiber;
    /* Only a release racing with this resume could write state, and that
     * would be a use after release: a plain store will do. */
    CTX__CHAOS();
    atomic_store_explicit(&fiber->state, CTX__FIBER_RESUMED,
                          memory_order_relaxed);
    ts->fiber = fiber;
    CTX__PUBLISH(ts->current, fiber->top != NULL ? fiber->top : c);
    fiber->top = NULL;
    ctx__ts_bump(ts);
    if (watch)
        ctx__watch_fire(ts);
    return 0;
}

void ctx__fiber_detach(ctx__tstate_t *ts, ctx_fiber_t *f, bool notify)
{
    ctx_context_t *c = f->ctx;
    f->top = ts->current != c ? ts->current : NULL;
    CTX__PUBLISH(ts->current, c->prev);
    ts->fiber = f->outer;
    c->prev = NULL;
    f->outer = NULL;
    ctx__ts_bump(ts);
    if (notify && ctx__watching())
        ctx__watch_fire(ts);
    /* The exchange comes before the exit: once c is exited another thread
     * may resume f and set RESUMED again, which must not be lost.  After
     * it f may be freed by a concurrent release, so f is not touched
     * again unless we are the one to free it. */
    CTX__CHAOS();
    unsigned was = atomic_exchange_explicit(&f->state, 0,
                                            memory_order_acq_rel);
    ctx__context_leave(c);
    if (was & CTX__FIBER_RELEASED)
        fiber_free(f);
}

int ctx_fiber_suspend(ctx_fiber_t *fiber)
{
    if (fiber == NULL)
        return EINVAL;
    ctx__tstate_t *ts = &ctx__ts;
    if (ts->fiber != fiber)
        return EPERM;
    if (ctx__watching() && ts->in_watch != 0)
        return EDEADLK;
    ctx__fiber_detach(ts, fiber, true);
    return 0;
}
