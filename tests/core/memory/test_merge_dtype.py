"""The dtype weight patches are merged in, decided once per device as ComfyUI's
``lora_compute_dtype`` does (float16 where ``should_use_fp16`` holds, float32 on the CPU),
and the arithmetic in that dtype bit for bit: a float16 merge adds each patch's difference
cast to float16, which rounds differently from a float32 merge rounded once at the end."""

from __future__ import annotations

import pytest
import torch
from memory_helpers import bits, make_net
from torch import nn

from loom.memory import (
    DeviceInfo,
    DiffPatch,
    DtypeChoice,
    MemoryManager,
    ModelHandle,
    ScaledLinear,
    ScaledView,
    cpu_device,
    merge_dtype_for,
    ops,
    scale_layers,
    simulated_device,
)
from loom.memory.devices import cuda_prefers_fp16
from loom.memory.merge import MergePatch, patched_tensors
from loom.memory.patches import patched_quantized, patched_weight, quantized_owner
from loom.memory.rounding import round_to

FP8 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2


def _gpu(prefers_fp16: bool, type_: str = "cuda") -> DeviceInfo:
    return DeviceInfo(type=type_, index=0, name="gpu", total_bytes=2**30, prefers_fp16=prefers_fp16)


def test_the_merge_dtype_is_float16_only_where_comfyui_would_compute_in_fp16():
    assert merge_dtype_for(cpu_device()) == torch.float32
    assert merge_dtype_for(simulated_device(2**20)) == torch.float32  # computes on the CPU
    assert merge_dtype_for(_gpu(True)) == torch.float16
    assert merge_dtype_for(_gpu(False)) == torch.float32
    assert merge_dtype_for(_gpu(True, "mps")) == torch.float16
    # --compute-dtype fp16 / fp32 force it on accelerators (ComfyUI's --force-fp16/-fp32)
    assert merge_dtype_for(_gpu(True), DtypeChoice.FP32) == torch.float32
    assert merge_dtype_for(_gpu(False), DtypeChoice.FP16) == torch.float16
    assert merge_dtype_for(cpu_device(), DtypeChoice.FP16) == torch.float32  # never on a CPU
    assert merge_dtype_for(_gpu(True), DtypeChoice.BF16) == torch.float16


@pytest.mark.parametrize(
    ("major", "name", "windows", "expected"),
    [
        (9, "NVIDIA H200", False, True),
        (8, "NVIDIA GeForce RTX 3090", False, True),
        (7, "Tesla V100-SXM2-16GB", False, True),
        (7, "NVIDIA GeForce RTX 2080", False, True),
        (7, "NVIDIA GeForce GTX 1660 SUPER", False, False),  # fp16 broken on these
        (7, "Tesla T1000", False, False),
        (6, "NVIDIA GeForce GTX 1080 Ti", False, False),  # Pascal: fp32 on Linux ...
        (6, "NVIDIA GeForce GTX 1080 Ti", True, True),  # ... fp16 on Windows
        (6, "Quadro GP100", False, False),
        (5, "GeForce GTX 980", True, False),
    ],
)
def test_cuda_gpus_follow_comfyuis_should_use_fp16(major, name, windows, expected):
    assert cuda_prefers_fp16(major, name, windows=windows) is expected


def test_rocm_gpus_always_merge_in_fp16():
    assert cuda_prefers_fp16(5, "AMD Radeon", hip=True)


def _weights(shape=(64, 48), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(shape, generator=g) * 0.05).half()
    # as large as the weights: rounding it to fp16 first then changes some sums
    diff = torch.randn(shape, generator=g) * 0.05
    return weight, diff


def test_an_fp16_merge_adds_each_difference_in_fp16():
    weight, diff = _weights()
    merged = patched_weight(weight, [(DiffPatch(diff), 0.7)], merge_dtype=torch.float16)
    # ComfyUI: w16 = W.to(fp16); w16 += 0.7 * diff.to(fp16); w16.to(stored dtype)
    expected = weight.clone()
    expected += 0.7 * diff.to(torch.float16)
    assert torch.equal(bits(merged), bits(expected))
    float32_merge = patched_weight(weight, [(DiffPatch(diff), 0.7)])
    assert float32_merge.dtype == torch.float16
    assert not torch.equal(bits(merged), bits(float32_merge))  # the dtype matters


def test_a_merge_patch_scales_in_the_merge_dtype():
    weight, other = _weights(seed=1)
    patch = MergePatch(other, (), 0.3, 0.7)
    merged = patched_weight(weight, [(patch, 1.0)], merge_dtype=torch.float16)
    # ComfyUI's ModelMergeSimple: w16 *= 0.3; w16 += 0.7 * other(float32).to(fp16)
    expected = weight.clone()
    expected *= 0.3
    expected += 0.7 * other.to(torch.float16)
    assert torch.equal(bits(merged), bits(expected))


