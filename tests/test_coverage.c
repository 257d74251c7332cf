/*
 * test_coverage.c - the rare paths `make coverage` found no other suite
 * reaching (issue 13), each asserted for its behaviour, not only run:
 *  - the trie checker on every kind of broken trie, and the dump of a
 *    nested one (hand-built nodes: the library never makes them);
 *  - ctx_context_run() whose fn leaves contexts entered, or exits its own;
 *  - the last two references of a context dropped at the same instant;
 *  - a fork() child handler with other threads' contexts entered, nested;
 *  - a thread that exits with contexts entered (its teardown exits them);
 *  - a process whose pthread keys are exhausted (the library cannot
 *    register a thread's teardown: ENOMEM / EAGAIN, nothing crashes);
 *  - ctx_thread_start() on a thread that already uses the library, and the
 *    wrap functions' argument checks;
 *  - the pool: a worker out of memory for a job's context (it waits and
 *    retries), destroy called twice, worker stacks below the minimum and
 *    beyond what can be mapped, deadlines already passed for waiting
 *    threads and for waiting jobs.
 * A catalogue, hence its length: each path is small and stands alone, and
 * they share the hand-built nodes, the forking helper and the fixture.
 *
 * Forked children (in_child) write a coverage build's counters before
 * _exit() (which alone would lose them; exit() would run LeakSanitizer
 * over memory the dead threads owned), and fork through a pointer: gcc
 * --coverage turns a direct call of fork() into __gcov_fork(), which
 * zeroes the child's counters after fork() returns, erasing what the
 * library's atfork child handler just did.
 */
#include "config.h"

#include "hamt_node.h"
#include "internal.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define P(n) ((void *)(uintptr_t)(n))

static ctx_var_t *var;

static pid_t (*volatile fork_)(void) = fork;

/* A coverage build's counters, written out now (libgcov, or clang's
 * profile runtime). */
#ifdef CTX_COVERAGE
void __gcov_dump(void);
#define dump_coverage() __gcov_dump()
#else
#define dump_coverage() ((void)0)
#endif

/* Runs fn in a child process and returns what it returned: 0, or the
 * number of the step that failed.  The child reports through a pipe, not
 * its exit status: under valgrind the memory of the threads that do not
 * exist in the child counts as leaked there, and valgrind's
 * --error-exitcode would overwrite a passing child's status. */
