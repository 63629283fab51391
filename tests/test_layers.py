"""Rules import-linter cannot express (subpackages of external packages)."""

from pathlib import Path

ALGORITHMS = Path(__file__).resolve().parents[1] / "rlvr" / "algorithms"


def test_algorithms_never_touch_torch_distributed():
    # Aggregation takes an explicit denominator instead (DESIGN.md §5.1): no hidden all-reduce.
    offenders = [p.name for p in ALGORITHMS.glob("*.py") if "torch.distributed" in p.read_text() or "dist." in p.read_text()]
    assert offenders == []
