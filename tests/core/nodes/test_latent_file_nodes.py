"""SaveLatent / LoadLatent: ComfyUI's .latent file format, names, metadata and legacy scaling."""

from __future__ import annotations

import json

import pytest
import torch
from loom_builtin_harness import execute, make_ctx, object_info_of, run_one
from safetensors import safe_open
from safetensors.torch import save_file

from loom.nodes.builtin.latent_files import LatentFileError

PROMPT = {"1": {"class_type": "SaveLatent", "inputs": {"filename_prefix": "latents/ComfyUI"}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "SaveLatent"}], "links": []}


def _saving_ctx(tmp_path, **settings):
    return make_ctx(
        tmp_path, prompt=PROMPT, extra_data={"extra_pnginfo": {"workflow": WORKFLOW}}, **settings
    )


def test_save_latent_writes_comfyui_file_with_counter_and_metadata(tmp_path):
    samples = torch.randn(2, 4, 8, 6)
    ctx = _saving_ctx(tmp_path)
    first = execute("SaveLatent", ctx, samples={"samples": samples}, filename_prefix="latents/a")
    second = execute("SaveLatent", ctx, samples={"samples": samples}, filename_prefix="latents/a")
    assert first.ui == {
        "latents": [{"filename": "a_00001_.latent", "subfolder": "latents", "type": "output"}]
    }
    assert second.ui["latents"][0]["filename"] == "a_00002_.latent"
    path = tmp_path / "output" / "latents" / "a_00001_.latent"
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert torch.equal(handle.get_tensor("latent_tensor"), samples)
        assert handle.get_tensor("latent_format_version_0").shape == (0,)
        metadata = handle.metadata()
    assert json.loads(metadata["prompt"]) == PROMPT
    assert json.loads(metadata["workflow"]) == WORKFLOW


def test_save_latent_without_metadata(tmp_path):
    ctx = _saving_ctx(tmp_path, disable_metadata=True)
    execute("SaveLatent", ctx, samples={"samples": torch.zeros(1, 4, 2, 2)}, filename_prefix="x")
    with safe_open(str(tmp_path / "output" / "x_00001_.latent"), framework="pt") as handle:
        assert not handle.metadata()


def test_load_latent_lists_input_latents_and_round_trips(tmp_path):
    samples = torch.randn(1, 4, 8, 8)
    ctx = _saving_ctx(tmp_path)
    execute("SaveLatent", ctx, samples={"samples": samples}, filename_prefix="b")
    (tmp_path / "input").mkdir()
    (tmp_path / "output" / "b_00001_.latent").rename(tmp_path / "input" / "b_00001_.latent")
    (tmp_path / "input" / "picture.png").write_bytes(b"")
    info = object_info_of("LoadLatent")
    assert info["category"] == "_for_testing" and info["output"] == ["LATENT"]
    from loom_builtin_harness import builtin_registry

    from loom.nodes.spec import NodeEnvironment

    definition = builtin_registry().get_node("LoadLatent")
    env = NodeEnvironment(settings=ctx.runtime.settings)
    assert definition.impl.input_types(env)["required"]["latent"] == [["b_00001_.latent"]]
    loaded = run_one("LoadLatent", ctx, latent="b_00001_.latent")
    assert torch.equal(loaded["samples"], samples)


def test_load_latent_rescales_files_without_the_version_key(tmp_path):
    (tmp_path / "input").mkdir()
    stored = torch.full((1, 4, 2, 2), 0.18215)
    save_file({"latent_tensor": stored.half()}, str(tmp_path / "input" / "old.latent"))
    loaded = run_one("LoadLatent", make_ctx(tmp_path), latent="old.latent")
    assert loaded["samples"].dtype == torch.float32
    assert torch.allclose(loaded["samples"], torch.ones(1, 4, 2, 2), atol=1e-3)


def test_load_latent_bad_files_name_node_input_and_file(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "junk.latent").write_bytes(b"not a safetensors file")
    save_file({"other": torch.zeros(1)}, str(tmp_path / "input" / "empty.latent"))
    ctx = make_ctx(tmp_path)
    with pytest.raises(LatentFileError, match=r"LoadLatent: input 'latent': junk\.latent"):
        run_one("LoadLatent", ctx, latent="junk.latent")
    with pytest.raises(LatentFileError, match=r"empty\.latent holds no 'latent_tensor'"):
        run_one("LoadLatent", ctx, latent="empty.latent")
    from loom.nodes.builtin.latent_files import LoadLatent

    settings = ctx.runtime.settings
    assert LoadLatent.validate_inputs("missing.latent", settings) == (
        "Invalid latent file: missing.latent"
    )


def test_save_latent_schema():
    info = object_info_of("SaveLatent")
    assert info["input"] == {
        "required": {
            "samples": ["LATENT"],
            "filename_prefix": ["STRING", {"default": "latents/ComfyUI"}],
        },
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    }
    assert info["output"] == [] and info["output_node"] and info["category"] == "_for_testing"
