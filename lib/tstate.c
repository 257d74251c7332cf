/*
 * tstate.c - per-thread state: the base context, the stack of entered
 * contexts, and teardown when the thread goes away.
 *
 * The state lives in initial-exec TLS (ctx__ts) so the get path reaches it
 * with one offset from the thread pointer, no call to __tls_get_addr and no
 * pthread_getspecific.  A pthread key is still registered per thread, only
 * for its destructor: that is how the base context gets freed when a thread
 * exits, and how contexts entered by a thread that left through
 * pthread_exit() or cancellation get exited (the destructor runs after the
 * thread's cleanup handlers, before pthread_join() returns).
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>

_Thread_local ctx__tstate_t ctx__ts CTX__TLS_IE;

static pthread_key_t teardown_key;
static pthread_once_t teardown_once = PTHREAD_ONCE_INIT;
static int teardown_key_err;

static void teardown(void *unused)
{
    (void)unused;
    ctx__tstate_t *ts = &ctx__ts;
    /* Exit whatever the thread left entered, innermost first, exactly as
     * ctx_context_exit() would; each enter held a reference. */
    while (ts->current != NULL && ts->current != ts->base) {
        ctx_context_t *c = ts->current;
        ts->current = c->prev;
        c->prev = NULL;
        ctx__context_leave(c);
    }
    ctx_context_t *base = ts->base;
    ts->base = ts->current = NULL;
    ts->registered = false;
    ctx__ts_changed();
    if (base != NULL) {
        /* May run value release callbacks; they may use the library again,
         * which re-registers the thread and brings us back here (pthreads
         * repeats destructors PTHREAD_DESTRUCTOR_ITERATIONS times). */
        ctx_context_release(base);
    }
    /* registered is false now, so nothing gives us new spares. */
    ctx__spare_drain();
}

static void make_key(void)
{
    teardown_key_err = pthread_key_create(&teardown_key, teardown);
}

static int register_thread(void)
{
    pthread_once(&teardown_once, make_key);
    if (teardown_key_err != 0)
        return ENOMEM;
    if (pthread_setspecific(teardown_key, &ctx__ts) != 0)
        return ENOMEM;
    ctx__ts.registered = true;
    return 0;
}

static void install_base(ctx_context_t *base)
{
    base->private_ = true;
    ctx__ts.base = ctx__ts.current = base;
    ctx__ts_changed();
}

ctx_context_t *ctx__current(void)
{
    if (CTX__LIKELY(ctx__ts.current != NULL))
        return ctx__ts.current;
    if (!ctx__ts.registered && register_thread() != 0)
        return NULL;
    ctx_context_t *base;
    if (ctx__context_alloc(NULL, 0, &base) != 0)
        return NULL;
    install_base(base);
    return base;
}

int ctx__adopt_base(ctx_context_t *ctx)
{
    CTX__ASSERT(ctx__ts.current == NULL);
    if (!ctx__ts.registered && register_thread() != 0) {
        ctx_context_release(ctx);
        return ENOMEM;
    }
    install_base(ctx);
    return 0;
}

/* exit() runs no TSD destructors for the thread that calls it; free its
 * state here so valgrind sees a clean process. */
__attribute__((destructor)) static void teardown_at_exit(void)
{
    if (ctx__ts.registered)
        teardown(NULL);
}
