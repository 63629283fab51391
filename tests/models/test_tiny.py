"""The embedded tiny model: tokenizer round trips, deterministic init, HF save/load round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from rlvr.models.load import load_model_and_tokenizer
from rlvr.models.tiny import PRESETS, TAG_TOKENS, build_model, build_tokenizer, init_model


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


TEXTS = [
    "  <think>12 × 3 = 36\n  so</think> <answer>−36</answer>",
    "a  b\tc\n\n",
    "<answer><answer>",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_encode_round_trip_keeps_spaces_and_tags(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text  # tags are added, not special


def test_tags_and_specials_are_single_tokens(tok):
    for t in (*TAG_TOKENS, tok.bos_token, tok.eos_token, tok.pad_token):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [t]
    # "<think>x" is 2 tokens: the tag and one character
    assert len(tok("<think>x", add_special_tokens=False)["input_ids"]) == 2
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4


def test_bos_prepended_by_default_and_skipped_on_decode(tok):
    ids = tok("hi")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 3
    assert tok.decode(ids, skip_special_tokens=True) == "hi"
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_tokenizer_save_and_autotokenizer_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for text in TEXTS:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert again.decode(ids) == text
    assert again.padding_side == "left" and again.pad_token_id == tok.pad_token_id
    msgs = [{"role": "user", "content": "1+1?"}]
    assert (
        again.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        == "<s>user: 1+1?\nassistant: "
    )


def test_build_model_is_deterministic_per_seed(tok):
    a, b, c = build_model("1m", tok, 0), build_model("1m", tok, 0), build_model("1m", tok, 1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    state = torch.random.get_rng_state()
    build_model("1m", tok, 5)
    assert torch.equal(state, torch.random.get_rng_state())  # caller's RNG untouched


def test_presets_match_their_names(tok):
    cfg = build_model("33m", tok, 0).config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        512,
        8,
        8,
        2048,
    )
    assert cfg.vocab_size == len(tok) and cfg.max_position_embeddings == 1024
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        build_model("huge", tok, 0)
    assert set(PRESETS) == {"1m", "5m", "15m", "33m", "50m"}


def test_init_model_reloads_to_identical_logits(tmp_path):
    out = init_model(tmp_path / "m", preset="1m", seed=3)
    assert (out / "config.json").is_file() and not list(tmp_path.glob(".m.tmp-*"))
    model, tok = load_model_and_tokenizer(out)
    fresh = build_model("1m", build_tokenizer(), 3)
    ids = torch.tensor([tok("<think>7 × 6</think>")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, fresh(ids).logits)
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    with pytest.raises(FileExistsError, match="not empty"):
        init_model(out, preset="1m")


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*Hugging Face model directory"):
        load_model_and_tokenizer(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model_and_tokenizer(tmp_path)
