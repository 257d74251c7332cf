/*
 * fuzz_ctx.c - the API fuzzer's context operations: copies, enter/exit,
 * nested runs, the mapping view, foreach and NULL arguments.  See
 * fuzz_api.c for the model and the decoder.
 */
#include "config.h"

#include "internal.h"

#include "fuzz_api.h"

#include <errno.h>
#include <string.h>

void fz_put_ctx(int slot, ctx_context_t *c, int cid)
{
    ctx_context_release(fz.ctx[slot]);
    fz.ctx[slot] = c;
    fz.cslot[slot] = cid;
}

/* ------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------- */

void fz_op_copy_current(void)
{
    int slot = fz_byte() % NCTX;
    if (fz.ncid == MAXCID)
        return;
    ctx_context_t *c = SENT;
    if (!fz_outcome(ctx_copy_context(&c), 0, "copy_context")) {
        CHECK(c == SENT, "copy_context touched *out on error");
        return;
    }
    fz_put_ctx(slot, c, fz_new_cid(fz_cur()));
}

void fz_op_ctx_copy(void)
{
    int src = fz_byte() % NCTX, dst = fz_byte() % NCTX;
    if (fz.ncid == MAXCID)
        return;
    ctx_context_t *c = SENT;
    if (fz.ctx[src] == NULL) {
        fz_outcome(ctx_context_copy(NULL, &c), EINVAL, "context_copy(NULL)");
        CHECK(c == SENT, "context_copy(NULL) touched *out");
        return;
    }
    if (!fz_outcome(ctx_context_copy(fz.ctx[src], &c), 0, "context_copy")) {
        CHECK(c == SENT, "context_copy touched *out on error");
        return;
    }
    fz_put_ctx(dst, c, fz_new_cid(&fz.m[fz.cslot[src]]));
}

void fz_op_ctx_new(void)
{
    int slot = fz_byte() % NCTX;
    if (fz.ncid == MAXCID)
        return;
    ctx_context_t *c = SENT;
    if (!fz_outcome(ctx_context_new(&c), 0, "context_new")) {
        CHECK(c == SENT, "context_new touched *out on error");
        return;
    }
    fz_put_ctx(slot, c, fz_new_cid(NULL));
}

void fz_op_ctx_release_or_dup(void)
{
    int a = fz_byte() % NCTX, b = fz_byte() % NCTX;
    if (a == b) {
        fz_put_ctx(a, NULL, -1);
        return;
    }
    ctx_context_t *c = ctx_context_retain(fz.ctx[a]);
    CHECK(c == fz.ctx[a], "context_retain");
    fz_put_ctx(b, c, fz.cslot[a]);
}

void fz_push(ctx_context_t *c, int cid)
{
    fz.stack[fz.depth].c = c;
    fz.stack[fz.depth].cid = cid;
    fz.depth++;
    fz.m[cid].entered = true;
}

static void pop(void)
{
    fz.depth--;
    fz.m[fz.stack[fz.depth].cid].entered = false;
}

void fz_op_enter(void)
{
    int slot = fz_byte() % NCTX;
    ctx_context_t *c = fz.ctx[slot];
    if (c == NULL) {
        fz_outcome(ctx_context_enter(NULL), EINVAL, "enter(NULL)");
        return;
    }
    if (fz.depth == MAXDEPTH)
        return;
    int cid = fz.cslot[slot];
    int want = fz.m[cid].entered ? EBUSY : 0;
    if (fz_outcome(ctx_context_enter(c), want, "enter")) {
        fz_push(c, cid);
        fz_switched();
    }
}

void fz_exit_top(void)
{
    fz_outcome(ctx_context_exit(fz.stack[fz.depth - 1].c), 0, "exit(top)");
    pop();
    fz_switched();
}

void fz_op_exit(void)
{
    uint8_t b = fz_byte();
    ctx_context_t *c = fz.ctx[b % NCTX];
    if (b & 0x80) { /* the innermost, even if no slot holds it any more */
        if (fz.depth > fz.frame_base)
            fz_exit_top();
        return;
    }
    if (c == NULL) {
        fz_outcome(ctx_context_exit(NULL), EINVAL, "exit(NULL)");
        return;
    }
    bool innermost = fz.cslot[b % NCTX] == fz_cur_cid();
    if (innermost && fz.depth <= fz.frame_base)
        return; /* belongs to an enclosing run or the root */
    if (fz_outcome(ctx_context_exit(c), innermost ? 0 : EPERM, "exit")) {
        pop();
        fz_switched();
    }
}

