/*
 * test_stress.c - sixteen threads doing everything at once.
 *
 * For CTX_STRESS_SECONDS (default 2) every thread picks operations at
 * random: set and get its own variables, snapshot its context and check
 * old snapshots, publish snapshots for the others to check, race the
 * others to enter a few shared contexts (ctx_context_enter and _run),
 * read shared contexts while their owners write them (get, len, foreach,
 * copy), run private copies, submit jobs to a pool that another thread
 * keeps replacing and destroying, and start threads.  Nothing here
 * depends on timing: every check is an invariant that holds under any
 * schedule.
 *
 *  - Never two threads inside one context: a counter per shared context.
 *    Each shared context also counts in plain memory (sh_last), touched
 *    only from inside it, so the library's enter/exit must order it (and
 *    ThreadSanitizer would see it otherwise).
 *  - Values encode (writer, sequence number).  Writers announce a number
 *    before they set it, so a reader can bound what it sees, and a reader
 *    must never see a writer's numbers go backwards.
 *  - A snapshot holds exactly what was set when it was taken, however
 *    long it lives and whoever looks.
 *  - Every job a pool accepted runs, once, in its submitter's context.
 *  - Retains and releases of values balance at the end.
 *  - Fibers are raced for (one resume wins, the rest get EBUSY), run a
 *    step in which they see only their own context, enter and exit a
 *    context across suspends, and are now and then replaced and released
 *    while resumed.  As for shared contexts, a counter and a plain-memory
 *    sequence per fiber prove one thread at a time and the handover.
 */
#include "config.h"

#include <ctxvars.h>

#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NTHREADS 16
#define NSHARED 4
#define NRING 32  /* snapshots published for everyone */
#define NLOCAL 8  /* snapshots a thread keeps for itself */

/* ---- failures in threads: counted, first line kept ---- */
static atomic_long fail_count;
static atomic_int fail_line;

static void note_fail(int line)
{
    int zero = 0;
    atomic_fetch_add(&fail_count, 1);
    atomic_compare_exchange_strong(&fail_line, &zero, line);
}

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond))                                                         \
            note_fail(__LINE__);                                             \
    } while (0)

/* ---- values: (writer, sequence number), never NULL ---- */
static void *enc(unsigned who, unsigned long seq)
{
    return (void *)(uintptr_t)(((uintptr_t)seq + 1) << 5 | who);
}
static unsigned enc_who(const void *v) { return (uintptr_t)v & 31; }
static unsigned long enc_seq(const void *v) { return ((uintptr_t)v >> 5) - 1; }

static atomic_long retains, releases;
static void count_retain(void *v) { (void)v; atomic_fetch_add(&retains, 1); }
static void count_release(void *v) { (void)v; atomic_fetch_add(&releases, 1); }
static const ctx_value_ops_t counted = {count_retain, count_release};

/* ---- the world ---- */
static ctx_var_t *own[NTHREADS], *own_b[NTHREADS]; /* thread t's */
static ctx_var_t *svar[NSHARED];                   /* shared context j's */
static ctx_var_t *gvar;                            /* main's, inherited */
#define GVAL ((void *)(uintptr_t)0x5eed)

static ctx_context_t *shared_ctx[NSHARED];
static atomic_int inside[NSHARED];
static unsigned long sh_last[NSHARED];   /* only touched inside shared j */
static atomic_ulong sh_pub[NSHARED];     /* >= any svar[j] number set */
static atomic_ulong own_pub[NTHREADS];   /* >= any own[t] number set */

static atomic_bool stop;
static atomic_long ops_total, jobs_accepted, jobs_run, busy_seen;
static atomic_long pools_made, refused, threads_made;

/* A snapshot and every binding it must hold, no more, no less. */
#define MAXB (NTHREADS + 4)
typedef struct {
    ctx_context_t *ctx; /* NULL: empty slot */
    int n;
    ctx_var_t *var[MAXB];
    void *val[MAXB];
} snap_t;

