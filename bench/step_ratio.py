"""Engine step vs the UNet call inside it, and vs a bare forward: the measurement and its table.

Used by ``bench_sdxl.py --step-ratio``; works for any model the engine samples through
loom-samplers' guided denoiser whose module takes its inputs positionally
(``module(x, t, context, y)`` for SDXL).

Two ratios come out of one sampling run:

* **in-step**: each engine step against the UNet call inside that same step (timed by a
  forward pre-hook and a forward hook on the module the model handle calls, the outermost
  one: whatever the engine wraps around it is counted as engine overhead). Both clocks run
  over the same seconds, so a burst of host load that slows the step slows the UNet inside
  it too, and what is left (the step minus its UNet call) is the engine's own cost. This is
  the robust answer to "how much does the engine add to a forward".
* **pair**: each engine step against a bare forward of the same module on the same inputs,
  run just before it. The two are separate measurements seconds apart, so on a shared host
  their ratio moves by ±10% from pair to pair whatever the engine does; it shows that the
  UNet inside the engine runs as fast as the bare forward (same kernels, threads, dtypes).

The engine's own time is split further by timing, in the same steps, the guided denoiser's
calls (guider: conditioning batching, CFG; and inside it the model handle's ``apply_model``:
input scaling, timestep, casts, x0) with wrappers put on those classes for the run.

On an accelerator every clock reading first waits for the device (``synchronize``), so each
part is charged for the kernels it launched, not for the launches alone; the waits add a
little to the whole step, which makes the in-step ratio an upper bound there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

#: the timed spans, outermost first: each step's time in each, summed over its calls
SPANS = ("denoiser", "apply_model", "unet")


def device_clock(device: torch.device) -> Callable[[], float]:
    """``time.perf_counter`` read once the work queued on ``device`` is done (CUDA, XPU,
    MPS); the plain clock on the CPU, where work is done when its call returns."""
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    synchronize = getattr(backend, "synchronize", None)
    if synchronize is None:
        return time.perf_counter

    def clock() -> float:
        synchronize()
        return time.perf_counter()

    return clock


class _SpanClock:
    """Running totals of the engine's time in each of :data:`SPANS` (bare forwards the
    bench runs itself excluded), and of the UNet calls made."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.totals = dict.fromkeys(SPANS, 0.0)
        self.unet_calls = 0
        self.paused = False
        self._unet_start = 0.0

    def snapshot(self) -> dict[str, float]:
        return {**self.totals, "unet_calls": float(self.unet_calls)}

    def since(self, start: dict[str, float]) -> dict[str, float]:
        now = self.snapshot()
        return {key: now[key] - start[key] for key in now}

    def unet_started(self) -> None:
        self._unet_start = self.now()

    def unet_ended(self) -> None:
        if not self.paused:
            self.totals["unet"] += self.now() - self._unet_start
            self.unet_calls += 1

    @contextmanager
    def timing(self, owner: type, name: str, span: str) -> Iterator[None]:
        """Add the time of every call of ``owner.name`` (a method) to ``span``."""
        original = owner.__dict__[name]

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self.now()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[span] += self.now() - start

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, original)


