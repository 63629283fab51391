"""Start a process under bubblewrap: the OS boundary of the code sandbox (see `rlvr.verifiers.code`).

What a sandboxed process gets (each item is named in `ISOLATION`, reported per run):

* new user, pid, net, ipc, uts, cgroup and mount namespaces (`--unshare-all --unshare-user`), no
  nested user namespaces (`--disable-userns`), every capability dropped (`--cap-drop ALL`);
* an unprivileged uid on the host too: run by root, we switch to `nobody` (65534) *before*
  bwrap starts (Popen `user=`/`group=`/`extra_groups=[]`, so no `preexec_fn`), because Debian's
  bwrap run by root maps the uid inside to host root (a root-only 0600 file stayed readable and
  RLIMIT_NPROC was not enforced);
* a minimal read-only root built from scratch: the interpreter binary, its stdlib (any
  `site-packages`/`dist-packages` inside it masked by an empty tmpfs), the shared-library
  directories it maps, its ELF loader and the symlinks leading to them.  Nothing else: no /etc,
  /home, /root, /run, host /tmp, /work, datasets, site-packages or the project's files;
* a fresh /proc for its own pid namespace, a minimal read-only /dev (a 1 MiB /dev/shm), and a
  size-capped tmpfs at /tmp as scratch (the cwd) that dies with the mount namespace;
* `--die-with-parent`, `--new-session` (no TIOCSTI into our terminal), our seccomp filter
  (`_seccomp`), a scrubbed environment; the harness files arrive as read-only data binds.

The interpreter is `$RLVR_SANDBOX_PYTHON`, else `/usr/bin/python3`, else `sys.executable`, the
first that the sandbox uid can run (a venv under /root is not readable by `nobody`).  Everything
is probed once per process (`host()`); `SandboxUnavailable` says why bwrap cannot be used.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

NOBODY = 65534
SANDBOX_DIR = "/sandbox"  # read-only, holds the harness files
SCRATCH = "/tmp"
SCRATCH_BYTES = 64 << 20
DEV_SHM_BYTES = 1 << 20
KILL_WAIT_S = 5.0  # how long a killed sandbox may take to disappear before it is an integrity error
INFO_WAIT_S = 30.0  # how long bwrap may take to report its pid namespace (`--info-fd`)
ISOLATION = (
    "bwrap", "userns", "pidns", "netns", "ipcns", "utsns", "cgroupns", "mountns", "no_nested_userns",
    "cap_drop_all", "ro_minimal_root", "tmpfs_scratch", "seccomp", "die_with_parent",
    "new_session", "env_scrubbed", "no_new_processes", "ro_dev",
)  # fmt: skip
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": SCRATCH, "TMPDIR": SCRATCH}
_PROBE = r"""
import json, os, sys, sysconfig
for m in ("math", "_json", "_struct", "select", "zlib", "binascii", "_random", "_bisect", "_heapq",
          "array", "unicodedata", "_datetime", "_decimal", "_socket", "_hashlib", "_ctypes", "pyexpat"):
    try: __import__(m)
    except Exception: pass
maps = [l.split()[-1] for l in open("/proc/self/maps") if l.rstrip().split()[-1].startswith("/")]
paths = sysconfig.get_paths()
print(json.dumps({"exe": os.path.realpath(sys.executable), "stdlib": paths["stdlib"],
                  "platstdlib": paths["platstdlib"], "maps": sorted(set(maps))}))
"""


class SandboxUnavailable(RuntimeError):
    """bwrap (or the seccomp filter, or a readable interpreter) cannot be used on this machine."""


class SandboxIntegrityError(RuntimeError):
    """A sandbox outlived its run (a process or its scratch survived): never silently ignored."""


@dataclass(frozen=True, slots=True)
class Host:
    bwrap: str
    python: str  # real path of the interpreter that runs inside
    uid: int | None  # host uid/gid to switch to before bwrap (None: we are not root)
    gid: int | None
    root_args: tuple[str, ...]  # bwrap arguments that build the read-only root

    @property
    def isolation(self) -> tuple[str, ...]:
        return (*ISOLATION, "unprivileged_host_uid")  # a non-root caller's uid is unprivileged already


def _elf_interpreter(path: str) -> str | None:
    """PT_INTERP of a 64-bit little-endian ELF (the loader path the kernel opens), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            phoff, phentsize, phnum = (
                struct.unpack_from("<Q", head, 32)[0],
                *struct.unpack_from("<HH", head, 54),
            )
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
                if p_type == 3:
                    f.seek(p_offset)
                    return f.read(p_filesz).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _reproduce(path: str, args: list[str], done: set[str], depth: int = 0) -> None:
    """bwrap args that make `path` resolve inside as on the host: its symlinks, then a ro-bind."""
    if depth > 16 or path in done:
        return
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        if os.path.islink(prefix):
            target = os.readlink(prefix)
            if "->" + prefix not in done:
                done.add("->" + prefix)
                args += ["--symlink", target, prefix]
            resolved = os.path.normpath(os.path.join(os.path.dirname(prefix), target))
            rest = "/".join(parts[i:])
            _reproduce(os.path.join(resolved, rest) if rest else resolved, args, done, depth + 1)
            return
    done.add(path)
    args += ["--ro-bind", path, path]


