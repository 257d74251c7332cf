/*
 * hamt_node.h - the trie's node layout, shared by hamt.c (updates) and
 * hamt_walk.c (iteration, invariant checks, dumps) and nobody else.
 */
#ifndef CTXVARS_HAMT_NODE_H
#define CTXVARS_HAMT_NODE_H

#include "internal.h"

#define BITS 5
#define FANOUT 32u
#define MAX_SHIFT 30 /* the last level, with 2 bits */

typedef struct {
    ctx_var_t *key; /* NULL: value is a child node */
    void *value;
} hentry_t;

struct ctx__hnode {
    atomic_uint refcnt;
    uint32_t bitmap;        /* collision nodes: the keys' common hash */
    uint32_t count;
    uint32_t cap : 31;
    uint32_t collision : 1;
    hentry_t e[];
};

static inline bool single_binding(const ctx__hnode_t *n)
{
    return n != NULL && n->count == 1 && n->e[0].key != NULL;
}

#endif
