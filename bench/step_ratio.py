"""Engine step vs bare forward, interleaved in one process: the measurement and its table.

Used by ``bench_sdxl.py --step-ratio``; works for any model the engine samples whose module
takes its inputs positionally (``module(x, t, context, y)`` for SDXL).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved_step_ratio(
    runtime, module: torch.nn.Module, prompt: dict, positional: int = 4
) -> dict:
    """Run ``prompt`` (a sampler node of N + 1 steps) and time N (forward, step) pairs.

    At each step's progress event (the sampler's ``on_step``, reported synchronously through
    the executor) a bare forward of ``module`` runs on the very tensors the engine's last call
    of it received (its first ``positional`` arguments, captured by a forward pre-hook: batch
    2 = cond + uncond under CFG, the engine's dtype and device), and the clock restarts when
    it ends. So each pair is (bare forward, the next engine step), and a step is the time from
    the end of one progress handler to the next progress event: the sampler's update, the
    guider's batching, the model call, CFG and the progress report, each once, and nothing
    else. Both run on the same thread with the same torch thread count.
    """
    captured: list[tuple] = []
    hook = module.register_forward_pre_hook(
        lambda m, args: captured.__setitem__(slice(None), [args[:positional]])
    )
    steps: list[float] = []
    forwards: list[float] = []
    restart: list[float] = []

    def on_event(event) -> None:
        if event.type != "progress":
            return
        now = time.perf_counter()
        if restart:
            steps.append(now - restart[-1])
        if event.data["value"] >= event.data["max"]:
            return  # no step follows the last one
        with torch.inference_mode():
            start = time.perf_counter()
            module(*captured[0])
            forwards.append(time.perf_counter() - start)
        restart.append(time.perf_counter())

    try:
        validated = runtime.executor.validate(prompt)
        result = runtime.executor.execute(
            "bench", validated.prompt, validated.outputs, {}, on_event=on_event
        )
    finally:
        hook.remove()
    assert result.error is None, result.error
    ratios = [s / f for s, f in zip(steps, forwards, strict=True)]
    return {
        "pairs": len(ratios),
        "step_s": steps,
        "forward_s": forwards,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "median_step_s": statistics.median(steps),
        "median_forward_s": statistics.median(forwards),
        "threads": torch.get_num_threads(),
        "inputs": ", ".join(
            f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for v in captured[0]
        ),
    }


def print_step_ratio(result: dict, title: str, step_name: str, emit: Callable = print) -> None:
    """The markdown table of an :func:`interleaved_step_ratio` result (``{}``: it failed)."""
    emit(f"\n{title}\n")
    emit("| measure | value |\n|---|---|")
    if not result:
        emit("| engine step / bare forward | failed (see stderr) |")
        return
    low, high = min(result["ratios"]), max(result["ratios"])
    rows = [
        (
            f"engine step / bare forward, median of {result['pairs']} interleaved pairs",
            f"{result['median_ratio']:.3f} (min {low:.3f}, max {high:.3f})",
        ),
        (f"engine step ({step_name}), median", f"{result['median_step_s']:.4f} s"),
        ("bare forward, same module and inputs, median", f"{result['median_forward_s']:.4f} s"),
        ("model inputs (captured from the engine's call)", result["inputs"]),
        ("torch threads (both)", str(result["threads"])),
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
