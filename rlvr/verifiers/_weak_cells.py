"""Weak mode: the tests' closure cells hold no value of theirs (loaded by `_weak_guard`; stdlib only).

`hide_cells` rewrites the tests' syntax tree so that a name a nested function, class, lambda or
comprehension captures (`want` in `def check(c): want = ...; class B: ...`) lives in a box
(`want·cell`) whose value only `cell_constants` hands out, through constants of the tests' code
(`CELL_NEW` / `CELL_GET` / `CELL_SET`), and its own function reads it through a plain local
(`want·box`) no cell leads to: `fn.__closure__[0].cell_contents` is an empty box, and a cell the
program refills (or fills with another of the tests' boxes) voids the run.  `global` statements
and a class body's reads of globals go through `GLOBAL_GET` / `GLOBAL_SET` on the tests' own
namespace.  `cells_hidden` checks the compiled code; a form the rewrite does not handle raises
`Unsupported` and the tests run as written (see `_weak_guard`'s docstring for what that keeps open).
"""

import ast
import types

CELL_NEW, CELL_GET, CELL_SET = "\0rlvr-cell-new", "\0rlvr-cell-get", "\0rlvr-cell-set"
GLOBAL_GET, GLOBAL_SET = "\0rlvr-global-get", "\0rlvr-global-set"
BOX = "\u00b7cell"  # a captured `want` is kept as `want·cell`: a valid name no source spells by accident
OWN = "\u00b7box"  # ... and in its own function as the plain local `want·box` (no cell leads to it)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_COMPS = _SCOPES[4:]


class Unsupported(Exception):
    """A form `hide_cells` does not rewrite: the tests keep their cells (and the leak)."""


class _Scope:
    def __init__(self, node, parent) -> None:
        self.node, self.parent, self.bound, self.decl, self.refs = node, parent, set(), {}, []
        self.cls, self.binders = isinstance(node, ast.ClassDef), []  # [(statement, name)]: def, class, import

    def owner(self, name: str):
        """The function scope whose local `name` read here is (None: a global)."""
        if self.decl.get(name) == "nonlocal":
            return self.parent.lookup(name)
        return self.lookup(name) if not self.cls else self.parent.lookup(name)

    def lookup(self, name: str):
        if self.node is None or self.decl.get(name) == "global":
            return None
        if not self.cls and name in self.bound and name not in self.decl:
            return self
        return self.parent.lookup(name)


def _collect(node, scope: _Scope, scopes: list) -> None:
    """Each scope's bindings and uses (defaults, decorators, bases and a comprehension's first
    iterable are their parent's)."""
    if isinstance(node, ast.Name):
        scope.refs.append(node)
        scope.bound.update([node.id] if not isinstance(node.ctx, ast.Load) else [])
        return
    if isinstance(node, ast.Global | ast.Nonlocal):
        scope.decl.update(dict.fromkeys(node.names, "global" if isinstance(node, ast.Global) else "nonlocal"))
        return
    if isinstance(node, ast.Match) or (isinstance(node, ast.NamedExpr) and isinstance(scope.node, _COMPS)):
        raise Unsupported(type(node).__name__)  # bindings this walk does not place
    if isinstance(node, ast.ExceptHandler) and node.name:
        scope.binders.append((node, node.name))
        scope.bound.add(node.name)
    if isinstance(node, ast.Import | ast.ImportFrom):
        for alias in node.names:
            scope.binders.append((node, (alias.asname or alias.name).split(".")[0]))
        scope.bound.update(name for _, name in scope.binders)
    if isinstance(node, _COMPS):
        _collect(node.generators[0].iter, scope, scopes)
        inner = _Scope(node, scope)
        scopes.append(inner)
        for i, gen in enumerate(node.generators):
            for child in [gen.target, *gen.ifs, *([gen.iter] if i else [])]:
                _collect(child, inner, scopes)
        for child in [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]:
            _collect(child, inner, scopes)
        return
    if not isinstance(node, (*_FUNCS, ast.ClassDef)):
        for child in ast.iter_child_nodes(node):
            _collect(child, scope, scopes)
        return
    outer, params = [*node.decorator_list] if not isinstance(node, ast.Lambda) else [], []
    if isinstance(node, ast.ClassDef):
        outer += [*node.bases, *node.keywords]
    else:
        a = node.args
        params = [x for x in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg) if x]
        outer += [*a.defaults, *filter(None, a.kw_defaults), *(x.annotation for x in params if x.annotation)]
        outer += [node.returns] if getattr(node, "returns", None) else []
    for child in outer:
        _collect(child, scope, scopes)
    if not isinstance(node, ast.Lambda):
        scope.binders.append((node, node.name))
        scope.bound.add(node.name)
    inner = _Scope(node, scope)
    scopes.append(inner)
    inner.bound.update(x.arg for x in params)
    for child in [node.body] if isinstance(node, ast.Lambda) else node.body:
        _collect(child, inner, scopes)


