"""SetClipHooks reaches every text encoder node that builds its conditioning through
``loom.hooks.encode_scheduled`` (ComfyUI's ``encode_from_tokens_scheduled``), not only
CLIPTextEncode: CLIPTextEncodeSDXL and CLIPTextEncodeFlux on a hooked CLIP encode with the
hooked weights, once per keyframe range with ``schedule_clip``, and with ``apply_to_conds``
their entries carry the hooks. The hook is a second checkpoint taken as a LoRA
(CreateHookModelAsLora, CLIP only), so a range at strength 1 encodes exactly as that
checkpoint's CLIP does and a range at strength 0 as the CLIP given."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("loom_lora")
pytest.importorskip("loom_sdxl")
pytest.importorskip("loom_flux")

from loom.hooks import HOOKS
from loom.testing import make_context


@pytest.fixture
def ctx(tmp_path, shared_tokenizers, loom_runtime):
    from loom_flux.tiny import checkpoint_state as flux_checkpoint
    from loom_flux.tiny import save as flux_save
    from loom_flux.tiny import tiny_spec as flux_spec
    from loom_sdxl.tiny import write_tiny_checkpoint

    checkpoints = tmp_path / "models" / "checkpoints"
    write_tiny_checkpoint(checkpoints / "sdxl-a.safetensors", seed=0)
    write_tiny_checkpoint(checkpoints / "sdxl-b.safetensors", seed=1)
    flux_save(flux_checkpoint(flux_spec(), seed=0), checkpoints / "flux-a.safetensors")
    flux_save(flux_checkpoint(flux_spec(), seed=1), checkpoints / "flux-b.safetensors")
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {shared_tokenizers}\n", encoding="utf-8"
    )
    runtime = loom_runtime(
        "sdxl", "flux", "lora", "sd15",
        settings={"extra_model_paths": [tmp_path / "extra_model_paths.yaml"]},
    )  # fmt: skip
    return make_context(runtime)


def _clip(ctx, name: str):
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple

    return CheckpointLoaderSimple(ckpt_name=name).run(ctx).clip


def _hooked(ctx, clip, other: str, apply_to_conds: bool, schedule_clip: bool):
    """``clip`` with ``other`` as a CLIP-only hook: strength 1 until 40 %, then 0."""
    from loom_lora.hook_nodes import SetClipHooks

    from loom.nodes.builtin.hook_scheduling import CreateHookKeyframe, SetHookKeyframes
    from loom.nodes.builtin.hooks_model_as_lora import CreateHookModelAsLora

    hooks = CreateHookModelAsLora(ckpt_name=other, strength_model=0.0, strength_clip=1.0).run(ctx)
    first = CreateHookKeyframe(strength_mult=1.0, start_percent=0.0).run(ctx).hook_kf
    second = CreateHookKeyframe(strength_mult=0.0, start_percent=0.4, prev_hook_kf=first)
    hooks = SetHookKeyframes(hooks=hooks, hook_kf=second.run(ctx).hook_kf).run(ctx)
    clip = SetClipHooks(
        clip=clip, apply_to_conds=apply_to_conds, schedule_clip=schedule_clip, hooks=hooks
    ).run(ctx)
    return clip, hooks


def _sdxl(ctx, clip) -> list:
    from loom_sdxl.nodes import CLIPTextEncodeSDXL

    return CLIPTextEncodeSDXL(clip=clip, text_g="a red bottle", text_l="on a table").run(ctx)


def _flux(ctx, clip) -> list:
    from loom_flux.nodes import CLIPTextEncodeFlux

    return CLIPTextEncodeFlux(clip=clip, clip_l="a red bottle", t5xxl="on a table").run(ctx)


ENCODERS = [
    pytest.param(_sdxl, "sdxl-a.safetensors", "sdxl-b.safetensors", id="CLIPTextEncodeSDXL"),
    pytest.param(_flux, "flux-a.safetensors", "flux-b.safetensors", id="CLIPTextEncodeFlux"),
]


@pytest.mark.parametrize(("encode", "base", "other"), ENCODERS)
def test_hooks_are_attached_and_the_hooked_weights_used(ctx, encode, base, other):
    clip, hooks = _hooked(ctx, _clip(ctx, base), other, apply_to_conds=True, schedule_clip=False)
    [(cond, options)] = encode(ctx, clip)
    assert options[HOOKS] is hooks
    [(other_cond, other_options)] = encode(ctx, _clip(ctx, other))
    [(base_cond, _)] = encode(ctx, _clip(ctx, base))
    torch.testing.assert_close(cond, other_cond, rtol=0, atol=1e-5)  # the hook at strength 1
    assert not torch.allclose(cond, base_cond, atol=1e-3)
    torch.testing.assert_close(
        options["pooled_output"], other_options["pooled_output"], rtol=0, atol=1e-5
    )
    assert HOOKS not in other_options


@pytest.mark.parametrize(("encode", "base", "other"), ENCODERS)
def test_a_scheduled_clip_encodes_once_per_range(ctx, encode, base, other):
    clip, _ = _hooked(ctx, _clip(ctx, base), other, apply_to_conds=False, schedule_clip=True)
    [(first, first_options), (second, second_options)] = encode(ctx, clip)
    assert (first_options["clip_start_percent"], first_options["clip_end_percent"]) == (0.0, 0.4)
    assert (second_options["clip_start_percent"], second_options["clip_end_percent"]) == (0.4, 1.0)
    assert HOOKS not in first_options and HOOKS not in second_options  # apply_to_conds off
    [(other_cond, _)] = encode(ctx, _clip(ctx, other))
    [(base_cond, _)] = encode(ctx, _clip(ctx, base))
    torch.testing.assert_close(first, other_cond, rtol=0, atol=1e-5)
    torch.testing.assert_close(second, base_cond, rtol=0, atol=1e-5)


def test_clip_text_encode_controlnet_encodes_unscheduled_without_hooks(ctx):
    # ComfyUI's CLIPTextEncodeControlnet calls encode_from_tokens: the hooked weights with
    # keyframes ignored (strength 1 here, though the schedule starts at strength 0)
    from loom_lora.hook_nodes import SetClipHooks

    from loom.nodes.builtin.cond_nodes import CLIPTextEncodeControlnet
    from loom.nodes.builtin.hook_scheduling import CreateHookKeyframe, SetHookKeyframes
    from loom.nodes.builtin.hooks_model_as_lora import CreateHookModelAsLora

    hooks = CreateHookModelAsLora(
        ckpt_name="sdxl-b.safetensors", strength_model=0.0, strength_clip=1.0
    ).run(ctx)
    first = CreateHookKeyframe(strength_mult=0.0, start_percent=0.0).run(ctx).hook_kf
    second = CreateHookKeyframe(strength_mult=1.0, start_percent=0.4, prev_hook_kf=first)
    hooks = SetHookKeyframes(hooks=hooks, hook_kf=second.run(ctx).hook_kf).run(ctx)
    clip = SetClipHooks(
        clip=_clip(ctx, "sdxl-a.safetensors"), apply_to_conds=True, schedule_clip=True, hooks=hooks
    ).run(ctx)
    base = [[torch.zeros(1, 77, 96), {}]]
    [(_, options)] = CLIPTextEncodeControlnet(clip=clip, conditioning=base, text="a cat").run(ctx)
    from loom.nodes.builtin.models import CLIPTextEncode

    [(other, _)] = CLIPTextEncode(text="a cat", clip=_clip(ctx, "sdxl-b.safetensors")).run(ctx)
    torch.testing.assert_close(options["cross_attn_controlnet"], other, rtol=0, atol=1e-5)
    assert HOOKS not in options
