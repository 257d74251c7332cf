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

/* Baseline x86-64 has no popcnt instruction, and __builtin_popcount then
 * becomes a call into libgcc (28 instructions) on every trie step.  The
 * SWAR count below is a dozen inline instructions; builds for a CPU with
 * popcnt (-mpopcnt, -march=native) get the instruction. */
static inline uint32_t popcount32(uint32_t x)
{
#ifdef __POPCNT__
    return (uint32_t)__builtin_popcount(x);
#else
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    return (x * 0x01010101u) >> 24;
#endif
}

static inline bool single_binding(const ctx__hnode_t *n)
{
    return n != NULL && n->count == 1 && n->e[0].key != NULL;
}

#endif
