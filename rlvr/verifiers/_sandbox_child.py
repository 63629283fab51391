"""In-sandbox harness for `rlvr.verifiers.code` (run as a script, stdlib only, never imported by rlvr).

Invoked as ``python -I -S -B _sandbox_child.py SPEC_FD SIG_FD``.  SPEC_FD holds a JSON spec
(mode, program, tests, nonce, workdir, limits) that is read once and closed.  SIG_FD is the
private channel back to the parent: ``ISO <name>`` lines (isolation in force, trusted only before
``ARMED``), ``EXC <phase> <type>`` diagnostics, and exactly one ``DONE <nonce> <passed> <total>
<setup_failed>`` line that only the audit hook can write (see the design notes in code.py).
"""

import ast
import contextlib
import os
import sys

_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 1 << 18
_AT_RECURSIVE, _MOUNT_ATTR_RDONLY, _NR_MOUNT_SETATTR = 0x8000, 0x1, 442
_SETUP = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)
_DENY_EVENTS = frozenset(
    """os.fork os.forkpty os.system os.exec os.posix_spawn os.spawn subprocess.Popen os.kill os.killpg
    signal.pthread_kill sys._current_frames sys._current_exceptions sys.settrace sys.setprofile
    sys.addaudithook gc.get_objects gc.get_referrers gc.get_referents code.__new__
    socket.connect socket.bind socket.sendto socket.sendmsg os.chdir""".split()  # noqa: SIM905
)
_DENY_IMPORTS = ("_thread", "ctypes", "_ctypes", "_posixsubprocess", "_test", "_xx", "_lsprof")
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_LIB = os.path.dirname(os.__file__)
# stdlib modules that call sys._getframe only to read their caller's module name
_GETFRAME_OK = frozenset(
    os.path.join(_LIB, f) for f in ("collections/__init__.py", "typing.py", "enum.py", "warnings.py")
)


def _emit(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())


def _reap_as_init() -> None:
    """As pid 1 of a fresh PID namespace, fork the worker and mirror its exit (pid 1 ignores signals)."""
    pid = os.fork()
    if pid == 0:
        return
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            os._exit(
                os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            )


def _lockdown_fs(workdir: str) -> bool:
    """Inside a private mount namespace: everything read-only except the scratch directory."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        class _Attr(ctypes.Structure):
            _fields_ = [
                ("set", ctypes.c_uint64),
                ("clr", ctypes.c_uint64),
                ("prop", ctypes.c_uint64),
                ("ns", ctypes.c_uint64),
            ]

        def setattr_(path: bytes, flags: int, attr: "_Attr") -> None:
            if (
                libc.syscall(_NR_MOUNT_SETATTR, -100, path, flags, ctypes.byref(attr), ctypes.sizeof(attr))
                != 0
            ):
                raise OSError(ctypes.get_errno(), "mount_setattr")

        if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            return False
        wd = workdir.encode()
        if libc.mount(wd, wd, None, _MS_BIND, None) != 0:
            return False
        setattr_(b"/", _AT_RECURSIVE, _Attr(_MOUNT_ATTR_RDONLY, 0, 0, 0))
        setattr_(wd, 0, _Attr(0, _MOUNT_ATTR_RDONLY, 0, 0))
        return True
    except (OSError, AttributeError, ImportError):
        return False
    finally:
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]


def _set_limits(spec: dict) -> None:
    import resource

    mb = 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, spec["memory_mb"] * mb),
        (resource.RLIMIT_CPU, spec["cpu_s"]),
        (resource.RLIMIT_FSIZE, spec["fsize_mb"] * mb),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_NPROC, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))


def _make_cmp():
    """Comparison used for every `a <op> b` in the tests, built from references captured now.

    Values are canonicalised to exact builtin types (subclasses only when they keep the builtin
    `__eq__`); a value of any other type equals only a value of the identical type, by its own
    `__eq__`.  So an object whose `__eq__` always answers True never equals 5 or [1, 2].
    """
    import collections

    _type, _len, _range, _issub, _bool, _list, _tuple, _dict = (
        type,
        len,
        range,
        issubclass,
        bool,
        list,
        tuple,
        dict,
    )
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
    """`a == b` -> `__rlvr_cmp__("Eq", a, b)`; chains -> `__rlvr_chain__(a, ops, (lambda: b, ...))`."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        ops = [ast.Constant(type(op).__name__) for op in node.ops]
        if len(node.ops) == 1:
            call = ast.Call(
                ast.Name("__rlvr_cmp__", ast.Load()), [ops[0], node.left, node.comparators[0]], []
            )
        else:
            no_args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
            thunks = ast.Tuple([ast.Lambda(no_args, c) for c in node.comparators], ast.Load())
            call = ast.Call(
                ast.Name("__rlvr_chain__", ast.Load()), [node.left, ast.Tuple(ops, ast.Load()), thunks], []
            )
        return ast.copy_location(call, node)


