"""PatchModelAddDownscale (Kohya deep shrink): the resize at the right block and inside the
percent window, against a hand-patched UNet; the upscale back to the skip; /object_info."""

from __future__ import annotations

import attrs
import pytest
import torch
from loom_sd15.deep_shrink import Downscale, PatchModelAddDownscale, UpscaleToSkip
from loom_sd15.unet import BlockSite, UNetCall, UNetConfig, UNetModel

from loom.errors import LoomError
from loom.resample import common_upscale

CONFIG = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    num_heads=2,
    context_dim=16,
)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNetModel(CONFIG).eval()


def inputs():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    return x, torch.tensor([500.0]), torch.randn(1, 5, 16, generator=gen)


def by_hand(unet, block: int, after_skip: bool, method: str) -> torch.Tensor:
    """The UNet with input block ``block``'s output halved by hand: before the skip keeps it
    (a forward hook), or after (the next block's input, and the skip untouched)."""
    x, t, context = inputs()

    def half(h):
        return common_upscale(h, round(h.shape[-1] / 2), round(h.shape[-2] / 2), method, "disabled")

    if after_skip:
        if block + 1 < len(unet.input_blocks):
            target = unet.input_blocks[block + 1]
        else:
            target = unet.middle_block
        hook = target.register_forward_pre_hook(lambda m, args: (half(args[0]), *args[1:]))
    else:
        hook = unet.input_blocks[block].register_forward_hook(lambda m, a, out: half(out))
    try:
        with torch.no_grad():
            return unet(x, t, context, output_block_patches=[UpscaleToSkip("bilinear")])
    finally:
        hook.remove()


@pytest.mark.parametrize("after_skip", [False, True])
@pytest.mark.parametrize("block", [1, 3])
def test_downscale_at_its_block_inside_the_window_equals_a_hand_patch(unet, block, after_skip):
    x, t, context = inputs()
    rule = Downscale(block, 2.0, sigma_start=5.0, sigma_end=1.0, method="bicubic")
    where = "input_block_patches_after_skip" if after_skip else "input_block_patches"
    patches = {where: [rule], "output_block_patches": [UpscaleToSkip("bilinear")]}
    with torch.no_grad():
        plain = unet(x, t, context)
        inside = unet(x, t, context, call=UNetCall(sigma=torch.tensor([3.0])), **patches)
        outside = unet(x, t, context, call=UNetCall(sigma=torch.tensor([5.5])), **patches)
        edge = unet(x, t, context, call=UNetCall(sigma=torch.tensor([1.0])), **patches)
    torch.testing.assert_close(inside, by_hand(unet, block, after_skip, "bicubic"))
    assert torch.equal(edge, inside)  # the window includes its ends
    assert torch.equal(outside, plain)
    assert not torch.allclose(inside, plain, atol=1e-4)


def test_a_factor_shrinking_the_features_to_nothing_names_the_node():
    rule = Downscale(3, 9.0, sigma_start=5.0, sigma_end=1.0, method="bicubic")
    site = BlockSite(UNetCall(sigma=torch.tensor([2.0])), ("input", 3))
    with pytest.raises(LoomError, match=r"PatchModelAddDownscale: downscale_factor 9\.0"):
        rule(torch.randn(1, 4, 4, 4), site)


def test_upscale_to_skip_only_when_heights_differ():
    h, skip = torch.randn(1, 3, 4, 4), torch.randn(1, 5, 8, 8)
    rule = UpscaleToSkip("nearest-exact")
    up, same_skip = rule(h, skip)
    assert same_skip is skip
    assert torch.equal(up, torch.nn.functional.interpolate(h, size=(8, 8), mode="nearest-exact"))
    level = torch.randn(1, 3, 8, 8)
    assert rule(level, skip)[0] is level


def test_node_turns_percents_into_sigmas_and_picks_the_hook(runtime):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.testing import make_context

    model = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(make_context(runtime)).model
    node = PatchModelAddDownscale(
        model=model,
        block_number=3,
        downscale_factor=2.0,
        start_percent=0.0,
        end_percent=0.35,
        downscale_after_skip=True,
        downscale_method="bicubic",
        upscale_method="bislerp",
    )
    patched = node.run(None)
    (rule,) = patched.input_block_patches_after_skip
    sampling = model.model_sampling
    assert rule == Downscale(
        3, 2.0, sampling.percent_to_sigma(0.0), sampling.percent_to_sigma(0.35), "bicubic"
    )
    assert patched.input_block_patches == () and model.input_block_patches_after_skip == ()
    assert patched.output_block_patches == (UpscaleToSkip("bislerp"),)
    before_skip = attrs.evolve(node, downscale_after_skip=False).run(None)
    assert before_skip.input_block_patches == (rule,)


def test_node_on_a_model_without_input_blocks_names_the_node():
    class NotAUNet:
        name = "flux-dit"

    node = PatchModelAddDownscale(
        model=NotAUNet(),
        block_number=3,
        downscale_factor=2.0,
        start_percent=0.0,
        end_percent=0.35,
        downscale_after_skip=True,
        downscale_method="bicubic",
        upscale_method="bicubic",
    )
    with pytest.raises(LoomError, match="PatchModelAddDownscale: the model flux-dit"):
        node.run(None)


def test_object_info_is_comfyuis(runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(runtime.registry, runtime.environment)["PatchModelAddDownscale"]
    methods = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]
    required = entry["input"]["required"]
    assert list(required) == [
        "model",
        "block_number",
        "downscale_factor",
        "start_percent",
        "end_percent",
        "downscale_after_skip",
        "downscale_method",
        "upscale_method",
    ]
    assert required["block_number"] == ["INT", {"default": 3, "min": 1, "max": 32, "step": 1}]
    assert required["downscale_factor"] == [
        "FLOAT",
        {"default": 2.0, "min": 0.1, "max": 9.0, "step": 0.001},
    ]
    assert required["end_percent"] == [
        "FLOAT",
        {"default": 0.35, "min": 0.0, "max": 1.0, "step": 0.001},
    ]
    assert required["downscale_after_skip"] == ["BOOLEAN", {"default": True}]
    combo = ["COMBO", {"multiselect": False, "options": methods}]
    assert required["downscale_method"] == required["upscale_method"] == combo
    assert (entry["output"], entry["category"]) == (["MODEL"], "model_patches/unet")
    assert entry["display_name"] == "PatchModelAddDownscale (Kohya Deep Shrink)"
    assert entry["python_module"] == "comfy_extras.nodes_model_downscale"
