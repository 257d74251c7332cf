/*
 * interp.h - what interp.c (the language) and interp_fiber.c (its fiber
 * statements) share: the parsed program, the slots, and the output.
 */
#ifndef CTXVARS_DIFF_INTERP_H
#define CTXVARS_DIFF_INTERP_H

#include <ctxvars.h>

#include <stdbool.h>

#define MAXSLOT 16  /* v, c, t and k slots */
#define MAXID 4096  /* thread, job and fiber numbers in one program */

enum op {
    OP_VAR, OP_SET, OP_GET, OP_GETOR, OP_RESET, OP_TINFO, OP_COPY, OP_NEW,
    OP_CCOPY, OP_DUP, OP_DROP, OP_CGET, OP_CIN, OP_CLEN, OP_CITEMS, OP_CUR,
    OP_RUN, OP_ENTER, OP_THREAD, OP_PAUSE, OP_JOIN, OP_JOB, OP_JOBIN,
    OP_WAIT, OP_CALLABLE, OP_CALL, OP_FIBER, OP_RESUME, OP_YIELD,
    OP_RELEASE, OP_WITH, OP_END, OP_EXIT, OP_COUNT
};

struct stmt {
    enum op op;
    int nargs;
    long arg[4];   /* numbers of the words after the op ("v3" -> 3) */
    bool dash;     /* `var vI -`: no default */
    int close;     /* block openers: index of their end or exit */
    char *text;    /* the words, single-spaced, as ref.py prints them */
};

/* What runs a block, for the statements that hand control back: `pause`
 * needs its thread, `yield` its fiber.  Main, jobs and callables pass
 * NULL. */
struct agent {
    struct thr *thr;
    struct fib *fib;
};

struct program {
    struct stmt *s;
    int n, cap;
    ctx_var_t *var[MAXSLOT];
    ctx_context_t *ctx[MAXSLOT];
    ctx_token_t *tok[MAXSLOT];
    ctx_callable_t *call[MAXSLOT]; /* arg: the index of its statement */
    struct thr *thr[MAXID];
    struct job *job[MAXID];
    struct fib *fib[MAXID];
};
extern struct program pr;

_Noreturn void die(const char *what, int line);
void *xcalloc(size_t size);
const char *errname(int rc);
/* Prints the statement's words, then the formatted result (if any). */
void out(const struct stmt *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void exec_block(int from, int to, struct agent *self);

/* interp_fiber.c: each returns as the statement's do_* in interp.c. */
int do_fiber(int i);
void do_resume(const struct stmt *s);
void do_yield(const struct stmt *s, struct agent *self);
void do_release(const struct stmt *s);
/* Dies if the program left a fiber unreleased. */
void check_fibers_released(void);

#endif
