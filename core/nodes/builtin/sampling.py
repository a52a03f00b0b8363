"""Model-agnostic sampling helpers: DifferentialDiffusion's per-step mask and SetFirstSigma.

``DifferentialDiffusion`` (ComfyUI ``comfy_extras/nodes_differential_diffusion.py``, after
Levin & Fried's *Differential Diffusion*) turns a soft inpainting mask into a schedule: at each
model call only the latent pixels whose mask value reaches the current progress threshold are
denoised, so a mask value ``m`` is denoised for roughly the last ``m`` of the run. It sets the
model handle's :class:`loom.samplers.DenoiseMaskFunction`, which the sampling run applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom.samplers import DenoiseMaskStep
from loom.types import Model, Sigmas

ui = loom.ui


@attrs.frozen
class DifferentialMask:
    """The DifferentialDiffusion mask rule (a :class:`loom.samplers.DenoiseMaskFunction`).

    With ``t(σ)`` the model's timestep, ``σ_from`` the schedule's first sigma and ``σ_to`` its
    last one (at least the model's ``sigma_min``), the threshold is
    ``(t(σ) - t(σ_to)) / (t(σ_from) - t(σ_to))`` and the mask becomes ``mask >= threshold``;
    below full ``strength`` that binary mask is mixed back with the soft one.
    """

    strength: float = 1.0

    def threshold(self, step: DenoiseMaskStep) -> Any:
        sampling = step.model_sampling
        sigma_to = sampling.sigma_min
        if step.sigmas[-1] > sigma_to:
            sigma_to = step.sigmas[-1]
        ts_from = sampling.timestep(step.sigmas[0])
        ts_to = sampling.timestep(sigma_to)
        current = sampling.timestep(step.sigma[0])
        return (current - ts_to) / (ts_from - ts_to)

    def __call__(self, step: DenoiseMaskStep) -> Any:
        mask = step.denoise_mask
        binary = (mask >= self.threshold(step)).to(mask.dtype)
        if self.strength and self.strength < 1:
            return self.strength * binary + (1 - self.strength) * mask
        return binary


@loom.node(
    "DifferentialDiffusion",
    category="_for_testing",
    display_name="Differential Diffusion",
    experimental=True,
    v3=True,
)
class DifferentialDiffusion:
    # no docstring: /object_info's description is ComfyUI's (empty); the module says what it does

    model: Model
    strength: float = ui.float(1.0, min=0.0, max=1.0, step=0.01, optional=True)

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model.clone()
        strength = 1.0 if self.strength is None else float(self.strength)
        model.denoise_mask_function = DifferentialMask(strength)
        return model


@loom.node("SetFirstSigma", category="sampling/custom_sampling/sigmas", v3=True)
class SetFirstSigma:
    # the schedule with its first sigma replaced (descriptions stay ComfyUI's: empty)

    sigmas: Sigmas
    sigma: float = ui.float(136.0, min=0.0, max=20000.0, step=0.001, round=False)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        sigmas = self.sigmas.clone()
        sigmas[0] = self.sigma
        return sigmas


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(DifferentialDiffusion, python_module="comfy_extras.nodes_differential_diffusion")
    register(SetFirstSigma, python_module="comfy_extras.nodes_custom_sampler")
