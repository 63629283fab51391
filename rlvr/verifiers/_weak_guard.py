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

* a function of the tests (or a bound method of one) passed to a program function, alone or in
  a list or tuple, arrives as an opaque proxy that does not lead to its globals (`opaque`).

* the tests' own functions, classes and lambdas have globals that hold nothing
  (`public_globals`): an instance of a class the tests define no longer leads to their bindings;
  a global or builtin their functions read is answered from the tests' namespace and a private
  copy of the builtins, so a swap of the builtins dict the program can reach is never read.
* no closure cell of theirs holds a value (`_weak_cells.hide_cells`): a name that a function, class or lambda
  nested in a test function captures (`want` in `def check(c): want = ...; class B: ...`) lives
  in a box whose value only `cell_constants` hands out; `fn.__closure__[0].cell_contents` is an
  empty box, and a cell the program refills voids the run.  `global` statements and a class
  body's reads of globals are rewritten the same way (`GLOBAL_GET`/`GLOBAL_SET`), so such tests
  keep the split namespace.  A form the rewrite does not handle (a lambda or comprehension whose
  own name is captured, `match`, `del` of a captured name, a captured `except ... as` name, a
  `global` in a class body) keeps its cells and, with a `global`, one namespace, as before.

Known limits (defence in depth, not a boundary): in those rare forms, the old leaks; a swap
made and undone by program code that runs implicitly (`__getattr__`, `__iter__`, ...) between
the lookup of a name bound in the tests' namespace and its use is seen at their top level
(`RewriteLoads`), inside their functions only if it changed what the name reads (the program
cannot reach that namespace in the split mode).
"""

import ast
import types

from _weak_cells import BOX

CMP, CHAIN, CALL, LOAD = "\0rlvr-cmp", "\0rlvr-chain", "\0rlvr-call", "\0rlvr-load"
_FRAME_USERS = frozenset({"super", "locals", "vars", "dir", "globals", "eval", "exec", "breakpoint"})


class RewriteCalls(ast.NodeTransformer):
    """`g(a, k=v)` -> `CALL(g, a, k=v)`; calls that read their caller's frame are left alone."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Constant) or (isinstance(func, ast.Name) and func.id in _FRAME_USERS):
            return node
        return ast.copy_location(ast.Call(ast.Constant(CALL), [func, *node.args], node.keywords), node)


