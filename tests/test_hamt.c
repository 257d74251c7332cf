/*
 * test_hamt.c - the persistent trie under every context (lib/hamt.c).
 *
 * Shapes are forced with ctx__var_set_hash().  A level consumes 5 hash bits
 * from the low end and single-binding subnodes are always folded into their
 * parent, so for distinct hashes the depth follows from the hashes alone:
 * the tests compute it and compare.  Every update goes through a model (an
 * array of values per version of the trie) and is checked against it:
 * finds, ctx__hamt_check(), foreach.  A randomized test runs thousands of
 * updates on several versions sharing structure, some with a failing
 * allocation; fixed seeds make any failure replayable.
 *
 * Values are addresses of counters that the value ops move, so every
 * retain must be matched by one release, and no release may run inside
 * assoc/without (the context calls those under its lock; what they displace
 * must go through the garbage record instead).
 */
#include "config.h"

#include "internal.h"
#include "testutil.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>

/* ck_assert records its location with a write(2) on every call, which
 * dominates loops of millions of checks; this costs nothing until it fails. */
#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond))                                                         \
            ck_abort_msg("failed: " #cond " " __VA_ARGS__);                  \
    } while (0)

/* ---- deterministic randomness (splitmix64) ---- */
static uint64_t rng;

static uint32_t rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static int rnd_below(int n) { return (int)(rnd() % (uint32_t)n); }

/* ---- values: each is the address of its own balance counter ---- */
#define NVALS 32
#define NO_VAL (-2)   /* model code: unbound */
#define NULL_VAL (-1) /* model code: bound to NULL */
static long held[NVALS]; /* retains minus releases */
static long held_null;
static bool in_update;
static long released_in_update;

static void count(void *v, long d)
{
    if (v == NULL)
        held_null += d;
    else
        *(long *)v += d;
}
static void on_retain(void *v) { count(v, 1); }
static void on_release(void *v)
{
    released_in_update += in_update;
    count(v, -1);
}
static const ctx_value_ops_t counting_ops = {on_retain, on_release};

static void *val_of(int code)
{
    if (code == NO_VAL)
        return CTX_MISSING;
    return code == NULL_VAL ? NULL : &held[code];
}

static void assert_balanced(void)
{
    for (int i = 0; i < NVALS; i++)
        ck_assert_msg(held[i] == 0, "value %d: %ld unreleased", i, held[i]);
    ck_assert_int_eq(held_null, 0);
    ck_assert_msg(released_in_update == 0,
                  "%ld release callbacks ran inside assoc/without",
                  released_in_update);
}

/* ---- trie operations ---- */
static ctx__hres_t put(ctx__hnode_t **root, ctx_var_t *k, void *v, bool *added)
{
    ctx__hgarbage_t g = CTX__HGARBAGE_INIT;
    in_update = true;
    ctx__hres_t r = ctx__hamt_assoc(root, k, v, added, &g);
    in_update = false;
    ctx__hgarbage_dispose(&g);
    return r;
}

static ctx__hres_t del(ctx__hnode_t **root, const ctx_var_t *k)
{
    ctx__hgarbage_t g = CTX__HGARBAGE_INIT;
    in_update = true;
    ctx__hres_t r = ctx__hamt_without(root, k, &g);
    in_update = false;
    ctx__hgarbage_dispose(&g);
    return r;
}

/* The bound value, or CTX_MISSING. */
static void *get(const ctx__hnode_t *root, const ctx_var_t *k)
{
    void *v = CTX_MISSING;
    ctx__hres_t r = ctx__hamt_find(root, k, &v);
    REQUIRE(r == CTX__H_FOUND || r == CTX__H_NOT_FOUND);
    if (r == CTX__H_NOT_FOUND)
        return CTX_MISSING;
    REQUIRE(v != CTX_MISSING);
    return v;
}

