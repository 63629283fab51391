"""`collect`: the one place where tasks meet engines.

Render each example, tokenise, call `engine.generate` ONCE for all examples (so an engine can
batch every group together), score each completion with the task's verifier, and return one
scored `Group` per example.

Tokenisation (the BOS convention the trainer must follow):
- plain rendering (`task.render`): `tokenizer(text)` with `add_special_tokens=True`, i.e. the
  tokenizer's own convention (the tiny tokenizer and Llama prepend `<s>`, Qwen adds nothing);
- chat rendering (`chat_template=True`): the template's text already holds any BOS, so it is
  tokenised with `add_special_tokens=False`.
Completion token ids are the engine's generated ids (no BOS; the stop token kept), and the text is
the engine's decoding of them (`base.decode_completion`: tags kept, eos/pad dropped, cut after a
stop string).  The trainer should take `Group.prompt_ids` + `Completion.token_ids` as they are
rather than re-tokenise text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvr.rollout.base import Engine, SamplingParams
from rlvr.tasks.base import Task
from rlvr.types import Example, Group


def render_prompt(
    tokenizer: Any, task: Task, example: Example, *, chat_template: bool = False
) -> tuple[str, list[int]]:
    """The model input for `example` as (text, token ids), following the module's BOS convention."""
    if chat_template:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "chat_template=True but the tokenizer has no chat template; use chat_template=False"
            )
        text = tokenizer.apply_chat_template(
            task.messages(example), add_generation_prompt=True, tokenize=False
        )
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = task.render(example)
    return text, list(tokenizer(text, add_special_tokens=True)["input_ids"])


def collect(
    engine: Engine,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    params: SamplingParams,
    *,
    chat_template: bool = False,
) -> list[Group]:
    """Generate `params.n` completions per example and score them: one scored Group per example."""
    rendered = [render_prompt(tokenizer, task, ex, chat_template=chat_template) for ex in examples]
    outputs = engine.generate([ids for _, ids in rendered], params)
    if len(outputs) != len(examples):
        raise RuntimeError(f"engine returned {len(outputs)} groups for {len(examples)} prompts")
    groups = []
    for ex, (text, ids), completions in zip(examples, rendered, outputs):
        if len(completions) != params.n:
            raise RuntimeError(
                f"engine returned {len(completions)} completions for example {ex.id}, expected {params.n}"
            )
        scores = [task.score(ex, c.text) for c in completions]
        groups.append(Group(ex, text, tuple(ids), list(completions), scores))
    return groups
