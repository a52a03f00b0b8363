"""Benchmark loom.memory: loading a big fp16 safetensors file, partial loading, allocator.

Plain script; prints a markdown report::

    python bench/bench_memory_load.py               # ~2 GB file, about 2-3 minutes
    python bench/bench_memory_load.py --size-gb 0.2 # quick

Every measurement runs in a fresh subprocess so peak RSS (sampled, and ``VmHWM``) is its own:

* **read**: reading the file into a reused 64 MiB buffer (the I/O floor).
* **loom**: ``load_module`` (meta-built module, mmapped tensors assigned), then every
  weight page touched once so the bytes really come off the disk / page cache.
* **naive**: build the module with random init (fp16), ``safetensors.torch.load_file``,
  ``load_state_dict`` (what most loaders do).

Cold runs drop the file from the page cache first (``posix_fadvise(DONTNEED)``).
Then a forward through the same model fully loaded vs partially loaded with a budget of
25% of the model (simulated device: the other 75% streams per forward), and a
conv/attention forward with glibc's default allocator vs ``configure_host_allocator``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, peak_rss_bytes

CHANNELS = 1280


def build_net(blocks: int):
    """A UNet-sized stack of conv + MLP blocks built with ``loom.memory.ops``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from loom.memory import ops

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = ops.GroupNorm(32, CHANNELS)
            self.conv = ops.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
            self.ff1 = ops.Linear(CHANNELS, 4 * CHANNELS)
            self.ff2 = ops.Linear(4 * CHANNELS, CHANNELS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x + self.conv(F.silu(self.norm(x)))
            b, c, hh, ww = h.shape
            t = h.flatten(2).transpose(1, 2)
            t = t + self.ff2(F.gelu(self.ff1(t)))
            return t.transpose(1, 2).reshape(b, c, hh, ww)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(blocks)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x

    return Net()


def block_bytes_fp16() -> int:
    c = CHANNELS
    return 2 * (2 * c + c * c * 9 + c + c * 4 * c + 4 * c + 4 * c * c + c)


# --- child processes ----------------------------------------------------------------------


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def touch_pages(module) -> int:
    import torch

    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        flat = tensor.detach().reshape(-1).view(torch.uint8)
        total += int(flat[::4096].sum())
    return total


class PeakSampler:
    """Samples this process's RSS every 2 ms from a thread (peak above a baseline)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.process.memory_info().rss)


def child(mode: str, path: Path, blocks: int) -> dict:
    import psutil
    import safetensors.torch  # noqa: F401 - imported before the baseline, like torch
    import torch

    import loom.memory  # noqa: F401

    torch.set_num_threads(os.cpu_count() or 1)
    if mode.endswith("-cold"):
        drop_cache(path)
    base_rss = psutil.Process().memory_info().rss
    sampler = PeakSampler()
    result: dict = {"base_rss": base_rss}
    start = time.perf_counter()
    if mode.startswith("read"):
        buf = bytearray(64 * 2**20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    elif mode.startswith("loom"):
        from loom.memory import load_module

        net, _ = load_module(lambda: build_net(blocks), path)
        result["lazy_s"] = time.perf_counter() - start
        touch_pages(net)
    elif mode.startswith("naive"):
        from safetensors.torch import load_file

        torch.set_default_dtype(torch.float16)
        net = build_net(blocks)
        result["init_s"] = time.perf_counter() - start
        net.load_state_dict(load_file(str(path)))
    elif mode.startswith("forward"):
        result.update(forward_child(mode, path, blocks))
    elif mode.startswith("alloc"):
        result.update(alloc_child(mode))
    result["wall_s"] = time.perf_counter() - start
    result["peak_rss"] = sampler.stop()
    result["vm_hwm"] = peak_rss_bytes()
    return result


def forward_child(mode: str, path: Path, blocks: int) -> dict:
    import torch

    from loom.memory import MemoryManager, ModelHandle, load_module, simulated_device

    if os.environ.get("LOOM_BENCH_TUNED_ALLOC") == "1":
        from loom.memory import configure_host_allocator

        configure_host_allocator()
    net, _ = load_module(lambda: build_net(blocks), path)
    handle = ModelHandle(net, name="bench")
    size = handle.size_bytes()
    budget = size // 4 if mode == "forward-partial" else size * 2
    manager = MemoryManager(simulated_device(budget), budget_bytes=budget)
    x = torch.randn(1, CHANNELS, 4, 4)
    manager.load([handle], extra_memory=0)
    times = []
    with torch.inference_mode():
        for _ in range(4):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    books = manager.accounting()
    return {
        "forward_s": statistics.median(times[1:]),
        "resident": books.models[0].resident_bytes,
        "peak_accounted": books.peak_bytes,
        "budget": budget,
    }


def alloc_child(mode: str) -> dict:
    """Conv + MLP blocks at SD1.5's first level (2x320x64x64): many 10-40 MB activations."""
    import torch
    import torch.nn.functional as F

    from loom.memory import configure_host_allocator

    applied = configure_host_allocator() if mode == "alloc-tuned" else None
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1)
    norm = torch.nn.GroupNorm(32, 320)
    ff1, ff2 = torch.nn.Linear(320, 1280), torch.nn.Linear(1280, 320)
    x = torch.randn(2, 320, 64, 64)
    times = []
    with torch.inference_mode():
        for _ in range(6):
            t0 = time.perf_counter()
            h = x
            for _ in range(3):
                h = h + conv(F.silu(norm(h)))
                t = h.flatten(2).transpose(1, 2)
                h = (t + ff2(F.gelu(ff1(t)))).transpose(1, 2).reshape(h.shape)
            times.append(time.perf_counter() - t0)
    return {"times": times[1:], "applied": list(getattr(applied, "applied", []) or [])}