static snap_t ring[NRING];
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    unsigned id;
    uint64_t rng;
    unsigned long seq; /* own[id] and own_b[id] hold enc(id, seq) */
    snap_t local[NLOCAL];
    unsigned long seen_s[NSHARED];           /* svar numbers read */
    unsigned long seen_o[NSHARED][NTHREADS]; /* own[] numbers read in j */
    long ops;
} thr_t;

static unsigned rnd(thr_t *t, unsigned n)
{
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (unsigned)((z ^ (z >> 31)) % n);
}

/* ---- snapshots ---- */

typedef struct {
    const snap_t *s;
    int n;
} match_t;

static int match_binding(ctx_var_t *var, void *value, void *arg)
{
    match_t *m = arg;
    int i = 0;
    while (i < m->s->n && m->s->var[i] != var)
        i++;
    CHECK(i < m->s->n && m->s->val[i] == value);
    m->n++;
    return 0;
}

/* ctx holds exactly what s lists (s->ctx itself when ctx is NULL). */
static void snap_verify_in(const snap_t *s, ctx_context_t *ctx)
{
    match_t m = {s, 0};
    CHECK(ctx_context_len(ctx) == (size_t)s->n);
    CHECK(ctx_context_foreach(ctx, match_binding, &m) == 0 && m.n == s->n);
    for (int i = 0; i < s->n; i++) {
        void *v = NULL;
        CHECK(ctx_context_get(ctx, s->var[i], &v) == 0 && v == s->val[i]);
    }
}

static void snap_verify(const snap_t *s)
{
    if (s->ctx != NULL)
        snap_verify_in(s, s->ctx);
}

static int record_binding(ctx_var_t *var, void *value, void *arg)
{
    snap_t *s = arg;
    CHECK(s->n < MAXB);
    if (s->n < MAXB) {
        s->var[s->n] = var;
        s->val[s->n++] = value;
    }
    return 0;
}

/* Lists what s->ctx holds now, for later checks that it never changes. */
static void snap_record(snap_t *s)
{
    s->n = 0;
    CHECK(ctx_context_foreach(s->ctx, record_binding, s) == 0);
}

/* What this thread's base context holds: its own pair and main's gvar. */
static snap_t want_base(const thr_t *t)
{
    snap_t s = {NULL, 3, {own[t->id], own_b[t->id], gvar},
                {enc(t->id, t->seq), enc(t->id, t->seq), GVAL}};
    return s;
}

static snap_t snap_base(thr_t *t)
{
    snap_t s = want_base(t);
    CHECK(ctx_copy_context(&s.ctx) == 0);
    return s;
}

/* Keeps s in a local slot, checking and dropping the one it replaces. */
static void keep_local(thr_t *t, snap_t s)
{
    snap_t *slot = &t->local[rnd(t, NLOCAL)];
    snap_verify(slot);
    ctx_context_release(slot->ctx);
    *slot = s;
    snap_verify(slot);
}

static void op_snapshot(thr_t *t)
{
    keep_local(t, snap_base(t));
}

/* Publishes a new snapshot, then checks one someone else published. */
static void op_publish(thr_t *t)
{
    snap_t s = snap_base(t), old, other;
    pthread_mutex_lock(&ring_mu);
    snap_t *slot = &ring[rnd(t, NRING)];
    old = *slot;
    *slot = s;
    other = ring[rnd(t, NRING)];
    ctx_context_retain(other.ctx);
    pthread_mutex_unlock(&ring_mu);
    snap_verify(&old);
    ctx_context_release(old.ctx);
    snap_verify(&other);
    ctx_context_release(other.ctx);
}

/* ---- own variables ---- */

static void check_current(const snap_t *want);

static void check_own(thr_t *t)
{
    snap_t want = want_base(t);
    check_current(&want);
}

