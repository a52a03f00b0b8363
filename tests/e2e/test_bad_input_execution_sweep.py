"""Every node whose inputs can be made synthetically (IMAGE, MASK, LATENT, SIGMAS, NOISE and
widgets) runs through the real executor with the edge cases users hit: each number at its
declared min and max, 1x1 and odd-sized images, RGBA, a MASK of another size than the
IMAGE, batches of 2 and 3 on two inputs, empty strings. A node may succeed or report a
LoomError naming it; any other exception is a finding (see execution_sweep.py).
"""

from __future__ import annotations

import collections

from execution_sweep import SweepSources, sweep
from sweep_inputs import sweep_runtime

#: ``(class_type, case label) -> why`` for findings not fixed yet; each must still crash
#: (a fixed one is taken off the list).
ALLOWED_CRASHES: dict[tuple[str, str], str] = {}


def test_edge_cases_give_a_result_or_a_loom_error_naming_the_node(tmp_path):
    runtime = sweep_runtime(tmp_path, sweep=SweepSources())
    outcomes = list(sweep(runtime))
    kinds = collections.Counter(outcome.kind for outcome in outcomes)
    nodes = {outcome.class_type for outcome in outcomes}
    print(f"execution sweep: {len(nodes)} nodes, {len(outcomes)} cases, {dict(kinds)}")
    assert len(nodes) > 140 and len(outcomes) > 600, (len(nodes), len(outcomes))
    assert kinds["ok"] > 500, kinds

    crashes = [o for o in outcomes if o.kind == "crash"]
    new = [o for o in crashes if (o.class_type, o.case) not in ALLOWED_CRASHES]
    assert not new, "\n".join(f"{o.class_type} [{o.case}]: {o.detail}" for o in new)
    fixed = set(ALLOWED_CRASHES) - {(o.class_type, o.case) for o in crashes}
    assert not fixed, f"no longer crash, take them off ALLOWED_CRASHES: {sorted(fixed)}"
    # The message names the node whose input is at fault (LatentApplyOperation's error can
    # be LatentOperationSharpen's radius): some node class, followed by a colon.
    unnamed = [
        o
        for o in outcomes
        if o.kind == "loom" and not any(f"{name}:" in o.detail for name in runtime.registry.nodes)
    ]
    assert not unnamed, "\n".join(f"{o.class_type} [{o.case}]: {o.detail}" for o in unnamed)
