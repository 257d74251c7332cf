/*
 * demo.c - the ctxvars model on one page.
 *
 * One variable, "color", and where its value travels: into a copy of the
 * context (whose changes stay there), into a new thread and into a pool job
 * (both start from a snapshot of their creator's context).  The output is
 * the same on every run; tests/test_examples.c checks it line by line.
 */
#include <ctxvars.h>

#include <stdio.h>
#include <stdlib.h>

static ctx_var_t *color;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "demo: %s failed (error %d)\n", what, rc);
        exit(EXIT_FAILURE);
    }
}

static const char *current_color(void)
{
    void *value;

    check(ctx_var_get(color, &value), "ctx_var_get");
    return value;
}

static void *repaint(void *new_color)
{
    check(ctx_var_set(color, new_color, NULL), "ctx_var_set");
    printf("  inside the copy: %s\n", current_color());
    return NULL;
}

static void *report(void *who)
{
    printf("%s sees: %s\n", (const char *)who, current_color());
    return NULL;
}

int main(void)
{
    ctx_token_t *token;
    ctx_context_t *copy;
    void *kept;
    pthread_t thread;
    ctx_pool_t *pool;
    ctx_future_t *future;

    /* Values are borrowed pointers; string literals live forever. */
    check(ctx_var_create(&color, "color", "red", NULL), "ctx_var_create");
    printf("default: %s\n", current_color());
    check(ctx_var_set(color, "green", &token), "ctx_var_set");
    printf("main sets: %s\n", current_color());

    /* A copy is a snapshot: what runs inside it changes the copy only. */
    check(ctx_copy_context(&copy), "ctx_copy_context");
    check(ctx_context_run(copy, repaint, "blue", NULL), "ctx_context_run");
    check(ctx_context_get(copy, color, &kept), "ctx_context_get");
    printf("after the run, main: %s, the copy: %s\n", current_color(),
           (const char *)kept);
    ctx_context_release(copy);

    check(ctx_thread_create(&thread, NULL, report, "a new thread"),
          "ctx_thread_create");
    check(pthread_join(thread, NULL), "pthread_join");

    /* The job's snapshot is taken at submit time, so the later set cannot
     * reach it, however the threads are scheduled. */
    check(ctx_pool_create(&pool, 2), "ctx_pool_create");
    check(ctx_pool_submit(pool, report, "a pool job", &future),
          "ctx_pool_submit");
    check(ctx_var_set(color, "yellow", NULL), "ctx_var_set");
    check(ctx_future_wait(future, NULL), "ctx_future_wait");
    ctx_future_release(future);
    printf("main now: %s\n", current_color());

    /* Back to before "green": unbound, so the default shows again. */
    check(ctx_var_reset(color, token), "ctx_var_reset");
    ctx_token_release(token);
    printf("after reset: %s\n", current_color());

    check(ctx_pool_destroy(pool), "ctx_pool_destroy");
    ctx_var_release(color);
    return EXIT_SUCCESS;
}
