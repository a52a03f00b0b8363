"""Detection, loading on meta with exact key coverage, tokenizer resolution, the plugin."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from loom_sd15.family import SD15Family
from safetensors.torch import load_file, save_file
from sd15_markers import CLIP_L, TOKENIZERS, needs_tokenizer

from loom.errors import ModelFileError, UnknownCheckpointError
from loom.family_detection import detect_family
from loom.safetensors_header import read_header
from loom.types import LoadRequest, ModelPart


def _registry():
    return types.SimpleNamespace(families={"sd15": SD15Family()})


def _variant(tiny_checkpoint: Path, path: Path, edit) -> Path:
    state = load_file(str(tiny_checkpoint))
    edit(state)
    save_file(state, str(path))
    return path


def test_detection_picks_sd15_for_a_tiny_checkpoint(tiny_checkpoint):
    header = read_header(tiny_checkpoint)
    assert detect_family(_registry(), header, "checkpoint").name == "sd15"
    family = SD15Family()
    assert family.detect(header, "checkpoint") == 1.0
    assert family.detect(header, "diffusion_model") == 1.0
    assert family.detect(header, "text_encoder") > 0 and family.detect(header, "vae") > 0


def test_detection_rejects_other_families(tiny_checkpoint, tmp_path):
    def sdxl_like(state):
        state["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(128, 2816)

    def sd2_like(state):  # OpenCLIP-H layout, context 1024
        for key in [k for k in state if k.startswith("cond_stage_model.")]:
            del state[key]
        for key in [
            k for k in state if k.endswith("attn2.to_k.weight") or k.endswith("attn2.to_v.weight")
        ]:
            state[key] = torch.zeros(state[key].shape[0], 1024)
        state["cond_stage_model.model.token_embedding.weight"] = torch.zeros(8, 1024)

    def inpainting_model(state):
        state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 9, 3, 3)

    family = SD15Family()
    for edit in (sdxl_like, sd2_like, inpainting_model):
        header = read_header(
            _variant(tiny_checkpoint, tmp_path / f"{edit.__name__}.safetensors", edit)
        )
        assert family.detect(header, "checkpoint") == 0.0, edit.__name__
        with pytest.raises(UnknownCheckpointError, match="installed model families: sd15"):
            detect_family(_registry(), header, "checkpoint")
    junk = tmp_path / "junk.safetensors"
    save_file({"weight": torch.zeros(3)}, str(junk))
    assert all(
        family.detect(read_header(junk), p) == 0.0
        for p in ("checkpoint", "diffusion_model", "text_encoder", "vae")
    )


def test_component_files_are_recognised(tiny_checkpoint, tmp_path):
    """A bare VAE file, a bare UNet file, a standalone CLIP-L file (HF layout)."""
    state = load_file(str(tiny_checkpoint))
    family = SD15Family()
    for prefix, part in (
        ("first_stage_model.", "vae"),
        ("model.diffusion_model.", "diffusion_model"),
        ("cond_stage_model.transformer.", "text_encoder"),
    ):
        path = tmp_path / f"{part}.safetensors"
        save_file(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, str(path)
        )
        header = read_header(path)
        assert family.detect(header, part) > 0
        assert family.detect(header, "checkpoint") == 0.0 or part == "diffusion_model"
        loaded = family.load(header, part, LoadRequest(tokenizer_dir=CLIP_L))
        assert (
            getattr(
                loaded, {"vae": "vae", "diffusion_model": "model", "text_encoder": "clip"}[part]
            )
            is not None
        )


def test_loading_builds_on_meta_and_assigns_the_files_tensors(tiny_checkpoint, monkeypatch):
    """Initialisers may only ever see meta tensors (no storage, no work); weights come from
    the file, bit for bit."""
    calls = []

    def guard(original):
        def init(tensor, *args, **kwargs):
            calls.append(tensor.is_meta)
            if not tensor.is_meta:
                raise AssertionError("random initialisation of a real tensor during loading")
            return original(tensor, *args, **kwargs)

        return init

    for name in ("kaiming_uniform_", "uniform_", "normal_", "xavier_uniform_", "trunc_normal_"):
        monkeypatch.setattr(torch.nn.init, name, guard(getattr(torch.nn.init, name)))
    parts = SD15Family().load(read_header(tiny_checkpoint), ModelPart.CHECKPOINT, LoadRequest())
    state = load_file(str(tiny_checkpoint))
    unet = parts.model.module
    for key, tensor in unet.state_dict().items():
        assert torch.equal(tensor, state["model.diffusion_model." + key]), key
    assert not any(
        t.is_meta
        for t in (
            *unet.parameters(),
            *parts.vae.handle.module.parameters(),
            *parts.clip.handle.module.parameters(),
            *parts.clip.handle.module.buffers(),
        )
    )
    assert all(not p.requires_grad for p in unet.parameters())


def test_missing_and_unexpected_keys_are_listed_in_one_error(tiny_checkpoint, tmp_path):
    def damage(state):
        del state["model.diffusion_model.out.0.weight"]
        del state["model.diffusion_model.middle_block.1.norm.bias"]
        state["model.diffusion_model.middle_block.1.surprise.weight"] = torch.zeros(2)

    header = read_header(_variant(tiny_checkpoint, tmp_path / "damaged.safetensors", damage))
    with pytest.raises(ModelFileError) as info:
        SD15Family().load(header, ModelPart.CHECKPOINT, LoadRequest())
    message = str(info.value.message)
    assert "2 missing keys" in message and "1 unexpected keys" in message
    for key in (
        "model.diffusion_model.out.0.weight",
        "model.diffusion_model.middle_block.1.norm.bias",
        "model.diffusion_model.middle_block.1.surprise.weight",
    ):
        assert key in message


def test_known_leftover_keys_are_ignored(tiny_checkpoint, tmp_path, caplog):
    def extras(state):
        state["alphas_cumprod"] = torch.ones(1000)
        state["model_ema.decay"] = torch.ones(())
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[
            None
        ]
        state["something.else"] = torch.ones(1)

    header = read_header(_variant(tiny_checkpoint, tmp_path / "extras.safetensors", extras))
    parts = SD15Family().load(header, ModelPart.CHECKPOINT, LoadRequest())
    assert parts.model is not None and parts.clip is not None and parts.vae is not None
    assert "something.else" in caplog.text and "alphas_cumprod" not in caplog.text


def test_conversion_round_trips(tiny_checkpoint):
    from loom_sd15.convert import unet_conversion

    state = load_file(str(tiny_checkpoint))
    conversion = unet_conversion()
    view = conversion.view(state)
    back = conversion.to_checkpoint({k: view[k] for k in view})
    assert back.keys() == {k for k in state if k.startswith("model.diffusion_model.")}


def test_missing_tokenizer_says_which_files_go_where(tiny_checkpoint, monkeypatch, tmp_path):
    from loom_sd15 import tokenizer

    monkeypatch.setattr(tokenizer, "_hf_cache", lambda name: None)
    monkeypatch.delenv(tokenizer.ENV_PATH, raising=False)
    clip = SD15Family().load(read_header(tiny_checkpoint), ModelPart.CHECKPOINT, LoadRequest()).clip
    clip.tokenizer_source = tokenizer.TokenizerSource(
        "my_tokenizer", None, (tmp_path / "models" / "tokenizers",)
    )  # a name this package does not ship
    with pytest.raises(tokenizer.TokenizerNotFound) as info:
        clip.encode("a cat")
    text = f"{info.value.message} {info.value.hint}"
    assert "vocab.json" in text and "merges.txt" in text
    assert str(tmp_path / "models" / "tokenizers" / "my_tokenizer") in text


def test_clip_l_tokenizer_ships_with_the_package_and_a_user_folder_overrides_it(
    monkeypatch, tmp_path
):
    """Real SD1.x checkpoints need no tokenizer download (ComfyUI bundles its files too)."""
    from loom_sd15 import tokenizer
    from loom_sd15.demo import write_demo_tokenizer

    monkeypatch.setattr(tokenizer, "_hf_cache", lambda name: None)
    monkeypatch.delenv(tokenizer.ENV_PATH, raising=False)
    user_dirs = (tmp_path / "models" / "tokenizers",)
    shipped = tokenizer.TokenizerSource("clip_l", None, user_dirs).resolve()
    assert (shipped / "NOTICE").is_file() and "MIT" in (shipped / "NOTICE").read_text()
    ids = tokenizer.load_tokenizer(shipped)("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP ViT-L/14's real ids
    write_demo_tokenizer(user_dirs[0] / "clip_l")
    assert tokenizer.TokenizerSource("clip_l", None, user_dirs).resolve() == user_dirs[0] / "clip_l"


@needs_tokenizer
def test_tokenizer_from_the_environment_path(tiny_checkpoint, monkeypatch):
    from loom_sd15 import tokenizer

    monkeypatch.setenv(tokenizer.ENV_PATH, str(TOKENIZERS))
    clip = SD15Family().load(read_header(tiny_checkpoint), ModelPart.CHECKPOINT, LoadRequest()).clip
    assert clip.encode("a cat")[0][0].shape == (1, 77, 32)


def test_plugin_is_installed_and_registers_its_family_and_node():
    from importlib.metadata import entry_points

    from loom.plugins import PluginHost
    from loom.registry import collect

    assert "sd15" in {ep.name for ep in entry_points(group="loom")}
    host = PluginHost()
    host.load()
    registry = collect(host)
    assert "sd15" in registry.families
    assert "VAEEncodeForInpaint" in registry.nodes


def test_model_handle_protocols(tiny_checkpoint):
    from loom.memory import ModelHandle
    from loom.types import ClipLike, ModelLike, VaeLike

    parts = SD15Family().load(read_header(tiny_checkpoint), ModelPart.CHECKPOINT, LoadRequest())
    assert isinstance(parts.model, ModelLike) and isinstance(parts.model, ModelHandle)
    assert isinstance(parts.clip, ClipLike) and isinstance(parts.vae, VaeLike)
    clone = parts.model.clone()
    assert clone.module is parts.model.module and clone.latent_format.scale_factor == 0.18215
    assert type(clone) is type(parts.model)
    assert parts.model.memory_required((2, 4, 64, 64)) > 0
