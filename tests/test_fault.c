/*
 * test_fault.c - allocation failure injection through the public API.
 *
 * For every public function that allocates, a sweep fails its first
 * allocation, then its second, and so on (ctx__fault_fail_after) until a
 * call gets through without the fault firing.  Every failed call must
 * return ENOMEM (EAGAIN for ctx_thread_create) and change nothing: the
 * context's full dump and length, any snapshot's dump, the token, the
 * out-pointer, and nothing may run (jobs, threads, callables).  A failed
 * call must not even keep an extra reference to the trie: on an unshared
 * context an overwrite must still be done in place, without allocating.
 * Values count their retains and releases, which must balance once all is
 * released; leaks are left to ASan and valgrind.
 *
 * Contexts of 0, 1, 33, 1000 and 5000 bindings are used, with families of
 * forced hashes so the updates meet deep paths and collision nodes.  Each
 * test prints how many allocation sites it swept.
 */
#include "config.h"

#include "internal.h"
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- values that count what the library does with them ---- */
enum { V_POP = 4, V_OLD = 4, V_NEW, V_DEF, V_SPARE, NVALS };
typedef struct {
    atomic_long retains, releases;
} tval_t;
static tval_t vals[NVALS];
#define VAL(i) ((void *)&vals[(i)])

static void tv_retain(void *v) { atomic_fetch_add(&((tval_t *)v)->retains, 1); }
static void tv_release(void *v) { atomic_fetch_add(&((tval_t *)v)->releases, 1); }
static const ctx_value_ops_t tv_ops = {tv_retain, tv_release};

static void check_balanced(void)
{
    for (int i = 0; i < NVALS; i++)
        ck_assert_msg(atomic_load(&vals[i].retains) ==
                          atomic_load(&vals[i].releases),
                      "value %d: %ld retains, %ld releases", i,
                      atomic_load(&vals[i].retains),
                      atomic_load(&vals[i].releases));
}

/* ck_ok() for hot loops: Check records the location of every assertion
 * it evaluates, which dominates a 5000-binding build under valgrind. */
#define OK(expr)                                                             \
    do {                                                                     \
        int rc_ = (expr);                                                    \
        if (rc_ != 0)                                                        \
            ck_abort_msg("%s: error %d", #expr, rc_);                       \
    } while (0)

/* Recognisable "never written" contents for out-pointers. */
static char untouched_mark;
#define UNTOUCHED ((void *)&untouched_mark)

/* ---- the sweep ---- */
static long swept_sites, swept_calls, swept_max;

typedef struct {
    int fail_err;
    bool fresh_thread;               /* each attempt on a new thread */
    int (*call)(void *st);           /* the one call under test */
    void (*after)(void *st, int rc); /* optional: at once, same thread */
    void (*unchanged)(void *st);     /* asserts after a failed call */
    void (*succeeded)(void *st);     /* asserts after the good call */
} sweep_t;

typedef struct {
    const sweep_t *op;
    void *st;
    long k;
    int rc;
    bool fired;
} attempt_t;

static void *attempt(void *p)
{
    attempt_t *a = p;
    ctx__fault_fail_after(a->k);
    a->rc = a->op->call(a->st);
    a->fired = !ctx__fault_armed();
    ctx__fault_fail_after(-1);
    if (a->op->after != NULL)
        a->op->after(a->st, a->rc);
    return NULL;
}

static void sweep(const sweep_t *op, void *st)
{
    for (long k = 0; k < 64; k++) {
        attempt_t a = {op, st, k, -1, false};
        if (op->fresh_thread) {
            pthread_t t;
            ck_ok(pthread_create(&t, NULL, attempt, &a));
            ck_ok(pthread_join(t, NULL));
        } else {
            attempt(&a);
        }
        if (!a.fired) {
            ck_assert_msg(a.rc == 0, "no fault at %ld, yet error %d", k, a.rc);
            op->succeeded(st);
            swept_sites += k;
            swept_calls++;
            swept_max = k > swept_max ? k : swept_max;
            return;
        }
        ck_assert_msg(a.rc == op->fail_err, "allocation %ld failed: got %d",
                      k, a.rc);
        op->unchanged(st);
    }
    ck_abort_msg("the call never succeeded");
}

static void report(const char *what)
{
    printf("fault: %s swept %ld site%s (deepest call; %ld failures injected "
           "over %ld sweeps)\n", what, swept_max, swept_max == 1 ? "" : "s",
           swept_sites, swept_calls);
    fflush(stdout);
    swept_sites = swept_calls = swept_max = 0;
}

/* ---- dumps: every binding of a context, sorted by variable ---- */
typedef struct {
    ctx_var_t *var;
    void *value;
} binding_t;

typedef struct {
    binding_t *b;
    size_t n, cap;
} dump_t;

static int collect(ctx_var_t *var, void *value, void *arg)
{
    dump_t *d = arg;
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->b = realloc(d->b, d->cap * sizeof *d->b);
        if (d->b == NULL)
            ck_abort_msg("out of memory");
    }
    d->b[d->n++] = (binding_t){var, value};
    return 0;
}

