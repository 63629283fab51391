"""The embedded default model: a character-level tokenizer and small Llama-style configs.

Nothing is downloaded: `build_tokenizer` makes a tokenizer over printable ASCII plus the few
symbols the tasks print (×, −, ÷, …), with the R1 tags `<think> </think> <answer> </answer>` as
single tokens, and `build_model` makes a randomly initialised `LlamaForCausalLM` of a named size.
`init_model` writes both as a Hugging Face directory that transformers (and vLLM) load as is.

BOS convention: the tokenizer's post-processor prepends `<s>` when `add_special_tokens=True`
(the default of `tokenizer(text)`), like Llama's.  Prompts are tokenised with it, completions
without it (see `rlvr.rollout.collect`).  The R1 tags are *added* tokens but not *special* ones, so
`decode(..., skip_special_tokens=True)` keeps them and drops only `<s>`, `</s>`, `<pad>`, `<unk>`.
"""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlvr.config import ConfigError
from rlvr.errors import RunDirError
from rlvr.models.load import quiet_transformers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
# Printable ASCII without the vertical tab / form feed / carriage return, plus task symbols.
EXTRA_CHARS = "×−÷·≤≥√π°"
CHARS = tuple(dict.fromkeys(string.printable.translate({ord(c): None for c in "\x0b\x0c\r"}) + EXTRA_CHARS))

# A minimal chat template: "system: ...\nuser: ...\nassistant: " (the generation prompt).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

# LlamaConfig kwargs per size preset; the name is the rough parameter count (vocab ~120).
PRESETS: dict[str, dict[str, Any]] = {
    "1m": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
    "5m": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=768),
    "15m": dict(hidden_size=384, num_hidden_layers=8, num_attention_heads=6, intermediate_size=1024),
    # The benchmark model of issue 7: hidden 512, 8 layers, 8 heads, intermediate 2048.
    "33m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048),
    "50m": dict(hidden_size=640, num_hidden_layers=10, num_attention_heads=10, intermediate_size=1792),
}
MAX_POSITIONS = 1024


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer: every character is one token, tags and specials are one each."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per char
    tok.decoder = decoders.Fuse()  # concatenate pieces: no spaces inserted between characters
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def model_config(preset: str, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The LlamaConfig of a preset, with the vocabulary and special ids taken from `tokenizer`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **PRESETS[preset],
    )


def build_model(preset: str, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A randomly initialised fp32 model; the same (preset, tokenizer, seed) gives identical weights."""
    config = model_config(preset, tokenizer)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # do not disturb the caller's global RNG stream
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def init_model(out_dir: str | Path, preset: str = "5m", seed: int = 0) -> Path:
    """Write a fresh tiny model + tokenizer as an HF directory at `out_dir` (atomically); return it."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} already exists and is not empty: choose a new directory or remove it")
    tokenizer = build_tokenizer()
    model = build_model(preset, tokenizer, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
