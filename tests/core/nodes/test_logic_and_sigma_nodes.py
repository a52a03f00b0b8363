"""ComfySwitchNode (lazy: only the chosen branch runs), CustomCombo and SetFirstSigma."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import make_ctx, object_info_of, run_one

from loom.executor.executor import Executor
from loom.executor.validate import type_matches
from loom.plugins import PluginHost
from loom.runtime import Runtime
from loom.settings import Settings

TEMPLATE = {"template_id": "switch", "allowed_types": "*"}


def _switch_prompt(switch: bool) -> dict:
    def empty(color: int) -> dict:
        return {
            "class_type": "EmptyImage",
            "inputs": {"width": 4, "height": 2, "batch_size": 1, "color": color},
        }

    return {
        "1": empty(0xFF0000),
        "2": empty(0x0000FF),
        "3": {
            "class_type": "ComfySwitchNode",
            "inputs": {"switch": switch, "on_false": ["1", 0], "on_true": ["2", 0]},
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


@pytest.mark.parametrize(
    ("switch", "chosen", "skipped", "channel"), [(True, "2", "1", 2), (False, "1", "2", 0)]
)
def test_switch_runs_only_the_chosen_branch(tmp_path, switch, chosen, skipped, channel):
    runtime = Runtime(
        Settings(base_directory=tmp_path, load_custom_nodes=False), PluginHost(entry_points=False)
    )
    result = Executor(runtime).run_prompt(_switch_prompt(switch), prompt_id="p")
    assert result.status_str == "success"
    assert chosen in result.values and skipped not in result.values
    ((image,),) = result.values["3"]  # one output, one list item
    assert image.shape == (1, 2, 4, 3) and float(image[0, 0, 0, channel]) == 1.0


def test_switch_object_info_and_match_type_links():
    info = object_info_of("ComfySwitchNode")
    assert info["input"]["required"] == {
        "switch": ["BOOLEAN", {}],
        "on_false": ["COMFY_MATCHTYPE_V3", {"lazy": True, "template": TEMPLATE}],
        "on_true": ["COMFY_MATCHTYPE_V3", {"lazy": True, "template": TEMPLATE}],
    }
    assert info["output"] == ["COMFY_MATCHTYPE_V3"] and info["output_name"] == ["output"]
    assert info["output_matchtypes"] == ["switch"]
    assert (info["category"], info["display_name"], info["experimental"]) == (
        "logic",
        "Switch",
        True,
    )
    assert type_matches("IMAGE", "COMFY_MATCHTYPE_V3") and type_matches(
        "COMFY_MATCHTYPE_V3", "MASK"
    )
    assert not type_matches("IMAGE", "MASK")


def test_custom_combo_returns_the_frontend_chosen_option(tmp_path):
    info = object_info_of("CustomCombo")
    assert info["input"]["required"] == {"choice": ["COMBO", {"multiselect": False, "options": []}]}
    assert (info["output"], info["category"], info["display_name"]) == (
        ["STRING"],
        "utils",
        "Custom Combo",
    )
    prompt = {
        "1": {"class_type": "CustomCombo", "inputs": {"choice": "my own option"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    runtime = Runtime(
        Settings(base_directory=tmp_path, load_custom_nodes=False), PluginHost(entry_points=False)
    )
    result = Executor(runtime).run_prompt(prompt, prompt_id="p")
    assert result.status_str == "success", result.error
    assert result.values["1"] == (["my own option"],)


def test_set_first_sigma_replaces_only_the_first(tmp_path):
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    out = run_one("SetFirstSigma", make_ctx(tmp_path), sigmas=sigmas, sigma=136.0)
    assert out.tolist() == pytest.approx([136.0, 3.0, 0.5, 0.0])
    assert sigmas[0].item() == pytest.approx(14.6)  # the input is not changed
    info = object_info_of("SetFirstSigma")
    assert info["input"]["required"]["sigma"] == [
        "FLOAT",
        {"default": 136.0, "min": 0.0, "max": 20000.0, "step": 0.001, "round": False},
    ]
    assert info["category"] == "sampling/custom_sampling/sigmas"


def test_differential_diffusion_object_info():
    info = object_info_of("DifferentialDiffusion")
    assert info["input"] == {
        "required": {"model": ["MODEL", {}]},
        "optional": {"strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
    }
    assert (info["output"], info["category"]) == (["MODEL"], "_for_testing")


def test_differential_diffusion_sets_the_hook_on_a_clone_of_a_real_handle(tmp_path):
    from loom.memory import ModelHandle
    from loom.nodes.builtin.sampling import DifferentialMask
    from loom.samplers import denoise_mask_function_of

    base = ModelHandle(torch.nn.Linear(2, 2))
    out = run_one("DifferentialDiffusion", make_ctx(tmp_path), model=base, strength=0.5)
    assert out is not base and out.is_clone(base)
    assert denoise_mask_function_of(base) is None
    assert denoise_mask_function_of(out) == DifferentialMask(0.5)
    assert denoise_mask_function_of(out.clone()) == DifferentialMask(0.5)  # clones keep it
