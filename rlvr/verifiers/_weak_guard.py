"""Weak mode's guard of the tests' own objects (loaded by `_sandbox_weak`; stdlib only).

In the weak mode the tests can hand the program their own objects: a lambda, an instance of a
class the tests define, a test helper.  Through them the program reaches the tests' globals and
builtins (`__globals__`, `__builtins__` and `__closure__` raise no audit event in CPython 3.11),
where it could swap the comparator, a builtin such as `all`, or a helper such as `check`.  So:

* the comparator, the chain comparator and a call wrapper are *constants* of the tests' code
  objects (`bind_constants`), not names: nothing to swap, and the hook refuses `__code__`,
  `__defaults__` and `__kwdefaults__` of any function that is not the program's;
* every call the tests make goes through the call wrapper (`RewriteCalls`), which checks before
  and after the call, as does the end of every statement, that each name the tests read is still
  bound (in their globals and builtins) to what the tests bound it to; else the run is void;
* `map`, `filter` and `iter(f, sentinel)` are generators (PEP 479: a StopIteration the program
  raises into them is a RuntimeError, not a silent end of the loop).

Known limit (defence in depth, not a boundary): a swap made and undone by program code that runs
implicitly (`__getattr__`, `__iter__`, ...) between a name's lookup and the call that uses it, or
through a test function's closure cells, is not seen.
"""

import ast
import types

CMP, CHAIN, CALL = "\0rlvr-cmp", "\0rlvr-chain", "\0rlvr-call"
_FRAME_USERS = frozenset({"super", "locals", "vars", "dir", "globals", "eval", "exec", "breakpoint"})


class RewriteCalls(ast.NodeTransformer):
    """`g(a, k=v)` -> `CALL(g, a, k=v)`; calls that read their caller's frame are left alone."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Constant) or (isinstance(func, ast.Name) and func.id in _FRAME_USERS):
            return node
        return ast.copy_location(ast.Call(ast.Constant(CALL), [func, *node.args], node.keywords), node)


def bind_constants(code: types.CodeType, table: dict) -> types.CodeType:
    """`code` (and the code nested in it) with each marker constant replaced by its object."""
    consts = tuple(
        bind_constants(c, table) if type(c) is types.CodeType else table[c] if type(c) is str and c in table else c
        for c in code.co_consts
    )  # fmt: skip
    return code.replace(co_consts=consts)


def names_read_and_rebound(tree: ast.AST) -> tuple[frozenset, frozenset]:
    """(names the tests read, names some test function rebinds with `global`)."""
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    rebound = {name for n in ast.walk(tree) if isinstance(n, ast.Global) for name in n.names}
    return frozenset(read | {"__builtins__"}), frozenset(rebound)


def top_level_bindings(stmt: ast.stmt) -> frozenset:
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return frozenset(names)


def protocol_safe_iterators(b: dict) -> None:
    """The tests' `map`, `filter` and `iter(f, sentinel)` as generators (see the module doc)."""
    _iter, _zip, _bool = iter, zip, bool

    def map_(fn, *iterables):
        for args in _zip(*iterables):
            yield fn(*args)

    def filter_(fn, iterable):
        for x in iterable:
            if _bool(x) if fn is None else fn(x):
                yield x

    def calls(fn, sentinel):
        while (x := fn()) != sentinel:
            yield x

    def iter_(obj, *sentinel):
        return calls(obj, sentinel[0]) if sentinel else _iter(obj)

    b.update(map=map_, filter=filter_, iter=iter_)


class Guard:
    """What the tests bound, checked against their globals and builtins (see the module doc)."""

    __slots__ = ("_builtins", "_current", "_ns", "_read", "_shadow", "_void")

    def __init__(self, tests_ns: dict, pristine: dict, read: frozenset, rebound: frozenset, void) -> None:
        self._ns, self._builtins, self._void = tests_ns, pristine, void
        self._read, self._current, self._shadow = read - rebound, frozenset(), {}

    def arm(self) -> None:
        """Take the snapshot: the tests' namespace is filled, no test statement has run."""
        self._shadow = {n: (self._ns.get(n, self), self._builtins.get(n, self)) for n in self._read}

    def statement(self, bound: frozenset) -> None:
        """The next statement rebinds `bound` itself: check them only once it has ended."""
        self._current = bound

    def end_statement(self) -> None:
        for name in self._current & self._read:
            self._shadow[name] = (self._ns.get(name, self), self._shadow[name][1])
        self._current = frozenset()
        self.check()

    def check(self) -> None:
        ns, builtins, current, get = self._ns, self._builtins, self._current, dict.get
        for name, (value, builtin) in dict.items(self._shadow):
            if name not in current and (get(ns, name, self) is not value or get(builtins, name, self) is not builtin):
                self._void()

    def constants(self, cmp, chain) -> dict:
        check = self.check

        def call(fn, /, *args, **kwargs):
            check()
            try:
                return fn(*args, **kwargs)
            finally:
                check()

        def guarded(f):
            def run(*args):
                try:
                    return f(*args)
                finally:
                    check()

            return run

        return {CMP: guarded(cmp), CHAIN: guarded(chain), CALL: call}
