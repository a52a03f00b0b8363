"""LoraSave ("Extract and Save Lora"): ComfyUI's extraction formula by hand (truncated SVD,
0.99-quantile clamp, fp16), and, on the tiny SD1.5 checkpoint through the executor, a LoRA
extracted from ModelMergeSubtract / CLIPMergeSubtract outputs that LoraLoader reads back:
``full_diff`` reproduces the difference, ``standard`` gives exactly the clamped rank-r factors."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from loom_lora.extract import extract_lora
from safetensors.torch import load_file, save_file

import loom

needs_sd15 = pytest.mark.skipif(
    importlib.util.find_spec("loom_sd15") is None, reason="needs loom-sd15"
)

UNET_LAYERS = (
    "input_blocks.3.1.transformer_blocks.0.attn1.to_q",  # linear
    "input_blocks.3.1.proj_in",  # 1x1 conv
    "input_blocks.1.0.in_layers.2",  # 3x3 conv
)
CLIP_LAYER = "text_model.encoder.layers.0.self_attn.q_proj"


def hand_factors(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's formula written out: SVD, keep ``rank``, clamp both to the 0.99 quantile."""
    matrix = diff.reshape(diff.shape[0], -1).float()
    u, s, vh = torch.linalg.svd(matrix)
    up, down = u[:, :rank] * s[:rank], vh[:rank]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.99)
    return up.clamp(-high, high), down.clamp(-high, high)


def test_extract_lora_is_the_clamped_truncated_svd():
    g = torch.Generator().manual_seed(0)
    diff = torch.randn(12, 10, generator=g)
    for rank in (1, 3, 10, 64):
        up, down = extract_lora(diff, rank)
        r = min(rank, 10)
        assert up.shape == (12, r) and down.shape == (r, 10)
        hand_up, hand_down = hand_factors(diff, r)
        torch.testing.assert_close(up @ down, hand_up @ hand_down, rtol=0, atol=1e-5)
    # the unclamped rank-r truncation is the best rank-r approximation (Eckart-Young): with a
    # diff whose factors stay under the clamp the product is that approximation
    u, s, vh = torch.linalg.svd(diff)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    up, down = extract_lora(diff, 3)
    clamped = (up @ down - best).norm()
    assert (diff - best).norm() <= (diff - up @ down).norm() + 1e-5
    assert torch.isclose((diff - best).norm(), s[3:].norm(), atol=1e-4)
    assert clamped < 0.2 * best.norm()


def test_convolutions_keep_their_kernel_shapes():
    g = torch.Generator().manual_seed(1)
    up, down = extract_lora(torch.randn(6, 4, 3, 3, generator=g), 2)
    assert up.shape == (6, 2, 1, 1) and down.shape == (2, 4, 3, 3)
    up, down = extract_lora(torch.randn(6, 4, 1, 1, generator=g), 2)
    assert up.shape == (6, 2, 1, 1) and down.shape == (2, 4, 1, 1)


def test_object_info_is_comfyuis(lora_runtime):
    from loom.nodes.object_info import object_info

    entry = object_info(lora_runtime.registry, lora_runtime.environment)["LoraSave"]
    assert entry["display_name"] == "Extract and Save Lora"
    assert entry["category"] == "_for_testing" and entry["output_node"] is True
    assert entry["experimental"] is True  # is_experimental=True in ComfyUI's schema
    assert entry["python_module"] == "comfy_extras.nodes_lora_extract"
    required = entry["input"]["required"]
    assert required == {  # the V3 form
        "filename_prefix": [
            "STRING",
            {"default": "loras/ComfyUI_extracted_lora", "multiline": False},
        ],
        "rank": ["INT", {"default": 8, "min": 1, "max": 4096, "step": 1}],
        "lora_type": ["COMBO", {"multiselect": False, "options": ["standard", "full_diff"]}],
        "bias_diff": ["BOOLEAN", {"default": True}],
    }
    assert entry["input"]["optional"] == {
        "model_diff": ["MODEL", {"tooltip": "The ModelSubtract output to be converted to a lora."}],
        "text_encoder_diff": [
            "CLIP",
            {"tooltip": "The CLIPSubtract output to be converted to a lora."},
        ],
    }
    assert entry["output"] == []


def test_a_value_without_checkpoint_weights_names_the_input(lora_runtime):
    from loom_lora.extract import LoraSave

    from loom.testing import make_context

    with pytest.raises(loom.LoomError, match="LoraSave: input 'model_diff'"):
        LoraSave(lora_type="standard", model_diff=object()).run(make_context(lora_runtime))


def test_a_prefix_outside_the_output_folder_is_refused(lora_runtime, tmp_path):
    from loom_lora.extract import LoraSave

    from loom.testing import make_context

    with pytest.raises(loom.LoomError, match="outside the output folder"):
        LoraSave(filename_prefix="../../escape", lora_type="standard", model_diff=object()).run(
            make_context(lora_runtime)
        )
    assert not (tmp_path.parent / "escape_00001_.safetensors").exists()


