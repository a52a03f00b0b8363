"""Benchmark loom-lora: applying a rank-64 LoRA to the full-size SD1.5 UNet at load.

Plain script; prints a markdown table::

    python bench/bench_lora.py              # fp16 UNet (1.7 GB), about a minute
    python bench/bench_lora.py --dtype fp32

The UNet (random weights, built by loom_sd15 at full SD1.5 size) is wrapped in a model
handle. A kohya-layout rank-64 LoRA (every attention / feed-forward Linear and the 1x1
``proj_in`` / ``proj_out`` convs, as sd-scripts trains by default; ``--locon`` adds the
ResNet 3x3 convs) is written to a temporary safetensors file and goes through the real
path: ``open_safetensors`` (mmapped), the ``adapter_key_map`` answer, ``plan_patches`` and
``add_patches`` on a clone. Then the memory manager loads the clone on the CPU, which is
where the patches are computed (float32) and swapped in, and unloads it (revert).

Reported (median of ``--repeat`` cycles): load time without the LoRA, with it, and the
difference; the RSS the loaded patched model adds, next to the bytes of the patched layers
(the patched copies of those layers are all that should be new: no copy of the other base
weights, and nothing left behind after unload).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

MIB = 2**20


def rss() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def trim() -> None:
    try:
        from loom.memory import trim_host_memory

        trim_host_memory()
    except Exception:  # best effort: only glibc can trim
        pass


def build_unet(dtype):
    import torch
    from loom_sd15.model import SD15Model
    from loom_sd15.unet import SD15_UNET, UNetModel

    with torch.device("meta"):
        unet = UNetModel(SD15_UNET)
    unet.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in unet.parameters():
            param.normal_(0.0, 0.02, generator=generator)
    unet = unet.to(dtype).eval().requires_grad_(False)
    return SD15Model(unet, name="sd15-unet-random")


def lora_layers(handle, locon: bool) -> list[str]:
    """LDM layer names a kohya LoRA (LoCon with ``locon``) of rank 64 trains."""
    names = []
    for name, module in handle.module.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.ndim < 2:
            continue
        attention = ".transformer_blocks." in name or name.endswith(("proj_in", "proj_out"))
        conv3 = (
            weight.ndim == 4
            and weight.shape[-1] == 3
            and ("in_layers" in name or "out_layers" in name)
        )
        if attention or (locon and conv3):
            names.append(name)
    return names


def write_lora(handle, layers: list[str], rank: int, path: Path) -> int:
    """A kohya-layout LoRA for ``layers`` (named through the sd15 key map); returns bytes."""
    import torch
    from loom_sd15.adapter_keys import unet_diffusers_names
    from safetensors.torch import save_file

    names = unet_diffusers_names(handle.config)
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in layers:
        weight = handle.module.get_parameter(f"{layer}.weight")
        base = "lora_unet_" + names[layer].replace(".", "_")
        down = torch.randn(rank, *weight.shape[1:], generator=generator) * 0.01
        up = (
            torch.randn(
                weight.shape[0], rank, *([1, 1] if weight.ndim == 4 else []), generator=generator
            )
            * 0.01
        )
        tensors[f"{base}.lora_down.weight"] = down.half().contiguous()
        tensors[f"{base}.lora_up.weight"] = up.half().contiguous()
        tensors[f"{base}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path.stat().st_size


def patch_clone(handle, path: Path):
    """What LoraLoaderModelOnly does: clone, key map, plan, add_patches. Returns (clone, s)."""
    from loom_lora.adapters import default_adapters
    from loom_lora.loader import Target, apply_report, plan_patches
    from loom_sd15.adapter_keys import sd15_adapter_key_map

    from loom.memory import open_safetensors

    started = time.perf_counter()
    clone = handle.clone()
    answer = sd15_adapter_key_map(clone, "model")
    target = Target("model", answer.handle, answer.keys, 1.0)
    report = plan_patches(open_safetensors(path), [target], default_adapters())
    apply_report(report, [target])
    assert not report.unmatched, report.unmatched[:4]
    return clone, time.perf_counter() - started


def timed_load(memory, handle) -> tuple[float, int]:
    """Seconds to load ``handle`` and the RSS it adds while loaded; unloads afterwards."""
    trim()
    before = rss()
    started = time.perf_counter()
    memory.load([handle])
    seconds = time.perf_counter() - started
    trim()  # freed float32 temporaries are not the model's memory
    loaded = rss()
    memory.unload(handle)
    return seconds, loaded - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--locon", action="store_true", help="also the ResNet 3x3 convs")
    args = parser.parse_args()
    try:
        import loom_sd15  # noqa: F401
    except ImportError:
        sys.exit("bench_lora needs loom-sd15 (the full-size UNet is built with it)")
    import torch

    from loom.memory import MemoryManager, configure_host_allocator, cpu_device

    configure_host_allocator()  # as the runtime does at start-up

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    wall = time.perf_counter()
    handle = build_unet(dtype)
    memory = MemoryManager(cpu_device())
    layers = lora_layers(handle, args.locon)
    pointers = [p.data_ptr() for p in handle.module.parameters()]
    patched_bytes = sum(handle.module.get_parameter(f"{n}.weight").nbytes for n in layers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lora.safetensors"
        file_bytes = write_lora(handle, layers, args.rank, path)
        plain, patched, plan_s, extra = [], [], [], []
        for _ in range(args.repeat):
            seconds, _ = timed_load(memory, handle)
            plain.append(seconds)
            clone, seconds = patch_clone(handle, path)
            plan_s.append(seconds)
            seconds, added = timed_load(memory, clone)
            patched.append(seconds)
            extra.append(added)
            del clone
        trim()
        leftover = rss()
        final, _ = timed_load(memory, handle)
        leftover_after = rss() - leftover
        base_ok = [p.data_ptr() for p in handle.module.parameters()] == pointers

    size = handle.size_bytes()
    med = statistics.median
    print("## bench_lora\n")
    print(
        f"- torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {platform.python_version()}, {platform.machine()}"
    )
    print(
        f"- full-size SD1.5 UNet, random {args.dtype} weights: {size / MIB:.0f} MiB; "
        f"LoRA rank {args.rank}{' (LoCon)' if args.locon else ''} on {len(layers)} layers "
        f"({patched_bytes / MIB:.0f} MiB of base weights patched), file {file_bytes / MIB:.1f} MiB"
    )
    print(
        f"- median of {args.repeat} load/unload cycles on the CPU (weights stay where they "
        f"are; patched layers are replaced by float32-computed copies in {args.dtype})\n"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| load without LoRA | {med(plain) * 1000:.1f} ms |")
    print(
        f"| parse + plan + add_patches (LoraLoader's work, no weights touched) | {med(plan_s) * 1000:.1f} ms |"
    )
    print(f"| load with LoRA (patches computed and swapped in) | {med(patched) * 1000:.1f} ms |")
    print(f"| added time at load | {(med(patched) - med(plain)) * 1000:.1f} ms |")
    print(f"| RSS added while the patched model is loaded | {med(extra) / MIB:.1f} MiB |")
    print(f"| bytes of the patched layers (the expected extra) | {patched_bytes / MIB:.1f} MiB |")
    print(
        f"| RSS beyond the patched layers (incl. the mmapped LoRA file, {file_bytes / MIB:.0f} MiB) "
        f"| {(med(extra) - patched_bytes) / MIB:+.1f} MiB |"
    )
    print(f"| RSS change after unload + a plain load | {leftover_after / MIB:+.1f} MiB |")
    print(
        f"| base weights still the original tensors after unload | {'yes' if base_ok else 'NO'} |"
    )
    print(
        f"\nwall time of the script: {time.perf_counter() - wall:.0f} s; last plain load {final * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
