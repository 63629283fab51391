"""Weak mode of the sandbox harness: tests that cannot be split run *inside* the sandbox.

Used only when `rlvr.verifiers._judge` cannot keep the expected values in the parent (the tests
use program-defined classes or instances, pass non-plain arguments, ...).  The verdict is then
produced in the untrusted interpreter, so `CodeResult.guarantee` says "in_sandbox_judge": the OS
sandbox still protects the host, but a program that defeats the interpreter-level defences below
could forge its own pass.  Defences (in depth only; audit hooks are not a boundary, PEP 578):

* the pass line carries a nonce that lives only in the audit hook's closure and is written only
  for `sys.audit("rlvr.done", ...)` raised by the genuine harness frame, at most once;
* the hook never runs code the program controls: it compares only exact `str` values (a `str`
  subclass or patched `posixpath` cannot re-enter it), and it denies every frame source
  (`sys._getframe` answers ValueError, which the stdlib's callers expect; `tb_frame`/`gi_frame`/
  ..., `signal` handlers: `signal` cannot be imported), gc walks, ctypes, threads, trace hooks,
  crafted code objects, fork/exec/kill and sockets;
* no /proc is mounted in this mode (so no `/proc/self/mem`, however the path is spelled);
* every comparison in the tests goes through a comparator built before the program ran:
  values are canonicalised to exact builtin types, so `AlwaysEqual()` never equals 5;
* the tests' own objects are guarded (`_weak_guard`): the comparator is a constant of their code,
  every call they make checks that their globals and builtins are still theirs, a function of
  theirs reaches the program only as an opaque proxy, their closure cells hold no value of theirs
  (`hide_cells`); the harness keeps its own `os._exit`.

Stdlib only; loaded by `_sandbox_child` from the same read-only directory.
"""

import ast
import sys

import _weak_cells
import _weak_guard

_SETUP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
_DENY_EVENTS = frozenset(
    """os.fork os.forkpty os.system os.exec os.posix_spawn os.spawn subprocess.Popen os.kill os.killpg
    signal.pthread_kill sys._current_frames sys._current_exceptions sys.settrace sys.setprofile
    sys.addaudithook gc.get_objects gc.get_referrers gc.get_referents code.__new__ function.__new__
    socket.connect socket.bind socket.sendto socket.sendmsg os.chdir sys.setrecursionlimit""".split()  # noqa: SIM905
)
_DENY_IMPORTS = frozenset((
    "_thread", "ctypes", "_ctypes", "_posixsubprocess", "signal", "_signal", "faulthandler", "gc", "_testcapi",
    "_testinternalcapi", "_xxsubinterpreters", "_lsprof", "resource",
))  # fmt: skip
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_CODE_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "gi_code", "cr_code", "ag_code"})


