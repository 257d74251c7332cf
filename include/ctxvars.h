/*
 * ctxvars.h - Python's contextvars (PEP 567) for C and pthreads.
 *
 * A context variable (ctx_var_t) is declared once.  A context
 * (ctx_context_t) maps variables to values.  Every thread always has a
 * *current* context: its own base context, or the innermost context it has
 * entered with ctx_context_run() / ctx_context_enter().  ctx_var_get() reads
 * the variable in the current context; ctx_var_set() writes it there.
 *
 * Contexts are snapshots that share structure (a persistent hash trie), so
 * ctx_copy_context() is O(1) and a copy can follow work to another thread:
 * ctx_thread_create() starts a thread in a copy of its creator's context and
 * ctx_pool_submit() runs each job in a copy of its submitter's context.
 *
 * Conventions, for every function below:
 *  - Functions returning int return 0 on success or a positive errno code,
 *    as pthreads does.  errno itself is never touched.
 *  - NULL handles and NULL out-pointers are refused with EINVAL unless the
 *    comment says NULL is allowed.
 *  - On any error, nothing changed: no binding, token or context is touched
 *    and *out is left as it was (strong guarantee, ENOMEM included).
 *  - Every function may be called from any thread at any time.
 *  - After fork(), the child may use the library: contexts that other
 *    threads had entered are exited in the child.  Pools made before the
 *    fork have no workers in the child and must not be used there.
 *  - Objects you get through an out-pointer are yours; drop them with the
 *    matching *_release().  Release functions accept NULL.
 *  - Using an object after its last release is undefined (as with free());
 *    a library built with --enable-debug aborts with a message when it
 *    sees a released object, instead of corrupting memory.
 *  - Async-signal safety: ctx_var_get() and ctx_var_get_or() are
 *    async-signal-safe, and no other function is.  A signal handler may
 *    call those two even when it interrupted a call into the library on
 *    the same thread (a set, a reset, an enter, an exit, a run, another
 *    get, anything); it reads the handler's thread's current context as
 *    it was just before or just after the interrupted operation.  They
 *    allocate nothing, take no lock, and leave errno alone.
 */
#ifndef CTXVARS_H
#define CTXVARS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define CTX_EXTERN extern __attribute__((visibility("default")))
#else
#define CTX_EXTERN extern
#endif

#define CTXVARS_VERSION_MAJOR 0
#define CTXVARS_VERSION_MINOR 2
#define CTXVARS_VERSION_PATCH 0

/* The "no value" sentinel (Python's Token.MISSING).  It is never a valid
 * value: ctx_var_set() refuses it, and ctx_var_create() takes it to mean
 * "no default".  It is the address of a library-owned object, so it can
 * never collide with a pointer of yours. */
CTX_EXTERN const char ctx_missing_sentinel;
#define CTX_MISSING ((void *)&ctx_missing_sentinel)

typedef struct ctx_var ctx_var_t;         /* ContextVar, refcounted */
typedef struct ctx_context ctx_context_t; /* Context, refcounted */
typedef struct ctx_token ctx_token_t;     /* Token */

/* How the library holds values.  With ops == NULL values are borrowed: the
 * library stores the pointer and never looks at it, and you keep the value
 * alive for as long as any context may hand it out.  With ops, the library
 * calls retain() when a holder (a binding in some context, the variable's
 * default, a token's old value) starts holding a value and release() when
 * that holder goes away, exactly once each.  Both callbacks may run on any
 * thread, and retain() may run while the library holds a context's
 * internal lock, so neither may call back into ctxvars: keep them to
 * reference counting.  Either may be NULL (no call). */
typedef struct ctx_value_ops {
    void (*retain)(void *value);
    void (*release)(void *value);
} ctx_value_ops_t;

/* ---------------------------------------------------------------------
 * Variables
 * ------------------------------------------------------------------ */

/* Creates a variable.  name is copied (NULL is allowed and reads back as
 * ""); default_value is returned by ctx_var_get() where the variable is
 * unbound, CTX_MISSING for none.  *ops is copied; NULL means borrowed values.
 * On success *out holds one reference.
 * Errors: EINVAL (out NULL), ENOMEM. */
