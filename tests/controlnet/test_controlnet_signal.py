"""The ControlSignal the apply nodes make: timestep range, strength, chaining, the hint's
resizing and batching, and clear errors for a ControlNet that does not fit the model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from loom.errors import LoomError, ModelFileError
from loom.model_sampling import DiscreteEps
from loom.types import ControlSignal

#: what a signal reads of the MODEL being sampled
MODEL = SimpleNamespace(model_sampling=DiscreteEps())


@pytest.fixture(scope="module")
def controls(tmp_path_factory) -> dict[str, Path]:
    from loom_controlnet.tiny import write_tiny_controlnet
    from loom_sd15.tiny import tiny_spec

    folder = tmp_path_factory.mktemp("cn")
    unet = tiny_spec().unet
    return {
        "a": write_tiny_controlnet(folder / "a.safetensors", unet, seed=1),
        "b": write_tiny_controlnet(folder / "b.safetensors", unet, seed=2),
        "wide": write_tiny_controlnet(
            folder / "wide.safetensors", tiny_spec(context=64).unet, seed=3
        ),
    }


def signal(path: Path, **kwargs):
    from loom_controlnet.loader import load_controlnet
    from loom_controlnet.signal import ControlNetSignal

    hint = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    return ControlNetSignal(load_controlnet(path), hint, **kwargs)


def call(sig, sigma: float = 1.0, batch: int = 2, chunks: int = 2, width: int = 32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    cond = {"c_crossattn": torch.randn(batch, 5, width, generator=g)}
    return sig.residuals(x, torch.full((batch,), sigma), cond, MODEL, chunks)


def test_is_a_control_signal_and_names_its_models(controls):
    a = signal(controls["a"])
    b = signal(controls["b"], previous=a)
    assert isinstance(b, ControlSignal)
    assert b.models(None) == [b.control.handle, a.control.handle]


def test_strength_scales_every_residual(controls):
    one = call(signal(controls["a"]))
    half = call(signal(controls["a"], strength=0.5))
    assert len(one.output) == 4 and len(one.middle) == 1
    for a, b in zip((*one.output, *one.middle), (*half.output, *half.middle), strict=True):
        torch.testing.assert_close(a * 0.5, b)


def test_timestep_range_in_sigmas(controls):
    ms = DiscreteEps()
    sig = signal(controls["a"], start_percent=0.2, end_percent=0.6)
    start, end = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.6)
    assert call(sig, sigma=start * 1.01) is None
    assert call(sig, sigma=end * 0.99) is None
    assert call(sig, sigma=(start + end) / 2) is not None
    # outside its range a chained signal hands on the previous one's residuals
    previous = signal(controls["b"])
    chained = signal(controls["a"], start_percent=0.2, end_percent=0.6, previous=previous)
    outside = call(chained, sigma=start * 1.01)
    for a, b in zip(outside.output, call(previous, sigma=start * 1.01).output, strict=True):
        assert torch.equal(a, b)


def test_chained_signals_add_up(controls):
    a, b = signal(controls["a"]), signal(controls["b"])
    chained = signal(controls["b"], previous=signal(controls["a"]))
    ra, rb, both = call(a), call(b), call(chained)
    for x, y, z in zip(
        (*ra.output, *ra.middle),
        (*rb.output, *rb.middle),
        (*both.output, *both.middle),
        strict=True,
    ):
        torch.testing.assert_close(x + y, z)


def test_hint_is_resized_to_the_latent_like_comfyui(controls):
    sig = signal(controls["a"])  # a 48x40 hint
    resized = sig._hint_for(torch.zeros(1, 4, 8, 6))  # a 48x64 image's latent
    assert resized.shape == (1, 3, 64, 48)
    # centre-cropped to the latent's aspect (30 of 48 columns), then nearest-exact
    cropped = sig.hint[:, :, :, 9:39]
    expected = torch.nn.functional.interpolate(cropped, size=(64, 48), mode="nearest-exact")
    assert torch.equal(resized, expected)
    assert sig._hint_for(torch.zeros(2, 4, 8, 6)) is resized  # kept for the same size


def test_hint_batches_follow_comfyui_broadcast():
    from loom_controlnet.signal import broadcast_hint

    hint = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert broadcast_hint(hint[:1], 4, 2).shape[0] == 1  # one image broadcasts
    out = broadcast_hint(hint, 4, 2)  # 2 rows per chunk, 2 chunks
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    out = broadcast_hint(hint[:2], 6, 2)  # 3 rows per chunk from 2 images
    assert out.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_controlnet_for_another_model_gives_a_clear_error(controls):
    wide = signal(controls["wide"], applied_by="ControlNetApplyAdvanced")
    with pytest.raises(LoomError) as caught:
        call(wide, width=32)
    message = str(caught.value)
    assert "ControlNetApplyAdvanced" in message
    assert "'control_net'" in message and "wide.safetensors" in message
    assert "64" in message and "32" in message


def test_a_file_that_is_not_a_controlnet(tmp_path):
    from loom_controlnet.loader import load_controlnet
    from loom_sd15.tiny import write_tiny_checkpoint

    from loom.memory import write_safetensors

    lora = write_safetensors(
        tmp_path / "style.safetensors",
        {
            "lora_unet_x.lora_up.weight": torch.zeros(2, 2),
            "lora_unet_x.lora_down.weight": torch.zeros(2, 2),
        },
    )
    with pytest.raises(ModelFileError, match=r"style\.safetensors is not a ControlNet: .*LoRA"):
        load_controlnet(lora)
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt.safetensors", vocab_size=64)
    with pytest.raises(
        ModelFileError, match=r"ckpt\.safetensors is not a ControlNet: .*checkpoint"
    ):
        load_controlnet(ckpt)


def test_shuffle_files_average_their_residuals_over_space(controls, tmp_path):
    """ComfyUI's rule for ``*_shuffle`` files: each residual is its spatial mean, repeated."""
    import shutil

    shuffle = tmp_path / "control_v11e_sd15_shuffle.safetensors"
    shutil.copy(controls["a"], shuffle)
    plain, averaged = call(signal(controls["a"])), call(signal(shuffle))
    for p, a in zip(
        (*plain.output, *plain.middle), (*averaged.output, *averaged.middle), strict=True
    ):
        torch.testing.assert_close(a, p.mean(dim=(2, 3), keepdim=True).expand_as(p))
