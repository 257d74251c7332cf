/*
 * test_signal.c - ctx_var_get() and ctx_var_get_or() from a signal handler
 * that interrupted the library on the same thread.
 *
 * The test's thread works on 2,000 variables at random: sets with and
 * without tokens, resets (which unbind as often as they rebind), gets,
 * ctx_context_enter/exit of copies and ctx_context_run of copies, nested.
 * A POSIX timer sends that thread SIGPROF every 20 us, so the signals land
 * inside trie updates, cache fills, enters and exits.  The handler reads
 * random variables (and the one the thread is working on) and checks that
 * each value is one its variable can hold: values encode the index of
 * their variable, the first NPINNED variables are bound in every context
 * the thread ever has current, so for them "unbound" is wrong too.
 *
 * The thread itself keeps a shadow of what each context must hold and
 * checks its own reads against it, so a handler that corrupted the state
 * the interrupted call was building (the trie, the get cache) fails too.
 *
 * CTX_STRESS_SECONDS (default 1.5, at most 1.5) sets the duration; the run
 * goes on until at least MIN_SIGNALS signals have been handled.
 */
#include "config.h"

#include <ctxvars.h>

#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NVARS 2000
#define NPINNED 64      /* bound in every context, always */
#define NPLAIN 1000     /* set without tokens: the rest come and go */
#define MAXDEPTH 4
#define MAXTOK 48
#define MIN_SIGNALS 1000
#define PERIOD_NS 20000
/* Variables created in a row get consecutive ids, and the get cache is
 * indexed by the id's low bits: variables CACHE_STRIDE apart share a slot
 * (the test does not depend on it; it only aims the handler there). */
#define CACHE_STRIDE 32

/* Values are odd and carry their variable's index; FALLBACK is even. */
#define FALLBACK ((void *)(uintptr_t)2)

static void *make_value(int idx, unsigned gen)
{
    return (void *)((((uintptr_t)idx << 12 | (gen & 0xfffu)) << 1) | 1u);
}

static int value_index(const void *v)
{
    uintptr_t u = (uintptr_t)v;
    return (u & 1u) ? (int)(u >> 13) : -1;
}

static ctx_var_t *vars[NVARS];

/* ---- the handler ---- */

static atomic_long sig_count, sig_reads, sig_wrong;
static atomic_int sig_first_bad = -1; /* the index of the first bad read */
static volatile sig_atomic_t worker_var;
static uint64_t hrng = 0x9e3779b97f4a7c15u; /* the handler's own */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static bool acceptable(int idx, const void *v)
{
    if (v == FALLBACK)
        return idx >= NPINNED;
    return value_index(v) == idx;
}

static void note_wrong(int idx)
{
    int none = -1;
    atomic_fetch_add_explicit(&sig_wrong, 1, memory_order_relaxed);
    atomic_compare_exchange_strong(&sig_first_bad, &none, idx);
}

static void on_sigprof(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_fetch_add_explicit(&sig_count, 1, memory_order_relaxed);
    for (int k = 0; k < 8; k++) {
        int idx;
        if (k == 0)
            idx = worker_var;
        else if (k == 3 || k == 4) /* its neighbours in the get cache */
            idx = (worker_var + (k == 3 ? CACHE_STRIDE
                                        : NVARS - CACHE_STRIDE)) % NVARS;
        else if (k == 1)
            idx = (int)(xorshift(&hrng) % NPINNED);
        else
            idx = (int)(xorshift(&hrng) % NVARS);
        void *v = ctx_var_get_or(vars[idx], FALLBACK);
        if (!acceptable(idx, v))
            note_wrong(idx);
        if (k == 2) {
            void *w = FALLBACK;
            int rc = ctx_var_get(vars[idx], &w);
            if (rc == 0 ? w == FALLBACK || !acceptable(idx, w)
                        : rc != ENOENT || idx < NPINNED)
                note_wrong(idx);
        }
    }
    atomic_fetch_add_explicit(&sig_reads, 9, memory_order_relaxed);
    errno = saved;
}

/* ---- the interrupted thread ---- */

typedef struct {
    ctx_token_t *tok;
    int idx;
    void *old; /* NULL: was unbound */
} tokrec_t;

