"""rlvr's command line: parse → config → print resolved config → call one library function.

Every subcommand is a few lines that build arguments for a library function; nothing here
trains, evaluates or verifies by itself.  Library modules are imported inside the handlers so
`rlvr --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _print_resolved(config) -> None:
    print("resolved config:")
    print(json.dumps(config.model_dump(mode="json"), indent=2))


def _demo(args: argparse.Namespace) -> int:
    from rlvr.demo import run_demo

    run_demo(Path(args.out), seed=args.seed, quick=args.quick, threads=args.threads)
    return 0


def _init_model(args: argparse.Namespace) -> int:
    from rlvr.models.tiny import init_model

    path = init_model(args.out, preset=args.preset, seed=args.seed)
    print(f"wrote tiny model ({args.preset}) to {path}")
    return 0


def _train(args: argparse.Namespace, kind: str | None) -> int:
    from rlvr.config import load_config
    from rlvr.pipeline import train

    config = load_config(args.config, args.set or [], kind=kind)
    if kind is not None and config.kind != kind:
        print(f"rlvr: {args.config} is a kind = {config.kind!r} config; run it with `rlvr train {args.config}`",
              file=sys.stderr)  # fmt: skip
        return 2
    _print_resolved(config)
    result = train(config, resume=args.resume)
    print(f"run {result.status} at step {result.step}: {result.run_dir}")
    return 0 if result.status == "completed" else 1


def _json_object(text: str) -> dict:
    """argparse type for --task-kwargs: a JSON object, or a message that says what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"length\": 3}}', got {text!r}")
    return value


def _eval(args: argparse.Namespace) -> int:
    from rlvr.evaluation.runner import run_eval

    ks = [int(k) for k in args.k.split(",")] if args.k else None
    result = run_eval(
        args.model,
        args.task,
        n=args.n,
        ks=ks,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        out_path=args.out,
        cache_path=args.cache,
        split=args.split,
        limit=args.limit,
        greedy=args.greedy,
        seed=args.seed,
        chat_template=args.chat_template,
        task_kwargs=args.task_kwargs,
    )
    print(result.table())
    return 0


def _report(args: argparse.Namespace) -> int:
    from rlvr.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rlvr.tasks import make_task
    from rlvr.tasks.verify import verify_file

    task = make_task(args.task, **(args.task_kwargs or {}))
    summary = verify_file(task, args.file, output=args.out, prefix=args.prefix)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the R1 recipe end to end on a tiny model, on CPU, in minutes")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="smaller budgets (about a third of the time; for tests)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: one per core; 1 on a busy machine)"
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser("init-model", help="build the embedded tiny model (nothing downloaded)")
    p.add_argument("out", help="directory to write the Hugging Face model into")
    p.add_argument("--preset", default="5m", help="size preset: 1m, 5m, 15m, 33m, 50m")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init_model)

    for name, kind, help_ in (("sft", "sft", "supervised cold start (shortcut for a kind = 'sft' config)"),
                              ("train", None, "run a stage config of any kind (rl, sft)")):  # fmt: skip
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", help="TOML config file")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
        p.add_argument(
            "--resume", action="store_true", help="continue from the run directory's last checkpoint"
        )
        p.set_defaults(func=lambda a, kind=kind: _train(a, kind))

    p = sub.add_parser("eval", help="pass@k / maj@k / avg@k with error bars")
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--task", required=True)
    p.add_argument(
        "--task-kwargs", type=_json_object, default=None, metavar="JSON",
        help='the task\'s constructor kwargs, e.g. \'{"length": 3, "max_value": 9}\' (as in a config\'s [task] kwargs)',
    )  # fmt: skip
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--k", default="1,4,16", help="comma-separated k values (each <= n)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--greedy", action="store_true", help="one greedy sample per problem")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N problems only")
    p.add_argument("--out", default=None, help="result JSON path")
    p.add_argument("--cache", default=None, help="generation cache JSONL (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chat-template", action="store_true", help="render prompts with the tokenizer's chat template"
    )
    p.set_defaults(func=_eval)

    p = sub.add_parser("report", help="write the self-contained HTML report of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_report)

    p = sub.add_parser("verify", help="score a JSONL of completions against a task")
    p.add_argument("file", help="JSONL rows: completion + example_id (or prompt + gold [+ meta]) [+ prefix]")
    p.add_argument("--task", required=True)
    p.add_argument("--task-kwargs", type=_json_object, default=None, metavar="JSON", help="the task's kwargs")
    p.add_argument("--prefix", default=None,
                   help="what the prompts left open (e.g. '<think>'), for rows without a 'prefix' field; "
                   "default: the task's plain template")  # fmt: skip
    p.add_argument("--out", default=None, help="write one scored JSON row per input row here")
    p.set_defaults(func=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