CTX_EXTERN int ctx_var_create(ctx_var_t **out, const char *name,
                              void *default_value,
                              const ctx_value_ops_t *ops);

/* Drops your reference.  Contexts and tokens that still bind the variable
 * keep it alive; the default value is released when the last goes.
 * NULL is a no-op. */
CTX_EXTERN void ctx_var_release(ctx_var_t *var);

/* Takes another reference to var (returns var; NULL gives NULL). */
CTX_EXTERN ctx_var_t *ctx_var_retain(ctx_var_t *var);

/* The variable's name, owned by the variable.  NULL for a NULL var. */
CTX_EXTERN const char *ctx_var_name(const ctx_var_t *var);

/* Reads var in the calling thread's current context.  *value receives the
 * bound value, else the variable's default.  The value is borrowed: with
 * ops, it stays valid while a holder keeps it (the binding you read, at
 * least until you set the variable again on this thread).
 * Async-signal-safe, also in a handler that interrupted any library call
 * on the same thread: the value is one var was bound to (or its default,
 * or ENOENT where it was unbound) just before or just after the
 * interrupted operation, and with ops it stays valid until the handler
 * returns.  var must stay alive meanwhile (hold a reference).
 * Errors: EINVAL (var or value NULL), ENOENT (unbound and no default;
 * *value is left untouched). */
CTX_EXTERN int ctx_var_get(const ctx_var_t *var, void **value);

/* The bound value in the current context, else fallback.  The variable's
 * default is NOT consulted (Python's var.get(fallback)).  NULL var returns
 * fallback.  Never fails; this is the fast path.  Async-signal-safe, on
 * the same terms as ctx_var_get(). */
CTX_EXTERN void *ctx_var_get_or(const ctx_var_t *var, void *fallback);

/* Binds var to value in the calling thread's current context.  value may
 * be any pointer, NULL included, but not CTX_MISSING.  If token is not
 * NULL, *token receives a new token that remembers the previous value and
 * the current context, for ctx_var_reset(); you own it.
 * Errors: EINVAL (var NULL, value CTX_MISSING), ENOMEM. */
CTX_EXTERN int ctx_var_set(ctx_var_t *var, void *value, ctx_token_t **token);

/* Restores what var was before the ctx_var_set() that made token: the old
 * value, or no binding when it had none.  A token works once.  Checked in
 * CPython's order:
 *   EINVAL    var or token NULL
 *   EALREADY  token already used
 *   EINVAL    token was made by another variable
 *   EINVAL    token was made in another context than the current one
 *   ENOMEM    (the token stays unused)
 * The token is not released: call ctx_token_release() as well. */
CTX_EXTERN int ctx_var_reset(ctx_var_t *var, ctx_token_t *token);

/* The variable that made the token (borrowed; the token keeps it alive).
 * NULL for a NULL token. */
CTX_EXTERN ctx_var_t *ctx_token_var(const ctx_token_t *token);

/* The value var had before the set, CTX_MISSING if it was unbound
 * (borrowed; the token holds it).  NULL token gives CTX_MISSING. */
CTX_EXTERN void *ctx_token_old_value(const ctx_token_t *token);

/* Whether the token has been used by ctx_var_reset().  false for NULL. */
CTX_EXTERN bool ctx_token_used(const ctx_token_t *token);

/* Frees the token (used or not).  NULL is a no-op. */
CTX_EXTERN void ctx_token_release(ctx_token_t *token);

/* ---------------------------------------------------------------------
 * Scoped set: Python 3.14's `with var.set(value):`
 *
 *     CTX_WITH(request_id, "req-7") {
 *         handle();            // sees "req-7"
 *     }                        // reset here, however the block is left
 *
 * The block runs once with var set to value, and var is reset when the
 * block is left by any path: the end, break, continue, return or goto.
 * (That relies on the cleanup attribute of gcc and clang.)  If the set
 * fails (ENOMEM, or EINVAL for a NULL var or CTX_MISSING), the block does
 * not run; CTX_WITH_STATUS(var, value, err) also stores the set's result
 * in the int lvalue err.  Blocks nest.  break and continue inside the
 * block leave the block itself, not an enclosing loop (use goto or return
 * for that).  The reset is skipped if the block left a context it entered
 * still entered, as the token then belongs to another context: exit what
 * you enter.  A reset can fail only with ENOMEM, when the block shared the
 * context (took a copy) and memory then ran out; a block has nowhere to
 * report that, and the variable keeps the block's value.  Where that
 * matters, use ctx_var_set() and ctx_var_reset() and check the result.
 * ------------------------------------------------------------------ */
