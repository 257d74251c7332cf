# ctxvars-gdb.py - gdb support for libctxvars: `info ctxvars`.
#
# Installed as $(datadir)/gdb/auto-load$(libdir)/libctxvars.so.X.Y.Z-gdb.py,
# so gdb loads it whenever it loads the library (as it does libstdc++'s
# printers); `source` it by hand otherwise (a library linked statically).
#
# It answers "which request was this thread serving?" from a live process or
# a core file, so it never calls into the inferior: everything is read from
# memory, through the library's debug info (struct layouts) and the
# thread's TLS variable ctx__ts.  What it reads (lib/internal.h):
#
#   ctx__ts.current -> ctx->prev -> ... -> ctx__ts.base     innermost first
#   ctx->root: a trie of struct ctx__hnode (lib/hamt_node.h) whose entries
#              are {key, value}; key NULL means value is a child node
#   key: struct ctx_var, whose name is a C string
#   ctx__ts.fiber -> fiber->outer -> ...: resumed fibers (when the library
#              has them); a context that is some fiber's ->ctx is where that
#              fiber's contexts begin.
#
# The walk is defensive: the process may have died in the middle of an
# update, so loops, absurd counts and unreadable memory are reported, not
# followed.

import gdb

MAX_CONTEXTS = 4096    # longer chains are taken for a loop
MAX_DEPTH = 16         # the trie has 7 bitmap levels plus a collision node
MAX_NODE_ENTRIES = 4096
STRING_MAX = 200       # longer strings are shown cut, with "..."


class Missing(Exception):
    """Something the command needs is not there; str() says what."""


def _fields(t):
    return {f.name: f for f in t.strip_typedefs().fields()}


def _struct(name, needed):
    try:
        t = gdb.lookup_type(name)
    except gdb.error:
        raise Missing("no debug info for `%s'" % name)
    have = _fields(t)
    lacking = [f for f in needed if f not in have]
    if lacking:
        raise Missing("`%s' in the debug info has no field %s"
                      % (name, ", ".join(lacking)))
    return t


class Layout(object):
    """The library's types, from its debug info."""

    def __init__(self):
        if gdb.lookup_global_symbol("ctx__ts") is None:
            raise Missing("no debug info for the TLS variable `ctx__ts'")
        self.tstate = _struct("struct ctx__tstate", ("current", "base"))
        self.context = _struct("struct ctx_context", ("root", "len", "prev"))
        self.hnode = _struct("struct ctx__hnode", ("count", "e"))
        self.var = _struct("struct ctx_var", ("name",))
        e = _fields(self.hnode)["e"]
        self.e_offset = e.bitpos // 8
        self.entry = e.type.strip_typedefs().target()
        if not {"key", "value"} <= set(_fields(self.entry)):
            raise Missing("the trie entry type has no key/value fields")
        self.entry_size = self.entry.sizeof
        self.has_fibers = "fiber" in _fields(self.tstate)
        if self.has_fibers:
            self.fiber = _struct("struct ctx_fiber", ("ctx", "outer"))
        self.charp = gdb.lookup_type("char").pointer()

    def deref(self, addr, t):
        return gdb.Value(addr).cast(t.pointer()).dereference()


def _missing_message(what):
    libs = [o.filename for o in gdb.objfiles()
            if "libctxvars" in o.filename.split("/")[-1]]
    if libs:
        where = "%s is loaded but has no usable debug info" % libs[0]
    else:
        where = ("libctxvars is not loaded in this program, or it was "
                 "linked in without debug info")
    return ("info ctxvars: %s (%s). Build ctxvars with -g (the default "
            "CFLAGS) and do not strip it, or install its debug symbols."
            % (where, what))


# --- reading memory ------------------------------------------------------

def read_cstring(addr, limit=STRING_MAX, allow_empty=False):
    """The printable NUL-terminated string at addr, or None.  A string
    longer than limit comes back cut, ending in "..."."""
    if addr < 4096:
        return None
    inf = gdb.selected_inferior()
    data = b""
    a = addr
    found_nul = False
    while len(data) < limit:
        # Page by page: a string may end just before an unmapped page.
        n = min(4096 - a % 4096, limit - len(data))
        try:
            chunk = bytes(inf.read_memory(a, n))
        except (gdb.MemoryError, gdb.error):
            return None
        i = chunk.find(b"\0")
        if i >= 0:
            data += chunk[:i]
            found_nul = True
            break
        data += chunk
        a += n
    if not data and not allow_empty:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if found_nul:
            return None
        # The cut may have split a character; drop the partial one.
        try:
            text = data[:-3].decode("utf-8", "ignore")
        except UnicodeDecodeError:
            return None
    if not text.replace("\t", " ").isprintable():
        return None
    return text if found_nul else text + "..."


def quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"') \
        .replace("\t", "\\t")


def format_value(value):
    addr = int(value)
    shown = str(value)  # 0x... plus <symbol> where gdb knows one
    text = read_cstring(addr)
    if text is not None:
        shown += " " + quote(text)
    return shown


# --- the thread's state ----------------------------------------------------

_offset_cache = {}


def _thread_pointer():
    for reg in ("$fs_base", "$tpidr"):  # x86-64, aarch64
        try:
            return int(gdb.parse_and_eval(reg))
        except gdb.error:
            continue
    return None


def _registry(layout):
    """Every registered thread's state (tstate.c's list), for when gdb
    cannot read TLS itself."""
    try:
        head = gdb.parse_and_eval("'tstate.c'::registry")
    except gdb.error:
        return []
    out = []
    p = int(head)
    while p and len(out) < 100000 and p not in out:
        out.append(p)
        p = int(layout.deref(p, layout.tstate)["reg_next"])
    return out


def _tls_by_offset(layout):
    """The selected thread's ctx__ts without libthread_db (which is missing
    or does not match the libc a foreign core file was made with).  Initial-
    exec TLS sits at the same offset from the thread pointer in every
    thread, and the registry lists the addresses of the threads' states: the
    offset that pairs most threads with a registered state is that one."""
    regs = _registry(layout)
    tp = _thread_pointer()
    if not regs or tp is None:
        return None
    inf = gdb.selected_inferior()
    key = (inf.num, inf.pid, tuple(regs))
    if key not in _offset_cache:
        counts = {}
        thread = gdb.selected_thread()
        try:
            frame = gdb.selected_frame()
        except gdb.error:
            frame = None
        try:
            for th in inf.threads():
                th.switch()
                t = _thread_pointer()
                if t is None:
                    continue
                for r in regs:
                    counts[r - t] = counts.get(r - t, 0) + 1
        finally:
            thread.switch()
            if frame is not None and frame.is_valid():
                frame.select()
        if not counts:
            return None
        # Ties (a single registered thread): TLS lies near the pointer.
        _offset_cache[key] = max(counts, key=lambda d: (counts[d], -abs(d)))
    addr = tp + _offset_cache[key]
    return addr if addr in regs else 0


def thread_state(layout):
    """(struct ctx__tstate value or None, note)"""
    try:
        return gdb.parse_and_eval("ctx__ts"), None
    except gdb.error as e:
        why = str(e)
    addr = _tls_by_offset(layout)
    if addr is None:
        return None, ("cannot read this thread's `ctx__ts' (%s), and "
                      "cannot locate it through the library's registry "
                      "either" % why)
    if addr == 0:
        return None, None  # not registered: never used the library
    return (layout.deref(addr, layout.tstate),
            "gdb cannot read TLS here (%s); found `ctx__ts' at 0x%x through "
            "the library's thread registry" % (why.splitlines()[-1], addr))


# --- the walk --------------------------------------------------------------

def bindings(layout, root):
    """[(key address, value)] of the trie at root, and a list of problems."""
    out, problems = [], []

    def walk(node_addr, depth):
        if depth > MAX_DEPTH:
            problems.append("trie deeper than %d at 0x%x" % (MAX_DEPTH,
                                                             node_addr))
            return
        node = layout.deref(node_addr, layout.hnode)
        count = int(node["count"])
        if count > MAX_NODE_ENTRIES:
            problems.append("node 0x%x claims %d entries" % (node_addr, count))
            return
        first = node_addr + layout.e_offset
        for i in range(count):
            ent = layout.deref(first + i * layout.entry_size, layout.entry)
            key = int(ent["key"])
            if key == 0:
                child = int(ent["value"])
                if child:
                    walk(child, depth + 1)
                else:
                    problems.append("NULL child in node 0x%x" % node_addr)
            else:
                out.append((key, ent["value"]))

    try:
        if root:
            walk(root, 0)
    except (gdb.MemoryError, gdb.error) as e:
        problems.append("cannot read the trie: %s" % e)
    return out, problems


def var_name(layout, key):
    try:
        name = int(layout.deref(key, layout.var)["name"])
    except (gdb.MemoryError, gdb.error):
        return "<unreadable variable 0x%x>" % key
    text = read_cstring(name, allow_empty=True)
    if text is None:
        return "<variable 0x%x>" % key
    return text if text else "<unnamed variable 0x%x>" % key


