/*
 * internal.h - what the library's files share and the public header hides.
 *
 * Naming: ctx_* is public (include/ctxvars.h), ctx__* is internal.  The
 * library is built with -fvisibility=hidden, so ctx__* functions are visible
 * to the other files of the library and to the tests (which link the
 * convenience library libctxvars-core.la statically) but never exported
 * from libctxvars.so.
 *
 * Ownership and threading model, in one place:
 *
 *  - A context is written only by the one thread that has it current: a
 *    thread's base context is private to it, and any other context is
 *    current on at most one thread at a time (the entered flag in
 *    ctx->state, claimed by CAS).  So the owner reads its context's trie
 *    without any lock.  Handing a context to the next owner is ordered by
 *    that flag itself (acquiring CAS on enter, releasing RMW on exit).
 *  - Other threads may read any context they hold a handle to (get,
 *    contains, len, foreach, copy) while its owner writes.  ctx->lock
 *    orders those readers against the owner's writes: the owner holds it
 *    while it updates the trie, readers hold it while they look up or take
 *    a reference to the root.  The update may allocate and may call
 *    ops->retain for entries a path copy duplicates (the public header
 *    forbids those callbacks to call back into the library); it never
 *    frees shared nodes or calls ops->release under the lock: that work is
 *    returned as "garbage" and done after unlocking.
 *  - A context no handle of the user's can reach (a thread's base, a pool
 *    job's snapshot) is `private`: nobody can read it concurrently, so its
 *    owner skips the lock.
 *  - Trie nodes are immutable once shared (refcount > 1).  A node whose
 *    refcount is 1 and whose ancestors all have refcount 1 belongs to one
 *    context alone, and its owner may change it in place.  That is what makes
 *    repeated sets cheap; a copy of a context bumps the root's refcount and
 *    so freezes the whole tree for everyone.
 */
#ifndef CTXVARS_INTERNAL_H
#define CTXVARS_INTERNAL_H

#include <ctxvars.h>

