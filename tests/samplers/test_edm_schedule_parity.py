"""ModelSamplingContinuousEDM's schedule against k-diffusion's: its 1,000 sigmas are
``get_sigmas_exponential`` over the same range, and a karras schedule read from a model on it
is k-diffusion's ``get_sigmas_karras`` between its ends."""

from __future__ import annotations

import torch

from loom.model_sampling import ContinuousEDM


def test_edm_sigmas_are_k_diffusions_exponential_schedule(kdiff):
    sampling = ContinuousEDM(0.002, 120.0, prediction="edm", sigma_data=0.5)
    expected = kdiff.get_sigmas_exponential(1000, 0.002, 120.0)[:-1].flip(0)
    torch.testing.assert_close(sampling.sigmas, expected.float(), rtol=2e-5, atol=0)


def test_karras_schedule_on_an_edm_model_is_k_diffusions(kdiff):
    from loom_samplers.schedulers import karras

    sampling = ContinuousEDM(0.002, 80.0)
    got = karras(sampling, 8)
    expected = kdiff.get_sigmas_karras(8, float(sampling.sigma_min), float(sampling.sigma_max))
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-5, atol=1e-6)
