"""SDXL or Flux on a CUDA GPU at 1024²: full-size architecture, random weights, next to diffusers.

Issues 13 and 14's GPU figures, in one run per family:

- files: random weights in the real single-file layouts, generated on the compute device and
  streamed to disk one tensor at a time. SDXL: one fp16 checkpoint (UNet, VAE, CLIP-L,
  CLIP-G). Flux: the DiT as ComfyUI's ``flux1-dev-fp8`` UNET file (``--dtype fp8``, or bf16),
  the 16-channel VAE and CLIP-L at full size, and a T5 at full width (4096) with 2 of its 24
  layers: its output feeds the DiT unchanged in shape, and text encoding is not measured.
- engine: txt2img through the real executor in a fresh process (SDXL dpmpp_2m/karras CFG 7,
  batch 2 per step; Flux euler/simple, guidance 3.5, batch 1): seconds per step from the
  wall-time difference of a ``--steps`` and a 2×``--steps`` run (each ends with the image on
  the host, so the GPU work is done), first run, peak GPU memory (allocated and reserved).
- partial loading: the same first run in another process under a VRAM budget of half the
  diffusion model's file (``Settings.vram_budget_bytes``, the CLI's ``--vram-budget``); the
  decoded image must be byte-identical to the full-load run's (the script fails otherwise).
- bare forward: Loom's diffusion model (placed by the memory manager) and diffusers'
  ``UNet2DConditionModel`` / ``FluxTransformer2DModel`` holding the same weights in the same
  dtype, interleaved CUDA-synchronised medians after warm-up, and their max abs difference.

Exits with status 77 (``run_all.py`` keeps the last recorded section) when ``--device cuda``
finds no CUDA device. ``--size tiny --device cpu`` runs the whole logic on toy widths in
seconds, to prove the script before a GPU is lent.

    python bench/bench_family_cuda.py                             # both families (run_all.py)
    python bench/bench_family_cuda.py --family sdxl               # H200: 1024², fp16 file
    python bench/bench_family_cuda.py --family flux --dtype fp8   # H200: flux1-dev-fp8 layout
    python bench/bench_family_cuda.py --family flux --size tiny --device cpu --pixels 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from bench_sd15 import TOKENIZERS, node_seconds
from bench_sd15_cuda import SKIP, ab, sync
from machine import peak_rss_bytes
from random_files import stream_safetensors

DTYPES = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp16": torch.float16}

# --- random files in the real layouts -------------------------------------------------------


def random_tensor(key: str, shape: tuple[int, ...], device, generator, std: float) -> torch.Tensor:
    """One weight: norms near 1, biases small, matrices N(0, min(std, fan_in^-1/2)), so a
    full-depth random network stays finite."""
    if len(shape) == 1 and key.endswith(("weight", "scale")):
        return 1.0 + 0.05 * torch.randn(shape, device=device, generator=generator)
    if len(shape) == 1:
        return 0.1 * std * torch.randn(shape, device=device, generator=generator)
    fan_in = max(1, torch.Size(shape[1:]).numel())
    scale = min(std, fan_in**-0.5)
    return scale * torch.randn(shape, device=device, generator=generator)


def stream_file(
    path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, device, std: float
) -> int:
    """Write random ``shapes`` in ``dtype`` to ``path``, one tensor at a time; the file's bytes."""
    generator = torch.Generator(device=device).manual_seed(0)
    return stream_safetensors(
        path,
        shapes,
        dtype,
        lambda key, shape: random_tensor(key, shape, device, generator, std),
    )