def _compile_tests(source: str) -> list:
    """(is_setup, line, code) per top-level statement: setup (imports, defs, assignments) or a check."""
    tree = _RewriteCompare().visit(ast.parse(source, "<tests>"))
    out = []
    for stmt in tree.body:
        mod = ast.fix_missing_locations(ast.Module([stmt], []))
        out.append(
            (
                isinstance(stmt, _SETUP),
                stmt.lineno,
                compile(mod, "<tests>", "exec", dont_inherit=True, optimize=0),
            )
        )
    return out


def _disable_threads() -> None:
    """No audit event guards thread creation, so the entry points are replaced (and a fresh
    `_thread` import is denied by the hook): one thread means no check-then-use races."""
    import _thread

    def denied(*args, **kwargs):
        raise PermissionError("sandbox: threads are not allowed")

    _thread.start_new_thread = _thread.start_new = denied
    if "threading" in sys.modules:
        sys.modules["threading"]._start_new_thread = denied


def _install_hook(nonce: str, sig_fd: int, workdir: str) -> None:
    """Arm the audit hook (PEP 578): it denies introspection/escape events and owns the nonce.

    The nonce lives only in this closure.  `DONE` is written when `sys.audit("rlvr.done", ...)`
    is raised directly by the genuine `main` frame (identity checked), at most once.
    """
    main_frame, get_frame, get_ident = sys._getframe(1), sys._getframe, __import__("_thread").get_ident
    write, stat, realpath, sep, isinstance_, str_, int_, any_ = (
        os.write, os.stat, os.path.realpath, os.sep, isinstance, str, int, any
    )  # fmt: skip
    deny_events, deny_imports, frame_attrs, getframe_ok = (
        _DENY_EVENTS,
        _DENY_IMPORTS,
        _FRAME_ATTRS,
        _GETFRAME_OK,
    )
    write_flags, proc_dev, perm = (
        os.O_WRONLY | os.O_RDWR | os.O_CREAT,
        os.stat("/proc/self").st_dev,
        PermissionError,
    )
    bootstrap = "<frozen importlib._bootstrap_external>"
    allowed_dirs, state = (os.path.realpath(workdir) + sep, "/dev/"), {"done": False, "busy": None}

    def check_open(path, mode, flags) -> None:
        if isinstance_(path, int_):
            return
        if not isinstance_(path, (str_, bytes)):
            raise perm("sandbox: open() needs a str path")
        try:
            on_proc = stat(path).st_dev == proc_dev  # C-level stat: a patched os.path cannot lie here
        except OSError:
            on_proc = False
        if on_proc:
            raise perm("sandbox: /proc is off limits")
        writing = (isinstance_(mode, str_) and any_(c in mode for c in "wax+")) or (flags or 0) & write_flags
        if writing and not (realpath(path) + sep).startswith(allowed_dirs):
            raise perm("sandbox: writing outside the scratch directory is denied")

    def done(args: tuple) -> None:
        if state["done"] or get_frame(2) is not main_frame or args.__len__() != 3:
            raise perm("sandbox: forged completion signal")
        state["done"] = True
        write(sig_fd, f"DONE {nonce} {int_(args[0])} {int_(args[1])} {int_(args[2])}\n".encode())

    def hook(event: str, args: tuple) -> None:
        if state["busy"] == get_ident():  # our own get_frame/stat calls raise events too
            return
        state["busy"] = get_ident()
        try:
            if event == "rlvr.done":
                done(args)
            elif event in deny_events or event.startswith("ctypes."):
                raise perm(f"sandbox: {event} is not allowed")
            elif event == "import" and str_(args[0]).startswith(deny_imports):
                raise perm(f"sandbox: importing {args[0]} is not allowed")
            elif event == "object.__getattr__" and args[1] in frame_attrs:
                raise perm("sandbox: frame introspection is not allowed")
            elif event == "sys._getframe" and get_frame(1).f_code.co_filename not in getframe_ok:
                raise perm("sandbox: sys._getframe is not allowed")
            elif event in ("marshal.loads", "marshal.load") and get_frame(1).f_code.co_filename != bootstrap:
                raise perm("sandbox: marshal (crafted code objects) is only for the importer")
            elif event == "open":
                check_open(*args)
        finally:
            state["busy"] = None

    sys.addaudithook(hook)


