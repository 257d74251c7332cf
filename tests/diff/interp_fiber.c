/*
 * interp_fiber.c - the fiber statements of gen.py's language: fiber,
 * resume, yield and release, on ctx_fiber_* and ucontext stacks.
 *
 * A resume runs the fiber on the resumer's own OS thread, which is the
 * main thread, a program thread or a pool worker: whichever resumes it
 * next, so a fiber that yields inside `run cJ` or `enter cJ` finishes that
 * block on another thread than the one it started it on.  That is the
 * point of the test: the library must follow the fiber, not the thread.
 * The resumer waits in swapcontext() until the fiber yields or ends, so
 * still only one program agent runs at any time.
 *
 * Sanitizers cannot see a stack switch by themselves: under ASan each
 * switch is announced with __sanitizer_start_switch_fiber() and confirmed
 * on the other side with __sanitizer_finish_switch_fiber(); under TSan
 * each fiber has a TSan fiber of its own, switched to before swapcontext
 * (which also orders the two sides, as the switch does).
 */
#include "config.h"

#include "interp.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#define INTERP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INTERP_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define INTERP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define INTERP_TSAN 1
#endif
#endif
#ifdef INTERP_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef INTERP_TSAN
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define INTERP_VALGRIND 1
#endif
#endif

/* Blocks nest 4 deep and each level is a few frames (ctx_context_run,
 * printf); ASan's frames are several times larger than plain ones. */
#define STACK_SIZE (512u * 1024u)
#define GUARD_SIZE (16u * 1024u) /* below the stack: overflow faults */

struct fib {
    ctx_fiber_t *f;
    int from, to;     /* the body */
    bool done;        /* the body has ended: resume prints DONE */
    struct agent self;
    ucontext_t uc;    /* the fiber's own, saved at each yield */
    ucontext_t back;  /* the resumer's, saved at each resume */
    char *map;        /* guard page(s), then the stack */
#ifdef INTERP_ASAN
    void *fake;               /* the fiber's fake stack while it is out */
    const void *back_bottom;  /* the resumer's stack, to switch back to */
    size_t back_size;
#endif
#ifdef INTERP_TSAN
    void *tsan, *tsan_back;
#endif
#ifdef INTERP_VALGRIND
    unsigned vg_stack;
#endif
};

/* The fiber being started: makecontext passes only ints.  Only the one
 * running agent writes it, just before the switch that reads it. */
static struct fib *starting;

/* From the fiber back to its resumer; dying: this is its last switch. */
static void switch_back(struct fib *fb, bool dying)
{
#ifdef INTERP_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &fb->fake, fb->back_bottom,
                                   fb->back_size);
#else
    (void)dying;
#endif
#ifdef INTERP_TSAN
    __tsan_switch_to_fiber(fb->tsan_back, 0);
#endif
    if (swapcontext(&fb->uc, &fb->back) != 0)
        die("swapcontext to the resumer failed", __LINE__);
    /* Resumed: possibly on another thread, which is all the same here. */
#ifdef INTERP_ASAN
    __sanitizer_finish_switch_fiber(fb->fake, &fb->back_bottom,
                                    &fb->back_size);
#endif
}

static void fiber_main(void)
{
    struct fib *fb = starting;
#ifdef INTERP_ASAN
    __sanitizer_finish_switch_fiber(NULL, &fb->back_bottom, &fb->back_size);
#endif
    exec_block(fb->from, fb->to, &fb->self);
    fb->done = true;
    switch_back(fb, true);
    die("an ended fiber was resumed", __LINE__);
}

int do_fiber(int i)
{
    const struct stmt *s = &pr.s[i];
    struct fib *fb = xcalloc(sizeof *fb);
    fb->from = i + 1;
    fb->to = s->close;
    fb->self.fib = fb;
    if (pr.fib[s->arg[0]] != NULL)
        die("a fiber declared twice", __LINE__); /* gen.py never does */
    out(s, NULL);
    if (ctx_fiber_create(&fb->f, NULL) != 0)
        die("ctx_fiber_create failed", __LINE__);
    fb->map = mmap(NULL, GUARD_SIZE + STACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (fb->map == MAP_FAILED || mprotect(fb->map, GUARD_SIZE, PROT_NONE) != 0)
        die("cannot map a fiber stack", __LINE__);
    if (getcontext(&fb->uc) != 0)
        die("getcontext failed", __LINE__);
    fb->uc.uc_stack.ss_sp = fb->map + GUARD_SIZE;
    fb->uc.uc_stack.ss_size = STACK_SIZE;
    fb->uc.uc_link = NULL; /* fiber_main never returns */
    makecontext(&fb->uc, fiber_main, 0);
#ifdef INTERP_TSAN
    fb->tsan = __tsan_create_fiber(0);
#endif
#ifdef INTERP_VALGRIND
    fb->vg_stack = VALGRIND_STACK_REGISTER(fb->map + GUARD_SIZE,
                                           fb->map + GUARD_SIZE + STACK_SIZE);
#endif
    pr.fib[s->arg[0]] = fb;
    return s->close + 1;
}

void do_resume(const struct stmt *s)
{
    struct fib *fb = pr.fib[s->arg[0]];
    if (fb == NULL) {
        out(s, "EMPTY");
        return;
    }
    if (fb->done) {
        out(s, "DONE");
        return;
    }
    int rc = ctx_fiber_resume(fb->f);
    out(s, "%s", errname(rc));
    if (rc != 0)
        return;
    starting = fb;
#ifdef INTERP_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, fb->map + GUARD_SIZE, STACK_SIZE);
#endif
#ifdef INTERP_TSAN
    fb->tsan_back = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(fb->tsan, 0);
#endif
    if (swapcontext(&fb->back, &fb->uc) != 0)
        die("swapcontext to a fiber failed", __LINE__);
#ifdef INTERP_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    /* ref.py cannot fail here: any error is the library's. */
    rc = ctx_fiber_suspend(fb->f);
    if (rc != 0) {
        fprintf(stderr, "interp: ctx_fiber_suspend: %s\n", errname(rc));
        die("suspend after a yield failed", __LINE__);
    }
}

void do_yield(const struct stmt *s, struct agent *self)
{
    out(s, NULL);
    if (self == NULL || self->fib == NULL)
        die("yield outside a fiber", __LINE__);
    switch_back(self->fib, false);
}

void do_release(const struct stmt *s)
{
    struct fib *fb = pr.fib[s->arg[0]];
    if (fb == NULL) {
        out(s, "EMPTY");
        return;
    }
    /* gen.py resumes every fiber to its end first; ref.py asserts that. */
    out(s, fb->done ? NULL : "UNFINISHED");
    ctx_fiber_release(fb->f);
#ifdef INTERP_TSAN
    __tsan_destroy_fiber(fb->tsan);
#endif
#ifdef INTERP_VALGRIND
    VALGRIND_STACK_DEREGISTER(fb->vg_stack);
#endif
    if (munmap(fb->map, GUARD_SIZE + STACK_SIZE) != 0)
        die("munmap failed", __LINE__);
    free(fb);
    pr.fib[s->arg[0]] = NULL;
}

void check_fibers_released(void)
{
    for (int i = 0; i < MAXID; i++)
        if (pr.fib[i] != NULL)
            die("a fiber was never released", __LINE__);
}