static int in_child(int (*fn)(void))
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    pid_t pid = fork_();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int step = fn();
        dump_coverage();
        _exit(write(fd[1], &step, sizeof step) == sizeof step ? 0 : 99);
    }
    close(fd[1]);
    int step = -1, status;
    ck_assert_int_eq(read(fd[0], &step, sizeof step), (long)sizeof step);
    close(fd[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return step;
}

static void setup(void)
{
    ck_ok(ctx_var_create(&var, "v", CTX_MISSING, NULL));
    atomic_store(&thr_fail_line, 0);
}

static void teardown(void) { ctx_var_release(var); }

/* ------------------------------------------------------------------
 * The trie checker and dump, on hand-built nodes
 * ---------------------------------------------------------------- */

static ctx_var_t *keys[4];

static ctx__hnode_t *node(uint32_t bitmap, uint32_t count, bool collision)
{
    ctx__hnode_t *n = calloc(1, sizeof *n + 4 * sizeof(hentry_t));
    ck_assert_ptr_nonnull(n);
    atomic_init(&n->refcnt, 1);
    n->bitmap = bitmap;
    n->count = count;
    n->cap = 4;
    n->collision = collision;
    return n;
}

static void put_key(ctx__hnode_t *n, uint32_t i, ctx_var_t *k)
{
    n->e[i].key = k;
    n->e[i].value = P(1);
}

static void put_child(ctx__hnode_t *n, uint32_t i, ctx__hnode_t *child)
{
    n->e[i].key = NULL;
    n->e[i].value = child;
}

static void free_tree(ctx__hnode_t *n)
{
    if (n == NULL)
        return;
    for (uint32_t i = 0; i < n->cap; i++)
        if (n->e[i].key == NULL && n->e[i].value != NULL)
            free_tree(n->e[i].value);
    free(n);
}

/* A root over keys 0 (hash 0x01, slot 1) and 1 (hash 0x02, slot 2). */
static ctx__hnode_t *two_keys(void)
{
    ctx__hnode_t *r = node(0x6, 2, false);
    put_key(r, 0, keys[0]);
    put_key(r, 1, keys[1]);
    return r;
}

/* A root whose slot 3 holds a collision node of keys 2 and 3 (same hash
 * 0x23, so the node sits right under the root, where they part from key
 * 0). */
static ctx__hnode_t *with_collision(void)
{
    ctx__hnode_t *r = node((1u << 1) | (1u << 3), 2, false);
    ctx__hnode_t *c = node(0x23, 2, true);
    put_key(r, 0, keys[0]);
    put_child(r, 1, c);
    put_key(c, 0, keys[2]);
    put_key(c, 1, keys[3]);
    return r;
}

static ctx__hnode_t *collision_of(ctx__hnode_t *r) { return r->e[1].value; }

static void expect_broken(ctx__hnode_t *r, const char *what)
{
    ck_assert_msg(ctx__hamt_check(r) == -1, "not caught: %s", what);
    free_tree(r);
}

START_TEST(check_catches_every_broken_shape)
{
    static const uint32_t hashes[4] = {0x01, 0x02, 0x23, 0x23};
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "k%d", i);
        ck_ok(ctx_var_create(&keys[i], name, CTX_MISSING, NULL));
        ctx__var_set_hash(keys[i], hashes[i]);
    }
    ctx__hnode_t *r;

    /* The hand-built shapes are right before they are broken. */
    r = two_keys();
    ck_assert_int_eq(ctx__hamt_check(r), 2);
    free_tree(r);
    r = with_collision();
    ck_assert_int_eq(ctx__hamt_check(r), 3);
    free_tree(r);

    r = two_keys();
    atomic_store(&r->refcnt, 0);
    expect_broken(r, "refcount 0");
    r = two_keys();
    r->count = 0;
    expect_broken(r, "count 0");
    r = two_keys();
    r->count = 5; /* > cap */
    expect_broken(r, "count above capacity");
    r = two_keys();
    r->bitmap = 0xe; /* three slots, two entries */
    expect_broken(r, "bitmap and count disagree");
    r = two_keys();
    keys[1]->hash = 0x03; /* lives in slot 2, hash says slot 3 */
    expect_broken(r, "key in the wrong slot");
    keys[1]->hash = 0x02;
    r = two_keys();
    put_child(r, 1, NULL);
    expect_broken(r, "NULL child");

    /* collision nodes */
    r = node(0x23, 2, true);
    put_key(r, 0, keys[2]);
    put_key(r, 1, keys[3]);
    expect_broken(r, "collision node at the root");
    r = with_collision();
    collision_of(r)->count = 1;
    expect_broken(r, "collision node with one key");
    r = with_collision();
    collision_of(r)->bitmap = 0x24; /* slot 4 at the root, not 3 */
    expect_broken(r, "collision hash off its path");
    r = with_collision();
    collision_of(r)->e[1].key = keys[0];
    expect_broken(r, "collision entry with another hash");
    r = with_collision();
    put_child(collision_of(r), 1, NULL); /* no key at all */
    expect_broken(r, "collision entry without a key");
    r = with_collision();
    collision_of(r)->e[1].key = keys[2];
    expect_broken(r, "duplicate key");

    /* a subnode with a single binding (must have been pulled up) */
    r = node(1u << 3, 1, false);
    ctx__hnode_t *sub = node(1u << 1, 1, false);
    put_child(r, 0, sub);
    keys[2]->hash = 0x23;
    put_key(sub, 0, keys[2]);
    expect_broken(r, "single-binding subnode");

    /* a bitmap node past the last level: a chain of one-child nodes down
     * hash 0 to shift 35 */
    r = node(1, 1, false);
    ctx__hnode_t *n = r;
    for (int level = 1; level <= 7; level++) {
        ctx__hnode_t *c = node(1, 1, false);
        put_child(n, 0, c);
        n = c;
    }
    n->bitmap = 0x3;
    n->count = 2;
    put_key(n, 0, keys[0]);
    put_key(n, 1, keys[1]);
    expect_broken(r, "bitmap node below the last level");

    for (int i = 0; i < 4; i++)
        ctx_var_release(keys[i]);
}
END_TEST

