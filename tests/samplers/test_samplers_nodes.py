"""End to end through the registry: KSampler, KSamplerAdvanced and the custom-sampling nodes
with a toy MODEL, progress events, previews and ComfyUI's noise and sigma rules."""

from __future__ import annotations

import pytest
import torch
from loom_samplers.guiders import GuidedDenoiser, Guider
from loom_samplers.noise import SeededNoise
from loom_samplers.samplers import SAMPLERS
from loom_samplers.schedulers import SCHEDULERS

from loom.executor.context import InterruptFlag, RunContext
from loom.model_sampling import DiscreteEps


class _Runtime:
    def __init__(self, registry):
        self.registry = registry


def _ctx(registry, progress=None, preview_method=None):
    extra = {"preview_method": preview_method} if preview_method else {}
    return RunContext(
        node_id="3",
        prompt_id="p",
        prompt={},
        extra_data=extra,
        runtime=_Runtime(registry),
        interrupt=InterruptFlag(),
        on_progress=(lambda v, t, p: progress.append((v, t, p))) if progress is not None else None,
    )


def _run(registry, class_type, ctx, **inputs):
    node = registry.get_node(class_type)
    return node.impl.execute(node.impl.create(), inputs, ctx).values


def _reference(model, positive, negative, cfg, seed, steps, sampler, scheduler, latent):
    """The same run written out by hand: ComfyUI's noise, sigmas, CFG and sampler."""
    torch.manual_seed(seed)
    noise = torch.randn(latent.shape)
    sigmas = SCHEDULERS[scheduler](model.model_sampling, steps)
    guider = Guider(model, {"positive": positive, "negative": negative}, cfg)
    guider.prepare(noise, latent, None, seed)
    denoiser = GuidedDenoiser(guider, latent_image=latent, noise=noise)
    x = noise * (sigmas[0] ** 2 + 1) ** 0.5  # max_denoise: σ₀ is the model's σ_max
    out = SAMPLERS[sampler](denoiser, x, sigmas, noise=SeededNoise(seed))
    return out / model.latent_format.scale_factor


@pytest.mark.parametrize(
    "sampler",
    ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc", "seeds_2", "sa_solver"],
)
def test_samplers_ksampler_end_to_end(samplers_registry, toy_model, cond, sampler):
    model = toy_model()
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    progress: list = []
    (out,) = _run(
        samplers_registry,
        "KSampler",
        _ctx(samplers_registry, progress),
        model=model,
        seed=42,
        steps=6,
        cfg=7.5,
        sampler_name=sampler,
        scheduler="normal",
        positive=cond(0.5),
        negative=cond(-0.5),
        latent_image=latent,
        denoise=1.0,
    )
    assert out["samples"].shape == (1, 4, 8, 8) and out["samples"].dtype == torch.float32
    assert [p[0] for p in progress] == list(range(1, 7)) and all(p[1] == 6 for p in progress)
    if sampler != "uni_pc":  # uni_pc drops the penultimate sigma: its schedule differs
        expected = _reference(
            model, cond(0.5), cond(-0.5), 7.5, 42, 6, sampler, "normal", latent["samples"]
        )
        assert torch.allclose(out["samples"], expected, atol=1e-5)


def test_samplers_custom_advanced_equals_ksampler(samplers_registry, toy_model, cond):
    model = toy_model()
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    ctx = _ctx(samplers_registry)
    kwargs = dict(positive=cond(0.3), negative=cond(-0.2))
    (k_out,) = _run(
        samplers_registry,
        "KSampler",
        ctx,
        model=model,
        seed=7,
        steps=5,
        cfg=4.0,
        sampler_name="dpmpp_2m_sde",
        scheduler="karras",
        latent_image=latent,
        denoise=1.0,
        **kwargs,
    )
    (noise,) = _run(samplers_registry, "RandomNoise", ctx, noise_seed=7)
    (guider,) = _run(samplers_registry, "CFGGuider", ctx, model=model, cfg=4.0, **kwargs)
    (sampler,) = _run(samplers_registry, "KSamplerSelect", ctx, sampler_name="dpmpp_2m_sde")
    (sigmas,) = _run(
        samplers_registry,
        "BasicScheduler",
        ctx,
        model=model,
        scheduler="karras",
        steps=5,
        denoise=1.0,
    )
    out, denoised = _run(
        samplers_registry,
        "SamplerCustomAdvanced",
        ctx,
        noise=noise,
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image=latent,
    )
    assert torch.equal(out["samples"], k_out["samples"])
    assert denoised["samples"].shape == out["samples"].shape