static int by_var(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const binding_t *)a)->var;
    uintptr_t y = (uintptr_t)((const binding_t *)b)->var;
    return (x > y) - (x < y);
}

/* Snapshots' nodes are all shared, so walking them for invariants only
 * repeats the walk of the context they came from. */
static dump_t dump_of(const ctx_context_t *c, bool check_trie)
{
    dump_t d = {NULL, 0, 0};
    ck_ok(ctx_context_foreach(c, collect, &d));
    ck_assert_uint_eq(d.n, ctx_context_len(c));
    if (check_trie)
        ck_assert_int_eq(ctx__hamt_check(c->root), (long)d.n);
    return d;
}

/* Same bindings as want.  The same trie yields the same order, so sorting
 * (slow under valgrind) is only needed when the orders differ.  check:
 * also validate the trie (pointless for a snapshot: see dump_of). */
static void same_dump(const dump_t *want, const ctx_context_t *c, bool check)
{
    dump_t d = dump_of(c, check);
    ck_assert_uint_eq(d.n, want->n);
    size_t size = d.n * sizeof *d.b;
    if (d.n > 0 && memcmp(d.b, want->b, size) != 0) {
        binding_t *w = malloc(size);
        ck_assert_ptr_nonnull(w);
        memcpy(w, want->b, size);
        qsort(w, d.n, sizeof *w, by_var);
        qsort(d.b, d.n, sizeof *d.b, by_var);
        ck_assert_msg(memcmp(d.b, w, size) == 0, "bindings changed");
        free(w);
    }
    free(d.b);
}

static void *dump_find(const dump_t *d, const ctx_var_t *var)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->b[i].var == var)
            return d->b[i].value;
    return CTX_MISSING;
}

/* ---- fixtures: an entered context of n bindings ---- */
#define DEEP_LOW 0x0155aaaau /* 25 bits */
#define COLL_HASH 0x9e3779b9u
enum hmode { H_PLAIN, H_DEEP, H_COLL, H_NEAR, H_TWIN, NMODES };
/* No snapshot; one of the whole trie; one, then a set elsewhere, so the
 * root is owned again but the subtrees beside that path are shared. */
