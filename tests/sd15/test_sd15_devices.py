"""The tiny SD1.5 checkpoint through the real executor on each compute device (CPU here; CUDA /
MPS where present), compared with the CPU in float32; UNet and VAE parity with diffusers there.

TF32 is off for these tests (the ``no_tf32`` fixture), so float32 on a GPU is compared with
the CPU at float32 tolerances (with TF32 on, the VAE parity was 1.3e-4 on an H200).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch
from device_params import DEVICES, memory_manager
from sd15_markers import needs_samplers
from test_sd15_workflows import SIZE, image_of, run, txt2img, write_input_image

from loom.memory import ModelHandle

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]

#: Small enough that the tiny UNet (3.9 MB) does not fit beside its activations (2.7 MB).
STREAMING_BUDGET = 5 * 2**20


@attrs.frozen
class Render:
    images: dict[str, torch.Tensor]
    #: ``(handle name, partial)`` after each ``memory.load`` of the run, in order
    loads: tuple[tuple[str, bool], ...]
    #: device types of the inputs every layer with weights (of every loaded model) was called on
    layer_devices: frozenset[str]


def img2img_tiled() -> dict:
    """img2img from an input image, decoded plainly (node 8) and tiled (node 12)."""
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"] |= {"latent_image": ["11", 0], "denoise": 0.6}
    prompt["12"] = {
        "class_type": "VAEDecodeTiled",
        "inputs": {
            "samples": ["3", 0],
            "vae": ["4", 2],
            "tile_size": 64,
            "overlap": 16,
            "temporal_size": 64,
            "temporal_overlap": 8,
        },
    }
    prompt["13"] = {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "tiled", "images": ["12", 0]},
    }
    return prompt


PROMPTS: dict[str, tuple[Callable[[], dict], tuple[str, ...]]] = {
    "txt2img": (txt2img, ("8",)),
    "img2img-tiled": (img2img_tiled, ("8", "12")),
}


@pytest.fixture(scope="module")
def render(tiny_checkpoint, tmp_path_factory, demo_tokenizers) -> Callable[..., Render]:
    """``render(device, prompt, **settings)``: that prompt's images from a fresh runtime computing
    on ``device`` (``Settings(cpu_only=True)`` for the CPU). Results are kept for the module,
    so the CPU reference of each prompt runs once."""
    from loom.settings import Settings
    from loom.testing import make_runtime

    base = tmp_path_factory.mktemp("sd15-devices")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / "tiny.safetensors").symlink_to(tiny_checkpoint)
    (base / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {demo_tokenizers}\n", encoding="utf-8"
    )
    (base / "input").mkdir()
    cache: dict[Any, Render] = {}

    def render(device: str, prompt: str = "txt2img", **settings: Any) -> Render:
        key = (device, prompt, tuple(sorted(settings.items())))
        if key not in cache:
            runtime = make_runtime(
                "sd15",
                "samplers",
                settings=Settings(
                    base_directory=base,
                    extra_model_paths=[base / "extra_model_paths.yaml"],
                    load_custom_nodes=False,
                    cpu_only=device == "cpu",
                    **settings,
                ),
            )
            memory = runtime.memory
            assert memory.device.type == device
            loads: list[tuple[str, bool]] = []
            layer_devices: set[str] = set()
            hooks: dict[int, list[Any]] = {}
            load = memory.load

            def record(module, args):
                first = next((a for a in args if isinstance(a, torch.Tensor)), None)
                if first is not None:
                    layer_devices.add(first.device.type)

            def spy(handles, extra_memory=0):
                load(handles, extra_memory)
                names = {h.name for h in handles}
                loads.extend(
                    (m.name, m.partial) for m in memory.accounting().models if m.name in names
                )
                for handle in handles:
                    if id(handle.module) not in hooks:
                        hooks[id(handle.module)] = [
                            m.register_forward_pre_hook(record)
                            for m in handle.module.modules()
                            if next(m.parameters(recurse=False), None) is not None
                        ]

            memory.load = spy
            if prompt != "txt2img":
                write_input_image(runtime, "in.png")
            build, nodes = PROMPTS[prompt]
            try:
                result = run(runtime, build())
            finally:
                for hook in (h for module_hooks in hooks.values() for h in module_hooks):
                    hook.remove()
            assert len(hooks) == 3  # CLIP, UNet and VAE were loaded through the manager
            cache[key] = Render(
                {n: image_of(result, n) for n in nodes}, tuple(loads), frozenset(layer_devices)
            )
        return cache[key]

    return render


def _unet_loads(result: Render) -> list[bool]:
    return [partial for name, partial in result.loads if name.startswith("sd15-unet")]


@needs_samplers
def test_txt2img_fp32_matches_cpu(render, device):
    result = render(device, compute_dtype="fp32")
    assert _unet_loads(result) == [False]  # loaded whole on the device
    assert result.layer_devices == {device}
    image = result.images["8"]
    assert image.shape == (1, SIZE, SIZE, 3) and image.device.type == "cpu"
    expected = render("cpu", compute_dtype="fp32").images["8"]
    torch.testing.assert_close(image, expected, atol=1e-4, rtol=0)


@needs_samplers
def test_txt2img_bf16_is_close_to_cpu_fp32(render, device):
    result = render(device, compute_dtype="bf16")
    assert result.layer_devices == {device}
    image = result.images["8"]
    expected = render("cpu", compute_dtype="fp32").images["8"]
    assert torch.isfinite(image).all()
    diff = (image - expected).abs()
    assert diff.max() < 0.1 and diff.mean() < 0.01  # about 0.02 and 0.003 on the CPU
    assert not torch.equal(image, expected)  # bf16 really was used


@needs_samplers
def test_partial_loading_matches_full_load(render, device):
    streamed = render(device, compute_dtype="fp32", vram_budget_bytes=STREAMING_BUDGET)
    assert _unet_loads(streamed) == [True]  # the UNet streamed part of its weights
    # streamed layers too run on the device (a cast layer would follow a CPU input silently)
    assert streamed.layer_devices == {device}
    full = render(device, compute_dtype="fp32")
    # not bitwise: the small budget also makes the sampler run cond and uncond as two
    # batches of one (ComfyUI's batch_fits), which rounds differently (~1e-6)
    torch.testing.assert_close(streamed.images["8"], full.images["8"], atol=1e-5, rtol=0)


@needs_samplers
def test_img2img_and_tiled_decode_match_cpu(render, device):
    result = render(device, "img2img-tiled", compute_dtype="fp32")
    assert result.layer_devices == {device}
    expected = render("cpu", "img2img-tiled", compute_dtype="fp32")
    for node in ("8", "12"):
        image = result.images[node]
        assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()
        torch.testing.assert_close(image, expected.images[node], atol=1e-4, rtol=0)
    # tiles blend at their seams, so the tiled decode is close to the plain one, not equal
    assert 0 < (result.images["12"] - result.images["8"]).abs().max() < 0.5


# --- parity with diffusers on the device ------------------------------------------------


def test_unet_matches_diffusers_on_device(device):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from loom_sd15.convert import unet_conversion
    from loom_sd15.unet import UNetConfig, UNetModel
    from test_sd15_parity import TOL, _randomized

    config = UNetConfig(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        num_heads=4,
        context_dim=48,
    )
    ours = _randomized(UNetModel(config), 0)
    reference = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=48,
        attention_head_dim=4,
        norm_num_groups=32,
    ).eval()
    checkpoint = unet_conversion().to_checkpoint(ours.state_dict())
    converted = convert_ldm_unet_checkpoint(checkpoint, reference.config)
    reference.load_state_dict(converted, strict=True)
    reference.to(device)
    mm = memory_manager(device)
    mm.load([ModelHandle(ours, compute_dtype=torch.float32)])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen).to(device)
    t = torch.tensor([999.0, 17.0], device=device)
    context = torch.randn(2, 77, 48, generator=gen).to(device)
    with torch.no_grad():
        a = ours(x, t, context)
        b = reference(x, t, context).sample
    assert a.device.type == device and b.device.type == device
    assert (a - b).abs().max().item() < TOL
    mm.unload_all()


def test_vae_matches_diffusers_on_device(device):
    pytest.importorskip("diffusers")
    from test_sd15_parity import TOL, _vae_pair

    ours, reference = _vae_pair()
    reference.to(device)
    mm = memory_manager(device)
    mm.load([ModelHandle(ours, compute_dtype=torch.float32)])
    image = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(5)).to(device) * 2 - 1
    with torch.no_grad():
        z_ours = ours.encode(image)
        z_ref = reference.encode(image).latent_dist.mean
        x_ours = ours.decode(z_ours)
        x_ref = reference.decode(z_ours).sample
    assert z_ours.device.type == device and x_ours.device.type == device
    assert (z_ours - z_ref).abs().max().item() < TOL
    assert (x_ours - x_ref).abs().max().item() < TOL
    mm.unload_all()
