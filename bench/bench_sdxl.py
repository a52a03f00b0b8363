"""SDXL benchmark: random weights in the real single-file layout, stored fp16, in a temp dir.

``--size full`` is the SDXL 1.0 base architecture (a ~6.9 GB fp16 file; writing it needs
~6 GB of RAM in a child process, and the fp32 parity mode ~12 GB); ``--size tiny`` the
test-size model, to check the script runs. Measures, next to diffusers in the same run: bare
UNet forward (batch 2, fp32 and bf16) with achieved GFLOP/s against the peak this machine
gives a large convolution, and the max abs difference of the two fp32 outputs; a sampling
step inside the engine (txt2img through the executor, dpmpp_2m/karras, CFG) vs the bare
forward of the same module; checkpoint load to ready-to-sample (CheckpointLoaderSimple node)
and the whole run's peak RSS. Every part runs in a fresh child process, one at a time, so
no two copies of the weights share a process's RAM: each engine mode (fp32 and
``--compute-dtype bf16``), then Loom's bare forward (UNet loaded meta + mmap, cast fp32, then
bf16), then diffusers' (fp32 copies of the file's fp16 made one tensor at a time, then bf16).
The two bare forwards are timed in separate processes one after the other, not interleaved.
Prints a markdown table. Needs
diffusers and the CLIP-L tokenizer files (LOOM_TOKENIZERS_PATH, default
../shared/data/tokenizers).

    python bench/bench_sdxl.py --size tiny              # seconds, proves the script works
    python bench/bench_sdxl.py --size full --pixels 512 # the issue's figures (big machine)
    python bench/bench_sdxl.py --size full --pixels 512 --steps 2 --whole-run bf16

``--whole-run DTYPE`` measures only issue 13's memory figure: one txt2img in a fresh engine
process computing in DTYPE (``bf16``: the fp16 file's weights are held in bf16, the same
bytes; ``fp16``: kept as stored) — load, encode, sample ``--steps``, decode — and its peak RSS
against the file's size (target <= 1.3x).

``--step-ratio DTYPE`` measures only issue 13's "engine step <= 1.05x the bare forward", in
ONE process with the checkpoint loaded once, computing in DTYPE: a KSampler run (through the
executor; dpmpp_2m/karras, CFG 7, batch 1, so the UNet sees batch 2) of ``--pairs`` + 1
steps. Each step is timed from the end of one progress handler to the next progress event (the
whole step: sampler update, guider batching, UNet, CFG, progress report) and, inside it, the
UNet call the engine makes (forward hooks on the module the model handle calls), the model
handle's ``apply_model`` and the guided denoiser; the headline is the median of step / UNet
call inside the same step, which host load cannot split (both clocks run over the same
seconds). At each step's progress event a bare forward of the same UNet module also runs on
the tensors the engine's UNet call just received, so steps and bare forwards alternate
(forward, step, forward, step, ...); their per-pair ratio is printed too, with the per-step
milliseconds of each part (:mod:`step_ratio`). ``--threads N`` sets torch's thread count
(default: torch's own); on a host shared with other work 1 thread avoids OpenMP stalls that
make small models' times jump by 100x. ``--size mid`` is SDXL base's real widths (320/640/1280
channels, context 2048, ADM 2816, real VAE) with transformer depths 0/1/1 and 2-layer text
encoders: a ~1.4 GB file, the same latent and conditioning shapes as full size, so the same
engine work around a smaller UNet:

    python bench/bench_sdxl.py --size tiny --step-ratio fp32 --threads 1          # seconds
    python bench/bench_sdxl.py --size mid --step-ratio fp32 --pairs 6 --threads 1 # < 3 GiB
    python bench/bench_sdxl.py --size full --step-ratio fp32 --pairs 8  # ~7 GB RAM, quiet host
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_sd15 import measured_peaks, node_seconds, timed
from machine import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = Path(os.environ.get("LOOM_TOKENIZERS_PATH", ROOT.parent / "shared/data/tokenizers"))


def spec_for(size: str):
    from loom_sdxl.tiny import full_spec, tiny_spec

    return {"full": full_spec, "mid": mid_spec}.get(size, tiny_spec)()


def mid_spec():
    """SDXL base's widths (UNet 320/640/1280, context 2048, ADM 2816, the real VAE, CLIP-G
    1280 and CLIP-L 768 wide) with fewer layers: UNet transformer depths 0/1/1 (middle 1),
    2-layer text encoders. The engine's work around the UNet (latent 4 channels, 77x2048
    context, 2816-wide ``y``) is full size; the file is ~1.4 GB fp16."""
    import attrs
    from loom_sdxl.tiny import full_spec

    full = full_spec()
    return attrs.evolve(
        full,
        unet=attrs.evolve(full.unet, transformer_depths=(0, 1, 1), middle_depth=1),
        clip_g=attrs.evolve(full.clip_g, num_layers=2),
        clip_l=attrs.evolve(full.clip_l, num_layers=2),
    )


def write_checkpoint(path: Path, size: str) -> None:
    """Random fp16 weights in SDXL's single-file layout, streamed to ``path``.

    One component at a time is built directly in fp16 and its tensors appended to a data
    file, then the header and the data are joined: the full-size file is written in ~6 GB of
    RAM (building the whole state, then ``save_file``, would need ~19 GB).
    """
    import shutil

    from loom_sd15.clip import build_text_encoder
    from loom_sd15.convert import clip_conversion, unet_conversion, vae_conversion
    from loom_sd15.tiny import _randomize
    from loom_sd15.vae import AutoencoderKL
    from loom_sdxl.convert import BASE_CLIP_G_PREFIX, BASE_CLIP_L_PREFIX, OpenClipConversion
    from loom_sdxl.unet import SDXLUNetModel

    spec = spec_for(size)
    generator = torch.Generator().manual_seed(0)
    builders = [
        (lambda: SDXLUNetModel(spec.unet), lambda m: unet_conversion()),
        (lambda: AutoencoderKL(spec.vae), lambda m: vae_conversion()),
        (lambda: build_text_encoder(spec.clip_g), lambda m: OpenClipConversion("CLIP-G", BASE_CLIP_G_PREFIX)),
        (
            lambda: build_text_encoder(spec.clip_l),
            lambda m: clip_conversion(BASE_CLIP_L_PREFIX, hasattr(m, "text_model"), True),
        ),
    ]  # fmt: skip
    header, offset = {}, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = path.with_name(path.name + ".data")
    with data_path.open("wb") as data:
        for build, conversion in builders:
            with torch.device("meta"):
                module = build().to(torch.float16)
            module.to_empty(device="cpu")
            _randomize(module, generator, 0.2)
            state = {
                k: v.detach()
                for k, v in module.state_dict().items()
                if not k.endswith("position_ids")
            }
            for key, tensor in conversion(module).to_checkpoint(state).items():
                raw = tensor.to(torch.float16).contiguous().view(torch.uint8).numpy().tobytes()
                header[key] = {
                    "dtype": "F16",
                    "shape": list(tensor.shape),
                    "data_offsets": [offset, offset + len(raw)],
                }
                offset += len(raw)
                data.write(raw)
            module = state = None
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as out, data_path.open("rb") as data:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        shutil.copyfileobj(data, out, 64 * 2**20)
    data_path.unlink()


def txt2img(checkpoint: str, pixels: int, steps: int, seed: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": pixels, "height": pixels, "batch_size": 1},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a glass bottle", "clip": ["4", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def engine_child(checkpoint: Path, pixels: int, steps: int, compute_dtype: str | None) -> dict:
    """Load and sample through the executor: load, per-step, bare forward, peak RSS."""
    from loom.runtime import Runtime
    from loom.settings import Settings

    base = checkpoint.parent.parent.parent
    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    runtime = Runtime(
        Settings(base_directory=base, load_custom_nodes=False, compute_dtype=compute_dtype)
    )
    per_node, _ = node_seconds(runtime, txt2img(checkpoint.name, pixels, steps, seed=1))
    sampler = []
    for n in (steps, 2 * steps):
        nodes, result = node_seconds(runtime, txt2img(checkpoint.name, pixels, n, seed=2 + n))
        sampler.append(nodes.get("3", float("nan")))
    model = result.values["4"][0][0]
    runtime.memory.load([model])
    config = model.config
    side = pixels // 8
    x = torch.randn(2, 4, side, side)
    t = torch.tensor([500.0, 500.0])
    c = torch.randn(2, 77, config.context_dim)
    y = torch.randn(2, config.adm_in_channels)
    with torch.inference_mode():
        bare = timed(lambda: model.module(x, t, c, y), 2)
    return {
        "load_s": per_node.get("4", float("nan")),
        "step_s": (sampler[1] - sampler[0]) / steps,
        "bare_forward_s": bare,
        "peak_rss_gb": peak_rss_bytes() / 2**30,
    }


def step_ratio_child(
    checkpoint: Path, pixels: int, pairs: int, compute_dtype: str, threads: int | None
) -> dict:
    """Engine step vs the UNet call inside it and vs a bare forward of the same UNet, in one
    process with the checkpoint loaded once (:func:`step_ratio.interleaved_step_ratio`); one
    2-step txt2img first warms everything up (load, oneDNN primitives)."""
    from step_ratio import interleaved_step_ratio

    from loom.runtime import Runtime
    from loom.settings import Settings

    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    runtime = Runtime(
        Settings(
            base_directory=checkpoint.parent.parent.parent,
            load_custom_nodes=False,
            compute_dtype=compute_dtype,
        )
    )
    _, warm = node_seconds(runtime, txt2img(checkpoint.name, pixels, 2, seed=1))
    handle = warm.values["4"][0][0]
    prompt = txt2img(checkpoint.name, pixels, pairs + 1, seed=2)
    result = interleaved_step_ratio(runtime, handle, prompt, threads=threads)
    return {**result, "peak_rss_gb": peak_rss_bytes() / 2**30}


def step_ratio(args: argparse.Namespace, pixels: int) -> None:
    """Write the checkpoint, run :func:`step_ratio_child` in a fresh process, print the table."""
    from step_ratio import print_step_ratio

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "models" / "checkpoints" / f"sdxl-{args.size}-fp16.safetensors"
        in_child("--write", str(ckpt), "--size", args.size)
        common = ["--size", args.size, "--pixels", str(pixels), "--pairs", str(args.pairs)]
        if args.threads is not None:
            common += ["--threads", str(args.threads)]
        result = in_child("--child", str(ckpt), "--step-ratio", args.step_ratio, *common)
    title = (
        f"SDXL engine step vs the UNet call inside it and vs a bare UNet forward, size "
        f"{args.size}, {pixels}², compute {args.step_ratio} ({torch.__version__})"
    )
    print_step_ratio(result, title, "KSampler dpmpp_2m/karras, CFG 7, batch 1")


def whole_run_child(checkpoint: Path, pixels: int, steps: int, compute_dtype: str) -> dict:
    """One txt2img (load, encode, sample, decode) in ``compute_dtype``; its peak RSS."""
    from loom.runtime import Runtime
    from loom.settings import Settings

    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    settings = Settings(
        base_directory=checkpoint.parent.parent.parent,
        load_custom_nodes=False,
        compute_dtype=compute_dtype,
    )
    start = time.perf_counter()
    per_node, _ = node_seconds(Runtime(settings), txt2img(checkpoint.name, pixels, steps, seed=1))
    return {
        "wall_s": time.perf_counter() - start,
        "nodes_s": per_node,
        "peak_rss_gb": peak_rss_bytes() / 2**30,
    }


def whole_run(args: argparse.Namespace, pixels: int) -> None:
    """Write the checkpoint, run one whole txt2img in a child, print the memory figure."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "models" / "checkpoints" / f"sdxl-{args.size}-fp16.safetensors"
        in_child("--write", str(ckpt), "--size", args.size)
        size_gb = ckpt.stat().st_size / 1e9
        common = ["--size", args.size, "--pixels", str(pixels), "--steps", str(args.steps)]
        result = in_child("--child", str(ckpt), "--whole-run", args.whole_run, *common)
    print(
        f"\nSDXL whole run, size {args.size}, {pixels}², {args.steps} steps ({torch.__version__})\n"
    )
    print("| measure | Loom | note |\n|---|---|---|")
    if not result:
        print(f"| whole run {args.whole_run} | failed (see stderr) | |")
        return
    ratio = result["peak_rss_gb"] * 2**30 / (size_gb * 1e9)
    nodes = result["nodes_s"]
    print(
        f"| peak RSS, whole {pixels}² run, compute {args.whole_run} | {result['peak_rss_gb']:.2f} GiB"
        f" | {ratio:.2f}× the {size_gb:.2f} GB fp16 file (target ≤ 1.3×) |"
    )
    print(
        f"| wall time of the run | {result['wall_s']:.1f} s | load {nodes.get('4', 0):.1f} s, "
        f"sampler {nodes.get('3', 0):.1f} s, decode {nodes.get('8', 0):.1f} s |"
    )


