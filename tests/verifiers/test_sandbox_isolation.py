"""The OS boundary itself (bubblewrap): each layer checked from inside a real sandbox."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import time
import uuid

import pytest

from rlvr.verifiers import _bwrap, code
from rlvr.verifiers.code import SandboxIntegrityError, run_tests, sandbox_available

pytestmark = pytest.mark.skipif(
    not sandbox_available()[0], reason=f"no bwrap sandbox: {sandbox_available()[1]}"
)


def inside(program: str, **kw) -> subprocess.CompletedProcess:
    """Run `python -I -S -c program` in a bare sandbox (no harness) and collect its output."""
    proc = _bwrap.start(
        _bwrap.host(), ["-I", "-S", "-c", program], {}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )
    out, err = proc.communicate(timeout=30)
    _bwrap.finish(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def value(program: str, expr: str, expected) -> None:
    """Through `run_tests`: `f()` computed in the sandbox must equal `expected` (judged here)."""
    r = run_tests(program + f"\ndef f():\n    return {expr}\n", f"assert f() == {expected!r}", timeout_s=10.0)
    assert r.passed, (r, r.stderr_tail)


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop only happens for root callers")
def test_root_only_file_is_unreadable_and_uid_is_nobody() -> None:
    folder = tempfile.mkdtemp()
    os.chmod(folder, 0o755)
    secret = os.path.join(folder, "secret")
    with open(secret, "w") as f:
        f.write("gold answers")
    os.chmod(secret, stat.S_IRUSR | stat.S_IWUSR)  # 0600, owned by root
    try:
        out = inside(
            f"import os\nprint(os.getuid(), os.getgid())\ntry:\n    print(open({secret!r}).read())\n"
            "except PermissionError:\n    print('denied')\n",
            extra_ro_binds=(folder,),
        )
        assert out.stdout.split() == ["65534", "65534", "denied"], out
    finally:
        os.unlink(secret)
        os.rmdir(folder)


def test_no_capabilities_and_minimal_root() -> None:
    out = inside(
        "import os\ncaps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))]\n"
        "print(all(l.split()[1].strip('0') == '' for l in caps), sorted(os.listdir('/')))\n"
    )
    no_caps, listing = out.stdout.split(" ", 1)
    assert no_caps == "True", out
    assert set(eval(listing)) <= {"usr", "lib", "lib64", "bin", "proc", "dev", "tmp", "sandbox"}, listing
    for path in (
        "/etc/passwd",
        "/root",
        "/home",
        "/work",
        "/run",
        os.getcwd(),
        os.path.dirname(pytest.__file__),
    ):
        assert inside(f"import os\nprint(os.path.exists({path!r}))").stdout.strip() == "False", path


def test_process_limit_holds() -> None:
    program = (
        "import os, time\ndef spawn():\n    n = 0\n    for _ in range(500):\n        try:\n            pid = os.fork()\n"
        "        except OSError:\n            return n\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n"
        "        n += 1\n    return n\n"
    )
    r = run_tests(program, "assert spawn() < 64", timeout_s=10.0)
    assert r.passed, r


@pytest.mark.parametrize(
    ("call", "errno_name"),
    [
        ("libc.syscall(272, 0x10000000)", "EPERM"),  # unshare(CLONE_NEWUSER)
        ("libc.syscall(101, 0, 0, 0, 0)", "EPERM"),  # ptrace(PTRACE_TRACEME): allowed without seccomp
        ("libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, 0)", "EPERM"),  # mount
        ("libc.syscall(250, 0, 0, 0, 0)", "EPERM"),  # keyctl(KEYCTL_GET_KEYRING_ID)
        ("libc.syscall(321, 0, 0, 0)", "EPERM"),  # bpf
        ("libc.syscall(308, 0, 0)", "EPERM"),  # setns
        ("libc.syscall(425, 8, 0)", "EPERM"),  # io_uring_setup
        ("libc.syscall(435, 0, 0)", "ENOSYS"),  # clone3: libc falls back to clone
    ],
)
def test_seccomp_blocks_syscalls(call: str, errno_name: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers are x86_64's")
    out = inside(
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"rc = {call}\nprint(rc, errno.errorcode.get(ctypes.get_errno()))\n"
    )
    assert out.stdout.split() == ["-1", errno_name], out


MEMORY_OUTSIDE_RLIMIT_AS = {
    # each was a way to hold more memory than `memory_mb` (4 forks x 300 MB; 300 MB of 1 MB files
    # in /dev/shm or /dev, bwrap's unsized tmpfs; 300 MB of System V segments after shmdt)
    "fork": ("import os\ntry:\n    os.fork()\n    print('forked')\nexcept PermissionError:\n    print('refused')\n", "refused"),
    "spawn": (
        "import subprocess, sys\ntry:\n    subprocess.run([sys.executable, '-c', 'pass'])\n    print('spawned')\n"
        "except PermissionError:\n    print('refused')\n", "refused",
    ),
    "dev_shm_capped": (
        "n = 0\ntry:\n    with open('/dev/shm/x', 'wb') as f:\n        for _ in range(64):\n            n += f.write(b'x' * 65536)\n"
        "            f.flush()\nexcept OSError:\n    pass\nprint(n <= 1 << 20)\n", "True",
    ),
    "dev_read_only": ("try:\n    open('/dev/x', 'w')\n    print('written')\nexcept OSError:\n    print('read-only')\n", "read-only"),
    "sysv_shm": (
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.shmget(0, 1 << 20, 0o1600), errno.errorcode.get(ctypes.get_errno()))\n", "-1 EPERM",
    ),
    "threads_still_work": ("import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()\n", "thread"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MEMORY_OUTSIDE_RLIMIT_AS))
def test_no_memory_outside_the_address_space_limit(name: str) -> None:
    program, expected = MEMORY_OUTSIDE_RLIMIT_AS[name]
    out = inside(program)
    assert out.stdout.strip() == expected, out


def test_no_network_at_all() -> None:
    out = inside(
        "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    print('online')\n"
        "except OSError:\n    print('offline')\n"
    )
    assert out.stdout.split("\n")[:2] == ["['lo']", "offline"], out


def test_host_unix_sockets_are_unreachable() -> None:
    path = f"/tmp/rlvr-test-{uuid.uuid4().hex}.sock"
    abstract = f"\0rlvr-test-{uuid.uuid4().hex}"
    servers = []
    for address in (path, abstract):
        s = socket.socket(socket.AF_UNIX)
        s.bind(address)
        s.listen(1)
        s.setblocking(False)
        servers.append(s)
    try:
        for address in (path, abstract):
            out = inside(
                f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({address!r})\n    print('reached')\n"
                "except OSError as e:\n    print(type(e).__name__)\n"
            )
            assert out.stdout.strip() in ("FileNotFoundError", "ConnectionRefusedError"), out
        for s in servers:
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        for s in servers:
            s.close()
        os.unlink(path)


def test_parent_environment_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLVR_FAKE_SECRET", "hunter2")
    out = inside(
        "import os\nfound = 'hunter2' in repr(dict(os.environ))\nfor pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n        try:\n            found |= b'hunter2' in open(f'/proc/{pid}/environ', 'rb').read()\n"
        "        except OSError:\n            pass\nprint(found, sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    found, pids = out.stdout.split(" ", 1)
    assert found == "False", out
    assert len(eval(pids)) <= 3, pids  # bwrap's init, the program: its own pid namespace only


def test_nothing_of_a_sandbox_survives_the_run() -> None:
    token = uuid.uuid4().hex
    program = (
        "import os\ndef f():\n    try:\n        pid = os.fork()\n    except PermissionError:\n        pid = -1\n"
        "    if pid == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        f"            {_sleeper(token)}\n"
        "        os._exit(0)\n    open('/tmp/left-behind', 'w').write('x')\n    return pid\n"
    )
    r = run_tests(program, "assert f() == -1")  # no new processes at all (seccomp)
    assert r.passed, r
    for pid in filter(str.isdigit, os.listdir("/proc")):
        assert token.encode() not in _cmdline(pid), f"daemon {pid} outlived its sandbox"
    assert not os.path.exists("/tmp/left-behind")


def test_a_daemon_that_left_the_group_is_found_and_killed_through_the_pid_namespace() -> None:
    # setsid() + double fork leaves bwrap's process group; the kernel kills the daemon only
    # asynchronously when the namespace's init dies, so `finish` looks for it by namespace too
    token = uuid.uuid4().hex
    daemon = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        {_sleeper(token)}\n"
        "    os._exit(0)\ntime.sleep(60)\n"
    )
    # run_tests' filter refuses new processes; this one lets the program fork, to test the cleanup
    proc = _bwrap.start(_bwrap.host(), ["-I", "-S", "-c", daemon], {}, allow_processes=True)
    try:
        inode = proc.rlvr_pid_namespace
        deadline, members = time.monotonic() + 10, []
        while time.monotonic() < deadline and not any(c.endswith(token.encode() + b"\0") for c in members):
            time.sleep(0.02)
            members = [_cmdline(pid) for pid in _pids_in_namespace(inode)]
        # the daemon (its argv ends with the token; the parent's -c source only contains it)
        assert any(c.endswith(token.encode() + b"\0") for c in members), members
        assert _bwrap._kill_namespace(inode)  # nothing else kills it here: no killpg, init still alive
        assert proc.wait(timeout=10) is not None  # init killed too: bwrap exits
        deadline = time.monotonic() + 5
        while _bwrap._kill_namespace(inode) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _bwrap._kill_namespace(inode)
    finally:
        _bwrap.finish(proc)


def _sleeper(token: str) -> str:
    """A statement that becomes a 60 s sleep whose command line carries `token` (to find it in /proc)."""
    return f"os.execv({_bwrap.host().python!r}, ['python3', '-c', 'import time; time.sleep(60)', '{token}'])"


def _pids_in_namespace(inode: int) -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == f"pid:[{inode}]":
                out.append(pid)
        except OSError:
            continue
    return out


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_survivor_is_loud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bwrap, "_alive", lambda pgid: True)
    monkeypatch.setattr(_bwrap, "KILL_WAIT_S", 0.05)
    with pytest.raises(SandboxIntegrityError):
        run_tests("def f(): return 1", "assert f() == 1")


def test_refuses_without_bwrap_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code, "_host_or_reason", lambda: "bubblewrap is not installed")
    r = run_tests("def f(): return 1", "assert f() == 1")
    assert (r.passed, r.status) == (False, "sandbox_unavailable") and "allow_unsafe_no_sandbox" in r.detail
    unsafe = run_tests("def f(): return 1", "assert f() == 1", allow_unsafe_no_sandbox=True)
    assert unsafe.passed and not unsafe.sandboxed and "unsafe_no_sandbox" in unsafe.isolation


def test_unsafe_scratch_that_cannot_be_removed_is_loud(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from rlvr.verifiers import _session

    monkeypatch.setattr(code, "_host_or_reason", lambda: "bubblewrap is not installed")
    monkeypatch.setattr(_session.tempfile, "tempdir", str(tmp_path))  # the scratch it leaves: pytest's to clean

    def stuck(path: str) -> None:
        raise PermissionError(1, "Operation not permitted", path)

    monkeypatch.setattr(_session.shutil, "rmtree", stuck)
    with pytest.raises(SandboxIntegrityError):
        run_tests("def f(): return 1", "assert f() == 1", allow_unsafe_no_sandbox=True)


@pytest.mark.parametrize(
    "program",
    [
        "import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 272, 0x10000000)\n",  # x32 ABI: unshare
        "import ctypes, mmap\nbuf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "buf.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))\n"  # mov eax, 20 (getpid); int 0x80; ret
        "ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()\n",
    ],
    ids=["x32", "int_0x80"],
)
def test_foreign_syscall_abis_kill_the_process(program: str) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("x86_64's foreign ABIs")
    out = inside(program + "print('survived')\n")
    assert out.returncode == -31 or out.returncode == 128 + 31, out  # SIGSYS (bwrap may report 128+n)
    assert "survived" not in out.stdout
