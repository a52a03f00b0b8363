"""The nodes through the executor and one by one: loading, encoding, unCLIP conditioning,
Redux, and the messages bad input gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_vision_tiny import REDUX_TEXT_DIM
from loom_clip_vision.nodes import (
    CLIPVisionLoader,
    StyleModelApply,
    StyleModelLoader,
    unCLIPCheckpointLoader,
    unCLIPConditioning,
)
from PIL import Image as PILImage
from safetensors.torch import load_file

import loom
from loom.errors import LoomError
from loom.memory import write_safetensors
from loom.testing import make_context, run_prompt
from loom.types import LoadedParts


def _write_png(path, height=24, width=40, seed=0):
    rng = np.random.default_rng(seed)
    PILImage.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _encode_prompt(clip_name: str, crop: str = "center") -> dict:
    return {
        "1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_name}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "3": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["1", 0], "image": ["2", 0], "crop": crop},
        },
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }


def _encoded(runtime, clip_name="tiny-siglip.safetensors", crop="center"):
    _write_png(runtime.settings.base_directory / "input" / "photo.png")
    prompt = _encode_prompt(clip_name, crop)
    record = run_prompt(runtime, prompt)
    assert record.ok, record.error
    return record.value("3"), record.value("2")


def _text(width: int = REDUX_TEXT_DIM, tokens: int = 5, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), {"pooled_output": torch.zeros(1, 8)}]]


def test_loader_and_encode_run_through_the_executor(runtime):
    output, image = _encoded(runtime)

    assert output.last_hidden_state.shape == (1, 16, 32)
    direct = CLIPVisionLoader(clip_name="tiny-siglip.safetensors").run(make_context(runtime))
    again = direct.encode_image(image, crop=True)
    torch.testing.assert_close(output.last_hidden_state, again.last_hidden_state)
    squashed = direct.encode_image(image, crop=False)
    assert not torch.allclose(squashed.last_hidden_state, again.last_hidden_state)


def test_crop_input_reaches_the_preprocessing(runtime):
    center, _ = _encoded(runtime, "tiny-clip-vision.safetensors", "center")
    none, _ = _encoded(runtime, "tiny-clip-vision.safetensors", "none")
    assert center.image_embeds.shape == none.image_embeds.shape == (1, 24)
    assert not torch.allclose(center.image_embeds, none.image_embeds)


def test_redux_tokens_are_appended_as_computed_by_hand(runtime, tiny_files):
    ctx = make_context(runtime)
    output, _ = _encoded(runtime)
    style = StyleModelLoader(style_model_name="tiny-redux.safetensors").run(ctx)
    weights = load_file(tiny_files / "style_models" / "tiny-redux.safetensors")
    hidden = F.linear(
        output.last_hidden_state, weights["redux_up.weight"], weights["redux_up.bias"]
    )
    tokens = F.linear(F.silu(hidden), weights["redux_down.weight"], weights["redux_down.bias"])
    text = _text()

    [[cond, options]] = StyleModelApply(
        conditioning=text,
        style_model=style,
        clip_vision_output=output,
        strength=0.5,
        strength_type="multiply",
    ).run(ctx)

    assert cond.shape == (1, 5 + 16, REDUX_TEXT_DIM)
    torch.testing.assert_close(cond[:, :5], text[0][0])
    torch.testing.assert_close(cond[:, 5:], 0.5 * tokens, atol=1e-5, rtol=1e-5)
    assert (
        "attention_mask" not in options and options["pooled_output"] is text[0][1]["pooled_output"]
    )


def test_attn_bias_strength_becomes_comfyuis_attention_mask(runtime):
    ctx = make_context(runtime)
    output, _ = _encoded(runtime)
    style = StyleModelLoader(style_model_name="tiny-redux.safetensors").run(ctx)
    text = _text()

    [[cond, options]] = StyleModelApply(
        conditioning=text,
        style_model=style,
        clip_vision_output=output,
        strength=0.25,
        strength_type="attn_bias",
    ).run(ctx)
    [[plain, plain_options]] = StyleModelApply(
        conditioning=text,
        style_model=style,
        clip_vision_output=output,
        strength=1.0,
        strength_type="attn_bias",
    ).run(ctx)

    torch.testing.assert_close(cond, plain)  # attn_bias leaves the tokens as they are
    assert "attention_mask" not in plain_options  # strength 1: no bias, no mask
    mask = options["attention_mask"]
    # 5 text tokens, 16 style tokens, then the (1 x 1) image-reference placeholder
    assert mask.shape == (1, 22, 22) and mask.dtype == torch.float16
    bias = torch.log(torch.tensor(0.25)).half()
    assert torch.all(mask[:, :5, 5:21] == bias) and torch.all(mask[:, 21:, 5:21] == bias)
    assert torch.all(mask[:, 5:21] == 0) and torch.all(mask[:, :, :5] == 0)
    assert options["attention_mask_img_shape"] == (1, 1)


def test_unclip_conditioning_appends_comfyuis_entries(runtime):
    ctx = make_context(runtime)
    output, _ = _encoded(runtime, "tiny-clip-vision.safetensors")
    text = _text(width=8)

    once = unCLIPConditioning(
        conditioning=text, clip_vision_output=output, strength=0.8, noise_augmentation=0.1
    ).run(ctx)
    twice = unCLIPConditioning(
        conditioning=once, clip_vision_output=output, strength=-1.5, noise_augmentation=0.0
    ).run(ctx)
    unchanged = unCLIPConditioning(
        conditioning=text, clip_vision_output=output, strength=0.0, noise_augmentation=0.3
    ).run(ctx)

    assert unchanged is text
    entries = twice[0][1]["unclip_conditioning"]
    assert [(e["strength"], e["noise_augmentation"]) for e in entries] == [(0.8, 0.1), (-1.5, 0.0)]
    assert entries[0]["clip_vision_output"] is output
    assert "unclip_conditioning" not in text[0][1]  # inputs are never mutated
    assert len(once[0][1]["unclip_conditioning"]) == 1


# --- bad input --------------------------------------------------------------------------


def _link(runtime, tiny_files, source: str, folder: str, name: str):
    target = runtime.settings.base_directory / "models" / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(tiny_files / source)
    return name


def test_a_file_of_unknown_layout_in_clip_vision_is_named(runtime, tiny_files):
    name = _link(
        runtime, tiny_files, "style_models/tiny-redux.safetensors", "clip_vision", "odd.safetensors"
    )
    with pytest.raises(LoomError) as caught:
        CLIPVisionLoader(clip_name=name).run(make_context(runtime))
    text = str(caught.value)
    assert "CLIPVisionLoader" in text and "'clip_name'" in text and "odd.safetensors" in text
    assert "style model" in text  # the hint says what the file looks like


def test_a_clip_vision_file_as_a_style_model_is_named(runtime, tiny_files):
    name = _link(
        runtime,
        tiny_files,
        "clip_vision/tiny-siglip.safetensors",
        "style_models",
        "tower.safetensors",
    )
    with pytest.raises(LoomError) as caught:
        StyleModelLoader(style_model_name=name).run(make_context(runtime))
    text = str(caught.value)
    assert (
        "StyleModelLoader" in text and "'style_model_name'" in text and "tower.safetensors" in text
    )


def test_an_sd15_t2i_style_adapter_is_refused_with_its_name(runtime):
    path = (
        runtime.settings.base_directory / "models" / "style_models" / "coadapter-style.safetensors"
    )
    write_safetensors(path, {"style_embedding": torch.zeros(1, 8, 16)})
    with pytest.raises(LoomError) as caught:
        StyleModelLoader(style_model_name=path.name).run(make_context(runtime))
    assert "coadapter-style.safetensors" in str(caught.value) and "T2I-Adapter" in str(caught.value)


def test_redux_on_another_familys_conditioning_names_node_input_and_file(runtime):
    ctx = make_context(runtime)
    output, _ = _encoded(runtime)
    style = StyleModelLoader(style_model_name="tiny-redux.safetensors").run(ctx)
    sd15_text = _text(width=768)

    with pytest.raises(LoomError) as caught:
        StyleModelApply(
            conditioning=sd15_text,
            style_model=style,
            clip_vision_output=output,
            strength=1.0,
            strength_type="multiply",
        ).run(ctx)
    text = str(caught.value)
    assert (
        "StyleModelApply" in text and "'conditioning'" in text and "tiny-redux.safetensors" in text
    )


def test_redux_on_a_clip_not_siglip_encoding_names_the_input(runtime):
    ctx = make_context(runtime)
    clip_output, _ = _encoded(runtime, "tiny-clip-vision.safetensors")  # 48 wide, not 32
    style = StyleModelLoader(style_model_name="tiny-redux.safetensors").run(ctx)
    with pytest.raises(LoomError) as caught:
        StyleModelApply(
            conditioning=_text(),
            style_model=style,
            clip_vision_output=clip_output,
            strength=1.0,
            strength_type="multiply",
        ).run(ctx)
    text = str(caught.value)
    assert "StyleModelApply" in text and "'clip_vision_output'" in text
    assert "tiny-redux.safetensors" in text


def test_an_sd21_unclip_checkpoint_is_refused_naming_the_file_and_what_is_missing(runtime):
    path = runtime.settings.base_directory / "models" / "checkpoints" / "sd21-unclip-h.safetensors"
    write_safetensors(
        path,
        {
            "model.diffusion_model.label_emb.0.0.weight": torch.zeros(4, 8),
            "embedder.model.visual.proj": torch.zeros(8, 4),
            "noise_augmentor.betas": torch.zeros(4),
        },
    )
    with pytest.raises(LoomError) as caught:
        unCLIPCheckpointLoader(ckpt_name=path.name).run(make_context(runtime))
    text = str(caught.value)
    assert "unCLIPCheckpointLoader" in text and "'ckpt_name'" in text
    assert "sd21-unclip-h.safetensors" in text and "SD2" in text


class _OneFileFamily:
    """A model family that claims files holding ``toy.weight``."""

    name = "toy"

    def detect(self, header, part):
        return 1.0 if header.has("toy.weight") else 0.0

    def load(self, header, part, request):
        return LoadedParts(model="toy-model", clip="toy-clip", vae="toy-vae")


class _ToyFamilyPlugin:
    @loom.hookimpl
    def register_model_families(self, register):
        register(_OneFileFamily())


def test_a_checkpoint_a_family_loads_comes_back_without_clip_vision(tmp_path, loom_runtime):
    runtime = loom_runtime("clip-vision", toy=_ToyFamilyPlugin())
    path = tmp_path / "models" / "checkpoints" / "toy.safetensors"
    write_safetensors(path, {"toy.weight": torch.zeros(2)})

    parts = unCLIPCheckpointLoader(ckpt_name="toy.safetensors").run(make_context(runtime))

    assert (parts.model, parts.clip, parts.vae, parts.clip_vision) == (
        "toy-model",
        "toy-clip",
        "toy-vae",
        None,
    )
