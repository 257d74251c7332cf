/*
 * hamt.c - the persistent hash array mapped trie behind every context.
 *
 * Why a HAMT.  A context must be copyable in O(1) (every pool job and every
 * new thread takes a snapshot) and settable in O(log n) without disturbing
 * any snapshot taken earlier.  A persistent trie gives both: a copy is one
 * more reference to the root, and a set rebuilds only the nodes on the path
 * to the key, sharing every other node with the old version.  Python's
 * contextvars made the same choice for the same reasons.
 *
 * Shape.  A key is a variable, hashed to 32 bits (var->hash).  A bitmap node
 * covers 5 bits of the hash at its depth: bit i of node->bitmap says whether
 * slot i is present, and the present slots are packed in e[] in slot order,
 * so slot i lives at e[popcount(bitmap & ((1 << i) - 1))].  An entry is
 * either a binding (key != NULL) or a child node (key == NULL, the node in
 * value).  Depth 0 uses bits 0-4, depth 6 bits 30-31; two different hashes
 * therefore part ways by depth 6 at the latest.  Keys whose full hashes are
 * equal share a collision node (node->bitmap then holds their hash), a flat
 * array searched linearly.  Hashes come from a mixer over a never-reused
 * id, so collisions are rare outside the tests that force them.
 *
 * Canonical form, which ctx__hamt_check() verifies: no node is empty, and
 * no node below the root holds just one binding and nothing else (such a
 * node is folded into its parent's slot).  The empty trie is the NULL root;
 * the root is always a bitmap node.
 *
 * Sharing and in-place updates.  Nodes carry atomic reference counts,
 * because snapshots travel between threads.  A node reachable only through
 * nodes that all have refcount 1 is owned by one trie alone, and updates
 * change it in place: after the first set following a snapshot, further
 * sets on the same path cost no allocation at all.  At the first shared node
 * on the path (the "boundary") the update switches to copying: the boundary
 * and everything under it on the path are copied, and the copy takes its
 * own references to the untouched siblings.  The old boundary node is
 * handed back in the garbage record: the caller drops that reference after
 * releasing its lock, because the drop may free a subtree and run user
 * release callbacks.  A value displaced by an in-place overwrite or removal
 * is handed back the same way.
 *
 * Failure.  Every allocation an update needs happens before the update
 * changes anything that is already reachable: children are rebuilt first and
 * parents are patched only once the child succeeded.  So CTX__H_ERROR
 * leaves the trie exactly as it was (the strong guarantee set promises).
 *
 * Signal safety.  ctx_var_get() walks the current context's trie, also
 * from a signal handler that interrupted an update of that very trie on
 * the same thread.  So an in-place update must never let a reader see a
 * half-done node: each one is a single word stored last (CTX__PUBLISH),
 * and there are only these:
 *  - overwriting a binding's value (the key stays): the repeated set;
 *  - swapping a child pointer (or the root) for a node built aside;
 *  - appending an entry after the last one, where no reader looks until
 *    the bitmap (or, in a collision node, the count) that says so;
 *  - dropping the last entry, by the same word.
 * Everything else, notably opening or closing a gap in the middle and
 * turning a binding into a child or back (two words), builds a new node
 * and swaps it in.  The owned node it replaces cannot be freed at once, as
 * it is still reachable until the swap above it: it is "retired" and freed
 * when the whole update is published, without releasing anything (its
 * references moved into the new node).  Readers load each published word
 * once (CTX__PEEK) and never read a bitmap node's count.
 */
#include "config.h"

#include "hamt_node.h"

#include <errno.h>
#include <string.h>


/* ------------------------------------------------------------------
 * Nodes and references
 * ---------------------------------------------------------------- */

static ctx__hnode_t *node_alloc(bool collision, uint32_t cap)
{
    ctx__hnode_t *n = ctx__malloc(sizeof *n + cap * sizeof(hentry_t));
    if (n == NULL)
        return NULL;
    atomic_init(&n->refcnt, 1);
    n->bitmap = 0;
    n->count = 0;
    n->cap = cap;
    n->collision = collision;
    return n;
}

