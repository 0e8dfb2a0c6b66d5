"""Load an OpenVLA checkpoint directory (the published HF layout) into ``VLAModel``.

No ``trust_remote_code``, no timm: the two timm ViTs of OpenVLA's fused backbone are mapped onto
``transformers``' ``Dinov2WithRegistersModel`` and ``SiglipVisionModel``:

    vision_backbone.featurizer.*        (timm DINOv2-L/14 + 4 registers) -> vision_backbone.towers.0.*
    vision_backbone.fused_featurizer.*  (timm SigLIP so400m/14)          -> vision_backbone.towers.1.*
    projector.fc1/fc2/fc3                                                -> projector.fc1/fc2/fc3
    language_model.*                    (HF Llama)                       -> language_model.*

Per timm block: ``attn.qkv`` is split into q/k/v, ``attn.proj`` -> ``o_proj``/``out_proj``,
``ls{1,2}.scale_factor`` -> ``layer_scale{1,2}.lambda1``; DINOv2's ``pos_embed`` (patches only,
``no_embed_class``) gets a zero row for the CLS token. OpenVLA reads the output of the
second-to-last block without the final norm, so towers are built one block short and the last
block, the final norms and SigLIP's attention-pool head are not loaded (they are listed in
``UNUSED``; any other unknown or missing key is an error).

Directory contents used: ``config.json`` (OpenVLA/Prismatic config with ``norm_stats`` and
``n_action_bins``), ``model.safetensors.index.json`` + shards or, without an index, ``model.safetensors``
alone (as transformers reads it: other ``*.safetensors`` files, e.g. an adapter, are not weights of the
model), tokenizer files, optionally ``preprocessor_config.json`` (its ``tvf_normalize_params`` hold the
exact, bf16-rounded normalisation the published model was run with) and optionally
``dataset_statistics.json``: as in OpenVLA's ``get_vla``, its statistics replace config.json's
``norm_stats`` (OpenVLA's ``finetune.py`` writes a fine-tune's statistics only there; config.json keeps
the base model's).

The model is built with its parameters on the meta device (no memory, no random initialisation, which
for openvla-7b would be ~30 GB in fp32 and minutes) and the checkpoint's tensors are assigned in.
Buffers are computed as usual while it is built (RoPE frequencies, image normalisation), so they are
exactly what a normal construction gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from vla_rl.policy.action_tokenizer import ActionTokenizer, NormStats
from vla_rl.policy.model import LanguageModelConfig, VisionTowerConfig, VLAConfig, VLAModel, load_tokenizer

# Attention heads cannot be read off the weights; everything else is inferred from tensor shapes.
KNOWN_TIMM_HEADS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": 16,
    "vit_large_patch14_reg4_dinov2": 16,
    "vit_so400m_patch14_siglip_224": 16,
    "vit_so400m_patch14_siglip_384": 16,
    "vit_base_patch16_siglip_224": 12,
}
PAD_TO_MULTIPLE_OF = 64  # PrismaticConfig's default: the vocabulary padding that action ids count down past
# What the loader reproduces: square resizing, and Llama-2 base models with the "pure" prompt that
# appends "▁" (openvla-7b). Letterbox padding and the Vicuna/chat prompt formats (openvla-v01) are not.
IMPLEMENTED_RESIZE_STRATEGIES = ("resize-naive",)
IMPLEMENTED_LLM_BACKBONES = ("llama2-7b-pure", "llama2-13b-pure")
OPENVLA_EMPTY_TOKEN = 29871  # Llama-2's "▁": OpenVLA appends it after "Out:" at inference
PREFIXES = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.")
UNUSED = re.compile(r"^vision_backbone\.(featurizer|fused_featurizer)\.(norm\.|attn_pool\.|head\.|fc_norm\.)")
# Parameters our modules have that OpenVLA's checkpoint does not (never used in the forward pass).
NOT_IN_CHECKPOINT = re.compile(r"(embeddings\.mask_token|\.layernorm\.|\.post_layernorm\.)")
DATASET_STATISTICS = "dataset_statistics.json"  # a fine-tune's statistics, written by OpenVLA's finetune.py
NO_NOOPS_SUFFIX = "_no_noops"  # OpenVLA's LIBERO datasets with no-op actions filtered out


class CheckpointError(ValueError):
    """The directory is not a loadable OpenVLA checkpoint; the message says what is wrong."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error