#if defined(__GNUC__)
typedef struct ctx_scope {
    ctx_var_t *var;
    ctx_token_t *token;
    int pending; /* the block has yet to run */
} ctx_scope_t;

static inline ctx_scope_t ctx_scope_begin(ctx_var_t *var, void *value,
                                          int *err)
{
    ctx_scope_t s = {var, NULL, 0};
    int rc = ctx_var_set(var, value, &s.token);
    s.pending = rc == 0;
    if (err != NULL)
        *err = rc;
    return s;
}

static inline void ctx_scope_end(ctx_scope_t *s)
{
    if (s->token != NULL) {
        (void)ctx_var_reset(s->var, s->token);
        ctx_token_release(s->token);
    }
}

#define CTX__CAT2(a, b) a##b
#define CTX__CAT(a, b) CTX__CAT2(a, b)
/* __COUNTER__, not __LINE__: two blocks on one line (or from one macro)
 * must not shadow each other's scope variable. */
#define CTX__WITH(var, value, errp, s)                                       \
    for (ctx_scope_t s __attribute__((cleanup(ctx_scope_end))) =             \
             ctx_scope_begin((var), (value), (errp));                        \
         s.pending; s.pending = 0)
#define CTX_WITH_STATUS(var, value, err)                                     \
    CTX__WITH(var, value, &(err), CTX__CAT(ctx__scope_, __COUNTER__))
#define CTX_WITH(var, value)                                                 \
    CTX__WITH(var, value, NULL, CTX__CAT(ctx__scope_, __COUNTER__))
#endif

/* ---------------------------------------------------------------------
 * Scoped enter: Python's `with ctx:` (CTX_ENTER is to ctx_context_enter()
 * what CTX_WITH is to ctx_var_set())
 *
 *     CTX_ENTER(conn->ctx) {
 *         on_readable(conn);   // reads and sets conn->ctx's variables
 *     }                        // exited here, however the block is left
 *
 * The block runs once with ctx entered, and ctx is exited when the block
 * is left by any path: the end, break, continue, return or goto (the
 * cleanup attribute of gcc and clang).  If the enter fails (EBUSY: ctx is
 * entered already, here or by another thread; EINVAL for NULL; ENOMEM on
 * the thread's first use of the library), the block does not run;
 * CTX_ENTER_STATUS(ctx, err) also stores the enter's result in the int
 * lvalue err.  Blocks nest.  break and continue inside the block leave
 * the block itself, not an enclosing loop.
 * The block holds a reference to ctx, so it may release its own.  The exit
 * is skipped when ctx is no longer the thread's innermost context: the
 * block exited ctx itself (the skip is what makes that safe), or it left
 * another context entered above ctx, in which case both stay entered, as
 * CTX_WITH leaves its variable: exit what you enter.
 * ------------------------------------------------------------------ */
#if defined(__GNUC__)
/* Declared with the other context functions below; repeated here because
 * the inline helpers call them first. */
CTX_EXTERN int ctx_context_enter(ctx_context_t *ctx);
CTX_EXTERN int ctx_context_exit(ctx_context_t *ctx);
CTX_EXTERN ctx_context_t *ctx_context_retain(ctx_context_t *ctx);
CTX_EXTERN void ctx_context_release(ctx_context_t *ctx);

typedef struct ctx_enter_scope {
    ctx_context_t *ctx; /* referenced while entered by the block */
    int pending;        /* the block has yet to run */
} ctx_enter_scope_t;

static inline ctx_enter_scope_t ctx_enter_scope_begin(ctx_context_t *ctx,
                                                      int *err)
{
    ctx_enter_scope_t s = {NULL, 0};
    int rc = ctx_context_enter(ctx);
    if (rc == 0) {
        s.ctx = ctx_context_retain(ctx);
        s.pending = 1;
    }
    if (err != NULL)
        *err = rc;
    return s;
}

