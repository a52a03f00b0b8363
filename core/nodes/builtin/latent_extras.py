"""Latent batch and layout nodes of ComfyUI's ``comfy_extras/nodes_latent.py``: seed behaviour
across a batch, concatenation and cutting along x, y or t.

Each returns a shallow copy of its input latent with new ``samples`` or ``batch_index``.
"""

from __future__ import annotations

from collections.abc import Callable

import loom
from loom.nodes.builtin.compositing import repeat_to_batch
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.types import Latent

ui = loom.ui

SEED_BEHAVIORS = ("random", "fixed")
CONCAT_DIMS = ("x", "-x", "y", "-y", "t", "-t")
CUT_DIMS = ("x", "y", "t")


def axis_from_end(dim: str) -> int:
    """How far from the last axis ``x`` (1), ``y`` (2) and ``t`` (3) lie."""
    return {"x": 1, "y": 2, "t": 3}[dim.lstrip("-")]


@loom.node("LatentBatchSeedBehavior", category="latent/advanced", v3=True)
class LatentBatchSeedBehavior:
    samples: Latent
    seed_behavior: str = ui.combo(SEED_BEHAVIORS, default="fixed")

    def run(self, ctx: loom.RunContext) -> Latent:
        out = dict(self.samples)
        if self.seed_behavior == "random":
            out.pop("batch_index", None)
        else:
            # Every item takes the first item's noise index, so the whole batch shares one seed.
            first = out.get("batch_index", [0])[0]
            out["batch_index"] = [first] * self.samples["samples"].shape[0]
        return out


@loom.node("LatentConcat", category="latent/advanced", v3=True)
class LatentConcat:
    samples1: Latent
    samples2: Latent
    dim: str = ui.combo(CONCAT_DIMS)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        s1 = self.samples1["samples"]
        s2 = repeat_to_batch(self.samples2["samples"], s1.shape[0])
        pair = (s2, s1) if self.dim.startswith("-") else (s1, s2)
        axis = -axis_from_end(self.dim)
        others_differ = s1.ndim != s2.ndim or s1.ndim < -axis
        if not others_differ:
            kept = [i for i in range(s1.ndim) if i != s1.ndim + axis]
            others_differ = any(s1.shape[i] != s2.shape[i] for i in kept)
        if others_differ:
            raise ValueError(
                f"LatentConcat: samples2 {tuple(s2.shape)} cannot join samples1 "
                f"{tuple(s1.shape)} along {self.dim}; every other dimension must match"
            )
        return {**self.samples1, "samples": torch.cat(pair, dim=axis)}


@loom.node("LatentCut", category="latent/advanced", v3=True)
class LatentCut:
    samples: Latent
    dim: str = ui.combo(CUT_DIMS)
    index: int = ui.int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    amount: int = ui.int(1, min=1, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        s = self.samples["samples"]
        axis = s.ndim - axis_from_end(self.dim)
        if axis < 1:
            raise ValueError(
                f"LatentCut: input 'samples' {tuple(s.shape)} has no '{self.dim}' dimension"
            )
        size = s.shape[axis]
        if self.index >= 0:
            index = min(self.index, size - 1)
            amount = min(size - index, self.amount)
        else:
            index = max(self.index, -size)
            amount = min(-index, self.amount)
        return {**self.samples, "samples": torch.narrow(s, axis, index, amount)}


NODES: tuple[type, ...] = (LatentBatchSeedBehavior, LatentConcat, LatentCut)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_latent")