def test_an_fp8_weight_merges_in_fp16_then_rounds_stochastically():
    weight, diff = _weights(seed=2)
    stored = (weight.float() * 20).to(FP8)
    seed = 12345
    merged = patched_weight(
        stored, [(DiffPatch(diff * 20), 1.0)], seed=seed, merge_dtype=torch.float16
    )
    w16 = stored.to(torch.float16)
    w16 += 1.0 * (diff * 20).to(torch.float16)
    assert torch.equal(bits(merged), bits(round_to(w16, FP8, seed)))
    w32 = stored.float() + diff * 20
    assert not torch.equal(bits(merged), bits(round_to(w32, FP8, seed)))


def _scaled_layer(weight: torch.Tensor, scale: float, fmt: str = "float8_e4m3fn") -> nn.Module:
    holder = nn.Module()
    holder.a = ops.Linear(weight.shape[1], weight.shape[0], bias=False)
    source = {
        "a.weight": weight,
        "a.weight_scale": torch.tensor(scale),
        "a.comfy_quant": torch.tensor(list(f'{{"format": "{fmt}"}}'.encode()), dtype=torch.uint8),
    }
    view = ScaledView(source)
    scale_layers(holder, view.layers)
    holder.load_state_dict(dict(view.items()), strict=True, assign=True)
    return holder.a


def _requantized_by_hand(stored, scale, diff, merge, fp8, seed):
    w = stored.to(merge) * torch.tensor(scale).to(merge)  # cast, then dequantise (convert_func)
    w = w + diff.to(merge)
    new_scale = w.abs().amax().to(torch.float32) / torch.finfo(fp8).max
    if merge == torch.float16:
        limits = torch.finfo(torch.float16)
        new_scale = 1.0 / torch.clamp(1.0 / new_scale, min=limits.min, max=limits.max)
    scaled = w * (1.0 / new_scale).to(merge)
    if seed == 0:
        limit = torch.finfo(fp8).max
        return scaled.clamp(-limit, limit).to(fp8), new_scale
    return round_to(scaled, fp8, seed), new_scale


@pytest.mark.parametrize("merge", [torch.float32, torch.float16])
@pytest.mark.parametrize("seed", [0, 987654])
def test_a_scaled_layer_requantises_as_comfyui_in_the_merge_dtype(merge, seed):
    weight, diff = _weights(seed=3)
    stored = (weight.float() * 4000).to(FP8)
    layer = _scaled_layer(stored, 2.5e-4)
    assert isinstance(layer, ScaledLinear)
    owner = quantized_owner(layer, "weight")
    new = patched_quantized(stored, [(DiffPatch(diff), 1.0)], owner, seed=seed, merge_dtype=merge)
    expected, expected_scale = _requantized_by_hand(stored, 2.5e-4, diff, merge, FP8, seed)
    assert torch.equal(bits(new["weight"]), bits(expected))
    assert torch.equal(new["weight_scale"], expected_scale)


def test_seed_zero_rounds_a_scaled_layer_to_nearest():
    weight, diff = _weights(seed=4)
    stored = (weight.float() * 4000).to(FP8)
    owner = quantized_owner(_scaled_layer(stored, 2.5e-4), "weight")
    entries = [(DiffPatch(diff), 1.0)]
    nearest = patched_quantized(stored, entries, owner, seed=0)["weight"]
    stochastic = patched_quantized(stored, entries, owner, seed=1)["weight"]
    merged = stored.float() * 2.5e-4 + diff
    scale = merged.abs().amax() / 448.0
    assert torch.equal(bits(nearest), bits((merged * (1.0 / scale)).clamp(-448, 448).to(FP8)))
    assert not torch.equal(bits(nearest), bits(stochastic))


def test_an_e5m2_scaled_layer_stays_e5m2_and_requantises_to_its_own_range():
    weight, diff = _weights(seed=5)
    stored = (weight.float() * 4000).to(E5M2)
    layer = _scaled_layer(stored, 2.5e-4, "float8_e5m2")
    assert layer.weight.dtype == E5M2
    owner = quantized_owner(layer, "weight")
    new = patched_quantized(stored, [(DiffPatch(diff), 1.0)], owner, seed=77)
    assert new["weight"].dtype == E5M2
    expected, scale = _requantized_by_hand(stored, 2.5e-4, diff, torch.float32, E5M2, 77)
    assert torch.equal(bits(new["weight"]), bits(expected))
    merged = stored.float() * 2.5e-4 + diff
    assert torch.equal(scale, merged.abs().amax() / 57344.0)


