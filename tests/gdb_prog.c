/*
 * gdb_prog.c - the crash tests/test_gdb.sh inspects with gdb: the main
 * thread binds request_id, a pool job binds user and aborts, as a server
 * that dies while serving a request does.
 *
 *   gdb_prog          that, and nothing else
 *   gdb_prog many     also binds 100 more variables first, so the trie has
 *                     subnodes (and, built with GDB_PROG_COLLIDE against the
 *                     internal library, collision nodes)
 *   gdb_prog fiber    the job aborts inside a context entered in a resumed
 *                     fiber
 *   gdb_prog fibers?  exits 0 if the library has fibers, 77 if not
 */
#include <ctxvars.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GDB_PROG_COLLIDE
#include "internal.h"
#endif

/* Fibers come with a later version of the library; weak, so this program
 * builds and runs against either (NULL: not there). */
struct ctx_fiber;
CTX_EXTERN int ctx_fiber_create(struct ctx_fiber **out, ctx_context_t *ctx)
    __attribute__((weak));
CTX_EXTERN int ctx_fiber_resume(struct ctx_fiber *fiber) __attribute__((weak));

static ctx_var_t *request_id, *user;
static const char *mode = "";

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "gdb_prog: %s failed (error %d)\n", what, rc);
        exit(EXIT_FAILURE);
    }
}

static void bind_many(void)
{
    for (unsigned i = 0; i < 100; i++) {
        char name[16];
        ctx_var_t *v;
        snprintf(name, sizeof name, "v%03u", i);
        check(ctx_var_create(&v, name, NULL, NULL), "ctx_var_create");
#ifdef GDB_PROG_COLLIDE
        if (i < 3)
            ctx__var_set_hash(v, 0x2a); /* one collision node of three */
#endif
        /* Small integers: values that are not strings. */
        check(ctx_var_set(v, (void *)(uintptr_t)(i + 1), NULL), "ctx_var_set");
        ctx_var_release(v); /* the binding keeps it */
    }
}

static void *job(void *arg)
{
    (void)arg;
    check(ctx_var_set(user, "alice", NULL), "ctx_var_set user");
    if (strcmp(mode, "fiber") == 0) {
        struct ctx_fiber *fiber;
        ctx_var_t *step;
        check(ctx_fiber_create(&fiber, NULL), "ctx_fiber_create");
        check(ctx_fiber_resume(fiber), "ctx_fiber_resume");
        check(ctx_var_create(&step, "step", NULL, NULL), "ctx_var_create");
        check(ctx_var_set(step, "in the fiber", NULL), "ctx_var_set step");
        /* A context entered inside the fiber sits above the fiber's own. */
        ctx_context_t *inner;
        check(ctx_copy_context(&inner), "ctx_copy_context");
        check(ctx_context_enter(inner), "ctx_context_enter");
        check(ctx_var_set(step, "entered in the fiber", NULL), "ctx_var_set");
    }
    abort();
}

int main(int argc, char **argv)
{
    ctx_pool_t *pool;
    ctx_future_t *f;

    if (argc > 1)
        mode = argv[1];
    if (strcmp(mode, "fibers?") == 0)
        return ctx_fiber_create != NULL && ctx_fiber_resume != NULL ? 0 : 77;
    check(ctx_var_create(&request_id, "request_id", NULL, NULL), "create");
    check(ctx_var_create(&user, "user", NULL, NULL), "create");
    if (strcmp(mode, "many") == 0)
        bind_many();
    check(ctx_var_set(request_id, "req-4242", NULL), "ctx_var_set request_id");
    check(ctx_pool_create(&pool, 1), "ctx_pool_create");
    check(ctx_pool_submit(pool, job, NULL, &f), "ctx_pool_submit");
    check(ctx_future_wait(f, NULL), "ctx_future_wait");
    return EXIT_FAILURE; /* not reached: the job aborts */
}
