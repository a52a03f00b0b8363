"""CheckpointSave, ModelSave, CLIPSave and VAESave on tiny Flux files loaded by the real
loaders: ComfyUI's all-in-one layout (``model.diffusion_model.``, ``text_encoders.clip_l`` /
``text_encoders.t5xxl``, ``vae.``), the separate files CLIPSave writes, and a scaled-fp8 DiT
saved as ComfyUI 0.8 saves it (fp8 weights; an old-layout file's ``scale_weight`` /
``scale_input`` written as ``weight_scale`` / ``input_scale`` with a ``comfy_quant`` config per
layer, no marker), each loading back with exactly the weights the inputs computed with."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from loom_flux.tiny import dit_state, save, tiny_spec
from safetensors import safe_open
from safetensors.torch import load_file

from loom.memory import DiffPatch, ScaledLinear
from loom.nodes.builtin.loaders import (
    CheckpointLoaderSimple,
    DualCLIPLoader,
    UNETLoader,
    VAELoader,
)
from loom.nodes.builtin.model_save import CheckpointSave, CLIPSave, ModelSave, VAESave
from loom.testing import make_context

FP8 = torch.float8_e4m3fn
DIT_KEY = "double_blocks.0.img_attn.proj.weight"
T5_KEY = "encoder.block.0.layer.1.DenseReluDense.wo.weight"


def loaded(runtime, handle) -> dict[str, torch.Tensor]:
    runtime.memory.load([handle])
    state = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
    runtime.memory.unload(handle)
    return state


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, tensor in expected.items():
        assert tensor.dtype == got[key].dtype, key
        assert torch.equal(bits(got[key]), bits(tensor)), key


def _into_models(base_dir, saved, folder: str) -> str:
    target = base_dir / "models" / folder / saved.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(saved, target)
    return saved.name


@pytest.fixture
def ctx(runtime):
    return make_context(runtime)


def _diff(handle, key: str, strength: float = 1.0) -> None:
    shape = handle.module.state_dict()[key].shape
    assert handle.add_patches({key: DiffPatch(torch.randn(shape) * 0.1)}, strength) == [key]


def test_checkpoint_save_writes_comfyui_all_in_one_layout(base_dir, ctx, runtime, tiny_models):
    parts = CheckpointLoaderSimple(ckpt_name="tiny-flux-aio.safetensors").run(ctx)
    model, clip = parts.model.clone(), parts.clip.clone()
    _diff(model, DIT_KEY, 0.5)
    _diff(clip.t5, T5_KEY)
    CheckpointSave(model=model, clip=clip, vae=parts.vae).run(ctx)
    saved = base_dir / "output" / "checkpoints" / "ComfyUI_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        assert f.metadata() == {"prompt": json.dumps({})}  # no modelspec for Flux (ComfyUI)
    original = load_file(str(tiny_models / "checkpoints" / "tiny-flux-aio.safetensors"))
    assert set(load_file(str(saved))) == set(original)

    again = CheckpointLoaderSimple(ckpt_name=_into_models(base_dir, saved, "checkpoints")).run(ctx)
    assert_same(loaded(runtime, again.model), loaded(runtime, model))
    assert_same(loaded(runtime, again.clip.t5), loaded(runtime, clip.t5))
    assert_same(loaded(runtime, again.clip.clip_l.handle), loaded(runtime, clip.clip_l.handle))
    assert_same(loaded(runtime, again.vae.handle), loaded(runtime, parts.vae.handle))
    assert not torch.equal(
        loaded(runtime, again.model)[DIT_KEY], loaded(runtime, parts.model)[DIT_KEY]
    )


def test_clip_save_writes_clip_l_and_t5xxl_files(base_dir, ctx, runtime, tiny_models):
    clip = DualCLIPLoader(
        clip_name1="tiny-t5.safetensors", clip_name2="tiny-clip-l.safetensors", type="flux"
    ).run(ctx)
    patched = clip.clone()
    _diff(patched.t5, T5_KEY)
    CLIPSave(clip=patched).run(ctx)
    folder = base_dir / "output" / "clip"
    t5_file = folder / "ComfyUI_t5xxl_00001_.safetensors"
    l_file = folder / "ComfyUI_clip_l_00001_.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == sorted([l_file.name, t5_file.name])
    with safe_open(str(t5_file), "pt") as f:
        assert f.metadata() == {"format": "pt", "prompt": json.dumps({})}  # ComfyUI's CLIPSave
    text = tiny_models / "text_encoders"
    assert set(load_file(str(t5_file))) == set(load_file(str(text / "tiny-t5.safetensors")))
    assert set(load_file(str(l_file))) == set(load_file(str(text / "tiny-clip-l.safetensors")))
    names = [_into_models(base_dir, p, "text_encoders") for p in (t5_file, l_file)]
    again = DualCLIPLoader(clip_name1=names[0], clip_name2=names[1], type="flux").run(ctx)
    assert_same(loaded(runtime, again.t5), loaded(runtime, patched.t5))
    assert_same(loaded(runtime, again.clip_l.handle), loaded(runtime, clip.clip_l.handle))


def test_vae_save_writes_ae_layout(base_dir, ctx, runtime, tiny_models):
    vae = VAELoader(vae_name="tiny-ae.safetensors").run(ctx)
    VAESave(vae=vae).run(ctx)
    saved = base_dir / "output" / "vae" / "ComfyUI_vae_00001_.safetensors"
    original = load_file(str(tiny_models / "vae" / "tiny-ae.safetensors"))
    assert_same(load_file(str(saved)), original)


def _scaled_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An old-layout scaled-fp8 file: marker, ``scale_weight`` and ``scale_input`` (1.0 for
    every other layer, as in real files, else a calibrated value)."""
    stored: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=FP8)}
    for index, (key, tensor) in enumerate(state.items()):
        if tensor.ndim != 2 or key.startswith(("img_in.", "final_layer.")):
            stored[key] = tensor.to(torch.bfloat16)
            continue
        scale = tensor.abs().max().float() / 448.0
        layer = key.removesuffix(".weight")
        stored[key] = (tensor / scale).to(FP8)
        stored[layer + ".scale_weight"] = scale
        stored[layer + ".scale_input"] = torch.tensor(1.0 if index % 2 else 0.125 + index / 64)
    return stored


