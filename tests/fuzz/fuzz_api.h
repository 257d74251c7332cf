/*
 * fuzz_api.h - what the files of the API fuzzer share: the reference
 * model, the decoder and the checking helpers.  See fuzz_api.c.
 */
#ifndef CTX_FUZZ_API_H
#define CTX_FUZZ_API_H

#include <ctxvars.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NVAR 6      /* variable slots */
#define NCTX 5      /* context slots */
#define NTOK 6      /* token slots */
#define MAXVID 40   /* variables one input may create */
#define MAXCID 80   /* contexts one input may create */
#define MAXDEPTH 12 /* entered contexts */
#define MAXRUN 4    /* nested runs */
#define NVAL 16     /* values 0..15 (0 is NULL) */
#define ABSENT (-1)

#define VAL(i) ((void *)(uintptr_t)(i))
extern const char fz_sentinel;
#define SENT ((void *)&fz_sentinel) /* "left untouched" marker */

#define FAIL(...)                                                            \
    do {                                                                     \
        fprintf(stderr, "fuzz_api: %s:%d: ", __FILE__, __LINE__);            \
        fprintf(stderr, __VA_ARGS__);                                        \
        fputc('\n', stderr);                                                 \
        abort();                                                             \
    } while (0)
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        fz_calls++;                                                          \
        if (!(cond))                                                         \
            FAIL(__VA_ARGS__);                                               \
    } while (0)

/* The model of one context object (copies are new objects). */
typedef struct {
    int16_t val[MAXVID]; /* by variable id: ABSENT or a value */
    bool entered;
} mctx_t;

typedef struct {
    ctx_token_t *t; /* NULL: empty slot */
    ctx_var_t *var;
    int vid, cid;
    int16_t old;
    bool used;
} mtok_t;

/* The model of one fiber (fuzz_fiber.c).  Records are never reused
 * within an input: a released fiber's stays until its suspend. */
#define NFIB 3    /* fiber slots */
#define MAXFIB 24 /* fibers one input may create */
struct fz_fiber {
    ctx_fiber_t *f;       /* NULL: freed */
    ctx_context_t *c;     /* its own context */
    int cid;
    bool resumed, released;
    int saved_base;       /* resumed: frame_base before */
    int at;               /* resumed: its context's depth in the stack */
    int runs_at;          /* resumed: the run nesting it was resumed at */
    int nheld;            /* suspended: what it holds, innermost last */
    struct {
        ctx_context_t *c;
        int cid;
    } held[MAXDEPTH];
};

struct fz_state {
    const uint8_t *p; /* the undecoded rest of the input */
    size_t n;
    ctx_var_t *var[NVAR];
    int vslot[NVAR];         /* variable id of each slot */
    ctx_var_t *vptr[MAXVID]; /* by id; stale once freed */
    int16_t vdef[MAXVID];
    int nvid;
    ctx_context_t *ctx[NCTX]; /* NULL: empty slot */
    int cslot[NCTX];          /* context id of each slot */
    mctx_t m[MAXCID];
    int ncid;
    mtok_t tok[NTOK];
    struct {
        ctx_context_t *c;
        int cid;
    } stack[MAXDEPTH]; /* [0] is the input's root context */
    int depth;
    int frame_base; /* exits may pop down to this depth, not below */
    int runs;
    bool mayfail; /* inside an injected allocation failure */
    struct fz_fiber fib[MAXFIB];
    int nfib;
    int fslot[NFIB];     /* record of each fiber slot, -1: empty */
    int rstack[MAXFIB];  /* records of the resumed fibers, innermost last */
    int nres;
};

extern struct fz_state fz;
extern unsigned long long fz_calls;

/* libFuzzer's entry point, and the number of results checked so far. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
unsigned long long fuzz_calls_checked(void);

/* fuzz_api.c */
uint8_t fz_byte(void);
bool fz_outcome(int got, int want, const char *what);
mctx_t *fz_cur(void);
int fz_cur_cid(void);
void *fz_valp(int v);
int fz_new_cid(const mctx_t *from);
void fz_run_op(void);

/* fuzz_ctx.c */
void fz_put_ctx(int slot, ctx_context_t *c, int cid);
void fz_push(ctx_context_t *c, int cid);
void fz_exit_top(void);
void fz_op_copy_current(void);
void fz_op_ctx_copy(void);
void fz_op_ctx_new(void);
void fz_op_ctx_release_or_dup(void);
void fz_op_enter(void);
void fz_op_exit(void);
void fz_op_run(void);
void fz_op_view(void);
void fz_op_foreach(void);
void fz_op_check_current(void);
void fz_op_nulls(void);

/* fuzz_fiber.c */
void fz_op_fiber(void);
void fz_fiber_setup(void);
void fz_fiber_unwind_run(void);
void fz_fiber_teardown(void);

/* fuzz_watch.c: watchers, and the model's word that it just switched. */
void fz_op_watch(void);
void fz_switched(void);
void fz_watch_teardown(void);
bool fz_watching(void);
void fz_run_ended(bool watched_at_start);

#endif