static void op_set(thr_t *t)
{
    t->seq++;
    atomic_store(&own_pub[t->id], t->seq);
    CHECK(ctx_var_set(own[t->id], enc(t->id, t->seq), NULL) == 0);
    ctx_token_t *tok = NULL;
    CHECK(ctx_var_set(own_b[t->id], enc(t->id, t->seq + 1), &tok) == 0);
    CHECK(ctx_var_reset(own_b[t->id], tok) == 0);
    ctx_token_release(tok);
    CHECK(ctx_var_set(own_b[t->id], enc(t->id, t->seq), NULL) == 0);
    check_own(t);
}

/* ---- shared contexts: racing owners, concurrent readers ---- */

typedef struct {
    thr_t *t;
    unsigned j;
    int depth;
} inside_t;

static void shared_enter(thr_t *t, unsigned j, int depth);

/* Runs inside shared_ctx[j], which nobody else may be inside. */
static void *inside_body(void *p)
{
    inside_t *in = p;
    thr_t *t = in->t;
    unsigned j = in->j;
    CHECK(atomic_fetch_add(&inside[j], 1) == 0);
    void *v = NULL;
    CHECK(ctx_var_get(svar[j], &v) == 0 && v == enc(j, sh_last[j]));
    unsigned long next = sh_last[j] + 1;
    atomic_store(&sh_pub[j], next);
    CHECK(ctx_var_set(svar[j], enc(j, next), NULL) == 0);
    sh_last[j] = next;
    CHECK(ctx_var_set(own[t->id], enc(t->id, t->seq), NULL) == 0);
    CHECK(ctx_context_exit(shared_ctx[(j + 1) % NSHARED]) == EPERM);
    if (rnd(t, 4) == 0) {
        snap_t s;
        CHECK(ctx_copy_context(&s.ctx) == 0);
        snap_record(&s);
        for (int i = 0; i < s.n; i++)
            CHECK(s.var[i] == svar[j] ? s.val[i] == enc(j, next)
                  : s.var[i] == own[t->id] ? s.val[i] == enc(t->id, t->seq)
                                           : true);
        keep_local(t, s);
    }
    if (in->depth == 0 && rnd(t, 4) == 0)
        shared_enter(t, rnd(t, NSHARED), 1);
    CHECK(atomic_fetch_sub(&inside[j], 1) == 1);
    return v;
}

static void shared_enter(thr_t *t, unsigned j, int depth)
{
    inside_t in = {t, j, depth};
    int rc;
    if (rnd(t, 2)) {
        void *res = NULL;
        rc = ctx_context_run(shared_ctx[j], inside_body, &in, &res);
    } else {
        rc = ctx_context_enter(shared_ctx[j]);
        if (rc == 0) {
            inside_body(&in);
            CHECK(ctx_context_exit(shared_ctx[j]) == 0);
        }
    }
    CHECK(rc == 0 || rc == EBUSY);
    if (rc == EBUSY)
        atomic_fetch_add(&busy_seen, 1);
}

static void op_enter_shared(thr_t *t)
{
    shared_enter(t, rnd(t, NSHARED), 0);
    check_own(t); /* back in the base, untouched */
}

/* Checks a value read from shared context j, possibly while it changes. */
static void check_shared_value(thr_t *t, unsigned j, ctx_var_t *var, void *v)
{
    for (unsigned u = 0; u < NTHREADS; u++)
        if (var == own[u]) {
            unsigned long s = enc_seq(v);
            CHECK(enc_who(v) == u && s <= atomic_load(&own_pub[u]));
            CHECK(s >= t->seen_o[j][u]);
            t->seen_o[j][u] = s;
            return;
        }
    CHECK(var == svar[j] && enc_who(v) == j);
    CHECK(enc_seq(v) <= atomic_load(&sh_pub[j]) && enc_seq(v) >= t->seen_s[j]);
    t->seen_s[j] = enc_seq(v);
}

