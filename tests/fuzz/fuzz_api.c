/*
 * fuzz_api.c - model-checking fuzzer for the single-thread API.
 *
 * Every input decodes (any byte string is valid) into a sequence of calls
 * over a few variables, contexts and tokens: set with and without token,
 * get, get_or, reset with good and bad tokens, copies, new contexts,
 * nested runs (of entered contexts too: EBUSY), enter/exit (wrong order:
 * EPERM), the mapping view, foreach (stopping early, setting variables from
 * the callback), releases, NULL arguments, and injected allocation
 * failures (ENOMEM must leave everything unchanged), and fibers
 * (create, resume, suspend, release; fuzz_fiber.c).  Some variables get
 * forced hashes so that they share trie paths and collision nodes.  A plain
 * reference model (one array per context, indexed by variable) predicts the
 * result and value of every call; any difference aborts with a message.
 * Variables with value ops count retains and releases per value, and every
 * count must be back to zero when the input's objects are gone.
 *
 * A long libFuzzer session, in a build dir (best configured with
 * --enable-debug, so the library also checks its objects' magic numbers):
 *
 *   make fuzz            # or: sh SRCDIR/tests/fuzz/build-libfuzzer.sh OUT
 *   mkdir -p corpus
 *   tests/fuzz/fuzz_api_libfuzzer -max_total_time=3600 -max_len=512 corpus
 *   tests/fuzz/fuzz_api_libfuzzer crash-<sha1>       # replay a crash
 *
 * (add -jobs=2 -workers=2 to use two cores).  The standalone driver (this
 * file and fuzz_ctx.c with standalone.c and -DCTX_FUZZ_STANDALONE, run by
 * `make check`) feeds pseudo-random inputs instead, or replays files:
 *
 *   tests/fuzz/fuzz_api [N [SEED]]       (or env CTX_FUZZ_INPUTS, _SEED)
 *   tests/fuzz/fuzz_api crash-<sha1>...
 */
#include "config.h"

#include "internal.h"

#include "fuzz_api.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

const char fz_sentinel;
struct fz_state fz;
unsigned long long fz_calls;

unsigned long long fuzz_calls_checked(void)
{
    return fz_calls;
}

/* Net retains per value, for variables created with counting ops. */
static long holds[NVAL];

static void count_retain(void *v)
{
    uintptr_t i = (uintptr_t)v;
    if (i >= NVAL)
        FAIL("retain of a foreign value %p", v);
    holds[i]++;
}

static void count_release(void *v)
{
    uintptr_t i = (uintptr_t)v;
    if (i >= NVAL || holds[i] <= 0)
        FAIL("release of value %p, never retained", v);
    holds[i]--;
}

static const ctx_value_ops_t counting_ops = {count_retain, count_release};

uint8_t fz_byte(void)
{
    if (fz.n == 0)
        return 0;
    fz.n--;
    return *fz.p++;
}

/* Checks a result; true when the call took effect.  Under an injected
 * failure, ENOMEM is also right for a call that should have succeeded. */
bool fz_outcome(int got, int want, const char *what)
{
    fz_calls++;
    if (fz.mayfail && got == ENOMEM && want == 0)
        return false;
    if (got != want)
        FAIL("%s returned %d, model says %d", what, got, want);
    return got == 0;
}

mctx_t *fz_cur(void) { return &fz.m[fz.stack[fz.depth - 1].cid]; }
int fz_cur_cid(void) { return fz.stack[fz.depth - 1].cid; }
void *fz_valp(int v) { return v == ABSENT ? CTX_MISSING : VAL(v); }

int fz_new_cid(const mctx_t *from)
{
    mctx_t *m = &fz.m[fz.ncid];
    if (from != NULL)
        memcpy(m->val, from->val, sizeof m->val);
    else
        memset(m->val, 0xff, sizeof m->val); /* all ABSENT */
    m->entered = false;
    return fz.ncid++;
}

static void drop_tok(int slot)
{
    ctx_token_release(fz.tok[slot].t);
    fz.tok[slot].t = NULL;
}

/* Spreads 7 bits over the trie levels, so equal bytes collide fully and
 * near bytes share a long path prefix. */
