"""rlvr's command line: parse → config → print resolved config → call one library function.

Every subcommand is a few lines that build arguments for a library function; nothing here
trains, evaluates or verifies by itself.  Library modules are imported inside the handlers so
`rlvr --help` stays instant.

One error path (`main`): a user error (`rlvr.errors.UserError`: config, data, paths, names, kinds, or a
file the OS could not open) prints one block naming every problem and exits 2; SIGINT / SIGTERM stop
the command after the current step, say what was saved and how to go on, and exit 130 / 143.  No
traceback unless `--debug` or RLVR_DEBUG=1; a bug keeps its traceback, framed as a bug (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from rlvr.cli_args import json_object, ks, ks_any, make_task, positive
from rlvr.cli_distill import add_distill_parser
from rlvr.errors import Stopped, UserError, bug_line

# argparse choices that need no heavy import (kept equal to rlvr.models.tiny.PRESETS by a test)
PRESETS = ("1m", "5m", "15m", "33m", "50m")
# what makes a folder a run directory for `rlvr report` (a stage's run.out_dir or a demo's --out)
RUN_FILES = ("metrics.jsonl", "config.json", "summary.json", "eval", "samples.jsonl")


def _print_resolved(config: Any) -> None:
    """The resolved config (every default filled in), one line per section; config.json has it all."""
    from rlvr.trainer.resume import flatten

    print(f"resolved config (kind = {config.kind!r}; written to {config.run.out_dir}/config.json):")
    sections: dict[str, list[str]] = {}
    for key, value in flatten(config.model_dump(mode="json")).items():
        head, _, rest = key.partition(".")
        if head == "tasks":  # tasks.0.name -> section "tasks.0"
            index, _, rest = rest.partition(".")
            head = f"tasks.{index}"
        if rest:
            sections.setdefault(head, []).append(f"{rest}={json.dumps(value)}")
    for head, items in sections.items():
        print(f"  {head}: {' '.join(items)}")


def _demo(args: argparse.Namespace) -> int:
    if args.recipe == "distill":
        from rlvr.demo.distill import run_distill_demo

        seeds = tuple(args.seeds) if args.seeds else (args.seed,)
        cache = Path(args.teacher_cache) if args.teacher_cache else None
        run_distill_demo(Path(args.out), seeds, quick=args.quick, threads=args.threads, teacher_cache=cache)
        return 0
    if args.seeds or args.teacher_cache:
        raise UserError("--seeds and --teacher-cache belong to --recipe distill")
    from rlvr.demo import run_demo

    run_demo(Path(args.out), seed=args.seed, quick=args.quick, threads=args.threads)
    return 0


def _init_model(args: argparse.Namespace) -> int:
    from rlvr.models.tiny import init_model

    for parent in (Path(args.out), *Path(args.out).parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"init-model {args.out}: {parent} is a file, not a directory; choose another path")
    path = init_model(args.out, preset=args.preset, seed=args.seed)
    print(f"wrote tiny model ({args.preset}) to {path}")
    return 0


def _train(args: argparse.Namespace, kind: str | None) -> int:
    from rlvr.config import ConfigError, load_config

    config = load_config(args.config, args.set or [], kind=kind)
    if kind is not None and config.kind != kind:
        raise ConfigError(f"{args.config} is a kind = {config.kind!r} config; run it with "
                          f"`rlvr train {args.config}` (`rlvr {args.command}` runs kind = {kind!r} only)")  # fmt: skip
    if args.force and not (args.resume or args.resume_or_start):
        raise UserError("--force only applies to a resume: add --resume")
    from rlvr.trainer.build import validate

    validate(config)  # registry names, user functions, paths: before any model loads
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone prints
    if main_rank:
        _print_resolved(config)
    if args.check:
        _check_data(config)
        print(f"{args.config}: config OK (kind = {config.kind!r}); nothing was run (--check)")
        return 0
    from rlvr.pipeline import train
    from rlvr.trainer.resume import Resume

    resume = Resume(or_start=args.resume_or_start, force=args.force) if args.resume or args.resume_or_start else False
    out_dir = Path(config.run.out_dir)
    created = not out_dir.exists()
    try:
        result = train(config, resume=resume)
    except BaseException as err:  # stopped or failed before the first step: leave no empty run behind
        from rlvr.trainer.run import discard_unstarted

        if created and main_rank:
            discard_unstarted(out_dir)
        if isinstance(err, Stopped):
            raise Stopped(err.signal_name, err.message or "before the first step finished; nothing was saved") from None
        raise
    if result.status == "interrupted":
        again = shlex.join(["rlvr", args.command, args.config, *(f"--set={x}" for x in args.set or []), "--resume"])
        saved = f"checkpoint {result.checkpoint}" if result.checkpoint else "no checkpoint"
        raise Stopped(result.signal or "SIGINT", f"after step {result.step} of {config.run.steps}; "
                      f"saved {saved}; continue with: {again}")  # fmt: skip
    if main_rank:
        print(f"run {result.status} at step {result.step}: {result.run_dir}")
    if result.status == "diverged":
        print(f"rlvr: the run diverged (non-finite updates); the last good checkpoint is {result.checkpoint}; "
              "lower optim.lr or raise optim.grad_clip, then resume", file=sys.stderr)  # fmt: skip
    return 0 if result.status == "completed" else 1


def _check_data(config: Any) -> None:
    """--check reads what a run would read first: the task(s) (a file task parses its file) and the rows of
    data.path (each `*_field` the stage reads must be a string)."""
    from rlvr.trainer.build import build_task
    from rlvr.trainer.data import read_text_rows

    tasks = getattr(config, "tasks", None) or getattr(config, "task", None)
    if tasks:
        build_task(tasks)
    data = getattr(config, "data", None)
    if getattr(data, "path", None):
        fields = {k: v for k, v in data.model_dump().items() if k.endswith("_field") and isinstance(v, str)}
        read_text_rows(data.path, fields, what="data")


def _eval(args: argparse.Namespace) -> int:
    from rlvr.errors import check_output_file
    from rlvr.models.load import check_model_dir

    check_model_dir(args.model, what="--model", weights=True)
    for flag, value in (("--out", args.out), ("--cache", args.cache)):
        if value is not None:
            check_output_file(value, flag)
    if max(args.k) > args.n and not args.greedy:
        raise UserError(f"--k {','.join(map(str, args.k))}: every k must be <= --n {args.n} (samples per problem)")
    task = make_task(args)  # a bad name or kwarg fails here, before the model loads
    if args.split not in ("train", "test"):
        raise UserError(f"--split {args.split!r}: choose train or test")
    try:
        examples = task.examples(args.split)
    except ValueError as exc:
        raise UserError(f"--split {args.split}: {exc}") from exc
    if not examples:
        raise UserError(f"--task {args.task}: the {args.split} split is empty, nothing to evaluate")
    from rlvr.evaluation.runner import run_eval
    from rlvr.trainer.logging import quiet_third_party

    quiet_third_party()  # the HF engine's `past_key_values` notice
    try:
        result = _run_eval(run_eval, task, args)
    except Stopped as stop:
        kept = f"; the samples generated so far are in {args.cache}: run the same command to continue" if args.cache else ""
        raise Stopped(stop.signal_name, f"before the evaluation finished; no result file was written{kept}") from None
    print(result.table())
    return 0


def _run_eval(run_eval: Any, task: Any, args: argparse.Namespace) -> Any:
    result = run_eval(
        args.model,
        task,  # built once, in `_eval` (a dataset-backed task reads its files once)
        n=args.n,
        ks=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        out_path=None,
        cache_path=args.cache,
        split=args.split,
        limit=args.limit,
        greedy=args.greedy,
        seed=args.seed,
        chat_template=args.chat_template,
        task_kwargs=args.task_kwargs,
    )
    result.config["task_kwargs"] = dict(args.task_kwargs or {})
    if args.out is not None:
        result.save(args.out)
    return result


def _report(args: argparse.Namespace) -> int:
    from rlvr.errors import MissingPathError
    from rlvr.report import write_report
    from rlvr.report.load import load_run

    root = Path(args.run_dir)
    what = "is a file" if root.is_file() else "does not exist"
    if not root.is_dir():
        raise MissingPathError(f"run directory {root} {what}: pass the folder a run wrote "
                               "(its run.out_dir, holding metrics.jsonl)")  # fmt: skip
    if not any((root / name).exists() for name in RUN_FILES):
        raise MissingPathError(f"{root} is not a run directory (none of {', '.join(RUN_FILES)} is there): pass "
                               "the folder a run wrote (its run.out_dir, or `rlvr demo --out`)")  # fmt: skip
    for note in load_run(root).notes:  # a malformed line or file: the report leaves it out, and says so here
        print(f"rlvr report: warning: {note}", file=sys.stderr)
    try:
        written = write_report(root, args.out)
    except FileNotFoundError as exc:  # a run directory without the files a report reads
        raise MissingPathError(str(exc)) from exc
    print(f"wrote {written}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rlvr.errors import check_output_file
    from rlvr.tasks.verify import verify_file

    if args.out is not None:
        check_output_file(args.out, "--out")
    summary = verify_file(make_task(args), args.file, output=args.out, prefix=args.prefix)
    print(json.dumps(summary, indent=2))
    return 0


def _common() -> argparse.ArgumentParser:
    """Flags every subcommand takes (SUPPRESS: a subcommand does not reset the top-level value)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (also: RLVR_DEBUG=1)")  # fmt: skip
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (also: RLVR_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    common = [_common()]

    p = sub.add_parser("demo", parents=common, help="the R1 recipe end to end on a tiny model, on CPU, in minutes")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="smaller budgets (about a third of the time; for tests)"
    )
    p.add_argument(
        "--threads", type=positive, default=None, help="torch threads (default: one per core; 1 on a busy machine)"
    )
    p.add_argument("--recipe", choices=("r1", "distill"), default="r1",
                   help="r1: SFT then GRPO (default); distill: R1's distillation finding, three arms (RL on the "
                   "student, SFT on teacher traces, on-policy distillation)")  # fmt: skip
    p.add_argument("--seeds", type=ks_any, default=None, help="--recipe distill: comma-separated seeds (e.g. 0,1,2)")
    p.add_argument("--teacher-cache", default=None,
                   help="--recipe distill: where the trained teacher is kept and reused (default: OUT/teacher_cache)")  # fmt: skip
    p.set_defaults(func=_demo)

    p = sub.add_parser("init-model", parents=common, help="build the embedded tiny model (nothing downloaded)")
    p.add_argument("out", help="directory to write the Hugging Face model into")
    p.add_argument("--preset", default="5m", choices=PRESETS, help="size preset (default: 5m)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init_model)

    for name, kind, help_ in (("sft", "sft", "supervised cold start (shortcut for a kind = 'sft' config)"),
                              ("train", None, "run a stage config of any kind (its top-level kind key: rl, sft, dpo, ...)")):  # fmt: skip
        p = sub.add_parser(name, parents=common, help=help_)
        p.add_argument("config", help="TOML config file")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config value (repeatable); SECTION.KEY= clears an optional key")  # fmt: skip
        p.add_argument("--check", action="store_true",
                       help="validate the config (keys, names, paths) and print it resolved; train nothing")  # fmt: skip
        p.add_argument(
            "--resume", action="store_true", help="continue from the run directory's last checkpoint (must exist)"
        )
        p.add_argument("--resume-or-start", action="store_true",
                       help="resume when run.out_dir holds a checkpoint, else start a new run there")  # fmt: skip
        p.add_argument("--force", action="store_true",
                       help="with --resume: accept config changes that break exactness (recorded in resumes.jsonl)")  # fmt: skip
        p.set_defaults(func=lambda a, kind=kind: _train(a, kind))

    p = sub.add_parser("eval", parents=common, help="pass@k / maj@k / avg@k with error bars")
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--task", required=True, help="a built-in task (arithmetic, countdown, sort, file) or 'pkg.mod:Class'")
    p.add_argument(
        "--task-kwargs", type=json_object, default=None, metavar="JSON",
        help='the task\'s constructor kwargs, e.g. \'{"length": 3, "max_value": 9}\' (as in a config\'s [task] kwargs)',
    )  # fmt: skip
    p.add_argument("--n", type=positive, default=16, help="samples per problem")
    p.add_argument("--k", type=ks, default=[1, 4, 16], help="comma-separated k values (each <= n)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=positive, default=256)
    p.add_argument("--greedy", action="store_true", help="one greedy sample per problem")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--limit", type=positive, default=None, help="evaluate the first N problems only")
    p.add_argument("--out", default=None, help="result JSON path")
    p.add_argument("--cache", default=None, help="generation cache JSONL (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chat-template", action="store_true", help="render prompts with the tokenizer's chat template"
    )
    p.set_defaults(func=_eval)

    p = sub.add_parser("report", parents=common, help="write the self-contained HTML report of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_report)

    p = sub.add_parser("verify", parents=common, help="score a JSONL of completions against a task")
    p.add_argument("file", help="JSONL rows: completion + example_id (or prompt + gold [+ meta]) [+ prefix]; "
                   "see README 'rlvr verify'")  # fmt: skip
    p.add_argument("--task", required=True)
    p.add_argument("--task-kwargs", type=json_object, default=None, metavar="JSON", help="the task's kwargs")
    p.add_argument("--prefix", default=None,
                   help="what the prompts left open (e.g. '<think>'), for rows without a 'prefix' field; "
                   "default: the task's plain template")  # fmt: skip
    p.add_argument("--out", default=None, help="write one scored JSON row per input row here")
    p.set_defaults(func=_verify)

    add_distill_parser(sub, common)
    from rlvr.data.cli import add_data_parser  # light: its heavy imports wait for a data command

    add_data_parser(sub)
    return parser


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def _user_os_error(err: BaseException) -> bool:
    """An OS error about a path the user gave (the OS names it), e.g. `--out` in a missing folder."""
    return isinstance(err, FileNotFoundError | FileExistsError | IsADirectoryError | NotADirectoryError
                      | PermissionError) and getattr(err, "filename", None) is not None  # fmt: skip


def _flag_of(argv: list[str], args: argparse.Namespace, filename: str) -> str:
    """The flag (`--cache `) whose value is `filename` or a folder above it, to name it in the message."""
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, str) and value and flag in argv and (filename == value or filename.startswith(value.rstrip("/") + "/")):
            return f"{flag} "
    return ""


def _report_error(command: str, err: BaseException, argv: list[str], args: argparse.Namespace) -> None:
    if _user_os_error(err) and not isinstance(err, UserError):
        filename = str(err.filename)  # type: ignore[attr-defined]
        text = f"{_flag_of(argv, args, filename)}{filename}: {err.strerror}"  # type: ignore[attr-defined]
    else:
        text = str(err)
    print(f"rlvr {command}: error: {text}", file=sys.stderr)
    print("(run with --debug for the traceback)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad flag or choice: argparse's usage line, exit 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RLVR_DEBUG", "") not in ("", "0")
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args) or 0)
    except Stopped as stop:
        if debug:
            raise
        print(f"rlvr {args.command}: stopped by {stop.signal_name} {stop.message or 'before anything was saved'}",
              file=sys.stderr, flush=True)  # fmt: skip
        return stop.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C while a stage was finishing its step
        if debug:
            raise
        print(f"rlvr {args.command}: stopped by SIGINT", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        if debug:
            raise
        if not (isinstance(err, UserError) or _user_os_error(err)):
            traceback.print_exc()
            print(f"rlvr {args.command}: {bug_line(err)}", file=sys.stderr)
            return 1
        _report_error(args.command, err, sys.argv[1:] if argv is None else argv, args)
        return 2
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
