"""The seccomp filter for the code sandbox, compiled once to a classic BPF program for `bwrap --seccomp`.

Default action: allow (the namespaces, the unprivileged uid and the read-only root are the
boundary; this filter removes kernel attack surface and escape tools on top).  Denied with EPERM:
process inspection (`ptrace`, `process_vm_*`, `kcmp`, `pidfd_getfd`), every mount and
namespace call (`mount`, `umount2`, `pivot_root`, `chroot`, `unshare`, `setns`, the new mount
API), `clone` with any namespace flag, keyrings, `bpf`, `perf_event_open`, `userfaultfd`,
`io_uring_*` (its operations bypass seccomp), module and kexec loading, `reboot`, swap, quotas,
`acct`, file handles (`open_by_handle_at` walks out of any mount), clock setting, `syslog`,
`personality`, port I/O and the terminal-injection ioctls (`TIOCSTI`, `TIOCLINUX`).

No new processes: `fork`, `vfork` and a `clone` without `CLONE_THREAD` answer EPERM (threads,
which share one address space, still work).  So the program is one address space, and
RLIMIT_AS is the run's whole memory, not a per-process cap that 64 forks multiply by 64 (4 forks
held 1.2 GB under `memory_mb=512`); no daemon, zombie or fork bomb can exist.  Memory that
RLIMIT_AS does not see is denied too: System V shared memory, message queues and semaphores
(`shmget` segments outlive `shmdt`: 300 MB were held outside the limit) and POSIX message
queues.  (`_bwrap` makes /dev read-only with a 1 MiB /dev/shm for the same reason.)
`clone3` answers ENOSYS, as in Docker and Flatpak: its flags sit in memory a filter cannot read,
and libc then falls back to `clone`, which is checked.  Syscalls of a foreign ABI (x32, i386 via
`int 0x80`) kill the process (libseccomp's bad-arch default).

Built with libseccomp through `pyseccomp`; without it the sandbox is reported as not available.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie", "nfsservctl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "personality",
    "iopl", "ioperm", "vhangup", "uselib",
    "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "mq_open",
)  # fmt: skip
PROCESS_CREATION = ("fork", "vfork")
CLONE_THREAD = 0x00010000
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C


def _build_filter(processes: bool):
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED + (() if processes else PROCESS_CREATION):
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for bit in range(32):  # one rule per flag: MASKED_EQ(flag, flag) on clone's first argument
        flag = 1 << bit
        if CLONE_NAMESPACE_FLAGS & flag:
            f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if not processes:  # a clone that is not a thread is a new process
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for request in (_TIOCSTI, _TIOCLINUX):
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    return f


@functools.cache
def bpf_program(processes: bool = False) -> bytes:
    """The compiled filter (raises ImportError without pyseccomp, OSError if libseccomp fails).

    `processes=True` lets the program fork (only for tests of the leftover-process cleanup).
    """
    f = _build_filter(processes)
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def bpf_fd(processes: bool = False) -> int:
    """A fresh read-only-positioned fd holding the filter, for one `bwrap --seccomp FD`."""
    data = bpf_program(processes)
    fd = os.memfd_create("rlvr-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
