"""ComfyUI's hooks on the tiny SD1.5 model through the real executor (fp32, CPU): a LoRA
hook on every entry equals LoraLoaderModelOnly, a hook on the positive alone is its own
image, keyframes switch the hook off mid-run exactly like two KSamplerAdvanced halves,
SetClipHooks equals LoraLoader's CLIP, and bad wiring gives a message naming node and input.

Skips unless loom-sd15 and loom-samplers are installed.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("loom_sd15", "loom_samplers")),
    reason="needs loom-sd15 and loom-samplers",
)

from test_lora_sd15 import (  # noqa: E402  (same-folder helpers and fixtures)
    SIZE,
    base_dir,  # noqa: F401
    make_runtime,
    shapes,  # noqa: F401
    tiny_checkpoint,  # noqa: F401
)

STEPS = 4


@pytest.fixture
def executor(base_dir):  # noqa: F811
    from loom_sd15.tiny import write_tiny_checkpoint
    from safetensors.torch import save_file

    from loom.executor.executor import Executor

    write_tiny_checkpoint(base_dir / "models" / "checkpoints" / "tiny2.safetensors", seed=1)
    # a LoRA whose layers have other shapes (as one for another family): it fits nothing
    wrong = {
        "lora_unet_input_blocks_1_0_proj_in.lora_up.weight": torch.randn(7, 2),
        "lora_unet_input_blocks_1_0_proj_in.lora_down.weight": torch.randn(2, 5),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(7, 2),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(2, 5),
    }
    save_file(wrong, str(base_dir / "models" / "loras" / "other_family.safetensors"))
    return Executor(make_runtime(base_dir))


def base_prompt() -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a glass bottle", "clip": ["4", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": STEPS,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }


def run(executor, prompt: dict, node: str = "8"):
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result.values[node][0][0]


def run_error(executor, prompt: dict) -> str:
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is not None
    return result.error["exception_message"]


def with_hook(prompt: dict, *, on: tuple[str, ...], lora: str = "a_kohya.safetensors") -> dict:
    """The LoRA as a hook (CreateHookLoraModelOnly) set on the conditionings ``on``."""
    prompt["30"] = {
        "class_type": "CreateHookLoraModelOnly",
        "inputs": {"lora_name": lora, "strength_model": 1.0},
    }
    for index, source in enumerate(on):
        node = str(31 + index)
        prompt[node] = {
            "class_type": "ConditioningSetProperties",
            "inputs": {
                "cond_NEW": [source, 0],
                "strength": 1.0,
                "set_cond_area": "default",
                "hooks": ["30", 0],
            },
        }
        key = "positive" if source == "6" else "negative"
        prompt["3"]["inputs"][key] = [node, 0]
    return prompt


def with_lora_model_only(prompt: dict) -> dict:
    prompt["20"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["4", 0], "lora_name": "a_kohya.safetensors", "strength_model": 1.0},
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


def test_lora_hook_on_both_conditionings_equals_lora_loader_model_only(executor):
    hooked = run(executor, with_hook(base_prompt(), on=("6", "7")))
    loader = run(executor, with_lora_model_only(base_prompt()))
    base = run(executor, base_prompt())
    assert (hooked - base).abs().max() > 1e-3
    assert torch.allclose(hooked, loader, atol=1e-5, rtol=0)


def test_hook_on_the_positive_only_differs_from_base_and_full_lora_and_repeats(executor):
    positive_only = run(executor, with_hook(base_prompt(), on=("6",)))
    base = run(executor, base_prompt())
    full = run(executor, with_lora_model_only(base_prompt()))
    assert (positive_only - base).abs().max() > 1e-3
    assert (positive_only - full).abs().max() > 1e-3
    again = run(executor, with_hook(base_prompt(), on=("6",)) | {"99": base_prompt()["5"]})
    assert torch.equal(positive_only, again)


def test_keyframes_switching_the_hook_off_equal_two_ksampler_advanced_halves(executor):
    half = STEPS // 2
    prompt = with_hook(base_prompt(), on=("6", "7"))
    # strength 1 from the start, 0 from 45%: the step at 50% (sigma below 45%'s) is the first
    # without the LoRA
    prompt["40"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 1.0, "start_percent": 0.0},
    }
    prompt["41"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 0.0, "start_percent": 0.45, "prev_hook_kf": ["40", 0]},
    }
    prompt["42"] = {
        "class_type": "SetHookKeyframes",
        "inputs": {"hooks": ["30", 0], "hook_kf": ["41", 0]},
    }
    for node in ("31", "32"):
        prompt[node]["inputs"]["hooks"] = ["42", 0]
    scheduled = run(executor, prompt)

    two = with_lora_model_only(base_prompt())
    common = {"add_noise": "enable", "noise_seed": 42, "steps": STEPS, "cfg": 8.0}
    common |= {"sampler_name": "euler", "scheduler": "normal"}
    common |= {"positive": ["6", 0], "negative": ["7", 0]}
    two["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "model": ["20", 0],
            "latent_image": ["5", 0],
            "start_at_step": 0,
            "end_at_step": half,
            "return_with_leftover_noise": "enable",
        },
    }
    two["50"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "add_noise": "disable",
            "model": ["4", 0],
            "latent_image": ["3", 0],
            "start_at_step": half,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    two["8"]["inputs"]["samples"] = ["50", 0]
    halves = run(executor, two)
    full = run(executor, with_lora_model_only(base_prompt()))
    assert (scheduled - full).abs().max() > 1e-3
    assert torch.allclose(scheduled, halves, atol=1e-5, rtol=0)


def encodings(executor, prompt: dict) -> list:
    """What node 6 (the positive CLIPTextEncode) produced."""
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result.values["6"][0][0]


def test_set_clip_hooks_encodes_like_lora_loaders_clip(executor):
    from loom.hooks import HookGroup

    hooked = base_prompt()
    hooked["30"] = {
        "class_type": "CreateHookLora",
        "inputs": {"lora_name": "a_kohya.safetensors", "strength_model": 0.0, "strength_clip": 0.7},
    }
    hooked["31"] = {
        "class_type": "SetClipHooks",
        "inputs": {
            "clip": ["4", 1],
            "apply_to_conds": True,
            "schedule_clip": False,
            "hooks": ["30", 0],
        },
    }
    hooked["6"]["inputs"]["clip"] = ["31", 0]
    loader = base_prompt()
    loader["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "a_kohya.safetensors",
            "strength_model": 0.0,
            "strength_clip": 0.7,
        },
    }
    loader["6"]["inputs"]["clip"] = ["20", 1]
    [(tensor, options)] = encodings(executor, hooked)
    [(expected, _)] = encodings(executor, loader)
    [(base, _)] = encodings(executor, base_prompt())
    assert (expected - base).abs().max() > 1e-3
    assert torch.allclose(tensor, expected, atol=1e-5, rtol=0)
    assert isinstance(options["hooks"], HookGroup) and len(options["hooks"]) == 1
    hooked["31"]["inputs"]["apply_to_conds"] = False
    [(tensor, options)] = encodings(executor, hooked)
    assert "hooks" not in options and torch.allclose(tensor, expected, atol=1e-5, rtol=0)


def test_bad_inputs_name_node_and_input(executor):
    prompt = with_hook(base_prompt(), on=("6", "7"), lora="other_family.safetensors")
    message = run_error(executor, prompt)
    assert "CreateHookLoraModelOnly" in message and "lora_name" in message
    assert "other_family.safetensors" in message and "another model family" in message

    prompt = with_hook(base_prompt(), on=("6",))
    prompt["40"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 1.0, "start_percent": 0.0},
    }
    prompt["31"]["inputs"]["hooks"] = ["40", 0]
    from loom.errors import LoomError

    try:
        validated = executor.validate(copy.deepcopy(prompt))
    except LoomError as exc:  # nothing can run: the error names the node and input
        text = str(exc) + str(getattr(exc, "node_errors", ""))
    else:
        text = str(validated.node_errors)
    assert "hooks" in text and "HOOK_KEYFRAMES" in text and "HOOKS" in text, text


def test_model_as_lora_hook_at_strength_one_samples_with_the_other_checkpoints_weights(executor):
    hooked = with_hook(base_prompt(), on=("6", "7"))
    hooked["30"] = {
        "class_type": "CreateHookModelAsLoraModelOnly",
        "inputs": {"ckpt_name": "tiny2.safetensors", "strength_model": 1.0},
    }
    other = base_prompt()
    other["20"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "tiny2.safetensors"},
    }
    other["3"]["inputs"]["model"] = ["20", 0]
    expected = run(executor, other)
    assert (expected - run(executor, base_prompt())).abs().max() > 1e-3
    assert torch.allclose(run(executor, hooked), expected, atol=1e-5, rtol=0)
    hooked["30"]["inputs"]["strength_model"] = 0.5
    halfway = run(executor, hooked)
    assert (halfway - expected).abs().max() > 1e-3


def test_clip_schedule_ranges_follow_strength_changes():
    from loom_lora.hook_nodes import clip_schedule

    from loom.hooks import HookGroup, HookKeyframe, HookKeyframes, WeightHook

    frames = HookKeyframes(
        (
            HookKeyframe(1.0, 0.0),
            HookKeyframe(0.5, 0.3),
            HookKeyframe(0.5, 0.5),  # same strength: no new range
            HookKeyframe(0.0, 0.8),
        )
    )
    scheduled = WeightHook(object(), keyframes=frames)
    late = WeightHook(object(), keyframes=HookKeyframes((HookKeyframe(2.0, 0.6),)))
    assert clip_schedule(HookGroup((scheduled, late))) == [
        ((0.0, 0.3), [1.0, 1.0]),
        ((0.3, 0.6), [0.5, 1.0]),  # the late hook has no keyframe before 60%: strength 1
        ((0.6, 0.8), [0.5, 2.0]),
        ((0.8, 1.0), [0.0, 2.0]),
    ]


def test_scheduled_clip_hooks_encode_per_range_and_sample_like_two_halves(executor):
    hooked = base_prompt()
    hooked["30"] = {
        "class_type": "CreateHookLora",
        "inputs": {"lora_name": "a_kohya.safetensors", "strength_model": 0.0, "strength_clip": 0.7},
    }
    hooked["40"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 1.0, "start_percent": 0.0},
    }
    hooked["41"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 0.0, "start_percent": 0.45, "prev_hook_kf": ["40", 0]},
    }
    hooked["42"] = {
        "class_type": "SetHookKeyframes",
        "inputs": {"hooks": ["30", 0], "hook_kf": ["41", 0]},
    }
    hooked["31"] = {
        "class_type": "SetClipHooks",
        "inputs": {
            "clip": ["4", 1],
            "apply_to_conds": True,
            "schedule_clip": True,
            "hooks": ["42", 0],
        },
    }
    hooked["6"]["inputs"]["clip"] = ["31", 0]
    [(first, first_options), (second, second_options)] = encodings(executor, hooked)
    loader = base_prompt()
    loader["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "a_kohya.safetensors",
            "strength_model": 0.0,
            "strength_clip": 0.7,
        },
    }
    loader["6"]["inputs"]["clip"] = ["20", 1]
    [(with_lora, _)] = encodings(executor, loader)
    [(base, _)] = encodings(executor, base_prompt())
    assert torch.allclose(first, with_lora, atol=1e-5, rtol=0)
    assert torch.allclose(second, base, atol=1e-5, rtol=0)
    assert (first_options["clip_start_percent"], first_options["clip_end_percent"]) == (0.0, 0.45)
    assert (second_options["clip_start_percent"], second_options["clip_end_percent"]) == (
        0.45,
        1.0,
    )
    scheduled = run(executor, hooked)

    half = STEPS // 2
    two = copy.deepcopy(loader)
    two["60"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a glass bottle", "clip": ["4", 1]},
    }
    common = {"add_noise": "enable", "noise_seed": 42, "steps": STEPS, "cfg": 8.0}
    common |= {"sampler_name": "euler", "scheduler": "normal", "negative": ["7", 0]}
    common |= {"model": ["4", 0]}
    two["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "positive": ["6", 0],
            "latent_image": ["5", 0],
            "start_at_step": 0,
            "end_at_step": half,
            "return_with_leftover_noise": "enable",
        },
    }
    two["50"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "add_noise": "disable",
            "positive": ["60", 0],
            "latent_image": ["3", 0],
            "start_at_step": half,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    two["8"]["inputs"]["samples"] = ["50", 0]
    assert torch.allclose(scheduled, run(executor, two), atol=1e-5, rtol=0)


def test_weights_are_merged_once_per_group_change_not_every_step(executor):
    memory = executor.runtime.memory
    run(executor, base_prompt())

    def swaps(prompt: dict) -> int:
        memory.evictions.clear()
        run(executor, prompt)
        return sum(1 for e in memory.evictions if e.reason == "another clone requested")

    # one group on every entry: the hooked clone is placed once for the whole run
    assert swaps(with_hook(base_prompt(), on=("6", "7"))) <= 2
    # positive hooked, negative not: the clone and the MODEL alternate within each step
    assert swaps(with_hook(base_prompt(), on=("6",))) >= 2 * STEPS - 1


def test_model_as_lora_diffs_against_the_stored_weights_so_a_lora_stays_on_top(executor):
    # ComfyUI's model_as_lora: w + s * (w_ckpt - w_base); with a LoRA already on the MODEL,
    # strength 1 gives the other checkpoint's weights plus the LoRA
    hooked = with_lora_model_only(with_hook(base_prompt(), on=("6", "7")))
    hooked["30"] = {
        "class_type": "CreateHookModelAsLoraModelOnly",
        "inputs": {"ckpt_name": "tiny2.safetensors", "strength_model": 1.0},
    }
    other = with_lora_model_only(base_prompt())
    other["21"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "tiny2.safetensors"},
    }
    other["20"]["inputs"]["model"] = ["21", 0]
    assert torch.allclose(run(executor, hooked), run(executor, other), atol=1e-5, rtol=0)


def test_lora_loader_after_set_clip_hooks_patches_the_hooked_clip(executor):
    def lora_loader(prompt: dict, node: str, clip: list, name: str, strength: float) -> list:
        prompt[node] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": ["4", 0],
                "clip": clip,
                "lora_name": name,
                "strength_model": 0.0,
                "strength_clip": strength,
            },
        }
        return [node, 1]

    hooked = base_prompt()
    hooked["30"] = {
        "class_type": "CreateHookLora",
        "inputs": {"lora_name": "a_kohya.safetensors", "strength_model": 0.0, "strength_clip": 0.7},
    }
    hooked["31"] = {
        "class_type": "SetClipHooks",
        "inputs": {
            "clip": ["4", 1],
            "apply_to_conds": True,
            "schedule_clip": False,
            "hooks": ["30", 0],
        },
    }
    hooked["6"]["inputs"]["clip"] = lora_loader(hooked, "20", ["31", 0], "b_kohya.safetensors", 1.0)
    chained = base_prompt()
    first = lora_loader(chained, "20", ["4", 1], "a_kohya.safetensors", 0.7)
    chained["6"]["inputs"]["clip"] = lora_loader(chained, "21", first, "b_kohya.safetensors", 1.0)
    [(tensor, options)] = encodings(executor, hooked)
    [(expected, _)] = encodings(executor, chained)
    assert torch.allclose(tensor, expected, atol=1e-5, rtol=0)
    assert len(options["hooks"]) == 1
