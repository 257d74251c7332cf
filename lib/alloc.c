/*
 * alloc.c - the library's one door to the heap.
 *
 * Every allocation passes through here so that tests can make the k-th one
 * fail (SQLite-style fault injection) and check that each public function
 * then returns ENOMEM with nothing changed.  (Leaks are the business of
 * ASan and valgrind, which CI runs; a global counter here would put a shared
 * cache line on every allocation.)  The countdown is per thread: a test that injects a
 * fault into its own call is never disturbed by, nor disturbs, allocations
 * other threads make at the same time.  Disarmed, the cost is one
 * thread-local load per call.
 */
#include "config.h"

#include "internal.h"

#include <stdlib.h>

static _Thread_local long fault_countdown CTX__TLS_IE = -1;

static bool fault_fires(void)
{
    if (CTX__LIKELY(fault_countdown < 0))
        return false;
    return fault_countdown-- == 0;
}

void *ctx__malloc(size_t size)
{
    if (CTX__UNLIKELY(fault_fires()))
        return NULL;
    return malloc(size);
}

void *ctx__calloc(size_t n, size_t size)
{
    if (CTX__UNLIKELY(fault_fires()))
        return NULL;
    return calloc(n, size);
}

void ctx__free(void *p)
{
    free(p);
}

void ctx__fault_fail_after(long k)
{
    fault_countdown = k < 0 ? -1 : k;
}

bool ctx__fault_armed(void)
{
    return fault_countdown >= 0;
}

#ifdef CTX_DEBUG
void ctx__die(const char *what, const char *file, int line)
{
    fprintf(stderr, "ctxvars: %s (%s:%d)\n", what, file, line);
    abort();
}
#endif

/* ------------------------------------------------------------------
 * Spares: one freed block per kind per thread, for the objects made and
 * dropped most often (a context per copy_context or pool job, a token per
 * set with token).  Reusing a block skips malloc's and free's bookkeeping.
 * Only a thread whose teardown is registered keeps spares, since teardown
 * is what frees them (ctx__spare_drain).  Taking a spare still counts as an
 * allocation for fault injection.
 * ---------------------------------------------------------------- */
static _Thread_local void *spares[CTX__SPARE_KINDS] CTX__TLS_IE;

void *ctx__spare_take(enum ctx__spare_kind kind, size_t size)
{
    void *p = spares[kind];
    if (p == NULL)
        return ctx__malloc(size);
    if (CTX__UNLIKELY(fault_fires()))
        return NULL;
    spares[kind] = NULL;
    return p;
}

void ctx__spare_give(enum ctx__spare_kind kind, void *p)
{
    /* The block may come from another thread, whose release just handed
     * it over through the object's reference count. */
    CTX__CHAOS();
    if (spares[kind] == NULL && ctx__ts.registered)
        spares[kind] = p;
    else
        ctx__free(p);
}

void ctx__spare_drain(void)
{
    for (int i = 0; i < CTX__SPARE_KINDS; i++) {
        ctx__free(spares[i]);
        spares[i] = NULL;
    }
}