enum share { S_NONE, S_FULL, S_PARTIAL, NSHARES };
static const size_t sizes[] = {0, 1, 33, 1000, 5000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Every 8th variable shares the low 25 bits (deep paths, and collisions
 * once the 7 high bits repeat); another every 8th shares one hash. */
static uint32_t family_hash(size_t i)
{
    if (i % 8 == 1)
        return DEEP_LOW | (uint32_t)((i / 8) % 128) << 25;
    if (i % 8 == 2)
        return COLL_HASH;
    return 0;
}

typedef struct {
    size_t n;
    ctx_var_t **vars;
    ctx_var_t *target;   /* the variable the calls under test touch */
    ctx_context_t *ctx;  /* entered by the test's thread */
    ctx_context_t *snap; /* shares (some of) ctx's trie, or NULL */
    enum share share;
    dump_t before, snap_before;
} fix_t;

static uint32_t target_hash(enum hmode mode, const fix_t *f)
{
    switch (mode) {
    case H_DEEP: /* down the deep family */
        return DEEP_LOW | 127u << 25;
    case H_COLL: /* into the collision node */
        return COLL_HASH;
    case H_NEAR: /* beside it, one bit apart */
        return COLL_HASH ^ 0x80000000u;
    case H_TWIN: /* 20 bits in common with vars[0]: a split 4 levels deep */
        return f->n > 0 ? f->vars[0]->hash ^ 0xfff00000u : 0;
    default:
        return 0;
    }
}

static ctx_var_t *counted_var(const char *name, void *def, uint32_t hash)
{
    ctx_var_t *v = NULL;
    OK(ctx_var_create(&v, name, def, &tv_ops));
    if (hash != 0)
        ctx__var_set_hash(v, hash);
    return v;
}

static void fix_build(fix_t *f, size_t n, enum hmode mode, bool bound)
{
    memset(f, 0, sizeof *f);
    f->n = n;
    f->vars = calloc(n + 1, sizeof *f->vars);
    ck_assert_ptr_nonnull(f->vars);
    for (size_t i = 0; i < n; i++)
        f->vars[i] = counted_var("pop", CTX_MISSING, family_hash(i));
    f->target = counted_var("target", VAL(V_DEF), target_hash(mode, f));
    ck_ok(ctx_context_new(&f->ctx));
    ck_ok(ctx_context_enter(f->ctx));
    for (size_t i = 0; i < n; i++)
        OK(ctx_var_set(f->vars[i], VAL(i % V_POP), NULL));
    if (bound)
        ck_ok(ctx_var_set(f->target, VAL(V_OLD), NULL));
}

/* Takes the reference state, after making the trie shared as asked. */
static void fix_freeze(fix_t *f, enum share share)
{
    f->share = share;
    if (share != S_NONE) {
        ck_ok(ctx_copy_context(&f->snap));
        f->snap_before = dump_of(f->snap, false);
    }
    if (share == S_PARTIAL && f->n > 0)
        ck_ok(ctx_var_set(f->vars[0], VAL(V_SPARE), NULL));
    f->before = dump_of(f->ctx, true);
}

/* Overwriting a binding of a trie nobody shares allocates nothing; if it
 * does, some failed call kept a reference to the trie. */
static void assert_unshared(fix_t *f)
{
    void *v0 = NULL;
    ck_ok(ctx_var_get(f->vars[0], &v0));
    ctx__fault_fail_after(0);
    int rc1 = ctx_var_set(f->vars[0], VAL(v0 == VAL(V_NEW) ? V_SPARE : V_NEW),
                          NULL);
    int rc2 = ctx_var_set(f->vars[0], v0, NULL);
    bool armed = ctx__fault_armed();
    ctx__fault_fail_after(-1);
    ck_assert_msg(armed, "a failed call left the trie shared");
    ck_ok(rc1);
    ck_ok(rc2);
}

static void fix_unchanged(fix_t *f)
{
    same_dump(&f->before, f->ctx, true);
    if (f->snap != NULL)
        same_dump(&f->snap_before, f->snap, false);
    if (f->n > 0 && f->share != S_FULL)
        assert_unshared(f);
    void *want = dump_find(&f->before, f->target), *got = NULL;
    ck_ok(ctx_var_get(f->target, &got));
    ck_assert_ptr_eq(got, want == CTX_MISSING ? VAL(V_DEF) : want);
}

static void fix_free(fix_t *f)
{
    ctx_context_release(f->snap);
    ck_ok(ctx_context_exit(f->ctx));
    ctx_context_release(f->ctx);
    for (size_t i = 0; i < f->n; i++)
        ctx_var_release(f->vars[i]);
    ctx_var_release(f->target);
    free(f->vars);
    free(f->before.b);
    free(f->snap_before.b);
}

/* ======================================================== variables */

typedef struct {
    fix_t *f;
    bool with_token;
    ctx_token_t *tok;
} set_st;

static int set_call(void *p)
{
    set_st *s = p;
    return ctx_var_set(s->f->target, VAL(V_NEW),
                       s->with_token ? &s->tok : NULL);
}

static void set_unchanged(void *p)
{
    set_st *s = p;
    fix_unchanged(s->f);
    ck_assert_ptr_eq(s->tok, UNTOUCHED);
}

static void set_done(void *p)
{
    set_st *s = p;
    fix_t *f = s->f;
    void *old = dump_find(&f->before, f->target), *v = NULL;
    ck_ok(ctx_var_get(f->target, &v));
    ck_assert_ptr_eq(v, VAL(V_NEW));
    ck_assert_uint_eq(ctx_context_len(f->ctx),
                      f->before.n + (old == CTX_MISSING));
    if (f->snap != NULL)
        same_dump(&f->snap_before, f->snap, false);
    if (!s->with_token)
        return;
    ck_assert(!ctx_token_used(s->tok));
    ck_assert_ptr_eq(ctx_token_old_value(s->tok), old);
    ck_ok(ctx_var_reset(f->target, s->tok));
    ck_assert(ctx_token_used(s->tok));
    same_dump(&f->before, f->ctx, true);
    ctx_token_release(s->tok);
}

START_TEST(var_set)
{
    static const sweep_t op = {ENOMEM, false, set_call, NULL, set_unchanged,
                               set_done};
    for (size_t z = 0; z < NSIZES; z++)
        for (int cfg = 0; cfg < NMODES * NSHARES * 4; cfg++) {
            fix_t f;
            fix_build(&f, sizes[z], cfg / 4 / NSHARES, cfg & 1);
            fix_freeze(&f, cfg / 4 % NSHARES);
            set_st s = {&f, (cfg & 2) != 0, UNTOUCHED};
            sweep(&op, &s);
            fix_free(&f);
        }
    check_balanced();
    report("ctx_var_set");
}
END_TEST

typedef struct {
    fix_t *f;
    ctx_token_t *tok;
    bool bound; /* before the set that made tok */
} reset_st;

static int reset_call(void *p)
{
    reset_st *s = p;
    return ctx_var_reset(s->f->target, s->tok);
}

static void reset_unchanged(void *p)
{
    reset_st *s = p;
    fix_unchanged(s->f);
    ck_assert(!ctx_token_used(s->tok));
}

static void reset_done(void *p)
{
    reset_st *s = p;
    fix_t *f = s->f;
    ck_assert(ctx_token_used(s->tok));
    void *v = NULL;
    ck_ok(ctx_var_get(f->target, &v));
    ck_assert_ptr_eq(v, s->bound ? VAL(V_OLD) : VAL(V_DEF));
    ck_assert(ctx_context_contains(f->ctx, f->target) == s->bound);
    ck_assert_uint_eq(ctx_context_len(f->ctx), f->before.n - !s->bound);
    ck_assert_int_eq(ctx_var_reset(f->target, s->tok), EALREADY);
    if (f->snap != NULL)
        same_dump(&f->snap_before, f->snap, false);
    ctx_token_release(s->tok);
}

START_TEST(var_reset)
{
    static const sweep_t op = {ENOMEM, false, reset_call, NULL,
                               reset_unchanged, reset_done};
    for (size_t z = 0; z < NSIZES; z++)
        for (int cfg = 0; cfg < NMODES * NSHARES * 2; cfg++) {
            fix_t f;
            reset_st s = {&f, NULL, cfg & 1};
            fix_build(&f, sizes[z], cfg / 2 / NSHARES, s.bound);
            ck_ok(ctx_var_set(f.target, VAL(V_NEW), &s.tok));
            fix_freeze(&f, cfg / 2 % NSHARES);
            sweep(&op, &s);
            fix_free(&f);
        }
    check_balanced();
    report("ctx_var_reset");
}
END_TEST

/* ======================================================== fresh threads */

/* First use on a thread creates its base context: enter, run, set, copy
 * and a callable's call, each on a brand-new thread per attempt. */
enum fresh_kind { F_ENTER, F_RUN, F_SET, F_COPY, F_CALL, NFRESH };

typedef struct {
    enum fresh_kind kind;
    ctx_context_t *ctx; /* to enter; binds var to V_OLD */
    ctx_var_t *var;
    ctx_callable_t *callable; /* made in ctx */
    void *out;          /* result, token or copy */
    int runs;           /* calls of the run function */
    void *seen;         /* var as the thread saw it afterwards */
    int exit_rc;
} fresh_st;

static void *fresh_fn(void *p)
{
    fresh_st *s = p;
    s->runs++;
    return ctx_var_get_or(s->var, NULL);
}

static int fresh_call(void *p)
{
    fresh_st *s = p;
    switch (s->kind) {
    case F_ENTER:
        return ctx_context_enter(s->ctx);
    case F_RUN:
        return ctx_context_run(s->ctx, fresh_fn, s, &s->out);
    case F_SET:
        return ctx_var_set(s->var, VAL(V_NEW), (ctx_token_t **)&s->out);
    case F_COPY:
        return ctx_copy_context((ctx_context_t **)&s->out);
    default:
        return ctx_callable_call(s->callable, &s->out);
    }
}

static void fresh_after(void *p, int rc)
{
    fresh_st *s = p;
    s->seen = UNTOUCHED;
    ctx_var_get(s->var, &s->seen);
    s->exit_rc = ctx_context_exit(s->ctx);
    if (rc == 0 && s->kind == F_SET)
        ctx_token_release(s->out);
}

static void fresh_unchanged(void *p)
{
    fresh_st *s = p;
    ck_assert_ptr_eq(s->out, UNTOUCHED);
    ck_assert_int_eq(s->runs, 0);
    ck_assert_ptr_eq(s->seen, VAL(V_DEF));
    ck_assert_int_eq(s->exit_rc, EPERM);
    /* Not left claimed by the dead thread. */
    ck_ok(ctx_context_enter(s->ctx));
    ck_ok(ctx_context_exit(s->ctx));
}

static void fresh_done(void *p)
{
    fresh_st *s = p;
    switch (s->kind) {
    case F_ENTER:
        ck_assert_ptr_eq(s->seen, VAL(V_OLD));
        ck_ok(s->exit_rc);
        break;
    case F_RUN:
    case F_CALL:
        ck_assert_int_eq(s->runs, 1);
        ck_assert_ptr_eq(s->out, VAL(V_OLD));
        break;
    case F_SET:
        ck_assert_ptr_eq(s->seen, VAL(V_NEW));
        break;
    default: /* F_COPY */
        ck_assert_uint_eq(ctx_context_len(s->out), 0);
        ctx_context_release(s->out);
    }
}

START_TEST(fresh_thread)
{
    static const sweep_t op = {ENOMEM, true, fresh_call, fresh_after,
                               fresh_unchanged, fresh_done};
    for (int kind = 0; kind < NFRESH; kind++) {
        fresh_st s = {kind, NULL, NULL, NULL, UNTOUCHED, 0, NULL, 0};
        s.var = counted_var("v", VAL(V_DEF), 0);
        ck_ok(ctx_context_new(&s.ctx));
        ck_ok(ctx_context_enter(s.ctx));
        ck_ok(ctx_var_set(s.var, VAL(V_OLD), NULL));
        ck_ok(ctx_callable_create(&s.callable, fresh_fn, &s));
        ck_ok(ctx_context_exit(s.ctx));
        sweep(&op, &s);
        ctx_callable_release(s.callable);
        ctx_context_release(s.ctx);
        ctx_var_release(s.var);
    }
    check_balanced();
    report("first use on a fresh thread (enter/run/set/copy/call)");
}
END_TEST

/* ===================================== calls that hand something out */

/* Creations, copies, and work that leaves the thread (pools, threads,
 * callables), each from an entered context.  The work checks it runs in a
 * copy of what the starter had, and sets the target, which must not leak
 * back. */
enum call_kind {
    K_VAR_NEW, K_COPY_CURRENT, K_COPY_CTX, K_COPY_SNAP, K_CTX_NEW,
    K_POOL_NEW, K_POOL_NEW_EX, K_SUBMIT, K_SUBMIT_FUT, K_SUBMIT_IN,
    K_SUBMIT_IN_NULL, K_THREAD, K_CALLABLE_NEW, K_CALLABLE_CALL, NKINDS
};

typedef struct {
    fix_t *f;
    enum call_kind kind;
    ctx_pool_t *pool;
    ctx_callable_t *callable; /* K_CALLABLE_CALL: made before the sweep */
    void *out;                /* what the call hands out */
    pthread_t th;
    atomic_int runs, bad;
} exec_st;

static void *work(void *p)
{
    /* A callable runs us on the sweeping thread: our own allocations are
     * not the library's, so step out of the countdown, and if it had not
     * fired yet, show the sweep it did not. */
    bool armed = ctx__fault_armed();
    ctx__fault_fail_after(-1);
    exec_st *s = p;
    bool empty = s->kind == K_SUBMIT_IN_NULL;
    void *v = NULL;
    ctx_context_t *c = NULL;
    if (ctx_var_get(s->f->target, &v) != 0 ||
        v != (empty ? VAL(V_DEF) : VAL(V_OLD)) || ctx_copy_context(&c) != 0 ||
        ctx_context_len(c) != (empty ? 0 : s->f->before.n) ||
        ctx_var_set(s->f->target, VAL(V_SPARE), NULL) != 0)
        atomic_fetch_add(&s->bad, 1);
    ctx_context_release(c);
    atomic_fetch_add(&s->runs, 1);
    if (armed)
        ctx__fault_fail_after(LONG_MAX);
    return VAL(V_NEW);
}

static int exec_call(void *p)
{
    exec_st *s = p;
    ctx_pool_options_t o = {1, 4, 0};
    ctx_context_t *in = s->f->snap != NULL ? s->f->snap : s->f->ctx;
    void **out = &s->out;
    switch (s->kind) {
    case K_VAR_NEW:
        return ctx_var_create((ctx_var_t **)out, "new", VAL(V_DEF), &tv_ops);
    case K_COPY_CURRENT:
        return ctx_copy_context((ctx_context_t **)out);
    case K_COPY_CTX:
    case K_COPY_SNAP:
        return ctx_context_copy(s->kind == K_COPY_CTX ? s->f->ctx : s->f->snap,
                                (ctx_context_t **)out);
    case K_CTX_NEW:
        return ctx_context_new((ctx_context_t **)out);
    case K_POOL_NEW:
        return ctx_pool_create((ctx_pool_t **)out, 2);
    case K_POOL_NEW_EX:
        return ctx_pool_create_ex((ctx_pool_t **)out, &o);
    case K_SUBMIT:
        return ctx_pool_submit(s->pool, work, s, NULL);
    case K_SUBMIT_FUT:
        return ctx_pool_submit(s->pool, work, s, (ctx_future_t **)out);
    case K_SUBMIT_IN:
    case K_SUBMIT_IN_NULL:
        return ctx_pool_submit_in(s->pool, s->kind == K_SUBMIT_IN ? in : NULL,
                                  work, s, (ctx_future_t **)out);
    case K_THREAD:
        return ctx_thread_create(&s->th, NULL, work, s);
    case K_CALLABLE_NEW:
        return ctx_callable_create((ctx_callable_t **)out, work, s);
    default:
        return ctx_callable_call(s->callable, out);
    }
}

static const unsigned char th_mark[sizeof(pthread_t)] = {0xab, 0xcd};

static void exec_unchanged(void *p)
{
    exec_st *s = p;
    fix_unchanged(s->f);
    ck_assert_ptr_eq(s->out, UNTOUCHED);
    ck_assert(memcmp(&s->th, th_mark, sizeof th_mark) == 0);
    if (s->kind >= K_CALLABLE_NEW) /* synchronous: it would have run */
        ck_assert_int_eq(atomic_load(&s->runs), 0);
}

static void exec_done(void *p)
{
    exec_st *s = p;
    void *r = NULL;
    dump_t none = {NULL, 0, 0};
    switch (s->kind) {
    case K_VAR_NEW:
        ck_assert_str_eq(ctx_var_name(s->out), "new");
        ck_ok(ctx_var_get(s->out, &r));
        ck_assert_ptr_eq(r, VAL(V_DEF));
        ctx_var_release(s->out);
        return;
    case K_COPY_CURRENT:
    case K_COPY_CTX:
    case K_COPY_SNAP:
    case K_CTX_NEW:
        same_dump(s->kind == K_CTX_NEW    ? &none
                  : s->kind == K_COPY_SNAP ? &s->f->snap_before
                                           : &s->f->before,
                  s->out, false);
        ctx_context_release(s->out);
        return;
    case K_POOL_NEW:
    case K_POOL_NEW_EX:
        s->pool = s->out;
        s->out = NULL;
        ck_ok(ctx_pool_submit(s->pool, work, s, (ctx_future_t **)&s->out));
        /* fall through */
    case K_SUBMIT_FUT:
    case K_SUBMIT_IN:
    case K_SUBMIT_IN_NULL:
        ck_ok(ctx_future_wait(s->out, &r));
        ctx_future_release(s->out);
        break;
    case K_SUBMIT:
        r = VAL(V_NEW); /* nothing to wait on: counted after destroy */
        break;
    case K_THREAD:
        ck_ok(pthread_join(s->th, &r));
        break;
    case K_CALLABLE_NEW:
        ck_ok(ctx_callable_call(s->out, &r));
        ctx_callable_release(s->out);
        break;
    default:
        r = s->out;
    }
    ck_assert_ptr_eq(r, VAL(V_NEW));
    same_dump(&s->f->before, s->f->ctx, true);
}

static void exec_sweep(size_t n, enum share share, enum call_kind kind)
{
    static const sweep_t op = {ENOMEM, false, exec_call, NULL,
                               exec_unchanged, exec_done};
    static const sweep_t op_thread = {EAGAIN, false, exec_call, NULL,
                                      exec_unchanged, exec_done};
    fix_t f;
    fix_build(&f, n, H_COLL, true);
    exec_st s;
    memset(&s, 0, sizeof s);
    s.f = &f;
    s.kind = kind;
    s.out = UNTOUCHED;
    memcpy(&s.th, th_mark, sizeof th_mark);
    if (kind >= K_SUBMIT && kind <= K_SUBMIT_IN_NULL)
        ck_ok(ctx_pool_create(&s.pool, 1));
    if (kind == K_CALLABLE_CALL)
        ck_ok(ctx_callable_create(&s.callable, work, &s));
    fix_freeze(&f, share);
    sweep(kind == K_THREAD ? &op_thread : &op, &s);
    if (s.pool != NULL)
        ck_ok(ctx_pool_destroy(s.pool)); /* runs whatever was queued */
    if (s.callable != NULL) {
        void *r = NULL;
        ck_ok(ctx_callable_call(s.callable, &r)); /* still the snapshot */
        ck_assert_int_eq(atomic_load(&s.runs), 2);
        ctx_callable_release(s.callable);
    } else {
        ck_assert_int_eq(atomic_load(&s.runs), kind >= K_POOL_NEW);
    }
    ck_assert_int_eq(atomic_load(&s.bad), 0);
    fix_free(&f);
}

static const char *const call_names[NKINDS] = {
    "ctx_var_create", "ctx_copy_context", "ctx_context_copy",
    "ctx_context_copy of a snapshot", "ctx_context_new", "ctx_pool_create",
    "ctx_pool_create_ex", "ctx_pool_submit", "ctx_pool_submit with a future",
    "ctx_pool_submit_in", "ctx_pool_submit_in(NULL)", "ctx_thread_create",
    "ctx_callable_create", "ctx_callable_call",
};

START_TEST(calls)
{
    /* A snapshot, or a callable (which holds one), shares the trie. */
    bool must_share = _i == K_COPY_SNAP || _i == K_CALLABLE_CALL;
    for (size_t z = 0; z < NSIZES; z++)
        for (int sh = must_share ? S_FULL : S_NONE; sh < NSHARES; sh++)
            exec_sweep(sizes[z], sh, _i);
    check_balanced();
    report(call_names[_i]);
}
END_TEST

/* ============================================================ fibers */

/* ctx_fiber_create() from an entered context of n bindings, copying the
 * current context (NULL) or running in a given one; and a fiber's first
 * resume on a fresh thread, which makes the thread's base context. */
typedef struct {
    fix_t *f;
    bool given;         /* create in f->snap (else: copy the current) */
    ctx_fiber_t *out;
    ctx_fiber_t *fiber; /* resume: the fiber to resume */
    void *seen;         /* resume: the target as the fiber saw it */
    int suspend_rc;
} fib_st;

static int fib_create_call(void *p)
{
    fib_st *s = p;
    return ctx_fiber_create(&s->out, s->given ? s->f->snap : NULL);
}

static void fib_create_unchanged(void *p)
{
    fib_st *s = p;
    fix_unchanged(s->f);
    ck_assert_ptr_eq(s->out, UNTOUCHED);
}

static void fib_create_done(void *p)
{
    fib_st *s = p;
    fix_t *f = s->f;
    ctx_context_t *fc = ctx_fiber_context(s->out);
    if (s->given) {
        ck_assert_ptr_eq(fc, f->snap);
    } else {
        ck_assert_ptr_ne(fc, f->ctx);
        same_dump(&f->before, fc, false);
    }
    ck_ok(ctx_fiber_resume(s->out));
    void *v = NULL;
    ck_ok(ctx_var_get(f->target, &v));
    ck_assert_ptr_eq(v, VAL(V_OLD));
    ck_ok(ctx_var_set(f->target, VAL(V_NEW), NULL)); /* the fiber's own */
    ck_ok(ctx_fiber_suspend(s->out));
    ctx_fiber_release(s->out);
    s->out = UNTOUCHED;
    if (!s->given)
        fix_unchanged(f);
}

START_TEST(fiber_create)
{
    static const sweep_t op = {ENOMEM, false, fib_create_call, NULL,
                               fib_create_unchanged, fib_create_done};
    for (size_t z = 0; z < NSIZES; z++)
        for (int given = 0; given < 2; given++)
            for (int sh = given ? S_FULL : S_NONE; sh < NSHARES; sh++) {
                fix_t f;
                fix_build(&f, sizes[z], H_COLL, true);
                fix_freeze(&f, sh);
                fib_st s = {&f, given, UNTOUCHED, NULL, NULL, 0};
                sweep(&op, &s);
                fix_free(&f);
            }
    check_balanced();
    report("ctx_fiber_create");
}
END_TEST

static int fib_resume_call(void *p)
{
    fib_st *s = p;
    return ctx_fiber_resume(s->fiber);
}

static void fib_resume_after(void *p, int rc)
{
    fib_st *s = p;
    s->seen = UNTOUCHED;
    ctx_var_get(s->f->target, &s->seen);
    s->suspend_rc = ctx_fiber_suspend(s->fiber);
    (void)rc;
}

static void fib_resume_unchanged(void *p)
{
    fib_st *s = p;
    ck_assert_ptr_eq(s->seen, VAL(V_DEF)); /* the thread's empty base */
    ck_assert_int_eq(s->suspend_rc, EPERM);
    /* Not left claimed by the dead thread. */
    ck_ok(ctx_fiber_resume(s->fiber));
    ck_ok(ctx_fiber_suspend(s->fiber));
}

static void fib_resume_done(void *p)
{
    fib_st *s = p;
    ck_assert_ptr_eq(s->seen, VAL(V_OLD));
    ck_ok(s->suspend_rc);
}

START_TEST(fiber_resume_fresh_thread)
{
    static const sweep_t op = {ENOMEM, true, fib_resume_call,
                               fib_resume_after, fib_resume_unchanged,
                               fib_resume_done};
    fix_t f;
    fix_build(&f, 33, H_PLAIN, true);
    fix_freeze(&f, S_NONE);
    fib_st s = {&f, false, UNTOUCHED, NULL, NULL, 0};
    ck_ok(ctx_fiber_create(&s.fiber, NULL));
    sweep(&op, &s);
    ctx_fiber_release(s.fiber);
    fix_free(&f);
    check_balanced();
    report("ctx_fiber_resume on a fresh thread");
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("variables");
    tcase_add_test(tc, var_set);
    tcase_add_test(tc, var_reset);
    suite_add_tcase(s, tc);
    tc = tcase_create("calls");
    tcase_add_test(tc, fresh_thread);
    tcase_add_loop_test(tc, calls, 0, NKINDS);
    suite_add_tcase(s, tc);
    tc = tcase_create("fibers");
    tcase_add_test(tc, fiber_create);
    tcase_add_test(tc, fiber_resume_fresh_thread);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(fault_suite)
