"""Load a tiny checkpoint written here in OpenVLA's published layout (timm ViT keys, fused
DINOv2 + SigLIP, Llama under language_model.) and check it against an independent reference."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vla_rl.core import ObsBatch
from vla_rl.policy.model import load_tokenizer
from vla_rl.policy.openvla import CheckpointError, load_openvla
from vla_rl.policy.policy import VLAPolicy

IMAGE, PATCH, HEADS = 28, 14, 16  # 2x2 patches; 16 heads as in the real towers
DINO_DIM, SIGLIP_DIM, DEPTH, LLM_DIM = 32, 48, 3, 64
DINO_MEAN, DINO_STD = [0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]


def timm_vit_weights(prefix, dim, dino, generator):
    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=generator) * scale

    patches = (IMAGE // PATCH) ** 2
    weights = {f"{prefix}patch_embed.proj.weight": rand(dim, 3, PATCH, PATCH, scale=0.05),
               f"{prefix}patch_embed.proj.bias": rand(dim), f"{prefix}pos_embed": rand(1, patches, dim),
               f"{prefix}norm.weight": torch.ones(dim), f"{prefix}norm.bias": torch.zeros(dim)}
    if dino:
        weights[f"{prefix}cls_token"] = rand(1, 1, dim)
        weights[f"{prefix}reg_token"] = rand(1, 4, dim)
    else:
        for name, shape in {"latent": (1, 1, dim), "q.weight": (dim, dim), "q.bias": (dim,), "kv.weight": (2 * dim, dim),
                            "kv.bias": (2 * dim,), "proj.weight": (dim, dim), "proj.bias": (dim,), "norm.weight": (dim,),
                            "norm.bias": (dim,), "mlp.fc1.weight": (4 * dim, dim), "mlp.fc1.bias": (4 * dim,),
                            "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,)}.items():
            weights[f"{prefix}attn_pool.{name}"] = rand(*shape)
    for i in range(DEPTH):
        b = f"{prefix}blocks.{i}."
        weights.update({b + "norm1.weight": 1 + rand(dim), b + "norm1.bias": rand(dim),
                        b + "attn.qkv.weight": rand(3 * dim, dim), b + "attn.qkv.bias": rand(3 * dim),
                        b + "attn.proj.weight": rand(dim, dim), b + "attn.proj.bias": rand(dim),
                        b + "norm2.weight": 1 + rand(dim), b + "norm2.bias": rand(dim),
                        b + "mlp.fc1.weight": rand(4 * dim, dim), b + "mlp.fc1.bias": rand(4 * dim),
                        b + "mlp.fc2.weight": rand(dim, 4 * dim), b + "mlp.fc2.bias": rand(dim)})
        if dino:
            weights[b + "ls1.scale_factor"] = 0.5 + rand(dim)
            weights[b + "ls2.scale_factor"] = 0.5 + rand(dim)
    return weights


def timm_reference_features(weights, prefix, pixels, dino):
    """timm's VisionTransformer forward, written out: patch embed, pos embed (no_embed_class for
    DINOv2), prefix tokens, pre-norm blocks with LayerScale, output of the second-to-last block,
    no final norm, prefix tokens dropped."""
    w = lambda name: weights[prefix + name]  # noqa: E731
    x = F.conv2d(pixels, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"), stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + w("pos_embed")
    if dino:
        x = torch.cat([w("cls_token").expand(len(x), -1, -1), w("reg_token").expand(len(x), -1, -1), x], 1)
    batch, tokens, dim = x.shape
    for i in range(DEPTH - 1):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), w(b + "norm1.weight"), w(b + "norm1.bias"), eps=1e-6)
        qkv = F.linear(h, w(b + "attn.qkv.weight"), w(b + "attn.qkv.bias"))
        q, k, v = qkv.reshape(batch, tokens, 3, HEADS, dim // HEADS).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        h = F.linear(h, w(b + "attn.proj.weight"), w(b + "attn.proj.bias"))
        x = x + (h * w(b + "ls1.scale_factor") if dino else h)
        h = F.layer_norm(x, (dim,), w(b + "norm2.weight"), w(b + "norm2.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, w(b + "mlp.fc1.weight"), w(b + "mlp.fc1.bias"))),
                     w(b + "mlp.fc2.weight"), w(b + "mlp.fc2.bias"))
        x = x + (h * w(b + "ls2.scale_factor") if dino else h)
    return x[:, 5:] if dino else x


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("openvla-tiny")
    generator = torch.Generator().manual_seed(0)
    tokenizer = load_tokenizer("builtin:minilm")
    tokenizer.save_pretrained(directory)
    vocab = tokenizer.vocab_size + 64  # padded to a multiple of 64 as OpenVLA does
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    text_config = {"model_type": "llama", "hidden_size": LLM_DIM, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab, "pad_token_id": 0,
                   "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
    llm = LlamaForCausalLM(LlamaConfig(**text_config))
    weights = {f"language_model.{k}": v.clone() for k, v in llm.state_dict().items()}
    weights.update(timm_vit_weights("vision_backbone.featurizer.", DINO_DIM, True, generator))
    weights.update(timm_vit_weights("vision_backbone.fused_featurizer.", SIGLIP_DIM, False, generator))
    fused = DINO_DIM + SIGLIP_DIM
    for name, shape in {"fc1": (4 * fused, fused), "fc2": (LLM_DIM, 4 * fused), "fc3": (LLM_DIM, LLM_DIM)}.items():
        weights[f"projector.{name}.weight"] = torch.randn(*shape, generator=generator) * 0.1
        weights[f"projector.{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.1
    # Two shards plus an index, as published checkpoints are stored.
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, shard_keys in shards.items():
        save_file({k: weights[k].contiguous() for k in shard_keys}, str(directory / name))
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    q01, q99 = [-0.9, -0.8, -0.7, -0.1, -0.2, -0.3, 0.0], [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 1.0]
    config = {
        "model_type": "openvla", "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive", "image_sizes": [IMAGE, IMAGE],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None], "llm_max_length": 2048, "pad_token_id": 0,
        "pad_to_multiple_of": 64, "text_config": text_config, "n_action_bins": 256,
        "norm_stats": {"tabletop": {"action": {"q01": q01, "q99": q99, "mask": [True] * 6 + [False],
                                               "mean": [0.0] * 7, "std": [1.0] * 7, "min": q01, "max": q99},
                                    "num_transitions": 10, "num_trajectories": 1}},
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"tvf_normalize_params": [{"mean": DINO_MEAN, "std": DINO_STD, "inplace": False},
                                  {"mean": [0.5] * 3, "std": [0.5] * 3, "inplace": False}]}))
    return directory, weights


def variant(checkpoint, path, edit_config=None):
    """A copy of the fixture checkpoint in ``path``; ``edit_config(config)`` changes its config.json."""
    directory, _ = checkpoint
    path.mkdir()
    for item in directory.iterdir():
        (path / item.name).write_bytes(item.read_bytes())
    if edit_config is not None:
        config = json.loads((directory / "config.json").read_text())
        edit_config(config)
        (path / "config.json").write_text(json.dumps(config))
    return path


def test_vision_features_match_timm_reference(checkpoint):
    directory, weights = checkpoint
    model, _ = load_openvla(directory)
    images = torch.randint(0, 255, (3, IMAGE, IMAGE, 3), dtype=torch.uint8)
    ours = model.vision_backbone(images)
    pixels = images.permute(0, 3, 1, 2).float() / 255
    dino = (pixels - torch.tensor(DINO_MEAN).view(1, 3, 1, 1)) / torch.tensor(DINO_STD).view(1, 3, 1, 1)
    siglip = (pixels - 0.5) / 0.5
    reference = torch.cat([timm_reference_features(weights, "vision_backbone.featurizer.", dino, True),
                           timm_reference_features(weights, "vision_backbone.fused_featurizer.", siglip, False)], -1)
    assert ours.shape == (3, 4, DINO_DIM + SIGLIP_DIM)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_projector_llm_and_config_are_loaded(checkpoint):
    directory, weights = checkpoint
    model, action_tokenizer = load_openvla(directory)
    state = model.state_dict()
    for key in ("projector.fc3.weight", "language_model.lm_head.weight", "language_model.model.layers.1.mlp.up_proj.weight"):
        torch.testing.assert_close(state[key], weights[key])
    config = model.config
    assert config.projector == "fused-gelu-mlp" and config.append_token_id == 29871
    assert config.action_vocab_size == model.tokenizer.vocab_size and action_tokenizer.vocab_size == config.action_vocab_size
    assert [t.num_layers for t in config.vision_towers] == [DEPTH - 1, DEPTH - 1]  # second-to-last block
    assert config.vision_towers[0].num_register_tokens == 4 and config.vision_towers[1].hidden_act == "gelu"
    np.testing.assert_allclose(action_tokenizer.norm_stats.q99[:3], [0.9, 0.8, 0.7])


def test_loaded_policy_acts(checkpoint):
    directory, _ = checkpoint
    model, action_tokenizer = load_openvla(directory)
    policy = VLAPolicy(model, action_tokenizer)
    obs = ObsBatch({"agentview": np.zeros((2, 64, 64, 3), np.uint8)}, np.zeros((2, 8), np.float32),
                   ["pick up the red block", "open the drawer"])
    out = policy.act(obs, explore=False)
    assert out.actions.shape == (2, 1, 7) and np.all(np.isfinite(out.actions))
    assert model.prompt_ids(["x"])[0][-1] == 29871


def test_broken_checkpoints_are_clear_errors(checkpoint, tmp_path):
    directory, weights = checkpoint
    with pytest.raises(CheckpointError, match="does not exist"):
        load_openvla(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in directory.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    shard = broken / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_openvla(broken)
    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no complete safetensors"):
        load_openvla(broken)
    config = json.loads((directory / "config.json").read_text())
    config["norm_stats"]["other"] = config["norm_stats"]["tabletop"]
    several = tmp_path / "several"
    several.mkdir()
    for item in directory.iterdir():
        (several / item.name).write_bytes(item.read_bytes())
    (several / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="pass unnorm_key"):
        load_openvla(several)
    assert load_openvla(several, unnorm_key="other")[1].action_dim == 7


def test_action_dim_is_the_unnorm_key_datasets(checkpoint, tmp_path):
    def add_six(config):  # "seven" comes first, as openvla-7b lists datasets of other sizes before the chosen one
        seven = config["norm_stats"].pop("tabletop")
        six = {"action": {key: value[:6] for key, value in seven["action"].items()}}
        config["norm_stats"] = {"seven": seven, "six": six}

    directory = variant(checkpoint, tmp_path / "six", add_six)
    model, action_tokenizer = load_openvla(directory, unnorm_key="six")
    assert model.config.action_dim == 6 and action_tokenizer.action_dim == 6
    obs = ObsBatch({"agentview": np.zeros((1, IMAGE, IMAGE, 3), np.uint8)}, np.zeros((1, 8), np.float32),
                   ["pick up the red block"])
    assert VLAPolicy(model, action_tokenizer).act(obs, explore=False).actions.shape == (1, 1, 6)
    assert load_openvla(directory, unnorm_key="seven")[0].config.action_dim == 7


def test_missing_pad_to_multiple_of_is_prismatic_default_64(checkpoint, tmp_path):
    directory = variant(checkpoint, tmp_path / "no-pad", lambda config: config.pop("pad_to_multiple_of"))
    model, action_tokenizer = load_openvla(directory)
    # PrismaticConfig(pad_to_multiple_of=64): action ids count down from vocab_size - 64, the tokenizer's size
    assert model.config.action_vocab_size == model.tokenizer.vocab_size == action_tokenizer.vocab_size


def test_rope_theta_is_read_and_rope_scaling_refused(checkpoint, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    def theta(config):
        config["text_config"]["rope_theta"] = 500000.0

    directory = variant(checkpoint, tmp_path / "theta", theta)
    model, _ = load_openvla(directory)
    assert model.config.language_model.rope_theta == 500000.0
    # the decoder computes what transformers' own Llama with the checkpoint's text_config computes
    text_config = json.loads((directory / "config.json").read_text())["text_config"]
    reference = LlamaForCausalLM(LlamaConfig(**text_config)).eval()
    reference.load_state_dict({k[len("language_model."):]: v for k, v in checkpoint[1].items()
                               if k.startswith("language_model.")})
    ids = torch.randint(0, 1000, (1, 300))  # long enough for the RoPE base to matter
    with torch.no_grad():
        torch.testing.assert_close(model.language_model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)

    def scaled(config):
        config["text_config"]["rope_scaling"] = {"type": "linear", "factor": 2.0}

    with pytest.raises(CheckpointError, match="RoPE scaling 'linear'"):
        load_openvla(variant(checkpoint, tmp_path / "scaled", scaled))


@pytest.mark.parametrize("key, value, message", [
    ("image_resize_strategy", "letterbox", "image_resize_strategy 'letterbox' is not implemented"),
    ("image_resize_strategy", None, "image_resize_strategy 'letterbox'"),  # PrismaticConfig's default
    ("llm_backbone_id", "vicuna-v15-7b", "llm_backbone_id 'vicuna-v15-7b' is not implemented"),  # openvla-v01
    ("llm_backbone_id", "llama2-7b-chat", "llm_backbone_id 'llama2-7b-chat'"),
    ("llm_backbone_id", None, "llm_backbone_id 'vicuna-v15-7b'"),
])
def test_unimplemented_prismatic_options_are_refused(checkpoint, tmp_path, key, value, message):
    def edit(config):
        if value is None:
            del config[key]
        else:
            config[key] = value

    with pytest.raises(CheckpointError, match=message):
        load_openvla(variant(checkpoint, tmp_path / "other", edit))


def _drop_tensor(key):
    def apply(directory):
        _rewrite_shards(directory, lambda tensors: tensors.pop(key, None))
    return apply


def _reshape_tensor(key, *shape):
    def apply(directory):
        def edit(tensors):
            if key in tensors:
                tensors[key] = torch.ones(*shape)
        _rewrite_shards(directory, edit)
    return apply


def _rewrite_shards(directory, edit):
    """Apply ``edit(tensors)`` to every shard's tensors (a dict it changes in place)."""
    from safetensors.torch import load_file

    for shard in directory.glob("*.safetensors"):
        tensors = load_file(str(shard))
        edit(tensors)
        save_file(tensors, str(shard))