def _method_owner(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO that defines ``name`` (where a wrapper must go)."""
    return next(klass for klass in cls.__mro__ if name in klass.__dict__)


def interleaved_step_ratio(
    runtime, handle: Any, prompt: dict, positional: int = 4, threads: int | None = None
) -> dict:
    """Run ``prompt`` (a sampler node of N + 1 steps on ``handle``, a MODEL) and time N steps,
    each with the UNet call inside it, each after a bare forward.

    At each step's progress event (the sampler's ``on_step``, reported synchronously through
    the executor) a bare forward of ``handle.module`` runs on the very tensors the engine's
    last call of it received (its first ``positional`` arguments, captured by a forward
    pre-hook: batch 2 = cond + uncond under CFG, the engine's dtype and device), and the clock
    restarts when it ends. A step is the time from the end of one progress handler to the next
    progress event: the sampler's update, the guider's batching, the model call, CFG and the
    progress report, each once, and nothing else. Inside it the module's forward hooks time
    the engine's UNet call(s), and wrappers time the guided denoiser and ``apply_model``.
    Everything runs on one thread of Python with ``threads`` torch threads (None: as set).
    """
    from loom_samplers.guided_denoiser import GuidedDenoiser

    if threads is not None:
        torch.set_num_threads(threads)
    module: torch.nn.Module = handle.module
    clock = _SpanClock(device_clock(handle.compute_target.device))
    now = clock.now
    captured: list[tuple] = []

    def pre_hook(_module, args) -> None:
        captured[:] = [args[:positional]]
        clock.unet_started()

    steps: list[float] = []
    forwards: list[float] = []
    parts: list[dict[str, float]] = []
    restart: list[tuple[float, dict[str, float]]] = []

    def on_event(event) -> None:
        if event.type != "progress":
            return
        end = now()
        if restart:
            steps.append(end - restart[-1][0])
            parts.append(clock.since(restart[-1][1]))
        if event.data["value"] >= event.data["max"]:
            return  # no step follows the last one
        clock.paused = True
        with torch.inference_mode():
            start = now()
            module(*captured[0])
            forwards.append(now() - start)
        clock.paused = False
        restart.append((now(), clock.snapshot()))

    with ExitStack() as stack:
        stack.callback(module.register_forward_pre_hook(pre_hook).remove)
        post = module.register_forward_hook(lambda *_: clock.unet_ended(), always_call=True)
        stack.callback(post.remove)
        stack.enter_context(clock.timing(GuidedDenoiser, "__call__", "denoiser"))
        owner = _method_owner(type(handle), "apply_model")
        stack.enter_context(clock.timing(owner, "apply_model", "apply_model"))
        validated = runtime.executor.validate(prompt)
        result = runtime.executor.execute(
            "bench", validated.prompt, validated.outputs, {}, on_event=on_event
        )
    assert result.error is None, result.error
    unet = [p["unet"] for p in parts]
    return {
        "pairs": len(steps),
        "step_s": steps,
        "forward_s": forwards,
        "unet_in_step_s": unet,
        "apply_model_in_step_s": [p["apply_model"] for p in parts],
        "denoiser_in_step_s": [p["denoiser"] for p in parts],
        "unet_calls_per_step": sorted({int(p["unet_calls"]) for p in parts}),
        "ratios": [s / f for s, f in zip(steps, forwards, strict=True)],
        "in_step_ratios": [s / u for s, u in zip(steps, unet, strict=True)],
        "unet_vs_bare": [u / f for u, f in zip(unet, forwards, strict=True)],
        "threads": torch.get_num_threads(),
        "inputs": ", ".join(
            f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for v in captured[0]
        ),
    }


def _median_range(values: list[float], fmt: str = ".3f") -> str:
    return f"{statistics.median(values):{fmt}} (min {min(values):{fmt}}, max {max(values):{fmt}})"


def engine_parts_ms(result: dict) -> list[tuple[str, list[float]]]:
    """Each step's time split into the UNet call and the engine's layers around it, in ms."""
    zipped = list(
        zip(
            result["step_s"],
            result["denoiser_in_step_s"],
            result["apply_model_in_step_s"],
            result["unet_in_step_s"],
            strict=True,
        )
    )
    return [
        ("whole step", [s * 1e3 for s, _, _, _ in zipped]),
        ("UNet call inside the step (module forward)", [u * 1e3 for _, _, _, u in zipped]),
        ("rest: step minus its UNet call", [(s - u) * 1e3 for s, _, _, u in zipped]),
        (
            "… model call around the UNet (apply_model: input scaling, timestep, casts, x0)",
            [(a - u) * 1e3 for _, _, a, u in zipped],
        ),
        (
            "… guider around the model call (conditioning batching, CFG)",
            [(d - a) * 1e3 for _, d, a, _ in zipped],
        ),
        (
            "… sampler around the denoiser (dpmpp_2m update, progress report)",
            [(s - d) * 1e3 for s, d, _, _ in zipped],
        ),
    ]


def print_step_ratio(result: dict, title: str, step_name: str, emit: Callable = print) -> None:
    """The markdown tables of an :func:`interleaved_step_ratio` result (``{}``: it failed)."""
    emit(f"\n{title}\n")
    emit("| measure | value |\n|---|---|")
    if not result:
        emit("| engine step / UNet call inside it | failed (see stderr) |")
        return
    pairs = result["pairs"]
    rows = [
        (
            f"**engine step / UNet call inside the same step**, median of {pairs} steps",
            _median_range(result["in_step_ratios"], ".4f"),
        ),
        (
            f"engine step / bare forward just before it, median of {pairs} interleaved pairs",
            _median_range(result["ratios"]),
        ),
        (
            "UNet call inside the step / bare forward just before it, median",
            _median_range(result["unet_vs_bare"]),
        ),
        (f"engine step ({step_name}), median", f"{statistics.median(result['step_s']):.4f} s"),
        (
            "bare forward, same module and inputs, median",
            f"{statistics.median(result['forward_s']):.4f} s",
        ),
        ("UNet calls per step", ", ".join(map(str, result["unet_calls_per_step"]))),
        ("model inputs (captured from the engine's call)", result["inputs"]),
        ("torch threads (all of it)", str(result["threads"])),
        ("process peak RSS", f"{result['peak_rss_gb']:.2f} GiB"),
        (
            "per pair: step s / forward s = ratio",
            "; ".join(
                f"{s:.4f}/{f:.4f}={s / f:.3f}"
                for s, f in zip(result["step_s"], result["forward_s"], strict=True)
            ),
        ),
    ]
    for name, value in rows:
        emit(f"| {name} | {value} |")
    emit(f"\nPer step, ms (steps 2 to {pairs + 1}; median, then each step in order)\n")
    emit("| part of the step | median ms | each step, ms |\n|---|---|---|")
    for name, values in engine_parts_ms(result):
        each = ", ".join(f"{v:.2f}" for v in values)
        emit(f"| {name} | {statistics.median(values):.2f} | {each} |")
