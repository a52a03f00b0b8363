"""Flux benchmark: a random-weight DiT (fp8 or bf16) written to a temp dir, then measured.

Measures, in the same run: loading the file to ready-to-sample (a fresh child process per
load, first and warm page cache; seconds and the child's peak RSS next to the file size),
and one DiT forward at 256x256 (latent 32x32, 512 T5 tokens), computing in bf16, for Loom's
DiT and for diffusers' ``FluxTransformer2DModel`` holding the same weights, each in its own
child process (Loom's first; the file stays in the page cache). Diffusers in bf16 would need
~24 GB for Flux.1-dev, so its weights stay stored in the file's fp8 (copied into its process,
since the casting hook re-creates each fp8 weight after its layer runs) and are cast to bf16
layer by layer as each runs (layerwise casting, storage float8_e4m3fn, compute bfloat16; the
few weights outside any hooked Linear, norm scales and the final projection, are cast to bf16
once); Loom likewise keeps the fp8 weights and computes in bf16.
Both outputs are compared (max abs difference). The file is streamed to disk one tensor at a
time, so writing never holds the whole model. Temp files go under ``$TMPDIR``.

Memory: diffusers stores every Linear in fp8 like Loom (``--diffusers-fp8 all-linears``, through
``diffusers.hooks.apply_layerwise_casting``); ``enable_layerwise_casting`` alone would leave the
AdaLN modulation linears (Flux skips modules named "norm": 3.2 of 11.9 B parameters) in bf16,
+3 GiB at full size (``--diffusers-fp8 diffusers-default`` measures that). Both step children
run with ``MALLOC_MMAP_THRESHOLD_=131072`` (``--mmap-threshold``, 0 = glibc's dynamic default),
so weight copies made and freed per layer go back to the OS instead of growing the heap. A
memory guard kills a step child past ``--max-child-rss-gib`` (default 15) and says so in the
table. Each step child's RSS before its first forward and after each one is in the table
(and on stderr as it goes).

How to run: ``--size tiny`` proves the bench works in seconds; ``--blocks D,S`` keeps full
width (hidden 3072, 24 heads, mlp 4x, 512 T5 tokens, 256x256) with D double and S single
blocks, to study memory at reduced scale (2,4: a 1.2 GiB file, children under 2 GiB);
``--size full`` is Flux.1-dev (an 11.1 GiB fp8 file, each child ~12 GiB; with one step each,
about 13 minutes on this 2-core host):

    python bench/bench_flux.py --size tiny          # seconds; proves the bench works
    python bench/bench_flux.py --size full --blocks 2,4 --repeats 3 --warmup 0 --max-child-rss-gib 4
    python bench/bench_flux.py --size full          # Flux.1-dev: 11.1 GiB fp8 file
    python bench/bench_flux.py --size full --repeats 1 --warmup 0   # one step each on a slow CPU
    python bench/bench_flux.py --size full --dtype nvfp4 --repeats 1 --warmup 0   # Loom only

``--dtype nvfp4`` stores the blocks' Linear weights as ComfyUI's NVFP4 files do (6.3 GiB at
full size); diffusers cannot load that layout, so only Loom's step runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from guarded_child import run_guarded
from machine import peak_rss_bytes, rss_bytes
from random_files import stream_safetensors

SIZES = ("tiny", "full")
#: what diffusers' fp8 casting leaves in bf16 with ``--diffusers-fp8 all-linears``: its default
#: patterns without "norm" (only the positional embedding and the 3072x64 final projection)
LINEARS_KEPT_BF16 = ("pos_embed", "patch_embed", "^proj_in$", "^proj_out$")
#: MALLOC_MMAP_THRESHOLD_ for both step children: glibc's starting value, fixed. By default glibc
#: raises the threshold as large blocks are freed, so the per-layer bf16/fp8 weight copies
#: then come from the heap, which keeps what they free (RSS creeps up layer by layer)
MMAP_THRESHOLD = 131072


def config_for(size: str, blocks: tuple[int, int] | None = None):
    """Flux.1-dev (``full``) or the test-size DiT; ``blocks`` = (double, single) keeps the
    width (hidden 3072, 24 heads, mlp 4x at full size) and changes only the depth."""
    import attrs
    from loom_flux.dit import FLUX_DEV
    from loom_flux.tiny import tiny_spec

    config = FLUX_DEV if size == "full" else tiny_spec().dit
    if blocks is not None:
        config = attrs.evolve(config, depth=blocks[0], depth_single=blocks[1])
    return config


def write_random_dit(path: Path, config, dtype: torch.dtype | str, seed: int = 0) -> int:
    """Stream a random DiT in ComfyUI's layout to ``path``; returns the file size in bytes.
    ``dtype`` ``"nvfp4"``: every Linear weight of the blocks stored NVFP4 as ComfyUI's files
    store them (:func:`nvfp4_layers`), the rest bf16."""
    from loom_flux.dit import FluxTransformer

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in FluxTransformer(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)

    def randn(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.02

    if dtype != "nvfp4":
        return stream_safetensors(path, shapes, dtype, randn)
    shapes, dtypes, tensor_for = nvfp4_layers(shapes, generator, randn)
    return stream_safetensors(path, shapes, torch.bfloat16, tensor_for, dtypes)


def nvfp4_layers(shapes: dict, generator: torch.Generator, otherwise):
    """``(shapes, dtypes, tensor_for)`` for a file whose double/single-block Linear weights are
    stored NVFP4 in ComfyUI's layout (packed uint8 ``weight``, blocked float8 ``weight_scale``,
    float32 ``weight_scale_2``, ``comfy_quant``), with random codes and scales of the size
    ~0.02-weights get; other tensors from ``otherwise``."""
    import json

    from loom.memory import nvfp4

    config = torch.tensor(list(json.dumps({"format": "nvfp4"}).encode()), dtype=torch.uint8)
    out_shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    for key, shape in shapes.items():
        if not (key.endswith(".weight") and len(shape) == 2 and "_blocks." in key):
            out_shapes[key] = shape
            continue
        layer = key.removesuffix(".weight")
        packed = nvfp4.packed_shape(shape)
        out_shapes[key], dtypes[key] = packed, torch.uint8
        scales = f"{layer}.weight_scale"
        out_shapes[scales] = nvfp4.block_scale_shape(packed)
        dtypes[scales] = torch.float8_e4m3fn
        out_shapes[f"{layer}.weight_scale_2"], dtypes[f"{layer}.weight_scale_2"] = (), torch.float32
        out_shapes[f"{layer}.comfy_quant"] = tuple(config.shape)
        dtypes[f"{layer}.comfy_quant"] = torch.uint8

    def tensor_for(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key.endswith(".comfy_quant"):
            return config
        if key.endswith(".weight_scale_2"):
            return torch.tensor(2e-4)
        if key.endswith(".weight_scale"):
            return torch.rand(shape, generator=generator) * 16 + 8
        if dtypes.get(key) == torch.uint8:
            return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        return otherwise(key, shape)

    return out_shapes, dtypes, tensor_for


def load_in_child(path: Path) -> dict:
    """Load ``path`` through the flux family in a fresh process: seconds and peak RSS."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from guarded_child import run_guarded
