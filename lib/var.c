/*
 * var.c - context variables: creation, and get/set/reset against the
 * calling thread's current context.
 *
 * The get path.  Users replace pthread_getspecific() with ctx_var_get(), so
 * a read must cost about as much: a few loads, no atomic read-modify-write,
 * no lock.  Each thread keeps a small direct-mapped cache of recent lookups
 * in its TLS, keyed by the variable's never-reused uid and by the thread's
 * version number, which the thread bumps whenever what it would see may
 * have changed (set, reset, enter, exit).  A hit is two compares; a miss
 * walks the trie, lock-free because only the owner writes its current
 * context.  This is CPython's per-variable cache turned per-thread, since
 * here many threads read one variable at once.
 *
 * Reads from signal handlers.  get must work in a handler that
 * interrupted anything on the same thread, including another get.  The
 * trie takes care of itself (hamt.c, "Signal safety"); a cache slot is
 * three words, so its protocol is:
 *  - A hit checks the version, then the uid, then loads the value, in
 *    that order for the compiler too.
 *  - A fill writes uid 0 first, then value and version, then the uid: a
 *    reader that interrupts it sees no uid at all or the whole entry.
 *  - A fill never evicts a live entry (another variable's, at the current
 *    version).  A hit that was interrupted after its checks and before
 *    its load found a live entry; so no handler in between can change it.
 *    The price: a variable whose slot a live entry holds goes the slow
 *    way until the thread's next change (set, reset, enter, exit).
 *  - A fill sets a per-thread "filling" flag, and a lookup that finds it
 *    set (a handler that interrupted a fill) does not touch the cache, so
 *    the interrupted fill is never mixed with another.
 * None of this costs the hit path an instruction; the slow path pays two
 * loads, a compare and two stores.
 */
#include "config.h"

#include "internal.h"

#include <errno.h>
#include <string.h>

const char ctx_missing_sentinel = 0;

static atomic_uint_least64_t next_uid = 1;

/* splitmix64's finaliser: uids are sequential, trie hashes must not be. */
static uint32_t mix_uid(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    x ^= x >> 31;
    return (uint32_t)x;
}

int ctx_var_create(ctx_var_t **out, const char *name, void *default_value,
                   const ctx_value_ops_t *ops)
{
    if (out == NULL)
        return EINVAL;
    if (name == NULL)
        name = "";
    size_t n = strlen(name) + 1;
    ctx_var_t *var = ctx__malloc(sizeof *var + n); /* name lives after it */
    if (var == NULL)
        return ENOMEM;
    CTX__SET_MAGIC(var, CTX__MAGIC_VAR);
    atomic_init(&var->refcnt, 1);
    var->uid = atomic_fetch_add_explicit(&next_uid, 1, memory_order_relaxed);
    var->hash = mix_uid(var->uid);
    var->default_value = default_value;
    if (ops != NULL)
        var->ops = *ops;
    else
        memset(&var->ops, 0, sizeof var->ops);
    var->name = memcpy((char *)(var + 1), name, n);
    ctx__value_retain(var, default_value);
    *out = var;
    return 0;
}

ctx_var_t *ctx_var_retain(ctx_var_t *var)
{
    if (var != NULL) {
        CTX__CHECK_MAGIC(var, CTX__MAGIC_VAR, "variable");
        ctx__var_incref(var);
    }
    return var;
}

