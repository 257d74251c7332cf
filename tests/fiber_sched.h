/*
 * fiber_sched.h - stackful coroutines on ucontext for the fiber tests and
 * the differential test's interpreter (tests/diff/interp_fiber.c).
 *
 * The library switches no stacks; these helpers do, the way a user's
 * scheduler would: a coroutine (tco_t) owns a malloc'd stack and a
 * ucontext, the scheduler side switches in with tco_switch_in() and the
 * coroutine switches back with tco_yield().  The scheduler's own ucontext
 * lives on the scheduler's stack for one switch only, so a coroutine can
 * be switched in by one thread, yield, and be switched in next by
 * another: that is the migration the fiber API must survive.
 *
 * Sanitizers and valgrind must be told about every stack switch or they
 * report nonsense (ASan: false stack-buffer overflows and leaked fake
 * frames; TSan: races between a coroutine and itself; valgrind: "client
 * switching stacks?").  The annotations are compiled in only when the
 * tool is there.  The example (examples/fibers.c) has its own copy on
 * purpose: it is user code and shows users how.
 */
#ifndef CTXVARS_FIBER_SCHED_H
#define CTXVARS_FIBER_SCHED_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TCO_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define TCO_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TCO_ASAN)
#define TCO_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TCO_TSAN)
#define TCO_TSAN 1
#endif

#ifdef TCO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef TCO_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if defined(HAVE_VALGRIND) || __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TCO_VALGRIND 1
#endif

#ifndef TCO_STACK /* a user may need more: define it first */
#define TCO_STACK (64 * 1024)
#endif

typedef struct tco tco_t;
typedef void (*tco_fn)(tco_t *co, void *arg);

struct tco {
    ucontext_t uc;
    ucontext_t *back;   /* the scheduler switched in from here, this time */
    char *stack;
    tco_fn fn;
    void *arg;
    bool done;          /* fn returned: never switch in again */
    void *user;         /* for the test */
#ifdef TCO_ASAN
    void *fake_co;      /* ASan's fake stack of the coroutine, parked */
    void *fake_sched;   /* ... and of the scheduler, during a run */
    const void *sched_bottom;
    size_t sched_size;
#endif
#ifdef TCO_TSAN
    void *tsan_co;
    void *tsan_sched;
#endif
#ifdef TCO_VALGRIND
    unsigned vg_id;
#endif
};

static void tco_entry(unsigned hi, unsigned lo)
{
    tco_t *co = (tco_t *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
#ifdef TCO_ASAN
    __sanitizer_finish_switch_fiber(NULL, &co->sched_bottom, &co->sched_size);
#endif
    co->fn(co, co->arg);
    co->done = true;
#ifdef TCO_ASAN
    /* NULL: this stack is finished, ASan may drop its fake frames. */
    __sanitizer_start_switch_fiber(NULL, co->sched_bottom, co->sched_size);
#endif
#ifdef TCO_TSAN
    __tsan_switch_to_fiber(co->tsan_sched, 0);
#endif
    setcontext(co->back);
    abort(); /* not reached */
}

/* A coroutine that will run fn(co, arg) when first switched in. */
static __attribute__((unused)) tco_t *tco_new(tco_fn fn, void *arg)
{
    tco_t *co = calloc(1, sizeof *co);
    if (co == NULL || (co->stack = malloc(TCO_STACK)) == NULL)
        abort();
    co->fn = fn;
    co->arg = arg;
    if (getcontext(&co->uc) != 0)
        abort();
    co->uc.uc_stack.ss_sp = co->stack;
    co->uc.uc_stack.ss_size = TCO_STACK;
    co->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)co;
    makecontext(&co->uc, (void (*)(void))tco_entry, 2,
                (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
#ifdef TCO_TSAN
    co->tsan_co = __tsan_create_fiber(0);
#endif
#ifdef TCO_VALGRIND
    co->vg_id = VALGRIND_STACK_REGISTER(co->stack, co->stack + TCO_STACK);
#endif
    return co;
}

static __attribute__((unused)) void tco_free(tco_t *co)
{
    if (co == NULL)
        return;
#ifdef TCO_TSAN
    __tsan_destroy_fiber(co->tsan_co);
#endif
#ifdef TCO_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->vg_id);
#endif
    free(co->stack);
    free(co);
}

/* Runs the coroutine on the calling thread until it yields or finishes.
 * Kept out of line: the ucontext it saves must be this call's own. */
static __attribute__((noinline, unused)) void tco_switch_in(tco_t *co)
{
    ucontext_t here;
    co->back = &here;
#ifdef TCO_TSAN
    co->tsan_sched = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(co->tsan_co, 0);
#endif
#ifdef TCO_ASAN
    __sanitizer_start_switch_fiber(&co->fake_sched, co->stack, TCO_STACK);
#endif
    if (swapcontext(&here, &co->uc) != 0)
        abort();
#ifdef TCO_ASAN
    __sanitizer_finish_switch_fiber(co->fake_sched, NULL, NULL);
#endif
}

/* From inside the coroutine: back to whoever switched it in.  Returns
 * when some scheduler, maybe on another thread, switches it in again. */
static __attribute__((noinline, unused)) void tco_yield(tco_t *co)
{
#ifdef TCO_ASAN
    __sanitizer_start_switch_fiber(&co->fake_co, co->sched_bottom,
                                   co->sched_size);
#endif
#ifdef TCO_TSAN
    __tsan_switch_to_fiber(co->tsan_sched, 0);
#endif
    if (swapcontext(&co->uc, co->back) != 0)
        abort();
#ifdef TCO_ASAN
    __sanitizer_finish_switch_fiber(co->fake_co, &co->sched_bottom,
                                    &co->sched_size);
#endif
}

#endif /* CTXVARS_FIBER_SCHED_H */
