/*
 * interp.c - runs gen.py's programs (stdin) on ctxvars and prints one line
 * per observable result, exactly as ref.py does with CPython's contextvars
 * (gen.py describes the language; run.sh compares the two outputs).
 *
 * Only one program thread runs at any time: a thread's creator waits until
 * it pauses or ends, `join` resumes it and waits for its end, and a job is
 * waited for as soon as it is submitted.  Every hand-over goes through a
 * mutex, a join or a future, so the interpreter's state needs no lock and
 * the output is deterministic.  Fibers (interp_fiber.c) keep that: a
 * resume runs the fiber on the resumer's own thread until it yields.
 */
#include "config.h"

#include "interp.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P(n) ((void *)(intptr_t)(n))

static const char *const op_names[OP_COUNT] = {
    "var", "set", "get", "getor", "reset", "tinfo", "copy", "new",
    "ccopy", "dup", "drop", "cget", "cin", "clen", "citems", "cur",
    "run", "enter", "thread", "pause", "join", "job", "jobin",
    "wait", "callable", "call", "fiber", "resume", "yield",
    "release", "with", "end", "exit"};

struct thr {
    pthread_t tid;
    int from, to;
    bool stopped, resume;
    struct agent self;
};

struct job {
    int from, to, var;
    ctx_future_t *fut;
};

struct program pr;

static ctx_pool_t *pool;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

_Noreturn void die(const char *what, int line)
{
    fprintf(stderr, "interp: %s (line %d)\n", what, line);
    exit(2);
}

void *xcalloc(size_t size)
{
    void *p = calloc(1, size);
    if (p == NULL)
        die("out of memory", __LINE__);
    return p;
}

const char *errname(int rc)
{
    static char buf[16];
    switch (rc) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EINVAL: return "EINVAL";
    case EALREADY: return "EALREADY";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case ENOMEM: return "ENOMEM";
    default: snprintf(buf, sizeof buf, "E%d", rc); return buf;
    }
}

void out(const struct stmt *s, const char *fmt, ...)
{
    fputs(s->text, stdout);
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        putchar(' ');
        vprintf(fmt, ap);
        va_end(ap);
    }
    putchar('\n');
}

/* A value read, or why there was none. */
static void out_value(const struct stmt *s, int rc, void *v)
{
    if (rc == 0)
        out(s, "= %ld", (long)(intptr_t)v);
    else
        out(s, "%s", errname(rc));
}


/* ------------------------------------------------------------------
 * Variables and tokens
 * ---------------------------------------------------------------- */

static void do_var(const struct stmt *s)
{
    char name[16];
    snprintf(name, sizeof name, "v%ld", s->arg[0]);
    ctx_var_release(pr.var[s->arg[0]]);
    if (ctx_var_create(&pr.var[s->arg[0]], name,
                       s->dash ? CTX_MISSING : P(s->arg[1]), NULL) != 0)
        die("var_create failed", __LINE__);
}

static void do_set(const struct stmt *s)
{
    ctx_token_t *t = NULL;
    int rc = ctx_var_set(pr.var[s->arg[0]], P(s->arg[1]),
                         s->nargs > 2 ? &t : NULL);
    if (rc == 0 && s->nargs > 2) {
        ctx_token_release(pr.tok[s->arg[2]]);
        pr.tok[s->arg[2]] = t;
    }
    out(s, "%s", errname(rc));
}

static void do_get(const struct stmt *s)
{
    void *v = NULL;
    int rc = ctx_var_get(pr.var[s->arg[0]], &v);
    out_value(s, rc, v);
}

static void do_reset(const struct stmt *s)
{
    ctx_token_t *t = pr.tok[s->arg[1]];
    if (t == NULL)
        out(s, "EMPTY");
    else
        out(s, "%s", errname(ctx_var_reset(pr.var[s->arg[0]], t)));
}

