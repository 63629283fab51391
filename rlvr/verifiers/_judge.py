"""The split judge: assert-style tests run in the parent, only the candidate's own calls in the sandbox.

`plan(tests, helpers, entry_point)` reads the tests' AST (test code is trusted dataset text) and
finds the *remote* names: read by the tests, bound nowhere in them, not builtins, and not owned by
the trusted `helpers` source (a task's prompt: HumanEval/32's `poly`, /38's `encode_cyclic`,
/50's `encode_shift`).  A helper function whose body is only a docstring / `pass` / `...` is the
task's stub, hence remote, as is `entry_point`.

`run_split` then executes helpers and tests outside the sandbox (in the judge's own killable
process, `_judgeproc`, under the run's deadline), with each remote function bound
to a `RemoteFunction` proxy: a call sends its arguments to the sandbox as plain data
(`_plaindata`), the program's function runs there, and its result comes back as plain data, or
fails the check (`NotPlainData`), or re-raises as the builtin exception the program raised.  So
the expected values, the comparisons, `abs(...) < tol`, `math.isclose`, `not`, bare truthiness and
the helpers are all evaluated by the parent on exact builtin values: an object with a lying
`__eq__` never leaves the sandbox, and a completion that redefines `poly` changes only its own copy.

Not splittable (`Unsplittable`; the caller falls back to the weak mode and says so): a remote name
that is a class, module or other non-plain object, a proxy used other than by calling it, or an
argument that is not plain data (a lambda, an instance).  Known limit: the sandbox works on copies,
so a test that checks an argument the candidate mutated in place sees the unmutated value.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field

from rlvr.verifiers import _plaindata
from rlvr.verifiers._session import Channel

SETUP_NODES = (
    ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign,
)  # fmt: skip
_BUILTINS = frozenset(dir(builtins))


class Unsplittable(BaseException):
    """The tests need something only the sandbox has; rerun them in the weak mode."""


class Abort(BaseException):
    """The sandbox timed out or died during a call; the run has no verdict."""


class Overrun(BaseException):
    """The judge itself ran past the run's deadline (raised by `_judgeproc`'s timer)."""


class NotPlainData(Exception):
    """The candidate returned something other than plain data (a check that fails)."""


class RemoteError(Exception):
    """The candidate raised an exception that is not a builtin one."""


def _bound_and_loaded(tree: ast.AST) -> tuple[set[str], set[str]]:
    bound, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            bound.add(node.name)
    return bound, loaded


def _is_stub(node: ast.stmt) -> bool:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return all(
        isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        for s in body
    )


@dataclass(frozen=True, slots=True)
class Plan:
    tests: ast.Module
    helpers: ast.Module
    remote: tuple[str, ...]


def plan(tests: str, helpers: str = "", entry_point: str | None = None) -> Plan:
    """Parse the (trusted) tests and helpers; raises SyntaxError/ValueError when they do not parse."""
    tree = ast.parse(tests, "<tests>")
    helper_tree = ast.parse(helpers or "", "<helpers>")
    owned, _ = _bound_and_loaded(helper_tree)
    owned -= {n.name for n in helper_tree.body if _is_stub(n)} | {entry_point}
    bound, loaded = _bound_and_loaded(tree)
    remote = sorted(loaded - bound - _BUILTINS - owned)
    return Plan(tree, helper_tree, tuple(remote))


class RemoteFunction:
    """Stands for a function of the program; calling it runs the call in the sandbox."""

    __slots__ = ("_judge", "_name")

    def __init__(self, name: str, judge: _Judge) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_judge", judge)

    def __call__(self, *args, **kwargs):
        return self._judge.call(self._name, args, kwargs)

    def __getattr__(self, attr: str):
        self._judge.unsplit = True
        raise Unsplittable(f"tests read attribute {attr!r} of the program's function")

    def __repr__(self) -> str:
        return f"<program function {self._name}>"


# Exceptions that drive the iteration protocol: raised into a C iterator (`map`, `filter`,
# `iter(f, sentinel)`, itertools) they end the iteration silently, so `all(map(check, cases))`
# would pass with no case checked.  Re-raised as RuntimeError, as PEP 479 does in generators.
_PROTOCOL_EXCEPTIONS = frozenset({"StopIteration", "StopAsyncIteration"})


def _remote_exception(name: object, message: object) -> Exception:
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    text = message if isinstance(message, str) else ""
    if name in _PROTOCOL_EXCEPTIONS:
        return RuntimeError(f"the program raised {name}: {text}")
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
        try:
            return cls(text)
        except Exception:
            pass
    return RemoteError(f"{name}: {text}" if isinstance(name, str) else text)


@dataclass
class _Judge:
    session: Channel
    calls: int = 0
    exc_types: list[str] = field(default_factory=list)
    dead: bool = False  # the sandbox timed out, died or flooded: every later call aborts too
    unsplit: bool = False  # set with every Unsplittable, in case a bare `except:` swallows it

    def call(self, name: str, args: tuple, kwargs: dict):
        if self.dead or self.session.failure:
            self.dead = True
            raise Abort(self.session.failure)
        try:
            request = {
                "call": name,
                "args": _plaindata.encode(list(args)),
                "kwargs": _plaindata.encode(dict(kwargs)),
            }
        except (_plaindata.Unencodable, RecursionError) as exc:
            self.unsplit = True
            raise Unsplittable(f"argument of {name} is not plain data: {exc}") from None
        if not self.session.send(request) or (reply := self.session.recv()) is None:
            self.dead = True  # the status comes from the exit (os._exit mid-call: no_signal)
            raise Abort(self.session.failure)
        self.calls += 1
        if "ok" in reply:
            try:
                return _plaindata.decode(reply["ok"])
            except (_plaindata.Unencodable, RecursionError, MemoryError):
                raise NotPlainData(f"{name} returned malformed data") from None
        if "exc" in reply and isinstance(reply["exc"], list) and len(reply["exc"]) == 2:
            self.exc_types.append(str(reply["exc"][0]))
            raise _remote_exception(*reply["exc"])
        raise NotPlainData(f"{name} returned a {str(reply.get('bad', '?'))[:80]}, not plain data")


@dataclass(frozen=True, slots=True)
class Outcome:
    passed: int
    total: int
    setup_failed: int
    exc_types: tuple[str, ...]
    calls: int


def bind_remote(ns: dict, names: dict, judge: _Judge) -> None:
    """Bind each remote name as the sandbox described it; raises Unsplittable for non-plain objects."""
    for name, desc in names.items():
        kind = desc[0] if isinstance(desc, list) and desc else "other"
        if kind == "fn":
            ns[name] = RemoteFunction(name, judge)
        elif kind == "val":
            try:
                ns[name] = _plaindata.decode(desc[1])
            except (_plaindata.Unencodable, IndexError, RecursionError):
                raise Unsplittable(f"{name} is not plain data") from None
        elif kind != "missing":
            raise Unsplittable(f"tests use the program's {name!r}, a {str(desc[-1])[:40]}")


def run_split(session: Channel, p: Plan, names: dict) -> Outcome:
    """Execute helpers and tests in the parent against the sandboxed program (see module doc).

    Raises Unsplittable (fall back to the weak mode) or Abort (timeout / death, no verdict).
    Runs in the judge's own killable process (`_judgeproc`), never in the trainer's.
    """
    judge = _Judge(session)
    ns: dict = {"__name__": "tests", "__builtins__": builtins}
    exec(compile(p.helpers, "<helpers>", "exec", dont_inherit=True, optimize=0), ns)
    bind_remote(ns, {n: names.get(n, ["missing"]) for n in p.remote}, judge)
    passed = total = setup_failed = 0
    for stmt in p.tests.body:
        is_setup = isinstance(stmt, SETUP_NODES)
        code = compile(ast.Module([stmt], []), "<tests>", "exec", dont_inherit=True, optimize=0)
        total += 0 if is_setup else 1
        try:
            exec(code, ns)
        except (Unsplittable, Abort, Overrun):
            raise
        except BaseException as exc:  # a failing check (AssertionError, NameError, ...)
            if judge.unsplit:
                raise Unsplittable("a test swallowed the fallback signal") from None
            if judge.dead:
                raise Abort(session.failure) from None
            setup_failed += 1 if is_setup else 0
            judge.exc_types.append(type(exc).__name__)
            continue
        if judge.unsplit:  # a test swallowed Unsplittable / Abort with a bare `except:`
            raise Unsplittable("a test swallowed the fallback signal")
        if judge.dead:
            raise Abort(session.failure)
        passed += 0 if is_setup else 1
    return Outcome(passed, total, setup_failed, tuple(judge.exc_types), judge.calls)
