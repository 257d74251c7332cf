#!/usr/bin/env python3
"""ref.py - runs gen.py's programs (stdin) with CPython's contextvars and
prints one line per observable result, the reference for interp.c.

Python errors are printed as the errno names ctxvars returns for the same
condition (include/ctxvars.h):
    var.get() / ctx[var] with nothing found   LookupError   -> ENOENT
    reset with a used token                   RuntimeError  -> EALREADY
    reset by another variable or context      ValueError    -> EINVAL
    run of a context entered by any thread    RuntimeError  -> EBUSY
There is no Context.__enter__ in Python, so `enter c ... exit c` runs its
block through c.run() as well, printing what enter and exit would.

A fiber is modelled as asyncio models a Task, with a thread for the
coroutine: a thread started in a copy of its creator's context, taken at
the declaration, that runs only from a resume to its next yield while the
resumer waits.  A yield inside c.run() leaves the fiber's thread inside
it, so c stays entered (EBUSY for everyone else) until the fiber goes on:
what ctxvars must show for a suspended fiber that holds c.
"""
import concurrent.futures
import contextvars
import sys
import threading


def parse(lines):
    """Statements as (words, body) with body a list of statements."""
    stack = [[]]
    for line in lines:
        w = line.split()
        if not w:
            continue
        if w[0] in ('end', 'exit'):
            body = stack.pop()
            head = stack[-1][-1]
            stack[-1][-1] = (head[0], body, w)
            continue
        stmt = (w, None, None)
        stack[-1].append(stmt)
        if w[0] in ('run', 'enter', 'with', 'thread', 'job', 'jobin',
                    'callable', 'fiber'):
            stack.append([])
    assert len(stack) == 1, 'unbalanced program'
    return stack[0]


def num(word):
    return int(word.lstrip('vctTJk'))


class Thread:
    """A program thread: its creator waits until it pauses or ends."""

    def __init__(self, prog, body):
        self.cv = threading.Condition()
        self.stopped = False  # paused or finished
        self.resume = False
        ctx = contextvars.copy_context()
        self.th = threading.Thread(target=ctx.run,
                                   args=(self.main, prog, body))

    def main(self, prog, body):
        prog.block(body, self)
        with self.cv:
            self.stopped = True
            self.cv.notify_all()

    def start(self):
        self.th.start()
        with self.cv:
            while not self.stopped:
                self.cv.wait()

    def pause(self):
        with self.cv:
            self.stopped = True
            self.cv.notify_all()
            while not self.resume:
                self.cv.wait()

    def join(self):
        with self.cv:
            self.resume = True
            self.cv.notify_all()
        self.th.join()


class Fiber:
    """A program fiber: a thread in its own context that runs only between
    a resume and its next yield (or its end); the resumer waits."""

    def __init__(self, prog, body):
        self.cv = threading.Condition()
        self.running = False  # the fiber's turn; its resumer waits
        self.done = False
        ctx = contextvars.copy_context()
        self.th = threading.Thread(target=ctx.run,
                                   args=(self.main, prog, body))
        self.th.start()

    def main(self, prog, body):
        with self.cv:
            while not self.running:
                self.cv.wait()
        prog.block(body, self)
        with self.cv:
            self.done = True
            self.running = False
            self.cv.notify_all()

    def resume(self):
        with self.cv:
            self.running = True
            self.cv.notify_all()
            while self.running:
                self.cv.wait()

    def yield_(self):
        with self.cv:
            self.running = False
            self.cv.notify_all()
            while not self.running:
                self.cv.wait()


