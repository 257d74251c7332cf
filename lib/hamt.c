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
    return atomic_load_explicit(&n->refcnt, memory_order_acquire) == 1;
}

static void entry_retain(const hentry_t *e)
{
    if (e->key != NULL) {
        ctx__var_incref(e->key);
        ctx__value_retain(e->key, e->value);
    } else {
        ctx__hamt_retain(e->value);
    }
}

static void entry_release(const hentry_t *e)
{
    if (e->key != NULL) {
        ctx__value_release(e->key, e->value);
        ctx_var_release(e->key);
    } else {
        ctx__hamt_release(e->value);
    }
}

ctx__hnode_t *ctx__hamt_retain(ctx__hnode_t *root)
{
    if (root != NULL)
        atomic_fetch_add_explicit(&root->refcnt, 1, memory_order_relaxed);
    return root;
}

unsigned ctx__hamt_refcount(const ctx__hnode_t *root)
{
    return atomic_load_explicit(&root->refcnt, memory_order_relaxed);
}

void ctx__hamt_set_refcount(ctx__hnode_t *root, unsigned n)
{
    atomic_store_explicit(&root->refcnt, n, memory_order_relaxed);
}

void ctx__hamt_release(ctx__hnode_t *root)
{
    if (root == NULL)
        return;
    /* A sole holder cannot be raced (a new reference needs an existing
     * one), so it skips the atomic RMW. */
    if (atomic_load_explicit(&root->refcnt, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&root->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < root->count; i++)
        entry_release(&root->e[i]);
    ctx__free(root);
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

/* A new node holding n's entries, with room for `extra` more; every entry
 * but e[skip] gets its own reference (the caller overwrites that slot). */
static ctx__hnode_t *node_copy(const ctx__hnode_t *n, uint32_t extra,
                               uint32_t skip)
{
    ctx__hnode_t *c = node_alloc(n->collision, n->count + extra);
    if (c == NULL)
        return NULL;
    c->bitmap = n->bitmap;
    c->count = n->count;
    memcpy(c->e, n->e, n->count * sizeof(hentry_t));
    for (uint32_t i = 0; i < n->count; i++)
        if (i != skip)
            entry_retain(&c->e[i]);
    return c;
}

/* Capacity for an owned node that must grow: leave slack so a run of sets
 * into the same node does not reallocate every time. */
static uint32_t grown_cap(const ctx__hnode_t *n)
{
    uint32_t want = n->count + 1 + (n->count + 1) / 2;
    if (!n->collision && want > FANOUT)
        want = FANOUT;
    return want;
}

/* Makes room for one entry at index idx of an owned node, moving the
 * entries (their references move with them).  Returns the node to use,
 * which may be a new one (the old is freed), or NULL on ENOMEM with n
 * untouched. */
static ctx__hnode_t *owned_open_gap(ctx__hnode_t *n, uint32_t idx)
{
    if (n->count == n->cap) {
        ctx__hnode_t *g = node_alloc(n->collision, grown_cap(n));
        if (g == NULL)
            return NULL;
        g->bitmap = n->bitmap;
        g->count = n->count;
        memcpy(g->e, n->e, n->count * sizeof(hentry_t));
        ctx__free(n);
        n = g;
    }
    memmove(&n->e[idx + 1], &n->e[idx], (n->count - idx) * sizeof(hentry_t));
    n->count++;
    return n;
}

/* A copy of shared node n with one more entry gap at idx (unfilled). */
static ctx__hnode_t *copy_open_gap(const ctx__hnode_t *n, uint32_t idx)
{
    ctx__hnode_t *c = node_alloc(n->collision, n->count + 1);
    if (c == NULL)
        return NULL;
    c->bitmap = n->bitmap;
    c->count = n->count + 1;
    memcpy(c->e, n->e, idx * sizeof(hentry_t));
    memcpy(&c->e[idx + 1], &n->e[idx], (n->count - idx) * sizeof(hentry_t));
    for (uint32_t i = 0; i < c->count; i++)
        if (i != idx)
            entry_retain(&c->e[i]);
    return c;
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
            for (uint32_t i = 0; i < n->count; i++)
                if (n->e[i].key == key) {
                    *value = n->e[i].value;
                    return CTX__H_FOUND;
                }
            return CTX__H_NOT_FOUND;
        }
        uint32_t bit = slot_bit(hash, shift);
        if (!(n->bitmap & bit))
            return CTX__H_NOT_FOUND;
        const hentry_t *e = &n->e[slot_index(n->bitmap, bit)];
        if (e->key == NULL) {
            n = e->value;
            continue;
        }
        if (e->key != key)
            return CTX__H_NOT_FOUND;
        *value = e->value;
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
} assoc_t;

static ctx__hnode_t *assoc(ctx__hnode_t *n, bool owned, unsigned shift,
                           assoc_t *a);

/* Puts the new binding into the empty slot `bit` of bitmap node n. */
static ctx__hnode_t *assoc_empty_slot(ctx__hnode_t *n, bool owned,
                                      uint32_t bit, assoc_t *a)
{
    uint32_t idx = slot_index(n->bitmap, bit);
    ctx__hnode_t *r = owned ? owned_open_gap(n, idx) : copy_open_gap(n, idx);
    if (r == NULL)
        return NULL;
    r->bitmap |= bit;
    r->e[idx] = (hentry_t){a->key, a->value};
    entry_retain(&r->e[idx]);
    a->added = true;
    return r;
}

/* Replaces entry idx of n (bitmap or collision) by `with`, in place when
 * owned, else in a copy.  `with` already holds its references. */
static ctx__hnode_t *replace_entry(ctx__hnode_t *n, bool owned, uint32_t idx,
                                   hentry_t with)
{
    if (!owned) {
        n = node_copy(n, 0, idx);
        if (n == NULL)
            return NULL;
    }
    n->e[idx] = with;
    return n;
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
    ctx__hnode_t *r = replace_entry(n, owned, idx, (hentry_t){NULL, sub});
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
        ctx__value_retain(a->key, a->value);
        e->value = a->value;
        a->g->key = a->key;
        a->g->value = old;
        a->g->drop_key = false;
        return n;
    }
    ctx__hnode_t *r = node_copy(n, 0, idx);
    if (r == NULL)
        return NULL;
    ctx__var_incref(a->key);
    ctx__value_retain(a->key, a->value);
    r->e[idx].value = a->value;
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
        n->e[idx].value = nc;
        if (!child_owned)
            a->g->root = child; /* the boundary: drop n's old reference */
        return n;
    }
    ctx__hnode_t *r = replace_entry(n, false, idx, (hentry_t){NULL, nc});
    if (r == NULL)
        discard_copy(a->g, nc);
    return r;
}