START_TEST(dump_shows_nested_nodes)
{
    for (int i = 0; i < 4; i++) {
        ck_ok(ctx_var_create(&keys[i], i < 2 ? "plain" : "colliding",
                             CTX_MISSING, NULL));
        ctx__var_set_hash(keys[i], i < 2 ? (uint32_t)i + 1 : 0x23);
    }
    ctx__hnode_t *r = with_collision();
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    ck_assert_ptr_nonnull(out);
    ctx__hamt_dump(r, out);
    ctx__hamt_dump(NULL, out);
    fclose(out);
    ck_assert_msg(strstr(text, "bitmap 0000000a count=2") == text, "%s", text);
    ck_assert_msg(strstr(text, "\n  collision 00000023 count=2") != NULL,
                  "%s", text);
    ck_assert_msg(strstr(text, "\n    colliding (hash 00000023)") != NULL,
                  "%s", text);
    ck_assert_msg(strstr(text, "(empty)\n") != NULL, "%s", text);
    free(text);
    free_tree(r);
    for (int i = 0; i < 4; i++)
        ctx_var_release(keys[i]);
}
END_TEST

/* Keys 0 and 1 collide (hash 0x23) and sit alone in the root's slot 3 as
 * one collision node; key 2 (0x43) then arrives in the same slot, so the
 * collision node must move one level down beside it. */
START_TEST(collision_node_meets_a_new_key)
{
    static const uint32_t hashes[3] = {0x23, 0x23, 0x43};
    static char vals[3][4] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        ck_ok(ctx_var_create(&keys[i], "k", CTX_MISSING, NULL));
        ctx__var_set_hash(keys[i], hashes[i]);
        ck_ok(ctx_var_set(keys[i], vals[i], NULL));
        ck_assert_int_eq(ctx__hamt_check(ctx__ts.current->root), i + 1);
    }
    ck_assert_int_eq(ctx__hamt_depth(ctx__ts.current->root), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(ctx_var_get_or(keys[i], NULL), vals[i]);
    for (int i = 0; i < 3; i++)
        ctx_var_release(keys[i]);
}
END_TEST

/* ------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------- */

static ctx_context_t *inner[2];

static void *enter_and_stay(void *ctx)
{
    (void)ctx;
    ctx_var_set(var, "in-run", NULL);
    ctx_context_enter(inner[0]);
    ctx_context_enter(inner[1]);
    ctx_var_set(var, "in-inner", NULL);
    return P(7);
}

/* Another thread's attempt to enter c: EBUSY while anyone has it. */
static void *try_enter(void *c)
{
    int err = ctx_context_enter(c);
    if (err == 0)
        ctx_context_exit(c);
    return P(err);
}

static int enter_elsewhere(ctx_context_t *c)
{
    pthread_t t;
    void *r;
    ck_ok(pthread_create(&t, NULL, try_enter, c));
    ck_ok(pthread_join(t, &r));
    return (int)(uintptr_t)r;
}

START_TEST(run_exits_what_fn_left_entered)
{
    ctx_context_t *ctx;
    void *r = NULL;
    ck_ok(ctx_context_new(&ctx));
    ck_ok(ctx_context_new(&inner[0]));
    ck_ok(ctx_context_new(&inner[1]));
    ck_ok(ctx_var_set(var, "outer", NULL));
    ck_ok(ctx_context_run(ctx, enter_and_stay, NULL, &r));
    ck_assert_ptr_eq(r, P(7));
    /* back in the caller's context, and nobody is left inside any */
    ck_assert_str_eq(ctx_var_get_or(var, "unset"), "outer");
    ck_assert_int_eq(enter_elsewhere(inner[1]), 0);
    ck_assert_int_eq(enter_elsewhere(inner[0]), 0);
    ck_assert_int_eq(enter_elsewhere(ctx), 0);
    /* what fn set in each stayed there */
    ck_ok(ctx_context_get(ctx, var, &r));
    ck_assert_str_eq(r, "in-run");
    ck_ok(ctx_context_get(inner[1], var, &r));
    ck_assert_str_eq(r, "in-inner");
    ctx_context_release(inner[1]);
    ctx_context_release(inner[0]);
    ctx_context_release(ctx);
}
END_TEST

static char outer[] = "outer";

