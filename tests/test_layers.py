"""Rules import-linter cannot express (subpackages of external packages)."""

import ast
from pathlib import Path

ALGORITHMS = Path(__file__).resolve().parents[1] / "rlvr" / "algorithms"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_algorithms_never_import_torch_distributed():
    # Aggregation takes an explicit denominator instead (DESIGN.md §5.1): no hidden all-reduce.
    offenders = {
        p.name: sorted(m for m in _imported_modules(p) if m.startswith("torch.distributed"))
        for p in ALGORITHMS.glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
