"""Noise exactly as ComfyUI makes it (comfy-compat.md section 9).

* Initial noise (:func:`prepare_noise`): a CPU ``torch.Generator`` seeded with the node's seed
  (the same stream as ComfyUI's ``torch.manual_seed(seed)``), one ``randn`` over the latent
  shape in the latent's dtype; with ``batch_index``, one ``[1, C, H, W]`` draw per index up to
  the largest and item k keeps draw ``batch_index[k]``.
* Step noise of ancestral samplers (:meth:`SeededNoise.sampler`): a generator on the latent's
  device seeded with ``seed + 1`` when the latent is on CPU (``seed`` on a GPU).
* SDE samplers (:meth:`SeededNoise.brownian`): a Brownian tree seeded with ``seed``, built on
  CPU (the ``*_gpu`` samplers build it on the latent's device): :mod:`loom_samplers.brownian`,
  bit for bit torchsde's ``BrownianTree`` (what ComfyUI uses), in pure Python, but faster.

A sampler receives a :class:`loom.types.NoiseSource` (:class:`SeededNoise` here) and asks it
for what it needs, so samplers never touch a global RNG. :class:`FunctionNoise` wraps a plain ``noise(sigma, sigma_next)`` callable
(k-diffusion's ``noise_sampler``), which is how the parity tests share noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from loom.types import NoiseSampler

log = logging.getLogger(__name__)

_SEED_MASK = 2**64 - 1


def _torch() -> Any:
    import torch

    return torch


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """ComfyUI's ``comfy.sample.prepare_noise``: CPU noise for ``latent``'s shape and dtype."""
    torch = _torch()
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & _SEED_MASK)
    shape = list(latent.shape)
    if batch_index is None:
        return torch.randn(
            shape, dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu"
        )
    indices = [int(i) for i in batch_index]
    wanted = set(indices)
    draws: dict[int, Tensor] = {}
    for i in range(max(indices) + 1):
        sample = torch.randn(
            [1, *shape[1:]],
            dtype=latent.dtype,
            layout=latent.layout,
            generator=generator,
            device="cpu",
        )
        if i in wanted:
            draws[i] = sample
    return torch.cat([draws[i] for i in indices], dim=0)


@attrs.frozen
class SeededNoise:
    """ComfyUI's per-sampler noise for a seed; ``seed=None`` draws fresh random noise.

    ``brownian_backend`` picks the SDE samplers' Brownian tree: ``"loom"`` (the default, bit for
    bit torchsde's and faster) or ``"torchsde"``.
    """

    seed: int | None = None
    brownian_backend: str = "loom"

    def sampler(self, x: Tensor) -> NoiseSampler:
        torch = _torch()
        if self.seed is None:
            generator = None
        else:
            seed = self.seed + 1 if x.device.type == "cpu" else self.seed
            generator = torch.Generator(device=x.device).manual_seed(seed & _SEED_MASK)
        shape, dtype, layout, device = x.size(), x.dtype, x.layout, x.device

        def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
            return torch.randn(
                shape, dtype=dtype, layout=layout, device=device, generator=generator
            )

        return draw

    def brownian(
        self,
        x: Tensor,
        sigma_min: Tensor,
        sigma_max: Tensor,
        *,
        cpu: bool = True,
    ) -> NoiseSampler:
        return BrownianTreeNoise(
            x,
            sigma_min,
            sigma_max,
            seed=self.seed,
            cpu=cpu,
            backend=self.brownian_backend,
        )

    def randn_like(self, x: Tensor) -> Tensor:
        torch = _torch()
        if self.seed is None:
            return torch.randn_like(x)
        generator = torch.Generator(device=x.device).manual_seed((self.seed + 2) & _SEED_MASK)
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


@attrs.frozen
class FunctionNoise:
    """A fixed ``noise(sigma, sigma_next)`` function used for every kind of noise."""

    function: NoiseSampler

    def sampler(self, x: Tensor) -> NoiseSampler:
        return self.function

    def brownian(
        self,
        x: Tensor,
        sigma_min: Tensor,
        sigma_max: Tensor,
        *,
        cpu: bool = True,
    ) -> NoiseSampler:
        return self.function

    def randn_like(self, x: Tensor) -> Tensor:
        return _torch().randn_like(x)


class BrownianTreeNoise:
    """Noise from a Brownian tree (k-diffusion's ``BrownianTreeNoiseSampler``).

    ``noise(s, s_next) = W(s_next) - W(s)`` scaled to unit variance. One tree per seed; a
    sequence of seeds gives one tree per batch item. ``cpu=True`` keeps the tree on CPU so
    that results do not depend on the compute device (ComfyUI's default).

    The tree is :class:`loom_samplers.brownian.BrownianTree`, which gives bit for bit what
    ComfyUI's ``torchsde.BrownianTree`` gives, several times faster; ``backend="torchsde"``
    uses torchsde itself (the reference in the tests).
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: Tensor,
        sigma_max: Tensor,
        seed: int | Sequence[int] | None = None,
        *,
        cpu: bool = True,
        transform: Callable[[Tensor], Tensor] | None = None,
        backend: str = "loom",
    ) -> None:
        torch = _torch()
        if backend == "loom":
            from loom_samplers.brownian import BrownianTree as tree_type
        elif backend == "torchsde":
            try:
                import torchsde
            except ImportError as exc:
                raise ImportError(
                    "backend='torchsde' needs torchsde: pip install torchsde"
                ) from exc
            tree_type = torchsde.BrownianTree
        else:
            raise ValueError(f"unknown Brownian tree backend {backend!r} (loom or torchsde)")
        self.transform = transform or (lambda s: s)
        self.cpu = cpu
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        t0, t1, self.sign = _sorted(t0, t1)
        w0 = torch.zeros_like(x)
        if seed is None:
            seeds: Sequence[int] = (int(torch.randint(0, 2**63 - 1, ()).item()),)
            self.batched = False
        elif isinstance(seed, (list, tuple)):
            if len(seed) != x.shape[0]:
                raise ValueError("a list of seeds needs one seed per batch item")
            seeds, self.batched, w0 = seed, True, w0[0]
        else:
            seeds, self.batched = (int(seed),), False
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        self.trees = [tree_type(t0, w0, t1, entropy=s) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        torch = _torch()
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        scale = (t1 - t0).abs().sqrt()
        a, b, sign = _sorted(t0, t1)
        device, dtype = a.device, a.dtype
        if self.cpu:
            a, b = a.detach().cpu().float(), b.detach().cpu().float()
        if self.batched:
            w = torch.stack([tree(a, b) for tree in self.trees])
        else:
            w = self.trees[0](a, b)
        w = w.to(device=device, dtype=dtype)
        # k-diffusion multiplies by the sign, then divides; dividing by -scale gives the same bits
        return w / scale if self.sign * sign > 0 else w / -scale


def _sorted(a: torch.Tensor, b: torch.Tensor) -> tuple[Any, Any, int]:
    return (a, b, 1) if a < b else (b, a, -1)


# --- the NOISE socket ----------------------------------------------------------------


@attrs.frozen
class RandomNoiseGen:
    """NOISE from ``RandomNoise``: ComfyUI's seeded CPU noise for a latent dict."""

    seed: int

    def generate_noise(self, latent: dict) -> Tensor:
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


@attrs.frozen
class EmptyNoiseGen:
    """NOISE from ``DisableNoise``: zeros (the latent is denoised as it is)."""

    seed: int = 0

    def generate_noise(self, latent: dict) -> Tensor:
        samples = latent["samples"]
        return _torch().zeros(
            samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu"
        )