/* Runs on the test's thread, inside ctx_context_run(): plain asserts. */
static void *exit_own(void *ctx)
{
    ck_assert_int_eq(ctx_context_exit(ctx), 0);
    ck_assert_ptr_eq(ctx_var_get_or(var, "unset"), outer);
    return P(8);
}

START_TEST(run_whose_fn_exits_its_own_context)
{
    ctx_context_t *ctx;
    void *r = NULL;
    ck_ok(ctx_context_new(&ctx));
    ck_ok(ctx_var_set(var, outer, NULL));
    ck_ok(ctx_context_run(ctx, exit_own, ctx, &r));
    ck_assert_ptr_eq(r, P(8));
    ck_assert_ptr_eq(ctx_var_get_or(var, "unset"), outer);
    ck_assert_int_eq(enter_elsewhere(ctx), 0);
    /* the caller's own stack was left alone: exiting it is still refused */
    ck_assert_int_eq(ctx_context_exit(ctx), EPERM);
    ctx_context_release(ctx);
}
END_TEST

/* Two threads drop the last two references of one context at the same
 * instant, many times: exactly one of them frees it (ASan and valgrind
 * see a double free or a leak otherwise), whichever way the race goes. */
enum { RACES = 2000 };
static ctx_context_t *racing;
static atomic_int race_round, race_done;

static void *release_racer(void *unused)
{
    (void)unused;
    for (int i = 1; i <= RACES; i++) {
        while (atomic_load(&race_round) < i)
            sched_yield(); /* 3 threads on 2 cores: never spin idle */
        ctx_context_release(racing);
        atomic_fetch_add(&race_done, 1);
    }
    return NULL;
}

START_TEST(last_references_dropped_together)
{
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        ck_ok(pthread_create(&t[k], NULL, release_racer, NULL));
    for (int i = 1; i <= RACES; i++) {
        ck_ok(ctx_context_new(&racing));
        ctx_context_retain(racing);
        atomic_store(&race_round, i);
        while (atomic_load(&race_done) < 2 * i)
            sched_yield();
    }
    for (int k = 0; k < 2; k++)
        ck_ok(pthread_join(t[k], NULL));
}
END_TEST

/* A thread that leaves with contexts entered: its teardown exits them, so
 * others can enter them afterwards. */
static void *leave_inside(void *unused)
{
    (void)unused;
    ctx_context_enter(inner[0]);
    ctx_context_enter(inner[1]);
    ctx_var_set(var, "left-inside", NULL);
    pthread_exit(P(9));
}

START_TEST(thread_exit_with_contexts_entered)
{
    pthread_t t;
    void *r, *got;
    ck_ok(ctx_context_new(&inner[0]));
    ck_ok(ctx_context_new(&inner[1]));
    ck_ok(ctx_thread_create(&t, NULL, leave_inside, NULL));
    ck_ok(pthread_join(t, &r));
    ck_assert_ptr_eq(r, P(9));
    ck_ok(ctx_context_enter(inner[0]));
    ck_ok(ctx_context_enter(inner[1]));
    ck_assert_str_eq(ctx_var_get_or(var, "unset"), "left-inside");
    ck_ok(ctx_context_exit(inner[1]));
    ck_ok(ctx_context_exit(inner[0]));
    ck_ok(ctx_context_get(inner[1], var, &got));
    ctx_context_release(inner[1]);
    ctx_context_release(inner[0]);
}
END_TEST

/* ------------------------------------------------------------------
 * fork() with other threads inside contexts
 * ---------------------------------------------------------------- */

static pthread_barrier_t fork_ready, fork_done;

static void *hold_nested(void *unused)
{
    (void)unused;
    ctx_context_enter(inner[0]);
    ctx_var_set(var, "held-outer", NULL);
    ctx_context_enter(inner[1]);
    ctx_var_set(var, "held-inner", NULL);
    pthread_barrier_wait(&fork_ready);
    pthread_barrier_wait(&fork_done);
    ctx_context_exit(inner[1]);
    ctx_context_exit(inner[0]);
    return NULL;
}

/* A thread registered with the library that has no base context: its
 * first use failed for want of memory. */