typedef struct {
    void *shadow[NVARS]; /* what the context holds; NULL: unbound */
    tokrec_t toks[MAXTOK];
    int ntok;
    ctx_context_t *ctx; /* entered by enter_copy (NULL: by run, or base) */
} level_t;

/* The thread's own checks: Check's assertions write a record per call,
 * far too slow for this loop, so the first failure is kept and the loop
 * winds down. */
static char bad_what[200];
static bool bad;

#define WCHECK(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond) && !bad) {                                               \
            bad = true;                                                      \
            snprintf(bad_what, sizeof bad_what, __VA_ARGS__);                \
        }                                                                    \
    } while (0)
#define WOK(expr) WCHECK((expr) == 0, "line %d: %s failed", __LINE__, #expr)

static level_t levels[MAXDEPTH + 1];
static int depth;
static unsigned gen;
static uint64_t wrng = 0x2545f4914f6cdd1du;
static long ops_done;

static int rnd(int n)
{
    return (int)(xorshift(&wrng) % (uint64_t)n);
}

static void check_one(int idx)
{
    void *want = levels[depth].shadow[idx];
    worker_var = idx;
    void *got = ctx_var_get_or(vars[idx], FALLBACK);
    WCHECK(got == (want != NULL ? want : FALLBACK),
           "var %d at depth %d: got %p, want %p", idx, depth, got, want);
}

/* Checks idx, and the variables that share its get cache slot, which a
 * handler's lookup may have filled while this thread was filling it. */
static void check_var(int idx)
{
    check_one(idx);
    check_one((idx + CACHE_STRIDE) % NVARS);
    check_one((idx + NVARS - CACHE_STRIDE) % NVARS);
}

static void push_level(ctx_context_t *ctx)
{
    memcpy(levels[depth + 1].shadow, levels[depth].shadow,
           sizeof levels[depth].shadow);
    depth++;
    levels[depth].ntok = 0;
    levels[depth].ctx = ctx;
}

/* Tokens of a level being left are dropped unused. */
static void pop_level(void)
{
    level_t *l = &levels[depth];
    for (int i = 0; i < l->ntok; i++)
        ctx_token_release(l->toks[i].tok);
    l->ntok = 0;
    depth--;
}

static void op_set(int idx)
{
    void *v = make_value(idx, ++gen);
    worker_var = idx;
    WOK(ctx_var_set(vars[idx], v, NULL));
    levels[depth].shadow[idx] = v;
    check_var(idx);
}

static void op_set_token(int idx)
{
    level_t *l = &levels[depth];
    if (l->ntok == MAXTOK)
        return;
    void *v = make_value(idx, ++gen);
    worker_var = idx;
    tokrec_t *t = &l->toks[l->ntok];
    WOK(ctx_var_set(vars[idx], v, &t->tok));
    t->idx = idx;
    t->old = l->shadow[idx];
    l->ntok++;
    l->shadow[idx] = v;
    check_var(idx);
}

/* Any token of the level, not only the last: a reset restores exactly
 * the token's old value (or unbinds), whatever happened since. */
static void op_reset(bool last)
{
    level_t *l = &levels[depth];
    if (l->ntok == 0)
        return;
    int i = last ? l->ntok - 1 : rnd(l->ntok);
    tokrec_t t = l->toks[i];
    l->toks[i] = l->toks[--l->ntok];
    worker_var = t.idx;
    WOK(ctx_var_reset(vars[t.idx], t.tok));
    ctx_token_release(t.tok);
    l->shadow[t.idx] = t.old;
    check_var(t.idx);
}

static void enter_copy(void)
{
    ctx_context_t *c;
    WOK(ctx_copy_context(&c));
    WOK(ctx_context_enter(c));
    push_level(c);
}

static void exit_copy(void)
{
    ctx_context_t *c = levels[depth].ctx;
    pop_level();
    WOK(ctx_context_exit(c));
    ctx_context_release(c);
}

static void random_ops(int n, int floor);

static void *in_run(void *arg)
{
    int *n = arg;
    random_ops(*n, depth);
    return arg;
}