from machine import peak_rss_bytes, rss_bytes
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
    """Seeded inputs of one step. Guidance 4.0, not Flux's usual 3.5: diffusers casts guidance
    to the compute dtype before scaling it by 1000, and 3500 is not a bf16 number (3504 is),
    so at 3.5 its sinusoidal guidance embedding differs from Loom's fp32 one (as ComfyUI
    computes it) and the outputs differ by ~1.7 at full width; 4000 is exact in bf16."""
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, config.latent_channels, 32, 32, generator=g),
        torch.tensor([0.8] * batch),
        torch.randn(batch, tokens, config.context_dim, generator=g),
        torch.randn(batch, config.vec_dim, generator=g),
        torch.tensor([4.0] * batch) if config.guidance_embed else None,
    )


def log_rss(what: str) -> None:
    """RSS now and the peak so far (``VmHWM``) to stderr: a trace that survives a kill."""
    now, peak = rss_bytes() / 2**30, peak_rss_bytes() / 2**30
    print(f"RSS {what}: {now:.3f} GiB (peak {peak:.3f})", file=sys.stderr, flush=True)


def timed(fn, repeats: int, warmup: int, rss: list[int]) -> tuple[float, object]:
    """Best of ``repeats`` calls after ``warmup`` untimed ones; returns (seconds, last output).
    ``rss`` receives the process's RSS before the first call and after every call (also
    written to stderr as it goes, so a child the memory guard kills still shows its trace)."""

    def mark(what: str) -> None:
        rss.append(rss_bytes())
        log_rss(what)

    mark("before the first forward")
    for i in range(warmup):
        fn()
        mark(f"after warm-up forward {i + 1}")
    best, out = float("inf"), None
    for i in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
        mark(f"after timed forward {i + 1} ({time.perf_counter() - start:.1f} s)")
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
    rss: list[int] = []
    with torch.inference_mode():
        seconds, out = timed(
            lambda: module(x.to(bf), sigma, context.to(bf), pooled.to(bf), guidance),
            repeats,
            warmup,
            rss,
        )
    save_file({"out": patchify(out).float().contiguous()}, str(out_path))
    return {"loom_step_s": seconds, "rss_per_forward": rss}