struct run_arg {
    ctx_context_t *c;
    int cid, nbody;
    bool called;
};

static void *run_body(void *arg)
{
    struct run_arg *a = arg;
    a->called = true;
    fz_push(a->c, a->cid);
    fz_switched();
    int saved_base = fz.frame_base;
    fz.frame_base = fz.depth;
    fz.runs++;
    for (int i = 0; i < a->nbody && fz.n > 0; i++)
        fz_run_op();
    fz_fiber_unwind_run(); /* suspend the fibers the body resumed */
    while (fz.depth > fz.frame_base) /* leave what the body entered */
        fz_exit_top();
    fz.runs--;
    fz.frame_base = saved_base;
    pop(); /* ctx_context_run() exits it once we return */
    return a;
}

void fz_op_run(void)
{
    int slot = fz_byte() % NCTX;
    uint8_t b = fz_byte();
    ctx_context_t *c = fz.ctx[slot];
    if (fz.runs == MAXRUN || fz.depth == MAXDEPTH)
        return;
    struct run_arg a = {c, c ? fz.cslot[slot] : -1, b % 8 + 1, false};
    void *res = SENT;
    int want = c == NULL ? EINVAL : fz.m[a.cid].entered ? EBUSY : 0;
    bool watched = fz_watching();
    int rc = ctx_context_run(c, run_body, &a, (b & 0x80) ? NULL : &res);
    if (fz_outcome(rc, want, "run")) {
        fz_run_ended(watched); /* the exit half */
        CHECK(a.called && (res == &a || (b & 0x80)), "run result");
    } else {
        CHECK(!a.called && res == SENT, "failed run called fn or set result");
    }
}

/* ------------------------------------------------------------------
 * The mapping view
 * ---------------------------------------------------------------- */

void fz_op_view(void)
{
    int slot = fz_byte() % NCTX, vs = fz_byte() % NVAR;
    ctx_context_t *c = fz.ctx[slot];
    int want = c ? fz.m[fz.cslot[slot]].val[fz.vslot[vs]] : ABSENT;
    void *out = SENT;
    int rc = ctx_context_get(c, fz.var[vs], &out);
    if (c == NULL)
        fz_outcome(rc, EINVAL, "context_get(NULL)");
    else if (want == ABSENT)
        fz_outcome(rc, ENOENT, "context_get");
    else
        fz_outcome(rc, 0, "context_get");
    CHECK(out == (rc == 0 ? VAL(want) : SENT), "context_get value");
    CHECK(ctx_context_contains(c, fz.var[vs]) == (want != ABSENT), "contains");
    size_t len = 0;
    for (int i = 0; c && i < fz.nvid; i++)
        len += fz.m[fz.cslot[slot]].val[i] != ABSENT;
    CHECK(ctx_context_len(c) == len, "len %zu, model %zu",
          ctx_context_len(c), len);
}

struct walk {
    const int16_t *snap; /* the model of the walked context, before */
    bool seen[MAXVID];
    int count, stop_at, set_slot;
};

static int vid_of(const ctx_var_t *v)
{
    /* Newest first: a freed variable's address may have been reused. */
    for (int i = fz.nvid - 1; i >= 0; i--)
        if (fz.vptr[i] == v)
            return i;
    return -1;
}

static int walk_fn(ctx_var_t *var, void *value, void *arg)
{
    struct walk *w = arg;
    int vid = vid_of(var);
    CHECK(vid >= 0 && !w->seen[vid], "foreach: unknown or repeated var");
    w->seen[vid] = true;
    CHECK(w->snap[vid] != ABSENT && value == VAL(w->snap[vid]),
          "foreach: v%d=%p, model %d", vid, value, w->snap[vid]);
    if (w->set_slot >= 0) { /* fn may use the library, ctx included */
        int rc = ctx_var_set(fz.var[w->set_slot], VAL(w->count % NVAL), NULL);
        if (fz_outcome(rc, 0, "set in foreach"))
            fz_cur()->val[fz.vslot[w->set_slot]] = (int16_t)(w->count % NVAL);
    }
    return ++w->count == w->stop_at ? 7 : 0;
}

