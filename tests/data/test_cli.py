"""`rlvr data …` through its argparse front end (add_data_parser / run_data_command)."""

from __future__ import annotations

import argparse
import json

import pytest

from rlvr.data import cli as data_cli
from rlvr.rollout.fake import FakeEngine


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlvr")
    data_cli.add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dedup_command(tmp_path, capsys):
    pytest.importorskip("datasketch")
    src = _jsonl(tmp_path / "in.jsonl", [{"q": "a b c d e"}, {"q": "A b c d e!"}, {"q": "x y z"}])
    out, report = tmp_path / "out.jsonl", tmp_path / "r.json"
    assert run(["data", "dedup", str(src), "--field", "q", "--out", str(out), "--report", str(report)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n_rows"], summary["n_kept"]) == (3, 2)
    assert len(out.read_text().splitlines()) == 2 and json.loads(report.read_text())["n_clusters"] == 1
    assert run(["data", "dedup", str(src), "--field", "q", "--method", "exact"]) == 0


def test_decontam_command(tmp_path, capsys):
    ev = _jsonl(tmp_path / "ev.jsonl", [{"problem": "one two three four five six"}])
    src = _jsonl(tmp_path / "in.jsonl", [{"q": "zero one two three four five six seven"}, {"q": "other"}])
    out = tmp_path / "out.jsonl"
    argv = [
        "data",
        "decontam",
        str(src),
        "--field",
        "q",
        "--eval",
        str(ev),
        "--eval-field",
        "problem",
        "--n",
        "5",
    ]
    assert run([*argv, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["n_contaminated"] == 1
    assert [json.loads(x)["q"] for x in out.read_text().splitlines()] == ["other"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dedup", "{tmp}/nope.jsonl", "--field", "q"], "does not exist"),
        (["dedup", "{tmp}/in.jsonl", "--field", "question"], "in.jsonl:1: field 'question' is missing"),
        (["dedup", "{tmp}/in.jsonl", "--field", "q", "--bands", "99", "--rows", "99"], "exceeds num_perm"),
        (
            ["decontam", "{tmp}/in.jsonl", "--field", "q", "--eval", "{tmp}/in.jsonl", "--n", "2"],
            "min_tokens",
        ),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    _jsonl(tmp_path / "in.jsonl", [{"q": "a"}])
    assert run(["data", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_filter_difficulty_command(tmp_path, monkeypatch, capsys):
    data = _jsonl(tmp_path / "math.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(3)])

    class CharTokenizer:
        eos_token_id = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    def script(prompt, j):  # q0 never right, q1 always, q2 half the time
        q = int("".join(map(chr, prompt)).split("\n")[0][1:])
        right = q == 1 or (q == 2 and j % 2)
        return f"think</think><answer>{q if right else 99}</answer>"

    monkeypatch.setattr(data_cli, "_engine", lambda model: (FakeEngine(script), CharTokenizer()))
    out, rates, cache = tmp_path / "kept.jsonl", tmp_path / "rates.jsonl", tmp_path / "cache.jsonl"
    argv = ["data", "filter-difficulty", "--model", "m", "--input", str(data), "--k", "4", "--keep", "[0.25, 0.75]",
            "--task-kwargs", '{"validate": false}', "--out", str(out), "--rates", str(rates), "--cache", str(cache)]  # fmt: skip
    assert run(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n_prompts"], summary["n_kept"], summary["n_generated"]) == (3, 1, 3)
    assert [json.loads(x)["answer"] for x in out.read_text().splitlines()] == ["2"]
    assert [json.loads(x)["pass_rate"] for x in rates.read_text().splitlines()] == [0.0, 1.0, 0.5]
    assert (
        run(argv) == 0 and json.loads(capsys.readouterr().out)["n_generated"] == 0
    )  # resumed from the cache
    assert run([*argv[:-2], "--keep", "0.1-0.9"]) == 2
    assert "pass-rate range" in capsys.readouterr().err


@pytest.mark.slow
def test_filter_difficulty_with_the_tiny_model(tmp_path, capsys):
    from rlvr.models.tiny import init_model

    model = init_model(tmp_path / "model", preset="1m", seed=0)
    out = tmp_path / "kept.jsonl"
    argv = ["data", "filter-difficulty", "--model", str(model), "--task", "arithmetic", "--task-kwargs",
            '{"n_train": 4, "n_test": 2}', "--k", "2", "--max-new-tokens", "8", "--keep", "[0, 1]", "--out", str(out)]  # fmt: skip
    assert run(argv) == 0
    assert json.loads(capsys.readouterr().out)["n_prompts"] == 4 and len(out.read_text().splitlines()) == 4


def test_the_cli_module_is_light_and_every_export_resolves():
    import subprocess
    import sys

    code = (
        "import sys, rlvr.data.cli; sys.exit(sorted({'numpy', 'pydantic', 'torch'} & set(sys.modules)) != [])"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # `rlvr --help` stays instant
    import rlvr.data

    assert all(getattr(rlvr.data, name) is not None for name in rlvr.data.__all__)
    with pytest.raises(AttributeError):
        rlvr.data.nope  # noqa: B018