static void *no_base(void *unused)
{
    (void)unused;
    ctx__fault_fail_after(0);
    THR_CHECK(ctx_var_set(var, "never", NULL) == ENOMEM);
    THR_CHECK(ctx__ts.registered && ctx__ts.current == NULL);
    pthread_barrier_wait(&fork_ready);
    pthread_barrier_wait(&fork_done);
    return NULL;
}

static void *base_only(void *unused)
{
    (void)unused;
    ctx_var_set(var, "base", NULL); /* registered, nothing entered */
    pthread_barrier_wait(&fork_ready);
    pthread_barrier_wait(&fork_done);
    return NULL;
}

static void *read_var(void *unused)
{
    (void)unused;
    return ctx_var_get_or(var, "unset");
}

/* In the child: 0, or the number of the step that failed. */
static int after_fork(void)
{
    if (ctx_context_enter(inner[1]) != 0)
        return 1;
    if (strcmp(ctx_var_get_or(var, "unset"), "held-inner") != 0)
        return 2;
    if (ctx_context_enter(inner[0]) != 0)
        return 3;
    if (strcmp(ctx_var_get_or(var, "unset"), "held-outer") != 0)
        return 4;
    if (ctx_context_exit(inner[0]) != 0 || ctx_context_exit(inner[1]) != 0)
        return 5;
    pthread_t t;
    void *got = NULL;
    if (ctx_var_set(var, "child", NULL) != 0 ||
        ctx_thread_create(&t, NULL, read_var, NULL) != 0 ||
        pthread_join(t, &got) != 0 || strcmp(got, "child") != 0)
        return 6;
    return 0;
}

START_TEST(fork_child_exits_nested_contexts_of_dead_threads)
{
    pthread_t holder, other, unborn;
    ck_ok(ctx_context_new(&inner[0]));
    ck_ok(ctx_context_new(&inner[1]));
    ck_ok(ctx_var_set(var, "main", NULL));
    pthread_barrier_init(&fork_ready, NULL, 4);
    pthread_barrier_init(&fork_done, NULL, 4);
    ck_ok(ctx_thread_create(&holder, NULL, hold_nested, NULL));
    ck_ok(ctx_thread_create(&other, NULL, base_only, NULL));
    ck_ok(pthread_create(&unborn, NULL, no_base, NULL));
    pthread_barrier_wait(&fork_ready);
    int step = in_child(after_fork);
    ck_assert_msg(step == 0, "child failed at step %d", step);
    /* the parent is undisturbed: the holder is still inside */
    ck_assert_int_eq(enter_elsewhere(inner[1]), EBUSY);
    pthread_barrier_wait(&fork_done);
    ck_ok(pthread_join(holder, NULL));
    ck_ok(pthread_join(other, NULL));
    ck_ok(pthread_join(unborn, NULL));
    ck_threads_ok();
    ck_assert_int_eq(enter_elsewhere(inner[1]), 0);
    pthread_barrier_destroy(&fork_ready);
    pthread_barrier_destroy(&fork_done);
    ctx_context_release(inner[1]);
    ctx_context_release(inner[0]);
}
END_TEST

/* ------------------------------------------------------------------
 * No pthread key left for the library's teardown
 * ---------------------------------------------------------------- */

/* A thread started in such a process cannot adopt its creator's snapshot
 * (it cannot register its teardown): it still runs, in an empty context,
 * and cannot set anything. */
static void *keyless_thread(void *unused)
{
    (void)unused;
    bool ok = ctx_var_set(var, "y", NULL) == ENOMEM &&
              strcmp(ctx_var_get_or(var, "unset"), "unset") == 0;
    return P(ok);
}

/* In a process that never used the library, with every key taken:
 * nothing that needs a thread's state can work, each call says so, and
 * what needs none (reads, an empty copy, starting a thread) still works. */
static int without_keys(void)
{
    pthread_key_t k;
    int n = 0;
    while (pthread_key_create(&k, NULL) == 0)
        n++;
    if (n == 0)
        return 1;
    ctx_context_t *c = NULL;
    if (ctx_var_set(var, "x", NULL) != ENOMEM)
        return 2;
    if (ctx_copy_context(&c) != 0 || ctx_context_len(c) != 0)
        return 3;
    ctx_context_release(c);
    pthread_t t;
    void *ok = NULL;
    if (ctx_thread_create(&t, NULL, keyless_thread, NULL) != 0 ||
        pthread_join(t, &ok) != 0 || ok != P(1))
        return 4;
    if (strcmp(ctx_var_get_or(var, "unset"), "unset") != 0)
        return 5;
    return 0;
}