def test_samplers_sampler_custom_and_previews(samplers_registry, toy_model, cond):
    model = toy_model()
    progress: list = []
    ctx = _ctx(samplers_registry, progress, preview_method="latent2rgb")
    (sampler,) = _run(samplers_registry, "SamplerEulerAncestral", ctx, eta=1.0, s_noise=1.0)
    (sigmas,) = _run(
        samplers_registry,
        "KarrasScheduler",
        ctx,
        steps=4,
        sigma_max=14.614642,
        sigma_min=0.0291675,
        rho=7.0,
    )
    out, _denoised = _run(
        samplers_registry,
        "SamplerCustom",
        ctx,
        model=model,
        add_noise=True,
        noise_seed=3,
        cfg=2.0,
        positive=cond(1.0),
        negative=cond(0.0),
        sampler=sampler,
        sigmas=sigmas,
        latent_image={"samples": torch.zeros(1, 4, 8, 8)},
    )
    assert len(progress) == 4
    preview = progress[-1][2]
    assert (
        preview is not None and preview.image_format == "JPEG" and preview.data[:2] == b"\xff\xd8"
    )
    assert torch.isfinite(out["samples"]).all()


def test_samplers_ksampler_advanced_steps_and_leftover_noise(samplers_registry, toy_model, cond):
    model = toy_model()
    ctx = _ctx(samplers_registry)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    common = dict(
        model=model,
        noise_seed=1,
        steps=10,
        cfg=3.0,
        sampler_name="euler",
        scheduler="simple",
        positive=cond(0.4),
        negative=cond(0.0),
    )
    (first,) = _run(
        samplers_registry,
        "KSamplerAdvanced",
        ctx,
        add_noise="enable",
        latent_image=latent,
        start_at_step=0,
        end_at_step=4,
        return_with_leftover_noise="enable",
        **common,
    )
    (second,) = _run(
        samplers_registry,
        "KSamplerAdvanced",
        ctx,
        add_noise="disable",
        latent_image=first,
        start_at_step=4,
        end_at_step=10000,
        return_with_leftover_noise="disable",
        **common,
    )
    (whole,) = _run(
        samplers_registry,
        "KSampler",
        ctx,
        model=model,
        seed=1,
        steps=10,
        cfg=3.0,
        sampler_name="euler",
        scheduler="simple",
        positive=cond(0.4),
        negative=cond(0.0),
        latent_image=latent,
        denoise=1.0,
    )
    # leftover noise is kept, so the two halves add up to the whole run
    assert first["samples"].abs().mean() > whole["samples"].abs().mean()
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-4)
    (untouched,) = _run(
        samplers_registry,
        "KSamplerAdvanced",
        ctx,
        add_noise="enable",
        latent_image=latent,
        start_at_step=10,
        end_at_step=10000,
        return_with_leftover_noise="disable",
        **common,
    )
    assert torch.equal(untouched["samples"], latent["samples"])


def test_samplers_img2img_and_inpainting(samplers_registry, toy_model, cond):
    model = toy_model()
    ctx = _ctx(samplers_registry)
    image = torch.full((1, 4, 8, 8), 0.8)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1.0
    (out,) = _run(
        samplers_registry,
        "KSampler",
        ctx,
        model=model,
        seed=5,
        steps=8,
        cfg=1.0,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        positive=cond(0.0),
        negative=cond(0.0),
        latent_image={"samples": image, "noise_mask": mask},
        denoise=0.5,
    )
    assert torch.allclose(out["samples"][..., :4], image[..., :4], atol=1e-5)  # kept area
    assert not torch.allclose(out["samples"][..., 4:], image[..., 4:], atol=1e-2)