static ctx__hnode_t *assoc_collision(ctx__hnode_t *n, bool owned,
                                     unsigned shift, assoc_t *a)
{
    if (a->hash != n->bitmap) {
        /* A different hash reached this collision node's slot: put the
         * collision node and the new binding under a new bitmap node. */
        hentry_t fresh = {a->key, a->value};
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
    ctx__hnode_t *r = owned ? owned_open_gap(n, n->count)
                            : copy_open_gap(n, n->count);
    if (r == NULL)
        return NULL;
    r->e[r->count - 1] = (hentry_t){a->key, a->value};
    entry_retain(&r->e[r->count - 1]);
    a->added = true;
    return r;
}

/* Returns the node that replaces n (n itself when changed in place or not
 * at all), or NULL on ENOMEM with nothing reachable changed. */
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
    assoc_t a = {key, key->hash, value, false, garbage};
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
        if (r == NULL)
            return CTX__H_ERROR;
        if (r != old && !owned)
            garbage->root = old;
    }
    *root = r;
    *added = a.added;
    return CTX__H_FOUND;
}

/* ------------------------------------------------------------------
 * Removal
 * ---------------------------------------------------------------- */

typedef struct {
    const ctx_var_t *key;
    uint32_t hash;
    ctx__hgarbage_t *g;
} without_t;

/* n without entry idx (and without `bit` in its bitmap), in place when
 * owned.  *out is NULL when nothing is left.  An owned node gives up its
 * reference to a removed binding through the garbage record; a removed
 * child reference is the caller's business. */