#include "chaos.h" /* CTX__CHAOS(): nothing unless --enable-chaos */

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* CTX_MISSING is deliberately reached through the GOT inside the library
 * too: an executable built without -fPIC gets a copy relocation of
 * ctx_missing_sentinel, and only the GOT entry follows the copy (a hidden
 * alias would keep the library's own address and disagree with callers). */

#define CTX__LIKELY(x) __builtin_expect(!!(x), 1)
#define CTX__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CTX__HIDDEN __attribute__((visibility("hidden")))
#define CTX__TLS_IE __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------------
 * Publishing what a signal handler may read.
 *
 * ctx_var_get() may run in a signal handler that interrupted the library
 * on the same thread (see "Signal safety" in hamt.c and the get path in
 * var.c).  Such a reader sees memory exactly as the interrupted code left
 * it between two of its instructions, so every change it can see (in a
 * trie node, a get cache slot, the thread's version) is one aligned store
 * of one word, made after everything that word makes reachable is
 * complete.  The handler runs on the writing thread itself, so ordering
 * the compiler is enough (atomic_signal_fence emits no instruction); the
 * stores and loads are relaxed atomics so that neither side may split,
 * merge or repeat them.
 * ---------------------------------------------------------------- */
#define CTX__PUBLISH(lvalue, v)                                              \
    do {                                                                     \
        atomic_signal_fence(memory_order_release);                           \
        __atomic_store_n(&(lvalue), (v), __ATOMIC_RELAXED);                  \
    } while (0)
#define CTX__PEEK(lvalue) __atomic_load_n(&(lvalue), __ATOMIC_RELAXED)

/* ------------------------------------------------------------------
 * Debug checks: compiled only with --enable-debug (CTX_DEBUG).
 * ---------------------------------------------------------------- */
#ifdef CTX_DEBUG
CTX__HIDDEN _Noreturn void ctx__die(const char *what, const char *file,
                                    int line);
#define CTX__ASSERT(cond)                                                    \
    do {                                                                     \
        if (CTX__UNLIKELY(!(cond)))                                          \
            ctx__die("assertion failed: " #cond, __FILE__, __LINE__);        \
    } while (0)
/* Object headers carry a magic number while alive and a different one once
 * freed, so double release and use after release are reported by name. */
#define CTX__CHECK_MAGIC(obj, magic, what)                                   \
    do {                                                                     \
        if (CTX__UNLIKELY((obj)->magic_ != (magic)))                         \
            ctx__die("bad or released " what, __FILE__, __LINE__);          \
    } while (0)
#define CTX__SET_MAGIC(obj, magic) ((obj)->magic_ = (magic))
#define CTX__MAGIC_FIELD uint32_t magic_;
#else
#define CTX__ASSERT(cond) ((void)0)
#define CTX__CHECK_MAGIC(obj, magic, what) ((void)0)
#define CTX__SET_MAGIC(obj, magic) ((void)0)
#define CTX__MAGIC_FIELD
#endif

#define CTX__MAGIC_VAR 0x56415221u     /* "VAR!" */
#define CTX__MAGIC_CONTEXT 0x43545821u /* "CTX!" */
#define CTX__MAGIC_TOKEN 0x544f4b21u   /* "TOK!" */
#define CTX__MAGIC_DEAD 0xdeadbeefu

/* ------------------------------------------------------------------
 * alloc.c: every allocation goes through here, so tests can fail the k-th
 * one (fault injection, as SQLite does).
 * ---------------------------------------------------------------- */
CTX__HIDDEN void *ctx__malloc(size_t size);
CTX__HIDDEN void *ctx__calloc(size_t n, size_t size);
CTX__HIDDEN void ctx__free(void *p);

/* Test hooks.  Counting is per thread, so a test thread's injected faults
 * never hit allocations other threads make.
 * ctx__fault_fail_after(k): the next k allocations on this thread succeed,
 * the one after fails, then all succeed again.  k < 0 disarms.
 * ctx__fault_armed(): whether the failure is still pending (it never
 * fired, so the call under test made fewer than k+1 allocations). */
CTX__HIDDEN void ctx__fault_fail_after(long k);

/* One spare block per kind per thread (see alloc.c). */
enum ctx__spare_kind { CTX__SPARE_CONTEXT, CTX__SPARE_TOKEN, CTX__SPARE_KINDS };
CTX__HIDDEN void *ctx__spare_take(enum ctx__spare_kind kind, size_t size);
CTX__HIDDEN void ctx__spare_give(enum ctx__spare_kind kind, void *p);
CTX__HIDDEN void ctx__spare_drain(void);
CTX__HIDDEN bool ctx__fault_armed(void);

/* ------------------------------------------------------------------
 * A tiny test-and-test-and-set spinlock.  Held only for a few loads and
 * stores (never across allocation or user code), so spinning beats a
 * futex round trip.
 * ---------------------------------------------------------------- */
typedef struct {
    atomic_bool locked;
} ctx__spin_t;

/* Tells the CPU we are spinning (frees the core's other hyperthread). */
static inline void ctx__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void ctx__spin_lock(ctx__spin_t *l)
{
    for (;;) {
        CTX__CHAOS();
        if (!atomic_exchange_explicit(&l->locked, true, memory_order_acquire))
            return;
        while (atomic_load_explicit(&l->locked, memory_order_relaxed))
            ctx__cpu_relax();
    }
}

static inline void ctx__spin_unlock(ctx__spin_t *l)
{
    CTX__CHAOS(); /* stretch the critical section: readers pile up */
    atomic_store_explicit(&l->locked, false, memory_order_release);
}

/* ------------------------------------------------------------------
 * var.c
 * ---------------------------------------------------------------- */
struct ctx_var {
    CTX__MAGIC_FIELD
    uint32_t hash;           /* trie hash; tests may force it (collisions) */
    atomic_size_t refcnt;
    uint64_t uid;            /* never reused: keys the per-thread get cache */
    void *default_value;     /* CTX_MISSING: none */
    ctx_value_ops_t ops;     /* zeroed when values are borrowed */
    char *name;
};

static inline void ctx__value_retain(const ctx_var_t *var, void *value)
{
    if (var->ops.retain != NULL && value != CTX_MISSING)
        var->ops.retain(value);
}

static inline void ctx__value_release(const ctx_var_t *var, void *value)
{
    if (var->ops.release != NULL && value != CTX_MISSING)
        var->ops.release(value);
}

static inline void ctx__var_incref(ctx_var_t *var)
{
    atomic_fetch_add_explicit(&var->refcnt, 1, memory_order_relaxed);
}

/* Test-only: give var a chosen hash, before it is bound anywhere. */
CTX__HIDDEN void ctx__var_set_hash(ctx_var_t *var, uint32_t hash);

/* ------------------------------------------------------------------
 * hamt.c: the persistent hash array mapped trie.  See the essay there.
 * An empty trie is the NULL root.  Keys are variables (the trie holds a
 * reference to each key it stores); values are held per ops.
 * ---------------------------------------------------------------- */
typedef struct ctx__hnode ctx__hnode_t;

/* Three-way answers, so "not there" is never confused with "failed". */
typedef enum {
    CTX__H_ERROR = -1, /* allocation failed; nothing changed */
    CTX__H_NOT_FOUND = 0,
    CTX__H_FOUND = 1,
} ctx__hres_t;

/* What an in-place update pushed out of the trie: released by the caller
 * after it drops its lock, so no user callback ever runs under the lock. */
typedef struct {
    ctx__hnode_t *root;  /* an old root to drop (path-copy updates) */
    ctx_var_t *key;      /* a displaced binding's key ... */
    void *value;         /* ... and value (CTX_MISSING: none) */
    bool drop_key;       /* whether the key reference goes too */
    void *previous;      /* assoc: the key's value before (CTX_MISSING:
                            unbound), borrowed; lets set make its token
                            without a second walk */
} ctx__hgarbage_t;

#define CTX__HGARBAGE_INIT {NULL, NULL, CTX_MISSING, false, CTX_MISSING}

CTX__HIDDEN ctx__hres_t ctx__hamt_find(const ctx__hnode_t *root,
                                       const ctx_var_t *key, void **value);

/* The garbage record must be disposed after every call below, failed or
 * not.
 *
 * Binds key to value in *root.  Where *root and the nodes on the key's path
 * are not shared, they are changed in place; elsewhere the path is copied
 * and the old root goes to *garbage.  *added tells whether the key is new.
 * CTX__H_ERROR (ENOMEM) leaves *root and every node as they were. */
CTX__HIDDEN ctx__hres_t ctx__hamt_assoc(ctx__hnode_t **root, ctx_var_t *key,
                                        void *value, bool *added,
                                        ctx__hgarbage_t *garbage);

/* Removes key.  CTX__H_NOT_FOUND: it was not there (nothing changed). */
CTX__HIDDEN ctx__hres_t ctx__hamt_without(ctx__hnode_t **root,
                                          const ctx_var_t *key,
                                          ctx__hgarbage_t *garbage);

CTX__HIDDEN void ctx__hgarbage_dispose(ctx__hgarbage_t *garbage);
CTX__HIDDEN ctx__hnode_t *ctx__hamt_retain(ctx__hnode_t *root);
/* For an owner that knows no other thread can reach root (see
 * context.c): read and set the count without a read-modify-write. */
CTX__HIDDEN unsigned ctx__hamt_refcount(const ctx__hnode_t *root);
CTX__HIDDEN void ctx__hamt_set_refcount(ctx__hnode_t *root, unsigned n);
CTX__HIDDEN void ctx__hamt_release(ctx__hnode_t *root);

/* Visits every binding; stops at fn's first non-zero return. */
CTX__HIDDEN int ctx__hamt_foreach(const ctx__hnode_t *root,
                                  int (*fn)(ctx_var_t *key, void *value,
                                            void *arg),
                                  void *arg);

/* Debug and test aids: validates every structural invariant (bitmaps,
 * counts, hashes on the right path, no empty or single-binding subnodes) and
 * returns the number of bindings, or -1 with a message on stderr. */
CTX__HIDDEN long ctx__hamt_check(const ctx__hnode_t *root);
/* Depth of the trie (0 for empty), and a dump with one line per node and
 * per binding. */
CTX__HIDDEN int ctx__hamt_depth(const ctx__hnode_t *root);
CTX__HIDDEN void ctx__hamt_dump(const ctx__hnode_t *root, FILE *out);

/* ------------------------------------------------------------------
 * context.c and tstate.c
 * ---------------------------------------------------------------- */
typedef struct ctx__tstate ctx__tstate_t;

/* ctx->state packs the reference count and the "entered" flag into one
 * word: references count in steps of CTX__REF, bit 0 is set while some
 * thread has the context entered, and the flag itself holds a reference.
 * So entering is one CAS (which also tells the loser EBUSY), exiting is one
 * fetch_sub, and whoever brings the word to zero frees the context. */
#define CTX__ENTERED ((size_t)1)
#define CTX__REF ((size_t)2)

struct ctx_context {
    CTX__MAGIC_FIELD
    atomic_size_t state;            /* references and the entered flag */
    ctx__spin_t lock;               /* see the model at the top */
    bool private_;                  /* no user handle: writes skip lock */
    ctx__hnode_t *root;
    size_t len;
    ctx_context_t *prev;            /* owner only: what was current before */
};

CTX__HIDDEN int ctx__context_alloc(ctx__hnode_t *root, size_t len,
                                   ctx_context_t **out);
/* Copies the current context of the calling thread (its base if it has
 * entered nothing) into a private context, for the library's own use (never
 * give it to the user: ctx_copy_context() does that, unprivately).
 * ENOMEM only. */
CTX__HIDDEN int ctx__copy_current(ctx_context_t **out);

/* A snapshot without a context object: a reference to the root of the
 * calling thread's current context (NULL: empty), or of any ctx, read
 * safely while its owner writes, and the binding count.  The caller owns
 * the reference.  Cannot fail. */
CTX__HIDDEN ctx__hnode_t *ctx__snapshot_current(size_t *len);
CTX__HIDDEN ctx__hnode_t *ctx__snapshot_of(const ctx_context_t *ctx,
                                           size_t *len);

/* The owner's writes to its current context c: bind, or unbind (ENOENT
 * when var was not bound).  0, ENOMEM, ENOENT.  Both drop this thread's
 * get cache. */
CTX__HIDDEN int ctx__context_assoc(ctx_context_t *c, ctx_var_t *var,
                                   void *value, void **previous);
CTX__HIDDEN int ctx__context_without(ctx_context_t *c, const ctx_var_t *var);

#define CTX__CACHE_SLOTS 32 /* power of two */

struct ctx__cache_slot {
    uint64_t uid;  /* the variable, 0: empty */
    uint64_t ver;  /* the thread's version when this was looked up */
    void *value;   /* the binding, CTX_MISSING: unbound */
};

/* Everything a thread needs, in initial-exec TLS so that a get is a few
 * loads from the thread pointer. */
struct ctx__tstate {
    ctx_context_t *current;  /* NULL: the base, not created yet */
    ctx_context_t *base;
    uint64_t ver;            /* bumped on every change of what get sees */
    bool registered;         /* pthread key set: teardown runs at exit */
    ctx_fiber_t *fiber;      /* the innermost fiber resumed here, or NULL */
    unsigned in_watch;       /* inside a watcher: switching is EDEADLK */
    void *watch_pinned;      /* the watcher record it is calling */
    ctx__tstate_t *reg_next; /* the registry of live threads (fork) */
    ctx__tstate_t *reg_prev;
    struct ctx__cache_slot cache[CTX__CACHE_SLOTS];
};

extern CTX__HIDDEN _Thread_local ctx__tstate_t ctx__ts CTX__TLS_IE;

/* The calling thread's current context, creating its base on first use.
 * NULL only on ENOMEM. */
CTX__HIDDEN ctx_context_t *ctx__current(void);

/* Clears ctx's entered flag (the exit half of enter), freeing ctx if that
 * was its last hold. */
CTX__HIDDEN void ctx__context_leave(ctx_context_t *ctx);

/* Makes ctx (whose reference passes to the thread) the calling thread's
 * base context.  Must be the first library call on a new thread: used by
 * ctx_thread_create()'s trampoline.  ENOMEM (ctx is then released). */
CTX__HIDDEN int ctx__adopt_base(ctx_context_t *ctx);

/* Runs ctx as the current context of a thread that has no other reason to
 * be in it: exactly ctx_context_run() (pool workers call it). */
CTX__HIDDEN int ctx__run(ctx_context_t *ctx, void *(*fn)(void *), void *arg,
                         void **result);

/* Forgets the thread's cached lookups (bumps its version).  Called after
 * the change it announces: a signal handler that runs in between may cache
 * the new state under the old version, which this bump then retires. */
static inline void ctx__ts_bump(ctx__tstate_t *ts)
{
    /* A plain increment: handlers only read ver, and on x86-64 this is one
     * instruction where an atomic store would be three. */
    atomic_signal_fence(memory_order_release);
    ts->ver++;
}

static inline void ctx__ts_changed(void) { ctx__ts_bump(&ctx__ts); }

/* The calling thread's state, read afresh.  A call into user code may
 * return on another thread (a fiber that migrated), but compilers keep the
 * thread pointer, and so &ctx__ts, in a register across calls: code that
 * touches ctx__ts after such a call must take it from here.  Out of line
 * and with a volatile asm, so no compiler may fold two calls into one. */
CTX__HIDDEN ctx__tstate_t *ctx__ts_reload(void);

/* Claims ctx's entered flag for the calling thread (the CAS of enter):
 * EBUSY when someone has it entered.  The caller links it into a stack. */
CTX__HIDDEN int ctx__context_claim(ctx_context_t *ctx);

/* The lowest context of ts's innermost stack: what ctx_context_exit() and
 * the unwinding of ctx_context_run() must never go below (the base, or the
 * innermost resumed fiber's own context). */
static inline ctx_context_t *ctx__stack_floor(const ctx__tstate_t *ts);

/* ------------------------------------------------------------------
 * watch.c: context-switch watchers.  The gate is non-zero while any
 * watcher is installed or a thread is inside one; every switch tests it
 * once, so with no watcher a switch costs one branch.
 * ---------------------------------------------------------------- */
extern CTX__HIDDEN atomic_uint ctx__watch_gate;

#if defined(__SANITIZE_THREAD__)
#define CTX__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CTX__TSAN 1
#endif
#endif

static inline bool ctx__watching(void)
{
#if defined(__x86_64__) && defined(__GCC_ASM_FLAG_OUTPUTS__) &&              \
    !defined(CTX__TSAN)
    /* Compilers do not fold an atomic load into a compare, so the portable
     * test is load, test, branch; this is compare-with-memory and branch
     * (an aligned 4-byte load is atomic on x86, like the relaxed load it
     * replaces): one instruction less on every switch.  TSan builds keep
     * the atomic load, so that TSan sees it. */
    bool watching;
    __asm__ __volatile__("cmpl $0, %1"
                         : "=@ccne"(watching)
                         : "m"(ctx__watch_gate));
    return CTX__UNLIKELY(watching);
#else
    return CTX__UNLIKELY(
        atomic_load_explicit(&ctx__watch_gate, memory_order_relaxed) != 0);
#endif
}

/* Calls every watcher with ts->current; ts must be the calling thread's. */
CTX__HIDDEN void ctx__watch_fire(ctx__tstate_t *ts);

/* ------------------------------------------------------------------
 * fiber.c
 * ---------------------------------------------------------------- */
#define CTX__MAGIC_FIBER 0x46494221u /* "FIB!" */
#define CTX__FIBER_RESUMED 1u
#define CTX__FIBER_RELEASED 2u

struct ctx_fiber {
    CTX__MAGIC_FIELD
    ctx_context_t *ctx;   /* the fiber's own context (a reference) */
    ctx_context_t *top;   /* suspended: the innermost context it holds
                             entered above ctx, NULL: none */
    ctx_fiber_t *outer;   /* resumed: the fiber resumed below it on the
                             same thread, NULL: none */
    atomic_uint state;    /* CTX__FIBER_* */
};

/* Takes fiber f, the innermost resumed on ts, off ts: what
 * ctx_fiber_suspend() does, also for a thread that is going away (then
 * watchers are not told: notify false).  May free f. */
CTX__HIDDEN void ctx__fiber_detach(ctx__tstate_t *ts, ctx_fiber_t *f,
                                   bool notify);

static inline ctx_context_t *ctx__stack_floor(const ctx__tstate_t *ts)
{
    return ts->fiber != NULL ? ts->fiber->ctx : ts->base;
}

/* ------------------------------------------------------------------
 * token.c
 * ---------------------------------------------------------------- */
struct ctx_token {
    CTX__MAGIC_FIELD
    atomic_bool used;        /* atomic: ctx_token_used() may ask from anywhere */
    ctx_var_t *var;          /* referenced */
    ctx_context_t *ctx;      /* referenced: identity survives address reuse */
    void *old_value;         /* held per var's ops; CTX_MISSING: was unbound */
};

/* A token is allocated before the set it records (so a failed
 * allocation changes nothing) and filled in after it.  fill takes over
 * the caller's hold on old_value. */
CTX__HIDDEN ctx_token_t *ctx__token_alloc(void);
CTX__HIDDEN void ctx__token_fill(ctx_token_t *t, ctx_var_t *var,
                                 ctx_context_t *ctx, void *old_value);

#endif /* CTXVARS_INTERNAL_H */