def diffusers_flux(
    config, state: dict[str, torch.Tensor], fp8_scope: str = "all-linears"
) -> torch.nn.Module:
    """diffusers' FluxTransformer2DModel holding ``state`` (diffusers' layout, on any device):
    fp8 weights stay fp8 and are cast to bf16 layer by layer as each runs (layerwise casting;
    ``fp8_scope="diffusers-default"`` leaves what ``enable_layerwise_casting`` skips, Flux's
    AdaLN linears among them, in bf16); what no casting hook covers (norm scales, the final
    projection) is cast to bf16 once."""
    import diffusers
    from diffusers.hooks import apply_layerwise_casting

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
    log_rss("model built")
    if any(p.dtype == fp8 for p in reference.parameters()) and fp8_scope == "all-linears":
        # every Linear stored fp8, as in Loom: diffusers' default leaves out the AdaLN
        # modulation linears (Flux skips "norm": 3.2 of 11.9 B parameters, +3 GiB in bf16)
        apply_layerwise_casting(
            reference, storage_dtype=fp8, compute_dtype=bf, skip_modules_pattern=LINEARS_KEPT_BF16
        )
    elif any(p.dtype == fp8 for p in reference.parameters()):
        reference.enable_layerwise_casting(storage_dtype=fp8, compute_dtype=bf)
    log_rss("layerwise casting enabled")
    for module in reference.modules():  # what no casting hook covers computes from bf16
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype != bf:
                setattr(module, name, torch.nn.Parameter(param.to(bf), requires_grad=False))
    log_rss("unhooked layers cast to bf16")
    return reference