static inline void ctx_enter_scope_end(ctx_enter_scope_t *s)
{
    if (s->ctx != NULL) {
        /* EPERM when ctx is not innermost: nothing is done, see above. */
        (void)ctx_context_exit(s->ctx);
        ctx_context_release(s->ctx);
    }
}

#define CTX__ENTER(ctx, errp, s)                                             \
    for (ctx_enter_scope_t s __attribute__((cleanup(ctx_enter_scope_end))) = \
             ctx_enter_scope_begin((ctx), (errp));                           \
         s.pending; s.pending = 0)
#define CTX_ENTER_STATUS(ctx, err)                                           \
    CTX__ENTER(ctx, &(err), CTX__CAT(ctx__enter_, __COUNTER__))
#define CTX_ENTER(ctx) CTX__ENTER(ctx, NULL, CTX__CAT(ctx__enter_, __COUNTER__))
#endif

/* ---------------------------------------------------------------------
 * Contexts
 * ------------------------------------------------------------------ */

/* A new empty context (Python's Context()).  Errors: EINVAL, ENOMEM. */
CTX_EXTERN int ctx_context_new(ctx_context_t **out);

/* A copy of the calling thread's current context (copy_context()).  O(1).
 * Errors: EINVAL, ENOMEM. */
CTX_EXTERN int ctx_copy_context(ctx_context_t **out);

/* A copy of ctx (ctx.copy()), O(1).  ctx may be entered by another thread
 * at the same time; the copy is a consistent snapshot.
 * Errors: EINVAL, ENOMEM. */
CTX_EXTERN int ctx_context_copy(const ctx_context_t *ctx, ctx_context_t **out);

/* Takes another reference (returns ctx; NULL gives NULL). */
CTX_EXTERN ctx_context_t *ctx_context_retain(ctx_context_t *ctx);

/* Drops a reference.  A context that is entered stays alive until it is
 * exited.  NULL is a no-op. */
CTX_EXTERN void ctx_context_release(ctx_context_t *ctx);

/* Enters ctx, calls fn(arg), exits, and stores fn's return value in
 * *result (result may be NULL).  Changes fn makes to variables land in ctx.
 * Contexts fn entered and left entered are exited when it returns.
 * If fn leaves through pthread_exit() or cancellation, ctx is exited when
 * the thread's storage is torn down, and is usable again once the thread
 * has been joined (or has finished, when detached).
 * Errors: EINVAL (ctx or fn NULL), EBUSY (ctx is entered by this or any
 * other thread: fn is not called), ENOMEM (first use on this thread). */
CTX_EXTERN int ctx_context_run(ctx_context_t *ctx, void *(*fn)(void *),
                               void *arg, void **result);

/* The two halves of ctx_context_run(), for callback-driven code.  A thread
 * that ends with contexts still entered has them exited (innermost first)
 * when its thread storage is torn down, as for ctx_context_run().
 * enter: EINVAL, EBUSY (entered already, here or elsewhere), ENOMEM.
 * exit:  EINVAL, EPERM (ctx is not this thread's innermost entered context:
 *        never entered, entered by another thread, or not the innermost). */
CTX_EXTERN int ctx_context_enter(ctx_context_t *ctx);
CTX_EXTERN int ctx_context_exit(ctx_context_t *ctx);

/* The value var is bound to in ctx (defaults are not consulted).
 * Safe while another thread has ctx entered; the value is borrowed.
 * Errors: EINVAL, ENOENT (not bound; *value untouched). */
CTX_EXTERN int ctx_context_get(const ctx_context_t *ctx, const ctx_var_t *var,
                               void **value);

/* Whether var is bound in ctx.  false for NULL arguments. */
CTX_EXTERN bool ctx_context_contains(const ctx_context_t *ctx,
                                     const ctx_var_t *var);

/* Number of bindings, O(1).  0 for NULL. */
CTX_EXTERN size_t ctx_context_len(const ctx_context_t *ctx);

