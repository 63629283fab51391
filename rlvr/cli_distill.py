"""`rlvr distill collect`: rejection sampling from a teacher into an SFT JSONL (see `rlvr.distill.rejection`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rlvr.cli_args import json_object, make_task, positive
from rlvr.errors import UserError


def _distill_collect(args: argparse.Namespace) -> int:
    from rlvr.pipeline import rejection_sample_dir

    task = make_task(args)
    if args.max_per_prompt is not None and args.max_per_prompt < 1:
        raise UserError("--max-per-prompt must be >= 1")
    summary = rejection_sample_dir(args.teacher, task, out=args.out, k=args.k, select=args.select,
                                   max_per_prompt=args.max_per_prompt, require_format=not args.no_format,
                                   near_duplicate_threshold=args.near_dup, split=args.split, limit=args.limit,
                                   temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                   cache=args.cache, seed=args.seed, chat_template=args.chat_template)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def add_distill_parser(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    distill = sub.add_parser("distill", parents=common, help="distillation data: rejection sampling from a teacher")
    dsub = distill.add_subparsers(dest="distill_command", required=True)
    p = dsub.add_parser("collect", parents=common, help="the teacher samples k per prompt; verified-correct, "
                        "deduplicated completions become an SFT JSONL with provenance (resumable with --cache)")  # fmt: skip
    p.add_argument("--teacher", required=True, help="HF model directory, rlvr checkpoint, or run directory (last checkpoint)")
    p.add_argument("--task", required=True)
    p.add_argument("--task-kwargs", type=json_object, default=None, metavar="JSON", help="the task's kwargs")
    p.add_argument("--out", required=True, help="SFT rows (.jsonl; prompt / completion + provenance)")
    p.add_argument("--k", type=positive, default=8, help="samples per prompt (default 8)")
    p.add_argument("--select", choices=("all", "shortest"), default="all",
                   help="keep every correct sample, or the shortest first (default: all)")  # fmt: skip
    p.add_argument("--max-per-prompt", type=int, default=None, help="at most M rows per prompt")
    p.add_argument("--near-dup", type=float, default=None, metavar="JACCARD",
                   help="also drop near-duplicate completions of one prompt (MinHash, e.g. 0.8)")  # fmt: skip
    p.add_argument("--no-format", action="store_true", help="keep correct answers whatever their format score")
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--limit", type=positive, default=None, help="the first N prompts only")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=positive, default=256)
    p.add_argument("--cache", default=None, help="sample cache JSONL (a rerun continues from it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat-template", action="store_true", help="render prompts with the tokenizer's chat template")
    p.set_defaults(func=_distill_collect)