def _edit_json(name, edit):
    def apply(directory):
        data = json.loads((directory / name).read_text())
        edit(data)
        (directory / name).write_text(json.dumps(data))
    return apply


def _remove_tokenizer(directory):
    for path in directory.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()


QKV = "vision_backbone.fused_featurizer.blocks.0.attn.qkv.weight"
BROKEN = {  # case: (how the fixture is broken, what the CheckpointError says)
    "missing vision tensor": (_drop_tensor("vision_backbone.featurizer.patch_embed.proj.weight"),
                              "no 'vision_backbone.featurizer.patch_embed.proj.weight'"),
    "index without weight_map": (_edit_json("model.safetensors.index.json", lambda i: i.pop("weight_map")),
                                 "no 'weight_map'"),
    "preprocessor entry without std": (_edit_json("preprocessor_config.json",
                                                  lambda p: p["tvf_normalize_params"][1].pop("std")),
                                       r"tvf_normalize_params\[1\] needs 'mean' and 'std'"),
    "dataset without action": (_edit_json("config.json", lambda c: c["norm_stats"]["tabletop"].pop("action")),
                               r"norm_stats\['tabletop'\] has no 'action'"),
    "action stats without q99": (_edit_json("config.json", lambda c: c["norm_stats"]["tabletop"]["action"].pop("q99")),
                                 "is not usable: .*q99"),
    "empty norm_stats": (_edit_json("config.json", lambda c: c["norm_stats"].clear()), "norm_stats holds no dataset"),
    "wrong-shape tensor": (_reshape_tensor("language_model.model.norm.weight", LLM_DIM + 1),
                           r"'language_model.model.norm.weight' has shape \[65\].*expects \[64\]"),
    "wrong-shape vision tensor": (_reshape_tensor(QKV, 3 * SIGLIP_DIM, SIGLIP_DIM + 1),
                                  rf"'{QKV}' has shape \[144, 49\]"),
    "no tokenizer files": (_remove_tokenizer, "cannot load the text tokenizer"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_is_one_clear_checkpoint_error(checkpoint, tmp_path, case):
    breaker, message = BROKEN[case]
    directory = variant(checkpoint, tmp_path / "broken")
    breaker(directory)
    with pytest.raises(CheckpointError, match=message):
        load_openvla(directory)


@pytest.mark.parametrize("source, target", [(16, IMAGE), (128, 224), (256, 224)])
def test_resizing_matches_pil_bicubic(checkpoint, source, target):
    """OpenVLA's processor resizes with PIL's BICUBIC (a=-0.5 kernel, antialiased), enlarging or not."""
    from PIL import Image

    model, _ = load_openvla(checkpoint[0])
    # a smooth random image: on pixel noise PIL's uint8 clipping between its two 1-D passes dominates
    coarse = np.random.default_rng(source).integers(0, 256, (source // 4, source // 4, 3), dtype=np.uint8)
    image = np.array(Image.fromarray(coarse).resize((source, source), Image.Resampling.BILINEAR))
    pil = np.asarray(Image.fromarray(image).resize((target, target), Image.Resampling.BICUBIC), np.float32) / 255
    ours = model.vision_backbone._resized(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, target)
    error = np.abs(ours[0].permute(1, 2, 0).numpy() - pil) * 255
    # PIL rounds to uint8 and computes in fixed point: ~0.3 mean, ~1.1 max. Torch's plain bicubic (a=-0.75),
    # used when enlarging before, is 0.9-1.1 off on average and up to 6.5
    assert error.mean() < 0.5 and error.max() < 1.5


def test_our_checkpoints_keep_torchs_kernel_when_enlarging():
    from vla_rl.policy.model import VisionBackbone, VisionTowerConfig, VLAConfig

    tower = VisionTowerConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=8)
    backbone = VisionBackbone(VLAConfig(image_size=32, resize_mode="bicubic", vision_towers=(tower,)))
    pixels = torch.rand(1, 3, 16, 16)
    plain = F.interpolate(pixels, size=(32, 32), mode="bicubic", align_corners=False, antialias=False).clamp(0, 1)
    torch.testing.assert_close(backbone._resized(pixels, 32), plain)


def test_openvla_prompt_is_exactly_openvlas(checkpoint):
    import dataclasses

    model, _ = load_openvla(checkpoint[0])
    instruction = "Open the drawer."
    # experiments/robot/openvla_utils.py: f"In: What action should the robot take to {task_label.lower()}?\nOut:"
    prompt = f"In: What action should the robot take to {instruction.lower()}?\nOut:"
    expected = model.tokenizer(prompt, add_special_tokens=False)["input_ids"] + [29871]
    assert model.prompt_ids([instruction]) == [expected]
    # our own checkpoints keep their normalisation (the trailing period dropped)
    model.config = dataclasses.replace(model.config, instruction_format="normalised")
    ours = model.tokenizer("In: What action should the robot take to open the drawer?\nOut:",
                           add_special_tokens=False)["input_ids"] + [29871]
    assert model.prompt_ids([instruction]) == [ours] != [expected]


def test_openvla_gripper_reaches_the_env_as_its_command(checkpoint):
    model, action_tokenizer = load_openvla(checkpoint[0])
    assert model.config.gripper_convention == "openvla"
    policy = VLAPolicy(model, action_tokenizer, seed=0)
    obs = ObsBatch({"agentview": np.random.default_rng(0).integers(0, 255, (16, IMAGE, IMAGE, 3), dtype=np.uint8)},
                   np.zeros((16, 8), np.float32), ["pick up the red block"] * 16)
    out = policy.act(obs, explore=True)
    decoded = action_tokenizer.decode(out.tokens.numpy().reshape(16, 1, 7))  # OpenVLA's [0, 1], 1 = open
    np.testing.assert_array_equal(out.actions[..., :6], decoded[..., :6])
    np.testing.assert_array_equal(out.actions[..., 6], -np.sign(2 * decoded[..., 6] - 1))  # -1 open, +1 close
    assert set(np.unique(out.actions[..., 6])) <= {-1.0, 1.0}


def tf_center_crop_reference(image, size, area=0.9):
    """OpenVLA's evaluation crop written out from tf.image.crop_and_resize's definition: box
    [y1, x1, y2, x2] = central sqrt(area) of each side, output pixel i samples input row
    y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1) bilinearly; then tf.image.convert_image_dtype to
    uint8 (x * 255.5, truncated)."""
    height, width, _ = image.shape
    side = np.sqrt(area)
    low, high = (1 - side) / 2, (1 + side) / 2
    pixels = image.astype(np.float64) / 255
    out = np.zeros((size, size, 3))
    for i in range(size):
        y = low * (height - 1) + i * (high - low) * (height - 1) / (size - 1)
        top, dy = int(np.floor(y)), y - np.floor(y)
        for j in range(size):
            x = low * (width - 1) + j * (high - low) * (width - 1) / (size - 1)
            left, dx = int(np.floor(x)), x - np.floor(x)
            bottom, right = min(top + 1, height - 1), min(left + 1, width - 1)
            upper = pixels[top, left] + (pixels[top, right] - pixels[top, left]) * dx
            lower = pixels[bottom, left] + (pixels[bottom, right] - pixels[bottom, left]) * dx
            out[i, j] = upper + (lower - upper) * dy
    return np.minimum(np.floor(np.clip(out, 0, 1) * 255.5), 255).astype(np.uint8)


def test_center_crop_is_openvlas_evaluation_crop(checkpoint):
    from vla_rl.policy.model import center_crop

    images = np.random.default_rng(5).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    reference = np.stack([tf_center_crop_reference(image, IMAGE) for image in images]).astype(np.int64)
    cropped = center_crop(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, IMAGE)
    levels = (cropped * 255).round().permute(0, 2, 3, 1).numpy().astype(np.int64)
    difference = np.abs(levels - reference)  # float32 against float64 at the truncation: a level, rarely
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005
    cropping, _ = load_openvla(checkpoint[0], center_crop=True)
    plain, _ = load_openvla(checkpoint[0])
    assert cropping.config.center_crop and not plain.config.center_crop
    with torch.no_grad():
        ours = cropping.vision_backbone(torch.from_numpy(images))
        expected = plain.vision_backbone(torch.from_numpy(levels.astype(np.uint8)))  # image_size: no resize
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(ours, plain.vision_backbone(torch.from_numpy(images)), atol=1e-2)


def _other_action_stats(scale):
    """OpenVLA-layout action statistics unlike the fixture's (whose q99 starts 0.9, 0.8, 0.7)."""
    q01, q99 = [-scale] * 6 + [0.0], [scale] * 6 + [1.0]
    return {"action": {"q01": q01, "q99": q99, "min": q01, "max": q99, "mean": [0.0] * 7, "std": [1.0] * 7,
                       "mask": [True] * 6 + [False]}, "num_transitions": 5, "num_trajectories": 1}


def test_dataset_statistics_json_replaces_config_norm_stats(checkpoint, tmp_path, capsys):
    """OpenVLA's get_vla: a fine-tune's dataset_statistics.json replaces the norm_stats of config.json
    (which keeps the base model's: here 'tabletop')."""
    directory = variant(checkpoint, tmp_path / "finetuned")
    statistics = directory / "dataset_statistics.json"
    statistics.write_text(json.dumps({"libero_spatial_no_noops": _other_action_stats(0.25)}))
    _, action_tokenizer = load_openvla(directory)
    np.testing.assert_array_equal(action_tokenizer.norm_stats.q99[:3], [0.25] * 3)
    assert capsys.readouterr().out.count("dataset_statistics.json") == 1  # said once
    # the keys come from the file: the base model's dataset is not among them, and the error names it
    with pytest.raises(CheckpointError, match=r"'tabletop' not in .*dataset_statistics\.json.*libero_spatial_no_noops"):
        load_openvla(directory, unnorm_key="tabletop")
    statistics.write_text(json.dumps({"a": _other_action_stats(0.25), "b": _other_action_stats(0.5)}))
    with pytest.raises(CheckpointError, match=r"dataset_statistics\.json has norm stats for \['a', 'b'\]; pass unnorm_key"):
        load_openvla(directory)
    assert load_openvla(directory, unnorm_key="b")[1].norm_stats.q99[0] == 0.5
    statistics.write_text(json.dumps({"a": {"proprio": {}}}))
    with pytest.raises(CheckpointError, match=r"dataset_statistics\.json\['a'\] has no 'action'"):
        load_openvla(directory)
    statistics.write_text('{"a": {"action": ')
    with pytest.raises(CheckpointError, match=r"dataset_statistics\.json is not valid JSON"):
        load_openvla(directory)
    statistics.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"dataset_statistics\.json holds no dataset statistics"):
        load_openvla(directory)


def test_a_missing_unnorm_key_falls_back_to_its_no_noops_dataset(checkpoint, tmp_path, capsys):
    """OpenVLA's run_libero_eval.py uses '<suite>_no_noops' when '<suite>' is not in the statistics."""
    def add_no_noops(config):
        config["norm_stats"]["libero_goal_no_noops"] = _other_action_stats(0.25)
        config["norm_stats"]["libero_10"] = _other_action_stats(0.5)
        config["norm_stats"]["libero_10_no_noops"] = _other_action_stats(0.75)

    directory = variant(checkpoint, tmp_path / "libero", add_no_noops)
    capsys.readouterr()
    assert load_openvla(directory, unnorm_key="libero_goal")[1].norm_stats.q99[0] == 0.25
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "'libero_goal' is not in" in said and "'libero_goal_no_noops'" in said
    assert load_openvla(directory, unnorm_key="libero_10")[1].norm_stats.q99[0] == 0.5  # present: used as is
    assert "no_noops" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="'libero_object' not in .*config.json's norm_stats"):
        load_openvla(directory, unnorm_key="libero_object")


def test_without_an_index_only_model_safetensors_is_read(checkpoint, tmp_path):
    """As transformers: without an index the weights are model.safetensors; a stray adapter is not read."""
    from safetensors.torch import load_file

    directory = variant(checkpoint, tmp_path / "single")
    merged = {}
    for shard in sorted(directory.glob("model-*.safetensors")):
        merged.update(load_file(str(shard)))
        shard.unlink()
    (directory / "model.safetensors.index.json").unlink()
    save_file(merged, str(directory / "model.safetensors"))
    save_file({"base_model.model.lora_A.weight": torch.zeros(2, 2)}, str(directory / "adapter_model.safetensors"))
    model, _ = load_openvla(directory)
    torch.testing.assert_close(model.state_dict()["projector.fc3.weight"], checkpoint[1]["projector.fc3.weight"])
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"neither model\.safetensors\.index\.json nor model\.safetensors "
                                              r"\(it holds: adapter_model\.safetensors, config\.json"):
        load_openvla(directory)