START_TEST(no_pthread_keys_left)
{
    int step = in_child(without_keys);
    ck_assert_msg(step == 0, "child failed at step %d", step);
}
END_TEST

/* ------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------- */

START_TEST(thread_wrap_arguments)
{
    void *start = P(1);
    ck_assert_int_eq(ctx_thread_wrap(NULL, NULL, &start), EINVAL);
    ck_assert_int_eq(ctx_thread_wrap(read_var, NULL, NULL), EINVAL);
    ck_assert_ptr_eq(start, P(1));
    ctx_thread_wrap_discard(NULL);
}
END_TEST

/* A thread whose first use of the library failed for want of memory is
 * registered but has no base: its next call makes the base, and so does
 * ctx_thread_start() run by hand there (the thread adopts the snapshot as
 * its base, as a fresh thread would). */
static void *fail_first_use(void *start)
{
    ctx__fault_fail_after(0);
    THR_CHECK(ctx_var_set(var, "never", NULL) == ENOMEM);
    THR_CHECK(ctx__ts.registered && ctx__ts.current == NULL);
    if (start != NULL) {
        THR_CHECK(strcmp(ctx_thread_start(start), "at-wrap") == 0);
        THR_CHECK(ctx__ts.current != NULL && ctx__ts.current == ctx__ts.base);
        THR_CHECK(strcmp(ctx_var_get_or(var, "unset"), "at-wrap") == 0);
    } else {
        THR_CHECK(ctx_var_set(var, "second-try", NULL) == 0);
        THR_CHECK(strcmp(ctx_var_get_or(var, "unset"), "second-try") == 0);
    }
    return NULL;
}

START_TEST(first_use_fails_then_works)
{
    pthread_t t;
    void *start;
    ck_ok(pthread_create(&t, NULL, fail_first_use, NULL));
    ck_ok(pthread_join(t, NULL));
    ck_ok(ctx_var_set(var, "at-wrap", NULL));
    ck_ok(ctx_thread_wrap(read_var, NULL, &start));
    ck_ok(pthread_create(&t, NULL, fail_first_use, start));
    ck_ok(pthread_join(t, NULL));
    ck_threads_ok();
}
END_TEST

/* ctx_thread_start() run by hand on a thread that has its own base: fn
 * runs in the snapshot, and the caller's context is as it was. */
START_TEST(thread_start_on_a_used_thread)
{
    void *start;
    ck_ok(ctx_var_set(var, "at-wrap", NULL));
    ck_ok(ctx_thread_wrap(read_var, NULL, &start));
    ck_ok(ctx_var_set(var, "after-wrap", NULL));
    ck_assert_str_eq(ctx_thread_start(start), "at-wrap");
    ck_assert_str_eq(ctx_var_get_or(var, "unset"), "after-wrap");
}
END_TEST

/* ------------------------------------------------------------------
 * The pool
 * ---------------------------------------------------------------- */

static sem_t started, gate;
static ctx_token_t *kept;

/* Keeps a token on its context, so the worker cannot cache that context
 * for the next job, and makes this worker's next allocation fail: the next
 * job's context. */
static void *starve_next(void *unused)
{
    (void)unused;
    THR_CHECK(ctx_var_set(var, "first", &kept) == 0);
    ctx__fault_fail_after(0);
    return NULL;
}

static void *armed_and_read(void *unused)
{
    (void)unused;
    /* the fault fired on our context, so it is disarmed now */
    THR_CHECK(!ctx__fault_armed());
    return ctx_var_get_or(var, "unset");
}

START_TEST(worker_out_of_memory_waits_and_retries)
{
    ctx_pool_t *pool;
    ctx_future_t *f;
    void *r = NULL;
    ck_ok(ctx_pool_create(&pool, 1));
    ck_ok(ctx_pool_submit(pool, starve_next, NULL, &f));
    ck_ok(ctx_future_wait(f, NULL));
    ctx_future_release(f);
    ck_ok(ctx_var_set(var, "second", NULL));
    ck_ok(ctx_pool_submit(pool, armed_and_read, NULL, &f));
    ck_ok(ctx_future_wait(f, &r));
    ck_assert_str_eq(r, "second");
    ctx_future_release(f);
    ck_ok(ctx_pool_destroy(pool));
    ck_threads_ok();
    ck_assert_ptr_nonnull(kept);
    ck_assert(!ctx_token_used(kept));
    ctx_token_release(kept);
}
END_TEST