def in_child(*args: str) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        return {}
    lines = child.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def diffusers_unet(config, state: dict) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    channels = tuple(config.model_channels * m for m in config.channel_mult)
    with torch.device("meta"):
        model = UNet2DConditionModel(
            in_channels=4,
            out_channels=4,
            down_block_types=tuple(
                "CrossAttnDownBlock2D" if d else "DownBlock2D" for d in config.transformer_depths
            ),
            up_block_types=tuple(
                "CrossAttnUpBlock2D" if d else "UpBlock2D"
                for d in reversed(config.transformer_depths)
            ),
            block_out_channels=channels,
            cross_attention_dim=config.context_dim,
            attention_head_dim=tuple(max(1, c // 64) for c in channels),
            transformer_layers_per_block=tuple(max(1, d) for d in config.transformer_depths),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=config.adm_in_channels,
        )
    model.load_state_dict(
        convert_ldm_unet_checkpoint(state, model.config), strict=True, assign=True
    )
    return model.eval()


def forward_inputs(config, pixels: int) -> dict[str, torch.Tensor]:
    """The same seeded batch-2 inputs for both UNets (Loom's ``y`` is diffusers' added conds)."""
    from loom_sd15.unet import timestep_embedding

    g = torch.Generator().manual_seed(3)
    side = pixels // 8
    pooled = torch.randn(2, config.adm_in_channels - 6 * 256, generator=g)
    time_ids = torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]] * 2, dtype=torch.float32)
    return {
        "x": torch.randn(2, 4, side, side, generator=g),
        "t": torch.tensor([500.0, 500.0]),
        "c": torch.randn(2, 77, config.context_dim, generator=g),
        "y": torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(2, -1)], 1),
        "pooled": pooled,
        "time_ids": time_ids,
    }


