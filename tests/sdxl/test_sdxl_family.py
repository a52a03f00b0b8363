"""Detection, loading through the generic loaders, and conditioning exactly as ComfyUI."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from loom_sd15.family import SD15Family
from loom_sdxl.family import SDXLFamily
from safetensors.torch import load_file, save_file

from loom.errors import LoomError, ModelFileError
from loom.family_detection import detect_family
from loom.safetensors_header import read_header
from loom.testing import make_context
from loom.types import LoadRequest

TOL = 1e-4


def _registry():
    return types.SimpleNamespace(families={"sd15": SD15Family(), "sdxl": SDXLFamily()})


@pytest.mark.parametrize("key", ["base", "refiner", "inpaint"])
def test_every_variant_is_detected_as_sdxl_and_not_sd15(tiny_files, key):
    header = read_header(tiny_files[key])
    assert detect_family(_registry(), header, "checkpoint").name == "sdxl"
    assert SD15Family().detect(header, "checkpoint") == 0.0


def test_bare_unet_and_text_encoder_files_are_recognised(tiny_files):
    from loom_sdxl import detect

    unet = read_header(tiny_files["unet"])
    assert detect_family(_registry(), unet, "diffusion_model").name == "sdxl"
    shapes = detect.shapes_of(unet)
    config = detect.unet_config(shapes, "")
    assert config.transformer_depths == (0, 1, 2) and config.middle_depth == 2
    assert detect.variant(config, shapes) == "base"
    assert detect.standalone_encoder(detect.shapes_of(read_header(tiny_files["clip_g"]))).role == (
        "clip_g"
    )
    assert detect.standalone_encoder(detect.shapes_of(read_header(tiny_files["clip_l"]))).role == (
        "clip_l"
    )


def test_an_unsupported_adm_unet_is_refused_naming_the_file(tiny_files, tmp_path):
    state = load_file(str(tiny_files["unet"]))
    state["label_emb.0.0.weight"] = torch.zeros(128, 300)  # narrower than the size embeddings
    path = tmp_path / "odd.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelFileError, match=r"odd\.safetensors"):
        SDXLFamily().load(read_header(path), "diffusion_model")


def test_checkpoint_loads_all_parts(runtime):
    from loom_sd15.vae import SD15Vae
    from loom_sdxl.clip import SDXLClip
    from loom_sdxl.model import SDXLModel

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    parts = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(make_context(runtime))
    assert isinstance(parts.model, SDXLModel) and not parts.model.refiner
    assert parts.model.latent_format.scale_factor == 0.13025
    assert isinstance(parts.clip, SDXLClip) and not parts.clip.is_refiner
    assert isinstance(parts.vae, SD15Vae)
    refiner = CheckpointLoaderSimple(ckpt_name="sdxl-refiner.safetensors").run(
        make_context(runtime)
    )
    assert refiner.model.refiner and refiner.clip.is_refiner


def _reference_encoders(tiny_files):
    """transformers' own models, loaded from the standalone (transformers-layout) files."""
    from loom_sdxl.tiny import tiny_spec
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    spec = tiny_spec()
    l_model = CLIPTextModel(spec.clip_l.to_transformers()).eval()
    g_model = CLIPTextModelWithProjection(spec.clip_g.to_transformers()).eval()
    for model, key in ((l_model, "clip_l"), (g_model, "clip_g")):
        state = load_file(str(tiny_files[key]))
        if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
            state = {k.removeprefix("text_model."): v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    return l_model, g_model


def _ids(tokenizers: Path, text: str, pad: int) -> torch.Tensor:
    from transformers import CLIPTokenizer

    clip_l = tokenizers / "clip_l"
    tokenizer = CLIPTokenizer(str(clip_l / "vocab.json"), str(clip_l / "merges.txt"))
    ids = tokenizer(text)["input_ids"]
    return torch.tensor([ids + [pad] * (77 - len(ids))])


def test_conditioning_is_penultimate_l_and_g_with_g_projected_pooled(
    runtime, tiny_files, shared_tokenizers
):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    clip = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(make_context(runtime)).clip
    [[cond, options]] = clip.encode("a photo of a cat")
    l_model, g_model = _reference_encoders(tiny_files)
    with torch.no_grad():
        l_out = l_model(
            _ids(shared_tokenizers, "a photo of a cat", 49407), output_hidden_states=True
        )
        g_out = g_model(_ids(shared_tokenizers, "a photo of a cat", 0), output_hidden_states=True)
    expected = torch.cat([l_out.hidden_states[-2], g_out.hidden_states[-2]], dim=-1)
    assert cond.shape == (1, 77, 96)
    assert (cond - expected).abs().max().item() <= TOL
    assert (options["pooled_output"] - g_out.text_embeds).abs().max().item() <= TOL
    assert set(options) == {"pooled_output"}  # sizes come from the latent at sampling time


def test_clip_set_last_layer_applies_to_both_encoders(runtime, tiny_files, shared_tokenizers):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    clip = (
        CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(make_context(runtime)).clip.clone()
    )
    clip.set_last_layer(-1)
    [[cond, _]] = clip.encode("a cat")
    l_model, g_model = _reference_encoders(tiny_files)
    with torch.no_grad():
        l_out = l_model(_ids(shared_tokenizers, "a cat", 49407), output_hidden_states=True)
        g_out = g_model(_ids(shared_tokenizers, "a cat", 0), output_hidden_states=True)
    expected = torch.cat([l_out.hidden_states[-1], g_out.hidden_states[-1]], dim=-1)
    assert (cond - expected).abs().max().item() <= TOL


def test_dual_clip_loader_sdxl_matches_the_checkpoint_clip(runtime):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple, DualCLIPLoader

    ckpt = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(make_context(runtime)).clip
    for first, second in (("clip_l", "clip_g"), ("clip_g", "clip_l")):
        dual = DualCLIPLoader(
            clip_name1=f"{first}.safetensors", clip_name2=f"{second}.safetensors", type="sdxl"
        ).run(make_context(runtime))
        a, b = ckpt.encode("red (car:1.3)")[0], dual.encode("red (car:1.3)")[0]
        assert torch.equal(a[0], b[0])
        # the checkpoint's projection is a transposed view: another GEMM kernel, same values
        assert (a[1]["pooled_output"] - b[1]["pooled_output"]).abs().max().item() <= TOL


def test_text_encode_sdxl_pads_the_shorter_prompt_with_empty_chunks(runtime):
    from loom_sdxl.nodes import CLIPTextEncodeSDXL

    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    clip = CheckpointLoaderSimple(ckpt_name="sdxl.safetensors").run(make_context(runtime)).clip
    long_text = ", ".join(["a red apple on a wooden table"] * 12)
    tokens = clip.tokenize_pair(long_text, "short")
    assert len(tokens.g) == len(tokens.l) > 1
    assert tokens.l[1] == clip.tokenize("").l[0]
    node = CLIPTextEncodeSDXL(
        clip=clip,
        width=832,
        height=1216,
        crop_w=8,
        crop_h=16,
        target_width=1024,
        target_height=1024,
        text_g=long_text,
        text_l="short",
    )
    [[cond, options]] = node.run(None)
    assert cond.shape == (1, 77 * len(tokens.g), 96)
    assert options["width"] == 832 and options["crop_h"] == 16


def test_adm_vector_is_pooled_then_height_first_size_embeddings():
    from loom_sd15.unet_blocks import timestep_embedding
    from loom_sdxl.model import adm_vector

    pooled = torch.randn(1, 64)
    options = {"width": 832, "height": 1216, "crop_w": 8, "crop_h": 16}
    y = adm_vector(pooled, options, refiner=False, negative=False)
    values = torch.tensor([1216.0, 832, 16, 8, 1216, 832])
    assert torch.equal(y, torch.cat([pooled, timestep_embedding(values, 256).reshape(1, -1)], 1))
    neg = adm_vector(pooled, {"width": 1024, "height": 1024}, refiner=True, negative=True)
    values = torch.tensor([1024.0, 1024, 0, 0, 2.5])
    assert torch.equal(neg, torch.cat([pooled, timestep_embedding(values, 256).reshape(1, -1)], 1))


@pytest.mark.parametrize("kind", ["base", "refiner"])
def test_a_pooled_vector_of_another_width_is_refused_naming_the_model(tiny_files, kind):
    """The ADM vector's width is SDXL's own contract (the text context's width is checked by
    the sampler nodes): a pooled vector of another width is named, not a matmul error."""
    from loom_sdxl.model import BASE_SIZE_FIELDS, REFINER_SIZE_FIELDS, SIZE_EMBED_DIM

    model = SDXLFamily().load(read_header(tiny_files[kind]), "checkpoint", LoadRequest()).model
    fields = REFINER_SIZE_FIELDS if kind == "refiner" else BASE_SIZE_FIELDS
    pooled_width = model.config.adm_in_channels - fields * SIZE_EMBED_DIM
    noise = torch.zeros(1, 4, 8, 8)
    cross_attn = torch.zeros(1, 77, model.context_width)
    options = {"cross_attn": cross_attn, "pooled_output": torch.zeros(1, pooled_width)}
    y = model.extra_conds(options, noise=noise)["y"]
    assert y.shape == (1, model.config.adm_in_channels)
    options["pooled_output"] = torch.zeros(1, pooled_width // 2)
    with pytest.raises(LoomError) as error:
        model.extra_conds(options, noise=noise)
    message = str(error.value)
    assert f"the SDXL {kind} model ({model.name})" in message
    assert f"{model.config.adm_in_channels}-wide ADM vector from a {pooled_width}-wide" in message
    assert f"has a {pooled_width // 2}-wide pooled vector" in message


def test_missing_text_encoder_keys_are_an_error_naming_the_file(tiny_files, tmp_path):
    state = load_file(str(tiny_files["base"]))
    del state["conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_fc.weight"]
    state["conditioner.embedders.1.model.transformer.resblocks.1.mlp.extra"] = torch.zeros(2)
    path = tmp_path / "broken-te.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelFileError) as error:
        SDXLFamily().load(read_header(path), "checkpoint")
    message = str(error.value)
    assert "broken-te.safetensors" in message and "resblocks.1.mlp.c_fc.weight" in message
    assert "resblocks.1.mlp.extra" in message


def test_truncated_file_is_refused_naming_it(tiny_files, tmp_path):
    data = tiny_files["base"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors is truncated"):
        read_header(path)


def test_sdxl_encode_on_an_sd15_clip_names_node_and_input(tmp_path, shared_tokenizers):
    from loom_sd15.tiny import write_tiny_checkpoint
    from loom_sdxl.nodes import CLIPTextEncodeSDXL

    header = read_header(write_tiny_checkpoint(tmp_path / "sd15.safetensors"))
    sd15_clip = (
        SD15Family()
        .load(header, "checkpoint", LoadRequest(tokenizer_dir=shared_tokenizers / "clip_l"))
        .clip
    )
    node = CLIPTextEncodeSDXL(
        clip=sd15_clip,
        width=1024,
        height=1024,
        crop_w=0,
        crop_h=0,
        target_width=1024,
        target_height=1024,
        text_g="a",
        text_l="b",
    )
    with pytest.raises(LoomError, match="CLIPTextEncodeSDXL: input 'clip' is not an SDXL"):
        node.run(None)


def test_vae_never_computes_in_float16(tiny_files):
    """Where the manager would compute in float16, SDXL's VAE (which overflows there) does not."""
    from loom.memory import MemoryManager, cpu_device

    memory = MemoryManager(cpu_device(), compute_dtype=torch.float16)
    parts = SDXLFamily().load(
        read_header(tiny_files["base"]), "checkpoint", LoadRequest(memory=memory)
    )
    assert memory.target_for(parts.model).dtype == torch.float16
    assert memory.target_for(parts.vae.handle).dtype in (torch.bfloat16, torch.float32)
    image = parts.vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert parts.vae.handle.compute_target.dtype != torch.float16
    assert torch.isfinite(image).all()
