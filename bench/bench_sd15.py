"""SD1.5 benchmark: full-size architecture, random weights, fp16 checkpoint (~2 GB) in a temp dir.

Measures, next to diffusers in the same run: bare UNet forward (256x256 latent 32x32,
batch 2, fp32 and bf16), a sampling step inside the engine (txt2img through the executor,
euler, CFG) in the default fp32 mode and in bf16 (``--compute-dtype bf16``), checkpoint load
to ready-to-sample, first-run wall time and the run's peak RSS (each mode in a fresh child
process), VAE decode, and achieved GFLOP/s next to the peak this CPU gives a large
convolution in the same run. Prints a markdown table. Needs diffusers and the CLIP-L
tokenizer files (LOOM_TOKENIZERS_PATH, default ../shared/data/tokenizers).

    python bench/bench_sd15.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = Path(os.environ.get("LOOM_TOKENIZERS_PATH", ROOT.parent / "shared/data/tokenizers"))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # least disturbed by other processes on a shared machine


def ab(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Interleaved timing of two functions (fair under background load); minimum of each."""
    fn_a(), fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(a), min(b)


def write_checkpoint(path: Path) -> float:
    from loom_sd15.tiny import checkpoint_state, full_spec, save_checkpoint

    state = checkpoint_state(full_spec(), seed=0, dtype=torch.float16, std=0.02)
    save_checkpoint(path, state)
    return path.stat().st_size / 2**30


def txt2img(checkpoint_name: str, size: int, steps: int, seed: int) -> dict:
    """ComfyUI's default txt2img workflow (API format) at ``size``², euler, CFG 8."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint_name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a glass bottle", "clip": ["4", 1]},
        },
        "7": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "text, watermark", "clip": ["4", 1]},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "bench", "images": ["8", 0]},
        },
    }


def node_seconds(runtime, prompt: dict, step_times: list[float] | None = None):
    """Run ``prompt`` on ``runtime``'s executor: (seconds per executed node id, the result).

    ``step_times`` (if given) receives the time of each sampling step, measured directly
    between consecutive progress events of the sampler (one per step).
    """
    marks: list[tuple[str | None, float]] = []
    progress: list[float] = []

    def on_event(event) -> None:
        if event.type == "executing":
            marks.append(((event.data or {}).get("node"), time.perf_counter()))
        elif event.type == "progress":
            progress.append(time.perf_counter())

    validated = runtime.executor.validate(prompt)
    result = runtime.executor.execute(
        "bench", validated.prompt, validated.outputs, {}, on_event=on_event
    )
    assert result.error is None, result.error
    if step_times is not None:
        step_times.extend(b - a for a, b in itertools.pairwise(progress))
    return {a[0]: b[1] - a[1] for a, b in itertools.pairwise(marks)}, result


def engine_child(checkpoint: Path, steps: int, compute_dtype: str | None = None) -> dict:
    """Load and sample through the real executor; first-run wall, load, per-step, peak RSS."""
    from loom.runtime import Runtime
    from loom.settings import Settings

    base = checkpoint.parent.parent.parent
    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    start = time.perf_counter()
    runtime = Runtime(
        Settings(base_directory=base, load_custom_nodes=False, compute_dtype=compute_dtype)
    )
    per_node, _ = node_seconds(runtime, txt2img(checkpoint.name, 256, steps, seed=1))
    first_run = time.perf_counter() - start
    # warm process: each sampling step timed directly (progress event to progress event),
    # the median of a second run, so no figure is derived by subtracting two noisy ones
    step_times: list[float] = []
    _, result = node_seconds(runtime, txt2img(checkpoint.name, 256, 2 * steps, seed=2), step_times)
    # The bare forward of the very module the engine sampled with, in this process, right after.
    model = result.values["4"][0][0]
    runtime.memory.load([model])  # as the sampler had it: placed, weights in their resident dtype
    x, t, c = torch.randn(2, 4, 32, 32), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
    with torch.inference_mode():
        bare_s = timed(lambda: model.module(x, t, c), 3)
    return {
        "bare_forward_s": bare_s,
        "first_run_s": first_run,
        "load_s": per_node.get("4", float("nan")),
        "step_s": statistics.median(step_times),
        "peak_rss_gb": peak_rss_bytes() / 2**30,
    }


def engine_in_child(checkpoint: Path, steps: int, compute_dtype: str) -> dict:
    """:func:`engine_child` in a fresh process (first-run and peak-RSS figures need one)."""
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(checkpoint),
            "--steps",
            str(steps),
            "--compute-dtype",
            compute_dtype,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        return {}
    return json.loads(child.stdout.strip().splitlines()[-1])


def measured_peaks(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a large, well-shaped convolution: what this CPU delivers at best."""
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(2, 320, 64, 64, dtype=dtype)
        w = torch.randn(320, 320, 3, 3, dtype=dtype)
        seconds = timed(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats)  # noqa: B023
        peaks[name] = 2 * 2 * 320 * 320 * 9 * 64 * 64 / seconds / 1e9
    return peaks


def diffusers_unet(state: dict) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    with torch.device("meta"):
        model = UNet2DConditionModel(**config)
    converted = convert_ldm_unet_checkpoint(state, model.config)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()