static ctx__hres_t drop_entry(ctx__hnode_t *n, bool owned, uint32_t idx,
                              uint32_t bit, ctx__hnode_t **out)
{
    if (n->count == 1) {
        if (owned)
            ctx__free(n);
        *out = NULL;
        return CTX__H_FOUND;
    }
    if (owned) {
        memmove(&n->e[idx], &n->e[idx + 1],
                (n->count - idx - 1) * sizeof(hentry_t));
        n->count--;
        n->bitmap &= ~bit;
        *out = n;
        return CTX__H_FOUND;
    }
    ctx__hnode_t *c = node_alloc(n->collision, n->count - 1);
    if (c == NULL)
        return CTX__H_ERROR;
    c->bitmap = n->bitmap & ~bit;
    c->count = n->count - 1;
    memcpy(c->e, n->e, idx * sizeof(hentry_t));
    memcpy(&c->e[idx], &n->e[idx + 1], (c->count - idx) * sizeof(hentry_t));
    for (uint32_t i = 0; i < c->count; i++)
        entry_retain(&c->e[i]);
    *out = c;
    return CTX__H_FOUND;
}

static ctx__hres_t drop_binding(ctx__hnode_t *n, bool owned, uint32_t idx,
                                uint32_t bit, without_t *w, ctx__hnode_t **out)
{
    hentry_t gone = n->e[idx];
    ctx__hres_t r = drop_entry(n, owned, idx, bit, out);
    if (r == CTX__H_FOUND && owned) {
        w->g->key = gone.key;
        w->g->value = gone.value;
        w->g->drop_key = true;
    }
    return r;
}

static ctx__hres_t without(ctx__hnode_t *n, bool owned, unsigned shift,
                           without_t *w, ctx__hnode_t **out);

/* Slot idx of n holds a child that lost the key and became nc. */
static ctx__hres_t without_child(ctx__hnode_t *n, bool owned, unsigned shift,
                                 uint32_t idx, uint32_t bit, without_t *w,
                                 ctx__hnode_t **out)
{
    ctx__hnode_t *child = n->e[idx].value, *nc;
    bool child_owned = owned && node_owned(child);
    ctx__hres_t r = without(child, child_owned, shift + BITS, w, &nc);
    if (r != CTX__H_FOUND)
        return r;
    /* nc (if any) is ours alone: the child changed in place, or a copy.
     * Only a shared n can fail here, and below a shared n every node on
     * the path is a fresh copy, so releasing nc undoes everything. */
    if (nc == NULL) {
        r = drop_entry(n, owned, idx, bit, out);
        if (r != CTX__H_FOUND)
            return r;
    } else {
        /* Canonical form: a lone binding moves up into our slot. */
        hentry_t with = single_binding(nc) ? nc->e[0] : (hentry_t){NULL, nc};
        *out = replace_entry(n, owned, idx, with);
        if (*out == NULL) {
            discard_copy(w->g, nc);
            return CTX__H_ERROR;
        }
        if (with.key != NULL)
            ctx__free(nc); /* its binding's references moved up */
    }
    if (owned && !child_owned)
        w->g->root = child; /* the boundary: drop n's old reference */
    return CTX__H_FOUND;
}

static ctx__hres_t without(ctx__hnode_t *n, bool owned, unsigned shift,
                           without_t *w, ctx__hnode_t **out)
{
    if (n->collision) {
        for (uint32_t i = 0; i < n->count; i++)
            if (n->e[i].key == w->key)
                return drop_binding(n, owned, i, 0, w, out);
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
    return drop_binding(n, owned, idx, bit, w, out);
}

ctx__hres_t ctx__hamt_without(ctx__hnode_t **root, const ctx_var_t *key,
                              ctx__hgarbage_t *garbage)
{
    ctx__hnode_t *old = *root, *r;
    if (old == NULL)
        return CTX__H_NOT_FOUND;
    without_t w = {key, key->hash, garbage};
    bool owned = node_owned(old);
    ctx__hres_t res = without(old, owned, 0, &w, &r);
    if (res != CTX__H_FOUND)
        return res;
    if (!owned)
        garbage->root = old;
    *root = r;
    return CTX__H_FOUND;
}