class RewriteLoads(ast.NodeTransformer):
    """At the tests' top level, `name` -> `LOAD("name", name)`: the value is checked against what
    the tests bound the moment it is read, so a swap that program code makes before the read and
    undoes before the next check (an `__getattr__` run while the statement is evaluated) is seen.
    Scopes (functions, lambdas, classes, comprehensions) are left alone: their names may be local."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if not isinstance(node.ctx, ast.Load):
            return node
        return ast.copy_location(ast.Call(ast.Constant(LOAD), [ast.Constant(node.id), node], []), node)

    def _scope(self, node: ast.AST) -> ast.AST:
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _scope
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _scope


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


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def names_served(tree: ast.AST) -> frozenset:
    """Names read inside the tests' own functions, classes, lambdas and comprehensions: the only
    ones their globals (`public_globals`) answer for."""
    inner = {n for scope in ast.walk(tree) if isinstance(scope, _SCOPES) for n in ast.walk(scope)}
    return frozenset({n.id for n in inner if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} | {"__name__"})


def class_body_reads(tree: ast.AST) -> frozenset:
    """Non-builtin names a class body reads in its own scope (`class B: k = K`): its LOAD_NAME
    looks in the globals without `__missing__`, so such tests keep one namespace."""
    import builtins

    out, top = set(), {n for stmt in tree.body for n in top_level_bindings(stmt)}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        stack, names = list(cls.body), []  # bases, keywords and decorators are read by the enclosing scope
        while stack:
            node = stack.pop()
            if isinstance(node, _SCOPES):
                continue  # a method's own reads go through `__missing__`
            if isinstance(node, ast.Name) and not hasattr(builtins, node.id) and not node.id.endswith(BOX):
                names.append(node)
            stack.extend(ast.iter_child_nodes(node))
        own = {n.id for n in names if not isinstance(n.ctx, ast.Load)}  # read there after it binds them
        out |= {n.id for n in names if isinstance(n.ctx, ast.Load) and (n.id not in own or n.id in top)}
    return frozenset(out)


def public_globals(tests_ns: dict, served: frozenset, builtins: dict):
    """The globals of everything the tests define: (dict, check, arm), see `Guard`.

    The tests' top-level statements run with these as globals and `tests_ns` as locals, so the
    tests' bindings (`WANT = {...}`) live only in `tests_ns`, and a function, class or lambda of
    theirs has `__globals__` = this dict, which holds nothing but `__builtins__`: a program that
    gets one of their instances (`type(obj).__init__.__globals__`) finds it empty.  A global read
    by their code misses and `__missing__` answers from `tests_ns`, for the `served` names only,
    and only when the frame that read the name runs one of the tests' code objects (`arm`, by
    identity: the program's `g["WANT"]` gets a KeyError); `tests_ns` lives only in a suspended
    generator's frame (`gi_frame` is refused by the hook).
    `__name__` ("tests") is the one other key: a class body's LOAD_NAME does not call `__missing__`.
    `check()` is False once the program changed the dict or its class.
    """
    _KeyError, _type, _str, _len, _all, _zip, _vars, _id = KeyError, type, str, len, all, zip, vars, id
    _get, _keys, _NameError = dict.get, dict.keys, NameError
    trust: list = []  # [code_at, ids of the tests' code objects], set once the hook is armed
    pristine = dict(builtins)  # the program can reach (and change) `builtins`, never this copy

    def lookup():
        name = yield
        while True:
            reply = _KeyError
            # answered only to `__missing__` called by the tests' own code (a LOAD_GLOBAL there):
            # frame 1 is our `__missing__`, frame 2 the code that read the name
            if trust and trust[0](1) is missing_code and _id(trust[0](2)) in trust[1] and name in served:
                reply = _get(tests_ns, name, _KeyError)
                reply = _get(pristine, name, _NameError) if reply is _KeyError else reply
            name = yield reply

    gen = lookup()
    next(gen)
    send = gen.send

    class Globals(dict):
        __slots__ = ()

        def __missing__(self, name):
            value = send(name)
            if value is _KeyError:
                raise _KeyError(name)
            if value is _NameError:  # not `KeyError`: then the builtins dict the program can reach is read
                raise _NameError(f"name {name!r} is not defined")
            return value

    name = "tests"
    public = Globals(__builtins__=builtins, __name__=name)  # a class's `__module__` reads `__name__`
    cls_items = tuple(vars(Globals).items())
    missing_code = Globals.__missing__.__code__

    def check(rebound: frozenset) -> bool:  # identity and exact-str tests only: no program code runs
        items = tuple(_vars(Globals).items())
        return (
            _type(public) is Globals
            and _len(items) == _len(cls_items)
            and _all(a[0] is b[0] and a[1] is b[1] for a, b in _zip(items, cls_items))
            and _get(public, "__builtins__") is builtins
            and _get(public, "__name__") is name
            and _all(_type(k) is _str and (k in ("__builtins__", "__name__") or k in rebound) for k in _keys(public))
        )

    def arm(code_at, codes: list) -> None:
        """Trust reads from these code objects (and the code nested in them), by identity."""
        ids, todo = set(), list(codes)
        while todo:
            code = todo.pop()
            ids.add(_id(code))  # alive as long as the tests are: an id is not reused meanwhile
            todo.extend(c for c in code.co_consts if _type(c) is types.CodeType)
        trust[:] = [code_at, ids]

    return public, check, arm


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

    __slots__ = ("_builtins", "_current", "_ns", "_public", "_read", "_rebound", "_shadow", "_void")

    def __init__(
        self, tests_ns: dict, pristine: dict, read: frozenset, rebound: frozenset, void, public=(None, None)
    ) -> None:
        self._ns, self._builtins, self._void = tests_ns, pristine, void
        self._read, self._current, self._shadow = read - rebound, frozenset(), {}
        self._public, self._rebound = public, rebound  # (globals of the tests' code, its check)

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
        if self._public[1] is not None and not self._public[1](self._rebound):
            self._void()
        ns, builtins, current, get = self._ns, self._builtins, self._current, dict.get
        for name, (value, builtin) in dict.items(self._shadow):
            if name not in current and (get(ns, name, self) is not value or get(builtins, name, self) is not builtin):
                self._void()

    def constants(self, cmp, chain) -> dict:
        check, function, method = self.check, types.FunctionType, types.MethodType
        tests_ns = self._ns if self._public[0] is None else self._public[0]  # the globals of their code
        globals_of, func_of, _type, _next, _isinstance = function.__globals__.__get__, method.__func__.__get__, type, next, isinstance

        def owned(x) -> bool:
            t = _type(x)
            return (t is function and globals_of(x) is tests_ns) or (t is method and owned(func_of(x)))

        def hide(x):
            if owned(x):
                return opaque(x)
            if _type(x) in (list, tuple) and any(owned(e) for e in x):
                return _type(x)(opaque(e) if owned(e) else e for e in x)
            return x

        def call(fn, /, *args, **kwargs):
            check()
            if not owned(fn):  # the program's (or a builtin): it gets no function of the tests
                args = [hide(a) for a in args]
                kwargs = {k: hide(v) for k, v in kwargs.items()}
            try:
                return fn(*args, **kwargs)
            finally:
                check()

        def opaque(fn):
            """A callable for `fn` that does not lead to it: `fn` lives only in suspended
            generators' frames (`gi_frame`, `gi_code` and `tb_frame` are refused by the hook).
            A generator cannot be re-entered while it runs, so each nested call (the test function
            calls the program, which calls the same proxy again) takes another holder, made by a
            factory generator that never runs `fn` itself."""

            def holder():
                request = yield
                while True:
                    try:
                        reply = (True, fn(*request[0], **request[1]))
                    except BaseException as exc:  # handed back, re-raised by the caller below
                        reply = (False, exc)
                    request = yield reply

            def factory():
                while True:
                    gen = holder()
                    _next(gen)
                    yield gen.send

            make = factory().__next__
            idle = [make()]
            pop, push = idle.pop, idle.append

            def proxy(*args, **kwargs):
                send = pop() if idle else make()
                try:
                    ok, value = send((args, kwargs))
                finally:
                    push(send)
                if ok:
                    return value
                raise value

            return proxy

        guard, void, get = self, self._void, dict.get

        def load(name, value):
            entry = get(guard._shadow, name)  # `arm` replaces the dict: read it now
            if entry is None or name in guard._current:
                return value  # the statement rebinds it itself (or a `global` one: unguarded)
            bound, builtin = entry
            if value is not (builtin if bound is guard else bound):
                void()
            return value

        def guarded(f):
            def run(*args):
                try:
                    return f(*args)
                finally:
                    check()

            return run

        return {CMP: guarded(cmp), CHAIN: guarded(chain), CALL: call, LOAD: load}