static void *gate_job(void *unused)
{
    (void)unused;
    sem_post(&started);
    sem_wait(&gate);
    return P(3);
}

static ctx_pool_t *destroying;

static void *destroy_it(void *unused)
{
    (void)unused;
    return P(ctx_pool_destroy(destroying));
}

START_TEST(destroy_twice)
{
    ctx_future_t *f, *g;
    pthread_t t;
    void *r;
    sem_init(&started, 0, 0);
    sem_init(&gate, 0, 0);
    ck_ok(ctx_pool_create(&destroying, 1));
    ck_ok(ctx_pool_submit(destroying, gate_job, NULL, &f));
    sem_wait(&started);
    ck_ok(pthread_create(&t, NULL, destroy_it, NULL));
    /* destroy has begun when submitting is refused */
    int err;
    while ((err = ctx_pool_submit(destroying, read_var, NULL, &g)) == 0) {
        ctx_future_release(g); /* runs after the gate, before the end */
        sched_yield();
    }
    ck_assert_int_eq(err, ESHUTDOWN);
    ck_assert_int_eq(ctx_pool_destroy(destroying), EINVAL);
    ck_assert(!ctx_future_done(f));
    sem_post(&gate);
    ck_ok(pthread_join(t, &r));
    ck_assert_ptr_eq(r, P(0));
    ck_ok(ctx_future_wait(f, &r));
    ck_assert_ptr_eq(r, P(3));
    ctx_future_release(f);
    sem_destroy(&gate);
    sem_destroy(&started);
}
END_TEST

START_TEST(worker_stacks)
{
    ctx_pool_t *pool = P(1);
    ctx_future_t *f;
    void *r;
    ctx_pool_options_t o = {0};
    o.nthreads = 1;
    o.stack_size = 1; /* raised to PTHREAD_STACK_MIN */
    ck_ok(ctx_var_set(var, "small", NULL));
    ck_ok(ctx_pool_create_ex(&pool, &o));
    ck_ok(ctx_pool_submit(pool, read_var, NULL, &f));
    ck_ok(ctx_future_wait(f, &r));
    ck_assert_str_eq(r, "small");
    ctx_future_release(f);
    ck_ok(ctx_pool_destroy(pool));
    /* a stack no address space can hold: no worker starts */
    pool = P(1);
    o.nthreads = 2;
    o.stack_size = (size_t)1 << 50;
    ck_assert_int_eq(ctx_pool_create_ex(&pool, &o), EAGAIN);
    ck_assert_ptr_eq(pool, P(1));
}
END_TEST

static struct timespec deadline_in(long ns)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += ns;
    while (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000L;
        t.tv_sec--;
    }
    while (t.tv_nsec >= 1000000000L) {
        t.tv_nsec -= 1000000000L;
        t.tv_sec++;
    }
    return t;
}

static ctx_future_t *gated;
static sem_t waiting;

/* A job of the same pool waiting for a running job, past its deadline:
 * it gives up with ETIMEDOUT instead of helping forever. */
static void *wait_past_deadline(void *unused)
{
    (void)unused;
    struct timespec now = deadline_in(0), past = deadline_in(-2000000000L);
    void *r = P(0xbad);
    THR_CHECK(ctx_future_timedwait(gated, &now, &r) == ETIMEDOUT);
    THR_CHECK(ctx_future_timedwait(gated, &past, &r) == ETIMEDOUT);
    THR_CHECK(r == P(0xbad));
    /* and a deadline seconds away: the wait ends when the job does */
    struct timespec later = deadline_in(5000000000L);
    sem_post(&waiting);
    THR_CHECK(ctx_future_timedwait(gated, &later, &r) == 0);
    THR_CHECK(r == P(3));
    return P(4);
}