typedef struct {
    thr_t *t;
    unsigned j;
    size_t n;
} walk_t;

static int check_binding(ctx_var_t *var, void *value, void *arg)
{
    walk_t *w = arg;
    w->n++;
    check_shared_value(w->t, w->j, var, value);
    return 0;
}

static void op_read_shared(thr_t *t)
{
    unsigned j = rnd(t, NSHARED);
    ctx_context_t *c = shared_ctx[j];
    void *v = NULL;
    CHECK(ctx_context_get(c, svar[j], &v) == 0);
    check_shared_value(t, j, svar[j], v);
    size_t len = ctx_context_len(c);
    CHECK(len >= 1 && len <= 1 + NTHREADS);
    walk_t w = {t, j, 0};
    CHECK(ctx_context_foreach(c, check_binding, &w) == 0);
    CHECK(w.n >= 1 && w.n <= 1 + NTHREADS);
    /* A copy taken now must keep what it saw while the owners go on. */
    snap_t s;
    CHECK(ctx_context_copy(c, &s.ctx) == 0);
    snap_record(&s);
    for (int i = 0; i < s.n; i++)
        check_shared_value(t, j, s.var[i], s.val[i]);
    keep_local(t, s);
}

/* ---- running private copies ---- */

static void *run_body(void *p)
{
    const snap_t *s = p;
    check_current(s);
    for (int i = 0; i < s->n; i++)
        CHECK(ctx_var_set(s->var[i], GVAL, NULL) == 0);
    return GVAL;
}

static void op_run_copy(thr_t *t)
{
    snap_t *s = &t->local[rnd(t, NLOCAL)];
    if (s->ctx == NULL)
        return;
    ctx_context_t *c = NULL;
    void *res = NULL;
    CHECK(ctx_context_copy(s->ctx, &c) == 0);
    CHECK(ctx_context_run(c, run_body, s, &res) == 0 && res == GVAL);
    ctx_context_release(c);
    snap_verify(s); /* the copy's changes stayed in the copy */
    check_own(t);
}

/* ---- pools: replaced and destroyed while others submit ---- */

/* A pool and the threads submitting to it right now.  The manager
 * unpublishes a pool, then destroys it from another thread while late
 * submitters may still be calling submit (they must get 0 or ESHUTDOWN).
 * A blocker job keeps destroy from returning (and freeing the pool) until
 * the last of them has left submit. */
typedef struct {
    ctx_pool_t *pool;
    int users;
    bool release_blocker;
} box_t;

static box_t *cur_box;
static pthread_mutex_t box_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t box_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t mgr_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    snap_t want;      /* what the job must see (want.ctx unused) */
    ctx_pool_t *pool; /* submit a child job there, or NULL */
} job_t;

/* The calling thread's current context holds exactly want's list. */
static void check_current(const snap_t *want)
{
    ctx_context_t *c = NULL;
    CHECK(ctx_copy_context(&c) == 0);
    snap_verify_in(want, c);
    ctx_context_release(c);
    for (int i = 0; i < want->n; i++) {
        void *v = NULL;
        CHECK(ctx_var_get(want->var[i], &v) == 0 && v == want->val[i]);
    }
}

static void *job(void *p)
{
    job_t *jb = p;
    check_current(&jb->want);
    if (jb->pool != NULL) {
        /* A job may submit to its own pool even while it drains. */
        job_t *child = malloc(sizeof *child);
        CHECK(child != NULL);
        *child = *jb;
        child->pool = NULL;
        int rc = ctx_pool_submit(jb->pool, job, child, NULL);
        CHECK(rc == 0);
        if (rc == 0)
            atomic_fetch_add(&jobs_accepted, 1);
        else
            free(child);
    }
    void *r = jb->want.val[0];
    free(jb);
    atomic_fetch_add(&jobs_run, 1);
    return r;
}

