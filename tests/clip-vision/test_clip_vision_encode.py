"""CLIP vision and SigLIP towers: config detection, ComfyUI's preprocessing, parity with
transformers at identical weights."""

from __future__ import annotations

import pytest
import torch
from loom_clip_vision.config import CLIP_MEAN, CLIP_STD, vision_config
from loom_clip_vision.model import load_clip_vision
from loom_clip_vision.preprocess import clip_preprocess
from safetensors.torch import load_file

from loom.memory import build_on_meta, read_header
from loom.types import CheckpointHeader, TensorInfo


def _image(batch: int = 2, height: int = 20, width: int = 30, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _reference_pixels(image: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """The preprocessing written out for a ``size`` x ``size`` image (no resampling)."""
    levels = torch.clip(image * 255.0, 0, 255).round() / 255.0
    pixels = levels.movedim(-1, 1)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_clip_tower_matches_transformers(tiny_files):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = tiny_files / "clip_vision" / "tiny-clip-vision.safetensors"
    config = CLIPVisionConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=16,
        image_size=16,
        patch_size=4,
        projection_dim=24,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attn_implementation="eager",
    )
    reference = CLIPVisionModelWithProjection(config).eval()
    missing, unexpected = reference.load_state_dict(load_file(path), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    image = _image(height=16, width=16)

    out = load_clip_vision(read_header(path)).encode_image(image)

    with torch.no_grad():
        ref = reference(
            pixel_values=_reference_pixels(image, 16, CLIP_MEAN, CLIP_STD),
            output_hidden_states=True,
        )
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.penultimate_hidden_states, ref.hidden_states[-2], atol=1e-5, rtol=1e-5
    )
    assert out["image_embeds"] is out.image_embeds
    assert out.image_sizes == [(3, 16, 16)] * 2


def test_siglip_tower_matches_transformers(tiny_files):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    path = tiny_files / "clip_vision" / "tiny-siglip.safetensors"
    config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=16,
        image_size=16,
        patch_size=4,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-5,
        vision_use_head=False,
        attn_implementation="eager",
    )
    reference = SiglipVisionModel(config).eval()
    state = load_file(path)
    if not hasattr(reference, "vision_model"):  # transformers 5: the tower is flat
        state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    image = _image(batch=1, height=16, width=16, seed=3)

    out = load_clip_vision(read_header(path)).encode_image(image)

    with torch.no_grad():
        ref = reference(
            pixel_values=_reference_pixels(image, 16, (0.5,) * 3, (0.5,) * 3),
            output_hidden_states=True,
        )
    # SigLIP: every token after post_layernorm is both the last hidden state and the embeds
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.image_embeds, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.penultimate_hidden_states, ref.hidden_states[-2], atol=1e-5, rtol=1e-5
    )
    assert out.all_hidden_states.shape == (1, 3, 16, 32)
    assert out.last_hidden_state.shape == (1, 16, 32)


def test_preprocess_crop_center_keeps_the_middle_and_none_squashes():
    # 16 x 48: a red left third, green middle, blue right third
    image = torch.zeros(1, 16, 48, 3)
    image[:, :, :16, 0] = 1.0
    image[:, :, 16:32, 1] = 1.0
    image[:, :, 32:, 2] = 1.0
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    center = clip_preprocess(image, 8, mean, std, crop=True)
    squashed = clip_preprocess(image, 8, mean, std, crop=False)

    assert center.shape == squashed.shape == (1, 3, 8, 8)
    # the centre crop of the shorter-side-to-8 resize (8 x 24) is the green band
    torch.testing.assert_close(center[0, 1, :, 2:6], torch.ones(8, 4))
    assert center[0, 0].max() < 0.1 and center[0, 2].max() < 0.1
    # squashed, all three bands are there, left to right
    assert squashed[0, 0, :, 0].min() > 0.9 and squashed[0, 2, :, -1].min() > 0.9