static void do_tinfo(const struct stmt *s)
{
    ctx_token_t *t = pr.tok[s->arg[0]];
    if (t == NULL) {
        out(s, "EMPTY");
        return;
    }
    void *old = ctx_token_old_value(t);
    if (old == CTX_MISSING)
        out(s, "%s MISSING", ctx_var_name(ctx_token_var(t)));
    else
        out(s, "%s %ld", ctx_var_name(ctx_token_var(t)), (long)(intptr_t)old);
}

/* ------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------- */

static void put_ctx(long slot, ctx_context_t *c)
{
    ctx_context_release(pr.ctx[slot]);
    pr.ctx[slot] = c;
}

static void do_newctx(const struct stmt *s)
{
    ctx_context_t *c = NULL;
    int rc;
    if (s->op == OP_COPY) {
        rc = ctx_copy_context(&c);
    } else if (s->op == OP_NEW) {
        rc = ctx_context_new(&c);
    } else if (s->op == OP_CCOPY) {
        if (pr.ctx[s->arg[1]] == NULL) {
            out(s, "EMPTY");
            return;
        }
        rc = ctx_context_copy(pr.ctx[s->arg[1]], &c);
    } else { /* dup */
        rc = 0;
        c = ctx_context_retain(pr.ctx[s->arg[1]]);
    }
    if (rc != 0)
        die("context creation failed", __LINE__);
    put_ctx(s->arg[0], c);
}

struct items {
    long val[MAXSLOT];
    bool set[MAXSLOT];
};

static int collect(ctx_var_t *var, void *value, void *arg)
{
    struct items *it = arg;
    for (int i = 0; i < MAXSLOT; i++) {
        if (pr.var[i] == var) {
            it->val[i] = (long)(intptr_t)value;
            it->set[i] = true;
            return 0;
        }
    }
    die("foreach gave a variable of no slot", __LINE__);
}

/* The bindings, in variable order, as ref.py's items() prints them. */
static void print_items(const struct stmt *s, const ctx_context_t *c)
{
    struct items it = {{0}, {false}};
    if (ctx_context_foreach(c, collect, &it) != 0)
        die("foreach failed", __LINE__);
    fputs(s->text, stdout);
    putchar(' ');
    const char *sep = "";
    for (int i = 0; i < MAXSLOT; i++) {
        if (it.set[i]) {
            printf("%sv%d=%ld", sep, i, it.val[i]);
            sep = " ";
        }
    }
    putchar('\n');
}

static void do_view(const struct stmt *s)
{
    const ctx_context_t *c = pr.ctx[s->arg[0]];
    if (c == NULL) {
        out(s, "EMPTY");
        return;
    }
    const ctx_var_t *v = s->nargs > 1 ? pr.var[s->arg[1]] : NULL;
    void *val = NULL;
    int rc;
    switch (s->op) {
    case OP_CGET:
        rc = ctx_context_get(c, v, &val);
        out_value(s, rc, val);
        break;
    case OP_CIN: out(s, "%d", ctx_context_contains(c, v) ? 1 : 0); break;
    case OP_CLEN: out(s, "%zu", ctx_context_len(c)); break;
    default: print_items(s, c); break;
    }
}

static void do_cur(const struct stmt *s)
{
    ctx_context_t *c = NULL;
    if (ctx_copy_context(&c) != 0)
        die("copy_context failed", __LINE__);
    print_items(s, c);
    ctx_context_release(c);
}

struct run_arg {
    const struct stmt *s;
    int from, to;
    struct agent *self;
};

static void *run_fn(void *p)
{
    struct run_arg *a = p;
    out(a->s, "0");
    exec_block(a->from, a->to, a->self);
    return a;
}