def _normally_built(directory, weights):
    """The model the loader used to build: constructed with random weights on the CPU, then filled."""
    from vla_rl.policy.model import VLAModel
    from vla_rl.policy.openvla import map_checkpoint_key, openvla_config

    config, _ = openvla_config(directory)
    model = VLAModel(config, tokenizer=load_tokenizer(str(directory)))
    state = {}
    for key, tensor in weights.items():
        for name, transform in map_checkpoint_key(key, config.vision_towers) or ():
            state[name] = transform(tensor)
    model.load_state_dict(state, strict=False)
    return model.eval()


@pytest.mark.parametrize("tied", [False, True])
def test_loading_builds_on_meta_and_equals_a_normal_construction(checkpoint, tmp_path, monkeypatch, tied):
    import vla_rl.policy.openvla as openvla

    directory, weights = checkpoint
    if tied:  # an embedding shared with the LM head: no lm_head tensor in the checkpoint
        def tie(config):
            config["text_config"]["tie_word_embeddings"] = True
        directory = variant(checkpoint, tmp_path / "tied", tie)
        _rewrite_shards(directory, lambda tensors: tensors.pop("language_model.lm_head.weight", None))
        weights = {k: v for k, v in weights.items() if k != "language_model.lm_head.weight"}
    devices_when_built = []

    class Recording(openvla.VLAModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            devices_when_built.append({parameter.device.type for parameter in self.parameters()})

    monkeypatch.setattr(openvla, "VLAModel", Recording)
    model, _ = load_openvla(directory)
    assert devices_when_built == [{"meta"}]  # no full-size model with random weights first
    reference = _normally_built(directory, weights)
    ours = dict(model.named_parameters(remove_duplicate=False))
    theirs = dict(reference.named_parameters(remove_duplicate=False))
    assert ours.keys() == theirs.keys()
    for name, parameter in ours.items():  # the unused norms and mask token included
        assert torch.equal(parameter, theirs[name]) and parameter.requires_grad == theirs[name].requires_grad, name
    buffers = dict(reference.named_buffers())  # non-persistent: RoPE frequencies, image mean/std, position ids
    assert dict(model.named_buffers()).keys() == buffers.keys()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    if tied:
        assert model.language_model.lm_head.weight is model.language_model.model.embed_tokens.weight
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, IMAGE, IMAGE, 3), dtype=np.uint8))
    ids = torch.randint(0, 1000, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.vision_backbone(images), reference.vision_backbone(images))
        assert torch.equal(model.language_model(ids).logits, reference.language_model(ids).logits)
