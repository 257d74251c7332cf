#!/usr/bin/env python3
"""gen.py - random programs for the differential test against CPython.

usage: gen.py N SEED > programs.txt

A program is a few lines of a tiny block-structured language that both
ref.py (CPython's contextvars) and interp.c (ctxvars) execute, each
printing one line per observable result; run.sh compares the two.

    program N                 starts program N (fresh variables and slots)
    var vI D|-                declares variable vI, default D or none
    set vI X [tK]             var.set(X), the token into slot tK
    get vI / getor vI X       var.get() / var.get(X)
    reset vI tK               var.reset(token in tK)
    tinfo tK                  token.var.name and token.old_value
    copy cJ / new cJ          cJ = copy_context() / Context()
    ccopy cJ cL / dup cJ cL   cJ = cL.copy() / cJ = cL (same object)
    drop cJ                   empties slot cJ
    cget cJ vI / cin cJ vI    cJ[vI] / vI in cJ
    clen cJ / citems cJ       len(cJ) / the bindings of cJ
    cur                       the bindings of copy_context()
    run cJ ... end            cJ.run(block)
    enter cJ ... exit cJ      ctx_context_enter/exit; cJ.run(block) in Python
    thread TN ... end         start a thread running block in a copy of the
                              current context; it runs until it reaches
                              `pause` or its end, and only then does its
                              creator go on (so exactly one thread runs at
                              any time and the output is deterministic)
    pause                     (thread code only) hand control back
    join TN                   resume the thread and join it
    job JN vI ... end         run block as a pool job in a snapshot, and
                              wait for it; its result is vI.get(-1) at its
                              end, printed by `wait JN` (may repeat)
    jobin JN cJ vI ... end    the same in a copy of cJ (ctx_pool_submit_in)
    callable kK ... end       snapshot now; `call kK` runs block in a fresh
                              copy of the snapshot (ctx_callable_*)

Slots hold nothing until assigned; using an empty slot prints EMPTY on
both sides without calling anything.
"""
import random
import sys

NCTX = 3
NTOK = 4
NCALL = 2
MAX_DEPTH = 4
MAX_STMTS = 160


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.nvar = rng.randint(2, 4)
        self.nthread = 0
        self.njob = 0
        self.stmts = 0
        self.tok_var = {}  # token slot -> variable last set into it

    def var(self):
        return 'v%d' % self.r.randrange(self.nvar)

    def ctx(self):
        return 'c%d' % self.r.randrange(NCTX)

    def tok(self):
        return 't%d' % self.r.randrange(NTOK)

    def val(self):
        return str(self.r.randrange(100))

    def simple(self):
        """One statement that opens no block."""
        r = self.r
        k = r.randrange(100)
        if k < 22:
            v = self.var()
            if r.random() < 0.5:
                return 'set %s %s' % (v, self.val())
            t = self.tok()
            self.tok_var[t] = v
            return 'set %s %s %s' % (v, self.val(), t)
        if k < 34:
            return 'get ' + self.var()
        if k < 38:
            return 'getor %s %s' % (self.var(), self.val())
        if k < 50:
            t = self.tok()
            v = self.tok_var.get(t) if r.random() < 0.6 else None
            return 'reset %s %s' % (v or self.var(), t)
        if k < 52:
            return 'tinfo ' + self.tok()
        if k < 58:
            return 'copy ' + self.ctx()
        if k < 60:
            return 'new ' + self.ctx()
        if k < 64:
            return 'ccopy %s %s' % (self.ctx(), self.ctx())
        if k < 66:
            return 'dup %s %s' % (self.ctx(), self.ctx())
        if k < 67:
            return 'drop ' + self.ctx()
        if k < 73:
            return 'cget %s %s' % (self.ctx(), self.var())
        if k < 76:
            return 'cin %s %s' % (self.ctx(), self.var())
        if k < 80:
            return 'clen ' + self.ctx()
        if k < 85:
            return 'citems ' + self.ctx()
        return 'cur'

    def block(self, depth, kind, pause_box, lo, hi, incall=False):
        """A list of lines.  kind: main, thread, job or callable (what runs
        the block); pause_box: [bool] shared by one thread's blocks; incall:
        inside a callable's body, where `call` could recurse forever."""
        out = []
        pending = []  # (join line) for threads and jobs started here
        for _ in range(self.r.randint(lo, hi)):
            if self.stmts >= MAX_STMTS:
                break
            self.stmts += 1
            if pending and self.r.random() < 0.25:
                out.append(pending.pop(self.r.randrange(len(pending))))
            out.extend(self.statement(depth, kind, pause_box, pending, incall))
        self.r.shuffle(pending)
        out.extend(pending)
        return out

    def statement(self, depth, kind, pause_box, pending, incall):
        r = self.r
        k = r.randrange(100)
        ind = lambda lines: ['  ' + s for s in lines]
        nested = depth < MAX_DEPTH
        if kind == 'thread' and not pause_box[0] and k < 6:
            pause_box[0] = True
            return ['pause']
        if nested and k < 16:
            c = self.ctx()
            body = ind(self.block(depth + 1, kind, pause_box, 1, 5, incall))
            if r.random() < 0.6:
                return ['run ' + c] + body + ['end']
            return ['enter ' + c] + body + ['exit ' + c]
        if nested and k < 21:
            self.nthread += 1
            t = 'T%d' % self.nthread
            body = ind(self.block(depth + 1, 'thread', [False], 1, 6, incall))
            pending.append('join ' + t)
            return ['thread ' + t] + body + ['end']
        if nested and k < 25:
            self.njob += 1
            j = 'J%d' % self.njob
            head = 'job %s %s' % (j, self.var())
            if r.random() < 0.4:
                head = 'jobin %s %s %s' % (j, self.ctx(), self.var())
            body = ind(self.block(depth + 1, 'job', None, 1, 5, incall))
            pending.append('wait ' + j)
            if r.random() < 0.2:
                pending.append('wait ' + j)
            return [head] + body + ['end']
        if nested and not incall and k < 27:
            body = ind(self.block(depth + 1, 'callable', None, 1, 4, True))
            return ['callable k%d' % r.randrange(NCALL)] + body + ['end']
        if not incall and k < 30:
            return ['call k%d' % r.randrange(NCALL)]
        return [self.simple()]

    def program(self, n):
        lines = ['program %d' % n]
        for i in range(self.nvar):
            d = self.val() if self.r.random() < 0.4 else '-'
            lines.append('var v%d %s' % (i, d))
        for c in range(NCTX):  # mostly filled slots: fewer EMPTY lines
            if self.r.random() < 0.7:
                lines.append(self.r.choice(('copy c%d', 'new c%d')) % c)
        lines += self.block(0, 'main', None, 8, 40)
        return lines


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.extend(Gen(rng).program(i))
    sys.stdout.write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
