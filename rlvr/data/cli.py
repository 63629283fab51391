"""`rlvr data …`: dedup, decontam, filter-difficulty.  Thin: parse, print the resolved settings, call one
library function, print its summary.  Library modules are imported inside the handlers so
`rlvr --help` stays instant.  rlvr/cli.py wires it in with `add_data_parser(sub)`.

A bad input (missing file, bad field, malformed row, bad setting) prints one `error:` line naming the
file:line or field and what to do, and exits with status 2; nothing half-written is left behind.  Only
errors rlvr raises for input (`rlvr.errors.UserError`, flag values pydantic refuses, a path the OS could
not open) are reported that way: any other exception is a bug and keeps its traceback (rlvr/cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at column {exc.colno}): {text!r}"
        ) from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object like \'{{"path": "train.jsonl"}}\', got {text!r}'
        )
    return value


def _positive(text: str) -> int:
    """argparse type for a count (--k, --limit, --batch-size, --max-new-tokens): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _input_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("input", help=f"{what}: a .jsonl or .parquet file, or a Hugging Face dataset directory")
    p.add_argument(
        "--field", required=True, help="the text field (a dotted path reaches inside: messages.0.content)"
    )
    p.add_argument(
        "--out", default=None, help="where the kept rows go (.jsonl, .parquet, or a directory: HF)"
    )
    p.add_argument("--report", default=None, help="JSON report path")
    p.add_argument(
        "--format",
        choices=("jsonl", "parquet", "hf"),
        default=None,
        help="input format (default: from the name)",
    )
    p.add_argument("--split", default=None, help="split of an HF DatasetDict directory")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="malformed rows: stop, or skip and count",
    )


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `data` with its subcommands to rlvr's subparsers; returns the `data` parser."""
    data = subparsers.add_parser("data", help="data tools: dedup, decontam, filter-difficulty (docs/data.md)")
    sub = data.add_subparsers(dest="data_command", required=True)
    data.set_defaults(func=run_data_command)

    p = sub.add_parser(
        "dedup", help="drop exact or near-duplicate rows (MinHash + LSH); the first occurrence is kept"
    )
    _input_args(p, "rows to deduplicate")
    p.add_argument("--method", choices=("exact", "minhash"), default="minhash")
    p.add_argument("--ngram", type=int, default=3, help="shingle size in tokens (default 3)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    p.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    p.add_argument(
        "--bands", type=int, default=None, help="LSH bands (with --rows; default from --threshold)"
    )
    p.add_argument("--rows", type=int, default=None, help="MinHash values per band (with --bands)")
    p.add_argument("--workers", type=int, default=None, help="processes for MinHash (default: every core)")
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("decontam", help="remove or flag rows sharing an n-gram with evaluation sets")
    _input_args(p, "training rows")
    p.add_argument(
        "--eval", action="append", required=True, metavar="PATH", help="an evaluation file (repeat for more)"
    )
    p.add_argument("--eval-field", default=None, help="the evaluation sets' text field (default: --field)")
    p.add_argument("--n", type=int, default=13, help="n-gram size in tokens (GPT-3: 13, DeepSeekMath: 10)")
    p.add_argument(
        "--min-tokens", type=int, default=3, help="shorter rows match only as whole texts (default 3)"
    )
    p.add_argument("--action", choices=("remove", "flag"), default="remove")
    p.add_argument("--flag-field", default="contamination", help="field set by --action flag")

    p = sub.add_parser("filter-difficulty", help="keep prompts whose pass rate over k samples is in a range")
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--task", default="file", help="task name (default: file, with --input)")
    p.add_argument("--input", default=None, help="data file for --task file (sets task kwarg path)")
    p.add_argument(
        "--task-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='e.g. \'{"prompt_field": "problem"}\'',
    )
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=_positive, default=None, help="the first N prompts only")
    p.add_argument("--k", type=_positive, default=8, help="samples per prompt (default 8)")
    p.add_argument(
        "--keep", default="(0, 1)", help="pass-rate range, e.g. '(0, 1)' or '[0.1, 0.9]' (default (0, 1))"
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=_positive, default=256)
    p.add_argument("--batch-size", type=_positive, default=32, help="prompts per generate call")
    p.add_argument("--out", default=None, help="kept prompts (a file task's original rows)")
    p.add_argument("--rates", default=None, help="pass rates, one JSON line per prompt")
    p.add_argument("--cache", default=None, help="resumable cache JSONL (rerun with it to continue)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chat-template", action="store_true", help="render prompts with the tokenizer's chat template"
    )
    return data


