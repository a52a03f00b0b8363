"""Flux benchmark: a random-weight DiT (fp8 or bf16) written to a temp dir, then measured.

Measures, in the same run: loading the file to ready-to-sample (a fresh child process per
load, first and warm page cache; seconds and the child's peak RSS next to the file size),
and one DiT forward at 256x256 (latent 32x32, 512 T5 tokens) for Loom's DiT and for
diffusers' ``FluxTransformer2DModel`` holding the same weights in bf16. The file is
streamed to disk one tensor at a time, so writing never holds the whole model.

    python bench/bench_flux.py --size tiny          # seconds; proves the bench works
    python bench/bench_flux.py --size full          # Flux.1-dev: 11.9 GB fp8 file, ~24 GB for diffusers
    python bench/bench_flux.py --size full --skip-diffusers   # load + Loom step only
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


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def step_times(path: Path, config, repeats: int, skip_diffusers: bool) -> dict[str, float]:
    from loom_flux.dit import image_ids, patchify
    from loom_flux.family import FluxFamily

    from loom.memory import set_compute_dtype
    from loom.safetensors_header import read_header
    from loom.types import ModelPart

    module = FluxFamily().load(read_header(path), ModelPart.DIFFUSION_MODEL).model.module
    set_compute_dtype(module, torch.bfloat16)
    x, sigma, context, pooled, guidance = step_inputs(config)
    bf = torch.bfloat16

    def loom_step():
        module(x.to(bf), sigma, context.to(bf), pooled.to(bf), guidance)

    with torch.inference_mode():
        result = {"loom_step_s": timed(loom_step, repeats)}
    if skip_diffusers:
        return result
    import diffusers
    from loom_flux.convert import to_diffusers

    state = to_diffusers({k: v.to(bf) for k, v in module.state_dict().items()})
    with torch.device("meta"):
        reference = diffusers.FluxTransformer2DModel(
            in_channels=config.in_channels, num_layers=config.depth, num_single_layers=config.depth_single,
            attention_head_dim=config.head_dim, num_attention_heads=config.num_heads,
            joint_attention_dim=config.context_dim, pooled_projection_dim=config.vec_dim,
            guidance_embeds=config.guidance_embed, axes_dims_rope=config.axes_dim,
        )  # fmt: skip
    reference.load_state_dict(state, assign=True)
    reference.eval()
    ids = image_ids(1, 16, 16, x.device)[0]
    txt_ids = torch.zeros(context.shape[1], 3)

    def diffusers_step():
        reference(hidden_states=patchify(x).to(bf), encoder_hidden_states=context.to(bf),
                  pooled_projections=pooled.to(bf), timestep=sigma.to(bf), img_ids=ids,
                  txt_ids=txt_ids, guidance=guidance)  # fmt: skip

    with torch.inference_mode():
        result["diffusers_step_s"] = timed(diffusers_step, repeats)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--dtype", choices=("fp8", "bf16"), default="fp8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-diffusers", action="store_true")
    args = parser.parse_args()
    config = config_for(args.size)
    dtype = torch.float8_e4m3fn if args.dtype == "fp8" else torch.bfloat16
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"flux-{args.size}-{args.dtype}.safetensors"
        file_bytes = write_random_dit(path, config, dtype)
        cold, warm = load_in_child(path), load_in_child(path)
        steps = step_times(path, config, args.repeats, args.skip_diffusers)
    print(f"| Flux DiT ({args.size}, {args.dtype}) | value |\n|---|---|")
    print(f"| file | {file_bytes / 2**30:.3f} GiB |")
    print(f"| load, first / warm | {cold['seconds']:.2f} s / {warm['seconds']:.2f} s |")
    print(
        f"| load peak RSS / file | {warm['peak_rss'] / 2**30:.3f} GiB / {warm['peak_rss'] / file_bytes:.2f}x |"
    )
    for name, seconds in steps.items():
        print(
            f"| {name.removesuffix('_s').replace('_', ' ')} at 256x256 (bf16) | {seconds * 1000:.1f} ms |"
        )
    print(f"| bench process peak RSS | {peak_rss_bytes() / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