START_TEST(deadlines_already_passed)
{
    ctx_pool_t *pool;
    ctx_future_t *f;
    void *r = P(0xbad);
    sem_init(&started, 0, 0);
    sem_init(&gate, 0, 0);
    ck_ok(ctx_pool_create(&pool, 2));
    ck_ok(ctx_pool_submit(pool, gate_job, NULL, &gated));
    sem_wait(&started);
    /* from outside the pool */
    struct timespec past = deadline_in(-1500000000L);
    struct timespec soon = deadline_in(1000000);
    ck_assert_int_eq(ctx_future_timedwait(gated, &past, &r), ETIMEDOUT);
    ck_assert_int_eq(ctx_future_timedwait(gated, &soon, &r), ETIMEDOUT);
    ck_assert_ptr_eq(r, P(0xbad));
    struct timespec bad = soon;
    bad.tv_nsec = -1;
    ck_assert_int_eq(ctx_future_timedwait(gated, &bad, &r), EINVAL);
    /* from the pool's other worker */
    sem_init(&waiting, 0, 0);
    ck_ok(ctx_pool_submit(pool, wait_past_deadline, NULL, &f));
    sem_wait(&waiting);
    nanosleep(&(struct timespec){0, 5000000}, NULL); /* let it wait */
    sem_post(&gate);
    ck_ok(ctx_future_wait(f, &r));
    ck_assert_ptr_eq(r, P(4));
    ctx_future_release(f);
    sem_destroy(&waiting);
    ck_ok(ctx_future_wait(gated, &r));
    ck_assert_ptr_eq(r, P(3));
    ctx_future_release(gated);
    ck_ok(ctx_pool_destroy(pool));
    ck_threads_ok();
    sem_destroy(&gate);
    sem_destroy(&started);
}
END_TEST

/* A job of one pool waiting for, then destroying, another pool: that is
 * not "one of the pool's own jobs", so it blocks like any thread (no
 * helping, no EDEADLK). */
static ctx_pool_t *other_pool;

static void *use_other_pool(void *unused)
{
    (void)unused;
    ctx_future_t *f;
    void *r = NULL;
    THR_CHECK(ctx_pool_submit(other_pool, read_var, NULL, &f) == 0);
    THR_CHECK(ctx_future_wait(f, &r) == 0);
    ctx_future_release(f);
    THR_CHECK(ctx_pool_destroy(other_pool) == 0);
    return r;
}

START_TEST(job_uses_another_pool)
{
    ctx_pool_t *pool;
    ctx_future_t *f;
    void *r = NULL;
    ck_ok(ctx_var_set(var, "submitter", NULL));
    ck_ok(ctx_pool_create(&pool, 1));
    ck_ok(ctx_pool_create(&other_pool, 1));
    ck_ok(ctx_pool_submit(pool, use_other_pool, NULL, &f));
    ck_ok(ctx_future_wait(f, &r));
    ck_assert_str_eq(r, "submitter"); /* the copy of a copy */
    ctx_future_release(f);
    ck_ok(ctx_pool_destroy(pool));
    ck_threads_ok();
}
END_TEST

static Suite *coverage_suite(void)
{
    Suite *s = suite_create("coverage");
    TCase *tc = tcase_create("trie");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, check_catches_every_broken_shape);
    tcase_add_test(tc, dump_shows_nested_nodes);
    tcase_add_test(tc, collision_node_meets_a_new_key);
    suite_add_tcase(s, tc);
    tc = tcase_create("context");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, run_exits_what_fn_left_entered);
    tcase_add_test(tc, run_whose_fn_exits_its_own_context);
    tcase_add_test(tc, last_references_dropped_together);
    tcase_add_test(tc, thread_exit_with_contexts_entered);
    suite_add_tcase(s, tc);
    tc = tcase_create("process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fork_child_exits_nested_contexts_of_dead_threads);
    tcase_add_test(tc, no_pthread_keys_left);
    suite_add_tcase(s, tc);
    tc = tcase_create("thread");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, thread_wrap_arguments);
    tcase_add_test(tc, thread_start_on_a_used_thread);
    tcase_add_test(tc, first_use_fails_then_works);
    suite_add_tcase(s, tc);
    tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, worker_out_of_memory_waits_and_retries);
    tcase_add_test(tc, destroy_twice);
    tcase_add_test(tc, worker_stacks);
    tcase_add_test(tc, deadlines_already_passed);
    tcase_add_test(tc, job_uses_another_pool);
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(coverage_suite)