def test_samplers_sigma_nodes(samplers_registry):
    ctx = _ctx(samplers_registry)
    sigmas = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.0])
    high, low = _run(samplers_registry, "SplitSigmas", ctx, sigmas=sigmas, step=2)
    assert high.tolist() == [5.0, 3.0, 1.0] and low.tolist() == [1.0, 0.5, 0.0]
    high, low = _run(samplers_registry, "SplitSigmasDenoise", ctx, sigmas=sigmas, denoise=0.5)
    assert high.tolist() == [5.0, 3.0, 1.0] and low.tolist() == [1.0, 0.5, 0.0]
    (flipped,) = _run(samplers_registry, "FlipSigmas", ctx, sigmas=sigmas)
    assert torch.allclose(flipped, torch.tensor([0.0001, 0.5, 1.0, 3.0, 5.0]))
    (turbo,) = _run(
        samplers_registry, "SDTurboScheduler", ctx, model=_Model(), steps=2, denoise=1.0
    )
    ms = DiscreteEps()
    assert torch.allclose(turbo, torch.cat([ms.sigma(torch.tensor([999, 899])), torch.zeros(1)]))


class _Model:
    model_sampling = DiscreteEps()


def test_samplers_plugin_registers_everything(samplers_registry):
    from loom_samplers.nodes import NODES

    assert samplers_registry.sampler_names()[:3] == ["euler", "euler_cfg_pp", "euler_ancestral"]
    assert samplers_registry.sampler_names()[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert "karras" in samplers_registry.scheduler_names()
    for node in NODES:
        definition = samplers_registry.get_node(node.__loom_node__.class_type)
        assert definition is not None
        definition.impl.input_types(samplers_registry)
    combo = samplers_registry.get_node("KSampler").impl.input_types(samplers_registry)["required"][
        "sampler_name"
    ]
    assert combo[0] == samplers_registry.sampler_names()


def test_samplers_entry_point_is_installed():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="loom")}
    assert names.get("samplers") == "loom_samplers.plugin"


def test_samplers_ksampler_follows_the_declared_sampler_info(toy_model, cond):
    """A sampler plugin that needs only core: KSampler treats its samplers as their
    SamplerInfo says (sigmas, inpainting noise, the unconditional prediction)."""
    import loom_samplers.plugin

    import loom
    from loom.plugins import PluginHost
    from loom.registry import collect
    from loom.types import SamplerInfo, UncondDenoiser

    seen: dict[str, dict] = {}

    def spy(name):
        def sampler(denoiser, x, sigmas, *, noise, on_step=None):
            denoiser(x, sigmas[:1].expand(x.shape[0]))
            seen[name] = {
                "sigmas": sigmas.clone(),
                "noise": denoiser.noise.clone(),
                "uncond": getattr(denoiser, "uncond_denoised", None),
                "typed": isinstance(denoiser, UncondDenoiser),
            }
            return x

        return sampler

    infos = {
        "plain": SamplerInfo(),
        "discard": SamplerInfo(discard_penultimate_sigma=True),
        "inpaint": SamplerInfo(inpaint_random_noise=True),
        "uncond": SamplerInfo(needs_uncond=True),
    }

    class SpySamplers:
        @loom.hookimpl
        def register_samplers(self, register):
            for name, info in infos.items():
                register(f"spy_{name}", spy(name), info)

    host = PluginHost(entry_points=False)
    host.register(loom_samplers.plugin, "samplers")
    host.register(SpySamplers(), "spy")
    host.load()
    registry = collect(host)
    assert not registry.failures, registry.failures
    model = toy_model()
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1.0
    latent = {"samples": torch.full((1, 4, 8, 8), 0.5), "noise_mask": mask}
    for name in infos:
        _run(
            registry,
            "KSampler",
            _ctx(registry),
            model=model,
            seed=11,
            steps=4,
            cfg=1.0,
            sampler_name=f"spy_{name}",
            scheduler="normal",
            positive=cond(0.5),
            negative=cond(-0.5),
            latent_image=latent,
            denoise=1.0,
        )
    normal = SCHEDULERS["normal"]
    assert torch.equal(seen["plain"]["sigmas"], normal(model.model_sampling, 4))
    five = normal(model.model_sampling, 5)
    assert torch.equal(seen["discard"]["sigmas"], torch.cat([five[:-2], five[-1:]]))
    initial = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(11))
    fresh = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(12))
    assert torch.equal(seen["plain"]["noise"], initial)
    assert torch.equal(seen["inpaint"]["noise"], fresh)
    assert seen["uncond"]["typed"] and seen["uncond"]["uncond"] is not None
    assert not seen["plain"]["typed"] and seen["plain"]["uncond"] is None