/* Returns the index after the block. */
static int do_run(int i, struct agent *self)
{
    const struct stmt *s = &pr.s[i];
    ctx_context_t *c = pr.ctx[s->arg[0]];
    if (c == NULL) {
        out(s, "EMPTY");
        return s->close + 1;
    }
    if (s->op == OP_RUN) {
        struct run_arg a = {s, i + 1, s->close, self};
        void *res = NULL;
        int rc = ctx_context_run(c, run_fn, &a, &res);
        if (rc != 0)
            out(s, "%s", errname(rc));
        else if (res != &a)
            die("run lost fn's result", __LINE__);
        return s->close + 1;
    }
    if (s->op == OP_WITH) {
        /* CTX_ENTER, Python's `with ctx:`: the block may drop the slot and
         * yield a fiber to another thread; the macro holds c and exits it
         * wherever the block ends. */
        int rc = 0;
        CTX_ENTER_STATUS(c, rc) {
            out(s, "0");
            exec_block(i + 1, s->close, self);
        }
        if (rc != 0)
            out(s, "%s", errname(rc));
        return s->close + 1;
    }
    /* enter/exit: the block may drop the slot; the entry holds c. */
    int rc = ctx_context_enter(c);
    out(s, "%s", errname(rc));
    if (rc == 0) {
        exec_block(i + 1, s->close, self);
        out(&pr.s[s->close], "%s", errname(ctx_context_exit(c)));
    }
    return s->close + 1;
}

/* ------------------------------------------------------------------
 * Threads, jobs and callables
 * ---------------------------------------------------------------- */

