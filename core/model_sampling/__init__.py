"""Model sampling math every family shares: noise schedules and how a model's output
becomes a denoised estimate.

Three parameterisations cover SD1.x/SD2.x/SDXL and Flux:

* :class:`DiscreteEps` — DDPM's discrete schedule (``scaled_linear`` betas, 1000 steps),
  the network predicts noise ε (SD1.x, SDXL).
* :class:`DiscreteV` — same schedule, the network predicts ``v`` (SD2.x 768-v).
* :class:`FlowMatching` — rectified flow with a time ``shift`` (SD3, Flux).

Sigmas follow k-diffusion's convention: ``x_t = x_0 + σ ε`` for the discrete models (inputs
are scaled by ``1/sqrt(σ²+1)`` before the network), ``x_t = (1-σ) x_0 + σ ε`` for flow.

The parameterisations live in modules by idea (:mod:`loom.model_sampling.base`,
:mod:`~loom.model_sampling.discrete`, :mod:`~loom.model_sampling.flow`,
:mod:`~loom.model_sampling.continuous`); plugins import them from ``loom.model_sampling``.
"""

from __future__ import annotations

# Not public (outside __all__), not used here: importable from loom.model_sampling as when it
# was one module, for code that took them from there.
import math  # noqa: F401
from typing import TYPE_CHECKING  # noqa: F401

import attrs  # noqa: F401

from loom.model_sampling.base import ModelSampling
from loom.model_sampling.continuous import EDM_PREDICTIONS, ContinuousEDM, ContinuousV
from loom.model_sampling.discrete import (
    DiscreteEps,
    DiscreteImgToImg,
    DiscreteLCM,
    DiscreteV,
    DiscreteX0,
    discrete_sigmas,
    rescale_zero_terminal_snr,
    set_sigmas,
)
from loom.model_sampling.flow import FlowMatching, flux_shift, time_shift

__all__ = [
    "EDM_PREDICTIONS",
    "ContinuousEDM",
    "ContinuousV",
    "DiscreteEps",
    "DiscreteImgToImg",
    "DiscreteLCM",
    "DiscreteV",
    "DiscreteX0",
    "FlowMatching",
    "ModelSampling",
    "discrete_sigmas",
    "flux_shift",
    "rescale_zero_terminal_snr",
    "set_sigmas",
    "time_shift",
]
