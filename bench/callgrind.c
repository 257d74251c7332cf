/*
 * callgrind.c - `ctxbench --callgrind OP [N]`: runs exactly N iterations
 * of one operation for valgrind's callgrind to count, so a regression of a
 * few instructions shows even on a machine too noisy for timings.
 * bench/callgrind.sh runs every operation and prints instructions per
 * operation.
 *
 * With <valgrind/callgrind.h> the loop is bracketed by two client-request
 * dumps: the second dump holds exactly the loop, summed over all threads
 * (pool workers included).  Without it the script falls back to
 * --toggle-collect=cg_loop, which counts only the calling thread.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define HAVE_CALLGRIND_H 1
#endif
#endif

typedef enum {
    ARG_STATE,   /* ctx_state_t with `bindings` bound in the base */
    ARG_KEY,     /* a pthread key holding a value */
    ARG_NONE,
    ARG_BIG,     /* a context of `bindings` bindings, entered per loop */
    ARG_POOL,    /* ctx_state_t with a 2-worker ctx_pool */
    ARG_PLAIN,   /* the plain pool */
    ARG_GLIB,    /* GLib's pool */
    ARG_CSET,    /* cset_arg_t: a context of `bindings`, vars[0] */
    ARG_NEST,    /* as ARG_POOL, sub-jobs doing no work */
} cg_arg_t;

typedef struct {
    const char *name;
    const char *baseline;
    cg_arg_t arg;
    size_t bindings;
    bench_fn_t *fn;
    uint64_t n;
    const char *what;
} cg_op_t;

static const cg_op_t ops[] = {
    {"getspecific", "-", ARG_KEY, 0, base_getspecific, 1000000,
     "pthread_getspecific (baseline)"},
    {"malloc-free", "-", ARG_NONE, 0, base_malloc_free, 1000000,
     "malloc(64) + free (baseline)"},
    {"get@1", "getspecific", ARG_STATE, 1, op_get, 1000000,
     "ctx_var_get, bound, 1 binding"},
    {"get@1k", "getspecific", ARG_STATE, 1000, op_get, 1000000,
     "ctx_var_get, bound, 1,000 bindings"},
    {"get@100k", "getspecific", ARG_STATE, 100000, op_get, 1000000,
     "ctx_var_get, bound, 100,000 bindings"},
    {"get-cycle@1k", "getspecific", ARG_STATE, 1000, op_get_cycle, 1000000,
     "ctx_var_get cycling 1,000 vars (cache misses)"},
    {"get-cycle@100k", "getspecific", ARG_STATE, 100000, op_get_cycle,
     1000000, "ctx_var_get cycling 100,000 vars"},
    {"get-or", "getspecific", ARG_STATE, 1, op_get_or, 1000000,
     "ctx_var_get_or, unbound"},
    {"set@1", "malloc-free", ARG_STATE, 1, op_set, 1000000,
     "ctx_var_set, 1 binding"},
    {"set@1k", "malloc-free", ARG_STATE, 1000, op_set, 1000000,
     "ctx_var_set, 1,000 bindings"},
    {"set@100k", "malloc-free", ARG_STATE, 100000, op_set, 1000000,
     "ctx_var_set, 100,000 bindings"},
    {"set-reset@1", "malloc-free", ARG_STATE, 1, op_set_reset, 1000000,
     "set + reset + token_release, 1 binding"},
    {"copy@1", "malloc-free", ARG_STATE, 1, op_copy, 1000000,
     "copy_context + release, 1 binding"},
    {"copy@100k", "copy@1", ARG_BIG, 100000, op_copy_in, 1000000,
     "copy_context + release, 100,000 bindings"},
    {"copy-set@1k", "malloc-free", ARG_STATE, 1000, op_copy_set, 200000,
     "copy + set + release, 1,000 bindings"},
    {"copy-enter-set@10", "malloc-free", ARG_CSET, 10, op_copy_enter_set_in,
     200000, "copy, enter, set, exit, release; 10 bindings"},
    {"copy-enter-set@1k", "malloc-free", ARG_CSET, 1000,
     op_copy_enter_set_in, 100000,
     "copy, enter, set, exit, release; 1,000 bindings"},
    {"run", "malloc-free", ARG_STATE, 1, op_run, 1000000,
     "context_run of a trivial function"},
    {"fiber@1", "malloc-free", ARG_NONE, 0, op_fiber_switch1, 1000000,
     "fiber resume + suspend, 1 held context"},
    {"fiber@16", "fiber@1", ARG_NONE, 0, op_fiber_switch16, 1000000,
     "fiber resume + suspend, 16 held contexts"},
    {"pthread-create", "-", ARG_NONE, 0, base_pthread_create, 500,
     "pthread_create + join (baseline)"},
    {"thread-create", "pthread-create", ARG_NONE, 1, op_thread, 500,
     "ctx_thread_create + join"},
    {"plain-pool", "-", ARG_PLAIN, 0, base_plain_pool, 20000,
     "mutex+condvar pool, per job (baseline)"},
    {"glib-pool", "-", ARG_GLIB, 0, base_glib_pool, 20000,
     "GThreadPool, per job (baseline)"},
    {"pool", "plain-pool", ARG_POOL, 1, op_pool, 20000,
     "ctx_pool_submit with snapshot, per job"},
    {"pool-nested", "pool", ARG_NEST, 1, op_pool_nested, 20000,
     "in a job: submit an empty child + wait + release"},
    {"pool-fanout", "pool", ARG_NEST, 1, op_pool_fanout, 1000,
     "a job submits 32 empty sub-jobs, waits all; per request"},
};