static void op_submit(thr_t *t)
{
    pthread_mutex_lock(&box_mu);
    box_t *b = cur_box;
    if (b != NULL)
        b->users++;
    pthread_mutex_unlock(&box_mu);
    if (b == NULL)
        return;
    if (rnd(t, 8) == 0)
        sched_yield(); /* widen the window for a racing retirement */
    const snap_t *in = &t->local[rnd(t, NLOCAL)];
    bool use_in = in->ctx != NULL && rnd(t, 3) == 0;
    job_t *jb = malloc(sizeof *jb);
    CHECK(jb != NULL);
    jb->want = use_in ? *in : want_base(t);
    jb->pool = rnd(t, 4) == 0 ? b->pool : NULL;
    void *want = jb->want.val[0];
    ctx_future_t *fut = NULL, **fp = rnd(t, 2) ? &fut : NULL;
    int rc = use_in ? ctx_pool_submit_in(b->pool, in->ctx, job, jb, fp)
                    : ctx_pool_submit(b->pool, job, jb, fp);
    CHECK(rc == 0 || rc == ESHUTDOWN);
    atomic_fetch_add(rc == 0 ? &jobs_accepted : &refused, 1);
    if (rc != 0)
        free(jb);
    pthread_mutex_lock(&box_mu);
    CHECK(rc != ESHUTDOWN || cur_box != b); /* refused only once retired */
    if (--b->users == 0)
        pthread_cond_broadcast(&box_cv);
    pthread_mutex_unlock(&box_mu);
    if (fut != NULL) { /* the future outlives the pool's destruction */
        void *r = NULL;
        CHECK(ctx_future_wait(fut, &r) == 0 && r == want);
        ctx_future_release(fut);
    }
}

static void *blocker(void *p)
{
    box_t *b = p;
    pthread_mutex_lock(&box_mu);
    while (!b->release_blocker)
        pthread_cond_wait(&box_cv, &box_mu);
    pthread_mutex_unlock(&box_mu);
    return NULL;
}

static void *destroyer(void *pool)
{
    CHECK(ctx_pool_destroy(pool) == 0);
    return NULL;
}

static box_t *box_new(void)
{
    box_t *b = calloc(1, sizeof *b);
    CHECK(b != NULL && ctx_pool_create(&b->pool, 2) == 0);
    atomic_fetch_add(&pools_made, 1);
    return b;
}

/* b is no longer published; late submitters may still hold it. */
static void box_retire(box_t *b)
{
    pthread_t d;
    CHECK(ctx_pool_submit(b->pool, blocker, b, NULL) == 0);
    int rc = ctx_thread_create(&d, NULL, destroyer, b->pool);
    CHECK(rc == 0);
    pthread_mutex_lock(&box_mu);
    while (b->users > 0)
        pthread_cond_wait(&box_cv, &box_mu);
    b->release_blocker = true;
    pthread_cond_broadcast(&box_cv);
    pthread_mutex_unlock(&box_mu);
    if (rc == 0)
        CHECK(pthread_join(d, NULL) == 0);
    else
        destroyer(b->pool);
    free(b);
}

static void op_pool_cycle(thr_t *t)
{
    (void)t;
    if (pthread_mutex_trylock(&mgr_mu) != 0)
        return; /* someone else is at it */
    box_t *fresh = box_new();
    pthread_mutex_lock(&box_mu);
    box_t *old = cur_box;
    cur_box = fresh;
    pthread_mutex_unlock(&box_mu);
    box_retire(old);
    pthread_mutex_unlock(&mgr_mu);
}

/* ---- threads ---- */

static void *child_main(void *p)
{
    const snap_t *want = p;
    check_current(want);
    CHECK(ctx_var_set(want->var[0], GVAL, NULL) == 0); /* its own base */
    return want->val[0];
}

