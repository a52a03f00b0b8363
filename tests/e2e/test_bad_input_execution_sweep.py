"""Every node whose inputs can be made synthetically runs through the real executor with the
edge cases users hit: each number at its declared min and max, 1x1 and odd-sized images,
RGBA, a MASK of another size than the IMAGE, batches of 2 and 3 on two inputs, conditioning
of other token counts and widths, empty strings. Nodes taking a MODEL, CLIP, VAE or CLIP
vision model get the tiny SD1.5 checkpoint, with the shape cases only. A node may succeed or
report a LoomError naming a node; any other exception is a finding (see execution_sweep.py).
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest
from execution_sweep import Outcome, SweepSources, sweep
from sweep_inputs import every_plugin, sweep_runtime

#: ``(class_type, case label) -> why`` for findings not fixed yet; each must still crash
#: (a fixed one is taken off the list).
ALLOWED_CRASHES: dict[tuple[str, str], str] = {}


def check(outcomes: list[Outcome], registry, *, min_nodes: int, min_cases: int) -> None:
    kinds = collections.Counter(outcome.kind for outcome in outcomes)
    nodes = {outcome.class_type for outcome in outcomes}
    print(f"execution sweep: {len(nodes)} nodes, {len(outcomes)} cases, {dict(kinds)}")
    assert len(nodes) >= min_nodes and len(outcomes) >= min_cases, (len(nodes), len(outcomes))
    assert kinds["ok"] > len(outcomes) // 2, kinds

    crashes = [o for o in outcomes if o.kind == "crash"]
    new = [o for o in crashes if (o.class_type, o.case) not in ALLOWED_CRASHES]
    assert not new, "\n".join(f"{o.class_type} [{o.case}]: {o.detail}" for o in new)
    swept = {(o.class_type, o.case) for o in outcomes}
    fixed = (set(ALLOWED_CRASHES) & swept) - {(o.class_type, o.case) for o in crashes}
    assert not fixed, f"no longer crash, take them off ALLOWED_CRASHES: {sorted(fixed)}"
    # The message names the node whose input is at fault (LatentApplyOperation's error can
    # be LatentOperationSharpen's radius): some node class, as a word.
    names = re.compile("|".join(rf"\b{re.escape(name)}\b" for name in registry.nodes))
    unnamed = [o for o in outcomes if o.kind == "loom" and not names.search(o.detail)]
    assert not unnamed, "\n".join(f"{o.class_type} [{o.case}]: {o.detail}" for o in unnamed)


def test_nodes_without_models_give_a_result_or_a_loom_error_naming_the_node(tmp_path):
    runtime = sweep_runtime(tmp_path, sweep=SweepSources())
    check(list(sweep(runtime)), runtime.registry, min_nodes=160, min_cases=800)


@pytest.fixture
def tiny_sd15_base(tmp_path, demo_tokenizers) -> Path:
    from loom_sd15.tiny import write_tiny_checkpoint

    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints / "tiny.safetensors", seed=0)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"shared:\n  tokenizers: {demo_tokenizers}\n", encoding="utf-8"
    )
    return tmp_path


def test_nodes_taking_a_tiny_model_give_a_result_or_a_loom_error(tiny_sd15_base):
    from loom.testing import make_runtime, make_settings

    settings = make_settings(
        tiny_sd15_base, extra_model_paths=[tiny_sd15_base / "extra_model_paths.yaml"]
    )
    runtime = make_runtime(*every_plugin(), settings=settings, sweep=SweepSources())
    # Two sampling steps: the cases are about shapes, not about how long a sampler runs.
    outcomes = list(sweep(runtime, models=True, widgets={"steps": 2}))
    check(outcomes, runtime.registry, min_nodes=75, min_cases=150)