def meta_shapes(
    build: Callable[[], torch.nn.Module], convert: Callable | None = None, prefix: str = ""
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module built on the meta device, in a file layout (``convert``)."""
    with torch.device("meta"):
        module = build()
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    if convert is not None:
        state = convert(module).to_checkpoint(state)
    return {prefix + k: tuple(v.shape) for k, v in state.items()}


class SDXL:
    """One fp16 single-file checkpoint; CheckpointLoaderSimple -> KSampler (CFG) -> VAEDecode."""

    name = "SDXL"
    cfg = 7.0
    forward_input = "batch 2 (one CFG step)"

    def __init__(self, size: str, dtype: str) -> None:
        from loom_sdxl.tiny import full_spec, tiny_spec

        self.spec = full_spec() if size == "full" else tiny_spec()
        self.dtype = torch.float16

    def write(self, base: Path, device) -> int:
        """The checkpoint; returns the diffusion model's bytes (for the VRAM budget)."""
        from loom_sd15.clip import build_text_encoder
        from loom_sd15.convert import clip_conversion, unet_conversion, vae_conversion
        from loom_sd15.vae import AutoencoderKL
        from loom_sdxl.convert import BASE_CLIP_G_PREFIX, BASE_CLIP_L_PREFIX, OpenClipConversion
        from loom_sdxl.unet import SDXLUNetModel

        spec = self.spec
        shapes = meta_shapes(lambda: SDXLUNetModel(spec.unet), lambda m: unet_conversion())
        unet_bytes = sum(torch.Size(s).numel() * 2 for s in shapes.values())
        shapes |= meta_shapes(lambda: AutoencoderKL(spec.vae), lambda m: vae_conversion())
        shapes |= meta_shapes(
            lambda: build_text_encoder(spec.clip_g),
            lambda m: OpenClipConversion("CLIP-G", BASE_CLIP_G_PREFIX),
        )
        shapes |= meta_shapes(
            lambda: build_text_encoder(spec.clip_l),
            lambda m: clip_conversion(BASE_CLIP_L_PREFIX, hasattr(m, "text_model"), True),
        )
        stream_file(
            base / "checkpoints" / "sdxl-random.safetensors", shapes, self.dtype, device, 0.2
        )
        return unet_bytes

    def prompt(self, pixels: int, steps: int, seed: int) -> dict:
        from bench_sdxl import txt2img

        return txt2img("sdxl-random.safetensors", pixels, steps, seed)

    def load_model(self, base: Path):
        from loom_sdxl.family import SDXLFamily

        from loom.safetensors_header import read_header
        from loom.types import LoadRequest, ModelPart

        path = base / "checkpoints" / "sdxl-random.safetensors"
        return SDXLFamily().load(read_header(path), ModelPart.CHECKPOINT, LoadRequest()).model

    def forwards(self, base: Path, module, device, dtype: torch.dtype, pixels: int):
        """(Loom's forward, diffusers' forward, their outputs in one layout) on the same input."""
        from bench_sdxl import diffusers_unet, forward_inputs
        from safetensors.torch import load_file

        state = load_file(str(base / "checkpoints" / "sdxl-random.safetensors"))
        state = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
        reference = diffusers_unet(module.config, state).to(device, dtype)
        i = {k: v.to(device) for k, v in forward_inputs(module.config, pixels).items()}
        added = {"text_embeds": i["pooled"].to(dtype), "time_ids": i["time_ids"].to(dtype)}
        xd, cd = i["x"].to(dtype), i["c"].to(dtype)

        def ours():
            return module(i["x"], i["t"], i["c"], i["y"])

        def theirs():
            return reference(xd, i["t"], cd, added_cond_kwargs=added).sample

        return ours, theirs, lambda out: out

    def flops(self, pixels: int) -> float:
        from loom_sdxl.unet import unet_flops

        return unet_flops(self.spec.unet, 2, pixels // 8, pixels // 8)


class Flux:
    """Separate files as ComfyUI's Flux templates load them: UNETLoader, DualCLIPLoader, VAELoader."""

    name = "Flux.1-dev"
    cfg = 1.0
    forward_input = "batch 1, 512 T5 tokens"

    def __init__(self, size: str, dtype: str) -> None:
        import attrs
        from loom_flux.dit import FLUX_DEV
        from loom_flux.t5 import T5Config
        from loom_flux.tiny import tiny_spec
        from loom_flux.vae import FLUX_VAE
        from loom_sd15.clip import TextEncoderConfig

        if size == "full":
            tiny = tiny_spec()
            # T5 at full width, 2 layers: same output shape; encoding is not what is measured
            self.spec = attrs.evolve(
                tiny,
                dit=FLUX_DEV,
                t5=T5Config(num_layers=2),
                clip=TextEncoderConfig(),
                vae=FLUX_VAE,
            )
        else:
            self.spec = tiny_spec()
        self.dtype = DTYPES[dtype]
        self.dit_name = f"flux1-dev-random-{dtype}.safetensors"

    def write(self, base: Path, device) -> int:
        from loom_flux.dit import FluxTransformer
        from loom_flux.t5 import build_t5
        from loom_sd15.clip import build_text_encoder
        from loom_sd15.vae import AutoencoderKL

        spec = self.spec
        dit = stream_file(
            base / "diffusion_models" / self.dit_name,
            meta_shapes(lambda: FluxTransformer(spec.dit)),
            self.dtype,
            device,
            0.05,
        )
        t5 = meta_shapes(lambda: build_t5(spec.t5))
        t5.pop("encoder.embed_tokens.weight", None)  # ComfyUI's files hold ``shared`` only
        stream_file(
            base / "text_encoders" / "t5-random.safetensors", t5, torch.float16, device, 0.05
        )
        clip = {
            k if k.startswith("text_model.") else f"text_model.{k}": v
            for k, v in meta_shapes(lambda: build_text_encoder(spec.clip)).items()
        }
        stream_file(
            base / "text_encoders" / "clip-l-random.safetensors", clip, torch.float16, device, 0.05
        )
        vae = meta_shapes(lambda: AutoencoderKL(spec.vae))
        stream_file(base / "vae" / "ae-random.safetensors", vae, torch.float32, device, 0.05)
        return dit

    def prompt(self, pixels: int, steps: int, seed: int) -> dict:
        clip = ["2", 0]
        return {
            "1": {"class_type": "UNETLoader", "inputs": {"unet_name": self.dit_name, "weight_dtype": "default"}},
            "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip-l-random.safetensors", "clip_name2": "t5-random.safetensors", "type": "flux"}},
            "4": {"class_type": "VAELoader", "inputs": {"vae_name": "ae-random.safetensors"}},
            "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": pixels, "height": pixels, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle", "clip": clip}},
            "7": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0], "guidance": 3.5}},
            "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
            "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0, "model": ["1", 0], "positive": ["7", 0], "negative": ["10", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 0]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
        }  # fmt: skip

    def load_model(self, base: Path):
        from loom_flux.family import FluxFamily

        from loom.safetensors_header import read_header
        from loom.types import ModelPart

        path = base / "diffusion_models" / self.dit_name
        return FluxFamily().load(read_header(path), ModelPart.DIFFUSION_MODEL).model

    def forwards(self, base: Path, module, device, dtype: torch.dtype, pixels: int):
        from bench_flux import diffusers_flux
        from loom_flux.convert import to_diffusers
        from loom_flux.dit import image_ids, patchify

        from loom.memory.safetensors_file import SafetensorsFile

        config = self.spec.dit
        file = SafetensorsFile(base / "diffusion_models" / self.dit_name, prefetch=False)
        reference = diffusers_flux(config, {k: v.to(device) for k, v in to_diffusers(file).items()})
        g = torch.Generator().manual_seed(1)
        side = pixels // 8
        x = torch.randn(1, config.latent_channels, side, side, generator=g).to(device, dtype)
        context = torch.randn(1, 512, config.context_dim, generator=g).to(device, dtype)
        pooled = torch.randn(1, config.vec_dim, generator=g).to(device, dtype)
        sigma = torch.tensor([0.8], device=device)
        guidance = torch.tensor([3.5], device=device) if config.guidance_embed else None
        ids = image_ids(1, side // 2, side // 2, device)[0]
        txt_ids = torch.zeros(context.shape[1], 3, device=device)

        def ours():
            return module(x, sigma, context, pooled, guidance)

        def theirs():
            return reference(hidden_states=patchify(x), encoder_hidden_states=context,
                             pooled_projections=pooled, timestep=sigma.to(dtype), img_ids=ids,
                             txt_ids=txt_ids, guidance=guidance, return_dict=False)[0]  # fmt: skip

        return ours, theirs, patchify

    def flops(self, pixels: int) -> float:
        """Matrix products of one step: 2 x params x tokens, plus attention's two products."""
        c = self.spec.dit
        tokens = (pixels // 16) ** 2 + 512
        with torch.device("meta"):
            from loom_flux.dit import FluxTransformer

            params = sum(p.numel() for p in FluxTransformer(c).parameters())
        return 2 * params * tokens + 4 * (c.depth + c.depth_single) * tokens**2 * c.hidden_size


FAMILIES = {"sdxl": SDXL, "flux": Flux}

# --- children -------------------------------------------------------------------------------


def first_output(result, node: str):
    value = result.values[node][0]
    return value[0] if isinstance(value, list | tuple) else value


def result_hashes(result) -> dict:
    """sha256 of the sampled latent and of the decoded image as SaveImage writes its pixels
    (uint8 of clip(255 x)), and the image's pixel spread (a constant image proves nothing)."""
    latent = first_output(result, "3")
    latent = latent["samples"] if isinstance(latent, dict) else latent
    image = first_output(result, "8").float().cpu()
    pixels = (image * 255.0).clip(0, 255).to(torch.uint8)
    return {
        "latent": hashlib.sha256(latent.float().cpu().numpy().tobytes()).hexdigest(),
        "image": hashlib.sha256(pixels.numpy().tobytes()).hexdigest(),
        "pixel_std": pixels.float().std().item(),
    }


def sampled_alike(full: dict, budget: dict) -> Iterable[tuple[str, bool, str]]:
    """(what, same bytes, note) for each image both runs made.

    With CFG > 1 the sampler runs cond and uncond as one batch-2 forward only when its
    activations fit beside the model (ComfyUI's rule); under a budget smaller than the model
    they run as two batch-1 forwards, whose rounding differs. At cfg 1 both runs make one
    batch-1 forward per step, so partial loading alone is compared: those bytes must match.
    """
    for name, what in (("cfg1", "cfg 1"), ("cfg", "the workflow's CFG")):
        a, b = full["images"].get(name), budget["images"].get(name)
        if a is None or b is None:
            continue
        required = name == "cfg1" or "cfg1" not in full["images"]
        note = f"sha256 {a['image'][:16]}, pixel std {a['pixel_std']:.1f}; latent "
        note += "same" if a["latent"] == b["latent"] else "different"
        if not required:
            note += " (informative: under the budget cond/uncond run as two batches)"
        yield (
            f"image under the VRAM budget == full-load image, {what}",
            a["image"] == b["image"],
            note,
            required,
        )


def engine_child(args: argparse.Namespace) -> dict:
    """txt2img through the executor: first run, s/it, peak memory; keeps the first image."""
    from loom.runtime import Runtime
    from loom.settings import Settings

    os.environ.setdefault("LOOM_TOKENIZERS_PATH", str(TOKENIZERS))
    family = FAMILIES[args.family](args.size, args.dtype)
    base = args.base
    settings = Settings(
        base_directory=base.parent,
        load_custom_nodes=False,
        cpu_only=args.device == "cpu",
        vram_budget_bytes=args.budget or None,
    )
    runtime = Runtime(settings)
    streamed = [0]  # the most bytes any loaded model streamed (partial loading), after each load
    place = runtime.memory.load

    def load_and_record(*a, **k):
        out = place(*a, **k)
        models = runtime.memory.accounting().models
        streamed.append(max((m.streamed_bytes for m in models), default=0))
        return out

    runtime.memory.load = load_and_record

    def run(steps: int, seed: int, cfg: float | None = None):
        prompt = family.prompt(args.pixels, steps, seed)
        if cfg is not None:
            prompt["3"]["inputs"]["cfg"] = cfg
        start = time.perf_counter()
        nodes, result = node_seconds(runtime, prompt)
        sync()
        return time.perf_counter() - start, nodes, result

    first, nodes, result = run(args.steps, 1)
    images = {"cfg": result_hashes(result)}
    if family.cfg != 1.0:  # one batch per step whatever the memory: see sampled_alike
        images["cfg1"] = result_hashes(run(args.steps, 1, cfg=1.0)[2])
    short = run(args.steps, 2)[0]
    long = run(2 * args.steps, 3)[0]
    cuda = torch.cuda.is_available() and args.device == "cuda"
    return {
        "first_run_s": first,
        "load_s": sum(nodes.get(n, 0.0) for n in ("1", "2", "4")),
        "step_s": (long - short) / args.steps,
        "dtype": str(runtime.memory.compute_dtype).removeprefix("torch."),
        "peak_allocated_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
        "peak_reserved_gb": torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0,
        "peak_rss_gb": peak_rss_bytes() / 2**30,
        "images": images,
        "evictions": len(runtime.memory.evictions),
        "streamed_gb": max(streamed) / 2**30,
    }


def forward_child(args: argparse.Namespace) -> dict:
    """Bare forward, Loom against diffusers, same weights and dtype, interleaved medians."""
    from loom.memory import MemoryManager, cpu_device, discover_devices

    family = FAMILIES[args.family](args.size, args.dtype)
    device = torch.device(args.device)
    dtype = torch.float16 if args.family == "sdxl" else torch.bfloat16
    handle = family.load_model(args.base)
    manager = MemoryManager(
        cpu_device() if args.device == "cpu" else discover_devices()[0], compute_dtype=dtype
    )
    manager.load([handle])
    with torch.inference_mode():
        ours, theirs, layout = family.forwards(args.base, handle.module, device, dtype, args.pixels)
        ours_s, theirs_s = ab(ours, theirs, args.repeats)
        a, b = layout(ours()).float(), theirs().float()
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "ours_s": ours_s,
        "theirs_s": theirs_s,
        "max_abs_diff": (a - b).abs().max().item(),
        "out_max_abs": a.abs().max().item(),
        "flops": family.flops(args.pixels),
    }


def in_child(*args: str) -> dict:
    """This script in a fresh process; its last stdout line parsed, or the error's last line."""
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if child.returncode != 0:
        print(child.stderr[-4000:], file=sys.stderr)
        return {"failed": (child.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(child.stdout.strip().splitlines()[-1])


# --- report ---------------------------------------------------------------------------------


def rows(family, args, engine: dict, budget: dict, budget_bytes: int, forward: dict, model_bytes: int) -> Iterable[tuple[str, ...]]:  # fmt: skip
    px = f"{args.pixels}²"
    if "failed" in forward:
        yield ("bare forward", "failed", "-", forward["failed"])
    else:
        f = forward["flops"]
        yield (
            f"{family.name} forward {forward['dtype']}, {px} {family.forward_input}",
            f"{forward['ours_s'] * 1e3:.1f} ms ({f / forward['ours_s'] / 1e12:.0f} TFLOP/s)",
            f"{forward['theirs_s'] * 1e3:.1f} ms ({f / forward['theirs_s'] / 1e12:.0f} TFLOP/s)",
            f"ratio {forward['ours_s'] / forward['theirs_s']:.2f}; max abs diff "
            f"{forward['max_abs_diff']:.2e} (output max abs {forward['out_max_abs']:.2f})",
        )
    for label, result in (
        ("full load", engine),
        (f"VRAM budget {budget_bytes / 2**30:.2f} GiB", budget),
    ):
        if "failed" in result:
            yield (f"engine, {label}", "failed", "-", result["failed"])
            continue
        yield (
            f"engine ({result['dtype']}), {label}: sampling step {px}",
            f"{result['step_s']:.3f} s/it ({1 / result['step_s']:.2f} it/s)",
            "-",
            f"wall difference of {args.steps} and {2 * args.steps} steps",
        )
        yield (
            f"engine, {label}: first run ({args.steps} steps, fresh process)",
            f"{result['first_run_s']:.1f} s",
            "-",
            f"loaders {result['load_s']:.1f} s; evictions {result['evictions']}; "
            f"most streamed by a partly loaded model {result['streamed_gb']:.3f} GiB",
        )
        yield (
            f"engine, {label}: peak GPU memory allocated / reserved",
            f"{result['peak_allocated_gb']:.2f} / {result['peak_reserved_gb']:.2f} GiB",
            "-",
            f"diffusion model file {model_bytes / 2**30:.2f} GiB; peak RSS {result['peak_rss_gb']:.1f} GiB",
        )
    if "failed" not in engine and "failed" not in budget:
        for what, same, note, _ in sampled_alike(engine, budget):
            yield (what, "same bytes" if same else "DIFFERENT", "-", note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=tuple(FAMILIES), help="default: each in turn")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("fp8", "bf16"), default="fp8", help="Flux DiT file")
    parser.add_argument("--pixels", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--child", choices=("engine", "forward"), help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped", file=sys.stderr)
        return SKIP
    if args.child:
        child = engine_child if args.child == "engine" else forward_child
        print(json.dumps(child(args)))
        return 0

    status = 0
    for name in [args.family] if args.family else list(FAMILIES):
        status |= measure(name, args)
    return status


def measure(name: str, args: argparse.Namespace) -> int:
    """Write one family's files, run the three children, print the table; 0 when all passed."""
    family = FAMILIES[name](args.size, args.dtype)
    common = ["--family", name, "--size", args.size, "--device", args.device]
    common += ["--dtype", args.dtype, "--pixels", str(args.pixels), "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "models"
        start = time.perf_counter()
        model_bytes = family.write(base, torch.device(args.device))
        written = time.perf_counter() - start
        print(f"files written in {written:.1f} s", file=sys.stderr)
        budget_bytes = model_bytes // 2
        engine = in_child(*common, "--child", "engine", "--base", str(base))
        budget = in_child(*common, "--child", "engine", "--base", str(base), "--budget", str(budget_bytes))  # fmt: skip
        forward = in_child(*common, "--child", "forward", "--base", str(base), "--repeats", str(args.repeats))  # fmt: skip
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"\n{family.name}, size {args.size}, random weights; {device}, torch {torch.__version__}\n"
    )
    print("| measure | loom | diffusers | note |\n|---|---|---|---|")
    for row in rows(family, args, engine, budget, budget_bytes, forward, model_bytes):
        print("| " + " | ".join(row) + " |")
    ok = not any("failed" in r for r in (engine, budget, forward))
    if ok and not all(same for _, same, _, required in sampled_alike(engine, budget) if required):
        print("the image under the VRAM budget differs from the full-load image", file=sys.stderr)
        return 1
    if ok and budget["streamed_gb"] == 0:
        print("the VRAM budget run loaded no model partially", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