/* Raises flag (if any), then waits until *wait_for (if any) is raised. */
static void handoff(bool *flag, const bool *wait_for)
{
    pthread_mutex_lock(&mu);
    if (flag != NULL)
        *flag = true;
    pthread_cond_broadcast(&cv);
    while (wait_for != NULL && !*wait_for)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void *thread_fn(void *p)
{
    struct thr *t = p;
    exec_block(t->from, t->to, &t->self);
    handoff(&t->stopped, NULL);
    return NULL;
}

static int do_thread(int i)
{
    const struct stmt *s = &pr.s[i];
    struct thr *t = xcalloc(sizeof *t);
    t->from = i + 1;
    t->to = s->close;
    t->self.thr = t;
    pr.thr[s->arg[0]] = t;
    out(s, NULL);
    if (ctx_thread_create(&t->tid, NULL, thread_fn, t) != 0)
        die("ctx_thread_create failed", __LINE__);
    handoff(NULL, &t->stopped);
    return s->close + 1;
}

static void do_pause(const struct stmt *s, struct agent *self)
{
    out(s, NULL);
    if (self == NULL || self->thr == NULL)
        die("pause outside a thread", __LINE__);
    handoff(&self->thr->stopped, &self->thr->resume);
}

static void do_join(const struct stmt *s)
{
    struct thr *t = pr.thr[s->arg[0]];
    if (t == NULL)
        die("join of an unknown thread", __LINE__);
    handoff(&t->resume, NULL);
    if (pthread_join(t->tid, NULL) != 0)
        die("pthread_join failed", __LINE__);
    pr.thr[s->arg[0]] = NULL;
    free(t);
    out(s, NULL);
}

static void *job_fn(void *p)
{
    struct job *j = p;
    exec_block(j->from, j->to, NULL);
    return ctx_var_get_or(pr.var[j->var], P(-1));
}

static void drop_job(long id)
{
    if (pr.job[id] != NULL) {
        ctx_future_release(pr.job[id]->fut);
        free(pr.job[id]);
        pr.job[id] = NULL;
    }
}

static int do_job(int i)
{
    const struct stmt *s = &pr.s[i];
    struct job *j = xcalloc(sizeof *j);
    j->from = i + 1;
    j->to = s->close;
    j->var = (int)s->arg[s->op == OP_JOB ? 1 : 2];
    drop_job(s->arg[0]); /* a callable's body may run the same job twice */
    pr.job[s->arg[0]] = j;
    out(s, NULL);
    int rc = s->op == OP_JOB
                 ? ctx_pool_submit(pool, job_fn, j, &j->fut)
                 : ctx_pool_submit_in(pool, pr.ctx[s->arg[1]], job_fn, j,
                                      &j->fut);
    if (rc != 0 || ctx_future_wait(j->fut, NULL) != 0)
        die("pool job failed", __LINE__);
    return s->close + 1;
}

static void do_wait(const struct stmt *s)
{
    struct job *j = pr.job[s->arg[0]];
    void *res = NULL;
    if (j == NULL || ctx_future_wait(j->fut, &res) != 0)
        die("wait failed", __LINE__);
    out(s, "= %ld", (long)(intptr_t)res);
}

static void *call_fn(void *p)
{
    int i = (int)(intptr_t)p;
    exec_block(i + 1, pr.s[i].close, NULL);
    return NULL;
}

static int do_callable(int i)
{
    const struct stmt *s = &pr.s[i];
    ctx_callable_release(pr.call[s->arg[0]]);
    if (ctx_callable_create(&pr.call[s->arg[0]], call_fn, P(i)) != 0)
        die("callable_create failed", __LINE__);
    return s->close + 1;
}

static void do_call(const struct stmt *s)
{
    ctx_callable_t *k = pr.call[s->arg[0]];
    if (k == NULL) {
        out(s, "EMPTY");
        return;
    }
    out(s, NULL);
    if (ctx_callable_call(k, NULL) != 0)
        die("callable_call failed", __LINE__);
}

/* ------------------------------------------------------------------
 * The interpreter
 * ---------------------------------------------------------------- */

void exec_block(int from, int to, struct agent *self)
{
    for (int i = from; i < to;) {
        const struct stmt *s = &pr.s[i];
        switch (s->op) {
        case OP_RUN: case OP_ENTER: case OP_WITH: i = do_run(i, self); continue;
        case OP_THREAD: i = do_thread(i); continue;
        case OP_JOB: case OP_JOBIN: i = do_job(i); continue;
        case OP_CALLABLE: i = do_callable(i); continue;
        case OP_FIBER: i = do_fiber(i); continue;
        case OP_VAR: do_var(s); break;
        case OP_SET: do_set(s); break;
        case OP_GET: do_get(s); break;
        case OP_GETOR:
            out(s, "= %ld", (long)(intptr_t)ctx_var_get_or(
                                pr.var[s->arg[0]], P(s->arg[1])));
            break;
        case OP_RESET: do_reset(s); break;
        case OP_TINFO: do_tinfo(s); break;
        case OP_COPY: case OP_NEW: case OP_CCOPY: case OP_DUP:
            do_newctx(s);
            break;
        case OP_DROP: put_ctx(s->arg[0], NULL); break;
        case OP_CGET: case OP_CIN: case OP_CLEN: case OP_CITEMS:
            do_view(s);
            break;
        case OP_CUR: do_cur(s); break;
        case OP_PAUSE: do_pause(s, self); break;
        case OP_JOIN: do_join(s); break;
        case OP_WAIT: do_wait(s); break;
        case OP_CALL: do_call(s); break;
        case OP_RESUME: do_resume(s); break;
        case OP_YIELD: do_yield(s, self); break;
        case OP_RELEASE: do_release(s); break;
        default: die("stray end or exit", __LINE__);
        }
        i++;
    }
}


/* Words after the op: "v3" -> 3 (slots checked against their array), a
 * plain number as is, "-" (no default) sets dash. */
static void parse_args(struct stmt *s, char **w, int nw, int lineno)
{
    for (int i = 1; i < nw && s->nargs < 4; i++) {
        const char *p = w[i];
        long limit = -1;
        if (strcmp(p, "-") == 0) {
            s->dash = true;
            p = "0";
        } else if (*p >= 'a' && *p <= 'z') {
            limit = MAXSLOT;
            p++;
        } else if (*p >= 'A' && *p <= 'Z') {
            limit = MAXID;
            p++;
        }
        char *end;
        long v = strtol(p, &end, 10);
        if (*end != '\0' || (limit >= 0 && (v < 0 || v >= limit)))
            die("bad argument", lineno);
        s->arg[s->nargs++] = v;
    }
}

static int open_blocks[256];
static int nopen;

static void parse_line(char *line, int lineno)
{
    char *w[8], *save = NULL;
    int nw = 0;
    for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL && nw < 8;
         t = strtok_r(NULL, " \t\r\n", &save))
        w[nw++] = t;
    if (nw == 0)
        return;
    if (pr.n == pr.cap) {
        pr.cap = pr.cap ? 2 * pr.cap : 256;
        pr.s = realloc(pr.s, (size_t)pr.cap * sizeof *pr.s);
        if (pr.s == NULL)
            die("out of memory", lineno);
    }
    struct stmt *s = &pr.s[pr.n];
    memset(s, 0, sizeof *s);
    for (s->op = 0; s->op < OP_COUNT; s->op++)
        if (strcmp(w[0], op_names[s->op]) == 0)
            break;
    if (s->op == OP_COUNT)
        die("unknown statement", lineno);
    parse_args(s, w, nw, lineno);
    size_t len = 0;
    for (int i = 0; i < nw; i++)
        len += strlen(w[i]) + 1;
    s->text = xcalloc(len);
    for (int i = 0; i < nw; i++)
        strcat(strcat(s->text, i ? " " : ""), w[i]);
    if (s->op == OP_END || s->op == OP_EXIT) {
        if (nopen == 0)
            die("end without a block", lineno);
        pr.s[open_blocks[--nopen]].close = pr.n;
    } else if (s->op == OP_RUN || s->op == OP_ENTER || s->op == OP_WITH ||
               s->op == OP_THREAD ||
               s->op == OP_JOB || s->op == OP_JOBIN || s->op == OP_CALLABLE ||
               s->op == OP_FIBER) {
        if (nopen == 256)
            die("blocks nested too deep", lineno);
        open_blocks[nopen++] = pr.n;
    }
    pr.n++;
}