def run_data_command(args: argparse.Namespace) -> int:
    """Run the `data` subcommand in `args`; 0 on success, 2 (after one `error:` line) on bad input.
    Anything that is not the user's input escapes to `rlvr.cli.main`, which frames it as a bug."""
    from rlvr.errors import UserError

    handlers = {"dedup": _dedup, "decontam": _decontam, "filter-difficulty": _filter_difficulty}
    try:
        summary = handlers[args.data_command](args)
    except (UserError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if not isinstance(err, UserError) and getattr(err, "filename", None) is None:
            raise  # an OS error about no path the user gave: not theirs to fix
        text = str(err) if isinstance(err, UserError) else f"{err.filename}: {err.strerror}"
        print(f"rlvr data {args.data_command}: error: {text}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def _settings(make: Any, **flags: Any) -> Any:
    """`make(**flags)` (a pydantic settings model); a value it refuses is a UserError naming the flag
    (`--threshold 2.0: ...`), a cross-flag check its message."""
    from pydantic import ValidationError

    from rlvr.errors import UserError

    try:
        return make(**flags)
    except ValidationError as err:
        lines = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')} {e.get('input')!r}: {e['msg']}" if e["loc"]
                 else e["msg"].removeprefix("Value error, ") for e in err.errors()]  # fmt: skip
        raise UserError("; ".join(lines)) from None


def _source(args: argparse.Namespace, path: str | None = None, field: str | None = None) -> Any:
    from rlvr.data.io import RowSource

    return RowSource(path or args.input, field or args.field, format=None if path else args.format,
                     split=args.split, on_error=args.on_error)  # fmt: skip


def _print_settings(settings: dict[str, Any]) -> None:
    print("resolved settings:", json.dumps(settings), file=sys.stderr)


def _dedup(args: argparse.Namespace) -> dict[str, Any]:
    from rlvr.data.duplicates import DedupConfig, dedup_file

    config = _settings(
        DedupConfig, method=args.method, ngram=args.ngram, num_perm=args.num_perm, threshold=args.threshold,
        bands=args.bands, rows=args.rows, workers=args.workers, seed=args.seed,
    )  # fmt: skip
    _print_settings(config.model_dump())
    result = dedup_file(_source(args), out=args.out, report=args.report, config=config)
    return {k: v for k, v in result.as_dict().items() if k not in ("clusters", "skipped")}


def _decontam(args: argparse.Namespace) -> dict[str, Any]:
    from rlvr.data.decontam import DecontamConfig, decontaminate_file

    config = _settings(DecontamConfig, n=args.n, min_tokens=args.min_tokens)
    _print_settings({**config.model_dump(), "action": args.action, "eval": args.eval})
    evals = [_source(args, path, args.eval_field or args.field) for path in args.eval]
    result = decontaminate_file(
        _source(args), evals, out=args.out, report=args.report, action=args.action,
        flag_field=args.flag_field, config=config,
    )  # fmt: skip
    return {k: v for k, v in result.as_dict().items() if k not in ("matches", "skipped")}


def _filter_difficulty(args: argparse.Namespace) -> dict[str, Any]:
    from rlvr.data.difficulty import PassRange, filter_by_difficulty, write_kept
    from rlvr.data.io import write_rows
    from rlvr.errors import UserError
    from rlvr.rollout.base import SamplingParams
    from rlvr.tasks import make_task_with

    try:
        keep = PassRange.parse(args.keep)
    except ValueError as err:
        raise UserError(f"--keep {args.keep!r}: {err}") from None
    kwargs = dict(args.task_kwargs or {})
    if args.input is not None:
        kwargs["path"] = args.input
    try:
        task = make_task_with(args.task, kwargs, where="--task-kwargs {}")
    except ValueError as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"--task {args.task}: {err}") from None  # an unknown task name
    examples = _examples(task, args.split)[: args.limit]
    engine, tokenizer = _engine(args.model)
    stop = () if tokenizer.eos_token_id is None else (int(tokenizer.eos_token_id),)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                            stop_token_ids=stop)  # fmt: skip
    _print_settings(
        {"task": args.task, "task_kwargs": kwargs, "k": args.k, "keep": str(keep), **params.as_dict()}
    )
    result = filter_by_difficulty(
        engine, tokenizer, task, examples, k=args.k, keep=keep, params=params, cache_path=args.cache,
        batch_size=args.batch_size, seed=args.seed, chat_template=args.chat_template,
    )  # fmt: skip
    if args.rates is not None:
        write_rows((r.as_dict() for r in result.rates), args.rates, format="jsonl")
    if args.out is not None:
        write_kept(result, task, args.out, split=args.split)
    return result.summary()


def _examples(task: Any, split: str) -> list[Any]:
    """The split's examples; a split the task does not have, or ids that repeat (the pass-rate cache
    is keyed by id), is the user's to fix."""
    from rlvr.errors import UserError

    try:
        examples = list(task.examples(split))
    except ValueError as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"--split {split}: {err}") from None
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"example id {dup!r} appears twice in the {split} split: the pass-rate cache is keyed "
                        "by id; dedup the file (rlvr data dedup) or set the task's id_field to a unique field")  # fmt: skip
    return examples


def _engine(model_dir: str) -> tuple[Any, Any]:
    import torch

    from rlvr.models.load import load_model_and_tokenizer
    from rlvr.rollout.hf import HFEngine

    model, tokenizer = load_model_and_tokenizer(
        model_dir, device="cuda" if torch.cuda.is_available() else "cpu"
    )
    return HFEngine(model, tokenizer), tokenizer
