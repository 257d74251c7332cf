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
 * The stack switching, and what sanitizers and valgrind must be told of
 * it, is the fiber suite's (tests/fiber_sched.h), with a larger stack:
 * blocks nest 4 deep and each level is a few frames (ctx_context_run,
 * printf), and ASan's frames are several times larger than plain ones.
 */
#include "config.h"

#include "interp.h"

#include <stdio.h>
#include <stdlib.h>

#define TCO_STACK (512 * 1024)
#include "../fiber_sched.h"

struct fib {
    ctx_fiber_t *f;
    int from, to;     /* the body */
    struct agent self;
    tco_t *co;        /* its stack; co->done once the body has ended */
};

static void fiber_body(tco_t *co, void *arg)
{
    (void)co;
    struct fib *fb = arg;
    exec_block(fb->from, fb->to, &fb->self);
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
    fb->co = tco_new(fiber_body, fb);
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
    if (fb->co->done) {
        out(s, "DONE");
        return;
    }
    int rc = ctx_fiber_resume(fb->f);
    out(s, "%s", errname(rc));
    if (rc != 0)
        return;
    tco_switch_in(fb->co); /* until it yields or ends */
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
    tco_yield(self->fib->co);
}

void do_release(const struct stmt *s)
{
    struct fib *fb = pr.fib[s->arg[0]];
    if (fb == NULL) {
        out(s, "EMPTY");
        return;
    }
    /* gen.py resumes every fiber to its end first; ref.py asserts that. */
    out(s, fb->co->done ? NULL : "UNFINISHED");
    ctx_fiber_release(fb->f);
    tco_free(fb->co);
    free(fb);
    pr.fib[s->arg[0]] = NULL;
}

void check_fibers_released(void)
{
    for (int i = 0; i < MAXID; i++)
        if (pr.fib[i] != NULL)
            die("a fiber was never released", __LINE__);
}
