"""`rlvr demo` (layer between the CLI and trainer/evaluation/report): the R1 recipe on a laptop CPU.

from rlvr.demo import run_demo
summary = run_demo(Path("runs/demo"), seed=0)   # summary["before"]["pass@1"], summary["after"]["pass@1"]
"""

from rlvr.demo.plan import PLANS, DemoPlan
from rlvr.demo.run import run_demo

__all__ = ["PLANS", "DemoPlan", "run_demo"]
