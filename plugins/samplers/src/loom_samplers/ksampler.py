"""One sampling run, shared by KSampler, KSamplerAdvanced, SamplerCustom(Advanced).

The order of operations is ComfyUI's (``CFGGuider.sample`` / ``KSAMPLER.sample``): widen an
empty latent to the model's channels, draw the noise, move a non-empty latent into model space,
resolve the conditioning, scale the noise to ``sigmas[0]`` (``max_denoise`` when ``sigmas[0]``
is the model's largest sigma), run the sampler through the guided denoiser, undo the model's
noise scaling and latent scaling. Progress and previews go to ``ctx.progress`` once per step.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom import RunContext
from loom_samplers.guiders import GuidedDenoiser, Guider
from loom_samplers.model_interface import (
    prepare_model,
    process_latent_in,
    process_latent_out,
)
from loom_samplers.noise import SeededNoise

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import RegisteredSampler, Step

log = logging.getLogger(__name__)


def _torch() -> Any:
    import torch

    return torch


@attrs.frozen
class SamplerChoice:
    """The SAMPLER socket: a registered sampler and the options it is called with."""

    registered: RegisteredSampler
    options: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.registered.name


def registry_of(ctx: RunContext) -> Any:
    """The registry the sampling nodes look samplers and schedulers up in."""
    return ctx.require_runtime("sampler and scheduler look-ups").registry


# --- sigmas -----------------------------------------------------------------------------


def calculate_sigmas(
    model_sampling: Any,
    scheduler: Callable[..., Any],
    steps: int,
    discard_penultimate: bool = False,
) -> Tensor:
    torch = _torch()
    if discard_penultimate:
        sigmas = scheduler(model_sampling, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return scheduler(model_sampling, steps)


def ksampler_sigmas(
    model_sampling: Any,
    scheduler: Callable[..., Any],
    steps: int,
    denoise: float | None = None,
    *,
    discard_penultimate: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> Tensor | None:
    """KSampler's sigmas; None means "return the latent unchanged" (start past the end)."""
    torch = _torch()
    if denoise is None or denoise > 0.9999:
        sigmas = calculate_sigmas(model_sampling, scheduler, steps, discard_penultimate)
    elif denoise <= 0.0:
        sigmas = torch.FloatTensor([])
    else:
        total = int(steps / denoise)
        sigmas = calculate_sigmas(model_sampling, scheduler, total, discard_penultimate)[
            -(steps + 1) :
        ]
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas


# --- the run ------------------------------------------------------------------------------


def prepare_mask(mask: Tensor, shape: tuple[int, ...], device: Any) -> Tensor:
    """ComfyUI ``reshape_mask``: bilinear to the latent size, channels and batch repeated."""
    torch = _torch()
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    mask = torch.nn.functional.interpolate(mask, size=tuple(shape[2:]), mode="bilinear")
    if mask.shape[1] < shape[1]:
        mask = mask.repeat((1, shape[1], 1, 1))[:, : shape[1]]
    batch = shape[0]
    if mask.shape[0] > batch:
        mask = mask[:batch]
    elif mask.shape[0] < batch:
        mask = mask.repeat(-(-batch // mask.shape[0]), 1, 1, 1)[:batch]
    return mask.to(device)


def sample(
    guider: Guider,
    noise: Tensor,
    latent_image: Tensor,
    sampler: SamplerChoice,
    sigmas: Tensor,
    *,
    denoise_mask: Tensor | None = None,
    seed: int | None = None,
    ctx: RunContext | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Tensor:
    """Denoise ``latent_image`` (CPU, latent space) with ``noise``; returns a CPU float32 latent."""
    torch = _torch()
    if sigmas.shape[-1] == 0:
        return latent_image
    model = guider.model
    device = prepare_model(ctx, model, tuple(noise.shape), guider.conds) or latent_image.device
    noise = noise.to(device)
    latent = latent_image.to(device)
    sigmas = sigmas.to(device)
    if denoise_mask is not None:
        denoise_mask = prepare_mask(denoise_mask, tuple(noise.shape), device)
    if torch.count_nonzero(latent) > 0:
        latent = process_latent_in(model, latent)
    guider.prepare(noise, latent, denoise_mask, seed, sigmas)
    sampling = model.model_sampling
    inpaint_noise = noise
    info = sampler.registered.info
    if info.inpaint_random_noise:
        generator = torch.Generator(device="cpu").manual_seed(
            ((41 if seed is None else seed) + 1) & (2**64 - 1)
        )
        inpaint_noise = (
            torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(device)
        )
    denoiser = GuidedDenoiser(
        guider,
        latent_image=latent,
        noise=inpaint_noise,
        denoise_mask=denoise_mask,
        sigmas=sigmas,
        keep_uncond=info.needs_uncond,
        ctx=ctx,
    )
    max_sigma, first = float(sampling.sigma_max), float(sigmas[0])
    max_denoise = math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma
    x = sampling.noise_scaling(sigmas[0], noise, latent, max_denoise)
    try:
        with torch.inference_mode():
            samples = sampler.registered.function(
                denoiser,
                x,
                sigmas,
                noise=SeededNoise(seed),
                on_step=on_step,
                **dict(sampler.options),
            )
    finally:
        finish = getattr(guider, "finish", None)
        if callable(finish):
            finish()
    samples = sampling.inverse_noise_scaling(sigmas[-1], samples)
    cache = getattr(guider, "cache_run", None)
    if cache is not None:
        steps = len(sigmas) - 1
        skipped = cache.tracker.skipped
        log.info("%s: skipped %d of %d steps", cache.settings.kind, skipped, steps)
    return process_latent_out(model, samples.to(torch.float32)).cpu()


# --- progress and previews ------------------------------------------------------------------


def step_reporter(
    ctx: RunContext, model: Any, total: int, x0_out: dict | None = None
) -> Callable[[Step], None]:
    """An ``on_step`` that reports progress (and a latent preview when asked for) to ``ctx``."""
    extra = getattr(ctx, "extra_data", None) or {}
    want_preview = extra.get("preview_method") in ("auto", "latent2rgb")
    fmt = getattr(model, "latent_format", None)

    def on_step(step: Step) -> None:
        if x0_out is not None:
            x0_out["x0"] = step.denoised
        if ctx is None:
            return
        preview = latent_preview(step.denoised, fmt) if want_preview else None
        ctx.progress(step.i + 1, total, preview)

    return on_step


def latent_preview(x0: Tensor, fmt: Any, max_size: int = 512) -> Any:
    """A JPEG of the first latent through the family's latent→RGB factors (ComfyUI Latent2RGB)."""
    factors = getattr(fmt, "rgb_factors", None)
    if not factors:
        return None
    torch = _torch()
    from PIL import Image

    from loom.events import Preview

    weight = torch.tensor(factors, dtype=x0.dtype, device=x0.device).transpose(0, 1)
    bias = getattr(fmt, "rgb_bias", None)
    bias_t = torch.tensor(bias, dtype=x0.dtype, device=x0.device) if bias is not None else None
    first = x0[0, :, 0] if x0.ndim == 5 else x0[0]
    rgb = torch.nn.functional.linear(first.movedim(0, -1), weight, bias=bias_t)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(0xFF).to(device="cpu", dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy())
    image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return Preview("JPEG", buffer.getvalue())