def resumed_fibers(layout, ts):
    """{fiber's own context: fiber}, innermost fiber first."""
    fibers = {}
    if not layout.has_fibers:
        return fibers
    f = int(ts["fiber"])
    seen = set()
    while f and f not in seen and len(seen) < MAX_CONTEXTS:
        seen.add(f)
        fv = layout.deref(f, layout.fiber)
        fibers.setdefault(int(fv["ctx"]), f)
        f = int(fv["outer"])
    return fibers


def context_chain(layout, ts):
    """The thread's contexts, innermost first, and a problem or None."""
    chain = []
    p = int(ts["current"])
    base = int(ts["base"])
    seen = set()
    while p:
        if p in seen:
            return chain, "the prev chain loops back to 0x%x" % p
        if len(chain) >= MAX_CONTEXTS:
            return chain, "more than %d contexts; stopped" % MAX_CONTEXTS
        seen.add(p)
        chain.append(p)
        if p == base:
            return chain, None
        p = int(layout.deref(p, layout.context)["prev"])
    if base and base not in seen:
        return chain, "the chain ends before the base context 0x%x" % base
    return chain, None


def describe_thread(layout, out):
    thread = gdb.selected_thread()
    ts, note = thread_state(layout)
    label = "thread %d" % thread.num
    if thread.ptid[1]:
        label += " (LWP %d)" % thread.ptid[1]
    if note:
        out.append(("note: " if ts is not None else "warning: ") + note)
    if ts is None:
        if not note:
            out.append("ctxvars: %s has not used ctxvars" % label)
        return
    chain, problem = context_chain(layout, ts)
    if not chain:
        out.append("ctxvars: %s has no contexts yet (it has not used "
                   "ctxvars)" % label)
        return
    fibers = resumed_fibers(layout, ts)
    base = int(ts["base"])
    # Which resumed fiber each context was entered in: the nearest fiber
    # context at or below it.
    in_fiber, f = {}, None
    for c in reversed(chain):
        f = fibers.get(c, f)
        in_fiber[c] = f
    out.append("ctxvars: %s, %d context%s, innermost first:"
               % (label, len(chain), "" if len(chain) == 1 else "s"))
    for i, c in enumerate(chain):
        cv = layout.deref(c, layout.context)
        what = []
        if c == base:
            what.append("base")
        elif c in fibers:
            what.append("fiber 0x%x's own context: the fiber's contexts "
                        "begin here" % fibers[c])
        elif in_fiber[c] is not None:
            what.append("entered in fiber 0x%x" % in_fiber[c])
        else:
            what.append("entered")
        pairs, problems = bindings(layout, int(cv["root"]))
        length = int(cv["len"])
        what.append("%d binding%s" % (length, "" if length == 1 else "s"))
        out.append("#%-2d context 0x%x (%s)" % (i, c, ", ".join(what)))
        named = sorted((var_name(layout, k), k, v) for k, v in pairs)
        for name, _, v in named:
            out.append("      %s = %s" % (name, format_value(v)))
        if len(pairs) != length and not problems:
            problems.append("found %d bindings, the context says %d"
                            % (len(pairs), length))
        for p in problems:
            out.append("      warning: %s" % p)
    if problem:
        out.append("warning: " + problem)


class InfoCtxvars(gdb.Command):
    """The selected thread's ctxvars contexts and their bindings.

Usage: info ctxvars
Lists the thread's stack of contexts, innermost first (the contexts it
entered or runs, where a resumed fiber's contexts begin, its base context),
and each context's bindings as `name = value'; a value that points to a
printable C string is shown as that string too.  Reads memory only, so it
works on core files.  For every thread: thread apply all info ctxvars"""

    def __init__(self):
        super(InfoCtxvars, self).__init__("info ctxvars", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise gdb.GdbError("info ctxvars takes no arguments")
        if gdb.selected_thread() is None:
            raise gdb.GdbError("info ctxvars: no thread (run the program, "
                               "attach to it or open a core file first)")
        try:
            layout = Layout()
        except Missing as e:
            raise gdb.GdbError(_missing_message(str(e)))
        out = []
        try:
            describe_thread(layout, out)
        except (gdb.MemoryError, gdb.error) as e:
            out.append("warning: cannot read the thread's contexts: %s" % e)
        gdb.write("\n".join(out) + "\n")


InfoCtxvars()
