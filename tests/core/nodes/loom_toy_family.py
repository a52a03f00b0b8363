"""A toy model family and helpers for the built-in node tests (not a test module itself).

The toy family recognises keys ``<prefix>model.weight`` / ``<prefix>clip.weight`` /
``<prefix>vae.weight`` and returns tiny handles implementing the core protocols whose
outputs are computed from those weights, so a test can tell which file and which family
produced a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

import loom
from loom import testing
from loom.executor.context import InterruptFlag, RunContext
from loom.registry import Registry, collect
from loom.runtime import Runtime
from loom.settings import Settings
from loom.types import CheckpointHeader, LoadedParts, LoadRequest, ModelPart

BUILTINS = (
    "loom.folders",
    "loom.nodes.builtin.primitives",
    "loom.nodes.builtin.conditioning",
    "loom.nodes.builtin.hooks",
    "loom.nodes.builtin.hook_scheduling",
    "loom.nodes.builtin.loaders",
    "loom.nodes.builtin.diffusers_loader",
    "loom.nodes.builtin.models",
)

PART_KEYS = {
    "checkpoint": "model",
    "diffusion_model": "model",
    "text_encoder": "clip",
    "vae": "vae",
}


class ToyClip:
    def __init__(
        self, weight: torch.Tensor, source: str, layer: int = -1, extra: tuple[str, ...] = ()
    ) -> None:
        self.weight = weight
        self.source = source
        self.layer = layer
        self.extra = extra

    def clone(self) -> ToyClip:
        return ToyClip(self.weight, self.source, self.layer, self.extra)

    def encode(self, text: str) -> list:
        tokens = max(1, len(text.split()))
        cond = self.weight.expand(1, tokens, -1) * abs(self.layer)
        return [[cond, {"pooled_output": self.weight.unsqueeze(0) * 2}]]

    def set_last_layer(self, layer: int) -> None:
        self.layer = layer


class ToyVae:
    def __init__(self, weight: torch.Tensor, source: str) -> None:
        self.weight = weight
        self.source = source
        self.calls: list[tuple[Any, ...]] = []

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        self.calls.append(("decode", tuple(samples.shape)))
        image = samples[:, :3].repeat_interleave(8, 2).repeat_interleave(8, 3)
        return (image * self.weight).movedim(1, -1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        self.calls.append(("encode", tuple(image.shape)))
        pooled = image.movedim(-1, 1)[:, :, ::8, ::8]
        return torch.cat([pooled, pooled[:, :1]], dim=1) * self.weight

    def decode_tiled(self, samples: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
        self.calls.append(("decode_tiled", tile_size, overlap))
        return self.decode(samples)

    def encode_tiled(self, image: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
        self.calls.append(("encode_tiled", tile_size, overlap))
        return self.encode(image)


class ToyModel:
    def __init__(self, weight: torch.Tensor, request: LoadRequest) -> None:
        self.weight = weight
        self.request = request


class ToyFamily:
    """Recognises ``<prefix>{model,clip,vae}.weight`` keys with a fixed score."""

    def __init__(
        self,
        name: str = "toy",
        prefix: str = "toy.",
        score: float = 1.0,
        drop: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.score = score
        self.drop = drop  # parts this family claims but fails to return (None)
        self.loads: list[tuple[str, ModelPart, LoadRequest]] = []

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        key = f"{self.prefix}{PART_KEYS[part]}.weight"
        return self.score if header.has(key) else 0.0

    def load(self, header: CheckpointHeader, part: ModelPart, request: LoadRequest) -> LoadedParts:
        self.loads.append((header.path.name, part, request))
        tensors = safetensors.torch.load_file(header.path)
        source = f"{self.name}:{header.path.name}"

        def get(kind: str) -> torch.Tensor | None:
            if kind in self.drop:
                return None
            return tensors.get(f"{self.prefix}{kind}.weight")

        model, clip, vae = get("model"), get("clip"), get("vae")
        extra = tuple(h.path.name for h in request.extra_headers)
        return LoadedParts(
            model=ToyModel(model, request) if model is not None else None,
            clip=ToyClip(clip, source, extra=extra) if clip is not None else None,
            vae=ToyVae(vae, source) if vae is not None else None,
        )


class FamiliesPlugin:
    """A throwaway plugin registering the given families."""

    def __init__(self, *families: Any) -> None:
        self.families = families

    @loom.hookimpl
    def register_model_families(self, register: Any) -> None:
        for family in self.families:
            register(family)


def _host(*families: Any) -> Any:
    plugins = {"toy": FamiliesPlugin(*families)} if families else {}
    return testing.make_host(builtins=BUILTINS, **plugins)


def make_registry(*families: Any) -> Registry:
    """Built-in nodes plus ``families`` (no runtime: no model folders)."""
    registry = collect(_host(*families))
    assert not registry.failures, registry.failures
    return registry


def make_runtime(tmp_path: Path, *families: Any) -> Runtime:
    """A real runtime with the built-in nodes plus ``families``, its base directory ``tmp_path``."""
    settings = Settings(base_directory=tmp_path, load_custom_nodes=False)
    runtime = Runtime(settings, _host(*families))
    assert not runtime.registry.failures, runtime.registry.failures
    return runtime


def make_ctx(
    runtime: Runtime | None = None,
    *,
    node_id: str = "1",
    prompt: Mapping[str, Any] | None = None,
) -> RunContext:
    return RunContext(
        node_id=node_id,
        prompt_id="p",
        prompt=dict(prompt or {}),
        extra_data={},
        runtime=runtime,
        interrupt=InterruptFlag(),
    )


def run_node(
    target: Runtime | Registry, class_type: str, ctx: RunContext | None = None, **inputs: Any
) -> tuple[Any, ...]:
    """Execute one node the way the executor does (in ``target`` when it is a runtime)."""
    runtime = target if isinstance(target, Runtime) else None
    registry = runtime.registry if runtime is not None else target
    definition = registry.get_node(class_type)
    assert definition is not None, class_type
    impl = definition.impl
    return impl.execute(impl.create(), inputs, ctx or make_ctx(runtime)).values


def write_model(
    path: Path,
    *,
    prefix: str = "toy.",
    parts: tuple[str, ...] = ("model", "clip", "vae"),
    scale: float = 1.0,
) -> Path:
    """A tiny safetensors file holding ``<prefix><part>.weight`` for each part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = {"model": (2, 2), "clip": (4,), "vae": (1,)}
    tensors = {f"{prefix}{part}.weight": torch.full(shapes[part], scale) for part in parts}
    safetensors.torch.save_file(tensors, str(path), metadata={"made_by": "loom tests"})
    return path