# --- the tiny SD1.5 checkpoint through the executor ----------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from loom_sd15.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors", seed=0)


def _tuning_lora(checkpoint: Path) -> dict[str, torch.Tensor]:
    """ComfyUI-layout LoRA of rank 2 (small values, exact in fp16 storage)."""
    weights = load_file(str(checkpoint))
    g = torch.Generator().manual_seed(7)
    out = {}
    layers = [(f"diffusion_model.{n}", f"model.diffusion_model.{n}.weight") for n in UNET_LAYERS]
    layers.append(
        (
            f"text_encoders.clip_l.transformer.{CLIP_LAYER}",
            f"cond_stage_model.transformer.{CLIP_LAYER}.weight",
        )
    )
    for name, key in layers:
        shape = weights[key].shape
        kernel = [1, 1] if len(shape) == 4 else []
        out[f"{name}.lora_up.weight"] = torch.randn(shape[0], 2, *kernel, generator=g) * 0.1
        out[f"{name}.lora_down.weight"] = torch.randn(2, *shape[1:], generator=g) * 0.1
    return out


@pytest.fixture
def sd15_runtime(tmp_path, tiny_checkpoint, demo_tokenizers):
    from loom.settings import Settings
    from loom.testing import make_runtime

    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, tmp_path / "models" / "checkpoints" / "tiny.safetensors")
    (tmp_path / "models" / "loras").mkdir(parents=True)
    save_file(
        _tuning_lora(tiny_checkpoint), str(tmp_path / "models" / "loras" / "tune.safetensors")
    )
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {demo_tokenizers}\n", encoding="utf-8"
    )
    return make_runtime(
        "sd15",
        "lora",
        settings=Settings(
            base_directory=tmp_path,
            load_custom_nodes=False,
            cpu_only=True,
            extra_model_paths=[tmp_path / "extra_model_paths.yaml"],
        ),
    )


def _extract(runtime, lora_type: str, rank: int) -> Path:
    from loom.testing import run_prompt

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["1", 0],
                "clip": ["1", 1],
                "lora_name": "tune.safetensors",
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        },
        "3": {
            "class_type": "ModelMergeSubtract",
            "inputs": {"model1": ["2", 0], "model2": ["1", 0], "multiplier": 1.0},
        },
        "4": {
            "class_type": "CLIPMergeSubtract",
            "inputs": {"clip1": ["2", 1], "clip2": ["1", 1], "multiplier": 1.0},
        },
        "5": {
            "class_type": "LoraSave",
            "inputs": {
                "filename_prefix": f"loras/{lora_type}",
                "rank": rank,
                "lora_type": lora_type,
                "bias_diff": True,
                "model_diff": ["3", 0],
                "text_encoder_diff": ["4", 0],
            },
        },
    }
    record = run_prompt(runtime, prompt)
    assert record.ok, record.error
    return runtime.settings.base_directory / "output" / "loras" / f"{lora_type}_00001_.safetensors"


def _reloaded(runtime, saved: Path) -> tuple[dict, dict, dict, dict]:
    """(base UNet, UNet with the saved LoRA, base text encoder, text encoder with it)."""
    from loom_lora.nodes import LoraLoader

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.testing import make_context

    shutil.copy(saved, runtime.settings.base_directory / "models" / "loras" / saved.name)
    ctx = make_context(runtime)
    parts = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    out = LoraLoader(
        model=parts.model,
        clip=parts.clip,
        lora_name=saved.name,
        strength_model=1.0,
        strength_clip=1.0,
    ).run(ctx)

    def state(handle):
        runtime.memory.load([handle])
        tensors = {k: v.detach().clone() for k, v in handle.module.state_dict().items()}
        runtime.memory.unload(handle)
        return tensors

    return (
        state(parts.model),
        state(out.model),
        state(parts.clip.handle),
        state(out.clip.handle),
    )


def _lora_delta(lora: dict, name: str) -> torch.Tensor:
    up, down = lora[f"{name}.lora_up.weight"].float(), lora[f"{name}.lora_down.weight"].float()
    return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


def _clip_key(state: dict) -> str:
    (key,) = (k for k in state if k.endswith(f"{CLIP_LAYER.removeprefix('text_model.')}.weight"))
    return key


