/*
 * fuzz_watch.c - context-switch watchers in the API fuzzer.
 *
 * Watchers come and go between the other operations.  The model calls
 * fz_switched() right after every switch it models (an enter or exit that
 * succeeded, both halves of a run and its unwinding, a fiber's resume and
 * suspend), once it has updated its own stack; by then every installed
 * watcher must have been called exactly once more, last with the
 * context the model now has on top.  Inside the watcher, switching must
 * be refused with EDEADLK and reading must work.
 */
#include "fuzz_api.h"

#include <errno.h>

#define NW 3 /* watcher slots */

static struct {
    int id;                 /* 0: empty slot */
    unsigned long seen, expect;
    ctx_context_t *last;    /* what the last call was given */
} w[NW];

static void *never_called(void *arg) { return arg; }

static void watcher(ctx_context_t *current, void *arg)
{
    int i = (int)(intptr_t)arg;
    w[i].seen++;
    w[i].last = current;
    CHECK(ctx_context_enter(current) == EDEADLK, "enter inside a watcher");
    CHECK(ctx_context_run(current, never_called, NULL, NULL) == EDEADLK,
          "run inside a watcher");
    /* A read through the thread's view and through the context agree. */
    void *a = ctx_var_get_or(fz.var[0], SENT), *b = SENT;
    if (ctx_context_get(current, fz.var[0], &b) != 0)
        b = SENT;
    CHECK(a == b, "watcher: get and context_get of current disagree");
}

void fz_switched(void)
{
    for (int i = 0; i < NW; i++) {
        if (w[i].id == 0)
            continue;
        w[i].expect++;
        CHECK(w[i].seen == w[i].expect, "watcher %d: %lu calls, %lu switches",
              i, w[i].seen, w[i].expect);
        CHECK(w[i].last == fz.stack[fz.depth - 1].c,
              "watcher %d was given another context than the current one", i);
    }
}

bool fz_watching(void)
{
    for (int i = 0; i < NW; i++)
        if (w[i].id != 0)
            return true;
    return false;
}

void fz_run_ended(bool watched)
{
    /* A run that began with no watcher installed took the plain path, so
     * watchers added inside it miss its second half (documented). */
    if (watched)
        fz_switched();
}

static void remove_slot(int i)
{
    fz_outcome(ctx_watch_remove(w[i].id), 0, "watch_remove");
    fz_outcome(ctx_watch_remove(w[i].id), EINVAL, "watch_remove twice");
    w[i].id = 0;
}

void fz_op_watch(void)
{
    uint8_t b = fz_byte();
    int i = b % NW;
    if (w[i].id != 0) {
        remove_slot(i);
        return;
    }
    if (b & 0x80) {
        fz_outcome(ctx_watch_add(NULL, NULL, &w[i].id), EINVAL,
                   "watch_add(NULL)");
        return;
    }
    if (fz_outcome(ctx_watch_add(watcher, (void *)(intptr_t)i, &w[i].id), 0,
                   "watch_add")) {
        CHECK(w[i].id > 0, "watcher id");
        w[i].seen = w[i].expect = 0;
    }
}

void fz_watch_teardown(void)
{
    for (int i = 0; i < NW; i++)
        if (w[i].id != 0)
            remove_slot(i);
}
