"""CFG and conditioning batches: batching order, cfg=1, areas, masks, timestep ranges."""

from __future__ import annotations

import pytest
import torch
from loom_samplers.conditioning_batches import calc_cond_batch, resolve_conditioning
from loom_samplers.guiders import Guider

from loom.errors import LoomError


def _prepared(toy_model, conds, cfg=8.0, shape=(1, 4, 16, 16)):
    model = toy_model()
    guider = Guider(model, conds, cfg)
    noise = torch.zeros(shape)
    guider.prepare(noise, noise, None, 0)
    return model, guider


def test_samplers_cfg_batches_uncond_first(toy_model, cond):
    model, guider = _prepared(toy_model, {"positive": cond(1.0), "negative": cond(-1.0)})
    x = torch.randn(1, 4, 16, 16)
    out, _ = guider.predict(x, torch.tensor([2.0]))
    assert len(model.calls) == 1 and model.calls[0][0] == (2, 4, 16, 16)
    d = lambda mu: (x + 4.0 * mu) / 5.0  # noqa: E731 - the toy model's answer at σ = 2
    assert torch.allclose(out, d(-1.0) + (d(1.0) - d(-1.0)) * 8.0, atol=1e-5)


def test_samplers_cfg_one_skips_the_negative(toy_model, cond):
    model, guider = _prepared(toy_model, {"positive": cond(1.0), "negative": cond(-1.0)}, cfg=1.0)
    guider.predict(torch.randn(1, 4, 16, 16), torch.tensor([2.0]))
    assert [c[0][0] for c in model.calls] == [1]
    guider.predict(torch.randn(1, 4, 16, 16), torch.tensor([2.0]), need_uncond=True)
    assert model.calls[-1][0][0] == 2


def test_samplers_token_lengths_pad_by_repetition(toy_model, cond):
    model, guider = _prepared(
        toy_model, {"positive": cond(1.0, tokens=154), "negative": cond(0.0, tokens=77)}
    )
    guider.predict(torch.randn(1, 4, 16, 16), torch.tensor([1.0]))
    assert model.calls[0][2]["c_crossattn"] == (2, 154, 8)


def test_samplers_area_conditioning_is_weighted(toy_model, cond):
    # positive: a full entry (value 0) and a top-left area entry (value 1) at strength 1
    positive = cond(0.0) + cond(1.0, area=(8, 8, 0, 0), strength=1.0)
    model, guider = _prepared(toy_model, {"positive": positive, "negative": cond(0.0)}, cfg=1.0)
    x = torch.zeros(1, 4, 16, 16)
    out, _ = guider.predict(x, torch.tensor([1.0]))
    # far from the area: only the full entry (mu 0); inside the area: both entries, averaged
    assert torch.allclose(out[..., 12:, 12:], torch.zeros(1, 4, 4, 4), atol=1e-6)
    assert out[0, 0, 0, 0].item() > 0.2
    shapes = sorted(call[0] for call in model.calls)
    assert (1, 4, 8, 8) in shapes


def test_samplers_area_past_the_latent_is_clipped_one_outside_it_is_named(toy_model, cond):
    # ends past the 16x16 latent: clipped to what overlaps (ComfyUI does the same)
    positive = cond(0.0) + cond(1.0, area=(8, 8, 12, 12), strength=1.0)
    model, guider = _prepared(toy_model, {"positive": positive}, cfg=1.0)
    guider.predict(torch.zeros(1, 4, 16, 16), torch.tensor([1.0]))
    assert (1, 4, 4, 4) in [call[0] for call in model.calls]
    # starts past it: a clear error naming the area in pixels, not a bare narrow() failure
    outside = cond(0.0) + cond(1.0, area=(8, 8, 0, 20), strength=1.0)
    with pytest.raises(LoomError) as raised:
        _prepared(toy_model, {"positive": outside}, cfg=1.0)
    assert "area conditioning of 64x64 at (160, 0) lies outside the 128x128 image" in str(
        raised.value
    )


def test_samplers_mask_conditioning(toy_model, cond):
    mask = torch.zeros(16, 16)
    mask[:, :8] = 1.0
    positive = cond(0.0) + cond(1.0, mask=mask, mask_strength=1.0)
    _model, guider = _prepared(toy_model, {"positive": positive}, cfg=1.0)
    out, _ = guider.predict(torch.zeros(1, 4, 16, 16), torch.tensor([1.0]))
    # left half: (0 + 0.5) / 2 weights -> 0.25; right half: only the plain entry -> 0
    assert torch.allclose(out[..., :, 8:], torch.zeros(1, 4, 16, 8), atol=1e-6)
    assert torch.allclose(out[..., :, :7], torch.full((1, 4, 16, 7), 0.25), atol=1e-5)


