"""PhotoMaker v1: the ID encoder in its converted file layout (``id_encoder.*``) against
transformers' ``CLIPVisionModelWithProjection`` at identical weights, the second projection
and the fuse module against a hand computation, ComfyUI's trigger rule, the loader's
schema and messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loom_clip_vision.photomaker import (
    ID_ENCODER,
    fuse_prompt,
    load_photomaker,
    trigger_position,
    trigger_word_id,
)
from loom_clip_vision.preprocess import clip_preprocess
from loom_clip_vision.tiny import photomaker_state, tiny_clip_config

from loom.errors import ModelFileError

PROJECTION_2 = 72  # tiny: 24 (visual_projection) + 72 = 96, the tiny SDXL's text width


@pytest.fixture(scope="module")
def state():
    return photomaker_state(tiny_clip_config(), PROJECTION_2, seed=3)


def _layer_norm(x, weight, bias):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, 1e-5)


def _mlp(x, s, name, residual):
    h = _layer_norm(x, s[f"{name}.layernorm.weight"], s[f"{name}.layernorm.bias"])
    h = F.gelu(h @ s[f"{name}.fc1.weight"].T + s[f"{name}.fc1.bias"])
    h = h @ s[f"{name}.fc2.weight"].T + s[f"{name}.fc2.bias"]
    return h + x if residual else h


def test_id_embeds_match_transformers_tower_and_hand(state):
    from transformers import CLIPVisionModelWithProjection

    handle = load_photomaker(state, "photomaker-v1.safetensors")
    config = tiny_clip_config()
    reference = CLIPVisionModelWithProjection(config.to_transformers()).eval()
    tower = {
        k[len(ID_ENCODER) :]: v
        for k, v in state.items()
        if k.startswith(f"{ID_ENCODER}vision_model.") or k.endswith("visual_projection.weight")
    }
    loaded = reference.load_state_dict(tower, strict=False)
    assert not loaded.unexpected_keys
    assert all(k.endswith("position_ids") for k in loaded.missing_keys)
    image = torch.rand(1, 20, 24, 3, generator=torch.Generator().manual_seed(0))
    pixels = clip_preprocess(image, config.image_size, config.image_mean, config.image_std)
    with torch.no_grad():
        ours = handle.module.id_embeds(pixels)
        out = reference(pixel_values=pixels)
        pooled = reference.vision_model(pixel_values=pixels).pooler_output
    second = pooled @ state[f"{ID_ENCODER}visual_projection_2.weight"].T
    assert ours.shape == (1, 24 + PROJECTION_2)
    assert torch.allclose(ours[:, :24], out.image_embeds, atol=1e-5)
    assert torch.allclose(ours[:, 24:], second, atol=1e-5)


def test_fuse_matches_the_formula_by_hand(state):
    handle = load_photomaker(state, "photomaker-v1.safetensors")
    s = {
        k[len(f"{ID_ENCODER}fuse_module.") :]: v
        for k, v in state.items()
        if ".fuse_module." in f".{k}"
    }
    image = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    cond = torch.randn(1, 77, 96, generator=torch.Generator().manual_seed(2))
    out = fuse_prompt(handle, image, cond, 3)
    config = tiny_clip_config()
    pixels = clip_preprocess(image[:1], config.image_size, config.image_mean, config.image_std)
    with torch.no_grad():
        ids = handle.module.id_embeds(pixels)
    token = cond[:, 3]
    fused = _mlp(torch.cat((token, ids), -1), s, "mlp1", False) + token
    fused = _mlp(fused, s, "mlp2", True)
    fused = _layer_norm(fused, s["layer_norm.weight"], s["layer_norm.bias"])
    assert torch.allclose(out[:, 3], fused, atol=1e-5)
    keep = [i for i in range(77) if i != 3]
    assert torch.equal(out[:, keep], cond[:, keep])  # only the class token changes


def test_trigger_rule_is_comfyuis():
    assert trigger_position("photograph of photomaker") == 2  # the token after "photograph"
    assert trigger_position("a man photomaker smiling") == 2
    assert trigger_position("a photomaker") == 1
    assert trigger_position("a man, photomaker.") is None  # words split on spaces only
    # the word id whose tokens ComfyUI drops: the trigger's 1-based word number
    assert trigger_word_id("a man photomaker smiling") == 3
    assert trigger_word_id("(a) (b) photomaker") == 3
    assert trigger_word_id("no trigger here") == -1


def test_loader_schema_and_messages(tmp_path, state):
    from safetensors.torch import save_file

    from loom.nodes.object_info import to_json
    from loom.settings import Settings
    from loom.testing import make_context, make_runtime

    folder = tmp_path / "models" / "photomaker"
    folder.mkdir(parents=True)
    save_file(state, str(folder / "photomaker-v1.safetensors"))
    v2 = {f"{ID_ENCODER}qformer_perceiver.token_proj.0.weight": torch.ones(2, 2)}
    save_file(v2, str(folder / "photomaker-v2.safetensors"))
    save_file({"x.weight": torch.ones(2)}, str(folder / "other.safetensors"))
    rt = make_runtime(
        "clip-vision",
        settings=Settings(base_directory=tmp_path, load_custom_nodes=False, cpu_only=True),
    )
    loader = to_json(rt.registry.nodes["PhotoMakerLoader"], rt.environment)
    kind, options = loader["input"]["required"]["photomaker_model_name"]
    assert kind == "COMBO" and options["options"] == [
        "other.safetensors",
        "photomaker-v1.safetensors",
        "photomaker-v2.safetensors",
    ]
    assert loader["output"] == ["PHOTOMAKER"]
    assert (loader["category"], loader["python_module"], loader["experimental"]) == (
        "_for_testing/photomaker",
        "comfy_extras.nodes_photomaker",
        True,
    )
    encode = to_json(rt.registry.nodes["PhotoMakerEncode"], rt.environment)
    assert encode["input_order"]["required"] == ["photomaker", "image", "clip", "text"]
    kind, options = encode["input"]["required"]["text"]
    assert kind == "STRING" and options["default"] == "photograph of photomaker"
    assert options["multiline"] is True and options["dynamicPrompts"] is True
    assert encode["output"] == ["CONDITIONING"]

    from loom_clip_vision.photomaker_nodes import PhotoMakerLoader

    ctx = make_context(runtime=rt)
    loaded = PhotoMakerLoader(photomaker_model_name="photomaker-v1.safetensors").run(ctx)
    assert loaded.file == "photomaker-v1.safetensors"
    with pytest.raises(ModelFileError) as caught:
        PhotoMakerLoader(photomaker_model_name="photomaker-v2.safetensors").run(ctx)
    assert caught.value.message.startswith(
        "PhotoMakerLoader: input 'photomaker_model_name': photomaker-v2.safetensors is a "
        "PhotoMaker v2 file"
    )
    with pytest.raises(ModelFileError, match=r"other\.safetensors is not a PhotoMaker file"):
        PhotoMakerLoader(photomaker_model_name="other.safetensors").run(ctx)