static void clear_program(void)
{
    for (int i = 0; i < MAXSLOT; i++) {
        ctx_token_release(pr.tok[i]);
        ctx_context_release(pr.ctx[i]);
        ctx_callable_release(pr.call[i]);
        ctx_var_release(pr.var[i]);
        pr.tok[i] = NULL, pr.ctx[i] = NULL, pr.call[i] = NULL;
        pr.var[i] = NULL;
    }
    for (int i = 0; i < MAXID; i++) {
        if (pr.thr[i] != NULL)
            die("a thread was never joined", __LINE__);
        drop_job(i);
    }
    check_fibers_released();
    for (int i = 0; i < pr.n; i++)
        free(pr.s[i].text);
    pr.n = 0;
}

/* Runs the parsed program in an empty context of its own (ref.py does the
 * same), so that nothing of one program is visible in the next. */
static void run_program(const char *header)
{
    if (nopen != 0)
        die("unclosed block", 0);
    printf("%s\n", header);
    ctx_context_t *root = NULL;
    if (ctx_context_new(&root) != 0 || ctx_context_enter(root) != 0)
        die("cannot enter the program's context", __LINE__);
    exec_block(0, pr.n, NULL);
    if (ctx_context_exit(root) != 0)
        die("cannot exit the program's context", __LINE__);
    ctx_context_release(root);
    clear_program();
}

int main(void)
{
    /* A job waits for the threads it starts, and they may wait for jobs of
     * their own from outside the pool, so each job open on the way down
     * holds a worker: gen.py's nesting limit keeps that at 4.  A job may
     * resume a fiber whose body opens 3 more (its body is one level down
     * at least), hence 8 (as many as ref.py's pool has). */
    if (ctx_pool_create(&pool, 8) != 0)
        die("ctx_pool_create failed", __LINE__);
    char *line = NULL, header[64] = "";
    size_t cap = 0;
    int lineno = 0;
    while (getline(&line, &cap, stdin) > 0) {
        lineno++;
        if (strncmp(line, "program ", 8) == 0) {
            if (header[0] != '\0')
                run_program(header);
            snprintf(header, sizeof header, "%.*s", (int)strcspn(line, "\r\n"),
                     line);
            continue;
        }
        parse_line(line, lineno);
    }
    if (header[0] != '\0')
        run_program(header);
    free(line);
    free(pr.s);
    if (ctx_pool_destroy(pool) != 0)
        die("ctx_pool_destroy failed", __LINE__);
    return fflush(stdout) == 0 ? 0 : 2;
}
