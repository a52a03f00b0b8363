"""Weight merges and seconds per step of a hooked run: a LoRA hook on the positive only, the
tiny SD1.5 model (fp32, CPU), KSampler through the executor.

    python bench/bench_hook_merges.py [--steps 8] [--repeats 9]

Each step runs the positive on the hook group's clone (the LoRA merged into its weights) and
the negative on the MODEL, so the memory manager switches clones twice a step. "key merges"
counts computed patched weights (``loom.memory.placement.patched_weight`` calls), "full
merges" the same divided by the LoRA's patched keys. Two runs: a budget with room for the
merged-weights cache, and a budget of 1 byte, which leaves no room for it (the fallback,
what every run did before the cache). Seconds are the best of ``--repeats`` prompts (only
the KSampler and the decode run again: each repeat changes the seed) divided by the steps;
on the tiny model the merges are a small part of a step, so the whole-prompt figure mostly
shows the machine's noise.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "lora"), str(ROOT / "tests")]


def setup(base: Path):
    from loom_sd15.demo import write_demo_tokenizer
    from loom_sd15.tiny import write_tiny_checkpoint
    from safetensors.torch import save_file
    from test_lora_sd15 import make_lora, make_runtime

    from loom.memory import open_safetensors

    checkpoint = base / "models" / "checkpoints" / "tiny.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_tiny_checkpoint(checkpoint, seed=0)
    shapes = {k: tuple(v.shape) for k, v in open_safetensors(checkpoint).items()}
    loras = base / "models" / "loras"
    loras.mkdir(parents=True)
    save_file(make_lora(shapes, 1, layout="kohya"), str(loras / "a_kohya.safetensors"))
    write_demo_tokenizer(base / "tokenizers" / "clip_l")
    (base / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {base / 'tokenizers'}\n", encoding="utf-8"
    )
    return make_runtime(base)


def measure(runtime, steps: int, repeats: int, counted: dict) -> tuple[int, float, float]:
    """``(key merges, seconds merging, prompt seconds)`` of the best of ``repeats`` runs."""
    import test_lora_hooks_sd15 as hooks_test

    from loom.executor.executor import Executor

    executor = Executor(runtime)
    prompt = hooks_test.with_hook(hooks_test.base_prompt(), on=("6",))
    prompt["3"]["inputs"]["steps"] = steps
    runs = []
    for _run in range(1 + repeats):  # a warm-up, then the measured runs
        prompt["3"]["inputs"]["seed"] += 1  # a new KSampler result: it runs again
        validated = executor.validate(copy.deepcopy(prompt))
        counted["merges"], counted["seconds"] = 0, 0.0
        start = time.perf_counter()
        result = executor.execute("bench", validated.prompt, validated.outputs, {})
        elapsed = time.perf_counter() - start
        assert result.error is None, result.error
        runs.append((counted["merges"], counted["seconds"], elapsed))
    measured = runs[1:]
    return measured[-1][0], min(r[1] for r in measured), min(r[2] for r in measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    from test_lora_sd15 import UNET_LAYERS

    import loom.memory.placement as placement

    counted = {"merges": 0, "seconds": 0.0}
    original = placement.patched_weight

    def counting(*a, **k):
        counted["merges"] += 1
        start = time.perf_counter()
        out = original(*a, **k)
        counted["seconds"] += time.perf_counter() - start
        return out

    placement.patched_weight = counting
    torch.set_num_threads(1)  # the tiny model: threads only add noise on a shared machine
    keys = len(UNET_LAYERS)  # one patched weight per LoRA'd UNet layer
    modes = (("merged-weights cache", 10**10), ("no room for it (before)", 1))
    steps = args.steps
    print(f"steps {steps}, LoRA keys on the UNet {keys}, best of {args.repeats}\n")
    print("| run | budget | full merges/step | ms merging/step | s/step (whole prompt) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        runtime = setup(Path(tmp))
        for label, budget in modes:
            runtime.memory.unload_all()
            runtime.memory.explicit_budget_bytes = budget
            merges, merging, elapsed = measure(runtime, steps, args.repeats, counted)
            print(
                f"| {label} | {budget} | {merges / keys / steps:.3f} | "
                f"{merging / steps * 1000:.3f} | {elapsed / steps:.4f} |"
            )


if __name__ == "__main__":
    main()