def _root_args(info: dict) -> list[str]:
    args: list[str] = []
    done: set[str] = set()
    stdlibs = sorted({os.path.realpath(info["stdlib"]), os.path.realpath(info["platstdlib"])})
    lib_dirs = {os.path.dirname(p) for p in info["maps"] if ".so" in os.path.basename(p)}
    lib_dirs = {d for d in lib_dirs if not any((d + "/").startswith(s + "/") for s in stdlibs)}
    interp = _elf_interpreter(info["exe"])
    for path in [info["exe"], *stdlibs, *sorted(lib_dirs), *([interp] if interp else [])]:
        if os.path.exists(path):
            _reproduce(path, args, done)
    for lib in stdlibs:
        for sub in ("site-packages", "dist-packages"):
            if os.path.isdir(os.path.join(lib, sub)):
                args += ["--tmpfs", os.path.join(lib, sub), "--remount-ro", os.path.join(lib, sub)]
    return args


def _drop(uid: int | None, gid: int | None) -> dict:
    return {} if uid is None else {"user": uid, "group": gid, "extra_groups": []}


def _probe_python(candidate: str, uid: int | None, gid: int | None) -> dict | None:
    try:
        out = subprocess.run(
            [candidate, "-I", "-S", "-c", _PROBE], capture_output=True, timeout=30, env=ENV, cwd="/",
            check=False, **_drop(uid, gid),
        )  # fmt: skip
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _candidates() -> list[str]:
    env = os.environ.get("RLVR_SANDBOX_PYTHON")
    return [env] if env else ["/usr/bin/python3", sys.executable]


@functools.cache
def host() -> Host:
    """Probe bwrap, the seccomp filter and an interpreter once; raises SandboxUnavailable."""
    bwrap = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    try:
        from rlvr.verifiers._seccomp import bpf_program

        bpf_program()
    except (ImportError, OSError) as exc:
        raise SandboxUnavailable(f"cannot build the seccomp filter ({exc}); pip install pyseccomp") from exc
    uid, gid = (NOBODY, NOBODY) if os.geteuid() == 0 else (None, None)
    for candidate in _candidates():
        info = _probe_python(candidate, uid, gid)
        if info is None:
            continue
        h = Host(bwrap, info["exe"], uid, gid, tuple(_root_args(info)))
        proc = start(h, ["-c", "print('ok')"], {}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30)
        finish(proc)
        if proc.returncode == 0 and out.strip() == b"ok":
            return h
        raise SandboxUnavailable(f"bwrap cannot start a sandbox here: {err.decode(errors='replace')[-300:]}")
    raise SandboxUnavailable(f"no interpreter the sandbox uid can run among {_candidates()}")


