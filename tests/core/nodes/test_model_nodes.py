"""CLIPTextEncode, CLIPSetLastLayer and the VAE nodes only call the ClipLike / VaeLike protocols."""

from __future__ import annotations

import pytest
import torch
from loom_toy_family import ToyClip, ToyVae, make_registry, run_node

from loom.errors import LoomError
from loom.nodes.builtin.models import CLIP_MISSING
from loom.nodes.object_info import to_json


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def test_clip_text_encode_returns_the_clip_conditioning(registry):
    clip = ToyClip(torch.arange(4.0), "test")
    (cond,) = run_node(registry, "CLIPTextEncode", text="two words", clip=clip)
    assert torch.equal(cond[0][0], torch.arange(4.0).expand(1, 2, 4))


def test_clip_text_encode_without_clip_uses_comfyui_message(registry):
    with pytest.raises(LoomError) as info:
        run_node(registry, "CLIPTextEncode", text="x", clip=None)
    assert (
        info.value.message
        == (
            "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your "
            "checkpoint does not contain a valid clip or text encoder model."
        )
        == CLIP_MISSING
    )
    assert info.value.hint is None  # no prompt to trace the input back through


def test_clip_set_last_layer_clones(registry):
    clip = ToyClip(torch.ones(4), "test")
    (out,) = run_node(registry, "CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-2)
    assert out is not clip and out.layer == -2 and clip.layer == -1
    (cond,) = run_node(registry, "CLIPTextEncode", text="a", clip=out)
    assert torch.equal(cond[0][0], torch.full((1, 1, 4), 2.0))


def test_vae_encode_drops_alpha(registry):
    vae = ToyVae(torch.tensor(1.0), "test")
    image = torch.rand(2, 16, 8, 4)
    (latent,) = run_node(registry, "VAEEncode", pixels=image, vae=vae)
    assert vae.calls == [("encode", (2, 16, 8, 3))]
    assert set(latent) == {"samples"} and latent["samples"].shape == (2, 4, 2, 1)


def test_vae_decode_folds_video_frames_into_the_batch(registry):
    class VideoVae(ToyVae):
        def decode(self, samples):
            return torch.zeros(2, 3, 8, 8, 3)  # [B, T, H, W, C]

    (image,) = run_node(
        registry,
        "VAEDecode",
        samples={"samples": torch.zeros(2, 4, 1, 1)},
        vae=VideoVae(torch.tensor(1.0), "test"),
    )
    assert image.shape == (6, 8, 8, 3)


def test_tiled_nodes_pass_pixel_tile_sizes(registry):
    vae = ToyVae(torch.tensor(1.0), "test")
    samples = {"samples": torch.zeros(1, 4, 2, 2)}
    run_node(
        registry,
        "VAEDecodeTiled",
        samples=samples,
        vae=vae,
        tile_size=512,
        overlap=64,
        temporal_size=64,
        temporal_overlap=8,
    )
    # an overlap over a quarter tile is clamped, as ComfyUI does
    run_node(
        registry,
        "VAEDecodeTiled",
        samples=samples,
        vae=vae,
        tile_size=256,
        overlap=128,
        temporal_size=64,
        temporal_overlap=8,
    )
    (latent,) = run_node(
        registry,
        "VAEEncodeTiled",
        pixels=torch.zeros(1, 16, 16, 4),
        vae=vae,
        tile_size=320,
        overlap=96,
        temporal_size=64,
        temporal_overlap=8,
    )
    tiled = [call for call in vae.calls if call[0].endswith("_tiled")]
    assert tiled == [
        ("decode_tiled", 512, 64),
        ("decode_tiled", 256, 64),
        ("encode_tiled", 320, 96),
    ]
    assert vae.calls[-1] == ("encode", (1, 16, 16, 3))
    assert latent["samples"].shape == (1, 4, 2, 2)


@pytest.mark.parametrize("node", ["VAEDecode", "VAEDecodeTiled"])
def test_missing_vae_uses_comfyui_message(registry, node):
    inputs = {"samples": {"samples": torch.zeros(1, 4, 1, 1)}, "vae": None}
    if node == "VAEDecodeTiled":
        inputs |= {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}
    with pytest.raises(LoomError, match=r"^ERROR: VAE is invalid: None"):
        run_node(registry, node, **inputs)


def test_declarations_match_comfyui(registry):
    encode = to_json(registry.get_node("CLIPTextEncode"), registry)
    assert encode["input"]["required"]["text"] == [
        "STRING",
        {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."},
    ]
    assert encode["input_order"]["required"] == ["text", "clip"]
    assert (encode["category"], encode["display_name"]) == (
        "conditioning",
        "CLIP Text Encode (Prompt)",
    )
    assert encode["description"].startswith("Encodes a text prompt using a CLIP model")
    last = to_json(registry.get_node("CLIPSetLastLayer"), registry)
    assert last["input"]["required"]["stop_at_clip_layer"] == [
        "INT",
        {"default": -1, "min": -24, "max": -1, "step": 1},
    ]
    decode_tiled = to_json(registry.get_node("VAEDecodeTiled"), registry)
    assert decode_tiled["input_order"]["required"] == [
        "samples",
        "vae",
        "tile_size",
        "overlap",
        "temporal_size",
        "temporal_overlap",
    ]
    assert decode_tiled["input"]["required"]["tile_size"] == [
        "INT",
        {"default": 512, "min": 64, "max": 4096, "step": 32},
    ]
    encode_tiled = to_json(registry.get_node("VAEEncodeTiled"), registry)
    assert encode_tiled["input"]["required"]["tile_size"][1]["step"] == 64
    for node, category, display in [
        ("VAEDecode", "latent", "VAE Decode"),
        ("VAEEncode", "latent", "VAE Encode"),
        ("VAEDecodeTiled", "_for_testing", "VAE Decode (Tiled)"),
        ("VAEEncodeTiled", "_for_testing", "VAE Encode (Tiled)"),
    ]:
        info = to_json(registry.get_node(node), registry)
        assert (info["category"], info["display_name"], info["python_module"]) == (
            category,
            display,
            "nodes",
        )