/* Calls fn(var, value, arg) for every binding of a snapshot of ctx, in an
 * unspecified order, and stops at the first non-zero return, which it
 * returns (return a negative number from fn to tell it apart from EINVAL).
 * fn may use the library freely, ctx included.
 * Returns 0 after visiting all; EINVAL for NULL ctx or fn. */
CTX_EXTERN int ctx_context_foreach(const ctx_context_t *ctx,
                                   int (*fn)(ctx_var_t *var, void *value,
                                             void *arg),
                                   void *arg);

/* ---------------------------------------------------------------------
 * Threads and pools
 * ------------------------------------------------------------------ */

/* pthread_create() whose new thread's base context is a copy of the
 * caller's current context taken now.  Same contract and errors as
 * pthread_create(): attr honoured (detached threads work), EAGAIN when
 * resources (memory included) run short, EINVAL for NULL thread or fn. */
CTX_EXTERN int ctx_thread_create(pthread_t *thread, const pthread_attr_t *attr,
                                 void *(*fn)(void *), void *arg);

/* The two halves of ctx_thread_create(), for threads started some other
 * way (another library's thread-creation function, a wrapper of your own,
 * the preload shim libctxvars-inherit.so).  ctx_thread_wrap() takes the
 * snapshot now and gives back *start_arg; hand ctx_thread_start as the
 * start routine and *start_arg as its argument to whatever creates the
 * thread.  On the new thread, ctx_thread_start() makes the snapshot the
 * thread's base context and returns fn(arg).  (Called on a thread that
 * already uses ctxvars, it runs fn inside the snapshot instead.)  Each
 * start_arg starts one thread; if the thread is never started, give it
 * back with ctx_thread_wrap_discard() (NULL is a no-op).
 * ctx_thread_wrap errors: EINVAL (fn or start_arg NULL), ENOMEM. */
CTX_EXTERN int ctx_thread_wrap(void *(*fn)(void *), void *arg,
                               void **start_arg);
CTX_EXTERN void *ctx_thread_start(void *start_arg);
CTX_EXTERN void ctx_thread_wrap_discard(void *start_arg);

typedef struct ctx_pool ctx_pool_t;
typedef struct ctx_future ctx_future_t;

/* Options for ctx_pool_create_ex().  Zero every field you do not set
 * (ctx_pool_options_t o = {0}); new fields will be added at the end and
 * zero will always mean "the default". */
typedef struct ctx_pool_options {
    unsigned nthreads;  /* workers; 0: one per online CPU */
    size_t max_queued;  /* jobs waiting at most; 0: unbounded.  When full,
                           submit returns EAGAIN (it never blocks). */
    size_t stack_size;  /* worker stack size in bytes; 0: the default */
} ctx_pool_options_t;

/* A pool of nthreads workers (0: one per online CPU).  options NULL means
 * all defaults.
 * Errors: EINVAL (out NULL), EAGAIN (threads), ENOMEM. */
CTX_EXTERN int ctx_pool_create(ctx_pool_t **out, unsigned nthreads);
CTX_EXTERN int ctx_pool_create_ex(ctx_pool_t **out,
                                  const ctx_pool_options_t *options);

/* Queues fn(arg) to run on a worker inside a copy of the caller's current
 * context taken now.  If future is not NULL, *future receives a future you
 * own (release it with ctx_future_release(), waited on or not).
 * Errors: EINVAL (pool or fn NULL), ESHUTDOWN (ctx_pool_destroy() has
 * begun, and the caller is not one of the pool's own jobs), EAGAIN (queue
 * full), ENOMEM.  On error nothing is queued. */
CTX_EXTERN int ctx_pool_submit(ctx_pool_t *pool, void *(*fn)(void *),
                               void *arg, ctx_future_t **future);

/* As ctx_pool_submit(), but the job runs in a copy of ctx as it is now;
 * ctx NULL means a new empty context.  Same errors. */
CTX_EXTERN int ctx_pool_submit_in(ctx_pool_t *pool, const ctx_context_t *ctx,
                                  void *(*fn)(void *), void *arg,
                                  ctx_future_t **future);

