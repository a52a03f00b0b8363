"""CFG and conditioning batches: batching order, cfg=1, areas, masks, timestep ranges."""

from __future__ import annotations

import torch
from loom_samplers.guidance import Guider, calc_cond_batch, resolve_conditioning


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
    model, guider = _prepared(toy_model, {"positive": cond(1.0, tokens=154), "negative": cond(0.0, tokens=77)})
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
    entries = resolve_conditioning(cond(1.0, start_percent=0.5, end_percent=1.0), model, noise,
                                   prompt_type="positive")
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
    masked = resolve_conditioning(cond(0.7, mask=torch.ones(16, 16)), model, noise, prompt_type="positive")
    sigma = torch.tensor([3.0])
    assert torch.equal(calc_cond_batch(model, [plain], x, sigma)[0],
                       calc_cond_batch(model, [masked], x, sigma)[0])
