"""The two exceptions the command line treats as ends, not bugs (layer L0: no rlvr imports).

`UserError`: a mistake the user can fix (a config key, a data row, a path, a name).  The CLI prints
its message (every problem found, each naming the field or file:line, what is wrong and what to do)
and exits 2, with no traceback unless `--debug` or RLVR_DEBUG=1.  Library code marks such errors by
subclassing it (`rlvr.config.ConfigError`, `rlvr.tasks.files.DatasetError`, `RunDirError`);
anything else that escapes is a bug and keeps its traceback.

`Stopped`: SIGINT / SIGTERM ended the command after the current step.  A `KeyboardInterrupt`, so
code that cleans up on Ctrl-C cleans up on SIGTERM too; the CLI prints `message` (what was saved,
how to resume) and exits 128 + the signal number (130 / 143), never with a traceback.
"""

from __future__ import annotations

import os
import signal as _signal
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input; `str(err)` says what is wrong and what to do."""


class RunDirError(UserError, FileExistsError):
    """A run or output directory that cannot be used as asked (holds another run, nothing to resume)."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the user gave that does not exist or is not what it should be."""


class TaskKwargError(UserError, ValueError):
    """A task option (constructor keyword `arg`) that is wrong.  A constructor raises it with the bare
    name; `rlvr.tasks.make_task` re-raises it with `where`, the place the user wrote it, filled in
    (`task.kwargs.length`, `tasks.1.kwargs.length`, `--task-kwargs length`)."""

    def __init__(self, arg: str, reason: str, where: str = "{}") -> None:
        super().__init__(f"{where.format(arg)}: {reason}")
        self.arg, self.reason = arg, reason


class Stopped(KeyboardInterrupt):
    """The command was stopped by a signal; `message` says what was saved and how to go on."""

    def __init__(self, signal_name: str = "SIGINT", message: str = "") -> None:
        super().__init__(signal_name)
        self.signal_name, self.message = signal_name, message

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(getattr(_signal, self.signal_name, _signal.SIGINT))


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a file about to be written: a MissingPathError naming `what` (a flag or config key) when
    it is a directory or lies under a file, before anything is computed or half-written."""
    out = Path(path)
    if out.is_dir():
        raise MissingPathError(f"{what} {out} is a directory: pass the path of a file to write")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MissingPathError(f"{what} {out}: {parent} is a file, not a directory; choose another path")
            break
    return out


def unreadable(err: OSError, expect: str) -> str:
    """Why an input file could not be opened, and what to do, for a message that starts with its path;
    `expect` says what to pass instead of a directory ("a TOML file", "the JSONL file itself")."""
    if isinstance(err, FileNotFoundError):
        return "does not exist (file not found): check the path"
    if isinstance(err, IsADirectoryError):
        return f"is a directory: pass {expect}"
    if isinstance(err, PermissionError):
        return "cannot be read (permission denied): check its permissions (chmod +r)"
    return f"cannot be read ({err.strerror or err})"


def bug_line(err: BaseException) -> str:
    """What a traceback the CLI printed is: a package that does not import, or a bug in rlvr (exit 1)."""
    if isinstance(err, ImportError) and err.name:
        return (f"error: the package {err.name!r} does not import (not installed in this Python, or broken); "
                "install what the README says (pip install -e .) and run again")  # fmt: skip
    return (f"internal error: {type(err).__name__} is a bug in rlvr, not a mistake in your input; "
            "please report it with the traceback above")