def make_cmp():
    """Comparison used for every `a <op> b` in the tests, built from references captured now.

    Values are canonicalised to exact builtin types (subclasses only when they keep the builtin
    `__eq__`); a value of any other type equals only a value of the identical type, by its own
    `__eq__`.  So an object whose `__eq__` always answers True never equals 5 or [1, 2].
    """
    import collections

    _type, _len, _range, _issub, _bool, _list, _tuple, _dict = type, len, range, issubclass, bool, list, tuple, dict
    _any, _all, _zip, _frozenset = any, all, zip, frozenset
    _getattr_t, _AE, _exact = (
        type.__getattribute__,
        AssertionError,
        {bool, int, float, complex, str, bytes, type(None)},
    )
    conv = (
        (int, int.__int__), (float, float.__float__), (complex, complex.__complex__), (str, str.__str__), (bytes, bytes.__bytes__),
        (tuple, lambda x: _tuple(tuple.__iter__(x))), (list, lambda x: _list(list.__iter__(x))),
        (dict, lambda x: _dict(dict.items(x))), (frozenset, lambda x: _tuple(frozenset.__iter__(x))),
        (set, lambda x: _tuple(set.__iter__(x))),
    )  # fmt: skip
    trusted = {
        collections.Counter: dict,
        collections.OrderedDict: dict,
        collections.defaultdict: dict,
        collections.deque: "deque",
        type({}.keys()): "keys",
        type({}.items()): "keys",
        type({}.values()): "values",
    }
    kinds = {
        int: "num",
        float: "num",
        complex: "num",
        bool: "num",
        str: "str",
        bytes: "bytes",
        type(None): "none",
    }
    kinds.update({tuple: "tuple", list: "list", dict: "dict", set: "set", frozenset: "set", "deque": "deque"})

    def norm(x):
        t = _type(x)
        if t in _exact:
            return kinds[t], x
        if t in trusted:
            base = trusted[t]
            if base is dict:
                return "dict", _dict(dict.items(x))
            items = _tuple(t.__iter__(x))  # C-level iterators of stdlib types
            return {"deque": "deque", "keys": "set", "values": "list"}[base], items
        for base, to_exact in conv:
            if _issub(t, base) and _getattr_t(t, "__eq__") is base.__eq__:
                return kinds[base], to_exact(x)
        return "other", x

    def canon(x):
        k, v = norm(x)
        if k == "other":
            raise _AE(f"cannot compare a value of untrusted type {_type(x).__name__}")
        if k in ("tuple", "list", "deque"):
            return k, _tuple([canon(e) for e in v])
        if k == "set":
            return k, _frozenset([canon(e) for e in v])
        if k == "dict":
            return k, _frozenset([(canon(a), canon(b)) for a, b in v.items()])
        return k, v

    def eq(a, b):
        ka, va = norm(a)
        kb, vb = norm(b)
        if ka == "other" or kb == "other":
            return ka == kb and _type(a) is _type(b) and _bool(a == b)
        if ka != kb:
            return False
        if ka in ("tuple", "list", "deque"):
            return _len(va) == _len(vb) and _all(eq(va[i], vb[i]) for i in _range(_len(va)))
        if ka in ("set", "dict"):
            try:
                return canon(a) == canon(b)
            except _AE:
                return False
        return va == vb

    def contains(container, item):
        k, v = norm(container)
        if k in ("tuple", "list", "deque"):
            return _any(eq(item, e) for e in v)
        if k in ("set", "dict"):
            keys = v if k == "set" else _tuple(v)
            return _any(eq(item, e) for e in keys)
        if k in ("str", "bytes") and norm(item)[0] == k:
            return norm(item)[1] in v
        if _type(container) is _range and norm(item)[0] == "num":
            return norm(item)[1] in container
        raise _AE(f"cannot test membership in untrusted type {_type(container).__name__}")

    def cmp(op, a, b):
        if op == "Is":
            return a is b
        if op == "IsNot":
            return a is not b
        if op in ("Eq", "NotEq"):
            return eq(a, b) if op == "Eq" else not eq(a, b)
        if op in ("In", "NotIn"):
            return contains(b, a) if op == "In" else not contains(b, a)
        if norm(a)[0] == "other" and _type(a) is _type(b):
            x, y = a, b
        else:
            (_, x), (_, y) = canon(a), canon(b)
        return {"Lt": lambda: x < y, "LtE": lambda: x <= y, "Gt": lambda: x > y, "GtE": lambda: x >= y}[op]()

    def chain(left, ops, thunks):
        for op, thunk in _zip(ops, thunks):
            right = thunk()
            if not cmp(op, left, right):
                return False
            left = right
        return True

    return cmp, chain