static bool node_owned(const ctx__hnode_t *n)
{
    CTX__CHAOS();
    return atomic_load_explicit(&n->refcnt, memory_order_acquire) == 1;
}

static inline __attribute__((always_inline)) void
entry_retain_inline(const hentry_t *e)
{
    if (e->key != NULL) {
        ctx__var_incref(e->key);
        ctx__value_retain(e->key, e->value);
    } else {
        ctx__hamt_retain(e->value);
    }
}

/* Out of line everywhere but the copy loop (retain_range). */
static void entry_retain(const hentry_t *e)
{
    entry_retain_inline(e);
}

ctx__hnode_t *ctx__hamt_retain(ctx__hnode_t *root)
{
    if (root != NULL)
        atomic_fetch_add_explicit(&root->refcnt, 1, memory_order_relaxed);
    return root;
}

unsigned ctx__hamt_refcount(const ctx__hnode_t *root)
{
    CTX__CHAOS();
    return atomic_load_explicit(&root->refcnt, memory_order_relaxed);
}

void ctx__hamt_set_refcount(ctx__hnode_t *root, unsigned n)
{
    CTX__CHAOS();
    atomic_store_explicit(&root->refcnt, n, memory_order_relaxed);
}

/* Drops a reference; true when it was the last.  A sole holder cannot be
 * raced (a new reference needs an existing one), so it skips the atomic
 * RMW. */
static inline bool node_unref(ctx__hnode_t *n)
{
    CTX__CHAOS();
    return atomic_load_explicit(&n->refcnt, memory_order_acquire) == 1 ||
           atomic_fetch_sub_explicit(&n->refcnt, 1, memory_order_acq_rel) == 1;
}

/* Frees n, whose last reference is gone, and what only it held.  Children
 * are unreferenced inline: most are shared with a newer version, and a
 * call per child used to be most of the cost of dropping a snapshot. */
static void node_free(ctx__hnode_t *n)
{
    for (uint32_t i = 0; i < n->count; i++) {
        const hentry_t *e = &n->e[i];
        if (e->key != NULL) {
            ctx__value_release(e->key, e->value);
            ctx_var_release(e->key);
        } else if (node_unref(e->value)) {
            node_free(e->value);
        }
    }
    ctx__free(n);
}

void ctx__hamt_release(ctx__hnode_t *root)
{
    if (root != NULL && node_unref(root))
        node_free(root);
}

void ctx__hgarbage_dispose(ctx__hgarbage_t *g)
{
    ctx__hamt_release(g->root);
    if (g->key != NULL) {
        ctx__value_release(g->key, g->value);
        if (g->drop_key)
            ctx_var_release(g->key);
    }
    g->root = NULL;
    g->key = NULL;
}

#define NONE UINT32_MAX

/* The path-copy loop, where most of a first write after a snapshot goes:
 * entry_retain inlined, and no per-entry test for the gap. */
static void retain_range(const hentry_t *e, uint32_t n)
{
    for (const hentry_t *end = e + n; e < end; e++)
        entry_retain_inline(e);
}

/* A new node holding n's entries minus entry `drop`, with an unfilled gap
 * at index `gap` (either may be NONE; both at one index replace that
 * entry).  With share, n stays as it is and the new node takes its own
 * references to the entries; without, the references move over and n is
 * to be freed without releasing anything (retired). */
static ctx__hnode_t *node_build(const ctx__hnode_t *n, uint32_t gap,
                                uint32_t drop, bool share)
{
    CTX__ASSERT(gap == NONE || drop == NONE || gap == drop);
    uint32_t at = gap != NONE ? gap : drop != NONE ? drop : n->count;
    uint32_t src = at + (drop != NONE), dst = at + (gap != NONE);
    uint32_t count = dst + (n->count - src);
    ctx__hnode_t *c = node_alloc(n->collision, count);
    if (c == NULL)
        return NULL;
    c->bitmap = n->bitmap;
    c->count = count;
    if (gap == drop) { /* replacing (or a plain copy): one memcpy */
        memcpy(c->e, n->e, count * sizeof(hentry_t));
    } else {
        memcpy(c->e, n->e, at * sizeof(hentry_t));
        memcpy(&c->e[dst], &n->e[src], (n->count - src) * sizeof(hentry_t));
    }
    if (share) {
        uint32_t skip = gap != NONE ? gap : count;
        retain_range(c->e, skip);
        if (skip < count)
            retain_range(&c->e[skip + 1], count - skip - 1);
    }
    return c;
}