def _shard_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no 'weight_map' from tensor names to shard files")
        names = sorted(set(weight_map.values()))
        files = [directory / name for name in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"no complete safetensors weights in {directory} (missing: {missing})")
        return files
    single = directory / "model.safetensors"
    if not single.is_file():  # transformers reads only this name without an index; a stray adapter is not weights
        present = sorted(item.name for item in directory.iterdir())
        raise CheckpointError(f"no safetensors weights in {directory}: neither model.safetensors.index.json nor "
                              f"model.safetensors (it holds: {', '.join(present) or 'nothing'})")
    return [single]


def _tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as error:  # noqa: BLE001 - safetensors raises several types for corrupt files
            raise CheckpointError(f"cannot read {file}: {error}") from error
    return shapes


def _tower_config(prefix: str, timm_id: str, shapes: dict, mean_std) -> tuple[VisionTowerConfig, int]:
    """A tower config from the checkpoint's shapes; returns it and the stored block count."""
    for name in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if prefix + name not in shapes:
            raise CheckpointError(f"the checkpoint has no {prefix + name!r}: the vision tower's size cannot be read")
    patch_shape = shapes[prefix + "patch_embed.proj.weight"]
    if len(patch_shape) != 4:
        raise CheckpointError(f"{prefix}patch_embed.proj.weight has shape {list(patch_shape)}, "
                              "not [width, 3, patch, patch]")
    width, _, patch, _ = patch_shape
    depth = 1 + max(int(k[len(prefix) + 7:].split(".")[0]) for k in shapes if k.startswith(prefix + "blocks."))
    mlp = shapes[prefix + "blocks.0.mlp.fc1.weight"][0]
    heads = KNOWN_TIMM_HEADS.get(timm_id)
    if heads is None:
        raise CheckpointError(f"unknown timm model {timm_id!r}; known: {', '.join(KNOWN_TIMM_HEADS)}")
    registers = shapes.get(prefix + "reg_token", (1, 0, 0))[1]
    kind = "dinov2" if (prefix + "cls_token") in shapes else "siglip"
    config = VisionTowerConfig(kind=kind, hidden_size=width, num_layers=depth - 1, num_heads=heads,
                               intermediate_size=mlp, patch_size=patch, num_register_tokens=registers,
                               hidden_act="gelu", image_mean=tuple(mean_std[0]) if mean_std else (),
                               image_std=tuple(mean_std[1]) if mean_std else ())
    return config, depth


def _rope_theta(text) -> float:
    """The RoPE base of the checkpoint's ``LlamaConfig``. transformers >= 5 keeps it, with any scaling,
    in ``rope_parameters`` (its ``rope_theta`` attribute is None); earlier versions in ``rope_theta``
    and ``rope_scaling``. Only unscaled RoPE (Llama-2's) is built by ``VLAModel``: other types are refused."""
    parameters = dict(getattr(text, "rope_parameters", None) or {})
    scaling = getattr(text, "rope_scaling", None)
    if isinstance(scaling, dict):
        parameters = {**scaling, **parameters}
    rope_type = parameters.get("rope_type") or parameters.get("type") or "default"
    if rope_type != "default":
        raise CheckpointError(f"text_config uses RoPE scaling {rope_type!r} ({parameters}); only unscaled RoPE "
                              "(rope_type 'default', as in Llama-2) is implemented")
    theta = parameters.get("rope_theta", getattr(text, "rope_theta", None))
    return float(theta) if theta is not None else 10000.0  # LlamaConfig's default


def _check_implemented(raw: dict[str, Any]) -> None:
    """Refuse the Prismatic options this loader does not reproduce. A key the config leaves out has
    PrismaticConfig's default (``letterbox``, ``vicuna-v15-7b``), which is refused as well."""
    strategy = raw.get("image_resize_strategy", "letterbox")
    if strategy not in IMPLEMENTED_RESIZE_STRATEGIES:
        raise CheckpointError(f"image_resize_strategy {strategy!r} is not implemented (only "
                              f"{', '.join(IMPLEMENTED_RESIZE_STRATEGIES)}, as in openvla-7b)")
    llm_id = raw.get("llm_backbone_id", "vicuna-v15-7b")
    if llm_id not in IMPLEMENTED_LLM_BACKBONES:
        raise CheckpointError(f"llm_backbone_id {llm_id!r} is not implemented: its prompt format differs from the "
                              f"'In: ...\\nOut:' one built here (implemented: {', '.join(IMPLEMENTED_LLM_BACKBONES)})")