static void op_thread(thr_t *t)
{
    snap_t want = want_base(t);
    pthread_t th;
    void *r = NULL;
    int rc = ctx_thread_create(&th, NULL, child_main, &want);
    CHECK(rc == 0 || rc == EAGAIN);
    if (rc == 0) {
        CHECK(pthread_join(th, &r) == 0 && r == want.val[0]);
        atomic_fetch_add(&threads_made, 1);
    }
    check_own(t);
}

/* ---- fibers: raced for, run a step, sometimes replaced ---- */

#define NFIB 6
static ctx_fiber_t *fib[NFIB];        /* swapped under fib_mu[k] */
static pthread_mutex_t fib_mu[NFIB];
static ctx_var_t *fvar[NFIB];         /* bound in fiber k's own context */
static ctx_context_t *fib_held[NFIB]; /* entered in fiber k, or not */
static atomic_int fib_inside[NFIB];
static unsigned long fib_last[NFIB];  /* touched only with k resumed */
static bool fib_holds[NFIB];          /* likewise */
static atomic_long fiber_runs, fibers_replaced;

static void op_fiber(thr_t *t)
{
    unsigned k = rnd(t, NFIB);
    /* The lock only keeps the pointer alive against a replacement; the
     * race for the fiber itself is the library's. */
    pthread_mutex_lock(&fib_mu[k]);
    ctx_fiber_t *f = fib[k];
    int rc = ctx_fiber_resume(f);
    pthread_mutex_unlock(&fib_mu[k]);
    CHECK(rc == 0 || rc == EBUSY);
    if (rc != 0) {
        atomic_fetch_add(&busy_seen, 1);
        return;
    }
    CHECK(atomic_fetch_add(&fib_inside[k], 1) == 0);
    void *v = NULL;
    if (fib_holds[k]) { /* back on top, on whatever thread we are */
        CHECK(ctx_context_exit(fib_held[k]) == 0);
        fib_holds[k] = false;
    }
    CHECK(ctx_var_get(gvar, &v) == ENOENT); /* nothing of the thread's */
    CHECK(ctx_var_get(own[t->id], &v) == ENOENT);
    CHECK(ctx_var_get(fvar[k], &v) == 0 && v == enc(k, fib_last[k]));
    fib_last[k]++;
    CHECK(ctx_var_set(fvar[k], enc(k, fib_last[k]), NULL) == 0);
    atomic_fetch_add(&fiber_runs, 1);
    ctx_fiber_t *next = NULL;
    if (rnd(t, 32) == 0 && ctx_fiber_create(&next, NULL) == 0) {
        /* Replace it with a copy and release it while resumed: it is
         * freed at the suspend below. */
        atomic_fetch_sub(&fib_inside[k], 1);
        pthread_mutex_lock(&fib_mu[k]);
        fib[k] = next;
        pthread_mutex_unlock(&fib_mu[k]);
        ctx_fiber_release(f);
        atomic_fetch_add(&fibers_replaced, 1);
    } else {
        if (rnd(t, 2)) {
            CHECK(ctx_context_enter(fib_held[k]) == 0);
            fib_holds[k] = true;
        }
        atomic_fetch_sub(&fib_inside[k], 1);
    }
    CHECK(ctx_fiber_suspend(f) == 0);
    check_own(t);
}

static void fibers_setup(void)
{
    for (unsigned k = 0; k < NFIB; k++) {
        pthread_mutex_init(&fib_mu[k], NULL);
        ck_ok(ctx_var_create(&fvar[k], "fiber", CTX_MISSING, &counted));
        ck_ok(ctx_context_new(&fib_held[k]));
        ck_ok(ctx_fiber_create(&fib[k], NULL));
        ck_ok(ctx_fiber_resume(fib[k]));
        ck_ok(ctx_var_set(fvar[k], enc(k, 0), NULL));
        ck_ok(ctx_fiber_suspend(fib[k]));
        fib_last[k] = 0;
        fib_holds[k] = false;
    }
}