/* Owned nodes an update replaced: freed once the update is published
 * (see "Signal safety").  A path has at most 8 nodes, and an update
 * retires each at most once. */
#define RETIRE_MAX 8

typedef struct {
    ctx__hnode_t *n[RETIRE_MAX];
    unsigned k;
} retired_t;

static void retire(retired_t *r, ctx__hnode_t *n)
{
    CTX__ASSERT(r->k < RETIRE_MAX);
    r->n[r->k++] = n;
}

static void retired_free(retired_t *r)
{
    for (unsigned i = 0; i < r->k; i++)
        ctx__free(r->n[i]);
    r->k = 0;
}

/* A fresh copy built for an update that then failed higher up.  Freeing
 * it runs release callbacks, so it goes out with the garbage.  The slot is
 * free: failure happens only below the boundary, before it is recorded,
 * and only one level ever holds a finished copy when a failure strikes. */
static void discard_copy(ctx__hgarbage_t *g, ctx__hnode_t *copy)
{
    CTX__ASSERT(g->root == NULL);
    g->root = copy;
}

static uint32_t slot_bit(uint32_t hash, unsigned shift)
{
    return 1u << ((hash >> shift) & (FANOUT - 1));
}

static uint32_t slot_index(uint32_t bitmap, uint32_t bit)
{
    return popcount32(bitmap & (bit - 1));
}

static uint32_t entry_hash(const hentry_t *e)
{
    if (e->key != NULL)
        return e->key->hash;
    return ((const ctx__hnode_t *)e->value)->bitmap; /* a collision node */
}

/* ------------------------------------------------------------------
 * Lookup
 * ---------------------------------------------------------------- */

ctx__hres_t ctx__hamt_find(const ctx__hnode_t *n, const ctx_var_t *key,
                           void **value)
{
    uint32_t hash = key->hash;
    for (unsigned shift = 0; n != NULL; shift += BITS) {
        if (CTX__UNLIKELY(n->collision)) {
            uint32_t count = CTX__PEEK(n->count);
            for (uint32_t i = 0; i < count; i++)
                if (CTX__PEEK(n->e[i].key) == key) {
                    *value = CTX__PEEK(n->e[i].value);
                    return CTX__H_FOUND;
                }
            return CTX__H_NOT_FOUND;
        }
        uint32_t bit = slot_bit(hash, shift), bitmap = CTX__PEEK(n->bitmap);
        if (!(bitmap & bit))
            return CTX__H_NOT_FOUND;
        const hentry_t *e = &n->e[slot_index(bitmap, bit)];
        const ctx_var_t *k = CTX__PEEK(e->key);
        if (k == NULL) {
            n = CTX__PEEK(e->value);
            continue;
        }
        if (k != key)
            return CTX__H_NOT_FOUND;
        *value = CTX__PEEK(e->value);
        return CTX__H_FOUND;
    }
    return CTX__H_NOT_FOUND;
}

/* ------------------------------------------------------------------
 * Insertion
 * ---------------------------------------------------------------- */

/* A subtree, rooted at depth `shift`, that holds exactly the entries a and
 * b (whose references it takes over).  Equal hashes make a collision node;
 * otherwise bitmap nodes go down until the hashes' 5-bit chunks differ. */
