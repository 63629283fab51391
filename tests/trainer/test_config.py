"""Config: typos and impossible combinations fail naming the key; overrides; examples load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.config import (
    ConfigError,
    DistillConfig,
    DPOConfig,
    PPOConfig,
    RLConfig,
    SFTConfig,
    apply_overrides,
    load_config,
    parse_config,
    save_config,
)
from rlvr.trainer.build import validate

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))
TASK = {"task": {"name": "sort"}}


def _error(data: dict, kind: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, kind=kind)
    return str(info.value)


def test_typo_names_key_and_suggests():
    msg = _error({**TASK, "optim": {"lrr": 1e-3}})
    assert "'optim.lrr'" in msg and "did you mean 'optim.lr'" in msg


def test_unknown_section_suggests():
    assert "did you mean 'rollout'" in _error({**TASK, "rollot": {}})


def test_indivisible_micro_batch_names_both_keys():
    msg = _error(
        {**TASK, "rollout": {"group_size": 8, "prompts_per_step": 3}, "optim": {"micro_batch_size": 5}}
    )
    # 3 * 8 = 24 samples, 24 % 5 = 4
    assert "24" in msg and "optim.micro_batch_size" in msg and "rollout.prompts_per_step" in msg


def test_group_size_one_with_grpo():
    msg = _error({**TASK, "rollout": {"group_size": 1}, "optim": {"micro_batch_size": 1}})
    assert "rollout.group_size" in msg and "grpo" in msg


def test_group_size_one_ok_with_reinforce_pp():
    cfg = parse_config({**TASK, "rollout": {"group_size": 1}, "optim": {"micro_batch_size": 1},
                        "algorithm": {"advantage": "reinforce_pp"}})  # fmt: skip
    assert cfg.rollout.samples_per_step == 4


def test_kl_in_reward_needs_beta():
    assert "algorithm.kl.beta" in _error({**TASK, "algorithm": {"kl": {"placement": "reward"}}})


def test_reinforce_with_mu_rejected():
    assert "algorithm.mu" in _error({**TASK, "algorithm": {"objective": "reinforce", "mu": 2}})


def test_warmup_longer_than_run():
    assert "optim.warmup_steps" in _error({**TASK, "optim": {"warmup_steps": 50}, "run": {"steps": 10}})


def test_bad_value_names_key():
    assert "'rollout.temperature'" in _error({**TASK, "rollout": {"temperature": -1}})


def test_sft_needs_data():
    assert "data.path" in _error({}, kind="sft")


def test_unknown_algorithm_name_fails_before_model_loads():
    msg = _error({**TASK, "algorithm": {"advantage": "grpoo"}})
    assert "algorithm.advantage.type = 'grpoo' is unknown" in msg and "'grpo'" in msg
    cfg = parse_config({**TASK, "algorithm": {"advantage": "no_such_pkg.mod:fn"}})
    with pytest.raises(ConfigError, match=r"algorithm\.advantage.*no_such_pkg"):
        validate(cfg)


def test_each_part_owns_its_defaults():
    gspo = parse_config({**TASK, "algorithm": {"objective": "gspo"}}).algorithm.objective
    assert (gspo.clip_low, gspo.clip_high) == (3e-4, 4e-4)  # the GSPO paper's range, not PPO's 0.2
    cispo = parse_config({**TASK, "algorithm": {"objective": {"type": "cispo"}}}).algorithm.objective
    assert cispo.clip_low is None and cispo.clip_high == 0.2
    ppo = parse_config(TASK).algorithm.objective
    assert (ppo.type, ppo.clip_low, ppo.clip_high, ppo.dual_clip) == ("ppo_clip", 0.2, 0.2, None)
    # a setting of another type is an unknown key, named with the keys that exist
    msg = _error({**TASK, "algorithm": {"objective": {"type": "gspo", "dual_clip": 3.0}}})
    assert "'algorithm.objective.dual_clip'" in msg and "clip_high, clip_low, type" in msg


def test_user_function_kwargs_checked_at_load(tmp_path):
    ok = parse_config({**TASK, "algorithm": {"objective": {"type": "rlvr.algorithms.objectives:ppo_clip",
                                                           "kwargs": {"clip_low": 0.1}}}})  # fmt: skip
    validate(ok)
    bad = parse_config({**TASK, "algorithm": {"objective": {"type": "rlvr.algorithms.objectives:ppo_clip",
                                                            "kwargs": {"clip_lo": 0.1}}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"algorithm\.objective.*clip_lo"):
        validate(bad)
    # a user aggregation must bring its global denominator too (else it would fail at the first step)
    assert "algorithm.aggregation.denominator" in _error(
        {**TASK, "algorithm": {"aggregation": {"type": "rlvr.algorithms.aggregate:token_mean"}}}
    )


def test_every_problem_is_reported_at_once():
    msg = _error({**TASK, "rollout": {"group_size": 1, "prompts_per_step": 3}, "optim": {"micro_batch_size": 2}})
    assert "optim.micro_batch_size" in msg and "rollout.group_size = 1" in msg


def test_kinds_and_mixtures():
    mix = parse_config({"tasks": [{"name": "sort", "weight": 2.0}, {"name": "arithmetic"}]})
    assert [t.weight for t in mix.tasks] == [2.0, 1.0]
    with pytest.raises(AttributeError, match="mixes 2 tasks"):
        _ = mix.task
    assert parse_config(TASK).task.name == "sort"
    assert "not both" in _error({**TASK, "tasks": [{"name": "sort"}]})
    assert "needs a [task]" in _error({"kind": "distill"})  # on_policy (the default mode) samples its prompts
    assert "kind = 'a2c'" in _error({"kind": "a2c"})


def test_missing_model_path_named():
    cfg = parse_config({**TASK, "model": {"path": "/nonexistent/model"}})
    with pytest.raises(ConfigError, match=r"model\.path"):
        validate(cfg)


def test_overrides_parse_toml_values():
    data = apply_overrides(
        {"optim": {"lr": 1.0}},
        ["optim.lr=3e-4", "run.out_dir=runs/x", "optim.betas=[0.9, 0.95]", 'task.name="sort"'],
    )
    assert data == {
        "optim": {"lr": 3e-4, "betas": [0.9, 0.95]},
        "run": {"out_dir": "runs/x"},
        "task": {"name": "sort"},
    }


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_overrides({}, ["optim.lr"])


def test_load_config_with_override_typo(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[task]\nname = "sort"\n')
    assert isinstance(load_config(path), RLConfig)
    with pytest.raises(ConfigError, match=r"did you mean 'run\.steps'"):
        load_config(path, ["run.step=3"])


def test_derived_values_are_properties():
    cfg = parse_config({**TASK, "rollout": {"group_size": 4, "prompts_per_step": 6}, "algorithm": {"mu": 2},
                        "optim": {"micro_batch_size": 8}, "run": {"steps": 5}})  # fmt: skip
    assert (cfg.rollout.samples_per_step, cfg.micro_batches_per_step, cfg.optimizer_steps) == (24, 3, 10)
    with pytest.raises(ValueError):
        cfg.rollout.group_size = 2  # frozen: one source of truth


def test_save_config_roundtrip(tmp_path):
    cfg = parse_config({**TASK, "optim": {"lr": 3e-4}})
    path = save_config(cfg, tmp_path)
    assert parse_config(json.loads(path.read_text())) == cfg


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RLConfig | SFTConfig | DPOConfig | PPOConfig | DistillConfig)
    if cfg.model.path is None:  # the local-checkpoint example points at a directory made by init-model
        validate(cfg)


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"tiny_grpo.toml", "tiny_sft.toml", "hf_checkpoint_grpo.toml"} <= names


@pytest.mark.parametrize("mode", ["colocated", "server"])
def test_vllm_under_data_parallel_is_refused_with_what_to_do(mode):
    msg = _error({**TASK, "rollout": {"engine": {"type": "vllm", "mode": mode}}, "parallel": {"mode": "ddp"}})
    assert "rollout.engine.type = 'vllm' with parallel.mode = 'ddp'" in msg and "parallel.mode = 'none'" in msg
    assert parse_config({**TASK, "rollout": {"engine": {"type": "vllm", "mode": mode}}}).parallel.mode == "none"
