"""SD1.5 on a CUDA GPU: full-size architecture, random weights, fp16 checkpoint, next to diffusers.

Measures, in the same run: the bare UNet forward at 512x512 (latent 64x64, batch 2: one CFG
step) in fp16 and bf16 against diffusers' UNet2DConditionModel with the same weights and
dtype, VAE decode at 512x512 against diffusers' AutoencoderKL, and a txt2img through the
real executor (euler, CFG): warm sampling step, first run in a fresh process, peak GPU
memory. Times are medians of CUDA-synchronised runs after warm-up, loom and diffusers interleaved. Exits with status 77
(``run_all.py`` keeps the last recorded section) where no CUDA device is present.

    python bench/bench_sd15_cuda.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_sd15 import (
    TOKENIZERS,
    diffusers_unet,
    diffusers_vae,
    node_seconds,
    txt2img,
    write_checkpoint,
)

SKIP = 77


def sync() -> None:
    """Wait for queued CUDA work (nothing to wait for on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ab(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Interleaved medians of two functions on the GPU (drift in clocks or host load hits both)."""
    for _ in range(3):
        fn_a(), fn_b()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def engine_child(checkpoint: Path, steps: int) -> dict:
    """txt2img 512² through the executor on CUDA: first run, warm step, peak GPU memory."""
    import os

    from loom.runtime import Runtime
    from loom.settings import Settings

    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    start = time.perf_counter()
    runtime = Runtime(
        Settings(base_directory=checkpoint.parent.parent.parent, load_custom_nodes=False)
    )
    first, _ = node_seconds(runtime, txt2img(checkpoint.name, 512, steps, seed=1))
    first_run = time.perf_counter() - start
    short = node_seconds(runtime, txt2img(checkpoint.name, 512, steps, seed=2))[0]["3"]
    long = node_seconds(runtime, txt2img(checkpoint.name, 512, 2 * steps, seed=3))[0]["3"]
    return {
        "first_run_s": first_run,
        "load_s": first.get("4", float("nan")),
        "decode_s": first.get("8", float("nan")),
        "step_s": (long - short) / steps,
        "dtype": str(runtime.memory.compute_dtype).removeprefix("torch."),
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def compare(
    checkpoint: Path, state: dict, dtype: torch.dtype, repeats: int
) -> list[tuple[str, str, str, str]]:
    """Loom's UNet and VAE, placed on the GPU by the memory manager, against diffusers'."""
    from loom_sd15.family import SD15Family
    from loom_sd15.unet import SD15_UNET, unet_flops

    from loom.memory import MemoryManager, discover_devices
    from loom.safetensors_header import read_header
    from loom.types import LoadRequest, ModelPart

    device = torch.device("cuda")
    x = torch.randn(2, 4, 64, 64, device=device)
    t = torch.tensor([500.0, 500.0], device=device)
    c = torch.randn(2, 77, 768, device=device)
    z = torch.randn(1, 4, 64, 64, device=device)
    flops = unet_flops(SD15_UNET, 2, 64, 64)
    name = str(dtype).removeprefix("torch.")
    parts = SD15Family().load(read_header(checkpoint), ModelPart.CHECKPOINT, LoadRequest())
    manager = MemoryManager(discover_devices()[0], compute_dtype=dtype)
    manager.load([parts.model, parts.vae.handle])
    unet, vae = parts.model.module, parts.vae.handle.module
    reference = diffusers_unet({k: v.to(dtype) for k, v in state.items()}).to(device)
    reference_vae = diffusers_vae({k: v.to(dtype) for k, v in state.items()}).to(device)
    xd, cd, zd = x.to(dtype), c.to(dtype), z.to(dtype)
    with torch.inference_mode():
        ours, theirs = ab(lambda: unet(x, t, c), lambda: reference(xd, t, cd), repeats)
        a, b = unet(x, t, c).float(), reference(xd, t, cd).sample.float()
        diff = (a - b).abs().max().item()
        ours_vae, theirs_vae = ab(
            lambda: vae.decode(z), lambda: reference_vae.decode(zd), max(3, repeats // 4)
        )
    manager.unload_all()
    return [
        (
            f"UNet forward {name}, 512² batch 2",
            f"{ours * 1e3:.1f} ms ({flops / ours / 1e12:.0f} TFLOP/s)",
            f"{theirs * 1e3:.1f} ms ({flops / theirs / 1e12:.0f} TFLOP/s)",
            f"ratio {ours / theirs:.2f}; max abs diff {diff:.2e} (output max abs {a.abs().max().item():.2f})",
        ),
        (
            f"VAE decode {name}, 512²",
            f"{ours_vae * 1e3:.1f} ms",
            f"{theirs_vae * 1e3:.1f} ms",
            f"ratio {ours_vae / theirs_vae:.2f}",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped", file=sys.stderr)
        return SKIP
    if args.child:
        print(json.dumps(engine_child(args.child, args.steps)))
        return 0

    from safetensors.torch import load_file

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "models" / "checkpoints" / "sd15-random-fp16.safetensors"
        write_checkpoint(ckpt)
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(ckpt), "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
        engine = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {}

        state = load_file(str(ckpt))
        for dtype in (torch.float16, torch.bfloat16):
            rows += compare(ckpt, state, dtype, args.repeats)
            torch.cuda.empty_cache()
        if engine:
            rows.append(
                (
                    f"engine ({engine['dtype']}): sampling step (euler, CFG, batch 2), warm",
                    f"{engine['step_s'] * 1e3:.1f} ms",
                    "-",
                    "the sampler node's time per step",
                )
            )
            rows.append(
                ("engine: CheckpointLoaderSimple node", f"{engine['load_s']:.2f} s", "-", "")
            )
            rows.append(
                ("engine: VAEDecode node, first run", f"{engine['decode_s']:.2f} s", "-", "")
            )
            rows.append(
                (
                    f"engine: first run, {args.steps} steps 512² (fresh process)",
                    f"{engine['first_run_s']:.1f} s",
                    "-",
                    "imports, load, encode, sample, decode",
                )
            )
            rows.append(
                ("engine: peak GPU memory allocated", f"{engine['peak_gpu_gb']:.2f} GiB", "-", "")
            )
    print(
        f"\nSD1.5 full-size, random weights; {torch.cuda.get_device_name()}, torch {torch.__version__}\n"
    )
    print("| measure | loom | diffusers | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