def best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Fastest of ``repeats`` timed calls and the last output; one warm-up call first only
    when ``repeats`` > 1 (at full size on 2 cores one forward takes a minute)."""
    if repeats > 1:
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def loom_forward_child(ckpt: Path, pixels: int, repeats: int) -> dict:
    """Loom's UNet from the file (meta build + mmap), bare forward fp32 then bf16."""
    from loom_sdxl.family import SDXLFamily
    from safetensors.torch import save_file

    from loom.memory import cast_to, set_compute_dtype
    from loom.safetensors_header import read_header

    start = time.perf_counter()
    unet = SDXLFamily().load(read_header(ckpt), "diffusion_model").model.module
    load_s = time.perf_counter() - start
    i = forward_inputs(unet.config, pixels)
    result = {"load_s": load_s}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            cast_to(unet, dtype)
            set_compute_dtype(unet, dtype)
            result[name], out = best_of(lambda: unet(i["x"], i["t"], i["c"], i["y"]), repeats)
            if name == "fp32":
                save_file({"out": out.contiguous()}, str(ckpt.with_suffix(".loom-out.safetensors")))
    return {**result, "peak_rss_gb": peak_rss_bytes() / 2**30}


def diffusers_forward_child(ckpt: Path, pixels: int, repeats: int) -> dict:
    """diffusers' UNet2DConditionModel with the same weights (fp32 copies of the file's fp16,
    made one tensor at a time from the memory map), bare forward fp32 then bf16."""
    from loom_sdxl.family import SDXLFamily
    from safetensors.torch import load_file

    from loom.memory.safetensors_file import SafetensorsFile, release_file_pages
    from loom.safetensors_header import read_header

    config = SDXLFamily().load(read_header(ckpt), "diffusion_model").model.module.config
    state = {}
    for key, tensor in SafetensorsFile(ckpt, prefetch=False).items():
        if key.startswith("model.diffusion_model."):
            state[key] = tensor.float()
            release_file_pages(tensor)
    ref = diffusers_unet(config, state)
    state = None
    i = forward_inputs(config, pixels)
    added = {"text_embeds": i["pooled"], "time_ids": i["time_ids"]}
    result = {}
    with torch.inference_mode():
        result["fp32"], out = best_of(
            lambda: ref(i["x"], i["t"], i["c"], added_cond_kwargs=added).sample, repeats
        )
        ours = load_file(str(ckpt.with_suffix(".loom-out.safetensors")))["out"]
        result["max_abs_diff"] = (out - ours).abs().max().item()
        ref = ref.to(torch.bfloat16)
        xb, cb = i["x"].bfloat16(), i["c"].bfloat16()
        added_b = {k: v.bfloat16() for k, v in added.items()}
        result["bf16"], _ = best_of(lambda: ref(xb, i["t"], cb, added_cond_kwargs=added_b), repeats)
    return {**result, "peak_rss_gb": peak_rss_bytes() / 2**30}


