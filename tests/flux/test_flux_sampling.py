"""Flux's schedule as ComfyUI computes it, and the denoiser's flow-matching math."""

from __future__ import annotations

import pytest
import torch
from loom_flux.dit import FluxTransformer
from loom_flux.model import FluxModel
from loom_flux.sampling import FluxSampling, mu_for_size
from loom_flux.tiny import dit_state, tiny_spec


def simple(sampling, steps):
    table = sampling.sigmas
    stride = len(table) / steps
    return [round(float(table[-(1 + int(x * stride))]), 4) for x in range(steps)]


def test_default_schedules_without_model_sampling_flux():
    dev = FluxModel(FluxTransformer(tiny_spec(guidance=True).dit))
    schnell = FluxModel(FluxTransformer(tiny_spec(guidance=False).dit))
    assert simple(dev.model_sampling, 4) == [1.0, 0.9045, 0.7595, 0.5128]
    assert simple(schnell.model_sampling, 4) == [1.0, 0.75, 0.5, 0.25]


def test_model_sampling_flux_shift_is_linear_in_patches():
    assert mu_for_size(256, 256) == pytest.approx(0.5)
    assert mu_for_size(1024, 1024) == pytest.approx(1.15)
    assert simple(FluxSampling(shift=mu_for_size(256, 256)), 4)[0] == 1.0
    sampling = FluxSampling(shift=0.5)
    assert sampling.sigmas.dtype == torch.float32 and len(sampling.sigmas) == 10_000
    assert float(sampling.timestep(torch.tensor(0.25))) == 0.25
    assert sampling.percent_to_sigma(0.0) == 1.0 and sampling.percent_to_sigma(1.0) == 0.0


def test_apply_model_is_x_minus_sigma_times_velocity():
    config = tiny_spec().dit
    dit = FluxTransformer(config)
    dit.load_state_dict(dit_state(config, seed=5))
    model = FluxModel(dit.eval())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 4, 6, generator=g)
    context = torch.randn(2, 9, 32, generator=g)
    pooled = torch.randn(2, 32, generator=g)
    sigma = torch.tensor([0.8, 0.3])
    conds = model.extra_conds({"pooled_output": pooled, "cross_attn": context}, noise=x)
    assert float(conds["guidance"]) == 3.5  # ComfyUI's default without FluxGuidance
    cond = {"c_crossattn": context, "y": pooled, "guidance": torch.tensor([3.5, 3.5])}
    with torch.no_grad():
        v = dit(x, sigma, context, pooled, torch.tensor([3.5, 3.5]))
    expected = x - sigma[:, None, None, None] * v
    assert torch.allclose(model.apply_model(x, sigma, cond), expected, atol=1e-6)


def test_fill_model_without_mask_inputs_is_a_clear_error():
    from loom.errors import LoomError

    dit = FluxTransformer(tiny_spec(in_channels=384).dit)
    model = FluxModel(dit)
    with pytest.raises(LoomError) as error:
        model.extra_conds({"pooled_output": torch.zeros(1, 32)}, noise=torch.zeros(1, 16, 4, 4))
    assert "InpaintModelConditioning" in (error.value.hint or "")


def test_kontext_references_are_placed_as_comfyui_offsets_them():
    from loom_flux.dit import image_ids, patchify

    config = tiny_spec().dit
    dit = FluxTransformer(config)
    dit.load_state_dict(dit_state(config, seed=6))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 4, generator=g)
    refs = [torch.randn(1, 16, 4, 6, generator=g), torch.randn(1, 16, 4, 4, generator=g)]
    args = (
        torch.tensor([0.6]),
        torch.randn(1, 5, 32, generator=g),
        torch.randn(1, 32, generator=g),
    )
    first = image_ids(1, 2, 3, x.device).clone()
    first[..., 0] = 1
    second = image_ids(1, 2, 2, x.device).clone()
    second[..., 0] = 1
    second[..., 1] += 2  # below the first: 4 + 4 rows is not taller than 6 + 4 columns
    tokens = torch.cat([patchify(x), patchify(refs[0]), patchify(refs[1])], dim=1)
    ids = torch.cat([image_ids(1, 2, 2, x.device), first, second], dim=1)
    with torch.no_grad():
        got = dit(x, *args, torch.tensor([2.5]), ref_latents=refs)
        out = dit.forward_tokens(
            tokens, ids, args[1], torch.zeros(1, 5, 3), args[0], args[2], torch.tensor([2.5])
        )
        plain = dit(x, *args, torch.tensor([2.5]))
    expected = out[:, :4].reshape(1, 2, 2, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 16, 4, 4)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_reference_latent_and_kontext_image_scale_nodes():
    from loom_flux.nodes import FluxKontextImageScale, ReferenceLatent

    cond = [[torch.zeros(1, 4, 8), {"pooled_output": torch.zeros(1, 8)}]]
    latent = {"samples": torch.ones(1, 16, 4, 4)}
    once = ReferenceLatent(conditioning=cond, latent=latent).run(None)
    twice = ReferenceLatent(conditioning=once, latent=latent).run(None)
    assert len(twice[0][1]["reference_latents"]) == 2 and "reference_latents" not in cond[0][1]
    scaled = FluxKontextImageScale(image=torch.rand(1, 300, 600, 3)).run(None)
    assert scaled.shape == (1, 720, 1456, 3)  # the preferred size nearest to aspect 2