static uint32_t forced_hash(uint8_t b)
{
    static const uint8_t pos[7] = {0, 5, 10, 15, 20, 25, 30};
    uint32_t h = 0;
    for (int i = 0; i < 7; i++)
        if (b & (1u << i))
            h |= 1u << pos[i];
    return h;
}

static void new_var(int slot, int hash_mode, uint8_t hb, int def, bool ops)
{
    if (fz.nvid == MAXVID)
        return;
    char name[16];
    snprintf(name, sizeof name, "v%d", fz.nvid);
    ctx_var_t *v = SENT;
    const ctx_value_ops_t *vops = ops ? &counting_ops : NULL;
    if (!fz_outcome(ctx_var_create(&v, name, fz_valp(def), vops), 0,
                    "var_create")) {
        CHECK(v == SENT, "var_create set *out on error");
        return;
    }
    CHECK(strcmp(ctx_var_name(v), name) == 0, "var_name");
    if (hash_mode)
        ctx__var_set_hash(v, forced_hash(hb));
    ctx_var_release(fz.var[slot]);
    fz.var[slot] = v;
    fz.vslot[slot] = fz.nvid;
    fz.vptr[fz.nvid] = v;
    fz.vdef[fz.nvid] = (int16_t)def;
    fz.nvid++;
}

static void op_newvar(void)
{
    int slot = fz_byte() % NVAR;
    uint8_t hb = fz_byte(), db = fz_byte();
    int def = db % (NVAL + 1);
    new_var(slot, hb & 0x80, hb, def == NVAL ? ABSENT : def, db & 0x80);
}

/* ------------------------------------------------------------------
 * Variables
 * ---------------------------------------------------------------- */

static void op_set(bool with_token)
{
    int vs = fz_byte() % NVAR, val = fz_byte() % NVAL;
    int ts = with_token ? fz_byte() % NTOK : -1;
    int vid = fz.vslot[vs];
    ctx_token_t *t = SENT;
    int rc = ctx_var_set(fz.var[vs], VAL(val), ts >= 0 ? &t : NULL);
    if (!fz_outcome(rc, 0, "set")) {
        CHECK(t == SENT, "set touched *token on error");
        return;
    }
    if (ts >= 0) {
        drop_tok(ts);
        fz.tok[ts] = (mtok_t){t, fz.var[vs], vid, fz_cur_cid(),
                             fz_cur()->val[vid], false};
    }
    fz_cur()->val[vid] = (int16_t)val;
}

static void op_get(void)
{
    int vs = fz_byte() % NVAR;
    int vid = fz.vslot[vs];
    int want = fz_cur()->val[vid];
    if (want == ABSENT)
        want = fz.vdef[vid];
    void *out = SENT;
    int rc = ctx_var_get(fz.var[vs], &out);
    if (want == ABSENT) {
        fz_outcome(rc, ENOENT, "get");
        CHECK(out == SENT, "get touched *value on ENOENT");
    } else {
        fz_outcome(rc, 0, "get");
        CHECK(out == VAL(want), "get gave %p, model %d", out, want);
    }
}

static void op_get_or(void)
{
    int vs = fz_byte() % NVAR, fb = fz_byte() % NVAL;
    int want = fz_cur()->val[fz.vslot[vs]];
    void *got = ctx_var_get_or(fz.var[vs], VAL(fb));
    CHECK(got == VAL(want == ABSENT ? fb : want),
          "get_or gave %p, model %d (fallback %d)", got, want, fb);
}

static void op_reset(void)
{
    int vs = fz_byte() % NVAR, ts = fz_byte() % NTOK;
    mtok_t *k = &fz.tok[ts];
    int vid = fz.vslot[vs];
    if (k->t == NULL) {
        fz_outcome(ctx_var_reset(fz.var[vs], NULL), EINVAL, "reset(NULL)");
        return;
    }
    int want = k->used         ? EALREADY
               : k->vid != vid ? EINVAL
               : k->cid != fz_cur_cid() ? EINVAL
                                     : 0;
    if (fz_outcome(ctx_var_reset(fz.var[vs], k->t), want, "reset")) {
        fz_cur()->val[vid] = k->old;
        k->used = true;
    }
}