def report_child(ckpt: Path, name: str, result: dict) -> None:
    """Print a child's result for the parent, and keep it next to the file (a long run
    stopped early still leaves what its finished children measured)."""
    line = json.dumps(result)
    ckpt.with_suffix(f".{name}.json").write_text(line + "\n")
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("tiny", "mid", "full"), default="tiny")
    parser.add_argument("--pixels", type=int, default=None, help="image side (tiny 64, full 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forward", choices=("loom", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--compute-dtype", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--whole-run",
        choices=("bf16", "fp16", "fp32"),
        help="only the whole-run peak RSS, computing in this dtype",
    )
    parser.add_argument(
        "--step-ratio",
        choices=("fp32", "bf16"),
        help="only engine step / bare forward, interleaved in one process, computing in this dtype",
    )
    parser.add_argument("--pairs", type=int, default=8, help="step/forward pairs (--step-ratio)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (--step-ratio)")
    args = parser.parse_args()
    pixels = args.pixels or (64 if args.size == "tiny" else 256)
    if args.write:
        write_checkpoint(args.write, args.size)
        print("{}")
        return
    if args.child and args.forward:
        child = loom_forward_child if args.forward == "loom" else diffusers_forward_child
        report_child(args.child, args.forward, child(args.child, pixels, args.repeats))
        return
    if args.child and args.whole_run:
        result = whole_run_child(args.child, pixels, args.steps, args.whole_run)
        report_child(args.child, f"whole-{args.whole_run}", result)
        return
    if args.child and args.step_ratio:
        result = step_ratio_child(args.child, pixels, args.pairs, args.step_ratio, args.threads)
        report_child(args.child, f"step-ratio-{args.step_ratio}", result)
        return
    if args.whole_run:
        whole_run(args, pixels)
        return
    if args.step_ratio:
        step_ratio(args, pixels)
        return
    if args.child:
        engine = engine_child(args.child, pixels, args.steps, args.compute_dtype)
        report_child(args.child, f"engine-{args.compute_dtype}", engine)
        return

    from loom_sdxl.unet import unet_flops

    config = spec_for(args.size).unet
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "models" / "checkpoints" / f"sdxl-{args.size}-fp16.safetensors"
        in_child("--write", str(ckpt), "--size", args.size)
        size_gb = ckpt.stat().st_size / 1e9
        common = ["--size", args.size, "--pixels", str(pixels), "--steps", str(args.steps)]
        engines = {
            dtype: in_child("--child", str(ckpt), "--compute-dtype", dtype, *common)
            for dtype in ("fp32", "bf16")
        }
        print("engines done", {k: bool(v) for k, v in engines.items()}, file=sys.stderr)
        forward = ["--repeats", str(args.repeats), *common]
        ours = in_child("--child", str(ckpt), "--forward", "loom", *forward)
        ref = in_child("--child", str(ckpt), "--forward", "diffusers", *forward) if ours else {}
    # the large-convolution peak takes minutes on a slow CPU; tiny runs only check the script
    peaks = measured_peaks() if args.size == "full" else {"fp32": 0.0, "bf16": 0.0}
    side = pixels // 8
    flops = unet_flops(config, 2, side, side)

    def rate(result: dict, name: str) -> str:
        if name not in result:
            return "failed (see stderr)"
        return f"{result[name]:.3f} s ({flops / result[name] / 1e9:.0f} GFLOP/s)"

    diff = f"max abs diff {ref['max_abs_diff']:.2e}; " if "max_abs_diff" in ref else ""
    for name in ("fp32", "bf16"):
        note = f"peak conv {peaks[name]:.0f} GFLOP/s"
        if name in ours and name in ref:
            note = f"Loom/diffusers {ours[name] / ref[name]:.2f}; " + note
        rows.append(
            (
                f"UNet forward {name}, {pixels}² batch 2 (best of {args.repeats})",
                rate(ours, name),
                rate(ref, name),
                (diff if name == "fp32" else "") + note,
            )
        )
    if ours:
        rows.append(
            (
                "UNet load (meta + mmap), warm",
                f"{ours['load_s']:.2f} s",
                "-",
                f"{size_gb:.2f} GB file",
            )
        )
        rows.append(
            (
                "peak RSS of the bare-forward process (fp32 then bf16)",
                f"{ours['peak_rss_gb']:.2f} GiB",
                f"{ref['peak_rss_gb']:.2f} GiB" if ref else "-",
                "UNet only, each in its own process",
            )
        )
    for dtype, engine in engines.items():
        if not engine:
            rows.append((f"engine {dtype}", "failed (see stderr)", "-", ""))
            continue
        ratio = engine["step_s"] / engine["bare_forward_s"]
        rows.append(
            (
                f"engine {dtype}: step (CFG, batch 2) / bare forward",
                f"{engine['step_s']:.3f} s / {engine['bare_forward_s']:.3f} s",
                "-",
                f"ratio {ratio:.2f}",
            )
        )
        rows.append(
            (
                f"engine {dtype}: load node; peak RSS of the run",
                f"{engine['load_s']:.2f} s; {engine['peak_rss_gb']:.2f} GiB",
                "-",
                f"{engine['peak_rss_gb'] * 2**30 / (size_gb * 1e9):.2f}× the file",
            )
        )
    print(f"\nSDXL bench, size {args.size}, {pixels}² ({torch.__version__})\n")
    print("| measure | Loom | diffusers | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
