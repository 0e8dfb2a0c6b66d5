"""LoRA adapters (peft) on the language model, for fine-tuning large backbones such as OpenVLA-7B.

``apply_lora`` injects adapters into the decoder's linear layers in place (``peft``'s
``inject_adapter_in_model``) and freezes the decoder's base weights; the vision tower and projector
stay trainable unless ``freeze_vision`` is set (OpenVLA fine-tunes all of them with LoRA; a small
tower is cheaper to train fully); ``adapters_only`` freezes every weight outside the adapters.

Checkpoints stay plain: ``merged_state_dict`` folds every adapter into its base weight, so a LoRA
checkpoint loads exactly like a full one. To resume training, the adapter tensors are kept in the
training state and ``restore_lora`` rebuilds the unmerged model: the frozen base weights are those of the
checkpoint training started from when it is given (exact), else merged - B A * scale (exact up to floating-point
rounding: the resumed run then differs from an uninterrupted one in the last bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vla_rl.core.config import option

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = option(0, "LoRA rank; 0 trains every weight (no adapters)")
    alpha: float = option(16.0, "LoRA scaling numerator (scale = alpha / rank)")
    dropout: float = option(0.0, "dropout on the adapter input")
    target_modules: tuple[str, ...] = option(LORA_TARGETS, "decoder linear layers that get adapters")
    freeze_vision: bool = option(False, "also freeze the vision tower (train projector + adapters only)")
    adapters_only: bool = option(False, "train the decoder's adapters and nothing else: the vision tower, projector "
                                        "and input MLPs (located points, proprio) stay frozen too")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def _lora_layers(model: torch.nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def apply_lora(model, config: LoRAConfig):
    """Inject adapters into ``model.language_model`` in place; returns the trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                             target_modules=list(config.target_modules), bias="none")
    for parameter in model.language_model.parameters():
        parameter.requires_grad_(False)
    inject_adapter_in_model(peft_config, model.language_model)
    if config.freeze_vision:
        for parameter in model.vision_backbone.parameters():
            parameter.requires_grad_(False)
    if config.adapters_only:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(".lora_" in name)
    return [p for p in model.parameters() if p.requires_grad]


def lora_tensors(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items() if ".lora_" in name}


def merged_state_dict(model, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's weights with every adapter folded in (``W + B A * scale``), under the plain
    (adapter-free) names; ``state``: the model's state dict when it must come from elsewhere (e.g.
    shards gathered into full tensors)."""
    state = model.state_dict() if state is None else state
    scales = {name: module.scaling["default"] for name, module in _lora_layers(model)}
    merged = {}
    for key, tensor in state.items():
        if ".lora_" in key:
            continue
        layer = key.removesuffix(".base_layer.weight")
        if layer in scales:
            a, b = state[f"{layer}.lora_A.default.weight"], state[f"{layer}.lora_B.default.weight"]
            tensor = tensor + (b @ a) * scales[layer]
        merged[key.replace(".base_layer.", ".")] = tensor
    return merged


def lora_base_names(model, config: LoRAConfig) -> set[str]:
    """The plain weight names (as in a checkpoint) of the layers ``apply_lora`` wraps: their frozen base."""
    targets = set(config.target_modules)
    return {f"{name}.weight" for name, module in model.named_modules()
            if name.startswith("language_model.") and name.rsplit(".", 1)[-1] in targets
            and isinstance(module, torch.nn.Linear)}


def lora_base_weights(checkpoint, model, config: LoRAConfig) -> dict[str, torch.Tensor] | None:
    """The frozen base of ``model``'s LoRA layers (``lora_base_names``; call before the adapters are injected) as
    the checkpoint a run started from holds it (a run directory: its newest checkpoint), for ``restore_lora``;
    None when there is none, or it is no longer readable (said: the base is then rebuilt to rounding)."""
    from pathlib import Path

    from vla_rl.policy.checkpoint import read_weights, resolve_checkpoint

    if checkpoint is None or Path(checkpoint) == Path(""):
        return None
    try:
        return read_weights(resolve_checkpoint(Path(checkpoint)), lora_base_names(model, config))
    except (OSError, ValueError) as error:  # moved, deleted or damaged since the run started
        print(f"resume: the starting checkpoint {checkpoint} is not readable ({error}); LoRA's frozen base is "
              "rebuilt from the merged weights (exact up to rounding)")
        return None


@torch.no_grad()
def restore_lora(model, config: LoRAConfig, adapters: dict[str, torch.Tensor],
                 base_weights: dict[str, torch.Tensor] | None = None):
    """Re-inject adapters into a model loaded from merged weights and un-merge them. ``base_weights`` (the
    frozen base, from the checkpoint training started from: ``lora_base_names``) make it exact; without them
    the base is merged - B A * scale, which rounding leaves a few ulps off. A base that does not match that
    (another starting checkpoint) is not used: said once, and the subtraction stands."""
    trainable = apply_lora(model, config)
    missing = set(adapters) ^ {k for k in model.state_dict() if ".lora_" in k}
    if missing:
        raise ValueError(f"saved LoRA adapters do not match this model: {sorted(missing)[:5]}")
    model.load_state_dict(adapters, strict=False)
    rebuilt = {}
    for name, module in _lora_layers(model):
        rebuilt[f"{name}.weight"] = module.base_layer.weight - module.get_delta_weight("default")
    given = base_weights or {}
    mismatched = [key for key, weight in rebuilt.items() if key not in given or given[key].shape != weight.shape
                  or not torch.allclose(given[key].to(weight), weight, rtol=1e-3, atol=1e-4)]
    if base_weights is not None and mismatched:
        print(f"restore_lora: the starting checkpoint's weights are not this run's LoRA base ({mismatched[0]} and "
              f"{len(mismatched) - 1} more differ); the base is rebuilt as merged - adapters (rounding-exact only)")
    exact = base_weights is not None and not mismatched
    for name, module in _lora_layers(model):
        key = f"{name}.weight"
        module.base_layer.weight.copy_(given[key] if exact else rebuilt[key])
    return trainable