def _dataset_statistics(directory: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The datasets' statistics and where they come from, as errors name it: ``dataset_statistics.json``
    when the directory has one (OpenVLA's ``get_vla`` replaces the model's norm_stats with it), else
    config.json's ``norm_stats``."""
    path = directory / DATASET_STATISTICS
    if not path.is_file():
        return raw["norm_stats"], f"{directory / 'config.json'}'s norm_stats"
    statistics = _read_json(path)  # unreadable JSON: a CheckpointError naming the file
    if not isinstance(statistics, dict) or not statistics:
        raise CheckpointError(f"{path} holds no dataset statistics (a mapping from dataset names to their "
                              f"'action' statistics was expected, got {type(statistics).__name__})")
    print(f"load_openvla: action statistics from {path}; they replace config.json's norm_stats (as OpenVLA's get_vla)")
    return statistics, str(path)


def _chosen_dataset(norm_stats: dict[str, Any], unnorm_key: str | None, source: str) -> str:
    """The dataset whose statistics un-normalise actions (OpenVLA's ``_check_unnorm_key``); ``source``
    names the file the statistics come from. A key that is missing while ``<key>_no_noops`` is present
    means the latter, as OpenVLA's ``run_libero_eval.py`` does with its suite names."""
    if not isinstance(norm_stats, dict) or not norm_stats:
        raise CheckpointError(f"{source} holds no dataset: actions cannot be un-normalised")
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise CheckpointError(f"{source} has norm stats for {sorted(norm_stats)}; pass unnorm_key")
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats and unnorm_key + NO_NOOPS_SUFFIX in norm_stats:
        print(f"load_openvla: unnorm_key {unnorm_key!r} is not in {source}; using {unnorm_key + NO_NOOPS_SUFFIX!r} "
              "(as OpenVLA's LIBERO evaluation does)")
        unnorm_key += NO_NOOPS_SUFFIX
    if unnorm_key not in norm_stats:
        raise CheckpointError(f"unnorm_key {unnorm_key!r} not in {source}, which has {sorted(norm_stats)}")
    return unnorm_key


def _action_stats(norm_stats: dict[str, Any], dataset: str, source: str) -> NormStats:
    stats = norm_stats[dataset]
    if not isinstance(stats, dict) or not isinstance(stats.get("action"), dict):
        raise CheckpointError(f"{source}[{dataset!r}] has no 'action' statistics")
    try:
        return NormStats.from_dict(stats["action"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}[{dataset!r}]['action'] is not usable: {error}") from error


def _normalisation(directory: Path) -> list[tuple[list[float], list[float]]]:
    """Per-tower (mean, std) from ``preprocessor_config.json``'s ``tvf_normalize_params`` (empty if absent)."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return []
    normalisation = []
    for index, params in enumerate(_read_json(path).get("tvf_normalize_params", [])):
        values = [params.get(key) if isinstance(params, dict) else None for key in ("mean", "std")]
        if not all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v) for v in values):
            raise CheckpointError(f"{path}: tvf_normalize_params[{index}] needs 'mean' and 'std', 3 numbers each; "
                                  f"got {params}")
        normalisation.append((values[0], values[1]))
    return normalisation


def openvla_config(directory: str | Path, unnorm_key: str | None = None) -> tuple[VLAConfig, NormStats]:
    """Our ``VLAConfig`` for an OpenVLA checkpoint directory and the action statistics of the dataset
    ``unnorm_key`` names (it may be left out when there is one), read from ``dataset_statistics.json``
    when the directory has it, else from config.json's ``norm_stats``; the action dimension is that
    dataset's, as OpenVLA's ``get_action_dim(unnorm_key)``."""
    from transformers import LlamaConfig

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    raw = _read_json(directory / "config.json")
    for key in ("timm_model_ids", "text_config", "norm_stats", "image_sizes"):
        if key not in raw:
            raise CheckpointError(f"{directory / 'config.json'} has no {key!r}: not an OpenVLA/Prismatic config")
    _check_implemented(raw)
    norm_stats, source = _dataset_statistics(directory, raw)
    dataset = _chosen_dataset(norm_stats, unnorm_key, source)
    action_stats = _action_stats(norm_stats, dataset, source)
    timm_ids = raw["timm_model_ids"]
    if not isinstance(timm_ids, list) or not 1 <= len(timm_ids) <= 2:
        raise CheckpointError(f"timm_model_ids must list one or two timm models, got {timm_ids!r}")
    shapes = _tensor_shapes(_shard_files(directory))
    normalisation = _normalisation(directory)
    towers = []
    for index, (prefix, timm_id) in enumerate(zip(PREFIXES, timm_ids)):
        tower, _ = _tower_config(prefix, timm_id, shapes, normalisation[index] if index < len(normalisation) else None)
        towers.append(tower)
    try:
        text = LlamaConfig(**raw["text_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"text_config is not a Llama config: {error}") from error
    lm = LanguageModelConfig(
        hidden_size=text.hidden_size, num_layers=text.num_hidden_layers, num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads or text.num_attention_heads, intermediate_size=text.intermediate_size,
        vocab_size=text.vocab_size, max_position_embeddings=text.max_position_embeddings,
        rms_norm_eps=text.rms_norm_eps, rope_theta=_rope_theta(text),
        tie_word_embeddings=bool(text.tie_word_embeddings) and "language_model.lm_head.weight" not in shapes,
        attention="sdpa",
    )
    fused = raw.get("use_fused_vision_backbone", len(towers) == 2)
    try:
        config = VLAConfig(
            image_size=int(raw["image_sizes"][0]), resize_mode="bicubic", resize_kernel="pil",
            vision_towers=tuple(towers),
            projector="fused-gelu-mlp" if fused else "gelu-mlp", language_model=lm, tokenizer=str(directory),
            instruction_format="lowercase", append_token_id=OPENVLA_EMPTY_TOKEN,
            action_vocab_size=text.vocab_size - int(raw.get("pad_to_multiple_of", PAD_TO_MULTIPLE_OF)),
            n_action_bins=int(raw.get("n_action_bins", 256)),
            action_dim=action_stats.action_dim, gripper_convention="openvla",
        )
        ActionTokenizer(config.action_vocab_size, action_stats, config.n_action_bins)
    except (TypeError, ValueError, IndexError) as error:
        raise CheckpointError(f"{directory / 'config.json'} does not describe a model built here: {error}") from error
    return config, action_stats


def map_checkpoint_key(key: str, towers: tuple[VisionTowerConfig, ...]) -> list[tuple[str, Any]] | None:
    """Our parameter name(s) for one checkpoint key, each with a function of the tensor;
    ``None`` for keys that are known to be unused."""
    if UNUSED.match(key):
        return None
    for index, prefix in enumerate(PREFIXES):
        if key.startswith(prefix):
            return _map_tower_key(key[len(prefix):], f"vision_backbone.towers.{index}.", towers[index])
    if key.startswith(("projector.", "language_model.")):
        return [(key, lambda t: t)]
    raise CheckpointError(f"unexpected key {key!r} in the checkpoint")


def _map_tower_key(key: str, ours: str, tower: VisionTowerConfig) -> list[tuple[str, Any]] | None:
    dino = tower.kind == "dinov2"
    if key == "patch_embed.proj.weight" or key == "patch_embed.proj.bias":
        suffix = key.rsplit(".", 1)[1]
        name = "embeddings.patch_embeddings.projection." if dino else "embeddings.patch_embedding."
        return [(ours + name + suffix, lambda t: t)]
    if key == "pos_embed":
        if dino:  # no_embed_class: the stored table has no CLS row; HF adds one to the CLS token
            return [(ours + "embeddings.position_embeddings", lambda t: torch.cat([torch.zeros_like(t[:, :1]), t], 1))]
        return [(ours + "embeddings.position_embedding.weight", lambda t: t[0])]
    if key == "cls_token":
        return [(ours + "embeddings.cls_token", lambda t: t)]
    if key == "reg_token":
        return [(ours + "embeddings.register_tokens", lambda t: t)]
    match = re.match(r"blocks\.(\d+)\.(.+)$", key)
    if not match:
        raise CheckpointError(f"unexpected vision key {key!r}")
    block, rest = int(match.group(1)), match.group(2)
    if block >= tower.num_layers:
        return None  # OpenVLA uses the second-to-last block's output: the last block is never run
    layer = ours + (f"encoder.layer.{block}." if dino else f"encoder.layers.{block}.")
    attention = layer + ("attention." if dino else "self_attn.")
    simple = {
        "norm1": "norm1" if dino else "layer_norm1", "norm2": "norm2" if dino else "layer_norm2",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    }
    name, _, suffix = rest.rpartition(".")
    if name in simple:
        return [(layer + simple[name] + "." + suffix, lambda t: t)]
    if name == "attn.qkv":
        return [(f"{attention}{part}_proj.{suffix}", lambda t, i=i: t.chunk(3, dim=0)[i])
                for i, part in enumerate(("q", "k", "v"))]
    if name == "attn.proj":
        return [(attention + ("o_proj." if dino else "out_proj.") + suffix, lambda t: t)]
    if rest in ("ls1.scale_factor", "ls1.gamma", "ls2.scale_factor", "ls2.gamma"):
        return [(layer + f"layer_scale{rest[2]}.lambda1", lambda t: t)]
    raise CheckpointError(f"unexpected vision key {key!r}")


def load_openvla(directory: str | Path, unnorm_key: str | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", center_crop: bool = False) -> tuple[VLAModel, ActionTokenizer]:
    """Build our model from an OpenVLA checkpoint directory; returns it with its action tokenizer.

    ``unnorm_key`` picks the dataset whose action statistics un-normalise actions (needed when the
    checkpoint holds several, as openvla-7b does). ``center_crop``: crop images to their central 90%
    first, as OpenVLA's evaluation does for models fine-tuned with random-crop augmentation (its LIBERO
    fine-tunes); off for the base model.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config, action_stats = openvla_config(directory, unnorm_key)
    config = dataclasses.replace(config, center_crop=center_crop)
    text_tokenizer = _text_tokenizer(directory)
    with _parameters_on_meta():
        model = VLAModel(config, tokenizer=text_tokenizer).to(dtype=dtype)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    _check_shapes(_tensor_shapes(_shard_files(directory)), config, expected)  # before any weight is read
    loaded: set[str] = set()
    for file in _shard_files(directory):
        mapped = {}
        for key, tensor in load_file(str(file)).items():
            for name, transform in map_checkpoint_key(key, config.vision_towers) or ():
                mapped[name] = transform(tensor).to(dtype)
        model.load_state_dict(mapped, strict=False, assign=True)  # the tensors read become the parameters
        loaded |= set(mapped)
    if config.language_model.tie_word_embeddings:  # assigning the embedding replaced the tied parameter
        model.language_model.get_output_embeddings().weight = model.language_model.get_input_embeddings().weight
        loaded.add("language_model.lm_head.weight")
    missing = sorted(k for k in set(expected) - loaded if not NOT_IN_CHECKPOINT.search(k))
    if missing:
        raise CheckpointError(f"{len(missing)} model weights are not in the checkpoint, e.g. {missing[:5]}")
    _materialise_unloaded(model)
    tokenizer = ActionTokenizer(config.action_vocab_size, action_stats, config.n_action_bins)
    return model.to(device).eval(), tokenizer


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device: no memory and no initialisation
    (on meta it does nothing). Buffers stay real, unlike under ``torch.device("meta")``, so the values
    modules compute as they are built (RoPE inverse frequencies, image mean/std) need no re-deriving.
    Only this thread's modules are affected: another thread building a model meanwhile keeps its weights."""
    register = nn.Module.register_parameter
    building_thread = threading.get_ident()

    def register_on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        if parameter is not None and not parameter.is_meta and threading.get_ident() == building_thread:
            parameter = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        register(module, name, parameter)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@torch.no_grad()
def _materialise_unloaded(model: nn.Module) -> None:
    """Parameters the checkpoint does not fill (``NOT_IN_CHECKPOINT``, unused by the forward pass) get the
    values a normal construction gives them: a module's own ``reset_parameters`` when none of its
    parameters was loaded (LayerNorm: ones and zeros), else zeros (DINOv2's ``mask_token``)."""
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        unloaded = [name for name, parameter in own.items() if parameter.is_meta]
        for name in unloaded:
            placeholder = own[name]
            setattr(module, name, nn.Parameter(torch.zeros(placeholder.shape, dtype=placeholder.dtype),
                                               requires_grad=placeholder.requires_grad))
        if unloaded and len(unloaded) == len(own) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _text_tokenizer(directory: Path):
    try:
        return load_tokenizer(str(directory))
    except Exception as error:  # noqa: BLE001 - transformers raises OSError, ValueError, ... for missing files
        raise CheckpointError(f"cannot load the text tokenizer from {directory} (tokenizer files missing or "
                              f"broken?): {type(error).__name__}: {error}") from error


def _check_shapes(shapes: dict[str, tuple[int, ...]], config: VLAConfig, expected: dict[str, tuple[int, ...]]) -> None:
    """Every checkpoint tensor, mapped, has the shape of the model parameter it fills (checked on the
    meta device, before any weight is read)."""
    for key, shape in shapes.items():
        for name, transform in map_checkpoint_key(key, config.vision_towers) or ():
            if name not in expected:
                raise CheckpointError(f"checkpoint key {key!r} maps to {name!r}, which the model does not have")
            try:
                mapped = tuple(transform(torch.empty(shape, device="meta")).shape)
            except (IndexError, RuntimeError) as error:
                raise CheckpointError(f"checkpoint tensor {key!r} has shape {list(shape)}, which does not fit "
                                      f"{name!r} {list(expected[name])}: {error}") from error
            if mapped != expected[name]:
                raise CheckpointError(f"checkpoint tensor {key!r} has shape {list(shape)} (as {name!r}: "
                                      f"{list(mapped)}); the model built from config.json expects "
                                      f"{list(expected[name])}")
