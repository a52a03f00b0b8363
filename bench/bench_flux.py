"""Flux benchmark: a random-weight DiT (fp8 or bf16) written to a temp dir, then measured.

Measures, in the same run: loading the file to ready-to-sample (a fresh child process per
load, first and warm page cache; seconds and the child's peak RSS next to the file size),
and one DiT forward at 256x256 (latent 32x32, 512 T5 tokens), computing in bf16, for Loom's
DiT and for diffusers' ``FluxTransformer2DModel`` holding the same weights, each in its own
child process (Loom's first; the file stays in the page cache). Diffusers in bf16 would need
~24 GB for Flux.1-dev, so its weights stay stored in the file's fp8 (copied into its process,
since the casting hook re-creates each fp8 weight after its layer runs) and are cast to bf16
layer by layer as each runs (``enable_layerwise_casting(storage_dtype=float8_e4m3fn,
compute_dtype=bfloat16)``; the layers diffusers leaves out of that, norms and embeddings, are
cast to bf16 once); Loom likewise keeps the fp8 weights and computes in bf16.
Both outputs are compared (max abs difference). The file is streamed to disk one tensor at a
time, so writing never holds the whole model. Temp files go under ``$TMPDIR``.

    python bench/bench_flux.py --size tiny          # seconds; proves the bench works
    python bench/bench_flux.py --size full          # Flux.1-dev: 11.1 GiB fp8 file
    python bench/bench_flux.py --size full --repeats 1 --warmup 0   # one step each on a slow CPU
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import peak_rss_bytes

SIZES = ("tiny", "full")
SAFETENSORS_DTYPES = {torch.float8_e4m3fn: "F8_E4M3", torch.bfloat16: "BF16", torch.float32: "F32"}


def config_for(size: str):
    from loom_flux.dit import FLUX_DEV
    from loom_flux.tiny import tiny_spec

    return FLUX_DEV if size == "full" else tiny_spec().dit


def write_random_dit(path: Path, config, dtype: torch.dtype, seed: int = 0) -> int:
    """Stream a random DiT in ComfyUI's layout to ``path``; returns the file size in bytes."""
    from loom_flux.dit import FluxTransformer

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FluxTransformer(config).state_dict().items()}
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = torch.Size(shape).numel() * dtype.itemsize
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(seed)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for shape in shapes.values():
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
            out.write(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return path.stat().st_size


def load_in_child(path: Path) -> dict:
    """Load ``path`` through the flux family in a fresh process: seconds and peak RSS."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from machine import peak_rss_bytes
from loom.safetensors_header import read_header
from loom.types import ModelPart
from loom_flux.family import FluxFamily
start = time.perf_counter()
parts = FluxFamily().load(read_header({str(path)!r}), ModelPart.DIFFUSION_MODEL)
seconds = time.perf_counter() - start
assert parts.model is not None
print(json.dumps({{"seconds": seconds, "peak_rss": peak_rss_bytes()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_inputs(config, batch: int = 1, tokens: int = 512):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, config.latent_channels, 32, 32, generator=g),
        torch.tensor([0.8] * batch),
        torch.randn(batch, tokens, config.context_dim, generator=g),
        torch.randn(batch, config.vec_dim, generator=g),
        torch.tensor([3.5] * batch) if config.guidance_embed else None,
    )


def timed(fn, repeats: int, warmup: int) -> tuple[float, object]:
    """Best of ``repeats`` calls after ``warmup`` untimed ones; returns (seconds, last output)."""
    for _ in range(warmup):
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def loom_step(path: Path, config, repeats: int, warmup: int, out_path: Path) -> dict[str, float]:
    """Loom's DiT from the file (weights stay in the file's dtype), computing in bf16."""
    from loom_flux.dit import patchify
    from loom_flux.family import FluxFamily
    from safetensors.torch import save_file

    from loom.memory import set_compute_dtype
    from loom.safetensors_header import read_header
    from loom.types import ModelPart

    module = FluxFamily().load(read_header(path), ModelPart.DIFFUSION_MODEL).model.module
    set_compute_dtype(module, torch.bfloat16)
    x, sigma, context, pooled, guidance = step_inputs(config)
    bf = torch.bfloat16
    with torch.inference_mode():
        seconds, out = timed(
            lambda: module(x.to(bf), sigma, context.to(bf), pooled.to(bf), guidance),
            repeats,
            warmup,
        )
    save_file({"out": patchify(out).float().contiguous()}, str(out_path))
    return {"loom_step_s": seconds}


def diffusers_flux(config, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """diffusers' FluxTransformer2DModel holding ``state`` (diffusers' layout, on any device):
    fp8 weights stay fp8 and are cast to bf16 layer by layer as each runs
    (``enable_layerwise_casting``); what no casting hook covers (norms, embeddings) is cast to
    bf16 once."""
    import diffusers

    bf, fp8 = torch.bfloat16, torch.float8_e4m3fn
    with torch.device("meta"):
        reference = diffusers.FluxTransformer2DModel(
            in_channels=config.in_channels, num_layers=config.depth, num_single_layers=config.depth_single,
            attention_head_dim=config.head_dim, num_attention_heads=config.num_heads,
            joint_attention_dim=config.context_dim, pooled_projection_dim=config.vec_dim,
            guidance_embeds=config.guidance_embed, axes_dims_rope=config.axes_dim,
        )  # fmt: skip
    reference.load_state_dict(state, assign=True, strict=True)
    reference.eval()
    if any(p.dtype == fp8 for p in reference.parameters()):
        reference.enable_layerwise_casting(storage_dtype=fp8, compute_dtype=bf)
    for module in reference.modules():  # what no casting hook covers computes from bf16
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype != bf:
                setattr(module, name, torch.nn.Parameter(param.to(bf), requires_grad=False))
    return reference


def diffusers_step(
    path: Path, config, repeats: int, warmup: int, loom_out: Path
) -> dict[str, float]:
    """diffusers' FluxTransformer2DModel on the same file: weights stored fp8 (the file's
    tensors, memory-mapped, split into diffusers' layout without copies), each layer cast to
    bf16 as it runs (``enable_layerwise_casting``); layers diffusers skips (norms, embeddings)
    are cast to bf16 once. Runs in its own process, after Loom's, to fit in RAM."""
    from loom_flux.convert import to_diffusers
    from loom_flux.dit import image_ids, patchify
    from safetensors.torch import load_file

    from loom.memory.safetensors_file import SafetensorsFile, release_file_pages

    bf = torch.bfloat16
    state = {}
    for key, view in to_diffusers(SafetensorsFile(path, prefetch=False)).items():
        # own copies: the casting hook replaces each weight by a new fp8 tensor after its
        # layer runs, so views into the map would leave file pages and copies both resident
        state[key] = view.clone()
        release_file_pages(view)
    reference = diffusers_flux(config, state)
    state = None
    x, sigma, context, pooled, guidance = step_inputs(config)
    ids = image_ids(1, x.shape[2] // 2, x.shape[3] // 2, x.device)[0]
    txt_ids = torch.zeros(context.shape[1], 3)

    def step():
        return reference(hidden_states=patchify(x).to(bf), encoder_hidden_states=context.to(bf),
                         pooled_projections=pooled.to(bf), timestep=sigma.to(bf), img_ids=ids,
                         txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]  # fmt: skip

    with torch.inference_mode():
        seconds, out = timed(step, repeats, warmup)
    ours = load_file(str(loom_out))["out"]
    return {"diffusers_step_s": seconds, "max_abs_diff": (out.float() - ours).abs().max().item()}


def in_child(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; its last stdout line, parsed."""
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        return {"failed": child.stderr.strip().splitlines()[-1:] or ["no output"]}
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--dtype", choices=("fp8", "bf16"), default="fp8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument("--child", choices=("loom", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = config_for(args.size)
    if args.child:
        step = loom_step if args.child == "loom" else diffusers_step
        out_path = args.file.with_suffix(".loom-out.safetensors")
        result = step(args.file, config, args.repeats, args.warmup, out_path)
        print(json.dumps({**result, "peak_rss": peak_rss_bytes()}))
        return
    dtype = torch.float8_e4m3fn if args.dtype == "fp8" else torch.bfloat16
    timing = ["--size", args.size, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"flux-{args.size}-{args.dtype}.safetensors"
        file_bytes = write_random_dit(path, config, dtype)
        cold, warm = load_in_child(path), load_in_child(path)
        steps = {"Loom": in_child("--child", "loom", "--file", str(path), *timing)}
        if not args.skip_diffusers:
            steps["diffusers"] = in_child("--child", "diffusers", "--file", str(path), *timing)
    gib = 2**30
    print(f"| Flux DiT ({args.size}, {args.dtype} file) | value |\n|---|---|")
    print(f"| file | {file_bytes / gib:.3f} GiB |")
    print(
        f"| load to ready-to-sample, first / warm page cache | {cold['seconds']:.2f} s / {warm['seconds']:.2f} s |"
    )
    print(
        f"| load peak RSS (warm) / file | {warm['peak_rss'] / gib:.3f} GiB / {warm['peak_rss'] / file_bytes:.2f}x |"
    )
    for name, step in steps.items():
        if "failed" in step:
            print(f"| {name} step | failed: {step['failed']} |")
            continue
        print(
            f"| {name} step at 256x256, bf16 compute (best of {args.repeats}, {args.warmup} warm-up) | {step[f'{name.lower()}_step_s']:.2f} s |"
        )
        print(
            f"| {name} step process peak RSS / file | {step['peak_rss'] / gib:.2f} GiB / {step['peak_rss'] / file_bytes:.2f}x |"
        )
        if "max_abs_diff" in step:
            print(f"| max abs diff, diffusers vs Loom output | {step['max_abs_diff']:.3g} |")
    print(f"| bench parent process peak RSS (writes the file) | {peak_rss_bytes() / gib:.2f} GiB |")


if __name__ == "__main__":
    main()