/* Waits until the job has run and stores its return value in *result
 * (result may be NULL).  May be called again, and from any thread.  A pool
 * job that waits runs other queued jobs meanwhile, so jobs may wait on jobs
 * they submitted even on a one-worker pool.
 * Errors: EINVAL, EDEADLK (called from a context-switch watcher on one of
 * the pool's workers, which cannot run jobs there, before the job is
 * done). */
CTX_EXTERN int ctx_future_wait(ctx_future_t *future, void **result);

/* As ctx_future_wait() (a pool job that waits still runs queued jobs),
 * giving up at abstime (CLOCK_REALTIME, as pthread_cond_timedwait()).
 * Errors: EINVAL (future or abstime NULL, tv_nsec out of range),
 * ETIMEDOUT (*result untouched), EDEADLK (as ctx_future_wait()). */
CTX_EXTERN int ctx_future_timedwait(ctx_future_t *future,
                                    const struct timespec *abstime,
                                    void **result);

/* Whether the job has finished (never blocks). false for NULL. */
CTX_EXTERN bool ctx_future_done(const ctx_future_t *future);

/* Drops your reference; the job still runs.  NULL is a no-op. */
CTX_EXTERN void ctx_future_release(ctx_future_t *future);

/* Stops taking jobs from other threads, runs every queued job (jobs may
 * still submit while the queue drains), joins the workers and frees the
 * pool.  The pool must not be used after this returns.
 * Errors: EINVAL (NULL), EDEADLK (called from one of the pool's own jobs;
 * nothing is done). */
CTX_EXTERN int ctx_pool_destroy(ctx_pool_t *pool);

/* A callable binds the caller's current context (copied now), fn and arg,
 * for any foreign executor (libuv, GLib, an event loop) to run later on any
 * thread.  Every call runs fn(arg) in a fresh copy of that snapshot, so
 * calls never see each other's changes and may run concurrently. */
typedef struct ctx_callable ctx_callable_t;

/* Errors: EINVAL (out or fn NULL), ENOMEM. */
CTX_EXTERN int ctx_callable_create(ctx_callable_t **out, void *(*fn)(void *),
                                   void *arg);

/* Runs it once, storing fn's return in *result (may be NULL).
 * Errors: EINVAL, ENOMEM. */
CTX_EXTERN int ctx_callable_call(ctx_callable_t *callable, void **result);

/* NULL is a no-op. */
CTX_EXTERN void ctx_callable_release(ctx_callable_t *callable);

/* For executors that take a void (*)(void *) callback: calls the callable
 * once, discards the result, and releases it.  Having no way to report
 * ENOMEM, it then does not call fn at all; use ctx_callable_call() where
 * that matters.  NULL is a no-op. */
CTX_EXTERN void ctx_callable_invoke_once(void *callable);


/* ---------------------------------------------------------------------
 * Fibers and coroutines: asyncio's Task, for stackful coroutines
 *
 * A fiber is a context of its own plus the stack of contexts entered in
 * it, for a coroutine that a scheduler of yours switches in and out,
 * possibly on a different thread each time.  The library switches no
 * stacks: call ctx_fiber_resume() just before you switch to the
 * coroutine's stack and ctx_fiber_suspend() just after it switches back
 * (or from the coroutine itself, just before it yields):
 *
 *     ctx_fiber_resume(co->fiber);        // on any scheduler thread
 *     swapcontext(&sched, &co->uc);       // runs until it yields
 *     ctx_fiber_suspend(co->fiber);
 *
 * While it is resumed everything in the library acts on the fiber:
 * get/set/reset, tokens, ctx_context_run(), enter/exit, CTX_WITH, copies,
 * and the snapshots of ctx_thread_create(), ctx_pool_submit() and
 * ctx_callable_create().  What the thread had current before the resume
 * stays underneath and is current again after the suspend.
 * ------------------------------------------------------------------ */
typedef struct ctx_fiber ctx_fiber_t;

/* A new suspended fiber.  ctx NULL: the fiber's context is a new copy of
 * the caller's current context, taken now (asyncio.create_task(coro)).
 * Otherwise the fiber runs in ctx itself, which it retains
 * (create_task(coro, context=ctx)): what it sets is visible in ctx.
 * *out is yours: drop it with ctx_fiber_release().
 * Errors: EINVAL (out NULL), ENOMEM. */