static void fibers_teardown(void)
{
    for (unsigned k = 0; k < NFIB; k++) {
        void *v = NULL;
        ck_ok(ctx_fiber_resume(fib[k]));
        if (fib_holds[k])
            ck_ok(ctx_context_exit(fib_held[k]));
        ck_ok(ctx_var_get(fvar[k], &v));
        ck_assert_ptr_eq(v, enc(k, fib_last[k]));
        ck_ok(ctx_fiber_suspend(fib[k]));
        ctx_fiber_release(fib[k]);
        ck_ok(ctx_context_enter(fib_held[k])); /* nobody holds it */
        ck_ok(ctx_context_exit(fib_held[k]));
        ctx_context_release(fib_held[k]);
        ctx_var_release(fvar[k]);
        pthread_mutex_destroy(&fib_mu[k]);
    }
}

/* ---- watchers: added and removed while everyone switches ----
 * Each thread's watcher counts its calls on every thread and checks that
 * it is never called once its remove has returned; its own thread's two
 * switches must have reached it, and inside it switching is EDEADLK. */
struct wrec {
    atomic_bool removed;
    atomic_long calls;
};
static struct wrec wrecs[NTHREADS];
static atomic_long watch_rounds, watch_full;

static void stress_watcher(ctx_context_t *current, void *arg)
{
    struct wrec *r = arg;
    CHECK(!atomic_load(&r->removed));
    atomic_fetch_add(&r->calls, 1);
    CHECK(current != NULL && ctx_context_enter(current) == EDEADLK);
    void *g = ctx_var_get_or(gvar, NULL);
    CHECK(g == NULL || g == GVAL);
}

static void op_watch(thr_t *t)
{
    struct wrec *r = &wrecs[t->id];
    atomic_store(&r->removed, false);
    long before = atomic_load(&r->calls);
    int id = 0, rc = ctx_watch_add(stress_watcher, r, &id);
    if (rc == EAGAIN) { /* 16 threads, at least 8 watchers: may be full */
        atomic_fetch_add(&watch_full, 1);
        return;
    }
    CHECK(rc == 0);
    if (rc != 0)
        return;
    ctx_context_t *c = NULL;
    CHECK(ctx_context_new(&c) == 0);
    CHECK(ctx_context_enter(c) == 0);
    CHECK(ctx_context_exit(c) == 0);
    ctx_context_release(c);
    CHECK(atomic_load(&r->calls) >= before + 2);
    CHECK(ctx_watch_remove(id) == 0);
    atomic_store(&r->removed, true);
    atomic_fetch_add(&watch_rounds, 1);
}

/* ---- the threads' loop and the test ---- */

static void *thread_main(void *p)
{
    thr_t *t = p;
    void *g = NULL;
    CHECK(ctx_var_get(gvar, &g) == 0 && g == GVAL); /* inherited */
    op_set(t);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        unsigned r = rnd(t, 256);
        if (r < 64)
            op_set(t);
        else if (r < 80)
            check_own(t);
        else if (r < 108)
            op_snapshot(t);
        else if (r < 128)
            op_publish(t);
        else if (r < 168)
            op_enter_shared(t);
        else if (r < 208)
            op_read_shared(t);
        else if (r < 220)
            op_run_copy(t);
        else if (r < 240)
            op_submit(t);
        else if (r < 248)
            op_fiber(t);
        else if (r < 250)
            op_watch(t);
        else if (r < 253)
            op_thread(t);
        else
            op_pool_cycle(t);
        t->ops++;
    }
    for (int i = 0; i < NLOCAL; i++) {
        snap_verify(&t->local[i]);
        ctx_context_release(t->local[i].ctx);
    }
    atomic_fetch_add(&ops_total, t->ops);
    return NULL;
}

static double stress_seconds(void)
{
    const char *s = getenv("CTX_STRESS_SECONDS");
    double secs = s != NULL ? strtod(s, NULL) : 2.0;
    return secs >= 0 && secs < 3600 ? secs : 2.0;
}

