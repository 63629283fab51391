"""LoRA adapters through `peft`: inject them, merge them (without touching the trained model), save, load.

The trainer keeps the Hugging Face model object it always had: `apply_lora` injects peft's LoRA layers
into it in place (peft's `get_peft_model`, which freezes every other weight) and keeps the `PeftModel`
wrapper beside it in the model's `__dict__` (not a submodule, so state dict keys are the model's own:
`...q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`, `...lora_B.default.weight`).  The
trainer's forward (body + LM-head weight) runs unchanged through the adapted layers.

- `merged_state_dict`: W + scale * B A for every adapted layer, under the base model's names
  (`...q_proj.weight`), computed as new tensors; the engine and the HF export take these.  Merging in
  place (peft's `merge_adapter`) would fold the adapter into the trained base weight.
- `adapters_disabled`: peft's `disable_adapter()` context: the base model, as the reference policy.
- `save_pretrained`: the merged full model in HF format plus `adapter/` (peft's `adapter_config.json` and
  `adapter_model.safetensors`, loadable with `PeftModel.from_pretrained`); `load_adapter` reads it back.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.config import ConfigError
from rlvr.config.lora import LoRAConfig
from rlvr.errors import MissingPathError

INSTALL_HINT = "pip install 'rlvr[lora]' (or: pip install peft)"
ADAPTER_DIR = "adapter"  # inside a checkpoint: the adapter alone, in peft's format
ADAPTER_NAME = "default"  # peft's name for the one adapter rlvr trains
_WRAPPER = "lora_peft"  # the PeftModel, in the model's __dict__


def require_peft() -> Any:
    """The peft module, or a ConfigError that says how to install it."""
    try:
        import peft
    except ImportError:
        raise ConfigError(f"model.lora: LoRA needs the peft package, which is not installed; {INSTALL_HINT}") from None
    return peft


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of the model's linear layers (what `target_modules` may name), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def check_targets(model: nn.Module, cfg: LoRAConfig) -> None:
    """Every target names a linear layer of `model`, and none is the output embedding."""
    names = linear_module_names(model)
    unknown = [t for t in cfg.target_modules if t not in names]
    if unknown:
        raise ConfigError(f"model.lora.target_modules: {unknown} name no linear layer of this model "
                          f"({type(model).__name__}); its linear layers are {names}")  # fmt: skip
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head), None)
    if head_name in cfg.target_modules:
        raise ConfigError(f"model.lora.target_modules: {head_name!r} is the output embedding, which the trainer "
                          "reads as a weight matrix (chunked log-softmax); adapters on it are not supported, "
                          "remove it")  # fmt: skip


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Inject `cfg`'s adapters into `model` in place (only they stay trainable); returns `model`."""
    peft = require_peft()
    if is_lora(model):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    check_targets(model, cfg)
    lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                           target_modules=list(cfg.target_modules), use_rslora=cfg.rslora)  # fmt: skip
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapper = peft.get_peft_model(model, lora, adapter_name=ADAPTER_NAME)
    assert wrapper.base_model.model is model  # peft adapts the object in place
    model.__dict__[_WRAPPER] = wrapper
    return model


def peft_wrapper(model: nn.Module) -> Any:
    """The PeftModel around `model` (None without LoRA)."""
    return model.__dict__.get(_WRAPPER)


def is_lora(model: nn.Module) -> bool:
    return peft_wrapper(model) is not None


def lora_layers(model: nn.Module) -> dict[str, Any]:
    """Module name -> peft LoRA layer, for every adapted layer of `model`."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The base model for the block (peft's `disable_adapter`): the reference policy of a LoRA run."""
    with peft_wrapper(model).disable_adapter():
        yield


@torch.no_grad()
def merged_state_dict(model: nn.Module, state: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The weights of the adapted model under the base model's names: W + scale * B A for every adapted
    layer (new tensors, computed in fp32, in W's dtype), everything else as is.  `state` defaults to
    `model.state_dict()` (pass a gathered one under FSDP2)."""
    state = model.state_dict() if state is None else state
    layers = lora_layers(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight") and key[: -len(".base_layer.weight")] in layers:
            name = key[: -len(".base_layer.weight")]
            a = state[f"{name}.lora_A.{ADAPTER_NAME}.weight"].float()  # [r, in]
            b = state[f"{name}.lora_B.{ADAPTER_NAME}.weight"].float()  # [out, r]
            scale = layers[name].scaling[ADAPTER_NAME]
            out[f"{name}.weight"] = (value.float() + scale * (b @ a)).to(value.dtype)
        else:
            out[key.replace(".base_layer.", ".")] = value  # biases of adapted layers, and the rest
    return out


def adapter_state_dict(model: nn.Module, state: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The adapter tensors alone, under peft's saved names (`base_model.model.<name>.lora_A.weight`)."""
    from peft import get_peft_model_state_dict

    own = model.state_dict() if state is None else state
    full = {f"base_model.model.{k}": v for k, v in own.items()}
    return get_peft_model_state_dict(peft_wrapper(model), state_dict=full, adapter_name=ADAPTER_NAME)


def save_pretrained(model: nn.Module, directory: str | Path, state_dict: Mapping[str, Any] | None = None) -> None:
    """`model.save_pretrained`; a LoRA model writes its merged weights there and the adapter to `adapter/`."""
    if not is_lora(model):
        model.save_pretrained(directory, state_dict=state_dict)
        return
    model.save_pretrained(directory, state_dict=merged_state_dict(model, state_dict))
    wrapper = peft_wrapper(model)
    wrapper.save_pretrained(Path(directory) / ADAPTER_DIR, state_dict=adapter_state_dict(model, state_dict))


def load_adapter(model: nn.Module, ckpt: str | Path) -> None:
    """Load a checkpoint's `adapter/` weights into the (already adapted) model, all of them or an error."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(ckpt) / ADAPTER_DIR / "adapter_model.safetensors"
    if not path.is_file():
        raise MissingPathError(f"checkpoint {ckpt} has no {ADAPTER_DIR}/adapter_model.safetensors, but model.lora is "
                               "set: it was written without LoRA (resume without [model.lora]) or is incomplete")  # fmt: skip
    weights = load_file(str(path))
    expected = set(adapter_state_dict(model))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ConfigError(f"checkpoint {ckpt}: its adapter does not match model.lora (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); resume with the [model.lora] the run started with")  # fmt: skip
    result = set_peft_model_state_dict(peft_wrapper(model), weights, adapter_name=ADAPTER_NAME)
    bad = [k for k in result.unexpected_keys if ".lora_" in k]
    if bad:
        raise ConfigError(f"checkpoint {ckpt}: adapter tensors {bad[:3]} were not loaded")