class _RewriteCompare(ast.NodeTransformer):
    """`a == b` -> `CMP("Eq", a, b)`; chains -> `CHAIN(a, ops, (lambda: b, ...))` (`_weak_guard` markers)."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        ops = [ast.Constant(type(op).__name__) for op in node.ops]
        if len(node.ops) == 1:
            call = ast.Call(ast.Constant(_weak_guard.CMP), [ops[0], node.left, node.comparators[0]], [])
        else:
            no_args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
            thunks = ast.Tuple([ast.Lambda(no_args, c) for c in node.comparators], ast.Load())
            call = ast.Call(ast.Constant(_weak_guard.CHAIN), [node.left, ast.Tuple(ops, ast.Load()), thunks], [])
        return ast.copy_location(call, node)


def _compile_each(tree: ast.Module, cells_checked: bool = False) -> list:
    import warnings

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "'str' object is not callable": the markers
        for stmt in tree.body:
            mod = ast.fix_missing_locations(ast.Module([stmt], []))
            code = compile(mod, "<tests>", "exec", dont_inherit=True, optimize=0)
            if cells_checked and not _weak_cells.cells_hidden(code):
                raise _weak_cells.Unsupported("a cell the rewrite missed")
            out.append((isinstance(stmt, _SETUP), stmt.lineno, code, _weak_guard.top_level_bindings(stmt)))
    return out


def compile_tests(source: str) -> tuple[list, frozenset, frozenset, frozenset]:
    """([(is_setup, line, code, names it binds)] per top-level statement, names read, names rebound
    by `global`, names read inside their own scopes or None when they need one namespace).  The code holds `_weak_guard`'s marker
    constants until `bind_constants`."""
    def parse() -> ast.Module:
        tree = _weak_guard.RewriteCalls().visit(_RewriteCompare().visit(ast.parse(source, "<tests>")))
        return _weak_guard.RewriteLoads().visit(tree)

    tree = parse()
    read, rebound = _weak_guard.names_read_and_rebound(tree)
    try:  # no closure cell holds a value of theirs, no `global` is left (else, rarely, as they are)
        tree = _weak_cells.hide_cells(tree)
        out = _compile_each(tree, cells_checked=True)
    except _weak_cells.Unsupported:
        tree = parse()  # parsed again: cheaper than a deep copy (and `import copy`, from source)
        out = _compile_each(tree)
    # see `public_globals`: a `global` statement or a class body's read of a global keeps one namespace
    one_namespace = _weak_guard.class_body_reads(tree) or any(isinstance(n, ast.Global) for n in ast.walk(tree))
    served = None if one_namespace else _weak_guard.names_served(tree)
    return out, read, rebound, served


def disable_threads() -> None:
    """No audit event guards thread creation, so the entry points are replaced (and a fresh
    `_thread` import is denied by the hook): one thread means no check-then-use races."""
    import _thread

    def denied(*args, **kwargs):
        raise PermissionError("sandbox: threads are not allowed")

    _thread.start_new_thread = _thread.start_new = denied
    if "threading" in sys.modules:
        sys.modules["threading"]._start_new_thread = denied
    for name in ("_signal", "signal", "gc", "faulthandler"):  # re-importing them is denied
        sys.modules.pop(name, None)
    # imports compile from source from now on, so the importer never needs `marshal.loads`
    # (which the hook denies: crafted bytecode reads memory)
    ext = sys.modules["_frozen_importlib_external"]

    def no_cache(*args, **kwargs):
        raise NotImplementedError

    ext.cache_from_source = no_cache


def install_hook(nonce: str, out_fd: int, write, protected: tuple):
    """Arm the audit hook (PEP 578): it denies introspection/escape events and owns the nonce.

    The nonce lives only in this closure.  The pass line is written when
    `sys.audit("rlvr.done", ...)` is raised directly by the caller's frame (identity checked),
    at most once.  Only exact `str` values are inspected, so no program code runs in the hook.
    Returns `code_at(depth)`: the code object of the frame `depth` above its caller (or None),
    for `_weak_guard.public_globals` to tell the tests' reads from the program's.
    """
    main_frame, get_frame = sys._getframe(1), sys._getframe
    type_, str_, int_, tuple_ = type, str, int, tuple
    startswith, dumps = str.startswith, __import__("json").dumps
    deny_events, deny_imports, frame_attrs = _DENY_EVENTS, _DENY_IMPORTS, _FRAME_ATTRS
    code_attrs, function_, globals_of = _CODE_ATTRS, type(install_hook), type(install_hook).__globals__.__get__
    perm, value_error = PermissionError, ValueError
    state = {"done": False, "busy": False}

    def caller():
        state["busy"] = True  # our own _getframe raises an event; no program code runs meanwhile
        try:
            return get_frame(3)
        finally:
            state["busy"] = False

    def done(args) -> None:
        if state["done"] or caller() is not main_frame or type_(args) is not tuple_ or len(args) != 3:
            raise perm("sandbox: forged completion signal")
        if any(type_(a) is not int_ for a in args):
            raise perm("sandbox: forged completion signal")
        state["done"] = True
        write(out_fd, (dumps({"ev": "done", "nonce": nonce, "counts": list(args)}) + "\n").encode())

    def hook(event, args) -> None:
        if state["busy"]:
            return
        if type_(event) is not str_:
            raise perm("sandbox: odd audit event")
        if event == "rlvr.done":
            done(args)
        elif event == "sys._getframe":
            raise value_error("sandbox: frames are not available")
        elif event in deny_events or startswith(event, "ctypes."):
            raise perm(f"sandbox: {event} is not allowed")
        elif event == "import":
            name = args[0]
            if (
                type_(name) is not str_
                or name in deny_imports
                or startswith(name, ("ctypes.", "_ctypes", "_test"))
            ):
                raise perm("sandbox: this import is not allowed")
        elif event == "object.__getattr__":
            if type_(args[1]) is not str_ or args[1] in frame_attrs:
                raise perm("sandbox: frame introspection is not allowed")
            if args[1] in code_attrs:  # the tests' and harness's code objects hold the comparator
                owner = globals_of(args[0]) if type_(args[0]) is function_ else None
                for g in protected:
                    if owner is None or owner is g:
                        raise perm("sandbox: the tests' functions cannot be inspected")
        elif event in ("marshal.loads", "marshal.load"):
            raise perm("sandbox: marshal (crafted code objects) is not allowed")

    sys.addaudithook(hook)

    def code_at(depth: int):
        state["busy"] = True
        try:
            return get_frame(depth + 1).f_code
        except value_error:
            return None
        finally:
            state["busy"] = False

    return code_at


def main(
    spec: dict, out_fd: int, run_program, emit, _exec=exec, _base=BaseException, _audit=sys.audit
) -> None:
    """Run the program, then each top-level test statement, in this interpreter (see the module doc)."""
    import builtins
    import contextlib
    import os

    _exit = os._exit  # the program can rebind os._exit
    cmp, chain = make_cmp()
    builtins_copy = dict(builtins.__dict__)
    builtins_pristine = dict(builtins_copy)  # the program can mutate its own copy
    _weak_guard.protocol_safe_iterators(builtins_pristine)
    try:
        program = compile(spec["program"], "<program>", "exec", dont_inherit=True, optimize=0)
        tests, read, rebound, served = compile_tests(spec["tests"])
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        emit(out_fd, {"ev": "program", "ok": False, "exc": type(e).__name__})
        _exit(1)
    ns = {"__name__": "solution", "__builtins__": builtins_copy}
    tests_ns: dict = {}

    def void() -> None:
        emit(out_fd, {"ev": "exc", "phase": "test", "type": "TestsTampered"})
        _exit(1)

    # a `global` statement or a class body's read of a global that `hide_cells` left (rare
    # forms): such tests keep one namespace (and the leak)
    one = served is None
    public = (tests_ns, None, None) if one else _weak_guard.public_globals(tests_ns, served, builtins_pristine)
    guard = _weak_guard.Guard(tests_ns, builtins_pristine, read, rebound, void, public)
    table = {**guard.constants(cmp, chain), **_weak_cells.cell_constants(void, tests_ns, builtins_pristine)}  # bound now: the hook denies `code.replace` (code.__new__)
    tests = [(s, line, _weak_guard.bind_constants(code, table), bound) for s, line, code, bound in tests]
    nonce = spec.pop("nonce")
    spec.clear()
    out, err = sys.stdout, sys.stderr
    disable_threads()
    harness = (tests_ns, public[0], globals(), vars(_weak_guard), vars(sys.modules["__main__"]))
    code_at = install_hook(nonce, out_fd, os.write, harness)
    del nonce
    if public[1] is not None:
        public[2](code_at, [code for _, _, code, _ in tests])
    if not run_program(program, ns, out_fd):
        _exit(1)
    emit(out_fd, {"ev": "program", "ok": True})
    tests_ns.update(ns)
    tests_ns.update(__builtins__=builtins_pristine, __name__="tests")
    guard.arm()
    passed = total = setup_failed = 0
    for is_setup, lineno, code, bound in tests:
        total += 0 if is_setup else 1
        try:
            guard.statement(bound)
            _exec(code, public[0], tests_ns)  # their functions' globals: the empty `public` dict
            guard.end_statement()
        except _base as e:
            guard.end_statement()
            setup_failed += 1 if is_setup else 0
            emit(out_fd, {"ev": "exc", "phase": "setup" if is_setup else "test", "type": type(e).__name__})
            with contextlib.suppress(_base):
                print(f"tests line {lineno}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        passed += 0 if is_setup else 1
    _audit("rlvr.done", passed, total, setup_failed)
    for stream in (out, err):
        with contextlib.suppress(_base):
            stream.flush()
    _exit(0)
