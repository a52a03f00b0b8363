"""Playground v2.5 on an SDXL UNet: ModelSamplingContinuousEDM's ``edm_playground_v2.5``
takes SDXL's per-channel latent format, and sampling and previews use it (tiny SDXL files,
real executor)."""

from __future__ import annotations

import copy
import io

import numpy as np
import torch
from loom_sdxl.model import PLAYGROUND_V2_5_LATENT_FORMAT, SDXL_LATENT_FORMAT
from PIL import Image
from sdxl_markers import needs_samplers
from test_sdxl_workflows import base_prompt, image_of, run

pytestmark = [needs_samplers]

MEAN = (-1.6574, 1.886, -1.383, 2.5155)
STD = (8.4927, 5.9022, 6.5498, 5.2299)


def edm_prompt(sampling: str) -> dict:
    prompt = copy.deepcopy(base_prompt())
    prompt["10"] = {
        "class_type": "ModelSamplingContinuousEDM",
        "inputs": {"model": ["4", 0], "sampling": sampling, "sigma_max": 80.0, "sigma_min": 0.002},
    }
    prompt["3"]["inputs"].update(
        model=["10", 0], steps=2, sampler_name="euler", scheduler="karras", cfg=1.0
    )
    return prompt


def test_playground_format_is_diffusers_statistics_at_scale_half():
    fmt = PLAYGROUND_V2_5_LATENT_FORMAT
    assert (fmt.latents_mean, fmt.latents_std, fmt.scale_factor) == (MEAN, STD, 0.5)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5
    mean, std = torch.tensor(MEAN).view(1, 4, 1, 1), torch.tensor(STD).view(1, 4, 1, 1)
    torch.testing.assert_close(fmt.process_in(latent), (latent - mean) * 0.5 / std)
    torch.testing.assert_close(fmt.process_out(fmt.process_in(latent)), latent)


def test_edm_playground_node_gives_the_model_playgrounds_format(runtime):
    from loom_samplers.ksampler import latent_preview
    from loom_samplers.model_interface import process_latent_in, process_latent_out

    result = run(runtime, edm_prompt("edm_playground_v2.5"))
    model = result.values["10"][0][0]
    assert model.latent_format is PLAYGROUND_V2_5_LATENT_FORMAT
    assert result.values["4"][0][0].latent_format is SDXL_LATENT_FORMAT  # the loader's, untouched
    assert (model.model_sampling.prediction, model.model_sampling.sigma_data) == ("edm", 0.5)
    # what the sampler does to a latent before and after sampling: the per-channel statistics
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    inside = process_latent_in(model, latent)
    torch.testing.assert_close(inside, PLAYGROUND_V2_5_LATENT_FORMAT.process_in(latent))
    torch.testing.assert_close(process_latent_out(model, inside), latent)
    # previews read Playground's RGB factors, with no bias: channel 0 alone shows its row
    unit = torch.zeros(1, 4, 8, 8)
    unit[:, 0] = 1.0
    preview = latent_preview(unit, model.latent_format)
    pixel = np.asarray(Image.open(io.BytesIO(preview.data)).convert("RGB"))[4, 4]
    expected = [(v + 1) / 2 * 255 for v in (0.3920, 0.4054, 0.4549)]
    assert np.allclose(pixel, expected, atol=3)


def test_edm_playground_sampling_differs_from_plain_edm_only_by_the_latent_format(runtime):
    playground = image_of(run(runtime, edm_prompt("edm_playground_v2.5")))
    edm = image_of(run(runtime, edm_prompt("edm")))
    assert playground.shape == edm.shape == (1, 64, 64, 3)
    assert torch.isfinite(playground).all() and torch.isfinite(edm).all()
    assert not torch.allclose(playground, edm, atol=1e-3)
    assert torch.equal(playground, image_of(run(runtime, edm_prompt("edm_playground_v2.5"))))
