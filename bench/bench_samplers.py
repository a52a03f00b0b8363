"""Per-step sampler overhead with a near-free model, against k-diffusion's same sampler.

    python bench/bench_samplers.py [--steps 20] [--repeats 15] [--device cpu]

Latent 1x4x64x64 (a 512x512 SD image). "sampler" runs the sampler function on a denoiser
that costs one multiply-add; "k-diff" runs k-diffusion's ``sample_<name>`` on the same one
(when installed; it is loaded without its package ``__init__``, which needs torchvision);
"KSampler path" adds everything a KSampler run adds per step: CFG over a cond/uncond batch
built by ``calc_cond_batch`` from a toy MODEL whose ``apply_model`` is the same multiply-add.
The SDE samplers' extra rows time them with torchsde's Brownian tree (ComfyUI's; ours gives the
same bits), with our tree drawing through torch instead of ``loom_samplers._randn`` (an install
without a C compiler), without a tree, and at batch 2. Every run builds its tree anew: no noise
is reused between runs (the tree's buffers are: a process keeps them for the next run). The
header names the ``_randn`` kernel and the worker threads a float32 tree uses. Times are the
best of ``--repeats`` runs divided by the number of steps, in ms per step. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import sys
import time
import types
from pathlib import Path

import torch
from loom_samplers import brownian_draws
from loom_samplers.brownian_draws import worker_count
from loom_samplers.fast_randn import fast_fill
from loom_samplers.guidance import GuidedDenoiser, Guider
from loom_samplers.noise import FunctionNoise, SeededNoise
from loom_samplers.samplers import SAMPLERS
from loom_samplers.schedulers import karras_sigmas

from loom.sampling import DiscreteEps
from loom.types import LatentFormat

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
TARGET_MS = {"euler": 1.0, "dpmpp_2m": 1.0, "dpmpp_2m_sde": 1.0}


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


def near_free(x, sigma, **_):
    return x * 0.5 + 0.1


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


@contextlib.contextmanager
def torch_draws():
    """Our tree as an install without the ``_randn`` extension runs it."""
    saved = brownian_draws.fast_fill
    brownian_draws.fast_fill = lambda: None
    try:
        yield
    finally:
        brownian_draws.fast_fill = saved


def guided_denoiser(device):
    model = NearFreeModel()
    cond = [[torch.zeros(1, 77, 768, device=device), {}]]
    guider = Guider(model, {"positive": cond, "negative": cond}, 7.5)
    zeros = torch.zeros(SHAPE, device=device)
    guider.prepare(zeros, zeros, None, 0)
    return GuidedDenoiser(guider, latent_image=zeros, noise=zeros)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kd = load_kdiff()
    sigmas = karras_sigmas(args.steps, 0.0291675, 14.614642).to(device)
    x = torch.randn(SHAPE, device=device) * sigmas[0]
    guided = guided_denoiser(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def per_step(fn):
        def run():
            fn()
            sync()

        return timed(run, args.repeats) * 1000 / args.steps

    fast = fast_fill()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(
        f"brownian draws: {'_randn ' + fast.in_use() if fast else 'torch'}, "
        f"brownian workers {worker_count(fast is not None)}"
    )
    print(f"latent {list(SHAPE)}, {args.steps} steps, best of {args.repeats}\n")
    print(
        "| sampler | evals/step | sampler ms/step | k-diff ms/step | ratio | KSampler path ms/step | target |"
    )
    print("|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for name in SAMPLERS:
            needs_guided = "cfg_pp" in name
            evals = (
                evals_per_run(name, sigmas, x) / args.steps if not needs_guided else float("nan")
            )
            ours = (
                per_step(lambda n=name: run_ours(n, near_free, x, sigmas))
                if not needs_guided
                else None
            )
            theirs = (
                per_step(lambda n=name: run_kdiff(kd, n, x, sigmas))
                if kd and name in KDIFF_NAMES
                else None
            )
            path = per_step(lambda n=name: run_ours(n, guided, x, sigmas))
            ratio = f"{ours / theirs:.2f}" if ours and theirs else ""
            target = TARGET_MS.get(name)
            verdict = (
                ""
                if target is None
                else (f"< {target} ms " + ("ok" if (ours or path) < target else "MISSED"))
            )
            print(
                f"| {name} | {evals:.2f} | {ours if ours is None else f'{ours:.3f}'} | "
                f"{'' if theirs is None else f'{theirs:.3f}'} | {ratio} | {path:.3f} | {verdict} |"
            )
        # the SDE samplers' cost is the Brownian tree: the same runs with torchsde's tree (what
        # ComfyUI uses; ours gives the same bits) and with plain randn noise, at batch 1 and 2
        for batch in (1, 2):
            xb = x.repeat(batch, 1, 1, 1)
            plain = FunctionNoise(lambda a, b, s=xb.shape: torch.randn(s, device=device))
            reference = SeededNoise(0, brownian_backend="torchsde")
            for name in ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde"):
                label = name if batch == 1 else f"{name} (batch 2)"
                if batch == 2:
                    ms = per_step(lambda n=name, xb=xb: run_ours(n, near_free, xb, sigmas))
                    print(f"| {label} | | {ms:.3f} | | | | |")
                ms = per_step(
                    lambda n=name, xb=xb, r=reference: run_ours(n, near_free, xb, sigmas, r)
                )
                print(f"| {label} with torchsde's Brownian tree | | {ms:.3f} | | | | |")
                if fast is not None and batch == 1:
                    with torch_draws():
                        ms = per_step(lambda n=name, xb=xb: run_ours(n, near_free, xb, sigmas))
                    print(f"| {label}, our tree drawing through torch | | {ms:.3f} | | | | |")
                ms = per_step(lambda n=name, xb=xb, p=plain: run_ours(n, near_free, xb, sigmas, p))
                print(f"| {label} without Brownian tree (randn noise) | | {ms:.3f} | | | | |")


if __name__ == "__main__":
    main()