CTX_EXTERN int ctx_fiber_create(ctx_fiber_t **out, ctx_context_t *ctx);

/* Drops the fiber.  A resumed fiber stays alive until it is suspended and
 * is freed then.  Contexts a suspended fiber still holds entered are
 * exited, innermost first, so others can enter them again.  NULL is a
 * no-op. */
CTX_EXTERN void ctx_fiber_release(ctx_fiber_t *fiber);

/* The fiber's own context, borrowed (the fiber holds it).  NULL for NULL. */
CTX_EXTERN ctx_context_t *ctx_fiber_context(const ctx_fiber_t *fiber);

/* Makes the fiber current on the calling thread, which may be another
 * thread than the one it last ran on: its context is entered, and every
 * context the fiber had entered and not exited before its last suspend is
 * current again, innermost on top.  O(1) whatever the fiber holds.
 * Fibers nest: one may be resumed while another is resumed on the thread
 * (a scheduler running on a fiber); suspend them innermost first.
 * Errors: EINVAL (NULL), EBUSY (the fiber's context is entered by anyone,
 * this thread included, or the fiber is already resumed anywhere: nothing
 * changes), EDEADLK (called from a context-switch watcher), ENOMEM (first
 * use of the library on this thread). */
CTX_EXTERN int ctx_fiber_resume(ctx_fiber_t *fiber);

/* Takes the fiber off the calling thread.  Every context entered in the
 * fiber and not exited stays entered, held by the fiber (others get EBUSY
 * on it) until the fiber exits it or is released; the fiber's own context
 * is exited, so others may enter it between runs.  The thread's current
 * context is again exactly what it was before the resume.  A thread that
 * exits with fibers resumed suspends them; they keep their contexts and
 * may be resumed elsewhere.
 * Errors: EINVAL (NULL), EPERM (fiber is not the calling thread's
 * innermost resumed fiber: not resumed, resumed on another thread, or a
 * fiber resumed inside it is still resumed), EDEADLK (called from a
 * context-switch watcher). */
CTX_EXTERN int ctx_fiber_suspend(ctx_fiber_t *fiber);

/* ---------------------------------------------------------------------
 * Context-switch watchers (CPython 3.14's PyContext_AddWatcher, with a
 * user argument)
 * ------------------------------------------------------------------ */

/* Called on the thread whose current context just changed, after the
 * change, with the now-current context (borrowed, valid during the call).
 * It is called on every ctx_context_enter() and ctx_context_exit(), both
 * halves of ctx_context_run(), a pool job's context becoming current on a
 * worker and the worker leaving it (once each per job), a new thread's
 * base context becoming current before its start function runs
 * (ctx_thread_create(), ctx_thread_start(), the preload shim), callables,
 * and ctx_fiber_resume() / ctx_fiber_suspend().  Setting a variable is
 * not a switch.  Inside fn reads work (ctx_var_get(), ctx_context_get(),
 * copies, foreach); calls that would change the calling thread's current
 * context (enter, exit, run, fiber resume and suspend) return EDEADLK and
 * change nothing. */
typedef void (*ctx_watch_fn)(ctx_context_t *current, void *arg);

/* At least 8 watchers may be installed at once; each is called, in the
 * order added.  *id receives the watcher's id, for ctx_watch_remove().
 * Safe from any thread at any time, also while others switch contexts;
 * a switch that is under way as fn is added may or may not report to it.
 * Errors: EINVAL (fn or id NULL), EAGAIN (too many watchers). */
CTX_EXTERN int ctx_watch_add(ctx_watch_fn fn, void *arg, int *id);

/* Removes a watcher.  When it returns, the watcher's fn is running on no
 * thread (other than the caller's, if fn removes itself) and is never
 * called again: it waits for calls under way on other threads to return,
 * so two watchers running on two threads must not remove each other (each
 * would wait for the other, as two threads joining each other do).  Safe
 * from any thread at any time, fn included.  Never allocates.
 * Errors: EINVAL (no such watcher). */
CTX_EXTERN int ctx_watch_remove(int id);

#ifdef __cplusplus
}
#endif
#endif /* CTXVARS_H */
