"""A LoRA on fp8 Flux weights gives ComfyUI 0.7+'s bits (ModelPatcher.patch_weight_to_device).

Plain fp8 (``weight_dtype`` fp8_e4m3fn, or an fp8 file): the weight is merged in float32 and
rounded back to fp8 stochastically, the generator seeded with the CRC-32 of the weight's
ComfyUI key. Scaled fp8 (``weight_scale`` / ``comfy_quant`` layers): the weight is dequantised
(``q * scale``), merged in float32, a new scale ``amax(|merged|) / 448`` is taken, and
``merged * (1 / scale)`` is rounded the same stochastic way. The expected tensors are computed
here by hand from that rule, not with Loom's rounding code.
"""

from __future__ import annotations

import importlib.util
import zlib

import pytest
import torch
from flux_markers import needs_samplers
from loom_flux.tiny import dit_state, save, tiny_spec
from safetensors.torch import save_file

from loom.memory import ScaledLinear
from loom.testing import make_context

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing"
)

FP8 = torch.float8_e4m3fn
LAYER = "double_blocks.0.img_attn.proj"
LORA_LAYER = "lora_unet_double_blocks_0_img_attn_proj"
STRENGTH = 0.8
ALPHA = 1.0  # over rank 2: each delta is scaled by 0.5


def _fp8_stochastic(value: torch.Tensor, seed: int) -> torch.Tensor:
    """ComfyUI's stochastic rounding to float8_e4m3fn, from its description: float16
    arithmetic, exponent clamped to [0, 15] (bias 7), the mantissa in units of 2^-3 plus one
    uniform draw per value, floored; rows in slices of ~4096² values, one CPU generator."""
    generator = torch.Generator().manual_seed(seed)
    rows = value.shape[0]
    size = max(1, round(rows / max(1, value.numel() / 4096**2)))
    parts = []
    for first in range(0, rows, size):
        x = value[first : first + size].half()
        mag = x.abs()
        exp = (torch.floor(torch.log2(mag)) + 7).clamp(0, 15)
        normal = exp > 0
        units = torch.where(normal, (mag / 2.0 ** (exp - 7) - 1.0) * 8, mag / 2.0**-9)
        units = units + torch.rand(units.shape, dtype=units.dtype, generator=generator)
        frac = units.floor() / 8
        out = torch.where(normal, 2.0 ** (exp - 7) * (1.0 + frac), 2.0**-6 * frac)
        out = torch.where(mag == 0, 0, torch.sign(x)) * out
        parts.append(out.clamp(-448, 448).to(FP8))
    return torch.cat(parts)


def _comfy_seed(key: str) -> int:
    return zlib.crc32(key.encode())


def _lora_delta(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """ComfyUI's LoRA term: ``(strength * alpha / rank) * (up @ down)`` in float32."""
    return (STRENGTH * (ALPHA / down.shape[0])) * torch.mm(up, down)


@pytest.fixture
def lora(base_dir) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    up, down = torch.randn(32, 2, generator=g) * 0.1, torch.randn(2, 32, generator=g) * 0.1
    folder = base_dir / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            f"{LORA_LAYER}.lora_up.weight": up,
            f"{LORA_LAYER}.lora_down.weight": down,
            f"{LORA_LAYER}.alpha": torch.tensor(ALPHA),
        },
        str(folder / "l.safetensors"),
    )
    return up, down


