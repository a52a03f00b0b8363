"""Sigma tools and noise of ComfyUI's custom sampling (``comfy_extras/nodes_custom_sampler.py``)
that are not schedulers: ExtendIntermediateSigmas, SamplingPercentToSigma, ManualSigmas and
AddNoise."""

from __future__ import annotations

import math
import re

import loom
from loom.types import Latent, Model, Noise, Sigmas
from loom_samplers.model_interface import process_latent_in, process_latent_out
from loom_samplers.node_inputs import unrounded_float

ui = loom.ui

# A signed decimal number, the way ManualSigmas reads "1, 0.5" (exponents are not numbers here).
_NUMBER = re.compile(r"[-+]?\d*\.?\d+")


def _spacing(name: str, x):
    if name == "cosine":
        return (x * math.pi / 2).sin()
    if name == "sine":
        return 1 - (x * math.pi / 2).cos()
    return x


@loom.node("ExtendIntermediateSigmas", category="sampling/custom_sampling/sigmas", v3=True)
class ExtendIntermediateSigmas:
    """Puts ``steps - 1`` extra sigmas between each pair whose first sigma lies within
    [end_at_sigma, start_at_sigma] (a negative start means no upper bound)."""

    sigmas: Sigmas
    steps: int = ui.int(2, min=1, max=100)
    start_at_sigma: float = unrounded_float(-1.0, 20000.0, min=-1.0)
    end_at_sigma: float = unrounded_float(12.0, 20000.0)
    spacing: str = ui.combo(["linear", "cosine", "sine"])

    def run(self, ctx: loom.RunContext) -> Sigmas:
        import torch

        start = math.inf if self.start_at_sigma < 0 else self.start_at_sigma
        fractions = _spacing(
            self.spacing, torch.linspace(0, 1, self.steps + 1, device=self.sigmas.device)[1:-1]
        )
        extended: list[float] = []
        for current, following in zip(self.sigmas[:-1], self.sigmas[1:], strict=True):
            extended.append(float(current))
            if self.end_at_sigma <= current <= start:
                extended.extend((fractions * (following - current) + current).tolist())
        if len(self.sigmas) > 0:
            extended.append(float(self.sigmas[-1]))
        return torch.FloatTensor(extended)


@loom.outputs
class SigmaValue:
    sigma_value: float = loom.output()


@loom.node("SamplingPercentToSigma", category="sampling/custom_sampling/sigmas", v3=True)
class SamplingPercentToSigma:
    """The model's sigma at a fraction of its schedule (0 = noisiest)."""

    model: Model
    sampling_percent: float = ui.float(0.0, min=0.0, max=1.0, step=0.0001)
    return_actual_sigma: bool = ui.boolean(
        False,
        tooltip="Return the actual sigma value instead of the value used for interval checks.\n"
        "This only affects results at 0.0 and 1.0.",
    )

    def run(self, ctx: loom.RunContext) -> SigmaValue:
        model_sampling = self.model.model_sampling
        sigma = model_sampling.percent_to_sigma(self.sampling_percent)
        if self.return_actual_sigma:
            if self.sampling_percent == 0.0:
                sigma = float(model_sampling.sigma_max)
            elif self.sampling_percent == 1.0:
                sigma = float(model_sampling.sigma_min)
        return SigmaValue(sigma_value=sigma)


@loom.node("ManualSigmas", category="_for_testing/custom_sampling", experimental=True, v3=True)
class ManualSigmas:
    """Sigmas typed as text: every number in the string, in order."""

    sigmas: str = ui.string("1, 0.5", multiline=False)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        import torch

        return torch.FloatTensor([float(n) for n in _NUMBER.findall(self.sigmas)])


@loom.node("AddNoise", category="_for_testing/custom_sampling/noise", experimental=True, v3=True)
class AddNoise:
    """Noises a latent to the level the sigmas span (``|σ_first - σ_last|``, or σ itself)."""

    model: Model
    noise: Noise
    sigmas: Sigmas
    latent_image: Latent

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        if len(self.sigmas) == 0:
            return self.latent_image
        samples = self.latent_image["samples"]
        noise = self.noise.generate_noise(self.latent_image)
        sigmas = self.sigmas
        scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
        if torch.count_nonzero(samples) > 0:  # an empty latent is not shifted
            samples = process_latent_in(self.model, samples)
        noisy = self.model.model_sampling.noise_scaling(scale, noise, samples)
        noisy = process_latent_out(self.model, noisy)
        out = dict(self.latent_image)
        out["samples"] = torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)
        return out


NODES = [ExtendIntermediateSigmas, SamplingPercentToSigma, ManualSigmas, AddNoise]