# --- parent -------------------------------------------------------------------------------


def run_child(mode: str, path: Path, blocks: int, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(path), "--blocks", str(blocks)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_file(path: Path, blocks: int) -> int:
    import torch
    from safetensors.torch import save_file

    from loom.memory import build_on_meta

    torch.manual_seed(0)

    meta = build_on_meta(build_net, blocks)
    tensors = {}
    for name, t in meta.state_dict().items():
        tensors[name] = (torch.rand(t.shape, dtype=torch.float16) - 0.5) * 0.05
    save_file(tensors, str(path))
    return path.stat().st_size


def machine() -> str:
    import psutil
    import torch

    from loom.memory.allocator import glibc_version

    cpu = cpu_model()
    return (
        f"{cpu}; {os.cpu_count()} cores; {psutil.virtual_memory().total / 2**30:.1f} GiB RAM; "
        f"Python {platform.python_version()}; torch {torch.__version__}; "
        f"glibc {glibc_version()}; {platform.platform()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--dir", default=None, help="where to write the temporary file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.path), args.blocks)))
        return
    blocks = max(1, round(args.size_gb * 1e9 / block_bytes_fp16()))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.safetensors"
        t0 = time.perf_counter()
        size = write_file(path, blocks)
        write_s = time.perf_counter() - t0
        rows = {}
        for mode in (
            "read-cold",
            "read-warm",
            "loom-cold",
            "loom-warm",
            "naive-cold",
            "naive-warm",
        ):
            rows[mode] = run_child(mode, path, blocks)
        fwd = {m: run_child(m, path, blocks) for m in ("forward-full", "forward-partial")}
    alloc: dict[str, list[dict]] = {"alloc-default": [], "alloc-tuned": []}
    for _ in range(2):  # alternate, so load from other processes hits both alike
        for mode in alloc:
            alloc[mode].append(run_child(mode, Path("."), 0, {"LOOM_MALLOC": "1"}))
    report(args, size, blocks, write_s, rows, fwd, alloc)


def report(args, size, blocks, write_s, rows, fwd, alloc) -> None:
    gb = size / 1e9
    print("## loom.memory load benchmark\n")
    print(f"Machine: {machine()}\n")
    print(
        f"File: {gb:.2f} GB fp16 safetensors, {blocks} blocks of conv3x3+MLP at {CHANNELS} "
        f"channels ({blocks * 8} tensors); written in {write_s:.1f} s.\n"
    )
    print(
        "| run | cache | wall s | vs read | peak RSS GB | RSS / file | RSS over baseline GB | over baseline / file |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        kind, cache = mode.split("-")
        read = rows[f"read-{cache}"]["wall_s"]
        label = {
            "read": "read file (64 MiB buffer)",
            "loom": "loom load_module + touch",
            "naive": "naive: random init + load_state_dict",
        }[kind]
        print(
            f"| {label} | {cache} | {r['wall_s']:.2f} | {r['wall_s'] / read:.2f}x | "
            f"{r['peak_rss'] / 1e9:.2f} | {r['peak_rss'] / size:.2f}x | "
            f"{(r['peak_rss'] - r['base_rss']) / 1e9:.2f} | {(r['peak_rss'] - r['base_rss']) / size:.2f}x |"
        )
    lazy = rows["loom-warm"].get("lazy_s", 0)
    init = rows["naive-warm"].get("init_s", 0)
    print(
        f"\nloom `load_module` alone (before pages are touched): {lazy * 1000:.0f} ms warm, "
        f"{rows['loom-cold'].get('lazy_s', 0) * 1000:.0f} ms cold; naive random init alone: {init:.2f} s. "
        f"Python+torch baseline RSS ≈ {rows['loom-warm']['base_rss'] / 1e9:.2f} GB.\n"
    )
    full, part = fwd["forward-full"], fwd["forward-partial"]
    print(
        "| forward (1x1280x4x4, fp16 storage, fp32 compute) | budget GB | resident GB | peak accounted GB | s/forward |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, r in (("fully loaded", full), ("partial, 25% budget (75% streamed)", part)):
        print(
            f"| {label} | {r['budget'] / 1e9:.2f} | {r['resident'] / 1e9:.2f} | "
            f"{r['peak_accounted'] / 1e9:.2f} | {r['forward_s']:.3f} |"
        )
    print(
        f"\nStreaming slowdown: {part['forward_s'] / full['forward_s']:.2f}x "
        "(CPU simulated device: streamed units are copied per forward, then dropped).\n"
    )
    print(
        "| conv+MLP forward (2x320x64x64, 3 blocks), 2 processes x 5 runs | min s | median s | peak RSS GB |"
    )
    print("|---|---:|---:|---:|")
    summary = {}
    for mode, runs in alloc.items():
        times = [t for r in runs for t in r["times"]]
        summary[mode] = (min(times), statistics.median(times))
        label = (
            "glibc defaults"
            if mode == "alloc-default"
            else (f"configure_host_allocator() ({', '.join(runs[0]['applied'])})")
        )
        print(
            f"| {label} | {summary[mode][0]:.3f} | {summary[mode][1]:.3f} | "
            f"{max(r['peak_rss'] for r in runs) / 1e9:.2f} |"
        )
    (dmin, dmed), (tmin, tmed) = summary["alloc-default"], summary["alloc-tuned"]
    print(f"\nAllocator: default/tuned = {dmin / tmin:.2f}x (min), {dmed / tmed:.2f}x (median).")


if __name__ == "__main__":
    main()
