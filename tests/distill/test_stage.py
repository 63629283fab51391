"""The distill stage: a teacher equal to the student gives zero KL and full agreement, logit KD pulls the
student toward the teacher, on-policy distillation resumes bitwise, different vocabularies are refused."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from rlvr.config import ConfigError, parse_config
from rlvr.distill.vocab import vocabulary_mismatch
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import WeightSyncError
from rlvr.rollout.hf import HFEngine
from rlvr.trainer import build, train
from rlvr.trainer.checkpoint import load_weights
from rlvr.trainer.distill import build_teacher


def _cfg(out, *, steps=3, eval_every=0, **distill):
    return parse_config({
        "kind": "distill", "model": {"preset": "1m"}, "teacher": {"preset": "1m", "seed": distill.pop("teacher_seed", 1)},
        "task": {"name": "arithmetic", "kwargs": {"digits": 1, "ops": "+", "n_train": 40, "n_test": 8}},
        "distill": distill, "data": {"batch_size": 8, "max_len": 64},
        "rollout": {"group_size": 2, "prompts_per_step": 4, "max_new_tokens": 12},
        "optim": {"lr": 3e-3, "micro_batch_size": 4},
        "run": {"out_dir": str(out), "steps": steps, "eval_every": eval_every, "progress": False, "tensorboard": False, "samples_every": 1},
    }, kind="distill")  # fmt: skip


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_teacher_equal_to_the_student_has_zero_kl_and_full_agreement(tmp_path):
    train(_cfg(tmp_path / "r", steps=1, mode="logit", teacher_seed=0))
    row = _rows(tmp_path / "r")[0]
    assert row["distill/kl"] == pytest.approx(0.0, abs=1e-6) and row["distill/top1_agreement"] == 1.0
    train(_cfg(tmp_path / "p", steps=1, mode="on_policy", teacher_seed=0))
    row = _rows(tmp_path / "p")[0]
    assert row["distill/kl_sampled"] == pytest.approx(0.0, abs=1e-5) and row["distill/top1_agreement"] == 1.0
    assert abs(row["loss"]) < 1e-5  # advantage log T - log S = 0 at every token


@pytest.mark.parametrize("loss", ["forward_kl", "jsd"])
def test_logit_kd_pulls_the_student_toward_the_teacher(tmp_path, loss):
    cfg = _cfg(tmp_path / "r", steps=6, mode="logit", loss=loss)
    train(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 1e-3})}))
    kl = [r["distill/kl"] for r in _rows(tmp_path / "r")]
    assert kl[-1] < 0.6 * kl[0], kl


def test_on_policy_distillation_resumes_bitwise(tmp_path):
    cfg = lambda out, every=0: _cfg(out, steps=4, eval_every=every, mode="on_policy", reward_weight=0.5)  # noqa: E731
    full = train(cfg(tmp_path / "full"))

    def stop_at_2(ctx):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(cfg(tmp_path / "cut", 1), callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    second = train(cfg(tmp_path / "cut", 1), resume=True)
    assert second.status == "completed" and second.step == 4
    tok = build_tokenizer()
    a, b = build_model("1m", tok, 0), build_model("1m", tok, 0)
    load_weights(a, full.checkpoint)
    load_weights(b, second.checkpoint)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    keys = ("loss", "distill/kl_sampled", "reward/total")
    assert [[r[k] for k in keys] for r in _rows(tmp_path / "full")] == [[r[k] for k in keys] for r in _rows(tmp_path / "cut")]


class _OtherTokenizer:
    def __init__(self, tok):
        self.eos_token_id, self.pad_token_id = tok.eos_token_id, tok.pad_token_id
        vocab = dict(tok.get_vocab())
        a, b = sorted(vocab, key=vocab.get)[10:12]
        vocab[a], vocab[b] = vocab[b], vocab[a]
        self._vocab = vocab

    def get_vocab(self):
        return self._vocab


def test_different_vocabularies_are_refused_with_what_to_do(tmp_path, monkeypatch):
    tok = build_tokenizer()
    assert vocabulary_mismatch(tok, tok) is None
    other = _OtherTokenizer(tok)
    assert "id" in vocabulary_mismatch(tok, other)
    real = build.build_model
    monkeypatch.setattr(build, "build_model", lambda cfg: (real(cfg)[0], other))
    with pytest.raises(ConfigError, match="sequence-level distillation") as info:
        build_teacher(_cfg(tmp_path, mode="on_policy"), tok, 114)
    assert "rlvr distill collect" in str(info.value) and "kind = 'sft'" in str(info.value)


def test_missing_teacher_path_is_a_config_error(tmp_path):
    cfg = parse_config({**_cfg(tmp_path).model_dump(mode="json"), "teacher": {"path": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"teacher\.path"):
        train(cfg)


def test_offline_kd_from_precomputed_topk_needs_no_resident_teacher(tmp_path, monkeypatch):
    """The first run fills the file with the teacher; a second reads it with no teacher at all and trains
    exactly as the first, and as with the resident teacher up to float rounding."""
    import rlvr.trainer.distill as stage_module

    topk = tmp_path / "topk.jsonl"
    resident = _cfg(tmp_path / "resident", mode="logit", top_k=8)
    offline = lambda out: parse_config({**_cfg(out, mode="logit", top_k=8).model_dump(mode="json"),  # noqa: E731
                                        "teacher": {"preset": "1m", "seed": 1, "topk_file": str(topk)}}, kind="distill")  # fmt: skip
    train(resident)
    train(offline(tmp_path / "fill"))
    header, *rows = topk.read_text().splitlines()
    assert json.loads(header)["header"]["top_k"] == 8 and len(rows) == 40  # every training pair, once
    monkeypatch.setattr(stage_module, "build_teacher", lambda *a, **k: pytest.fail("the teacher was loaded"))
    train(offline(tmp_path / "read"))
    losses = [[r["loss"] for r in _rows(tmp_path / d)] for d in ("resident", "fill", "read")]
    assert losses[1] == losses[2]  # the file is read back exactly
    # the resident teacher scores per micro-batch (other padding): equal up to float rounding
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)  # other batch shapes round differently in fp32


def test_topk_store_refuses_another_vocabulary_or_a_larger_k(tmp_path):
    from rlvr.data.io import DataError
    from rlvr.distill.topk import TopKStore
    from rlvr.rollout.base import TokenScores
    from rlvr.rollout.fake import FakeEngine

    class Teacher(FakeEngine):
        def score(self, prompts, completions, *, temperature=1.0, top_k=0):
            return [TokenScores(tuple(-1.0 for _ in c), tuple((t, 0, 1)[:top_k] for t in c),
                                tuple((-0.5, -1.0, -2.0)[:top_k] for _ in c)) for c in completions]  # fmt: skip

    store = TopKStore(tmp_path / "k.jsonl")
    assert store.fill(Teacher(), [((1, 2), (3, 4)), ((1, 2), (3, 4))], temperature=1.0, top_k=3, vocab="v1") == 1
    with (tmp_path / "k.jsonl").open("a") as f:
        f.write('{"key": "cut')
    again = TopKStore(tmp_path / "k.jsonl")
    reader = again.reader(vocab="v1")
    (s,) = reader.score([(1, 2)], [(3, 4)], top_k=2)
    assert s.top_ids == ((3, 0), (4, 0)) and s.top_logprobs == ((-0.5, -1.0), (-0.5, -1.0))
    with pytest.raises(DataError, match="top-3"):
        reader.score([(1, 2)], [(3, 4)], top_k=5)
    with pytest.raises(DataError, match="another vocabulary"):
        again.reader(vocab="v2")
    with pytest.raises(DataError, match="use a new file"):
        again.fill(Teacher(), [((1,), (2,))], temperature=1.0, top_k=3, vocab="v2")


def test_feature_distillation_through_a_projector_lowers_the_feature_loss(tmp_path):
    """A 1m student (width 128) matches layers of a 5m teacher (width 256) through learned projectors."""
    data = _cfg(tmp_path / "f", steps=6, mode="logit", feature_weight=1.0, layer_map=[[2, 3], [-1, -1]]).model_dump(mode="json")
    data["teacher"]["preset"] = "5m"
    data["optim"]["lr"] = 1e-3
    result = train(parse_config(data, kind="distill"))
    feat = [r["distill/feature_loss"] for r in _rows(tmp_path / "f")]
    assert feat[-1] < 0.7 * feat[0], feat
    state = torch.load(result.checkpoint / "trainer_state.pt", weights_only=False)
    shapes = [tuple(v.shape) for v in state["projectors"].values()]
    assert shapes == [(256, 128), (256, 128)]
    data["distill"]["layer_map"] = [[9, 0]]
    data["run"]["out_dir"] = str(tmp_path / "bad")
    with pytest.raises(ConfigError, match="layer_map"):
        train(parse_config(data, kind="distill"))


class _NoOpSyncEngine(HFEngine):
    """Reports every update as taken and keeps sampling the old weights (the silent sync bug)."""

    def update_weights(self, state_dict, *, version):
        self.version = version
        return version


def test_on_policy_distillation_checks_the_student_engine_after_every_update(tmp_path):
    cfg = _cfg(tmp_path / "ok", steps=2, mode="on_policy")
    train(cfg)
    rows = _rows(tmp_path / "ok")
    assert all(r["sync/max_abs_logp_diff"] <= 1e-3 for r in rows)
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    stale = _NoOpSyncEngine(model, tok, dtype=None)
    with pytest.raises(WeightSyncError, match="differ from the trainer's"):
        train(_cfg(tmp_path / "stale", steps=2, mode="on_policy"), model=model, tokenizer=tok, engine=stale)