static double since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) +
           (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void setup_world(void)
{
    for (int t = 0; t < NTHREADS; t++) {
        ck_ok(ctx_var_create(&own[t], "own", CTX_MISSING, &counted));
        ck_ok(ctx_var_create(&own_b[t], "own_b", CTX_MISSING, &counted));
    }
    for (unsigned j = 0; j < NSHARED; j++) {
        ck_ok(ctx_var_create(&svar[j], "shared", CTX_MISSING, &counted));
        ck_ok(ctx_context_new(&shared_ctx[j]));
        ck_ok(ctx_context_enter(shared_ctx[j]));
        ck_ok(ctx_var_set(svar[j], enc(j, 0), NULL));
        ck_ok(ctx_context_exit(shared_ctx[j]));
    }
    ck_ok(ctx_var_create(&gvar, "g", CTX_MISSING, NULL));
    cur_box = box_new();
    fibers_setup();
}

static void teardown_world(void)
{
    fibers_teardown();
    ck_ok(ctx_pool_destroy(cur_box->pool));
    free(cur_box);
    for (int i = 0; i < NRING; i++) {
        snap_verify(&ring[i]);
        ctx_context_release(ring[i].ctx);
    }
    for (unsigned j = 0; j < NSHARED; j++) {
        void *v = NULL;
        ck_assert_int_eq(atomic_load(&inside[j]), 0);
        ck_ok(ctx_context_get(shared_ctx[j], svar[j], &v));
        ck_assert_ptr_eq(v, enc(j, sh_last[j]));
        ctx_context_release(shared_ctx[j]);
        ctx_var_release(svar[j]);
    }
    for (int t = 0; t < NTHREADS; t++) {
        ctx_var_release(own[t]);
        ctx_var_release(own_b[t]);
    }
}

START_TEST(stress)
{
    double secs = stress_seconds();
    setup_world();
    ctx_token_t *gtok = NULL;
    ck_ok(ctx_var_set(gvar, GVAL, &gtok));
    static thr_t ts[NTHREADS];
    pthread_t th[NTHREADS];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned t = 0; t < NTHREADS; t++) {
        ts[t].id = t;
        ts[t].rng = 7919u * t + 1;
        ck_ok(ctx_thread_create(&th[t], NULL, thread_main, &ts[t]));
    }
    while (since(&t0) < secs) {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    atomic_store(&stop, true);
    for (int t = 0; t < NTHREADS; t++)
        ck_ok(pthread_join(th[t], NULL));
    double took = since(&t0);
    teardown_world();
    ck_ok(ctx_var_reset(gvar, gtok));
    ctx_token_release(gtok);
    ctx_var_release(gvar);
    ck_assert_msg(atomic_load(&fail_count) == 0,
                  "%ld checks failed, the first at line %d",
                  atomic_load(&fail_count), atomic_load(&fail_line));
    ck_assert_int_eq(atomic_load(&jobs_accepted), atomic_load(&jobs_run));
    ck_assert_int_eq(atomic_load(&retains), atomic_load(&releases));
    printf("stress: %ld ops in %.1f s (%d threads; %ld jobs, %ld refused "
           "by %ld pools; %ld EBUSY; %ld threads started; %ld fiber steps, "
           "%ld fibers replaced; %ld watcher rounds, %ld full)\n",
           atomic_load(&ops_total), took, NTHREADS, atomic_load(&jobs_run),
           atomic_load(&refused), atomic_load(&pools_made),
           atomic_load(&busy_seen), atomic_load(&threads_made),
           atomic_load(&fiber_runs), atomic_load(&fibers_replaced),
           atomic_load(&watch_rounds), atomic_load(&watch_full));
    fflush(stdout);
}
END_TEST

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("stress");
    tcase_set_timeout(tc, 60 + stress_seconds());
    tcase_add_test(tc, stress);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(stress_suite)
