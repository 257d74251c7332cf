/*
 * hamt_walk.c - reading a whole trie: iteration for ctx_context_foreach(),
 * and the invariant checker and dump that the tests and debug builds use.
 * Kept apart from hamt.c, which is about updates.
 */
#include "config.h"

#include "hamt_node.h"

int ctx__hamt_foreach(const ctx__hnode_t *n,
                      int (*fn)(ctx_var_t *key, void *value, void *arg),
                      void *arg)
{
    if (n == NULL)
        return 0;
    for (uint32_t i = 0; i < n->count; i++) {
        const hentry_t *e = &n->e[i];
        int rc = e->key != NULL ? fn(e->key, e->value, arg)
                                : ctx__hamt_foreach(e->value, fn, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static long check_fail(const char *what, unsigned shift)
{
    fprintf(stderr, "ctxvars: trie invariant broken at shift %u: %s\n", shift,
            what);
    return -1;
}

/* prefix: the hash bits every key under n shares, below `shift`. */
static long check_node(const ctx__hnode_t *n, unsigned shift, uint32_t prefix,
                       bool is_root)
{
    uint32_t mask = shift >= 32 ? UINT32_MAX : (1u << shift) - 1;
    if (atomic_load(&n->refcnt) == 0)
        return check_fail("live node with refcount 0", shift);
    if (n->count == 0 || n->count > n->cap)
        return check_fail("bad count", shift);
    if (n->collision) {
        if (is_root || n->count < 2)
            return check_fail("collision node at root or with < 2 keys", shift);
        if ((n->bitmap & mask) != prefix)
            return check_fail("collision hash off its path", shift);
        for (uint32_t i = 0; i < n->count; i++) {
            if (n->e[i].key == NULL || n->e[i].key->hash != n->bitmap)
                return check_fail("collision entry with another hash", shift);
            for (uint32_t j = 0; j < i; j++)
                if (n->e[j].key == n->e[i].key)
                    return check_fail("duplicate key", shift);
        }
        return n->count;
    }
    if (shift > MAX_SHIFT)
        return check_fail("bitmap node below the last level", shift);
    if (popcount32(n->bitmap) != n->count)
        return check_fail("bitmap does not match count", shift);
    if (!is_root && single_binding(n))
        return check_fail("subnode holding a single binding", shift);
    long total = 0;
    uint32_t idx = 0;
    for (uint32_t slot = 0; slot < FANOUT; slot++) {
        if (!(n->bitmap & (1u << slot)))
            continue;
        const hentry_t *e = &n->e[idx++];
        uint32_t sub_prefix = prefix | (slot << shift);
        if (e->key != NULL) {
            uint32_t m2 = shift + BITS >= 32 ? UINT32_MAX
                                             : (1u << (shift + BITS)) - 1;
            if ((e->key->hash & m2) != (sub_prefix & m2))
                return check_fail("key in the wrong slot", shift);
            total++;
            continue;
        }
        if (e->value == NULL)
            return check_fail("NULL child", shift);
        long sub = check_node(e->value, shift + BITS, sub_prefix, false);
        if (sub < 0)
            return -1;
        total += sub;
    }
    return total;
}

long ctx__hamt_check(const ctx__hnode_t *root)
{
    return root == NULL ? 0 : check_node(root, 0, 0, true);
}

int ctx__hamt_depth(const ctx__hnode_t *n)
{
    if (n == NULL)
        return 0;
    int deepest = 0;
    for (uint32_t i = 0; i < n->count; i++)
        if (n->e[i].key == NULL) {
            int d = ctx__hamt_depth(n->e[i].value);
            if (d > deepest)
                deepest = d;
        }
    return deepest + 1;
}

static void dump_node(const ctx__hnode_t *n, int depth, FILE *out)
{
    fprintf(out, "%*s%s %08x count=%u refcnt=%u\n", depth * 2, "",
            n->collision ? "collision" : "bitmap", n->bitmap, n->count,
            atomic_load(&n->refcnt));
    for (uint32_t i = 0; i < n->count; i++) {
        const hentry_t *e = &n->e[i];
        if (e->key == NULL)
            dump_node(e->value, depth + 1, out);
        else
            fprintf(out, "%*s%s (hash %08x) = %p\n", depth * 2 + 2, "",
                    e->key->name, e->key->hash, e->value);
    }
}

void ctx__hamt_dump(const ctx__hnode_t *root, FILE *out)
{
    if (root == NULL)
        fprintf(out, "(empty)\n");
    else
        dump_node(root, 0, out);
}