class Program:
    def __init__(self, pool, out):
        self.pool = pool
        self.out = out
        self.vars = {}
        self.ctx = {}
        self.tok = {}
        self.threads = {}
        self.jobs = {}
        self.callables = {}
        self.fibers = {}

    def p(self, *words):
        self.out.append(' '.join(str(w) for w in words))

    def items(self, ctx):
        return ' '.join('%s=%s' % (n, ctx[v])
                        for n, v in sorted(self.vars.items()) if v in ctx)

    def block(self, stmts, me):
        for w, body, close in stmts:
            getattr(self, 'op_' + w[0])(w, body, close, me)

    # --- variables and tokens ---------------------------------------
    def op_var(self, w, body, close, me):
        if w[2] == '-':
            self.vars[w[1]] = contextvars.ContextVar(w[1])
        else:
            self.vars[w[1]] = contextvars.ContextVar(w[1], default=int(w[2]))

    def op_set(self, w, body, close, me):
        t = self.vars[w[1]].set(int(w[2]))
        if len(w) > 3:
            self.tok[w[3]] = t
        self.p(*w, 0)

    def op_get(self, w, body, close, me):
        try:
            self.p(*w, '=', self.vars[w[1]].get())
        except LookupError:
            self.p(*w, 'ENOENT')

    def op_getor(self, w, body, close, me):
        self.p(*w, '=', self.vars[w[1]].get(int(w[2])))

    def op_reset(self, w, body, close, me):
        t = self.tok.get(w[2])
        if t is None:
            return self.p(*w, 'EMPTY')
        try:
            self.vars[w[1]].reset(t)
            self.p(*w, 0)
        except RuntimeError:
            self.p(*w, 'EALREADY')
        except ValueError:
            self.p(*w, 'EINVAL')
        except LookupError:
            self.p(*w, 'ENOENT')

    def op_tinfo(self, w, body, close, me):
        t = self.tok.get(w[1])
        if t is None:
            return self.p(*w, 'EMPTY')
        old = t.old_value
        self.p(*w, t.var.name, 'MISSING' if old is t.MISSING else old)

    # --- contexts ----------------------------------------------------
    def op_copy(self, w, body, close, me):
        self.ctx[w[1]] = contextvars.copy_context()

    def op_new(self, w, body, close, me):
        self.ctx[w[1]] = contextvars.Context()

    def op_ccopy(self, w, body, close, me):
        src = self.ctx.get(w[2])
        if src is None:
            return self.p(*w, 'EMPTY')
        self.ctx[w[1]] = src.copy()

    def op_dup(self, w, body, close, me):
        self.ctx[w[1]] = self.ctx.get(w[2])

    def op_drop(self, w, body, close, me):
        self.ctx[w[1]] = None

    def with_ctx(self, w, fn):
        c = self.ctx.get(w[1])
        if c is None:
            return self.p(*w, 'EMPTY')
        fn(c)

    def op_cget(self, w, body, close, me):
        def f(c):
            try:
                self.p(*w, '=', c[self.vars[w[2]]])
            except KeyError:
                self.p(*w, 'ENOENT')
        self.with_ctx(w, f)

    def op_cin(self, w, body, close, me):
        self.with_ctx(w, lambda c: self.p(*w, int(self.vars[w[2]] in c)))

    def op_clen(self, w, body, close, me):
        self.with_ctx(w, lambda c: self.p(*w, len(c)))

    def op_citems(self, w, body, close, me):
        self.with_ctx(w, lambda c: self.p(*w, self.items(c)))

    def op_cur(self, w, body, close, me):
        self.p(*w, self.items(contextvars.copy_context()))

    def run_block(self, w, body, me, close=None):
        c = self.ctx.get(w[1])
        if c is None:
            return self.p(*w, 'EMPTY')

        def inside():
            self.p(*w, 0)
            self.block(body, me)
        try:
            c.run(inside)
        except RuntimeError:
            return self.p(*w, 'EBUSY')
        if close is not None:
            self.p(*close, 0)

    def op_run(self, w, body, close, me):
        self.run_block(w, body, me)

    def op_enter(self, w, body, close, me):
        self.run_block(w, body, me, close)

    def op_with(self, w, body, close, me):
        # CTX_ENTER(c) { ... }: Python has no `with ctx:`, and c.run() is
        # what it means.
        self.run_block(w, body, me)

    # --- threads, jobs, callables -------------------------------------
    def op_thread(self, w, body, close, me):
        self.p(*w)
        t = Thread(self, body)
        self.threads[w[1]] = t
        t.start()

    def op_pause(self, w, body, close, me):
        self.p(*w)
        me.pause()

    def op_join(self, w, body, close, me):
        self.threads[w[1]].join()
        self.p(*w)

    def job(self, w, ctx, var, body):
        self.p(*w)

        def fn():
            self.block(body, None)
            return self.vars[var].get(-1)
        fut = self.pool.submit(ctx.run, fn)
        fut.result()
        self.jobs[w[1]] = fut

    def op_job(self, w, body, close, me):
        self.job(w, contextvars.copy_context(), w[2], body)

    def op_jobin(self, w, body, close, me):
        c = self.ctx.get(w[2])  # ctxvars: NULL means a new empty context
        self.job(w, contextvars.Context() if c is None else c.copy(), w[3],
                 body)

    def op_wait(self, w, body, close, me):
        fut = self.jobs.get(w[1])
        self.p(*w, '=', 'EMPTY' if fut is None else fut.result())

    def op_callable(self, w, body, close, me):
        self.callables[w[1]] = (contextvars.copy_context(), body)

    def op_call(self, w, body, close, me):
        k = self.callables.get(w[1])
        if k is None:
            return self.p(*w, 'EMPTY')
        self.p(*w)
        k[0].copy().run(self.block, k[1], None)

    # --- fibers ---------------------------------------------------------
    def op_fiber(self, w, body, close, me):
        self.p(*w)
        self.fibers[w[1]] = Fiber(self, body)

    def op_resume(self, w, body, close, me):
        f = self.fibers.get(w[1])
        if f is None:
            return self.p(*w, 'EMPTY')
        if f.done:
            return self.p(*w, 'DONE')
        self.p(*w, 0)
        f.resume()

    def op_yield(self, w, body, close, me):
        self.p(*w)
        me.yield_()

    def op_release(self, w, body, close, me):
        f = self.fibers.pop(w[1], None)
        if f is None:
            return self.p(*w, 'EMPTY')
        assert f.done, 'gen.py released a fiber that has not ended'
        f.th.join()
        self.p(*w)


def main():
    programs = []
    for line in sys.stdin:
        if line.startswith('program '):
            programs.append([line])
        elif programs:
            programs[-1].append(line)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for lines in programs:
            out = [lines[0].strip()]
            # Each program starts in an empty context of its own, as in
            # interp.c: nothing of the last program's leaks into it.
            contextvars.Context().run(Program(pool, out).block,
                                      parse(lines[1:]), None)
            sys.stdout.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
