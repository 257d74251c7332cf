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
    with cJ ... end           CTX_ENTER(cJ) { block }; cJ.run(block) in Python
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
    fiber FN ... end          declare fiber FN: its context is a copy of
                              the current one, taken now; block runs later
    resume FN                 run FN until its next `yield` or its end (on
                              the resumer's thread: fibers migrate); DONE
                              if it has ended
    yield                     (fiber code only) hand control back to the
                              resumer; contexts run or entered around it
                              stay held by the fiber meanwhile
    release FN                drop fiber FN (always an ended one)

Slots hold nothing until assigned; using an empty slot prints EMPTY on
both sides without calling anything.

Fibers keep the output deterministic and the program deadlock-free by
construction: a fiber is declared only where a block runs at most once
(not in a callable's body), resumed only from code that no fiber is
running (main, thread and job blocks outside any fiber body or callable),
and at the program's end every fiber gets one resume more than it has
`yield` statements, in declaration order (a fiber declared in another's
body is declared after it, so it exists by its turn), then a release.
Those last resumes come from main, a new thread or a pool job at random,
so that fibers migrate between OS threads even when nothing else in the
program resumes them.
"""
import random
import sys

NCTX = 3
NTOK = 4
NCALL = 2
MAX_DEPTH = 4
MAX_STMTS = 160
MAX_YIELDS = 3  # per fiber body


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.nvar = rng.randint(2, 4)
        self.nthread = 0
        self.njob = 0
        self.fibers = []  # (name, [yields in its body]) in declaration order
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

    def block(self, depth, kind, box, lo, hi, incall=False, infiber=False):
        """A list of lines.  kind: main, thread, job, callable or fiber
        (what runs the block); box: [pauses or yields so far] shared by one
        thread's or fiber's blocks; incall: inside a callable's body, where
        `call` could recurse forever and a block may run more than once;
        infiber: inside a fiber's body (nested threads and jobs included),
        where a resume could resume the running fiber itself."""
        out = []
        pending = []  # (join line) for threads and jobs started here
        for _ in range(self.r.randint(lo, hi)):
            if self.stmts >= MAX_STMTS:
                break
            self.stmts += 1
            if pending and self.r.random() < 0.25:
                out.append(pending.pop(self.r.randrange(len(pending))))
            out.extend(self.statement(depth, kind, box, pending, incall,
                                      infiber))
        self.r.shuffle(pending)
        out.extend(pending)
        return out

    def statement(self, depth, kind, box, pending, incall, infiber):
        r = self.r
        k = r.randrange(100)
        ind = lambda lines: ['  ' + s for s in lines]
        nested = depth < MAX_DEPTH
        if kind == 'thread' and box[0] < 1 and k < 6:
            box[0] += 1
            return ['pause']
        if kind == 'fiber' and box[0] < MAX_YIELDS and r.random() < 0.12:
            box[0] += 1
            return ['yield']
        if nested and k < 16:
            c = self.ctx()
            body = ind(self.block(depth + 1, kind, box, 1, 5, incall,
                                  infiber))
            pick = r.random()
            if pick < 0.45:
                return ['run ' + c] + body + ['end']
            if pick < 0.7:
                return ['with ' + c] + body + ['end']
            return ['enter ' + c] + body + ['exit ' + c]
        if nested and k < 21:
            self.nthread += 1
            t = 'T%d' % self.nthread
            body = ind(self.block(depth + 1, 'thread', [0], 1, 6, incall,
                                  infiber))
            pending.append('join ' + t)
            return ['thread ' + t] + body + ['end']
        if nested and k < 25:
            self.njob += 1
            j = 'J%d' % self.njob
            head = 'job %s %s' % (j, self.var())
            if r.random() < 0.4:
                head = 'jobin %s %s %s' % (j, self.ctx(), self.var())
            body = ind(self.block(depth + 1, 'job', None, 1, 5, incall,
                                  infiber))
            pending.append('wait ' + j)
            if r.random() < 0.2:
                pending.append('wait ' + j)
            return [head] + body + ['end']
        if nested and not incall and k < 27:
            body = ind(self.block(depth + 1, 'callable', None, 1, 4, True))
            return ['callable k%d' % r.randrange(NCALL)] + body + ['end']
        if not incall and k < 30:
            return ['call k%d' % r.randrange(NCALL)]
        if nested and not incall and k < 33:
            f = 'F%d' % (len(self.fibers) + 1)
            yields = [0]
            # Listed before its body is made: a fiber declared in this body
            # comes after it in the final resumes.  (Nothing in the body can
            # resume it: infiber.)
            self.fibers.append((f, yields))
            body = ind(self.block(depth + 1, 'fiber', yields, 1, 6, False,
                                  True))
            return ['fiber ' + f] + body + ['end']
        if self.fibers and not incall and not infiber and k < 38:
            return ['resume ' + r.choice(self.fibers)[0]]
        return [self.simple()]

    def migrating_resume(self, f):
        """A resume of f from main, or from a new thread or pool job, so
        that most fibers run on more than one OS thread."""
        k = self.r.randrange(10)
        if k < 4:
            self.nthread += 1
            t = 'T%d' % self.nthread
            return ['thread ' + t, '  resume ' + f, 'end', 'join ' + t]
        if k < 6:
            self.njob += 1
            j = 'J%d' % self.njob
            return ['job %s %s' % (j, self.var()), '  resume ' + f, 'end',
                    'wait ' + j]
        return ['resume ' + f]

    def program(self, n):
        lines = ['program %d' % n]
        for i in range(self.nvar):
            d = self.val() if self.r.random() < 0.4 else '-'
            lines.append('var v%d %s' % (i, d))
        for c in range(NCTX):  # mostly filled slots: fewer EMPTY lines
            if self.r.random() < 0.7:
                lines.append(self.r.choice(('copy c%d', 'new c%d')) % c)
        lines += self.block(0, 'main', None, 8, 40)
        for f, yields in self.fibers:
            for _ in range(yields[0] + 1):
                lines += self.migrating_resume(f)
        lines += ['release ' + f for f, _ in self.fibers]
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