def _box_op(marker: str, name: str, *args: ast.expr, suffix: str = BOX) -> ast.expr:
    """`CELL_x(name·cell, "name", ...)` (`name·box` in the owner), or for a name some function
    declares `global`, `GLOBAL_x("name", ...)`."""
    if marker in (GLOBAL_GET, GLOBAL_SET):
        return ast.Call(ast.Constant(marker), [ast.Constant(name), *args], [])
    return ast.Call(ast.Constant(marker), [ast.Name(name + suffix, ast.Load()), ast.Constant(name), *args], [])


class _Rewrite(ast.NodeTransformer):
    """Loads of a boxed name -> `CELL_GET(name·cell)`, `x += v` and `(x := v)` -> `CELL_SET(...)`;
    a statement that binds one is followed by `CELL_SET(name·cell, name)` (a loop's or a `with`'s
    at the start of its body); its owner starts with `name·cell = CELL_NEW(name)`."""

    def __init__(self, loads: dict, stores: dict, after: dict, owners: dict) -> None:
        # {id(Name node): (GET marker, SET marker)}, {id(statement): [(name, SET marker)]}
        self.loads, self.stores, self.after, self.owners = loads, stores, after, owners

    def visit_Name(self, node: ast.Name) -> ast.AST:
        op = self.loads.get(id(node))
        return ast.copy_location(_box_op(op[0], node.id, suffix=op[2]), node) if op else node

    def visit_NamedExpr(self, node: ast.NamedExpr) -> ast.AST:
        self.generic_visit(node)
        op = self.stores.get(id(node.target))
        return ast.copy_location(_box_op(op[1], node.target.id, node.value, suffix=op[2]), node) if op else node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        target = node.target
        op = self.stores.get(id(target)) if isinstance(target, ast.Name) else None
        if not op:
            return self.generic_visit(node)
        value = ast.BinOp(_box_op(op[0], target.id, suffix=op[2]), node.op, self.visit(node.value))
        return ast.copy_location(ast.Expr(_box_op(op[1], target.id, value, suffix=op[2])), node)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        names = [n for n in node.names if n not in self.after.get(id(node), ())]
        return ast.Nonlocal(names) if names else ast.Pass()

    def visit_Global(self, node: ast.Global) -> ast.AST:
        return ast.Pass()  # every use of the name is rewritten (and at the top level it means nothing)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                setattr(node, field, [s for stmt in stmts for s in self._then_set(stmt)])
        if isinstance(node, ast.For | ast.AsyncFor | ast.With | ast.AsyncWith):
            targets = [node.target] if isinstance(node, ast.For | ast.AsyncFor) else [i.optional_vars for i in node.items]
            node.body[:0] = self._sets(targets)
        if id(node) in self.owners:
            names, params = self.owners[id(node)]
            new = [
                stmt
                for n in sorted(names)
                for stmt in (
                    ast.Assign([ast.Name(n + OWN, ast.Store())], _box_op_new(n, n in params)),
                    ast.Assign([ast.Name(n + BOX, ast.Store())], ast.Name(n + OWN, ast.Load())),
                )
            ]
            doc = node.body[:1] if ast.get_docstring(node, clean=False) is not None else []
            node.body[len(doc) : len(doc)] = new
        return node

    def _sets(self, targets) -> list:
        names = [n for t in targets if t for n in ast.walk(t) if isinstance(n, ast.Name) and id(n) in self.stores]
        ops = [self.stores[id(n)] for n in names]
        return [ast.Expr(_box_op(op[1], n.id, ast.Name(n.id, ast.Load()), suffix=op[2])) for n, op in zip(names, ops)]

    def _then_set(self, stmt: ast.stmt) -> list:
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            return [stmt, *self._sets(stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])]
        sets = self.after.get(id(stmt), ()) if not isinstance(stmt, ast.Nonlocal) else ()
        return [stmt, *(ast.Expr(_box_op(op, n, ast.Name(n, ast.Load()), suffix=OWN)) for n, op in sets)]


def _box_op_new(name: str, param: bool) -> ast.expr:
    return ast.Call(ast.Constant(CELL_NEW), [ast.Constant(name), *([ast.Name(name, ast.Load())] if param else [])], [])