@needs_sd15
def test_full_diff_reproduces_the_difference_through_lora_loader(sd15_runtime, tiny_checkpoint):
    saved = _extract(sd15_runtime, "full_diff", 8)
    lora = load_file(str(saved))
    assert all(v.dtype == torch.float16 for v in lora.values())
    tune = _tuning_lora(tiny_checkpoint)
    base, patched, clip_base, clip_patched = _reloaded(sd15_runtime, saved)
    for name in UNET_LAYERS:
        expected = _lora_delta(tune, f"diffusion_model.{name}")
        assert f"diffusion_model.{name}.diff" in lora
        got = patched[f"{name}.weight"] - base[f"{name}.weight"]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert "diffusion_model.input_blocks.1.0.in_layers.2.diff_b" in lora  # bias_diff (zero)
    key = _clip_key(clip_base)
    expected = _lora_delta(tune, f"text_encoders.clip_l.transformer.{CLIP_LAYER}")
    torch.testing.assert_close(clip_patched[key] - clip_base[key], expected, rtol=0, atol=1e-4)
    untouched = "output_blocks.0.0.in_layers.2.weight"
    assert torch.equal(patched[untouched], base[untouched])


@needs_sd15
def test_standard_writes_the_clamped_rank_r_factors(sd15_runtime, tiny_checkpoint):
    saved = _extract(sd15_runtime, "standard", 2)
    lora = load_file(str(saved))
    tune = _tuning_lora(tiny_checkpoint)
    base, patched, _, _ = _reloaded(sd15_runtime, saved)
    for name in UNET_LAYERS:
        layer = f"diffusion_model.{name}"
        diff = _lora_delta(tune, layer)
        up, down = hand_factors(diff, 2)
        written = _lora_delta(lora, layer)
        torch.testing.assert_close(
            written.flatten(1), (up @ down).half().float(), rtol=0, atol=2e-3
        )
        got = patched[f"{name}.weight"] - base[f"{name}.weight"]
        torch.testing.assert_close(got, written, rtol=0, atol=1e-5)
    assert "diffusion_model.input_blocks.1.0.in_layers.0.diff" in lora  # a norm's 1-D weight
    assert f"text_encoders.clip_l.transformer.{CLIP_LAYER}.lora_up.weight" in lora


def test_a_scaled_fp8_difference_is_dequantised_before_the_svd():
    from loom_lora.extract import lora_tensors

    g = torch.Generator().manual_seed(3)
    stored = (torch.randn(12, 10, generator=g) * 100).to(torch.float8_e4m3fn)
    scale = torch.tensor(0.003)
    diffs = {
        "layer.weight": stored,
        "layer.weight_scale": scale,
        "layer.input_scale": torch.tensor(0.5),
        "layer.comfy_quant": torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8),
        "layer.bias": torch.zeros(12),
    }
    out = lora_tensors(diffs, "diffusion_model.", 3, "standard", bias_diff=True)
    assert set(out) == {
        "diffusion_model.layer.lora_up.weight",
        "diffusion_model.layer.lora_down.weight",
        "diffusion_model.layer.diff_b",
    }  # the scales and the config are no weights
    up, down = hand_factors(stored.float() * scale, 3)
    written = out["diffusion_model.layer.lora_up.weight"].float()
    written = written @ out["diffusion_model.layer.lora_down.weight"].float()
    torch.testing.assert_close(written, (up @ down).half().float(), rtol=0, atol=2e-3)
    full = lora_tensors(diffs, "diffusion_model.", 3, "full_diff", bias_diff=False)
    assert torch.equal(full["diffusion_model.layer.diff"], (stored.float() * scale).half())


@needs_sd15
def test_the_difference_is_merged_in_the_devices_merge_dtype(sd15_runtime):
    """ComfyUI loads the difference model onto its device, patches forced, before reading it:
    on a device that merges in fp16 the extracted difference is the fp16-merged one."""
    from loom_lora.extract import LoraSave
    from loom_lora.nodes import LoraLoader

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.nodes.builtin.model_merging import ModelMergeSubtract
    from loom.testing import make_context

    ctx = make_context(sd15_runtime)
    parts = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx)
    tuned = LoraLoader(
        model=parts.model,
        clip=parts.clip,
        lora_name="tune.safetensors",
        strength_model=1.0,
        strength_clip=1.0,
    ).run(ctx)
    diff = ModelMergeSubtract(model1=tuned.model, model2=parts.model, multiplier=1.0).run(ctx)
    key = f"{UNET_LAYERS[0]}.weight"
    saved = {}
    for merge_dtype in (torch.float16, torch.float32):
        sd15_runtime.memory.merge_dtype = merge_dtype  # fp16: what a GPU preferring it decides
        LoraSave(
            filename_prefix=f"loras/{merge_dtype}", lora_type="full_diff", model_diff=diff
        ).run(ctx)
        folder = sd15_runtime.settings.base_directory / "output" / "loras"
        lora = load_file(str(folder / f"{merge_dtype}_00001_.safetensors"))
        saved[merge_dtype] = lora[f"diffusion_model.{UNET_LAYERS[0]}.diff"]
        sd15_runtime.memory.load([diff])
        loaded = diff.module.state_dict()[key].detach().clone()
        sd15_runtime.memory.unload(diff)
        assert torch.equal(saved[merge_dtype], loaded.half())  # what sampling would merge
    assert not torch.equal(saved[torch.float16], saved[torch.float32])
