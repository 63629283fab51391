"""`collect`: the one place where tasks meet engines; `render_prompt`: the one way prompts are made.

Render each example, tokenise, call `engine.generate` ONCE for all examples (so an engine can
batch every group together), grade each completion with `rlvr.tasks.grade` after the prefix the
prompt left open, and return one scored `Group` per example.

`render_prompt` is shared by training, evaluation and SFT data: it returns the prompt text, its
token ids and its open prefix (`rlvr.tasks.base.open_prefix` of the text, so a plain template
ending in "<think>" and a chat template whose generation prompt opens "<think>\\n" are graded the
same way).

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
from typing import Any, NamedTuple

from rlvr.config import ConfigError
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.tasks.base import Task, grade, open_prefix
from rlvr.types import Example, Group


class Rendered(NamedTuple):
    """A rendered prompt: its text, its token ids (module BOS convention) and its open prefix."""

    text: str
    ids: list[int]
    prefix: str


def render_prompt(tokenizer: Any, task: Task, example: Example, *, chat_template: bool = False) -> Rendered:
    """The model input for `example`: (text, token ids, the R1 prefix the text leaves open)."""
    text, ids = _render(tokenizer, task, example, chat_template)
    return Rendered(text, ids, open_prefix(text))


def _render(tokenizer: Any, task: Task, example: Example, chat_template: bool) -> tuple[str, list[int]]:
    if chat_template:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                "model.chat_template = true (--chat-template) but the tokenizer has no chat template; "
                "set model.chat_template = false, or use a model directory whose tokenizer has one"
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
    outputs = engine.generate([r.ids for r in rendered], params)
    if len(outputs) != len(examples):
        raise RuntimeError(f"engine returned {len(outputs)} groups for {len(examples)} prompts")
    groups = []
    for ex, r, completions in zip(examples, rendered, outputs):
        if len(completions) != params.n:
            raise RuntimeError(
                f"engine returned {len(completions)} completions for example {ex.id}, expected {params.n}"
            )
        scores = [grade(task, ex, c.text, prefix=r.prefix) for c in completions]
        groups.append(Group(ex, r.text, tuple(r.ids), list(completions), scores, prefix=r.prefix))
    return groups
