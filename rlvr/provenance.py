"""What produced a result file: rlvr's version, the git commit of its source (when it runs from a
checkout), and the versions of the libraries that decide the numbers.  Torch-free and cheap: library
versions come from package metadata (nothing is imported) and git is asked once per process."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import rlvr

LIBRARIES = ("torch", "transformers", "tokenizers", "math-verify", "vllm")


@functools.cache
def git_commit() -> str | None:
    """HEAD of the checkout rlvr's source lives in, with "-dirty" when files differ; None outside git."""
    root = Path(rlvr.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "rlvr"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


@functools.cache
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """{"rlvr_version", "git_commit", "versions": {...}, **extra} for a result file."""
    return {"rlvr_version": rlvr.__version__, "git_commit": git_commit(), "versions": dict(_versions()), **extra}
