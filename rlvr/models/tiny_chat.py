"""A tiny Qwen2-style chat model built on the spot, for tests of the chat-template path.

Nothing is downloaded: `build_chat_tokenizer` trains a byte-level BPE tokenizer (the `tokenizers`
library, Qwen2's pre-tokenisation) on a few texts, e.g. `task_corpus(task)`, and wraps it as a
`PreTrainedTokenizerFast` with Qwen2's ChatML template; `build_chat_model` makes a randomly
initialised `Qwen2ForCausalLM` of tiny dimensions over it.  `build_tiny_chat(task)` does both.

Like Qwen2-Instruct: no BOS, `<|im_end|>` ends a turn and is the eos token, `<|endoftext|>` pads.
The R1 tags are added tokens that are not special (as in Qwen3), so decoding keeps them.
`think_in_prompt=True` gives a template whose generation prompt opens the think block itself
(`"<|im_start|>assistant\\n<think>\\n"`, as Qwen3's thinking mode does): the model's completion then
starts inside `<think>`, which grading has to know (`rlvr.tasks.base.open_prefix`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_THINKING = CHATML.replace("assistant\n{% endif %}", "assistant\n<think>\n{% endif %}")
DIMS: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def task_corpus(task: Any, n: int = 64) -> list[str]:
    """Texts to train the tokenizer on: prompts, chat messages and worked solutions of `task`."""
    texts: list[str] = []
    for ex in list(task.examples("train"))[:n]:
        texts.append(task.render(ex))
        texts.extend(m["content"] for m in task.messages(ex))
        if hasattr(task, "solution"):
            texts.append(task.solution(ex))
    return texts


def build_chat_tokenizer(
    corpus: Iterable[str], *, think_in_prompt: bool = False, vocab_size: int = 400
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, with a ChatML chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,
        padding_side="left",
        chat_template=CHATML_THINKING if think_in_prompt else CHATML,
    )


def build_chat_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised fp32 `Qwen2ForCausalLM` with tiny dimensions (same seed, same weights)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **DIMS,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG stream alone
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def build_tiny_chat(
    task: Any, *, think_in_prompt: bool = False, seed: int = 0
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """(model, tokenizer) for `task`: BPE trained on `task_corpus(task)`, a random tiny Qwen2."""
    tokenizer = build_chat_tokenizer(task_corpus(task), think_in_prompt=think_in_prompt)
    return build_chat_model(tokenizer, seed=seed), tokenizer