@pytest.fixture
def scaled_file(base_dir) -> dict[str, torch.Tensor]:
    """A tiny Flux DiT in ComfyUI's quantisation layout (every 2-D weight fp8 with a scale)."""
    stored: dict[str, torch.Tensor] = {}
    for key, tensor in dit_state(tiny_spec().dit, seed=11).items():
        if tensor.ndim != 2 or not key.endswith(".weight"):
            stored[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        scale = tensor.abs().max().float() / 448.0
        stored[key] = (tensor / scale).to(FP8)
        stored[f"{layer}.weight_scale"] = scale
        stored[f"{layer}.comfy_quant"] = torch.tensor(
            list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8
        )
    save(stored, base_dir / "models" / "diffusion_models" / "tiny-flux-scaled.safetensors")
    return stored


def _patched(runtime, unet: str, weight_dtype: str):
    from loom_lora.nodes import LoraLoaderModelOnly

    from loom.nodes.builtin.loaders import UNETLoader

    ctx = make_context(runtime)
    model = UNETLoader(unet_name=unet, weight_dtype=weight_dtype).run(ctx)
    node = LoraLoaderModelOnly(model=model, lora_name="l.safetensors", strength_model=STRENGTH)
    return model, node.run(ctx)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().view(torch.uint8)


def test_a_lora_on_plain_fp8_weights_rounds_stochastically_by_key(runtime, lora):
    up, down = lora
    model, patched = _patched(runtime, "tiny-flux.safetensors", "fp8_e4m3fn")
    stored = model.module.get_parameter(f"{LAYER}.weight").detach().clone()
    assert stored.dtype == FP8
    merged = stored.float() + _lora_delta(up, down)
    expected = _fp8_stochastic(merged, _comfy_seed(f"diffusion_model.{LAYER}.weight"))
    runtime.memory.load([patched])
    weight = patched.module.get_parameter(f"{LAYER}.weight")
    assert weight.dtype == FP8
    assert torch.equal(_bits(weight), _bits(expected))
    assert not torch.equal(_bits(weight), _bits(merged.to(FP8)))  # not round-to-nearest
    runtime.memory.unload_all()
    assert torch.equal(_bits(model.module.get_parameter(f"{LAYER}.weight")), _bits(stored))


def test_a_lora_on_a_scaled_layer_recalculates_the_scale(runtime, lora, scaled_file):
    up, down = lora
    model, patched = _patched(runtime, "tiny-flux-scaled.safetensors", "default")
    layer = model.module.get_submodule(LAYER)
    assert isinstance(layer, ScaledLinear)
    q, scale = scaled_file[f"{LAYER}.weight"], scaled_file[f"{LAYER}.weight_scale"]
    merged = q.float() * scale + _lora_delta(up, down)
    new_scale = merged.abs().max() / 448.0
    expected = _fp8_stochastic(
        merged * (1.0 / new_scale), _comfy_seed(f"diffusion_model.{LAYER}.weight")
    )
    runtime.memory.load([patched])
    loaded = patched.module.get_submodule(LAYER)
    assert loaded.weight.dtype == FP8
    assert torch.equal(loaded.weight_scale.cpu(), new_scale)
    assert not torch.equal(new_scale, scale)
    assert torch.equal(_bits(loaded.weight.cpu()), _bits(expected))
    # a layer the LoRA does not touch keeps the file's weight and scale
    other = patched.module.get_submodule("double_blocks.0.txt_attn.proj")
    assert torch.equal(
        _bits(other.weight.cpu()), _bits(scaled_file["double_blocks.0.txt_attn.proj.weight"])
    )
    assert torch.equal(
        other.weight_scale.cpu(), scaled_file["double_blocks.0.txt_attn.proj.weight_scale"]
    )
    runtime.memory.unload_all()
    assert torch.equal(_bits(layer.weight), _bits(q))
    assert torch.equal(layer.weight_scale, scale)


def test_a_saved_patched_scaled_model_holds_the_new_scale(runtime, lora, scaled_file):
    from loom.memory.merge import patched_tensors

    up, down = lora
    _model, patched = _patched(runtime, "tiny-flux-scaled.safetensors", "default")
    tensors = patched_tensors(patched)
    q, scale = scaled_file[f"{LAYER}.weight"], scaled_file[f"{LAYER}.weight_scale"]
    merged = q.float() * scale + _lora_delta(up, down)
    new_scale = merged.abs().max() / 448.0
    assert torch.equal(tensors[f"{LAYER}.weight_scale"], new_scale)
    expected = _fp8_stochastic(
        merged * (1.0 / new_scale), _comfy_seed(f"diffusion_model.{LAYER}.weight")
    )
    assert torch.equal(_bits(tensors[f"{LAYER}.weight"]), _bits(expected))


@needs_samplers
def test_a_scaled_fp8_lora_workflow_is_deterministic(runtime, base_dir, lora, scaled_file):
    from test_flux_workflows import custom_advanced, image_of, run

    prompt = custom_advanced()
    prompt["1"]["inputs"]["unet_name"] = "tiny-flux-scaled.safetensors"
    prompt["20"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["1", 0], "lora_name": "l.safetensors", "strength_model": STRENGTH},
    }
    prompt["6"]["inputs"]["model"] = ["20", 0]
    first = image_of(run(runtime, prompt))
    runtime.memory.unload_all()
    second = image_of(run(runtime, prompt))
    assert torch.equal(first, second)
    prompt["20"]["inputs"]["strength_model"] = 0.0
    assert not torch.equal(first, image_of(run(runtime, prompt)))