def _data_fd(data: bytes) -> int:
    fd = os.memfd_create("rlvr-sandbox-data", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def start(
    h: Host,
    python_args: list[str],
    files: dict[str, bytes],
    *,
    pass_fds: tuple[int, ...] = (),
    extra_ro_binds: tuple[str, ...] = (),
    scratch_bytes: int = SCRATCH_BYTES,
    proc_fs: bool = True,
    allow_processes: bool = False,
    **popen_kw,
) -> subprocess.Popen:
    """Popen of `python python_args` in a fresh sandbox; `files` appear read-only in /sandbox.

    `proc_fs=False` mounts no /proc at all (the weak mode).  `extra_ro_binds` exists for tests (bind a host file in and show it stays unreadable),
    as does `allow_processes` (a filter that lets the program fork, to test the cleanup of leftovers).
    /dev is read-only but for a `DEV_SHM_BYTES` tmpfs at /dev/shm: bwrap's /dev is a tmpfs without a size
    limit, where 1 MB files (RLIMIT_FSIZE) added up to any amount of the host's memory.
    """
    from rlvr.verifiers._seccomp import bpf_fd

    own_fds = [bpf_fd(allow_processes)]
    try:
        args = [
            h.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox", *h.root_args,
            *(["--proc", "/proc"] if proc_fs else []), "--dev", "/dev", "--size", str(DEV_SHM_BYTES), "--tmpfs",
            "/dev/shm", "--remount-ro", "/dev", "--size", str(scratch_bytes), "--tmpfs", SCRATCH,
            "--chdir", SCRATCH, "--dir", SANDBOX_DIR,
        ]  # fmt: skip
        for path in extra_ro_binds:
            args += ["--ro-bind", path, path]
        for name, data in files.items():
            own_fds.append(_data_fd(data))
            args += ["--ro-bind-data", str(own_fds[-1]), f"{SANDBOX_DIR}/{name}"]
        info_r, info_w = os.pipe()
        own_fds.append(info_w)
        args += ["--info-fd", str(info_w), "--remount-ro", "/", "--seccomp", str(own_fds[0]), "--", h.python, *python_args]
        try:
            proc = subprocess.Popen(
                args, pass_fds=(*pass_fds, *own_fds), env=ENV, cwd="/", start_new_session=True,
                **_drop(h.uid, h.gid), **popen_kw,
            )  # fmt: skip
            os.close(own_fds.pop())  # our copy of the write end: EOF once bwrap has written or died
            info = _read_info(info_r)
            proc.rlvr_pid_namespace = info.get("pid-namespace")  # type: ignore[attr-defined]
            proc.rlvr_child_pid = info.get("child-pid")  # type: ignore[attr-defined]
        finally:
            os.close(info_r)
        return proc
    finally:
        for fd in own_fds:
            os.close(fd)


def _read_info(fd: int) -> dict:
    """bwrap's `--info-fd` JSON as ints: "pid-namespace" (an inode) and "child-pid" (the inner
    bwrap, our grandchild); {} when bwrap died first."""
    data, deadline = b"", time.monotonic() + INFO_WAIT_S
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        with contextlib.suppress(ValueError, KeyError, TypeError):
            info = json.loads(data)
            return {key: int(info[key]) for key in ("pid-namespace", "child-pid") if key in info}
    return {}


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL bwrap's process group; the pid namespace (and its tmpfs) dies with its init."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def finish(proc: subprocess.Popen, grace_s: float = 2.0) -> int:
    """Wait for the sandbox, kill what is left, and check that nothing of it survives.

    The sandboxed tree lives in bwrap's process group (outer bwrap) and in its pid namespace
    (inner init, which `--die-with-parent` kills).  A process that left the group (`setsid()` and
    a double fork) is still in the namespace, and the kernel kills it only asynchronously once the
    namespace's init is gone: so we wait until neither the group nor the namespace has a live
    process (killing what the namespace still holds), and only then are its mounts and tmpfs
    scratch gone.  Raises SandboxIntegrityError otherwise.
    """
    try:
        returncode = proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill(proc)
        returncode = proc.wait()
    kill(proc)
    namespace = getattr(proc, "rlvr_pid_namespace", None)
    deadline = time.monotonic() + KILL_WAIT_S
    while _alive(proc.pid) or _kill_namespace(namespace):
        if time.monotonic() > deadline:
            raise SandboxIntegrityError(f"sandbox {proc.pid} (pid namespace {namespace}) survived SIGKILL")
        kill(proc)
        time.sleep(0.01)
    _reap_orphan(getattr(proc, "rlvr_child_pid", None))
    return returncode


def _reap_orphan(pid: int | None) -> None:
    """Reap the inner bwrap if it was re-parented to us and left as a zombie.

    When the outer bwrap dies first, its child goes to the nearest subreaper, which is this
    process when it is PID 1 of a container without an init (or set PR_SET_CHILD_SUBREAPER):
    nobody else would ever wait for it, and every run would leave one zombie (pids run out after
    enough steps).  Only that pid is reaped, and only while it is our zombie child: no other
    child's exit status (a Popen's) is taken.
    """
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] == b"Z" and int(fields[1]) == os.getpid():
            os.waitpid(pid, os.WNOHANG)
    except (OSError, ValueError, IndexError):
        pass


def _kill_namespace(inode: int | None) -> bool:
    """SIGKILL every live process of pid namespace `inode`; whether there was one."""
    if inode is None:
        return False
    link, found = f"pid:[{inode}]", False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != link or _state(entry) == b"Z":
                continue
            os.kill(int(entry), signal.SIGKILL)
            found = True
        except (OSError, ValueError):
            continue
    return found


def _state(pid: str) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0]


def _alive(pgid: int) -> bool:
    """Whether a non-zombie process of group `pgid` exists (a zombie holds no mounts or files)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for entry in os.listdir("/proc"):  # slow path, only while something of the group is left
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False