static ctx__hnode_t *merge_pair(unsigned shift, hentry_t a, uint32_t ha,
                                hentry_t b, uint32_t hb)
{
    if (ha == hb) {
        ctx__hnode_t *c = node_alloc(true, 2);
        if (c == NULL)
            return NULL;
        c->bitmap = ha;
        c->count = 2;
        c->e[0] = a;
        c->e[1] = b;
        return c;
    }
    uint32_t ba = slot_bit(ha, shift), bb = slot_bit(hb, shift);
    if (ba == bb) {
        ctx__hnode_t *n = node_alloc(false, 1);
        if (n == NULL)
            return NULL;
        ctx__hnode_t *sub = merge_pair(shift + BITS, a, ha, b, hb);
        if (sub == NULL) {
            ctx__free(n);
            return NULL;
        }
        n->bitmap = ba;
        n->count = 1;
        n->e[0] = (hentry_t){NULL, sub};
        return n;
    }
    ctx__hnode_t *n = node_alloc(false, 2);
    if (n == NULL)
        return NULL;
    n->bitmap = ba | bb;
    n->count = 2;
    n->e[ba < bb ? 0 : 1] = a;
    n->e[ba < bb ? 1 : 0] = b;
    return n;
}

/* Frees the nodes merge_pair() built, giving their entries back. */
static void unmerge(ctx__hnode_t *n)
{
    for (uint32_t i = 0; i < n->count; i++)
        if (n->e[i].key == NULL && n->e[i].value != NULL)
            unmerge(n->e[i].value);
    ctx__free(n);
}

typedef struct {
    ctx_var_t *key;
    uint32_t hash;
    void *value;
    bool added;
    ctx__hgarbage_t *g;
    retired_t retired;
} assoc_t;

static ctx__hnode_t *assoc(ctx__hnode_t *n, bool owned, unsigned shift,
                           assoc_t *a);

/* Puts the new binding into the empty slot `bit` of bitmap node n. */
static ctx__hnode_t *assoc_empty_slot(ctx__hnode_t *n, bool owned,
                                      uint32_t bit, assoc_t *a)
{
    uint32_t idx = slot_index(n->bitmap, bit);
    hentry_t fresh = {a->key, a->value};
    a->added = true;
    if (owned && idx == n->count && n->count < n->cap) {
        /* After the last entry, where readers look only once the bitmap
         * says so (a node that lost its last entry has the room). */
        n->e[idx] = fresh;
        entry_retain(&fresh);
        CTX__PUBLISH(n->bitmap, n->bitmap | bit);
        n->count++;
        return n;
    }
    ctx__hnode_t *r = node_build(n, idx, NONE, !owned);
    if (r == NULL) {
        a->added = false;
        return NULL;
    }
    r->bitmap |= bit;
    r->e[idx] = fresh;
    entry_retain(&fresh);
    if (owned)
        retire(&a->retired, n);
    return r;
}

/* n with entry idx (bitmap or collision) replaced by `with`, which already
 * holds its references.  In place only when one word changes (a child
 * pointer for another); otherwise in a new node, retiring n when owned. */
static ctx__hnode_t *replace_entry(ctx__hnode_t *n, bool owned, uint32_t idx,
                                   hentry_t with, retired_t *retired)
{
    if (owned && with.key == NULL && n->e[idx].key == NULL) {
        CTX__PUBLISH(n->e[idx].value, with.value);
        return n;
    }
    ctx__hnode_t *r = node_build(n, idx, idx, !owned);
    if (r == NULL)
        return NULL;
    r->e[idx] = with;
    if (owned)
        retire(retired, n);
    return r;
}

/* The slot holds a binding for another key: push both one level down. */
static ctx__hnode_t *assoc_split(ctx__hnode_t *n, bool owned, unsigned shift,
                                 uint32_t idx, assoc_t *a)
{
    hentry_t old = n->e[idx], fresh = {a->key, a->value};
    ctx__hnode_t *sub = merge_pair(shift + BITS, old, entry_hash(&old), fresh,
                                   a->hash);
    if (sub == NULL)
        return NULL;
    ctx__hnode_t *r =
        replace_entry(n, owned, idx, (hentry_t){NULL, sub}, &a->retired);
    if (r == NULL) {
        unmerge(sub);
        return NULL;
    }
    /* When n was shared, the old binding stays referenced by n, and the new
     * subtree needs its own reference to it. */
    if (!owned)
        entry_retain(&old);
    entry_retain(&fresh);
    a->added = true;
    return r;
}

