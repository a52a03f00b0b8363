"""PerturbedAttentionGuidance: the UNet's per-block self-attention replacement against a hand
perturbation of the middle block's attention, the post-CFG rule, /object_info, and an SD1.5
prompt through the executor with a tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.pag import PerturbedAttention, PerturbedAttentionGuidance, identity_attention
from loom_sd15.unet import UNetConfig, UNetModel
from sd15_markers import needs_samplers
from test_sd15_cfg_nodes import samples_of
from test_sd15_workflows import image_of, run, txt2img

from loom.errors import LoomError
from loom.nodes.builtin.loaders import CheckpointLoaderSimple
from loom.samplers import PostCFGStep, guidance_hooks_of
from loom.testing import make_context

CONFIG = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_levels=(0, 1),
    num_heads=2,
    transformer_depth=2,
    context_dim=16,
)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNetModel(CONFIG).eval()


def inputs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    return x, torch.tensor([500.0]), torch.randn(1, 5, 16, generator=gen)


def test_identity_replacement_equals_a_hand_perturbed_middle_block(unet):
    x, t, context = inputs()
    middle = unet.middle_block[1]

    def value_only(module, args, output):  # attention output = to_out(value)
        return module.to_out(module.to_v(args[0]))

    hooks = [block.attn1.register_forward_hook(value_only) for block in middle.transformer_blocks]
    try:
        with torch.no_grad():
            by_hand = unet(x, t, context)
    finally:
        for hook in hooks:
            hook.remove()
    replacements = {("middle", 0): identity_attention}
    with torch.no_grad():
        plain = unet(x, t, context)
        replaced = unet(x, t, context, self_attention_replacements=replacements)
    torch.testing.assert_close(replaced, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, replaced, atol=1e-4)


def test_replacement_reaches_only_its_block(unet):
    x, t, context = inputs()
    seen = []

    def recording(q, k, v, heads, site):
        seen.append((q.shape, heads))
        return identity_attention(q, k, v, heads, site)

    with torch.no_grad():
        plain = unet(x, t, context)
        unet(x, t, context, self_attention_replacements={("middle", 0): recording})
        seen_middle = list(seen)
        seen.clear()
        unet(x, t, context, self_attention_replacements={("output", 3): recording})
        untouched = unet(x, t, context, self_attention_replacements={("input", 0): recording})
    # the middle transformer's two blocks; the 16-channel level (4x4 tokens) of 2 heads
    assert seen_middle == [(torch.Size([1, 4 * 4, 64]), 2)] * 2
    assert seen == [(torch.Size([1, 8 * 8, 32]), 2)] * 2  # output block 3: full resolution
    assert torch.equal(plain, untouched)  # input block 0 is the stem conv: no attention


@pytest.fixture
def model(runtime):
    return CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(make_context(runtime)).model


def test_post_cfg_rule_is_comfyuis(model):
    gen = torch.Generator().manual_seed(5)
    x, denoised, cond, uncond, perturbed = (torch.randn(1, 4, 4, 4, generator=gen) for _ in "12345")
    given = []

    def predict_positive(handle):
        given.append(handle)
        return perturbed

    step = PostCFGStep(x, torch.tensor([1.0]), denoised, cond, uncond, 7.0, model, predict_positive)
    out = PerturbedAttention(3.0)(step)
    torch.testing.assert_close(out, denoised + (cond - perturbed) * 3.0, rtol=0, atol=1e-6)
    (clone,) = given
    assert clone.is_clone(model) and clone is not model
    assert clone.self_attention_replacements == {("middle", 0): identity_attention}
    assert model.self_attention_replacements == {}
    assert PerturbedAttention(0.0)(step) is denoised  # scale 0: no second evaluation
    assert len(given) == 1


def test_perturbed_prediction_is_the_model_run_with_identity_middle_attention(model):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    sigma = torch.tensor([2.0])
    cond = {"c_crossattn": torch.randn(1, 77, model.config.context_dim, generator=gen)}
    seen = []

    def predict_positive(handle):
        seen.append(handle.apply_model(x, sigma, cond))
        return seen[-1]

    step = PostCFGStep(x, sigma, x, x, x, 1.0, model, predict_positive)
    PerturbedAttention(1.0)(step)
    middle = model.module.middle_block[1]
    hooks = [
        block.attn1.register_forward_hook(lambda m, a, o: m.to_out(m.to_v(a[0])))
        for block in middle.transformer_blocks
    ]
    try:
        by_hand = model.apply_model(x, sigma, cond)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(seen[0], by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seen[0], model.apply_model(x, sigma, cond), atol=1e-5)


def test_node_adds_the_post_cfg_function_to_a_clone(model):
    patched = PerturbedAttentionGuidance(model=model, scale=2.5).run(None)
    assert patched is not model and guidance_hooks_of(model).post_cfg == ()
    assert guidance_hooks_of(patched).post_cfg == (PerturbedAttention(2.5),)


def test_node_on_a_model_without_unet_attention_names_the_node():
    class NotAUNet:
        name = "flux-dit"

    with pytest.raises(LoomError, match="PerturbedAttentionGuidance: the model flux-dit"):
        PerturbedAttentionGuidance(model=NotAUNet(), scale=3.0).run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["PerturbedAttentionGuidance"]
    assert entry["input"]["required"] == {
        "model": ["MODEL", {}],
        "scale": ["FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": 0.01}],
    }
    assert (entry["output"], entry["category"]) == (["MODEL"], "model_patches/unet")
    assert entry["python_module"] == "comfy_extras.nodes_pag"


@needs_samplers
def test_pag_changes_the_image_deterministically(runtime):
    plain = run(runtime, txt2img(steps=2))
    prompt = txt2img(steps=2)
    prompt["20"] = {
        "class_type": "PerturbedAttentionGuidance",
        "inputs": {"model": ["4", 0], "scale": 3.0},
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    first, again = run(runtime, prompt), run(runtime, prompt)
    assert torch.equal(image_of(first), image_of(again))
    changed = (samples_of(first) - samples_of(plain)).abs().mean()
    assert changed > 1e-3 * samples_of(plain).abs().mean(), changed
