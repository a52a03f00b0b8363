"""Weight merges and seconds per step of a hooked run: a LoRA hook on the positive only, the
tiny SD1.5 model (fp32, CPU), KSampler through the executor.

    python bench/bench_hook_merges.py [--steps 8] [--budget BYTES]

Each step runs the positive on the hook group's clone (the LoRA merged into its weights) and
the negative on the MODEL, so the memory manager switches clones twice a step. "key merges"
counts computed patched weights (``loom.memory.placement.patched_weight`` calls), "full
merges" the same divided by the LoRA's patched keys. ``--budget`` sets the memory manager's
budget (a small one leaves no room for the merged-weights cache: the fallback).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--budget", type=int, default=None)
    args = parser.parse_args()
    import test_lora_hooks_sd15 as hooks_test
    from test_lora_sd15 import UNET_LAYERS

    import loom.memory.placement as placement
    from loom.executor.executor import Executor

    counted = {"merges": 0}
    original = placement.patched_weight

    def counting(*a, **k):
        counted["merges"] += 1
        return original(*a, **k)

    placement.patched_weight = counting
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = setup(Path(tmp))
        if args.budget is not None:
            runtime.memory.explicit_budget_bytes = args.budget
        executor = Executor(runtime)
        hooks_test.STEPS = args.steps
        prompt = hooks_test.with_hook(hooks_test.base_prompt(), on=("6",))
        prompt["3"]["inputs"]["steps"] = args.steps
        for _run in range(2):  # a warm-up, then the measured run
            prompt["3"]["inputs"]["seed"] += 1  # a new KSampler result: it runs again
            validated = executor.validate(copy.deepcopy(prompt))
            counted["merges"] = 0
            start = time.perf_counter()
            result = executor.execute("bench", validated.prompt, validated.outputs, {})
            elapsed = time.perf_counter() - start
            assert result.error is None, result.error
        merges = counted["merges"]
        keys = len(UNET_LAYERS) * 1  # one patched weight per LoRA'd UNet layer
        print(f"steps {args.steps}, LoRA keys on the UNet {keys}, budget {args.budget}")
        print(f"key merges {merges} ({merges / args.steps:.1f} per step)")
        print(f"full merges {merges / keys:.1f} ({merges / keys / args.steps:.2f} per step)")
        print(f"prompt seconds {elapsed:.3f} ({elapsed / args.steps:.4f} per step)")


if __name__ == "__main__":
    main()
