/*
 * fuzz_fiber.c - the API fuzzer's fiber operations: create (copying the
 * current context, or in a slot's context; under injected allocation
 * failure too), resume, suspend, release, and the fiber's context, all on
 * one thread and without switching stacks.  See fuzz_api.c for the model.
 *
 * The model.  A resumed fiber pushes its own context and then the
 * contexts it held onto the model's stack, and makes its own context the
 * frame base, so that exits stop there as ctx_context_exit() does.  A
 * suspend takes everything above the fiber's context back as held (still
 * entered) and pops its context.  A fiber may be suspended only at the run
 * nesting it was resumed at (a suspend from inside a ctx_context_run()
 * body entered in the fiber is what a coroutine yielding there does, and
 * makes sense only with a stack switch); the runs' epilogue and the
 * teardown suspend what was resumed inside them, innermost first.
 */
#include "config.h"

#include "internal.h"

#include "fuzz_api.h"

#include <errno.h>
#include <string.h>

static void held_exit_all(struct fz_fiber *m)
{
    /* ctx_fiber_release() exits them, innermost first. */
    while (m->nheld > 0)
        fz.m[m->held[--m->nheld].cid].entered = false;
}

/* The library frees a fiber at its release, or at the suspend after it. */
static void model_drop(struct fz_fiber *m)
{
    held_exit_all(m);
    m->f = NULL;
}

static void slot_release(int slot)
{
    int id = fz.fslot[slot];
    fz.fslot[slot] = -1;
    if (id < 0)
        return;
    struct fz_fiber *m = &fz.fib[id];
    ctx_fiber_release(m->f);
    m->released = true;
    if (!m->resumed)
        model_drop(m);
}

static struct fz_fiber *slot_fiber(int slot)
{
    int id = fz.fslot[slot];
    return id < 0 ? NULL : &fz.fib[id];
}

static void op_create(bool fault)
{
    int slot = fz_byte() % NFIB;
    uint8_t b = fz_byte();
    bool given = b & 1;
    if (fz.nfib == MAXFIB || fz.ncid == MAXCID)
        return;
    ctx_context_t *in = given ? fz.ctx[(b >> 1) % NCTX] : NULL;
    int cid = given ? fz.cslot[(b >> 1) % NCTX] : -1;
    if (given && in == NULL)
        return; /* NULL would mean "copy" */
    ctx_fiber_t *f = SENT;
    if (fault) {
        ctx__fault_fail_after((b >> 4) & 3);
        fz.mayfail = true;
    }
    int rc = ctx_fiber_create(&f, in);
    ctx__fault_fail_after(-1);
    bool ok = fz_outcome(rc, 0, "fiber_create");
    fz.mayfail = false;
    if (!ok) {
        CHECK(f == SENT, "fiber_create touched *out on error");
        return;
    }
    ctx_context_t *fc = ctx_fiber_context(f);
    CHECK(given ? fc == in : fc != NULL, "fiber_context");
    if (!given)
        cid = fz_new_cid(fz_cur());
    slot_release(slot);
    struct fz_fiber *m = &fz.fib[fz.nfib];
    memset(m, 0, sizeof *m);
    m->f = f;
    m->c = fc;
    m->cid = cid;
    fz.fslot[slot] = fz.nfib++;
}

static void resume(struct fz_fiber *m)
{
    m->resumed = true;
    m->saved_base = fz.frame_base;
    m->at = fz.depth;
    m->runs_at = fz.runs;
    fz_push(m->c, m->cid);
    fz.frame_base = fz.depth;
    for (int i = 0; i < m->nheld; i++)
        fz_push(m->held[i].c, m->held[i].cid);
    m->nheld = 0;
    fz.rstack[fz.nres++] = (int)(m - fz.fib);
}

static void op_resume(void)
{
    struct fz_fiber *m = slot_fiber(fz_byte() % NFIB);
    if (m == NULL) {
        fz_outcome(ctx_fiber_resume(NULL), EINVAL, "fiber_resume(NULL)");
        return;
    }
    if (fz.depth + 1 + m->nheld > MAXDEPTH || fz.nres == MAXFIB)
        return;
    int want = fz.m[m->cid].entered ? EBUSY : 0;
    int cur = fz_cur_cid();
    if (fz_outcome(ctx_fiber_resume(m->f), want, "fiber_resume")) {
        resume(m);
        fz_switched();
    } else
        CHECK(fz_cur_cid() == cur, "failed resume changed the stack");
}

/* Suspends the innermost resumed fiber (the model's side only after the
 * call succeeded). */
static void suspend_top(void)
{
    struct fz_fiber *m = &fz.fib[fz.rstack[fz.nres - 1]];
    fz_outcome(ctx_fiber_suspend(m->f), 0, "fiber_suspend");
    m->nheld = 0;
    for (int i = m->at + 1; i < fz.depth; i++) {
        m->held[m->nheld].c = fz.stack[i].c;
        m->held[m->nheld].cid = fz.stack[i].cid;
        m->nheld++;
    }
    fz.depth = m->at;
    fz.m[m->cid].entered = false;
    fz.frame_base = m->saved_base;
    m->resumed = false;
    fz.nres--;
    fz_switched();
    if (m->released)
        model_drop(m);
}

static void op_suspend(void)
{
    uint8_t b = fz_byte();
    if (b & 0x80) { /* the innermost, even if released */
        if (fz.nres > 0 && fz.fib[fz.rstack[fz.nres - 1]].runs_at == fz.runs)
            suspend_top();
        return;
    }
    struct fz_fiber *m = slot_fiber(b % NFIB);
    if (m == NULL) {
        fz_outcome(ctx_fiber_suspend(NULL), EINVAL, "fiber_suspend(NULL)");
        return;
    }
    bool top = fz.nres > 0 && &fz.fib[fz.rstack[fz.nres - 1]] == m;
    if (!top) {
        fz_outcome(ctx_fiber_suspend(m->f), EPERM, "fiber_suspend");
        return;
    }
    if (m->runs_at == fz.runs)
        suspend_top();
}

/* Inside the innermost fiber: its own context is the floor. */
static void op_exit_own(void)
{
    if (fz.nres == 0)
        return;
    struct fz_fiber *m = &fz.fib[fz.rstack[fz.nres - 1]];
    fz_outcome(ctx_context_exit(m->c), EPERM, "exit(fiber's context)");
    CHECK(fz.stack[m->at].c == m->c, "model: fiber context not at its place");
}

void fz_op_fiber(void)
{
    switch (fz_byte() % 8) {
    case 0: op_create(false); break;
    case 1: op_create(true); break;
    case 2: case 3: op_resume(); break;
    case 4: case 5: op_suspend(); break;
    case 6: slot_release(fz_byte() % NFIB); break;
    default: op_exit_own(); break;
    }
}

void fz_fiber_unwind_run(void)
{
    while (fz.nres > 0 && fz.fib[fz.rstack[fz.nres - 1]].runs_at == fz.runs)
        suspend_top();
}

void fz_fiber_teardown(void)
{
    fz_fiber_unwind_run();
    for (int i = 0; i < NFIB; i++)
        slot_release(i);
    CHECK(fz.nres == 0, "model: fibers left resumed");
}

void fz_fiber_setup(void)
{
    for (int i = 0; i < NFIB; i++)
        fz.fslot[i] = -1;
}