def diffusers_vae(state: dict) -> torch.nn.Module:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    with torch.device("meta"):
        model = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
        )
    model.load_state_dict(convert_ldm_vae_checkpoint(state, model.config), strict=True, assign=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", type=Path)
    parser.add_argument("--compute-dtype", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(engine_child(args.child, args.steps, args.compute_dtype)))
        return

    from loom_sd15.family import SD15Family
    from loom_sd15.unet import SD15_UNET, unet_flops

    from loom.memory import cast_to, set_compute_dtype
    from loom.safetensors_header import read_header
    from loom.types import LoadRequest, ModelPart

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "models" / "checkpoints" / "sd15-random-fp16.safetensors"
        size_gb = write_checkpoint(ckpt)
        engines = {dtype: engine_in_child(ckpt, args.steps, dtype) for dtype in ("fp32", "bf16")}
        peaks = measured_peaks()

        header = read_header(ckpt)
        start = time.perf_counter()
        parts = SD15Family().load(header, ModelPart.CHECKPOINT, LoadRequest())
        load_s = time.perf_counter() - start
        unet = parts.model.module
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(str(ckpt)).items()}
        x = torch.randn(2, 4, 32, 32)
        t = torch.tensor([500.0, 500.0])
        c = torch.randn(2, 77, 768)
        flops = unet_flops(SD15_UNET, 2, 32, 32)

        set_compute_dtype(unet, torch.float32)
        with torch.inference_mode():
            ours_cast = timed(lambda: unet(x, t, c), args.repeats)  # fp16 storage, fp32 compute
            cast_to(unet, torch.float32)
            ref = diffusers_unet(state)
            ours32, ref32 = ab(lambda: unet(x, t, c), lambda: ref(x, t, c), args.repeats)
            diff = (unet(x, t, c) - ref(x, t, c).sample).abs().max().item()
        rows.append(
            (
                "UNet forward fp32, 256² batch 2",
                f"{ours32:.3f} s ({flops / ours32 / 1e9:.0f} GFLOP/s)",
                f"{ref32:.3f} s ({flops / ref32 / 1e9:.0f} GFLOP/s)",
                f"max abs diff {diff:.2e}",
            )
        )
        rows.append(
            (
                "UNet forward, fp16 weights cast on the fly to fp32",
                f"{ours_cast:.3f} s",
                "-",
                "storage stays fp16 (half the RSS)",
            )
        )
        bf16_ok = hasattr(torch.backends, "mkldnn") and torch.backends.mkldnn.is_available()
        if bf16_ok:
            with torch.inference_mode():
                cast_to(unet, torch.bfloat16)
                set_compute_dtype(unet, torch.bfloat16)
                ref = ref.to(torch.bfloat16)
                xb, cb = x.bfloat16(), c.bfloat16()
                ours16, ref16 = ab(lambda: unet(x, t, c), lambda: ref(xb, t, cb), args.repeats)
            rows.append(
                (
                    "UNet forward bf16",
                    f"{ours16:.3f} s ({flops / ours16 / 1e9:.0f} GFLOP/s)",
                    f"{ref16:.3f} s",
                    "",
                )
            )
        ref = unet = parts = None  # free the fp32 copies before the VAE
        vae_parts = SD15Family().load(header, ModelPart.VAE, LoadRequest())
        vae = vae_parts.vae.handle.module
        cast_to(vae, torch.float32)
        set_compute_dtype(vae, torch.float32)
        z = torch.randn(1, 4, 32, 32)
        with torch.inference_mode():
            ref_vae_model = diffusers_vae(state)
            ours_vae, ref_vae = ab(
                lambda: vae.decode(z), lambda: ref_vae_model.decode(z), args.repeats
            )
        rows.append(("VAE decode 256², fp32", f"{ours_vae:.3f} s", f"{ref_vae:.3f} s", ""))
        rows.append(
            (
                "checkpoint load (in-process, meta + mmap)",
                f"{load_s:.2f} s",
                "-",
                f"{size_gb:.2f} GB fp16 file",
            )
        )
        for dtype, engine in engines.items():
            if not engine:
                continue
            rows.append(
                (
                    f"engine {dtype}: CheckpointLoaderSimple node",
                    f"{engine['load_s']:.2f} s",
                    "-",
                    "",
                )
            )
            rows.append(
                (
                    f"engine {dtype}: sampling step (euler, CFG, batch 2), warm",
                    f"{engine['step_s']:.3f} s ({flops / engine['step_s'] / 1e9:.0f} GFLOP/s)",
                    "-",
                    f"{engine['step_s'] / engine['bare_forward_s']:.2f}x the same module's bare forward "
                    f"({engine['bare_forward_s']:.3f} s, same process)",
                )
            )
            rows.append(
                (
                    f"engine {dtype}: first run, {args.steps} steps 256² (fresh process)",
                    f"{engine['first_run_s']:.1f} s",
                    "-",
                    "",
                )
            )
            rows.append(
                (
                    f"engine {dtype}: peak RSS of the whole run",
                    f"{engine['peak_rss_gb']:.2f} GB",
                    "-",
                    "",
                )
            )
        for dtype, rate in peaks.items():
            rows.append(
                (
                    f"measured peak, {dtype} 3x3 conv 320->320 at 64x64, batch 2",
                    f"{rate:.0f} GFLOP/s",
                    "-",
                    "the most this CPU gave in this run; the issue's anchor machine: 490 fp32 / 940 bf16",
                )
            )
    print(
        f"\nSD1.5 full-size, random weights; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| measure | loom | diffusers | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