static ctx__hnode_t *assoc_overwrite(ctx__hnode_t *n, bool owned, uint32_t idx,
                                     assoc_t *a)
{
    hentry_t *e = &n->e[idx];
    a->g->previous = e->value;
    if (e->value == a->value)
        return n; /* nothing changes: keep sharing */
    void *old = e->value;
    if (owned) {
        /* The repeated set: one word, no allocation. */
        void *value = a->value;
        ctx__value_retain(a->key, value);
        a->g->key = a->key;
        a->g->value = old;
        a->g->drop_key = false;
        CTX__PUBLISH(e->value, value);
        return n;
    }
    ctx__hnode_t *r = node_build(n, idx, idx, true);
    if (r == NULL)
        return NULL;
    ctx__var_incref(a->key);
    ctx__value_retain(a->key, a->value);
    r->e[idx] = (hentry_t){a->key, a->value};
    return r;
}

static ctx__hnode_t *assoc_child(ctx__hnode_t *n, bool owned, unsigned shift,
                                 uint32_t idx, assoc_t *a)
{
    ctx__hnode_t *child = n->e[idx].value;
    bool child_owned = owned && node_owned(child);
    ctx__hnode_t *nc = assoc(child, child_owned, shift + BITS, a);
    if (nc == NULL || nc == child)
        return nc == NULL ? NULL : n;
    if (owned) {
        CTX__PUBLISH(n->e[idx].value, nc);
        if (!child_owned)
            a->g->root = child; /* the boundary: drop n's old reference */
        return n;
    }
    ctx__hnode_t *r =
        replace_entry(n, false, idx, (hentry_t){NULL, nc}, &a->retired);
    if (r == NULL)
        discard_copy(a->g, nc);
    return r;
}

static ctx__hnode_t *assoc_collision(ctx__hnode_t *n, bool owned,
                                     unsigned shift, assoc_t *a)
{
    hentry_t fresh = {a->key, a->value};
    if (a->hash != n->bitmap) {
        /* A different hash reached this collision node's slot: put the
         * collision node and the new binding under a new bitmap node. */
        ctx__hnode_t *m = merge_pair(shift, (hentry_t){NULL, n}, n->bitmap,
                                     fresh, a->hash);
        if (m == NULL)
            return NULL;
        /* Owned, the parent's reference to n moves into m (the parent will
         * store m in place of n).  Shared, the parent keeps its reference
         * (it is copied or it is the boundary's owner), so m needs one. */
        if (!owned)
            ctx__hamt_retain(n);
        entry_retain(&fresh);
        a->added = true;
        return m;
    }
    for (uint32_t i = 0; i < n->count; i++)
        if (n->e[i].key == a->key)
            return assoc_overwrite(n, owned, i, a);
    if (owned && n->count < n->cap) {
        /* Readers of a collision node stop at its count. */
        n->e[n->count] = fresh;
        entry_retain(&fresh);
        CTX__PUBLISH(n->count, n->count + 1);
        a->added = true;
        return n;
    }
    ctx__hnode_t *r = node_build(n, n->count, NONE, !owned);
    if (r == NULL)
        return NULL;
    r->e[r->count - 1] = fresh;
    entry_retain(&fresh);
    if (owned)
        retire(&a->retired, n);
    a->added = true;
    return r;
}

/* Returns the node that replaces n (n itself when changed in place or not
 * at all), or NULL on ENOMEM with nothing reachable changed.  Owned nodes
 * are changed in place or replaced only at the bottom of the path; above
 * that, owned ancestors swap one child pointer, so nothing can fail once
 * something reachable changed. */
static ctx__hnode_t *assoc(ctx__hnode_t *n, bool owned, unsigned shift,
                           assoc_t *a)
{
    if (n->collision)
        return assoc_collision(n, owned, shift, a);
    uint32_t bit = slot_bit(a->hash, shift);
    if (!(n->bitmap & bit))
        return assoc_empty_slot(n, owned, bit, a);
    uint32_t idx = slot_index(n->bitmap, bit);
    const hentry_t *e = &n->e[idx];
    if (e->key == NULL)
        return assoc_child(n, owned, shift, idx, a);
    if (e->key == a->key)
        return assoc_overwrite(n, owned, idx, a);
    return assoc_split(n, owned, shift, idx, a);
}

