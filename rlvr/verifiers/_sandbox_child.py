"""In-sandbox harness for `rlvr.verifiers.code` (run as a script, stdlib only, never imported by rlvr).

Invoked as ``python -I -S -B _sandbox_child.py IN_FD OUT_FD``.  The first line on IN_FD is a JSON
spec (mode, program, limits, and for the weak mode tests and nonce).  Replies on OUT_FD are
JSON lines: ``{"ev": "limits"}`` once the rlimits are set, ``{"ev": "program", ...}`` after the
program ran, then per mode:

* ``split``: describes the names the parent asked about (``fn`` / ``val`` + plain data /
  ``missing`` / ``other``), then answers each call request ``{"call": name, "args": ...,
  "kwargs": ...}`` with ``{"ok": plain}``, ``{"exc": [type, message]}`` or ``{"bad": type}`` (the
  result is not plain data) until IN_FD closes.  No expected value ever arrives here.
* ``io``: runs the program as ``__main__`` and reports ``{"ev": "done"}`` when it ran to the end.
* ``tests`` (weak): see `_sandbox_weak`.
"""

import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _plaindata

_write, _dumps, _loads = os.write, json.dumps, json.loads
_encode, _decode, _Unencodable = _plaindata.encode, _plaindata.decode, _plaindata.Unencodable
_FUNCTION_TYPES = (type(len), type(lambda: 0), type(print.__call__), type(str.join), type("".join))


def _emit(fd: int, obj) -> None:
    with contextlib.suppress(OSError):
        _write(fd, (_dumps(obj) + "\n").encode())


def _set_limits(spec: dict) -> None:
    import resource

    mb = 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, spec["memory_mb"] * mb),
        (resource.RLIMIT_CPU, spec["cpu_s"]),
        (resource.RLIMIT_FSIZE, spec["fsize_bytes"]),
        (resource.RLIMIT_NOFILE, spec["nofile"]),
        (resource.RLIMIT_NPROC, spec["nproc"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))


def _exc_name(exc: BaseException) -> str:
    name = type(exc).__name__
    return name if type(name) is str else "Exception"


def _exc_text(exc: BaseException) -> str:
    try:
        text = str(exc)
        return text[:500] if type(text) is str else ""
    except BaseException:  # a program-defined __str__ may do anything
        return ""


def _run_program(code, ns: dict, out_fd: int) -> bool:
    try:
        exec(code, ns)
    except SystemExit as e:
        if e.code not in (None, 0):
            _emit(out_fd, {"ev": "program", "ok": False, "exc": "SystemExit"})
            return False
    except BaseException as e:
        _emit(out_fd, {"ev": "program", "ok": False, "exc": _exc_name(e)})
        with contextlib.suppress(BaseException):
            print(f"{_exc_name(e)}: {_exc_text(e)}", file=sys.stderr)
        return False
    return True


def _describe(ns: dict, names: list) -> dict:
    out = {}
    for name in names:
        if name not in ns:
            out[name] = ["missing"]
            continue
        value = ns[name]
        # any callable but a class: a `functools.lru_cache` wrapper, a partial or a callable
        # instance is called through the parent like a function (else the program could pick
        # the weaker in-sandbox judge by wrapping its function; `callable` runs no program code)
        if type(value) in _FUNCTION_TYPES or (callable(value) and not issubclass(type(value), type)):
            out[name] = ["fn"]
            continue
        try:
            out[name] = ["val", _encode(value)]
        except (_Unencodable, RecursionError, MemoryError):
            out[name] = ["other", type(value).__name__]
    return out


def _serve_calls(ns: dict, reader, out_fd: int) -> None:
    """Answer call requests until the parent closes the pipe; results leave only as plain data."""
    while True:
        line = reader.readline()
        if not line:
            return
        request = _loads(line)
        try:
            fn = ns[request["call"]]
            args = _decode(request["args"])
            kwargs = _decode(request["kwargs"])
            result = fn(*args, **kwargs)
        except BaseException as e:
            reply = {"exc": [_exc_name(e), _exc_text(e)]}
        else:
            try:
                reply = {"ok": _encode(result)}
            except (_Unencodable, RecursionError, MemoryError):
                reply = {"bad": type(result).__name__}
        _emit(out_fd, reply)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def main() -> None:
    in_fd, out_fd = int(sys.argv[1]), int(sys.argv[2])
    reader = os.fdopen(in_fd, "rb")
    spec = _loads(reader.readline())
    _set_limits(spec)
    _emit(out_fd, {"ev": "limits"})
    if spec["mode"] == "tests":
        import _sandbox_weak

        _sandbox_weak.main(spec, out_fd, _run_program, _emit)
        return
    try:
        code = compile(spec["program"], "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        _emit(out_fd, {"ev": "program", "ok": False, "exc": _exc_name(e)})
        os._exit(1)
    ns = {"__name__": "__main__" if spec["mode"] == "io" else "solution", "__builtins__": __builtins__}
    names = spec.get("names", [])
    del spec
    if not _run_program(code, ns, out_fd):
        _flush()
        os._exit(1)
    _emit(out_fd, {"ev": "program", "ok": True, "names": _describe(ns, names)})
    _serve_calls(ns, reader, out_fd)
    _flush()
    os._exit(0)


if __name__ == "__main__":
    main()