def hide_cells(tree: ast.Module) -> ast.Module:
    """The tests rewritten (in place; `Unsupported` where a form is not handled) so that

    * no closure cell holds one of their values: a name a nested function, class or lambda
      captures lives in a box (`name·cell`) whose value only `cell_constants` hands out, so
      `fn.__closure__[0].cell_contents` is an empty box, and replacing it voids the run;
    * no `global` statement and no class-body read of a global is left (`GLOBAL_GET`/`GLOBAL_SET`
      read and write the tests' namespace), so the tests keep the split namespace.
    """
    root, scopes = _Scope(None, None), []
    for stmt in tree.body:
        _collect(stmt, root, scopes)
    if any(s.cls and s.decl for s in scopes):
        raise Unsupported("global or nonlocal in a class body")
    rebound = {n for s in scopes for n, d in s.decl.items() if d == "global"}
    resolved = [(s, ref, s.owner(ref.id), s.cls and ref.id in s.bound) for s in scopes for ref in s.refs]
    boxed = {(o, ref.id) for s, ref, o, local in resolved if not local and o is not None and o is not s}
    if any(not isinstance(o.node, ast.FunctionDef | ast.AsyncFunctionDef) for o, _ in boxed):
        raise Unsupported("a lambda's or a comprehension's own name is captured")
    ops = {}  # id(Name node) -> (GET marker, SET marker)
    for s, ref, o, local in resolved:
        if (o, ref.id) in boxed and not local:
            ops[id(ref)] = (CELL_GET, CELL_SET, OWN if o is s else BOX)
        elif o is None and not local and (ref.id in rebound or (s.cls and isinstance(ref.ctx, ast.Load))):
            ops[id(ref)] = (GLOBAL_GET, GLOBAL_SET, "")
        if id(ref) in ops and isinstance(ref.ctx, ast.Del):
            raise Unsupported("del of a captured or global name")
    after: dict = {}
    for s in scopes:
        for stmt, name in s.binders:
            op = CELL_SET if (s, name) in boxed else GLOBAL_SET if s.decl.get(name) == "global" else None
            if op and not s.cls and isinstance(stmt, ast.ExceptHandler):
                raise Unsupported("a captured or global exception name")
            after.setdefault(id(stmt), []).extend([(name, op)] if op and not s.cls else [])
    for s, ref, o, _ in resolved:  # a nested `nonlocal x` for a boxed x goes: the box is shared instead
        if s.decl.get(ref.id) == "nonlocal" and (o, ref.id) in boxed:
            for node in ast.walk(s.node):
                if isinstance(node, ast.Nonlocal) and ref.id in node.names:
                    after.setdefault(id(node), []).append(ref.id)
    owners: dict = {}
    for o, name in boxed:
        a = o.node.args
        params = {x.arg for x in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg) if x}
        owners.setdefault(id(o.node), (set(), params))[0].add(name)
    loads = {k: v for s, ref, _, _ in resolved if (v := ops.get(k := id(ref))) and isinstance(ref.ctx, ast.Load)}
    stores = {k: v for k, v in ops.items() if k not in loads}
    keep = list(ast.walk(tree))  # the ids above name nodes that stay alive while it rewrites
    tree = _Rewrite(loads, stores, after, owners).visit(tree)
    del keep
    return tree


class _Cell:
    __slots__ = ("__weakref__",)


def cell_constants(void, tests_ns: dict, builtins: dict) -> dict:
    """`CELL_NEW`/`CELL_GET`/`CELL_SET`: the values live here, keyed by their box's identity;
    `GLOBAL_GET`/`GLOBAL_SET`: the tests' namespace (then a private copy of `builtins`)."""
    import _weakref

    ref, _id, values, unbound, count, _get, _new = _weakref.ref, id, {}, object(), [0], dict.get, object.__new__
    pristine, _NameError = dict(builtins), NameError

    def global_get(name):
        value = _get(tests_ns, name, unbound)
        value = _get(pristine, name, unbound) if value is unbound else value
        if value is unbound:
            raise _NameError(f"name {name!r} is not defined")
        return value

    def global_set(name, value):
        tests_ns[name] = value
        return value

    def new(name, *value):
        box = _new(_Cell)  # runs no `__init__` the program may have put on `_Cell`
        values[_id(box)] = (ref(box), value[0] if value else unbound, name)
        count[0] += 1
        if count[0] % 4096 == 0:  # forget the boxes of calls that have ended
            for key in [k for k, (r, _) in values.items() if r() is None]:
                del values[key]
        return box

    def entry(box, name):
        found = _get(values, _id(box))
        if found is None or found[0]() is not box or found[2] != name:  # a cell the program refilled
            void()
        return found

    def get(box, name):
        value = entry(box, name)[1]
        if value is unbound:
            raise _NameError(f"free variable {name!r} referenced before assignment")
        return value

    def set_(box, name, value):
        values[_id(box)] = (entry(box, name)[0], value, name)
        return value

    return {CELL_NEW: new, CELL_GET: get, CELL_SET: set_, GLOBAL_GET: global_get, GLOBAL_SET: global_set}


def cells_hidden(code: types.CodeType) -> bool:
    """No code object in `code` has a cell or free variable but boxes (and a method's `__class__`)."""
    names = (*code.co_cellvars, *code.co_freevars)
    ok = all(n.endswith(BOX) or n == "__class__" for n in names)
    return ok and all(cells_hidden(c) for c in code.co_consts if type(c) is types.CodeType)