ctx__hres_t ctx__hamt_assoc(ctx__hnode_t **root, ctx_var_t *key, void *value,
                            bool *added, ctx__hgarbage_t *garbage)
{
    assoc_t a; /* not an initializer: that would zero a.retired.n */
    a.key = key;
    a.hash = key->hash;
    a.value = value;
    a.added = false;
    a.g = garbage;
    a.retired.k = 0;
    ctx__hnode_t *old = *root, *r;
    if (old == NULL) {
        r = node_alloc(false, 1);
        if (r == NULL)
            return CTX__H_ERROR;
        r->bitmap = slot_bit(a.hash, 0);
        r->count = 1;
        r->e[0] = (hentry_t){key, value};
        entry_retain(&r->e[0]);
        a.added = true;
    } else {
        bool owned = node_owned(old);
        r = assoc(old, owned, 0, &a);
        if (r == NULL) {
            CTX__ASSERT(a.retired.k == 0);
            return CTX__H_ERROR;
        }
        if (r != old && !owned)
            garbage->root = old;
    }
    if (r != old)
        CTX__PUBLISH(*root, r);
    retired_free(&a.retired);
    *added = a.added;
    return CTX__H_FOUND;
}

/* ------------------------------------------------------------------
 * Removal
 *
 * A subtree that lost the key becomes a node (maybe the same one), nothing
 * (only a root can empty), or a lone binding, which canonical form folds
 * into the parent's slot: the parent then changes a child entry into a
 * binding, two words, so it is rebuilt.  Folding needs no node of its own,
 * so a chain of one-child nodes above a lone binding vanishes for free.
 * ---------------------------------------------------------------- */

typedef struct {
    const ctx_var_t *key;
    uint32_t hash;
    ctx__hgarbage_t *g;
    retired_t retired;
    hentry_t gone;      /* the removed binding ... */
    bool gone_owned;    /* ... when its references are ours to drop */
    bool lone_borrowed; /* a folded binding's references stay with a shared
                           node: whoever stores it takes its own */
    ctx__hnode_t *boundary; /* for the garbage, once nothing can fail */
} without_t;

#define EMPTY ((hentry_t){NULL, NULL})

/* n without entry idx (and without `bit` in its bitmap), in *out. */
static ctx__hres_t drop_entry(ctx__hnode_t *n, bool owned, unsigned shift,
                              uint32_t idx, uint32_t bit, without_t *w,
                              hentry_t *out)
{
    uint32_t left = n->count - 1;
    if (left == 0 || (shift > 0 && left == 1 && n->e[1 - idx].key != NULL)) {
        /* Empty, or a lone binding for the parent to fold. */
        *out = left == 0 ? EMPTY : n->e[1 - idx];
        w->lone_borrowed = !owned;
        if (owned)
            retire(&w->retired, n);
        return CTX__H_FOUND;
    }
    if (owned && idx == left) {
        /* The last entry: one word hides it. */
        if (n->collision) {
            CTX__PUBLISH(n->count, left);
        } else {
            CTX__PUBLISH(n->bitmap, n->bitmap & ~bit);
            n->count = left;
        }
        *out = (hentry_t){NULL, n};
        return CTX__H_FOUND;
    }
    ctx__hnode_t *c = node_build(n, NONE, idx, !owned);
    if (c == NULL)
        return CTX__H_ERROR;
    c->bitmap &= ~bit;
    if (owned)
        retire(&w->retired, n);
    *out = (hentry_t){NULL, c};
    return CTX__H_FOUND;
}

static ctx__hres_t drop_binding(ctx__hnode_t *n, bool owned, unsigned shift,
                                uint32_t idx, uint32_t bit, without_t *w,
                                hentry_t *out)
{
    w->gone = n->e[idx];
    w->gone_owned = owned;
    return drop_entry(n, owned, shift, idx, bit, w, out);
}

