"""ComfyUI's ``EasyCache`` and ``LazyCache`` nodes: a clone of the MODEL carrying a
:class:`~loom_samplers.step_cache.StepCache`, which every sampling run of it applies."""

from __future__ import annotations

import loom
from loom.errors import LoomError
from loom.types import Model
from loom_samplers.step_cache import EASY_CACHE, LAZY_CACHE, StepCache

ui = loom.ui

NODES_EASYCACHE = "comfy_extras.nodes_easycache"
CATEGORY = "advanced/debug/model"


def _cached(node: str, model: object, cache: StepCache) -> Model:
    if not hasattr(model, "clone") or not hasattr(model, "model_sampling"):
        raise LoomError(f"{node}: input model ({type(model).__name__}) is not a diffusion model")
    if cache.start_percent > cache.end_percent:
        raise LoomError(
            f"{node}: start_percent {cache.start_percent} is after end_percent {cache.end_percent}",
            hint="the cache is used between the two: start must not come after end",
        )
    patched = model.clone()
    patched.step_cache = cache
    return patched


@loom.node("EasyCache", display_name="EasyCache", category=CATEGORY, experimental=True, v3=True)
class EasyCache:
    """Native EasyCache implementation."""

    model: Model
    reuse_threshold: float = ui.float(0.2, min=0.0, max=3.0, step=0.01)
    start_percent: float = ui.float(0.15, min=0.0, max=1.0, step=0.01)
    end_percent: float = ui.float(0.95, min=0.0, max=1.0, step=0.01)
    verbose: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> Model:
        cache = StepCache(
            EASY_CACHE,
            float(self.reuse_threshold),
            float(self.start_percent),
            float(self.end_percent),
            bool(self.verbose),
        )
        return _cached("EasyCache", self.model, cache)


@loom.node("LazyCache", display_name="LazyCache", category=CATEGORY, experimental=True, v3=True)
class LazyCache:
    """A homebrew version of EasyCache - even 'easier' version of EasyCache to implement. Overall works worse than EasyCache, but better in some rare cases AND universal compatibility with everything in ComfyUI."""

    model: Model
    reuse_threshold: float = ui.float(0.2, min=0.0, max=3.0, step=0.01)
    start_percent: float = ui.float(0.15, min=0.0, max=1.0, step=0.01)
    end_percent: float = ui.float(0.95, min=0.0, max=1.0, step=0.01)
    verbose: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> Model:
        cache = StepCache(
            LAZY_CACHE,
            float(self.reuse_threshold),
            float(self.start_percent),
            float(self.end_percent),
            bool(self.verbose),
        )
        return _cached("LazyCache", self.model, cache)


NODES = (EasyCache, LazyCache)