def test_preprocess_drops_alpha_and_quantises_to_8_bit_levels():
    image = torch.full((1, 4, 4, 4), 0.5013)
    image[..., 3] = 0.0
    pixels = clip_preprocess(image, 4, CLIP_MEAN, CLIP_STD)
    expected = (torch.tensor(128 / 255) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(pixels[0, :, 0, 0], expected)


def _header_of(model: torch.nn.Module, flat_siglip: bool = False) -> CheckpointHeader:
    from pathlib import Path

    tensors = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        name = f"vision_model.{key}" if flat_siglip else key
        tensors[name] = TensorInfo("F16", tuple(tensor.shape))
    return CheckpointHeader(Path("real.safetensors"), tensors, {})


@pytest.mark.parametrize(
    ("hidden", "layers", "inner", "projection", "act"),
    [
        (1024, 24, 4096, 768, "quick_gelu"),  # clip_vision_l (ViT-L/14)
        (1280, 32, 5120, 1024, "gelu"),  # clip_vision_h (ViT-H/14)
        (1664, 48, 8192, 1280, "gelu"),  # clip_vision_g (ViT-bigG/14)
    ],
)
def test_real_clip_vision_layouts_are_detected(hidden, layers, inner, projection, act):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=projection,
    )
    model = build_on_meta(CLIPVisionModelWithProjection, config)

    detected = vision_config(_header_of(model))

    assert (detected.kind, detected.hidden_size, detected.num_layers) == ("clip", hidden, layers)
    assert (detected.intermediate_size, detected.projection_dim) == (inner, projection)
    assert (detected.image_size, detected.patch_size, detected.hidden_act) == (224, 14, act)


def test_sigclip_384_for_redux_is_detected():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        vision_use_head=False,
    )
    model = build_on_meta(SiglipVisionModel, config)

    detected = vision_config(_header_of(model, flat_siglip=not hasattr(model, "vision_model")))

    assert detected.kind == "siglip"
    assert (detected.image_size, detected.patch_size, detected.num_layers) == (384, 14, 27)
    assert detected.hidden_act == "gelu_pytorch_tanh" and detected.image_mean == (0.5, 0.5, 0.5)


def _as_openclip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers-layout tower written in OpenCLIP's ``visual.*`` layout."""
    top = {
        "embeddings.class_embedding": "class_embedding",
        "embeddings.patch_embedding.weight": "conv1.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "pre_layrnorm.weight": "ln_pre.weight",
        "pre_layrnorm.bias": "ln_pre.bias",
        "post_layernorm.weight": "ln_post.weight",
        "post_layernorm.bias": "ln_post.bias",
    }
    layer = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc"}
    layer |= {"mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    out = {"visual.proj": state["visual_projection.weight"].t().contiguous()}
    for key, name in top.items():
        out[f"visual.{name}"] = state[f"vision_model.{key}"]
    i = 0
    while f"vision_model.encoder.layers.{i}.layer_norm1.weight" in state:
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for a, b in layer.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{b}.{kind}"] = state[f"{src}{a}.{kind}"]
        for kind in ("weight", "bias"):
            qkv = [state[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
        i += 1
    return out


def test_an_openclip_layout_tower_loads_as_its_transformers_twin(tiny_files, tmp_path):
    from loom.memory import write_safetensors

    path = tiny_files / "clip_vision" / "tiny-clip-vision.safetensors"
    twin = write_safetensors(tmp_path / "openclip.safetensors", _as_openclip(load_file(path)))
    image = _image(batch=1, seed=7)

    expected = load_clip_vision(read_header(path)).encode_image(image)
    got = load_clip_vision(read_header(twin)).encode_image(image)

    assert vision_config(read_header(twin)) == vision_config(read_header(path))
    torch.testing.assert_close(got.image_embeds, expected.image_embeds)
    torch.testing.assert_close(got.penultimate_hidden_states, expected.penultimate_hidden_states)