def _as_comfyui_saves(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ComfyUI 0.8 writes for ``stored`` (its load-time conversion, then its save): the
    marker gone, ``scale_weight`` as ``weight_scale``, ``scale_input`` as ``input_scale``
    unless exactly 1.0, and ``{"format": "float8_e4m3fn"}`` as each layer's ``comfy_quant``."""
    out: dict[str, torch.Tensor] = {}
    config = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
    for key, tensor in stored.items():
        if key == "scaled_fp8":
            continue
        if key.endswith(".scale_weight"):
            layer = key.removesuffix(".scale_weight")
            out[layer + ".weight_scale"] = tensor
            out[layer + ".comfy_quant"] = config
        elif key.endswith(".scale_input"):
            if tensor.item() != 1.0:
                out[key.removesuffix(".scale_input") + ".input_scale"] = tensor
        else:
            out[key] = tensor
    return out


def test_scaled_fp8_model_saves_as_comfyui_does(base_dir, ctx, runtime):
    stored = _scaled_fp8(dit_state(tiny_spec().dit, seed=11))
    expected = _as_comfyui_saves(stored)
    assert any(k.endswith(".input_scale") for k in expected)
    save(stored, base_dir / "models" / "diffusion_models" / "fp8-scaled.safetensors")
    model = UNETLoader(unet_name="fp8-scaled.safetensors", weight_dtype="default").run(ctx)
    patched = model.clone()
    _diff(patched, DIT_KEY)
    ModelSave(model=patched).run(ctx)
    saved_file = base_dir / "output" / "diffusion_models" / "ComfyUI_00001_.safetensors"
    saved = load_file(str(saved_file))
    prefix = "model.diffusion_model."
    assert set(saved) == {prefix + k for k in expected}
    # the patched layer's weight and scale are requantised (a new scale, as ComfyUI 0.7+)
    patched_scale = DIT_KEY.removesuffix(".weight") + ".weight_scale"
    for key in [k for k in expected if k not in (DIT_KEY, patched_scale)]:
        assert saved[prefix + key].dtype == expected[key].dtype, key
        assert saved[prefix + key].shape == expected[key].shape, key
        assert torch.equal(bits(saved[prefix + key]), bits(expected[key])), key
    assert saved[prefix + DIT_KEY].dtype == FP8
    assert not torch.equal(bits(saved[prefix + DIT_KEY]), bits(stored[DIT_KEY]))
    assert not torch.equal(saved[prefix + patched_scale], expected[patched_scale].reshape(()))

    again = UNETLoader(
        unet_name=_into_models(base_dir, saved_file, "diffusion_models"), weight_dtype="default"
    ).run(ctx)  # ComfyUI's new layout loads too
    assert isinstance(again.module.double_blocks[0].img_attn.proj, ScaledLinear)
    assert_same(loaded(runtime, again), loaded(runtime, patched))


def test_scaled_fp8_t5_saves_as_comfyui_does(base_dir, ctx, runtime):
    from loom_flux.tiny import t5_state

    t5 = t5_state(tiny_spec().t5, seed=3)
    embeddings = ("shared.weight", "relative_attention_bias.weight")  # not linear layers
    stored = _scaled_fp8({k: v for k, v in t5.items() if not k.endswith(embeddings)})
    stored |= {k: v for k, v in t5.items() if k.endswith(embeddings)}
    save(stored, base_dir / "models" / "text_encoders" / "t5-fp8-scaled.safetensors")
    clip = DualCLIPLoader(
        clip_name1="t5-fp8-scaled.safetensors", clip_name2="tiny-clip-l.safetensors", type="flux"
    ).run(ctx)
    CLIPSave(clip=clip).run(ctx)
    t5_file = base_dir / "output" / "clip" / "ComfyUI_t5xxl_00001_.safetensors"
    saved = load_file(str(t5_file))
    expected = _as_comfyui_saves(stored)
    assert set(saved) == set(expected)
    for key, tensor in expected.items():
        assert saved[key].dtype == tensor.dtype, key
        assert saved[key].shape == tensor.shape, key
        assert torch.equal(bits(saved[key]), bits(tensor)), key


def test_fp8_weight_dtype_saves_the_fp8_weights(base_dir, ctx, runtime, tiny_models):
    model = UNETLoader(unet_name="tiny-flux.safetensors", weight_dtype="fp8_e4m3fn").run(ctx)
    ModelSave(model=model, filename_prefix="fp8/dit").run(ctx)
    saved_file = base_dir / "output" / "fp8" / "dit_00001_.safetensors"
    saved = load_file(str(saved_file))
    assert saved["model.diffusion_model." + DIT_KEY].dtype == FP8
    again = UNETLoader(
        unet_name=_into_models(base_dir, saved_file, "diffusion_models"), weight_dtype="default"
    ).run(ctx)
    assert_same(loaded(runtime, again), loaded(runtime, model))
