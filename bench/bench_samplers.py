"""Per-step sampler overhead with a near-free model, against k-diffusion's same sampler, and
the SDE samplers' overhead against a UNet forward at the same latent size.

    python bench/bench_samplers.py [--steps 20] [--repeats 15] [--device cpu] [--unet-ms 22.0]

Latent 1x4x64x64 (a 512x512 SD image). "sampler" runs the sampler function on a denoiser
that costs one multiply-add; "k-diff" runs k-diffusion's ``sample_<name>`` on the same one
(when installed; it is loaded without its package ``__init__``, which needs torchvision);
"KSampler path" adds everything a KSampler run adds per step: CFG over a cond/uncond batch
built by ``calc_cond_batch`` from a toy MODEL whose ``apply_model`` is the same multiply-add.
Times are the best of ``--repeats`` runs divided by the number of steps, in ms per step.

The second table is the speed bar of the SDE samplers (issue 12): their overhead per step
(the sampler with the near-free model, Brownian tree included, every run building its tree
anew) is at most 5% of the UNet forwards of a step at the same latent size. ``--unet-ms`` is
that forward (default: SD1.5's bf16 UNet at 512x512, batch 2 = one CFG step, 22.0 ms on an
H100, from bench_sd15_cuda in bench/README.md; this 2-core CPU takes seconds). The tree runs
on the CPU even when the model runs on a GPU (ComfyUI's default), so the overhead is this
CPU's. The rows with torchsde's tree (ComfyUI's; ours gives the same bits) and without a tree
(plain randn noise) show what the tree costs.

Before issue 12 the tree drew its noise with a C extension (torch's MT19937 + Box-Muller
in AVX2 / AVX-512, worker threads, buffer pools): dpmpp_2m_sde took 0.65 ms per step here
(0.97 ms drawing through torch, 5.35 ms with torchsde's tree, 0.21 ms without a tree;
2026-11-26, the section this one replaced). It is pure Python now; the figures below are
the same measurement after that change.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import types
from pathlib import Path

import torch
from loom_samplers.guiders import GuidedDenoiser, Guider
from loom_samplers.noise import FunctionNoise, SeededNoise
from loom_samplers.samplers import SAMPLER_INFO, SAMPLERS
from loom_samplers.schedulers import karras_sigmas

from loom.model_sampling import DiscreteEps
from loom.types import LatentFormat, SamplerInfo

SHAPE = (1, 4, 64, 64)
KDIFF_NAMES = {
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
}
SDE_NAMES = ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "dpmpp_2m_sde_heun")
UNET_MS = 22.0  # bench_sd15_cuda: SD1.5 UNet forward, bf16, 512x512 batch 2, H100
BAR = 0.05  # the SDE samplers' overhead per step, as a share of the step's UNet forwards


def load_kdiff():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules[
        "torchvision.transforms.functional"
    ]
    package = types.ModuleType("_kdiff_bench")
    package.__path__ = [str(folder)]
    sys.modules["_kdiff_bench"] = package
    try:
        for sub in ("utils", "sampling"):
            sub_spec = importlib.util.spec_from_file_location(
                f"_kdiff_bench.{sub}", folder / f"{sub}.py"
            )
            module = importlib.util.module_from_spec(sub_spec)
            sys.modules[f"_kdiff_bench.{sub}"] = module
            sub_spec.loader.exec_module(module)
    except ImportError as exc:
        print(f"(k-diffusion not usable: {exc})", file=sys.stderr)
        return None
    return sys.modules["_kdiff_bench.sampling"]


class NearFree:
    """The near-free denoiser, with the schedule a sampler may read (sa_solver's SDE interval)."""

    model_sampling = DiscreteEps()

    def __call__(self, x, sigma, **_):
        return x * 0.5 + 0.1


near_free = NearFree()


class NearFreeModel:
    """A MODEL whose forward is one multiply-add (the KSampler-path column)."""

    def __init__(self):
        self.model_sampling = DiscreteEps()
        self.latent_format = LatentFormat(channels=4, scale_factor=0.18215)

    def apply_model(self, x, sigma, cond):
        return x * 0.5 + 0.1


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` (overhead benchmarks on a shared machine: the minimum is the signal)."""
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def evals_per_run(name: str, sigmas, x) -> int:
    counter = {"n": 0}

    def counting(x, sigma, **_):
        counter["n"] += 1
        return near_free(x, sigma)

    counting.model_sampling = near_free.model_sampling

    run_ours(name, counting, x, sigmas)
    return counter["n"]


def run_ours(name, denoiser, x, sigmas, noise=None):
    return SAMPLERS[name](denoiser, x.clone(), sigmas, noise=noise or SeededNoise(0))


def run_kdiff(kd, name, x, sigmas):
    fn = getattr(kd, f"sample_{name}")
    if name == "dpm_fast":
        return fn(near_free, x.clone(), sigmas[-2], sigmas[0], len(sigmas) - 1, disable=True)
    if name == "dpm_adaptive":
        return fn(near_free, x.clone(), sigmas[-2], sigmas[0], disable=True)
    if name in {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"}:
        tree = kd.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=0)
        return fn(near_free, x.clone(), sigmas, disable=True, noise_sampler=tree)
    return fn(near_free, x.clone(), sigmas, disable=True)


def guided_denoiser(device, keep_uncond=False):
    model = NearFreeModel()
    cond = [[torch.zeros(1, 77, 768, device=device), {}]]
    guider = Guider(model, {"positive": cond, "negative": cond}, 7.5)
    zeros = torch.zeros(SHAPE, device=device)
    guider.prepare(zeros, zeros, None, 0)
    return GuidedDenoiser(guider, latent_image=zeros, noise=zeros, keep_uncond=keep_uncond)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument(
        "--unet-ms", type=float, default=UNET_MS, help="a UNet forward at this latent size, ms"
    )
    parser.add_argument(
        "--samplers", default="", help="comma-separated sampler names (default: all registered)"
    )
    args = parser.parse_args()
    names = [n for n in args.samplers.split(",") if n] or list(SAMPLERS)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kd = load_kdiff()
    sigmas = karras_sigmas(args.steps, 0.0291675, 14.614642).to(device)
    x = torch.randn(SHAPE, device=device) * sigmas[0]
    guided = guided_denoiser(device)
    guided_uncond = guided_denoiser(device, keep_uncond=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def per_step(fn):
        def run():
            fn()
            sync()

        return timed(run, args.repeats) * 1000 / args.steps

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", load average {os.getloadavg()[0]:.1f} (on a shared host, times grow with it)"
    )
    print(f"latent {list(SHAPE)}, {args.steps} steps, best of {args.repeats}\n")
    print(
        "| sampler | evals/step | sampler ms/step | k-diff ms/step | ratio | KSampler path ms/step |"
    )
    print("|---|---|---|---|---|---|")
    evals: dict[str, float] = {}
    ours: dict[str, float] = {}
    with torch.inference_mode():
        for name in names:
            needs_uncond = SAMPLER_INFO.get(name, SamplerInfo()).needs_uncond
            if not needs_uncond:
                evals[name] = evals_per_run(name, sigmas, x) / args.steps
                ours[name] = per_step(lambda n=name: run_ours(n, near_free, x, sigmas))
            theirs = (
                per_step(lambda n=name: run_kdiff(kd, n, x, sigmas))
                if kd and name in KDIFF_NAMES
                else None
            )
            denoiser = guided_uncond if needs_uncond else guided
            path = per_step(lambda n=name, d=denoiser: run_ours(n, d, x, sigmas))
            mine = ours.get(name)
            ratio = f"{mine / theirs:.2f}" if mine and theirs else ""
            print(
                f"| {name} | {evals.get(name, float('nan')):.2f} | "
                f"{'' if mine is None else f'{mine:.3f}'} | "
                f"{'' if theirs is None else f'{theirs:.3f}'} | {ratio} | {path:.3f} |"
            )
        print(
            f"\nSDE samplers' overhead per step against the step's UNet forwards "
            f"({args.unet_ms:g} ms each; bar: {BAR:.0%})\n"
        )
        print(
            "| sampler | overhead ms/step | share of the step's UNet forwards | bar "
            "| with torchsde's tree ms/step | without a tree ms/step |"
        )
        print("|---|---|---|---|---|---|")
        reference = SeededNoise(0, brownian_backend="torchsde")
        for batch in (1, 2):
            xb = x.repeat(batch, 1, 1, 1)
            plain = FunctionNoise(lambda a, b, s=xb.shape: torch.randn(s, device=device))
            for name in (n for n in SDE_NAMES if n in evals):
                label = name if batch == 1 else f"{name} (batch 2)"
                mine = (
                    ours[name]
                    if batch == 1
                    else per_step(lambda n=name, xb=xb: run_ours(n, near_free, xb, sigmas))
                )
                theirs = per_step(
                    lambda n=name, xb=xb, r=reference: run_ours(n, near_free, xb, sigmas, r)
                )
                bare = per_step(
                    lambda n=name, xb=xb, p=plain: run_ours(n, near_free, xb, sigmas, p)
                )
                share = mine / (args.unet_ms * batch * evals[name])
                print(
                    f"| {label} | {mine:.3f} | {share:.1%} | {'ok' if share <= BAR else 'MISSED'} "
                    f"| {theirs:.3f} | {bare:.3f} |"
                )


if __name__ == "__main__":
    main()