#define N_OPS (sizeof ops / sizeof ops[0])

void cg_list(void)
{
    for (size_t i = 0; i < N_OPS; i++) {
        if (ops[i].arg == ARG_GLIB && glib_version_string() == NULL)
            continue;
        printf("%s %s %s\n", ops[i].name, ops[i].baseline, ops[i].what);
    }
}

int cg_mode(void)
{
#ifdef HAVE_CALLGRIND_H
    printf("requests\n");
#else
    printf("toggle\n");
#endif
    return 0;
}

/* Not inlined, so --toggle-collect can name it. */
__attribute__((noinline)) void cg_loop(bench_fn_t *fn, void *arg, uint64_t n);

void cg_loop(bench_fn_t *fn, void *arg, uint64_t n)
{
    fn(arg, n);
    CLOBBER();
}

typedef struct {
    ctx_state_t s;
    pthread_key_t key;
    plain_pool_t *plain;
    glib_pool_t *glib;
    ctx_context_t *big;
    cset_arg_t cset;
} cg_env_t;

static void *cg_setup(const cg_op_t *op, cg_env_t *e)
{
    if (op->bindings > 0) {
        ops_init(&e->s, op->bindings);
        ops_grow(&e->s, op->bindings);
        ops_check(&e->s);
    }
    switch (op->arg) {
    case ARG_KEY:
        bench_check(pthread_key_create(&e->key, NULL), "pthread_key_create");
        bench_check(pthread_setspecific(e->key, e), "pthread_setspecific");
        return &e->key;
    case ARG_NONE:
        return NULL;
    case ARG_BIG:
        e->big = ops_context_with(&e->s, op->bindings);
        return e->big;
    case ARG_CSET:
        e->big = ops_context_with(&e->s, op->bindings);
        e->cset = (cset_arg_t){e->big, e->s.vars[0]};
        return &e->cset;
    case ARG_NEST:
        peers_set_work(0);
        /* fall through */
    case ARG_POOL:
        bench_check(ctx_pool_create(&e->s.pool, 2), "ctx_pool_create");
        return &e->s;
    case ARG_PLAIN:
        return e->plain = plain_pool_create(2);
    case ARG_GLIB:
        if ((e->glib = glib_pool_create(2)) == NULL)
            bench_die("glib-pool (built without GLib)", ENOSYS);
        return e->glib;
    case ARG_STATE:
        break;
    }
    return &e->s;
}

static void cg_teardown(const cg_op_t *op, cg_env_t *e)
{
    if (e->s.pool != NULL)
        bench_check(ctx_pool_destroy(e->s.pool), "ctx_pool_destroy");
    if (e->plain != NULL)
        plain_pool_destroy(e->plain);
    glib_pool_destroy(e->glib);
    ctx_context_release(e->big);
    if (op->bindings > 0)
        ops_fini(&e->s);
}

int cg_run(const char *name, const char *n_arg)
{
    const cg_op_t *op = NULL;
    for (size_t i = 0; i < N_OPS && op == NULL; i++)
        if (strcmp(ops[i].name, name) == 0)
            op = &ops[i];
    if (op == NULL) {
        fprintf(stderr, "ctxbench: unknown op %s (try --list-ops)\n", name);
        return 2;
    }
    uint64_t n = n_arg != NULL ? strtoull(n_arg, NULL, 10) : op->n;
    if (n == 0)
        n = 1;
    cg_env_t e;
    memset(&e, 0, sizeof e);
    void *arg = cg_setup(op, &e);
    /* Warm up (first-use allocations, the get cache) outside the count. */
    op->fn(arg, n / 100 + 1);
#ifdef HAVE_CALLGRIND_H
    CALLGRIND_DUMP_STATS_AT("ctxbench-setup");
#endif
    cg_loop(op->fn, arg, n);
#ifdef HAVE_CALLGRIND_H
    CALLGRIND_DUMP_STATS_AT("ctxbench-loop");
#endif
    cg_teardown(op, &e);
    printf("op=%s n=%llu\n", op->name, (unsigned long long)n);
    return 0;
}