def _run_program(
    code, ns: dict, sig_fd: int, _exec=exec, _base=BaseException, _exit=SystemExit, _emit=_emit
) -> bool:
    try:
        _exec(code, ns)
    except _exit as e:
        if e.code not in (None, 0):
            _emit(sig_fd, "EXC program SystemExit")
            return False
    except _base as e:
        _emit(sig_fd, f"EXC program {type(e).__name__}")
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return False
    return True


def main(
    _exec=exec, _base=BaseException, _audit=sys.audit, _dict=dict, _emit=_emit, _run=_run_program
) -> None:
    spec_fd, sig_fd = int(sys.argv[1]), int(sys.argv[2])
    if os.getpid() == 1:
        _reap_as_init()
        _emit(sig_fd, "ISO pid_init")
    with os.fdopen(spec_fd, "rb") as f:
        spec = __import__("json").loads(f.read())
    if spec["mount_ns"] and _lockdown_fs(spec["workdir"]):
        _emit(sig_fd, "ISO fs_readonly")
    _set_limits(spec)
    _emit(sig_fd, "ISO rlimits")
    os.chdir(spec["workdir"])
    cmp, chain = _make_cmp()
    builtins_copy = _dict(__import__("builtins").__dict__)
    builtins_pristine = _dict(builtins_copy)  # the program can mutate its own copy
    try:
        program = compile(spec["program"], "<program>", "exec", dont_inherit=True, optimize=0)
        tests = _compile_tests(spec["tests"]) if spec["mode"] == "tests" else []
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        _emit(sig_fd, f"EXC compile {type(e).__name__}")
        os._exit(1)
    ns = {"__name__": "__main__" if spec["mode"] == "io" else "solution", "__builtins__": builtins_copy}
    out, err = sys.stdout, sys.stderr
    _disable_threads()
    _install_hook(spec.pop("nonce"), sig_fd, spec["workdir"])
    del spec
    _emit(sig_fd, "ISO audit_hook\nARMED")
    if not _run(program, ns, sig_fd):
        os._exit(1)
    tests_ns = _dict(ns)
    tests_ns.update(__builtins__=builtins_pristine, __rlvr_cmp__=cmp, __rlvr_chain__=chain, __name__="tests")
    passed = total = setup_failed = 0
    for is_setup, lineno, code in tests:
        total += 0 if is_setup else 1
        try:
            _exec(code, tests_ns)
        except _base as e:
            setup_failed += 1 if is_setup else 0
            _emit(sig_fd, f"EXC {'setup' if is_setup else 'test'} {type(e).__name__}")
            with contextlib.suppress(_base):
                print(f"tests line {lineno}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        passed += 0 if is_setup else 1
    _audit("rlvr.done", passed, total, setup_failed)
    for stream in (out, err):
        with contextlib.suppress(_base):
            stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
