/*
 * thread.c - ctx_thread_create(): pthread_create() whose thread starts in
 * a copy of its creator's context.
 *
 * The copy is taken in the creator, at the call, so that what the creator
 * does afterwards can never leak into the child however the two threads
 * get scheduled.  The child makes the copy its base context before it runs
 * any user code; from then on the core owns it and frees it when the
 * thread exits (its TSD destructor), detached or joined alike.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>

struct thread_start {
    void *(*fn)(void *);
    void *arg;
    ctx_context_t *ctx; /* the creator's snapshot, passed to the child */
};

int ctx_thread_wrap(void *(*fn)(void *), void *arg, void **start_arg)
{
    if (fn == NULL || start_arg == NULL)
        return EINVAL;
    struct thread_start *start = ctx__malloc(sizeof *start);
    if (start == NULL)
        return ENOMEM;
    if (ctx__copy_current(&start->ctx) != 0) {
        ctx__free(start);
        return ENOMEM;
    }
    start->fn = fn;
    start->arg = arg;
    *start_arg = start;
    return 0;
}

void ctx_thread_wrap_discard(void *start_arg)
{
    struct thread_start *start = start_arg;
    if (start == NULL)
        return;
    ctx_context_release(start->ctx);
    ctx__free(start);
}

void *ctx_thread_start(void *start_arg)
{
    CTX__CHAOS(); /* the creator may still be running on, or exiting */
    struct thread_start start = *(struct thread_start *)start_arg;
    ctx__free(start_arg);
    if (ctx__ts.current != NULL) {
        /* Not a fresh thread (someone ran us on a thread that already uses
         * ctxvars): its base is taken, so run inside the snapshot instead. */
        void *r = NULL;
        /* The copy is ours and entered nowhere, and the thread has its
         * state: run cannot fail (the fallback is a guard). */
        /* GCOVR_EXCL_START */
        if (ctx__run(start.ctx, start.fn, start.arg, &r) != 0)
            r = start.fn(start.arg);
        /* GCOVR_EXCL_STOP */
        ctx_context_release(start.ctx);
        return r;
    }
    /* Adopting fails only when the thread cannot register its teardown
     * (pthread keys exhausted), and then the snapshot is already released.
     * The thread still runs, in an empty context: refusing to run fn after
     * the thread was reported started would be worse. */
    (void)ctx__adopt_base(start.ctx);
    CTX__CHAOS(); /* the base is installed; user code not yet started */
    return start.fn(start.arg);
}

int ctx_thread_create(pthread_t *thread, const pthread_attr_t *attr,
                      void *(*fn)(void *), void *arg)
{
    if (thread == NULL || fn == NULL)
        return EINVAL;
    void *start;
    if (ctx_thread_wrap(fn, arg, &start) != 0)
        return EAGAIN; /* pthread_create()'s word for "out of resources" */
    CTX__CHAOS(); /* the snapshot is taken; the child not yet started */
    int err = pthread_create(thread, attr, ctx_thread_start, start);
    if (err != 0)
        ctx_thread_wrap_discard(start);
    return err;
}
