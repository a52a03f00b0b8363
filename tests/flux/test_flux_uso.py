"""Flux USO: the style projector (``model_patches`` layout) against a hand computation of its
formula, the DiT's text-token prefix (tokens after ``txt_in``, position ids zero) against the
same tokens written as text, and ModelPatchLoader's schema and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loom_flux.tiny import tiny_spec, uso_projector_state
from loom_flux.uso import PREFIX, load_projector, projector_config

from loom.errors import ModelFileError


def test_projector_matches_its_formula_by_hand():
    state = uso_projector_state(siglip_tokens=9, siglip_dim=12, hidden_size=16, style_tokens=4)
    projector = load_projector(state, "uso.safetensors")
    g = torch.Generator().manual_seed(0)
    layers = tuple(torch.randn(2, 9, 12, generator=g) for _ in range(3))  # -2, -11, -20
    with torch.no_grad():
        got = projector(layers)
    expected = []
    for branch, states in zip(("high", "mid", "low"), layers, strict=True):

        def w(name, branch=branch):
            return state[f"{PREFIX}{branch}_{name}"]

        # mix over the token axis, SiLU, LayerNorm over channels, project
        mixed = F.silu(
            (states.transpose(1, 2) @ w("embedding_linear.0.weight").T)
            + w("embedding_linear.0.bias")
        ).transpose(1, 2)
        mean = mixed.mean(-1, keepdim=True)
        var = mixed.var(-1, unbiased=False, keepdim=True)
        normed = (mixed - mean) / torch.sqrt(var + 1e-5) * w("layer_norm.weight")
        normed = normed + w("layer_norm.bias")
        expected.append(normed @ w("projection.weight").T + w("projection.bias"))
    want = torch.cat(expected, dim=1)
    assert got.shape == (2, 12, 16)
    assert torch.allclose(got, want, atol=1e-5)


def test_text_prefix_equals_the_same_tokens_as_text():
    """Tokens put after ``txt_in`` with zero ids are exactly text tokens whose ``txt_in``
    projection they are (txt_in is per-token linear; text ids are zero too)."""
    from loom_flux.dit import FluxTransformer

    config = tiny_spec().dit
    dit = FluxTransformer(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    x = torch.randn(1, config.in_channels // 4, 8, 8, generator=g)
    t = torch.tensor([0.7])
    context = torch.randn(1, 5, config.context_dim, generator=g)
    extra = torch.randn(1, 3, config.context_dim, generator=g)
    y = torch.randn(1, config.vec_dim, generator=g)
    guidance = torch.tensor([3.5])
    with torch.no_grad():
        prefixed = dit(x, t, context, y, guidance, txt_prefix=dit.txt_in(extra))
        as_text = dit(x, t, torch.cat((extra, context), dim=1), y, guidance)
        plain = dit(x, t, context, y, guidance)
    assert torch.allclose(prefixed, as_text, atol=1e-6)
    assert not torch.allclose(prefixed, plain, atol=1e-4)


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("controlnet_blocks.0.y_rms.weight", "a Qwen-Image DiffSynth block-wise ControlNet"),
        ("control_all_x_embedder.2-1.weight", "a Z-Image Fun ControlNet"),
    ],
)
def test_other_model_patches_are_refused_by_name(key, what):
    with pytest.raises(ModelFileError) as caught:
        projector_config({key: (4, 4)}, "patch.safetensors")
    assert caught.value.message.startswith(f"patch.safetensors is {what}, a model patch for")


def test_model_patch_loader_schema_and_messages(tmp_path):
    from safetensors.torch import save_file

    from loom.nodes.object_info import to_json
    from loom.settings import Settings
    from loom.testing import make_context, make_runtime

    folder = tmp_path / "models" / "model_patches"
    folder.mkdir(parents=True)
    save_file({"controlnet_blocks.0.y_rms.weight": torch.ones(4)}, str(folder / "qwen.safetensors"))
    save_file({"other.weight": torch.ones(4)}, str(folder / "x.safetensors"))
    save_file(uso_projector_state(9, 12, 16), str(folder / "uso.safetensors"))
    rt = make_runtime(
        "flux", settings=Settings(base_directory=tmp_path, load_custom_nodes=False, cpu_only=True)
    )
    info = to_json(rt.registry.nodes["ModelPatchLoader"], rt.environment)
    # ComfyUI's classic combo form: nodes_model_patch declares INPUT_TYPES, not io.Schema
    (choices,) = info["input"]["required"]["name"]
    assert choices == ["qwen.safetensors", "uso.safetensors", "x.safetensors"]
    assert info["output"] == ["MODEL_PATCH"]
    assert (info["category"], info["python_module"], info["experimental"]) == (
        "advanced/loaders",
        "comfy_extras.nodes_model_patch",
        True,
    )
    uso = to_json(rt.registry.nodes["USOStyleReference"], rt.environment)
    assert uso["input_order"]["required"] == ["model", "model_patch", "clip_vision_output"]
    assert (uso["output"], uso["category"]) == (["MODEL"], "advanced/model_patches/flux")

    from loom_flux.model_patch_nodes import ModelPatchLoader

    ctx = make_context(runtime=rt)
    patch = ModelPatchLoader(name="uso.safetensors").run(ctx)
    assert patch.file == "uso.safetensors" and patch.projector.config.style_tokens == 4
    with pytest.raises(ModelFileError) as caught:
        ModelPatchLoader(name="qwen.safetensors").run(ctx)
    assert caught.value.message.startswith(
        "ModelPatchLoader: input 'name': qwen.safetensors is a Qwen-Image DiffSynth"
    )
    with pytest.raises(ModelFileError, match=r"input 'name': x\.safetensors is not a model patch"):
        ModelPatchLoader(name="x.safetensors").run(ctx)