static void walk_check(ctx_context_t *c, const mctx_t *m, uint8_t b)
{
    int16_t snap[MAXVID];
    memcpy(snap, m->val, sizeof snap);
    struct walk w = {.snap = snap,
                     .stop_at = b & 7,
                     .set_slot = (b & 8) ? (b >> 4) % NVAR : -1};
    int len = 0;
    for (int i = 0; i < fz.nvid; i++)
        len += snap[i] != ABSENT;
    int want = w.stop_at > 0 && w.stop_at <= len ? 7 : 0;
    if (!fz_outcome(ctx_context_foreach(c, walk_fn, &w), want, "foreach"))
        return;
    if (want == 0)
        CHECK(w.count == len, "foreach visited %d of %d", w.count, len);
}

void fz_op_foreach(void)
{
    int slot = fz_byte() % NCTX;
    uint8_t b = fz_byte();
    if (fz.ctx[slot] == NULL) {
        fz_outcome(ctx_context_foreach(NULL, walk_fn, NULL), EINVAL,
                "foreach(NULL)");
        return;
    }
    walk_check(fz.ctx[slot], &fz.m[fz.cslot[slot]], b);
}

/* The whole current context, through a fresh copy of it. */
void fz_op_check_current(void)
{
    ctx_context_t *c = NULL;
    if (!fz_outcome(ctx_copy_context(&c), 0, "copy_context"))
        return;
    mctx_t m = *fz_cur();
    walk_check(c, &m, 0);
    ctx_context_release(c);
}

/* ------------------------------------------------------------------
 * NULL arguments and injected failures
 * ---------------------------------------------------------------- */

static int never(ctx_var_t *v, void *value, void *arg)
{
    (void)v, (void)value, (void)arg;
    FAIL("foreach called fn on a NULL context");
}

#define REFUSED(call) fz_outcome((call), EINVAL, #call)

void fz_op_nulls(void)
{
    ctx_var_t *v = fz.var[0];
    ctx_context_t *c = fz.ctx[0] ? fz.ctx[0] : fz.stack[0].c;
    void *val = SENT;
    switch (fz_byte() % 6) {
    case 0:
        REFUSED(ctx_var_set(NULL, VAL(1), NULL));
        REFUSED(ctx_var_set(v, CTX_MISSING, NULL));
        REFUSED(ctx_var_reset(NULL, fz.tok[0].t));
        break;
    case 1:
        REFUSED(ctx_var_get(NULL, &val));
        REFUSED(ctx_var_get(v, NULL));
        CHECK(ctx_var_get_or(NULL, VAL(3)) == VAL(3), "get_or(NULL)");
        break;
    case 2:
        REFUSED(ctx_context_new(NULL));
        REFUSED(ctx_copy_context(NULL));
        REFUSED(ctx_context_copy(c, NULL));
        break;
    case 3:
        REFUSED(ctx_context_run(c, NULL, NULL, NULL));
        REFUSED(ctx_context_get(c, NULL, &val));
        REFUSED(ctx_context_get(c, v, NULL));
        break;
    case 4:
        CHECK(!ctx_context_contains(NULL, v), "contains(NULL, v)");
        CHECK(!ctx_context_contains(c, NULL), "contains(c, NULL)");
        CHECK(ctx_context_len(NULL) == 0, "len(NULL)");
        REFUSED(ctx_context_foreach(c, NULL, NULL));
        REFUSED(ctx_context_foreach(NULL, never, NULL));
        break;
    default:
        CHECK(ctx_var_retain(NULL) == NULL, "var_retain(NULL)");
        CHECK(ctx_context_retain(NULL) == NULL, "context_retain(NULL)");
        ctx_var_release(NULL);
        ctx_context_release(NULL);
        ctx_token_release(NULL);
        break;
    }
    CHECK(val == SENT, "a refused call wrote its out-pointer");
}