static ctx__hres_t without(ctx__hnode_t *n, bool owned, unsigned shift,
                           without_t *w, hentry_t *out);

/* Slot idx of n holds a child that lost the key and became nc. */
static ctx__hres_t without_child(ctx__hnode_t *n, bool owned, unsigned shift,
                                 uint32_t idx, uint32_t bit, without_t *w,
                                 hentry_t *out)
{
    ctx__hnode_t *child = n->e[idx].value;
    bool child_owned = owned && node_owned(child);
    hentry_t nc;
    ctx__hres_t r = without(child, child_owned, shift + BITS, w, &nc);
    if (r != CTX__H_FOUND)
        return r;
    if (nc.key == NULL && nc.value == child) {
        *out = (hentry_t){NULL, n}; /* changed in place below */
        return CTX__H_FOUND;
    }
    if (nc.key == NULL && nc.value == NULL) {
        r = drop_entry(n, owned, shift, idx, bit, w, out);
    } else if (nc.key != NULL && shift > 0 && n->count == 1) {
        /* n would hold just the lone binding: pass it up. */
        if (owned)
            retire(&w->retired, n);
        *out = nc;
    } else {
        /* nc is ours alone (changed child or fresh copy) or a binding:
         * below a shared n every node on the path is a fresh copy, so
         * discarding nc undoes everything. */
        ctx__hnode_t *m = replace_entry(n, owned, idx, nc, &w->retired);
        if (m == NULL) {
            if (nc.key == NULL)
                discard_copy(w->g, nc.value);
            return CTX__H_ERROR;
        }
        if (nc.key != NULL && w->lone_borrowed)
            entry_retain(&nc);
        *out = (hentry_t){NULL, m};
    }
    if (r == CTX__H_FOUND && owned && !child_owned)
        w->boundary = child; /* drop n's old reference, unless a failure
                                higher up keeps n */
    return r;
}

static ctx__hres_t without(ctx__hnode_t *n, bool owned, unsigned shift,
                           without_t *w, hentry_t *out)
{
    if (n->collision) {
        for (uint32_t i = 0; i < n->count; i++)
            if (n->e[i].key == w->key)
                return drop_binding(n, owned, shift, i, 0, w, out);
        return CTX__H_NOT_FOUND;
    }
    uint32_t bit = slot_bit(w->hash, shift);
    if (!(n->bitmap & bit))
        return CTX__H_NOT_FOUND;
    uint32_t idx = slot_index(n->bitmap, bit);
    const hentry_t *e = &n->e[idx];
    if (e->key == NULL)
        return without_child(n, owned, shift, idx, bit, w, out);
    if (e->key != w->key)
        return CTX__H_NOT_FOUND;
    return drop_binding(n, owned, shift, idx, bit, w, out);
}

ctx__hres_t ctx__hamt_without(ctx__hnode_t **root, const ctx_var_t *key,
                              ctx__hgarbage_t *garbage)
{
    ctx__hnode_t *old = *root;
    if (old == NULL)
        return CTX__H_NOT_FOUND;
    without_t w;
    w.key = key;
    w.hash = key->hash;
    w.g = garbage;
    w.retired.k = 0;
    w.gone_owned = false;
    w.lone_borrowed = false;
    w.boundary = NULL;
    bool owned = node_owned(old);
    hentry_t r;
    ctx__hres_t res = without(old, owned, 0, &w, &r);
    if (res != CTX__H_FOUND)
        return res; /* nothing was published: the retired nodes live on */
    CTX__ASSERT(r.key == NULL); /* the root never folds */
    if (r.value != old)
        CTX__PUBLISH(*root, (ctx__hnode_t *)r.value);
    CTX__ASSERT(owned || w.boundary == NULL);
    garbage->root = owned ? w.boundary : old;
    retired_free(&w.retired);
    if (w.gone_owned) {
        garbage->key = w.gone.key;
        garbage->value = w.gone.value;
        garbage->drop_key = true;
    }
    return CTX__H_FOUND;
}
