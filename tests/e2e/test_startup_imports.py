"""Start-up (issue 15): commands that only need the node registry never import torch.

``loom nodes``, ``loom validate`` and ``/object_info`` register every installed plugin; the
model code, torch, transformers and redis are imported only when a node runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loom.registration import DeferredModelFamily

HEAVY = ("torch", "transformers", "diffusers", "safetensors", "numpy", "redis", "k_diffusion")

PROBE = """
import json, sys
from loom.cli.main import main
from loom.runtime import Runtime

runtime = Runtime()
registry = runtime.registry
codes = {}
for args in (["nodes", "--json"], ["validate", sys.argv[1]]):
    codes[args[0]] = main(args)
print(json.dumps({
    "codes": codes,
    "failures": [str(f) for f in runtime.host.failures],
    "families": sorted(registry.families),
    "adapters": sorted(registry.weight_adapters),
    "nodes": sorted(registry.nodes),
    "heavy": [m for m in sys.argv[2:] if m in sys.modules],
}))
"""


def test_registering_every_plugin_and_validating_imports_no_torch(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(workflow), *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["codes"] == {"nodes": 0, "validate": 0}
    # every family and plugin really registered (deferred, not skipped)
    assert {"sd15", "sdxl", "flux"} <= set(report["families"])
    assert {"lora", "loha", "lokr", "diff"} <= set(report["adapters"])
    assert {"KSampler", "LoraLoader", "CLIPTextEncodeSDXL", "ModelSamplingFlux"} <= set(
        report["nodes"]
    )
    assert report["heavy"] == []


class _CountingFamily:
    name = "counting"

    def __init__(self) -> None:
        self.detected = 0

    def detect(self, header: object, part: str) -> float:
        self.detected += 1
        return 0.5

    def load(self, header: object, part: str, request: object) -> str:
        return f"loaded {part}"


def test_deferred_family_builds_once_on_first_use() -> None:
    built: list[_CountingFamily] = []

    def build() -> _CountingFamily:
        built.append(_CountingFamily())
        return built[-1]

    family = DeferredModelFamily("counting", build)
    assert built == []
    assert family.detect(None, "checkpoint") == 0.5  # type: ignore[arg-type]
    assert family.load(None, "vae", None) == "loaded vae"  # type: ignore[arg-type]
    assert len(built) == 1 and built[0].detected == 1


@pytest.mark.parametrize("name", ["sd15", "sdxl", "flux"])
def test_each_family_plugin_registers_a_deferred_family(name: str) -> None:
    from loom.runtime import Runtime

    family = Runtime().registry.families[name]
    assert isinstance(family, DeferredModelFamily)
    assert family.family.name == name
