"""End to end on CPU through the real CLI: `rlvr sft` cold-starts the 1m model on sort traces, `rlvr train`
runs GRPO from that checkpoint, and `rlvr eval` shows the reward rose.

Slow (about two minutes): run with --runslow.  The rise is measured by `rlvr eval` on a fixed set of
prompts (the first 32 training problems) with a fixed sampling seed (temperature 1, 8 samples each)
for the SFT checkpoint and for the final RL checkpoint, so step-to-step batch noise does not decide it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TASK_KWARGS = {"length": 3, "max_value": 9, "n_train": 80, "n_test": 20}
TASK_TOML = '[task]\nname = "sort"\nkwargs = { length = 3, max_value = 9, n_train = 80, n_test = 20 }\n'

SFT_TOML = f"""kind = "sft"
[model]
preset = "1m"
{TASK_TOML}
[data]
batch_size = 16
[optim]
lr = 3e-3
micro_batch_size = 16
warmup_steps = 3
[run]
out_dir = "OUT/sft"
steps = 100
progress = false
tensorboard = false
"""

RL_TOML = f"""kind = "rl"
[model]
path = "set on the command line"
{TASK_TOML}
[rollout]
group_size = 8
prompts_per_step = 8
max_new_tokens = 48
[algorithm.objective]
clip_high = 0.28
[optim]
lr = 2e-4
micro_batch_size = 64
[run]
out_dir = "OUT/rl"
steps = 50
progress = false
tensorboard = false
"""


def _rlvr(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"rlvr {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def _sampled_accuracy(model_dir: Path, out: Path) -> float:
    _rlvr("eval", "--model", str(model_dir), "--task", "sort", "--task-kwargs", json.dumps(TASK_KWARGS),
          "--split", "train", "--limit", "32", "--n", "8", "--k", "1", "--temperature", "1.0",
          "--max-new-tokens", "48", "--seed", "123", "--out", str(out))  # fmt: skip
    return json.loads(out.read_text())["metrics"]["pass@1"]["value"]


@pytest.mark.slow
def test_grpo_raises_reward_after_sft_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "sft.toml").write_text(SFT_TOML.replace("OUT", str(tmp_path)))
    (tmp_path / "rl.toml").write_text(RL_TOML.replace("OUT", str(tmp_path)))
    _rlvr("sft", str(tmp_path / "sft.toml"))
    sft_ckpt = tmp_path / "sft" / "checkpoints" / "step_000100"
    assert (sft_ckpt / "model.safetensors").is_file()
    before = _sampled_accuracy(sft_ckpt, tmp_path / "before.json")

    train = _rlvr("train", str(tmp_path / "rl.toml"), "--set", f"model.path={sft_ckpt}")
    assert "resolved config" in train.stdout
    rl_ckpt = tmp_path / "rl" / "checkpoints" / "step_000050"
    assert (rl_ckpt / "model.safetensors").is_file() and (rl_ckpt / "tokenizer_config.json").is_file()
    resolved = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert resolved["model"]["path"] == str(sft_ckpt)  # the --set override reached the run
    rows = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 51))
    after = _sampled_accuracy(rl_ckpt, tmp_path / "after.json")

    # measured through the CLI (fp32 on an AVX2 CPU, seed 0): 0.10 -> 0.40; demand a clear rise, not the full one
    assert after > before + 0.08, (before, after)