static void op_tok_query(void)
{
    mtok_t *k = &fz.tok[fz_byte() % NTOK];
    if (fz_byte() & 1) {
        drop_tok((int)(k - fz.tok));
        return;
    }
    CHECK(ctx_token_var(k->t) == (k->t ? k->var : NULL), "token_var");
    CHECK(ctx_token_old_value(k->t) == (k->t ? fz_valp(k->old) : CTX_MISSING),
          "token_old_value");
    CHECK(ctx_token_used(k->t) == (k->t && k->used), "token_used");
}

/* Makes the k-th allocation of one mutating call fail: the call must then
 * return ENOMEM and leave everything (as later checks see it) unchanged. */
static void op_fault(void)
{
    uint8_t b = fz_byte();
    ctx__fault_fail_after(b & 7);
    fz.mayfail = true;
    switch ((b >> 3) % 9) {
    case 0: op_set(false); break;
    case 1: op_set(true); break;
    case 2: op_reset(); break;
    case 3: fz_op_copy_current(); break;
    case 4: fz_op_ctx_copy(); break;
    case 5: fz_op_ctx_new(); break;
    case 6: op_newvar(); break;
    case 7: fz_op_enter(); break;
    default: fz_op_foreach(); break;
    }
    fz.mayfail = false;
    ctx__fault_fail_after(-1);
}

void fz_run_op(void)
{
    switch (fz_byte() % 27) {
    case 0: case 1: case 2: op_set(false); break;
    case 3: case 4: case 5: op_set(true); break;
    case 6: case 7: op_get(); break;
    case 8: op_get_or(); break;
    case 9: case 10: op_reset(); break;
    case 11: op_tok_query(); break;
    case 12: fz_op_copy_current(); break;
    case 13: fz_op_ctx_copy(); break;
    case 14: fz_op_ctx_new(); break;
    case 15: fz_op_ctx_release_or_dup(); break;
    case 16: fz_op_enter(); break;
    case 17: fz_op_exit(); break;
    case 18: fz_op_run(); break;
    case 19: fz_op_view(); break;
    case 20: fz_op_foreach(); break;
    case 21: op_newvar(); break;
    case 22: fz_op_nulls(); break;
    case 23: case 24: fz_op_fiber(); break;
    case 25: fz_op_watch(); break;
    default: fz_byte() & 1 ? op_fault() : fz_op_check_current(); break;
    }
}

/* ------------------------------------------------------------------
 * One input
 * ---------------------------------------------------------------- */

static void setup(const uint8_t *data, size_t size)
{
    memset(&fz, 0, sizeof fz);
    fz.p = data;
    fz.n = size;
    fz_fiber_setup();
    /* v2..v4 collide fully; v5 shares all but the last level with them. */
    new_var(0, 0, 0, 3, false);
    new_var(1, 0, 0, ABSENT, true);
    new_var(2, 1, 0x55, ABSENT, false);
    new_var(3, 1, 0x55, 5, true);
    new_var(4, 1, 0x55, ABSENT, true);
    new_var(5, 1, 0x15, ABSENT, false);
    /* Work inside a root context, so the thread's base stays empty for the
     * next input. */
    ctx_context_t *root = NULL;
    if (ctx_context_new(&root) != 0 || ctx_context_enter(root) != 0)
        FAIL("cannot set up the root context");
    fz_push(root, fz_new_cid(NULL));
    fz.frame_base = 1;
}

static void teardown(void)
{
    fz_fiber_teardown();
    fz_watch_teardown();
    while (fz.depth > 1)
        fz_exit_top();
    ctx_context_t *root = fz.stack[0].c;
    fz_outcome(ctx_context_exit(root), 0, "exit(root)");
    ctx_context_release(root);
    for (int i = 0; i < NCTX; i++)
        fz_put_ctx(i, NULL, -1);
    for (int i = 0; i < NTOK; i++)
        drop_tok(i);
    for (int i = 0; i < NVAR; i++)
        ctx_var_release(fz.var[i]);
    ctx_context_t *base = NULL;
    fz_outcome(ctx_copy_context(&base), 0, "copy_context(base)");
    CHECK(ctx_context_len(base) == 0, "the thread's base context changed");
    ctx_context_release(base);
    for (int i = 0; i < NVAL; i++)
        CHECK(holds[i] == 0, "value %d: %ld retains not released", i,
              holds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup(data, size);
    while (fz.n > 0)
        fz_run_op();
    teardown();
    return 0;
}