void ctx_var_release(ctx_var_t *var)
{
    if (var == NULL)
        return;
    CTX__CHECK_MAGIC(var, CTX__MAGIC_VAR, "variable");
    CTX__CHAOS();
    if (atomic_fetch_sub_explicit(&var->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    ctx__value_release(var, var->default_value);
    CTX__SET_MAGIC(var, CTX__MAGIC_DEAD);
    ctx__free(var);
}

const char *ctx_var_name(const ctx_var_t *var)
{
    return var != NULL ? var->name : NULL;
}

void ctx__var_set_hash(ctx_var_t *var, uint32_t hash)
{
    var->hash = hash;
}

/* ------------------------------------------------------------------
 * Reading
 * ---------------------------------------------------------------- */

/* Set while this thread fills a cache slot (see the top). */
static _Thread_local bool filling CTX__TLS_IE;

/* Kept out of line so the hit path needs no stack frame. */
__attribute__((noinline)) static void *lookup_slow(const ctx_var_t *var)
{
    uint64_t uid = var->uid;
    struct ctx__cache_slot *slot = &ctx__ts.cache[uid & (CTX__CACHE_SLOTS - 1)];
    void *v = CTX_MISSING;
    const ctx_context_t *cur = CTX__PEEK(ctx__ts.current);
    if (cur != NULL)
        ctx__hamt_find(CTX__PEEK(cur->root), var, &v);
    if (CTX__PEEK(filling))
        return v;
    uint64_t ver = CTX__PEEK(ctx__ts.ver), held = CTX__PEEK(slot->uid);
    if (held != 0 && held != uid && CTX__PEEK(slot->ver) == ver)
        return v; /* a live entry: keep it */
    CTX__PUBLISH(filling, true);
    CTX__PUBLISH(slot->uid, 0);
    CTX__PUBLISH(slot->value, v);
    CTX__PUBLISH(slot->ver, ver);
    CTX__PUBLISH(slot->uid, uid);
    CTX__PUBLISH(filling, false);
    return v;
}

/* The binding in the current context, or CTX_MISSING. */
static inline void *lookup(const ctx_var_t *var)
{
    CTX__CHECK_MAGIC(var, CTX__MAGIC_VAR, "variable");
    uint64_t uid = var->uid;
    struct ctx__cache_slot *slot = &ctx__ts.cache[uid & (CTX__CACHE_SLOTS - 1)];
    /* Plain loads, ordered by the fences: relaxed atomic loads would be
     * the same instructions, but the compilers then no longer fold a load
     * into its compare. */
    if (CTX__LIKELY(slot->ver == ctx__ts.ver)) {
        atomic_signal_fence(memory_order_acquire);
        if (CTX__LIKELY(slot->uid == uid)) {
            atomic_signal_fence(memory_order_acquire);
            return slot->value;
        }
    }
    return lookup_slow(var);
}

int ctx_var_get(const ctx_var_t *var, void **value)
{
    if (var == NULL || value == NULL)
        return EINVAL;
    void *v = lookup(var);
    if (v == CTX_MISSING) {
        if (var->default_value == CTX_MISSING)
            return ENOENT;
        v = var->default_value;
    }
    *value = v;
    return 0;
}

void *ctx_var_get_or(const ctx_var_t *var, void *fallback)
{
    if (var == NULL)
        return fallback;
    void *v = lookup(var);
    return v == CTX_MISSING ? fallback : v;
}

/* ------------------------------------------------------------------
 * Writing
 * ---------------------------------------------------------------- */

int ctx_var_set(ctx_var_t *var, void *value, ctx_token_t **token)
{
    if (var == NULL || value == CTX_MISSING)
        return EINVAL;
    CTX__CHECK_MAGIC(var, CTX__MAGIC_VAR, "variable");
    ctx_context_t *cur = ctx__current();
    if (cur == NULL)
        return ENOMEM;
    if (token == NULL)
        return ctx__context_assoc(cur, var, value, NULL);
    ctx_token_t *tok = ctx__token_alloc();
    if (tok == NULL)
        return ENOMEM;
    void *old;
    int err = ctx__context_assoc(cur, var, value, &old);
    if (err != 0) {
        ctx__spare_give(CTX__SPARE_TOKEN, tok);
        return err;
    }
    ctx__token_fill(tok, var, cur, old);
    *token = tok;
    return 0;
}

int ctx_var_reset(ctx_var_t *var, ctx_token_t *token)
{
    if (var == NULL || token == NULL)
        return EINVAL;
    CTX__CHECK_MAGIC(token, CTX__MAGIC_TOKEN, "token");
    /* CPython's order of checks. */
    CTX__CHAOS();
    if (atomic_load_explicit(&token->used, memory_order_relaxed))
        return EALREADY;
    if (token->var != var)
        return EINVAL;
    ctx_context_t *cur = ctx__ts.current;
    if (token->ctx != cur)
        return EINVAL;
    int err = token->old_value == CTX_MISSING
                  ? ctx__context_without(cur, var)
                  : ctx__context_assoc(cur, var, token->old_value, NULL);
    if (err == ENOMEM)
        return err;
    /* ENOENT would mean the binding is already gone: nothing to undo.  It
     * cannot happen through the API (see ctx__context_without), but if it
     * did, the token is still spent, as CPython would spend it. */
    CTX__CHAOS();
    atomic_store_explicit(&token->used, true, memory_order_relaxed);
    return 0;
}
