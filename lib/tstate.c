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
 * thread's cleanup handlers, before pthread_join() returns).  A registry
 * of the threads' states lets a fork() child exit what other threads had
 * entered.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>

_Thread_local ctx__tstate_t ctx__ts CTX__TLS_IE;

/* Every registered thread's state, so that a fork() child can exit the
 * contexts that threads which do not exist in the child left entered (see
 * fork_child).  Touched once per thread at start and at exit only. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ctx__tstate_t *registry;

static void registry_add(ctx__tstate_t *ts)
{
    CTX__CHAOS();
    pthread_mutex_lock(&registry_lock);
    ts->reg_prev = NULL;
    ts->reg_next = registry;
    if (registry != NULL)
        registry->reg_prev = ts;
    registry = ts;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_unlink(ctx__tstate_t *ts)
{
    if (ts->reg_prev != NULL)
        ts->reg_prev->reg_next = ts->reg_next;
    else
        registry = ts->reg_next;
    if (ts->reg_next != NULL)
        ts->reg_next->reg_prev = ts->reg_prev;
    ts->reg_next = ts->reg_prev = NULL;
}

static void registry_remove(ctx__tstate_t *ts)
{
    CTX__CHAOS();
    pthread_mutex_lock(&registry_lock);
    registry_unlink(ts);
    pthread_mutex_unlock(&registry_lock);
}

/* fork() keeps the registry stable while it copies the process. */
static void fork_prepare(void) { pthread_mutex_lock(&registry_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&registry_lock); }

/* In the child only the forking thread exists.  Contexts the others had
 * entered would answer EBUSY forever, and a context lock one of them held
 * at that instant would never open: exit those contexts (their entered
 * flag is the only hold we can give back; the dead threads' own base
 * contexts and references stay, as memory a dead thread owned does) and
 * open their locks.  A lock held by a thread on some context it had not
 * entered (a reader) cannot be found; it is held only for a few loads. */
static void fork_child(void)
{
    ctx__tstate_t *ts = registry;
    while (ts != NULL) {
        ctx__tstate_t *next = ts->reg_next;
        if (ts != &ctx__ts) {
            /* Open the locks first, while the whole stack is one list:
             * fibers resumed there take their contexts with them below,
             * and a fiber's context the dead thread was writing would
             * stay locked for whoever resumes the fiber in the child. */
            for (ctx_context_t *c = ts->current; c != NULL; c = c->prev)
                atomic_store(&c->lock.locked, false);
            /* Fibers resumed there keep what they hold, as at a thread's
             * exit, and can be resumed in the child. */
            while (ts->fiber != NULL)
                ctx__fiber_detach(ts, ts->fiber, false);
            while (ts->current != NULL && ts->current != ts->base) {
                ctx_context_t *c = ts->current;
                ts->current = c->prev;
                c->prev = NULL;
                ctx__context_leave(c);
            }
            registry_unlink(ts);
        }
        ts = next;
    }
    pthread_mutex_init(&registry_lock, NULL);
}

static pthread_key_t teardown_key;
static pthread_once_t teardown_once = PTHREAD_ONCE_INIT;
static int teardown_key_err;

static void teardown(void *unused)
{
    (void)unused;
    ctx__tstate_t *ts = &ctx__ts;
    /* Fibers still resumed here are suspended, innermost first: they keep
     * their contexts and may be resumed on another thread. */
    while (ts->fiber != NULL)
        ctx__fiber_detach(ts, ts->fiber, false);
    /* Exit whatever the thread left entered, innermost first, exactly as
     * ctx_context_exit() would; each enter held a reference. */
    while (ts->current != NULL && ts->current != ts->base) {
        ctx_context_t *c = ts->current;
        ts->current = c->prev;
        c->prev = NULL;
        /* Before the leave, which may free c's values: a signal handler
         * running in a destructor must not find them in the get cache. */
        ctx__ts_changed();
        ctx__context_leave(c);
    }
    ctx_context_t *base = ts->base;
    ts->base = ts->current = NULL;
    if (ts->registered)
        registry_remove(ts);
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
    if (teardown_key_err == 0)
        teardown_key_err = pthread_atfork(fork_prepare, fork_parent,
                                          fork_child);
}

static int register_thread(void)
{
    pthread_once(&teardown_once, make_key);
    if (teardown_key_err != 0)
        return ENOMEM;
    /* glibc fails this only when it cannot allocate a key's second-level
     * block, which fault injection (ours, not libc's) cannot provoke. */
    /* GCOVR_EXCL_START */
    if (pthread_setspecific(teardown_key, &ctx__ts) != 0)
        return ENOMEM;
    /* GCOVR_EXCL_STOP */
    registry_add(&ctx__ts);
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
    /* A thread that starts in a snapshot (ctx_thread_start(), the shim)
     * tells the watchers that its base became current.  (A base made on
     * first use is no switch: it was the thread's all along, only empty.) */
    if (ctx__watching())
        ctx__watch_fire(&ctx__ts);
    return 0;
}

/* exit() runs no TSD destructors for the thread that calls it; free its
 * state here so valgrind sees a clean process. */
__attribute__((destructor)) static void teardown_at_exit(void)
{
    if (ctx__ts.registered)
        teardown(NULL);
}
