"""UNetSelfAttentionMultiply, UNetCrossAttentionMultiply and CLIPAttentionMultiply on a tiny
SD1.5 checkpoint loaded by the real loader: the patched clone's weights, once loaded, are the
file's attention projections (weight and bias) times the factors and nothing else changes;
the input handles keep their weights; a prompt through the executor changes deterministically."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from sd15_markers import needs_samplers
from test_sd15_cfg_nodes import samples_of
from test_sd15_workflows import image_of, run, txt2img

from loom.errors import LoomError
from loom.memory import ScalePatch
from loom.nodes.builtin.loaders import CheckpointLoaderSimple
from loom.testing import make_context

UNET = "model.diffusion_model."
CLIP = "cond_stage_model.transformer.text_model."
FACTORS = {"q": 1.5, "k": 0.5, "v": 2.0, "out": 0.25}


@pytest.fixture
def loaded_parts(runtime, tiny_checkpoint):
    ctx = make_context(runtime)
    return ctx, CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    """The handle's weights as its load computes them (patches applied), copied."""
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def expected_factor(key: str, attention: str, projections: dict[str, str]) -> float:
    """The factor ComfyUI's rule gives ``key``: its projection's, for weight and bias alike."""
    for which, projection in projections.items():
        if key.endswith((f"{attention}.{projection}.weight", f"{attention}.{projection}.bias")):
            return FACTORS[which]
    return 1.0


def assert_scaled(state, originals, attention, projections) -> int:
    scaled = 0
    for key, original in originals.items():
        factor = expected_factor(key, attention, projections)
        scaled += factor != 1.0
        torch.testing.assert_close(state[key], original.float() * factor, rtol=0, atol=0, msg=key)
    return scaled


def test_scale_patch_multiplies_and_blends_with_strength():
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ScalePatch(2.5).apply(weight, 1.0), weight * 2.5)
    assert torch.allclose(ScalePatch(3.0).apply(weight, 0.5), weight * 2.0)


@pytest.mark.parametrize(
    ("node", "attention", "other"),
    [
        ("UNetSelfAttentionMultiply", "attn1", "attn2"),
        ("UNetCrossAttentionMultiply", "attn2", "attn1"),
    ],
)
def test_unet_multiply_scales_exactly_the_attention_projections(
    loaded_parts, runtime, tiny_checkpoint, node, attention, other
):
    from loom_sd15 import attention_multiply
    from loom_sd15.attention_multiply import UNET_PROJECTIONS

    ctx, parts = loaded_parts
    unet = {
        k[len(UNET) :]: v for k, v in load_file(str(tiny_checkpoint)).items() if k.startswith(UNET)
    }
    patched = getattr(attention_multiply, node)(model=parts.model, **FACTORS).run(ctx)
    assert patched is not parts.model and patched.is_clone(parts.model)
    state = loaded(runtime, patched)
    scaled = assert_scaled(state, unet, attention, UNET_PROJECTIONS)
    # every transformer block's q, k, v weight and out weight + bias
    blocks = sum(k.endswith(f"{attention}.to_q.weight") for k in unet)
    assert blocks > 0 and scaled == blocks * 5
    assert all(f".{other}." not in key for key in patched.weight_patches)
    assert parts.model.weight_patches == {}
    assert all(torch.equal(v, unet[k]) for k, v in loaded(runtime, parts.model).items())


def test_unet_multiply_at_the_defaults_adds_no_patch(loaded_parts):
    from loom_sd15.attention_multiply import UNetSelfAttentionMultiply

    ctx, parts = loaded_parts
    ones = dict.fromkeys(FACTORS, 1.0)
    assert UNetSelfAttentionMultiply(model=parts.model, **ones).run(ctx).weight_patches == {}


def test_clip_multiply_scales_the_text_encoder_self_attention(
    loaded_parts, runtime, tiny_checkpoint
):
    from loom_sd15.attention_multiply import CLIP_PROJECTIONS, CLIPAttentionMultiply

    ctx, parts = loaded_parts
    file = load_file(str(tiny_checkpoint))
    clip = {k[len(CLIP) :]: v for k, v in file.items() if k.startswith(CLIP)}
    patched = CLIPAttentionMultiply(clip=parts.clip, **FACTORS).run(ctx)
    state = loaded(runtime, patched.handle)
    originals = {k: v for k, v in clip.items() if k in state}
    layers = sum(k.endswith("self_attn.q_proj.weight") for k in originals)
    assert layers > 0
    assert assert_scaled(state, originals, "self_attn", CLIP_PROJECTIONS) == layers * 8
    assert parts.clip.handle.weight_patches == {}
    # the scaled encoder gives another conditioning than the original
    plain = parts.clip.encode("a glass bottle")[0][0]
    scaled = patched.encode("a glass bottle")[0][0]
    assert not torch.allclose(plain, scaled)


def test_unet_multiply_on_a_model_without_weights_names_the_node():
    from loom_sd15.attention_multiply import UNetCrossAttentionMultiply

    class NotAHandle:
        name = "mystery"

    with pytest.raises(LoomError, match="UNetCrossAttentionMultiply: the model mystery"):
        UNetCrossAttentionMultiply(model=NotAHandle(), **FACTORS).run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    info = object_info(runtime.registry, runtime.environment)
    factor = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    for class_type, socket in (
        ("UNetSelfAttentionMultiply", "MODEL"),
        ("UNetCrossAttentionMultiply", "MODEL"),
        ("CLIPAttentionMultiply", "CLIP"),
    ):
        entry = info[class_type]
        first = socket.lower()
        assert entry["input"]["required"] == {
            first: [socket, {}],  # the V3 form: every input carries its options
            "q": factor,
            "k": factor,
            "v": factor,
            "out": factor,
        }, class_type
        assert entry["output"] == [socket]
        assert entry["category"] == "_for_testing/attention_experiments"
        assert entry["python_module"] == "comfy_extras.nodes_attention_multiply"
        assert entry["experimental"] is True


@needs_samplers
@pytest.mark.parametrize(
    ("class_type", "socket"),
    [
        ("UNetSelfAttentionMultiply", "model"),
        ("UNetCrossAttentionMultiply", "model"),
        ("CLIPAttentionMultiply", "clip"),
    ],
)
def test_multiply_nodes_change_the_image_deterministically(runtime, class_type, socket):
    plain = run(runtime, txt2img(steps=2))
    prompt = txt2img(steps=2)
    index = 0 if socket == "model" else 1
    prompt["20"] = {"class_type": class_type, "inputs": {socket: ["4", index], **FACTORS}}
    if socket == "model":
        prompt["3"]["inputs"]["model"] = ["20", 0]
    else:
        prompt["6"]["inputs"]["clip"] = ["20", 0]
        prompt["7"]["inputs"]["clip"] = ["20", 0]
    first, again = run(runtime, prompt), run(runtime, prompt)
    assert torch.equal(image_of(first), image_of(again))
    changed = (samples_of(first) - samples_of(plain)).abs().mean()
    assert changed > 1e-3 * samples_of(plain).abs().mean(), changed
