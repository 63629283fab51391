"""Dedup throughput (rows/s) and peak memory on synthetic rows (issue 18): `rlvr.data.dedup_file`
end to end — read JSONL, tokenise, MinHash in a process pool, LSH index, write the kept rows.

    python bench/dedup_bench.py                    # 1M rows, MinHash, every core
    python bench/dedup_bench.py --rows 2000        # smoke run (seconds)
    python bench/dedup_bench.py --method exact --json dedup.json

Rows are math-word-problem-like texts of 20-60 words from a 20k-word vocabulary with numbers;
10% are near copies of a recent row (1-3 words replaced) and 5% exact copies (recased).  The input
file is written first, streamed (not timed).  Peak memory: `main` is this process's ru_maxrss (the
LSH index, the signatures, the cluster report), `worker` the largest pool worker's, and
`sampled_total` the highest sum of main + worker RSS seen by a 0.2 s psutil sampler (an upper bound:
forked workers share pages with the parent).  `other_cores` says how busy the rest of the machine
was during the run (bench/_common.py).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from _common import cpu_seconds, interference, peak_rss_mb

from rlvr.data import DedupConfig, RowSource, dedup_file


def write_rows(path: Path, n: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    vocab = [f"{rng.choice('bcdfghklmnprst')}{rng.choice('aeiou')}{i}" for i in range(20_000)]
    recent: list[list[str]] = []
    planted = {"near": 0, "exact": 0}
    with path.open("w") as f:
        for i in range(n):
            r = rng.random()
            if recent and r < 0.10:
                words = list(rng.choice(recent))
                for pos in rng.sample(range(len(words)), rng.randint(1, 3)):
                    words[pos] = rng.choice(vocab)
                planted["near"] += 1
            elif recent and r < 0.15:
                words = [w.upper() for w in rng.choice(recent)]
                planted["exact"] += 1
            else:
                words = [rng.choice(vocab) if rng.random() < 0.85 else str(rng.randint(0, 999))
                         for _ in range(rng.randint(20, 60))]  # fmt: skip
            if len(recent) < 10_000:
                recent.append(words)
            else:
                recent[rng.randrange(10_000)] = words
            f.write(json.dumps({"id": i, "problem": " ".join(words) + "?"}) + "\n")
    return planted


class RssSampler(threading.Thread):
    """The highest RSS sum of this process and its children, sampled every `every` seconds."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.peak_mb, self._halt = every, 0.0, threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        me = psutil.Process()
        while not self._halt.wait(self.every):
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak_mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--method", choices=("exact", "minhash"), default="minhash")
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--workers", type=int, default=None, help="default: every core")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dir", default=None, help="where the synthetic input and the output go (default: a temp dir)"
    )
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)

    work = Path(args.dir or tempfile.mkdtemp(prefix="dedup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"rows-{args.rows}.jsonl"
    t0 = time.perf_counter()
    planted = write_rows(src, args.rows, args.seed)
    print(
        f"wrote {args.rows} rows ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s: {src}"
    )

    config = DedupConfig(
        method=args.method, num_perm=args.num_perm, threshold=args.threshold, workers=args.workers
    )
    rss_before = peak_rss_mb()
    sampler = RssSampler()
    sampler.start()
    before, t0 = cpu_seconds(), time.perf_counter()
    report = dedup_file(RowSource(src, "problem"), out=work / "kept.jsonl", config=config)
    wall = time.perf_counter() - t0
    after = cpu_seconds()
    sampled = sampler.stop()
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "rows": args.rows, "method": args.method, "num_perm": args.num_perm, "threshold": args.threshold,
        "lsh": list(config.lsh_params) if args.method == "minhash" else None, "workers": config.n_workers,
        "wall_s": round(wall, 2), "rows_per_s": round(args.rows / wall),
        "kept": report.n_kept, "dropped": report.n_dropped, "clusters": len(report.clusters), "planted": planted,
        "peak_rss_mb": {"main_before": round(rss_before), "main": round(peak_rss_mb()),
                        "worker": round(worker_kib / 1024), "sampled_total": round(sampled)},
        **{k: round(v, 2) for k, v in interference(before, after, wall).items()},
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