static void run_copy(void)
{
    ctx_context_t *c;
    WOK(ctx_copy_context(&c));
    push_level(NULL);
    int n = 1 + rnd(40);
    void *r = NULL;
    WOK(ctx_context_run(c, in_run, &n, &r));
    WCHECK(r == &n, "run's result");
    pop_level();
    ctx_context_release(c);
}

/* A burst of new bindings, then all of them undone: grows and shrinks
 * nodes of the current trie in place. */
static void burst(void)
{
    level_t *l = &levels[depth];
    int start = l->ntok;
    while (l->ntok < MAXTOK)
        op_set_token(NPLAIN + rnd(NVARS - NPLAIN));
    while (l->ntok > start)
        op_reset(true);
}

static void random_ops(int n, int floor)
{
    for (int k = 0; k < n && !bad; k++, ops_done++) {
        int r = rnd(100);
        if (r < 20)
            op_set(rnd(NPLAIN));
        else if (r < 35)
            op_set_token(rnd(NVARS));
        else if (r < 50)
            op_reset(false);
        else if (r < 85)
            for (int j = 0; j < 8; j++)
                check_var(rnd(NVARS));
        else if (r < 90) {
            if (depth < MAXDEPTH)
                enter_copy();
        } else if (r < 95) {
            if (depth > floor && levels[depth].ctx != NULL)
                exit_copy();
        } else if (r < 98) {
            if (depth < MAXDEPTH)
                run_copy();
        } else
            burst();
    }
    /* A run's function leaves the contexts it entered. */
    while (depth > floor)
        exit_copy();
}

static double duration(void)
{
    const char *s = getenv("CTX_STRESS_SECONDS");
    double secs = s != NULL ? strtod(s, NULL) : 1.5;
    return secs > 0 && secs < 1.5 ? secs : 1.5;
}

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) +
           (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

START_TEST(test_reads_from_handler)
{
    for (int i = 0; i < NVARS; i++)
        ck_ok(ctx_var_create(&vars[i], "v", CTX_MISSING, NULL));
    depth = 0;
    levels[0].ntok = 0;
    levels[0].ctx = NULL;
    for (int i = 0; i < NPINNED; i++)
        op_set(i);

    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigprof;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ck_assert_int_eq(sigaction(SIGPROF, &sa, &old_sa), 0);

    /* The signal goes to this thread and no other. */
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGPROF;
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    ck_assert_int_eq(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
    struct itimerspec its = {{0, PERIOD_NS}, {0, PERIOD_NS}};
    ck_assert_int_eq(timer_settime(timer, 0, &its, NULL), 0);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double secs = duration();
    for (;;) {
        random_ops(256, 0);
        double t = since(&t0);
        if (bad || (t >= secs && atomic_load(&sig_count) >= MIN_SIGNALS))
            break;
        if (t >= 30 * secs) /* a very slow build: give up waiting */
            break;
    }

    struct itimerspec off;
    memset(&off, 0, sizeof off);
    ck_assert_int_eq(timer_settime(timer, 0, &off, NULL), 0);
    timer_delete(timer);
    ck_assert_int_eq(sigaction(SIGPROF, &old_sa, NULL), 0);

    fprintf(stderr,
            "test_signal: %ld operations, %ld signals, %ld reads in the "
            "handler, %ld wrong\n",
            ops_done, atomic_load(&sig_count), atomic_load(&sig_reads),
            atomic_load(&sig_wrong));
    ck_assert_msg(!bad, "%s", bad_what);
    ck_assert_msg(atomic_load(&sig_wrong) == 0,
                  "%ld wrong values read in the handler (first: var %d)",
                  atomic_load(&sig_wrong), atomic_load(&sig_first_bad));
    ck_assert_int_ge(atomic_load(&sig_count), MIN_SIGNALS);

    /* Every later read on the thread is still right. */
    for (int i = 0; i < NVARS; i++)
        check_one(i);
    while (levels[0].ntok > 0)
        op_reset(true);
    for (int i = 0; i < NVARS; i++)
        check_one(i);
    ck_assert_msg(!bad, "%s", bad_what);
    for (int i = 0; i < NVARS; i++)
        ctx_var_release(vars[i]);
}
END_TEST

static Suite *signal_suite(void)
{
    Suite *s = suite_create("signal");
    TCase *tc = tcase_create("handler");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_reads_from_handler);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(signal_suite)
