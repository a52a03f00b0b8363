"""Fixtures for the loom-samplers tests: the k-diffusion reference, Gaussian-data denoisers,
a toy MODEL and a registry holding only this plugin.

k-diffusion (PyPI ``k-diffusion``, test-only) imports torchvision, wandb, ... from its package
``__init__``; its samplers need none of them. The ``kdiff`` fixture therefore loads only
``k_diffusion/sampling.py`` and ``utils.py`` from the installed package, with a placeholder
``torchvision`` module in ``sys.modules`` while they import, and skips when k-diffusion (or
scipy/torchsde/torchdiffeq/tqdm, which sampling.py imports) is missing.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest
import torch


def _placeholder_torchvision() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    return {
        "torchvision": root,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }


@pytest.fixture(scope="session")
def kdiff():
    """``k_diffusion.sampling`` from the installed k-diffusion package (or skip)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    for dep in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"k-diffusion's sampling module needs {dep}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    name = "_kdiff_reference"
    saved = {key: sys.modules.get(key) for key in _placeholder_torchvision()}
    for key, module in _placeholder_torchvision().items():
        sys.modules.setdefault(key, module)
    try:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]  # type: ignore[attr-defined]
        sys.modules[name] = package
        for sub in ("utils", "sampling"):
            sub_spec = importlib.util.spec_from_file_location(f"{name}.{sub}", folder / f"{sub}.py")
            module = importlib.util.module_from_spec(sub_spec)
            sys.modules[f"{name}.{sub}"] = module
            sub_spec.loader.exec_module(module)
            setattr(package, sub, module)
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return package.sampling


class GaussianDenoiser:
    """The exact denoiser for data ~ N(mu, s²) per element: D(x, σ) = (s² x + σ² mu)/(s² + σ²)."""

    def __init__(self, mu: torch.Tensor, s: float, model_sampling=None) -> None:
        self.mu = mu
        self.s2 = s * s
        self.calls = 0
        if model_sampling is not None:
            self.model_sampling = model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: object) -> torch.Tensor:
        self.calls += 1
        sigma2 = (sigma.to(x.dtype) ** 2).view(-1, *([1] * (x.ndim - 1)))
        return (self.s2 * x + sigma2 * self.mu) / (self.s2 + sigma2)


@pytest.fixture
def gaussian():
    """``gaussian(mu, s)``: a :class:`GaussianDenoiser` factory."""
    return GaussianDenoiser


def keyed_noise(shape, dtype=torch.float32):
    """Noise that depends only on ``(sigma, sigma_next)``: the same for any call order.

    Unlike a Brownian tree, it does not change when a sampler computes the same sigma with
    other rounding (k-diffusion's dpmpp_sde asks for ``exp(log σ)`` where ComfyUI asks for σ).
    """

    def draw(sigma, sigma_next):
        # log σ to 1e-3: exp(log σ) and σ (same value, other rounding) share a key.
        key = [round(math.log(max(float(s), 1e-30)) * 1000) for s in (sigma, sigma_next)]
        generator = torch.Generator().manual_seed((key[0] * 1_000_003 + key[1]) % (2**63))
        return torch.randn(shape, generator=generator, dtype=dtype)

    return draw


@pytest.fixture
def noise_for():
    """``noise_for(shape)``: a noise function keyed on its sigmas (see :func:`keyed_noise`)."""
    return keyed_noise


class ToyModel:
    """A tiny MODEL: the Gaussian-data denoiser whose mean is the conditioning's mean value.

    ``apply_model`` records the shapes and sigmas it was called with.
    """

    def __init__(self, sampling=None, channels: int = 4, s: float = 1.0) -> None:
        from loom.model_sampling import DiscreteEps
        from loom.types import LatentFormat

        self.model_sampling = sampling or DiscreteEps()
        factors = tuple((0.3 * (c + 1), -0.2 * c, 0.1) for c in range(channels))
        self.latent_format = LatentFormat(channels=channels, scale_factor=0.5, rgb_factors=factors)
        self.s2 = s * s
        self.calls: list[tuple[tuple[int, ...], list[float], dict]] = []

    def clone(self) -> ToyModel:
        return self

    def apply_model(self, x, sigma, cond):
        self.calls.append(
            (
                tuple(x.shape),
                [float(v) for v in sigma],
                {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in cond.items()},
            )
        )
        mu = cond["c_crossattn"].mean(dim=(1, 2)).view(-1, *([1] * (x.ndim - 1)))
        if sigma.shape[0] != x.shape[0]:
            raise AssertionError("one sigma per row expected")
        if hasattr(self.model_sampling, "shift"):  # flow: x = (1-σ) x0 + σ ε with x0 ~ N(mu, s²)
            sig = sigma.view(-1, *([1] * (x.ndim - 1)))
            var = (1 - sig) ** 2 * self.s2 + sig**2
            return mu + (1 - sig) * self.s2 * (x - (1 - sig) * mu) / var
        sigma2 = (sigma**2).view(-1, *([1] * (x.ndim - 1)))
        return (self.s2 * x + sigma2 * mu) / (self.s2 + sigma2)


@pytest.fixture
def toy_model():
    return ToyModel


@pytest.fixture(scope="session")
def samplers_registry():
    """A registry built from core's built-ins and this plugin only (no entry-point scan)."""
    from loom.testing import make_registry

    return make_registry("samplers")


def conditioning(value: float, tokens: int = 77, dim: int = 8, **options):
    return [[torch.full((1, tokens, dim), float(value)), dict(options)]]


@pytest.fixture
def cond():
    """``cond(value, tokens=77, dim=8, **options)``: a one-entry CONDITIONING list."""
    return conditioning