def diffusers_step(
    path: Path, config, repeats: int, warmup: int, loom_out: Path, fp8_scope: str = "all-linears"
) -> dict[str, float]:
    """diffusers' FluxTransformer2DModel on the same file (:func:`diffusers_flux`), with its own
    copies of the file's tensors in diffusers' layout. Runs in its own process, after Loom's,
    to fit in RAM."""
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
    log_rss("fp8 weights copied in")
    reference = diffusers_flux(config, state, fp8_scope)
    state = None
    x, sigma, context, pooled, guidance = step_inputs(config)
    ids = image_ids(1, x.shape[2] // 2, x.shape[3] // 2, x.device)[0]
    txt_ids = torch.zeros(context.shape[1], 3)

    def step():
        return reference(hidden_states=patchify(x).to(bf), encoder_hidden_states=context.to(bf),
                         pooled_projections=pooled.to(bf), timestep=sigma.to(bf), img_ids=ids,
                         txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]  # fmt: skip

    rss: list[int] = []
    with torch.inference_mode():
        seconds, out = timed(step, repeats, warmup, rss)
    ours = load_file(str(loom_out))["out"]
    return {
        "diffusers_step_s": seconds,
        "max_abs_diff": (out.float() - ours).abs().max().item(),
        "max_abs_out": ours.abs().max().item(),
        "rss_per_forward": rss,
    }


def in_child(*args: str, max_rss_gib: float, env: dict[str, str]) -> dict:
    """Run this script with ``args`` in a fresh process under the memory guard; its last
    stdout line, parsed, or ``{"failed": why}``."""
    run = run_guarded([sys.executable, __file__, *args], max_rss_gib, env)
    if run.killed_at_bytes:
        print(run.stderr[-3000:], file=sys.stderr)
        return {
            "failed": f"killed by the memory guard at {run.killed_at_bytes / 2**30:.2f} GiB RSS "
            f"(limit {max_rss_gib:g} GiB, --max-child-rss-gib)"
        }
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return {"failed": (run.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def gib_list(values: list[int]) -> str:
    return ", ".join(f"{v / 2**30:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument(
        "--dtype",
        choices=("fp8", "bf16", "nvfp4"),
        default="fp8",
        help="the file's weights (nvfp4: Loom only, diffusers cannot load ComfyUI's NVFP4)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument(
        "--blocks",
        type=lambda v: tuple(int(n) for n in v.split(",")),
        help="DOUBLE,SINGLE: the size's width with only this many blocks (e.g. 2,4)",
    )
    parser.add_argument(
        "--max-child-rss-gib",
        type=float,
        default=15.0,
        help="the memory guard kills a step child whose RSS passes this (GiB)",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=MMAP_THRESHOLD,
        help="MALLOC_MMAP_THRESHOLD_ (bytes) for both step children; 0 = glibc's dynamic default",
    )
    parser.add_argument(
        "--diffusers-fp8",
        choices=("all-linears", "diffusers-default"),
        default="all-linears",
        help="which diffusers layers store fp8: every Linear as Loom does (default), or "
        "enable_layerwise_casting's own choice (Flux's AdaLN linears stay bf16: +3 GiB)",
    )
    parser.add_argument("--child", choices=("loom", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = config_for(args.size, args.blocks)
    if args.child:
        out_path = args.file.with_suffix(".loom-out.safetensors")
        timing = (args.file, config, args.repeats, args.warmup, out_path)
        if args.child == "loom":
            result = loom_step(*timing)
        else:
            result = diffusers_step(*timing, fp8_scope=args.diffusers_fp8)
        print(json.dumps({**result, "peak_rss": peak_rss_bytes()}))
        return
    dtype = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16}.get(args.dtype, args.dtype)
    timing = ["--size", args.size, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.blocks:
        timing += ["--blocks", ",".join(map(str, args.blocks))]
    env = {"MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)} if args.mmap_threshold else {}
    guard = {"max_rss_gib": args.max_child_rss_gib, "env": env}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"flux-{args.size}-{args.dtype}.safetensors"
        file_bytes = write_random_dit(path, config, dtype)
        cold, warm = load_in_child(path), load_in_child(path)
        steps = {"Loom": in_child("--child", "loom", "--file", str(path), *timing, **guard)}
        if not args.skip_diffusers and args.dtype != "nvfp4":
            scope = ["--diffusers-fp8", args.diffusers_fp8]
            steps["diffusers"] = in_child(
                "--child", "diffusers", "--file", str(path), *scope, *timing, **guard
            )
    gib = 2**30
    depth = f", {config.depth}+{config.depth_single} blocks" if args.blocks else ""
    print(f"| Flux DiT ({args.size}{depth}, {args.dtype} file) | value |\n|---|---|")
    print(f"| file | {file_bytes / gib:.3f} GiB |")
    print(
        f"| load to ready-to-sample, first / warm page cache | {cold['seconds']:.2f} s / {warm['seconds']:.2f} s |"
    )
    print(
        f"| load peak RSS (warm) / file | {warm['peak_rss'] / gib:.3f} GiB / {warm['peak_rss'] / file_bytes:.2f}x |"
    )
    malloc = f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if env else "glibc default"
    print(f"| step children's malloc | {malloc}; memory guard {args.max_child_rss_gib:g} GiB |")
    print(f"| diffusers layers stored fp8 | {args.diffusers_fp8} |")
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
        print(
            f"| {name} RSS before the first forward, then after each (GiB) | {gib_list(step['rss_per_forward'])} |"
        )
    loom, ref = steps["Loom"], steps.get("diffusers", {})
    if "loom_step_s" in loom and "diffusers_step_s" in ref:
        ratio = loom["loom_step_s"] / ref["diffusers_step_s"]
        print(f"| Loom / diffusers step time | {ratio:.2f} |")
        print(
            f"| max abs diff, diffusers vs Loom output | {ref['max_abs_diff']:.3g} "
            f"(largest |Loom output| {ref['max_abs_out']:.3g}) |"
        )
    print(f"| bench parent process peak RSS (writes the file) | {peak_rss_bytes() / gib:.2f} GiB |")


if __name__ == "__main__":
    main()
