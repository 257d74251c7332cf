/*
 * callable.c - fn(arg) bound to a snapshot of its creator's context, for
 * executors that know nothing about ctxvars.
 *
 * The snapshot itself is never entered: every call enters a fresh copy of
 * it.  That is what lets one callable run on several threads at once
 * (a context can be entered by one thread at a time) and keeps one call's
 * changes away from the next.  Copies are O(1), so this costs one small
 * allocation per call.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>

struct ctx_callable {
    ctx_context_t *snapshot; /* never entered, only copied */
    void *(*fn)(void *);
    void *arg;
};

int ctx_callable_create(ctx_callable_t **out, void *(*fn)(void *), void *arg)
{
    if (out == NULL || fn == NULL)
        return EINVAL;
    ctx_callable_t *c = ctx__malloc(sizeof *c);
    if (c == NULL)
        return ENOMEM;
    if (ctx__copy_current(&c->snapshot) != 0) {
        ctx__free(c);
        return ENOMEM;
    }
    c->fn = fn;
    c->arg = arg;
    *out = c;
    return 0;
}

int ctx_callable_call(ctx_callable_t *callable, void **result)
{
    if (callable == NULL)
        return EINVAL;
    ctx_context_t *copy;
    CTX__CHAOS(); /* other threads may be copying the same snapshot */
    int err = ctx_context_copy(callable->snapshot, &copy);
    if (err != 0)
        return err;
    /* A fresh copy is entered nowhere, so this fails only with ENOMEM, on
     * a thread's first use of the library. */
    err = ctx__run(copy, callable->fn, callable->arg, result);
    CTX__CHAOS(); /* fn may have handed the copy to another thread */
    ctx_context_release(copy);
    return err;
}

void ctx_callable_release(ctx_callable_t *callable)
{
    if (callable == NULL)
        return;
    CTX__CHAOS(); /* a release racing the last call's copy */
    ctx_context_release(callable->snapshot);
    ctx__free(callable);
}

void ctx_callable_invoke_once(void *callable)
{
    /* A void callback has nowhere to report ENOMEM; the callable is
     * released either way, as the executor will not call it again. */
    (void)ctx_callable_call(callable, NULL);
    ctx_callable_release(callable);
}
