"""LoRAs on the tiny SD1.5 model through the real executor: kohya and diffusers layouts give
the same image, unload restores the base weights bitwise, prompts do not leak.

Skips unless loom-sd15, loom-samplers and the CLIP-L tokenizer files are available.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("loom_sd15", "loom_samplers")),
    reason="needs loom-sd15 and loom-samplers",
)

TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tokenizers"
if not (TOKENIZERS / "clip_l" / "vocab.json").is_file():
    TOKENIZERS = Path("/work/shared/data/tokenizers")
if not (TOKENIZERS / "clip_l" / "vocab.json").is_file():
    pytestmark = pytest.mark.skip(reason="CLIP-L tokenizer files not available")

SIZE = 64
RANK = 4
#: UNet layers the test LoRA touches (LDM names): attention, 1x1 conv, 3x3 conv, feed-forward.
UNET_LAYERS = (
    "input_blocks.3.1.transformer_blocks.0.attn1.to_q",
    "input_blocks.3.1.transformer_blocks.0.attn2.to_k",
    "input_blocks.3.1.transformer_blocks.0.attn1.to_out.0",
    "input_blocks.3.1.proj_in",
    "middle_block.1.transformer_blocks.0.ff.net.2",
    "middle_block.0.in_layers.2",
    "output_blocks.1.1.transformer_blocks.0.attn2.to_v",
    "output_blocks.3.0.out_layers.3",
    "output_blocks.1.2.conv",
    "input_blocks.1.0.in_layers.2",
)
CLIP_LAYERS = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from loom_sd15.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-sd15.safetensors", seed=0)


@pytest.fixture(scope="module")
def shapes(tiny_checkpoint) -> dict[str, tuple[int, ...]]:
    from loom.memory import open_safetensors

    return {k: tuple(v.shape) for k, v in open_safetensors(tiny_checkpoint).items()}


def make_lora(shapes, seed: int, *, layout: str, unet=UNET_LAYERS, clip=CLIP_LAYERS) -> dict:
    """Random rank-4 LoRA weights for ``unet`` and ``clip`` layers in ``layout``
    (``"kohya"``, ``"diffusers"`` or ``"comfy"``); the same seed gives the same tensors."""
    from loom_sd15.adapter_keys import unet_diffusers_names
    from loom_sd15.tiny import tiny_spec

    diffusers = unet_diffusers_names(tiny_spec().unet)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    layers = [("unet", name, shapes[f"model.diffusion_model.{name}.weight"]) for name in unet]
    layers += [
        ("clip", name, shapes[f"cond_stage_model.transformer.text_model.{name}.weight"])
        for name in clip
    ]
    for part, name, shape in layers:
        down = torch.randn(RANK, shape[1], *shape[2:], generator=gen) * 0.3
        up = torch.randn(shape[0], RANK, *([1, 1] if len(shape) == 4 else []), generator=gen) * 0.3
        if layout == "kohya":
            flat = (diffusers[name] if part == "unet" else f"text_model.{name}").replace(".", "_")
            base = ("lora_unet_" if part == "unet" else "lora_te_") + flat
            out |= {
                f"{base}.lora_up.weight": up,
                f"{base}.lora_down.weight": down,
                f"{base}.alpha": torch.tensor(float(RANK)),
            }  # alpha = rank: scale 1
        elif layout == "diffusers":  # PEFT names, no alpha (scale 1)
            base = (
                f"unet.{diffusers[name]}" if part == "unet" else f"text_encoder.text_model.{name}"
            )
            out |= {f"{base}.lora_B.weight": up, f"{base}.lora_A.weight": down}
        else:  # ComfyUI's own layout
            base = (
                f"diffusion_model.{name}"
                if part == "unet"
                else f"text_encoders.clip_l.transformer.text_model.{name}"
            )
            out |= {f"{base}.lora_up.weight": up, f"{base}.lora_down.weight": down}
    return out


@pytest.fixture
def base_dir(tmp_path, tiny_checkpoint, shapes) -> Path:
    from safetensors.torch import save_file

    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    try:
        os.link(tiny_checkpoint, checkpoints / "tiny.safetensors")
    except OSError:
        shutil.copy(tiny_checkpoint, checkpoints / "tiny.safetensors")
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    for layout in ("kohya", "diffusers", "comfy"):
        save_file(make_lora(shapes, 1, layout=layout), str(loras / f"a_{layout}.safetensors"))
    save_file(make_lora(shapes, 2, layout="kohya"), str(loras / "b_kohya.safetensors"))
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {TOKENIZERS}\n", encoding="utf-8"
    )
    return tmp_path


def make_runtime(base_dir: Path):
    from loom.runtime import Runtime
    from loom.settings import Settings

    return Runtime(
        Settings(
            base_directory=base_dir,
            load_custom_nodes=False,
            cpu_only=True,
            extra_model_paths=[base_dir / "extra_model_paths.yaml"],
        )
    )


@pytest.fixture
def runtime(base_dir):
    return make_runtime(base_dir)


def txt2img(*loras: tuple[str, float, float]) -> dict:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle", "clip": None}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": None}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 3,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": None,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }
    model, clip = ["4", 0], ["4", 1]
    for index, (name, strength_model, strength_clip) in enumerate(loras):
        node = str(20 + index)
        prompt[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": name,
                "strength_model": strength_model,
                "strength_clip": strength_clip,
            },
        }
        model, clip = [node, 0], [node, 1]
    prompt["3"]["inputs"]["model"] = model
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = clip
    return prompt


def run(executor, prompt: dict):
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result


def image(executor, *loras) -> torch.Tensor:
    return run(executor, txt2img(*loras)).values["8"][0][0]


@pytest.fixture
def executor(runtime):
    from loom.executor.executor import Executor

    return Executor(runtime)


def test_kohya_lora_changes_the_image_and_other_layouts_give_the_same_one(executor):
    base = image(executor)
    kohya = image(executor, ("a_kohya.safetensors", 1.0, 1.0))
    assert not torch.equal(base, kohya)
    assert (base - kohya).abs().max() > 1e-3
    assert torch.equal(kohya, image(executor, ("a_diffusers.safetensors", 1.0, 1.0)))
    assert torch.equal(kohya, image(executor, ("a_comfy.safetensors", 1.0, 1.0)))


def test_model_and_clip_strengths_each_matter_and_negative_strength_works(executor):
    base = image(executor)
    both = image(executor, ("a_kohya.safetensors", 1.0, 1.0))
    model_only = image(executor, ("a_kohya.safetensors", 1.0, 0.0))
    clip_only = image(executor, ("a_kohya.safetensors", 0.0, 1.0))
    negative = image(executor, ("a_kohya.safetensors", -1.0, -1.0))
    images = [base, both, model_only, clip_only, negative]
    assert all(not torch.equal(a, b) for i, a in enumerate(images) for b in images[i + 1 :])


def test_strength_zero_is_bitwise_identical_to_no_lora(executor):
    assert torch.equal(image(executor), image(executor, ("a_kohya.safetensors", 0.0, 0.0)))


def test_unload_after_a_lora_run_restores_the_base_weights_bitwise(
    runtime, executor, tiny_checkpoint
):
    from loom.memory import open_safetensors

    result = run(
        executor, txt2img(("a_kohya.safetensors", 1.0, 1.0), ("b_kohya.safetensors", -0.5, 2.0))
    )
    model, clip = result.values["4"][0][0], result.values["4"][1][0]
    runtime.memory.unload_all()
    stored = open_safetensors(tiny_checkpoint)
    unet = model.module.state_dict()
    assert len(unet) > 100
    for key, value in unet.items():
        assert torch.equal(
            value.view(torch.int32), stored[f"model.diffusion_model.{key}"].view(torch.int32)
        ), key
    text = clip.handle.module.state_dict()
    assert len(text) > 20
    for key, value in text.items():
        if key.endswith("position_ids"):  # a buffer, not stored
            continue
        name = key.removeprefix("text_model.")
        original = stored[f"cond_stage_model.transformer.text_model.{name}"]
        assert torch.equal(value.view(torch.int32), original.view(torch.int32)), key


def test_two_prompts_with_different_loras_on_one_checkpoint_do_not_leak(base_dir, executor):
    from loom.executor.executor import Executor

    base = image(executor)
    a = image(executor, ("a_kohya.safetensors", 1.0, 1.0))
    b = image(executor, ("b_kohya.safetensors", 1.0, 1.0))
    assert torch.equal(image(executor), base)
    assert torch.equal(image(executor, ("a_kohya.safetensors", 1.0, 1.0)), a)
    fresh = Executor(make_runtime(base_dir))  # b alone, in a runtime that never saw a
    assert torch.equal(image(fresh, ("b_kohya.safetensors", 1.0, 1.0)), b)


def test_stacked_loras_differ_from_each_alone(executor):
    a = image(executor, ("a_kohya.safetensors", 1.0, 1.0))
    b = image(executor, ("b_kohya.safetensors", 1.0, 1.0))
    both = image(executor, ("a_kohya.safetensors", 1.0, 1.0), ("b_kohya.safetensors", 1.0, 1.0))
    assert not torch.equal(both, a) and not torch.equal(both, b)