/* ---- exact depth for distinct hashes ---- */
static uint32_t rev32(uint32_t x)
{
    uint32_t r = 0;
    for (int i = 0; i < 32; i++, x >>= 1)
        r = (r << 1) | (x & 1);
    return r;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Two keys whose hashes first differ at bit b part in the node of level
 * b/5.  Sorting the bit-reversed hashes puts the longest run of shared low
 * bits between neighbours.  Sorts h in place. */
static int expected_depth(uint32_t *h, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        h[i] = rev32(h[i]);
    qsort(h, n, sizeof *h, cmp_u32);
    int d = 1;
    for (size_t i = 1; i < n; i++) {
        REQUIRE(h[i] != h[i - 1], "(hashes must be distinct)");
        int lvl = __builtin_clz(h[i] ^ h[i - 1]) / 5 + 1;
        d = lvl > d ? lvl : d;
    }
    return d;
}

/* Places the bits of x at the given bit positions. */
static uint32_t spread(uint32_t x, const int *pos, int n)
{
    uint32_t h = 0;
    for (int j = 0; j < n; j++)
        if (x >> j & 1)
            h |= 1u << pos[j];
    return h;
}

/* ---- the model: versions of a trie over one key set ---- */
#define NKEYS 64
#define NVERS 6
typedef struct {
    ctx__hnode_t *root;
    int val[NKEYS];
    bool live;
} version_t;

static ctx_var_t *keys[NKEYS];
static int nkeys;

static void make_keys(int n, uint32_t (*hash_of)(int))
{
    nkeys = n;
    for (int i = 0; i < n; i++) {
        ck_ok(ctx_var_create(&keys[i], "k", CTX_MISSING, &counting_ops));
        if (hash_of != NULL)
            ctx__var_set_hash(keys[i], hash_of(i));
    }
}

/* The trie must have given back every reference it took to a key. */
static void drop_keys(void)
{
    for (int i = 0; i < nkeys; i++) {
        ck_assert_uint_eq(atomic_load(&keys[i]->refcnt), 1);
        ctx_var_release(keys[i]);
    }
}

static void version_init(version_t *v)
{
    v->root = NULL;
    v->live = true;
    for (int i = 0; i < NKEYS; i++)
        v->val[i] = NO_VAL;
}

static version_t snapshot(const version_t *v)
{
    version_t s = *v;
    s.root = ctx__hamt_retain(v->root);
    ck_assert_ptr_eq(s.root, v->root);
    return s;
}

static long model_len(const version_t *v)
{
    long n = 0;
    for (int i = 0; i < nkeys; i++)
        n += v->val[i] != NO_VAL;
    return n;
}

struct visit {
    const version_t *ver;
    int seen[NKEYS];
    ctx_var_t *order[NKEYS];
    int calls, stop_at;
};

static int visit_fn(ctx_var_t *key, void *value, void *arg)
{
    struct visit *vs = arg;
    int i = 0;
    while (i < nkeys && keys[i] != key)
        i++;
    REQUIRE(i < nkeys, "(foreach gave an unknown key)");
    REQUIRE(value == val_of(vs->ver->val[i]), "(key %d)", i);
    REQUIRE(vs->calls < nkeys, "(more visits than bindings)");
    vs->seen[i]++;
    vs->order[vs->calls] = key;
    return ++vs->calls == vs->stop_at ? 77 : 0;
}

static void verify(const version_t *v)
{
    for (int i = 0; i < nkeys; i++)
        REQUIRE(get(v->root, keys[i]) == val_of(v->val[i]), "(key %d)", i);
    long n = ctx__hamt_check(v->root);
    REQUIRE(n == model_len(v), "(check gave %ld)", n);
    struct visit vs = {.ver = v};
    REQUIRE(ctx__hamt_foreach(v->root, visit_fn, &vs) == 0);
    for (int i = 0; i < nkeys; i++)
        REQUIRE(vs.seen[i] == (v->val[i] != NO_VAL), "(key %d)", i);
}

static int version_depth(const version_t *v)
{
    uint32_t h[NKEYS];
    size_t n = 0;
    for (int i = 0; i < nkeys; i++)
        if (v->val[i] != NO_VAL)
            h[n++] = keys[i]->hash;
    return expected_depth(h, n);
}

/* Binds key k to value `code` (NO_VAL: removes it) in v and its model.
 * With fail >= 0, allocation number `fail` of the update fails; an error
 * must then leave v as it was. */
static ctx__hres_t apply(version_t *v, int k, int code, long fail)
{
    bool added = false;
    ctx__hnode_t *before = v->root;
    ctx__fault_fail_after(fail);
    ctx__hres_t r = code == NO_VAL ? del(&v->root, keys[k])
                                   : put(&v->root, keys[k], val_of(code),
                                         &added);
    bool fired = fail >= 0 && !ctx__fault_armed();
    ctx__fault_fail_after(-1);
    if (r == CTX__H_ERROR) {
        REQUIRE(fired, "(error without a failed allocation)");
        REQUIRE(v->root == before, "(a failed update moved the root)");
        return r;
    }
    if (code != NO_VAL) {
        REQUIRE(added == (v->val[k] == NO_VAL), "(key %d)", k);
    } else {
        REQUIRE(r == (v->val[k] == NO_VAL ? CTX__H_NOT_FOUND : CTX__H_FOUND),
                "(key %d)", k);
        if (r == CTX__H_NOT_FOUND)
            REQUIRE(v->root == before);
    }
    v->val[k] = code;
    return r;
}

/* Every value that some live version binds is held, and no other: what an
 * update displaces is released once its garbage is disposed of.  A trie
 * that shares nothing holds each binding, key and value, exactly once. */
static void check_holders(const version_t *vs, int nv, bool exact)
{
    for (int c = NULL_VAL; c < NVALS; c++) {
        long n = 0, h = c == NULL_VAL ? held_null : held[c];
        for (int j = 0; j < nv; j++)
            for (int i = 0; i < nkeys; i++)
                n += vs[j].live && vs[j].val[i] == c;
        REQUIRE(exact ? h == n : (h > 0) == (n > 0),
                "(value %d held %ld times, bound %ld)", c, h, n);
    }
    for (int i = 0; exact && i < nkeys; i++)
        REQUIRE(atomic_load(&keys[i]->refcnt) == 1u + (vs->val[i] != NO_VAL),
                "(key %d)", i);
}

/* ======================================================== shapes */

/* A script binds ("+k") and unbinds ("-k") keys with forced hashes, checks
 * the depth ("dN") and keeps snapshots ("s").  Every snapshot, and with
 * `shadow` a snapshot taken just before each step, must keep its content
 * while the trie changes. */
static void run_script(const uint32_t *hash, int n, const char *ops,
                       bool shadow)
{
    version_t v, all[6]; /* v, the shadow, then the snapshots */
    int nsnaps = 0;
    nkeys = n;
    for (int i = 0; i < n; i++) {
        ck_ok(ctx_var_create(&keys[i], "k", CTX_MISSING, &counting_ops));
        ctx__var_set_hash(keys[i], hash[i]);
    }
    version_init(&v);
    for (int step = 0; *ops != '\0'; step++) {
        char op = *ops, *end = (char *)ops + 1;
        int arg = isdigit((unsigned char)*end) ? (int)strtol(end, &end, 10)
                                               : 0;
        version_t before = shadow ? snapshot(&v) : v;
        if (op == '+' || op == '-')
            apply(&v, arg, op == '+' ? step % (NVALS + 1) - 1 : NO_VAL, -1);
        else if (op == 'd')
            ck_assert_msg(ctx__hamt_depth(v.root) == arg, "step %d: depth %d",
                          step, ctx__hamt_depth(v.root));
        else if (op == 's' && nsnaps < 4)
            all[2 + nsnaps++] = snapshot(&v);
        all[0] = v;
        all[1] = before;
        all[1].live = shadow;
        for (int i = 0; i < 2 + nsnaps; i++)
            if (all[i].live)
                verify(&all[i]);
        check_holders(all, 2 + nsnaps, !shadow && nsnaps == 0);
        if (shadow)
            ctx__hamt_release(before.root);
        for (ops = end; *ops == ' '; ops++)
            ;
    }
    ctx__hamt_release(v.root);
    for (int i = 0; i < nsnaps; i++)
        ctx__hamt_release(all[2 + i].root);
    drop_keys();
    assert_balanced();
}

static const struct script {
    uint32_t hash[6];
    int n;
    const char *ops;
} scripts[] = {
    /* one key, back to the empty (NULL) root */
    {{0x1234}, 1, "+0 d1 +0 -0 d0 -0 d0"},
    /* differ only in bit 5: one subnode; a third key stays in the root */
    {{0, 1u << 5, 2}, 3, "+0 +1 d2 +2 d2 -1 d1 +1 d2 -0 d1 -2 -1 d0"},
    {{0, 0xffffffffu}, 2, "+0 +1 d1 -0 d1 -1 d0"},
    /* share bits 0-29 (six levels); the fifth parts at level 3; deleting
     * must fold the emptied chain back up */
    {{0x2aaaaaaau, 0x6aaaaaaau, 0xaaaaaaaau, 0xeaaaaaaau,
      0x2aaaaaaau ^ 1u << 15},
     5, "+0 +1 +2 +3 d7 +4 d7 -0 -1 d7 -2 d4 -4 d1 -3 d0"},
    /* equal hashes: a collision node, down to one key and to nothing */
    {{0, 0, 0}, 3, "+0 +1 -2 +0 +2 d2 -0 -1 d1 +1 -2 -1 d0"},
    {{~0u, ~0u, ~0u}, 3, "+0 +1 +2 d2 -1 +1 -0 -2 d1 +2 +0 d2"},
    {{0x12345678u, 0x12345678u, 0x12345678u}, 3, "+0 +1 +2 -0 -1 d1 -2"},
    /* a collision node below a subnode, collapsing either way */
    {{0x20, 0x20, 0x40}, 3, "+0 +1 +2 d3 -0 d2 -2 d1 -1 d0"},
    {{0x20, 0x20, 0x40}, 3, "+0 +1 +2 d3 -2 -0 d1 +2 d2 -1 -2 d0"},
    /* a collision node meets a hash that parts from it at level 2, and
     * is made there by a split */
    {{0x20, 0x20, 0x20 | 1u << 10},
     3, "+0 +1 d2 +2 d4 -0 d3 -1 d1 +1 d3 +0 d4 -2 -1 d1"},
    /* a root made private by its first copy, its children still shared:
     * writes below it must copy them, not write through */
    {{0, 1u << 5, 1u << 10, 1}, 4, "+0 +1 +2 d3 s +3 +2 -1 +0 s -2 -0 +1"},
};

START_TEST(test_script)
{
    const struct script *s = &scripts[_i / 2];
    run_script(s->hash, s->n, s->ops, _i % 2);
}
END_TEST

/* Hashes b and b ^ 1<<k share levels below k/5. */
START_TEST(test_each_bit_depth)
{
    uint32_t base = _i < 32 ? 0 : 0xffffffffu;
    int b = _i % 32;
    uint32_t hash[2] = {base, base ^ 1u << b};
    char ops[64];
    snprintf(ops, sizeof ops, "+0 +1 d%d -0 d1 +0 s -1 d1 -0 d0", b / 5 + 1);
    run_script(hash, 2, ops, true);
}
END_TEST

START_TEST(test_empty_and_dump)
{
    version_t v;
    void *val = NULL;
    make_keys(2, NULL);
    version_init(&v);
    ck_assert_int_eq(ctx__hamt_find(NULL, keys[0], &val), CTX__H_NOT_FOUND);
    ck_assert_int_eq(ctx__hamt_check(NULL), 0);
    ck_assert_int_eq(ctx__hamt_depth(NULL), 0);
    ck_assert_ptr_null(ctx__hamt_retain(NULL));
    ctx__hamt_release(NULL);
    ck_assert_int_eq(ctx__hamt_foreach(NULL, visit_fn, NULL), 0);
    apply(&v, 0, NO_VAL, -1);
    apply(&v, 0, 1, -1);
    apply(&v, 1, 2, -1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    ctx__hamt_dump(v.root, f);
    ctx__hamt_dump(NULL, f);
    fclose(f);
    ck_assert_ptr_nonnull(strchr(buf, '\n'));
    free(buf);
    ctx__hamt_release(v.root);
    drop_keys();
    assert_balanced();
}
END_TEST

/* ======================================================== values */

/* Hash sets: few values, so collision nodes are big and common. */
static uint32_t h_low16(int i) { return (uint32_t)i & 15; }
static uint32_t h_two(int i) { return i & 1 ? 0xffffffffu : 0; }
static uint32_t h_deep16(int i)
{
    static const int pos[] = {4, 26, 30, 31};
    return spread((uint32_t)i & 15, pos, 4) | 0x0a5a5a4au;
}
/* Distinct, and sharing long runs of low bits. */
static uint32_t h_deep_distinct(int i)
{
    static const int pos[] = {2, 7, 13, 19, 24, 30, 31};
    return spread((uint32_t)(i * 37) & 127, pos, 7);
}

/* Overwriting in a private trie is the cheap path of repeated sets: no
 * allocation (an armed fault must not fire) and the root stays put. */
START_TEST(test_overwrite_in_place)
{
    version_t v;
    make_keys(NKEYS, h_deep16);
    version_init(&v);
    for (int i = 0; i < NKEYS; i++)
        apply(&v, i, i % NVALS, -1);
    for (int i = 0; i < NKEYS; i++) {
        ctx__hnode_t *before = v.root;
        ck_assert_msg(apply(&v, i, NULL_VAL, 0) != CTX__H_ERROR,
                      "key %d: overwrite allocated", i);
        ck_assert_ptr_eq(v.root, before);
        check_holders(&v, 1, true);
    }
    verify(&v);
    ctx__hamt_release(v.root);
    drop_keys();
    assert_balanced();
}
END_TEST

START_TEST(test_foreach)
{
    version_t v;
    make_keys(NKEYS, h_low16);
    version_init(&v);
    for (int i = 0; i < NKEYS; i++)
        apply(&v, i, i % NVALS, -1);
    verify(&v); /* every binding exactly once, with its value */
    static const int stops[] = {1, 2, 17, NKEYS};
    for (size_t s = 0; s < sizeof stops / sizeof stops[0]; s++) {
        struct visit vs = {.ver = &v, .stop_at = stops[s]};
        ck_assert_int_eq(ctx__hamt_foreach(v.root, visit_fn, &vs), 77);
        ck_assert_int_eq(vs.calls, stops[s]);
    }
    /* The public foreach promises a stable order; snapshots share it. */
    version_t s = snapshot(&v);
    struct visit o1 = {.ver = &v}, o2 = {.ver = &s};
    ck_assert_int_eq(ctx__hamt_foreach(v.root, visit_fn, &o1), 0);
    ck_assert_int_eq(ctx__hamt_foreach(s.root, visit_fn, &o2), 0);
    ck_assert_mem_eq(o1.order, o2.order, sizeof o1.order);
    ctx__hamt_release(s.root);
    ctx__hamt_release(v.root);
    drop_keys();
    assert_balanced();
}
END_TEST

/* ======================================================== persistence */

/* One working trie, a snapshot after every change, all checked later
 * and released in random order. */
#define NSNAPS 400
START_TEST(test_many_snapshots)
{
    static version_t snaps[NSNAPS];
    int order[NSNAPS];
    version_t w;
    rng = 42;
    make_keys(NKEYS, h_deep16);
    version_init(&w);
    for (int s = 0; s < NSNAPS; s++) {
        int k = rnd_below(NKEYS);
        apply(&w, k, rnd_below(4) ? rnd_below(NVALS + 1) - 1 : NO_VAL, -1);
        snaps[s] = snapshot(&w);
        order[s] = s;
    }
    for (int s = 0; s < NSNAPS; s++)
        verify(&snaps[s]);
    ctx__hamt_release(w.root);
    for (int s = NSNAPS - 1; s > 0; s--) {
        int j = rnd_below(s + 1), t = order[s];
        order[s] = order[j];
        order[j] = t;
    }
    for (int s = 0; s < NSNAPS; s++) {
        ctx__hamt_release(snaps[order[s]].root);
        snaps[order[s]].live = false;
        for (int t = s + 1; s % 40 == 0 && t < NSNAPS; t++)
            verify(&snaps[order[t]]);
        if (s % 40 == 0)
            check_holders(snaps, NSNAPS, false);
    }
    drop_keys();
    assert_balanced();
}
END_TEST

static const struct model_cfg {
    uint32_t (*hash_of)(int); /* NULL: the variables' own hashes */
    bool distinct;            /* then the depth is checked exactly */
    uint64_t seed;
} model_cfgs[] = {
    {NULL, false, 1},           {h_low16, false, 2},
    {h_deep16, false, 3},       {h_two, false, 4},
    {h_deep_distinct, true, 5}, {h_deep_distinct, true, 6},
};

static version_t *pick_live(version_t *vs)
{
    for (;;) {
        version_t *v = &vs[rnd_below(NVERS)];
        if (v->live)
            return v;
    }
}

static void model_step(version_t *vs, bool distinct)
{
    int op = rnd_below(100), k = rnd_below(NKEYS), live = 0;
    version_t *v = pick_live(vs);
    for (int i = 0; i < NVERS; i++)
        live += vs[i].live;
    if (op < 75) {
        int code = op < 50 ? rnd_below(NVALS + 1) - 1 : NO_VAL;
        apply(v, k, code, rnd_below(8) == 0 ? rnd_below(3) : -1);
    } else if (op < 85) {
        for (int i = 0; i < NVERS; i++)
            if (!vs[i].live) {
                vs[i] = snapshot(v);
                break;
            }
    } else if (op < 93) {
        if (live > 1) {
            ctx__hamt_release(v->root);
            v->live = false;
            return;
        }
    } else {
        verify(pick_live(vs));
    }
    REQUIRE(ctx__hamt_check(v->root) == model_len(v));
    REQUIRE(get(v->root, keys[k]) == val_of(v->val[k]), "(key %d)", k);
    if (distinct)
        REQUIRE(ctx__hamt_depth(v->root) == version_depth(v),
                "(depth %d)", ctx__hamt_depth(v->root));
}

START_TEST(test_model)
{
    const struct model_cfg *cfg = &model_cfgs[_i];
    version_t vs[NVERS];
    rng = cfg->seed;
    make_keys(NKEYS, cfg->hash_of);
    for (int i = 0; i < NVERS; i++) {
        version_init(&vs[i]);
        vs[i].live = i == 0;
    }
    for (int step = 0; step < 20000; step++) {
        model_step(vs, cfg->distinct);
        for (int i = 0; step % 128 == 0 && i < NVERS; i++)
            if (vs[i].live)
                verify(&vs[i]);
        if (step % 128 == 0)
            check_holders(vs, NVERS, false);
    }
    for (int i = 0; i < NVERS; i++)
        if (vs[i].live) {
            verify(&vs[i]);
            ctx__hamt_release(vs[i].root);
        }
    drop_keys();
    assert_balanced();
}
END_TEST

/* Fails allocation 0, 1, ... of one update until it succeeds: every
 * failure must leave the trie and the snapshot as they were. */
static void sweep(version_t *v, const version_t *snap, int k, int code)
{
    for (long n = 0; n < 64; n++) {
        ctx__hres_t r = apply(v, k, code, n);
        verify(v);
        if (snap != NULL)
            verify(snap);
        if (r != CTX__H_ERROR)
            return;
    }
    ck_abort_msg("key %d: update never succeeded", k);
}

START_TEST(test_enomem)
{
    bool shared = _i;
    version_t v;
    make_keys(NKEYS, h_deep16);
    version_init(&v);
    for (int i = 0; i < NKEYS; i += 2)
        sweep(&v, NULL, i, i % NVALS);
    for (int k = 0; k < NKEYS; k++) {
        version_t snap = shared ? snapshot(&v) : v;
        const version_t *s = shared ? &snap : NULL;
        if (v.val[k] != NO_VAL) {
            sweep(&v, s, k, (k + 1) % NVALS);
            sweep(&v, s, k, NO_VAL);
        } else {
            sweep(&v, s, k, k % NVALS);
        }
        if (shared)
            ctx__hamt_release(snap.root);
    }
    ctx__hamt_release(v.root);
    drop_keys();
    assert_balanced();
}
END_TEST

/* ======================================================== big tries */

#define NBIG 100000

static uint32_t big_sequential(uint32_t i) { return i; }
static uint32_t big_mixed(uint32_t i)
{
    /* Odd multipliers and xor-shifts are bijective: distinct hashes. */
    uint32_t h = i * 0x9e3779b1u;
    h ^= h >> 15;
    return h * 0x85ebca6bu;
}

static int big_visit(ctx_var_t *key, void *value, void *arg)
{
    ctx_var_t **seen = arg;
    uintptr_t i = (uintptr_t)value - 1;
    REQUIRE(i < NBIG && seen[i] == key);
    seen[i] = NULL; /* a second visit would fail above */
    return 0;
}

/* 100,000 keys.  Dense hashes fill levels 0-3 exactly (2^17 > 100,000).
 * Random distinct ones get the depth the birthday bound forces (two keys
 * likely share 25 or more low bits), no more; the variables' own hashes,
 * at most 7 levels and a collision node. */
static const struct big_cfg {
    uint32_t (*hash_of)(uint32_t);
    int depth; /* 0: computed from the hashes */
} big_cfgs[] = {{big_sequential, 4}, {big_mixed, 0}, {NULL, 8}};

START_TEST(test_big)
{
    const struct big_cfg *cfg = &big_cfgs[_i];
    ctx_var_t **big = malloc(NBIG * sizeof *big);
    ctx_var_t **seen = malloc(NBIG * sizeof *seen);
    uint32_t *h = malloc(NBIG * sizeof *h);
    ctx__hnode_t *root = NULL;
    ck_assert(big != NULL && seen != NULL && h != NULL);
    for (uint32_t i = 0; i < NBIG; i++) {
        REQUIRE(ctx_var_create(&big[i], NULL, CTX_MISSING, NULL) == 0);
        if (cfg->hash_of != NULL)
            ctx__var_set_hash(big[i], cfg->hash_of(i));
        h[i] = big[i]->hash;
        bool added = false;
        REQUIRE(put(&root, big[i], (void *)(uintptr_t)(i + 1), &added) !=
                    CTX__H_ERROR && added);
    }
    ck_assert_int_eq(ctx__hamt_check(root), NBIG);
    for (uint32_t i = 0; i < NBIG; i++)
        REQUIRE(get(root, big[i]) == (void *)(uintptr_t)(i + 1));
    int depth = ctx__hamt_depth(root);
    if (cfg->hash_of == NULL)
        ck_assert_int_le(depth, cfg->depth);
    else
        ck_assert_int_eq(depth,
                         cfg->depth ? cfg->depth : expected_depth(h, NBIG));
    memcpy(seen, big, NBIG * sizeof *seen);
    ck_assert_int_eq(ctx__hamt_foreach(root, big_visit, seen), 0);
    for (uint32_t i = 0; i < NBIG; i++)
        REQUIRE(seen[i] == NULL, "(key %u never visited)", i);
    for (uint32_t i = 0; i < NBIG; i += 2)
        REQUIRE(del(&root, big[i]) == CTX__H_FOUND);
    ck_assert_int_eq(ctx__hamt_check(root), NBIG / 2);
    ctx__hamt_release(root);
    for (uint32_t i = 0; i < NBIG; i++) {
        REQUIRE(atomic_load(&big[i]->refcnt) == 1);
        ctx_var_release(big[i]);
    }
    free(seen);
    free(big);
    free(h);
}
END_TEST

/* ======================================================== suite */

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *hamt_suite(void)
{
    Suite *s = suite_create("hamt");
    TCase *tc = tcase_create("shapes");
    tcase_add_test(tc, test_empty_and_dump);
    tcase_add_loop_test(tc, test_script, 0, 2 * COUNT(scripts));
    tcase_add_loop_test(tc, test_each_bit_depth, 0, 64);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_test(tc, test_overwrite_in_place);
    tcase_add_test(tc, test_foreach);
    suite_add_tcase(s, tc);

    tc = tcase_create("persistence");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_many_snapshots);
    tcase_add_loop_test(tc, test_model, 0, COUNT(model_cfgs));
    tcase_add_loop_test(tc, test_enomem, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("big");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_big, 0, COUNT(big_cfgs));
    suite_add_tcase(s, tc);
    return s;
}

CTX_TEST_MAIN(hamt_suite)
