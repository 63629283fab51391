"""rlvr's command line: parse → config → print resolved config → call one library function."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    print("rlvr demo: SFT cold start -> eval -> GRPO -> eval on a tiny model (being built).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the R1 recipe end to end on a tiny model, on CPU, in minutes")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
