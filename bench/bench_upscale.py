"""Benchmark loom-upscale: a full-size Real-ESRGAN x4plus (random weights) on the CPU.

Plain script; prints a markdown table::

    python bench/bench_upscale.py               # 48x48 and 64x96 inputs, a minute or two
    python bench/bench_upscale.py --sizes 128x128 --repeat 1

The model is ``RealESRGAN_x4plus``'s architecture at full size (RRDBNet, 64 features,
23 blocks, 16.7 M parameters), built by spandrel and saved in the Real-ESRGAN key layout to
a temporary safetensors file. Reported: the load (``load_upscale_model``: read, detect,
build; median of ``--repeat``), and per input size the time of one ``upscale`` call
through the memory manager (untiled: each input fits one 512-pixel tile) in seconds and in
seconds per output megapixel, plus the RSS the upscale adds at its peak over the loaded model.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

MIB = 2**20


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakRss:
    """Samples this process's RSS every 10 ms on a thread while in the ``with`` block."""

    def __enter__(self) -> PeakRss:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def write_model(path: Path) -> int:
    import torch
    from loom_upscale.spandrel_import import import_spandrel

    from loom.memory import write_safetensors

    spandrel = import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN  # the RRDBNet spandrel builds

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    write_safetensors(path, state)
    assert spandrel.ModelLoader().load_from_state_dict(state).scale == 4
    return sum(v.numel() for v in state.values())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="48x48,64x96", help="HxW inputs, comma-separated")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from loom_upscale.loader import load_upscale_model
    from loom_upscale.upscale import upscale

    from loom.memory import MemoryManager, cpu_device

    torch.set_grad_enabled(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "RealESRGAN_x4plus-random.safetensors"
        params = write_model(path)
        loads = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            model = load_upscale_model(path, "bench")
            loads.append(time.perf_counter() - started)
        memory = MemoryManager(cpu_device())
        rows.append(
            f"| load {path.stat().st_size / MIB:.0f} MiB ({params / 1e6:.1f} M params) "
            f"| {statistics.median(loads):.2f} s | | |"
        )
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.split("x"))
            image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
            upscale(model, image[:, :16, :16], memory)  # warm-up (first-call allocations)
            times = []
            base = rss()
            with PeakRss() as peak:
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    out = upscale(model, image, memory)
                    times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            megapixels = out.shape[1] * out.shape[2] / 1e6
            rows.append(
                f"| upscale {height}x{width} -> {out.shape[1]}x{out.shape[2]} "
                f"| {seconds:.2f} s | {seconds / megapixels:.1f} s/MP "
                f"| +{(peak.peak - base) / MIB:.0f} MiB |"
            )
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; median of {args.repeat}"
    )
    print("| step | time | per output MP | peak RSS added |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