def test_samplers_timestep_ranges(toy_model, cond):
    model = toy_model()
    noise = torch.zeros(1, 4, 8, 8)
    entries = resolve_conditioning(
        cond(1.0, start_percent=0.5, end_percent=1.0), model, noise, prompt_type="positive"
    )
    start = model.model_sampling.percent_to_sigma(0.5)
    assert entries[0].timestep_start == start and entries[0].timestep_end == 0.0
    high = calc_cond_batch(model, [entries], noise, torch.tensor([start * 2]))[0]
    low = calc_cond_batch(model, [entries], noise, torch.tensor([start / 2]))[0]
    assert torch.count_nonzero(high) == 0  # skipped: before its start
    assert torch.count_nonzero(low) > 0


def test_samplers_single_plain_entry_shortcut_is_exact(toy_model, cond):
    """A group's only full-size entry skips the weighted average; ComfyUI's average gives the
    same bits ((0 + o*1) / (1e-37 + 1) == o), checked against an all-ones mask entry."""
    model = toy_model()
    x = torch.randn(1, 4, 16, 16)
    noise = torch.zeros(1, 4, 16, 16)
    plain = resolve_conditioning(cond(0.7), model, noise, prompt_type="positive")
    masked = resolve_conditioning(
        cond(0.7, mask=torch.ones(16, 16)), model, noise, prompt_type="positive"
    )
    sigma = torch.tensor([3.0])
    assert torch.equal(
        calc_cond_batch(model, [plain], x, sigma)[0], calc_cond_batch(model, [masked], x, sigma)[0]
    )


def test_samplers_conditioning_is_batched_once_per_run(toy_model, cond, monkeypatch):
    """The CFG pair's text conditioning is the same tensors at every step: batched once per
    run (a fresh ``prepare`` starts over), with the same predictions as batching every step."""
    model, guider = _prepared(toy_model, {"positive": cond(1.0), "negative": cond(-1.0)})
    cats = []
    real_cat = torch.cat
    monkeypatch.setattr(
        torch,
        "cat",
        lambda tensors, *a, **k: cats.append(len(tensors)) or real_cat(tensors, *a, **k),
    )
    xs = [torch.randn(1, 4, 16, 16) for _ in range(4)]
    outs = [
        guider.predict(x, torch.tensor([s]))[0]
        for x, s in zip(xs, (8.0, 4.0, 2.0, 1.0), strict=True)
    ]
    conds_cat = len(cats) - 2 * 4  # each step also batches x and sigma
    assert conds_cat == 1 and len(guider.batched) == 1
    monkeypatch.setattr(torch, "cat", real_cat)
    fresh = [
        calc_cond_batch(
            model, [guider.resolved["positive"], guider.resolved["negative"]], x, torch.tensor([s])
        )
        for x, s in zip(xs, (8.0, 4.0, 2.0, 1.0), strict=True)
    ]
    for out, (c, u) in zip(outs, fresh, strict=True):
        assert torch.equal(out, u + (c - u) * 8.0)
    guider.prepare(torch.zeros(1, 4, 16, 16), torch.zeros(1, 4, 16, 16), None, 0)
    assert guider.batched == {}


def test_samplers_batched_conditioning_kept_is_bounded(toy_model, cond):
    """Conditioning made anew at every step (a batch repeat) is batched anew, and a run keeps
    only the last few batches."""
    from loom_samplers import conditioning_batches

    _model, guider = _prepared(
        toy_model, {"positive": cond(1.0), "negative": cond(-1.0)}, shape=(2, 4, 8, 8)
    )
    for step in range(conditioning_batches._BATCHED_KEPT + 5):
        guider.predict(torch.randn(2, 4, 8, 8), torch.tensor([1.0 + step, 1.0 + step]))
    assert len(guider.batched) == conditioning_batches._BATCHED_KEPT  # the oldest went first


def test_samplers_controlnet_text_is_batched_like_the_prompt(toy_model, cond):
    """CLIPTextEncodeControlnet's ``cross_attn_controlnet`` reaches the model call as
    ``crossattn_controlnet``, token lengths padded by repetition to their LCM like
    ``c_crossattn``; entries with and without it are not batched together."""
    text_a, text_b = torch.full((1, 3, 8), 2.0), torch.full((1, 2, 8), 3.0)
    positive = cond(1.0, cross_attn_controlnet=text_a)
    negative = cond(0.0, tokens=77, cross_attn_controlnet=text_b)
    model, guider = _prepared(toy_model, {"positive": positive, "negative": negative})
    guider.predict(torch.randn(1, 4, 16, 16), torch.tensor([1.0]))
    [(_, _, shapes)] = model.calls
    assert shapes["crossattn_controlnet"] == (2, 6, 8)
    model, guider = _prepared(toy_model, {"positive": positive, "negative": cond(0.0)})
    guider.predict(torch.randn(1, 4, 16, 16), torch.tensor([1.0]))
    assert sorted("crossattn_controlnet" in call[2] for call in model.calls) == [False, True]