def test_an_old_layout_file_of_e5m2_weights_is_cast_to_e4m3fn_as_comfyui_declares_it():
    weight = torch.tensor([[1.0, 500.0], [-0.3, 60000.0]]).to(E5M2)
    source = {
        "scaled_fp8": torch.zeros(0, dtype=E5M2),
        "a.weight": weight,
        "a.scale_weight": torch.tensor(0.5),
    }
    view = ScaledView(source)
    assert view.layers[0].quant_format == "float8_e4m3fn"
    assert view["a.weight"].dtype == FP8
    assert torch.equal(bits(view["a.weight"]), bits(weight.to(FP8)))


def test_the_manager_merges_in_its_devices_merge_dtype():
    net = make_net(dtype=torch.float16)
    handle = ModelHandle(net, compute_dtype=torch.float16).clone()
    key = "blocks.0.weight"
    stored = net.get_parameter(key).detach().clone()
    _, diff = _weights(tuple(stored.shape), seed=6)
    handle.add_patches({key: DiffPatch(diff)}, 0.9)
    mm = MemoryManager(simulated_device(2**22), budget_bytes=2**22)
    assert mm.target_for(handle).merge_dtype == torch.float32
    mm.merge_dtype = torch.float16  # what a CUDA-like device decides (see the tests above)
    assert mm.target_for(handle).merge_dtype == torch.float16
    mm.load([handle])
    expected = stored.clone()
    expected += 0.9 * diff.to(torch.float16)
    assert torch.equal(bits(net.get_parameter(key)), bits(expected))
    # saving merges as loading does (ComfyUI patches on its load device before saving)
    assert torch.equal(bits(patched_tensors(handle)[key]), bits(expected))
    mm.unload_all()
    assert torch.equal(bits(net.get_parameter(key)), bits(stored))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_merge_follows_the_gpus_own_answer():
    from loom.memory import discover_devices

    device = discover_devices()[0]
    assert device.type == "cuda"
    props = torch.cuda.get_device_properties(0)
    assert device.prefers_fp16 == cuda_prefers_fp16(props.major, props.name)
    merge = merge_dtype_for(device)
    net = make_net(dtype=torch.float16)
    handle = ModelHandle(net, compute_dtype=torch.float16).clone()
    key = "blocks.0.weight"
    stored = net.get_parameter(key).detach().clone()
    _, diff = _weights(tuple(stored.shape), seed=6)
    handle.add_patches({key: DiffPatch(diff)}, 0.9)
    mm = MemoryManager(device)
    mm.load([handle])
    w = stored.to("cuda", merge, copy=True)
    w += 0.9 * diff.cuda().to(merge)
    assert torch.equal(bits(net.get_parameter(key)).cpu(), bits(w.half()).cpu())
    mm.unload_all()


#: A layer whose ComfyUI key ``diffusion_model.<name>.weight`` has CRC-32 0 (found by solving
#: the CRC's linear equations over the low bits of the name's letters).
CRC_ZERO_LAYER = "layer_moljlmnklmhh"


def test_a_scaled_layer_whose_key_seeds_zero_is_requantised_to_nearest_on_load():
    from loom.memory.rounding import key_seed

    assert key_seed(f"diffusion_model.{CRC_ZERO_LAYER}.weight") == 0
    weight, diff = _weights(seed=7)
    stored = (weight.float() * 4000).to(FP8)
    holder = nn.Module()
    holder.add_module(CRC_ZERO_LAYER, _scaled_layer(stored, 2.5e-4))
    handle = ModelHandle(holder).clone()
    handle.comfy_prefix = "diffusion_model."
    handle.add_patches({f"{CRC_ZERO_LAYER}.weight": DiffPatch(diff)}, 1.0)
    mm = MemoryManager(simulated_device(2**22), budget_bytes=2**22)
    mm.load([handle])
    layer = holder.get_submodule(CRC_ZERO_LAYER)
    expected, scale = _requantized_by_hand(stored, 2.5e-4, diff, torch.float32, FP8, 0)
    assert torch.equal(bits(layer.weight), bits(expected))
    assert torch.equal(layer.weight_scale, scale)
    mm.unload_all()
    assert torch.equal(bits(layer.weight), bits(stored))


def test_a_plain_fp8_weight_rounds_stochastically_even_with_seed_zero():
    # ComfyUI's stochastic_rounding has no seed-0 case: only quantised layers round to nearest
    weight, diff = _weights(seed=8)
    stored = (weight.float() * 20).to(FP8)
    merged = patched_weight(stored, [(DiffPatch(diff * 20), 1.0)], seed=0)
    exact = stored.float() + diff * 20
    assert torch.equal(bits(merged), bits(round_to(exact, FP8, 0)))
    assert not torch.equal(bits(merged), bits(exact.to(FP8)))
