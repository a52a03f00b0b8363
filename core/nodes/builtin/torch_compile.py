"""ComfyUI's ``TorchCompileModel``: a clone of the MODEL whose diffusion module's forward is
compiled with ``torch.compile`` (backend ``inductor`` or ``cudagraphs``) the first time it runs.

The compiled forward is an object patch of the handle (``"forward"`` on its module): applied
while the clone is loaded, reverted when it is unloaded, so the original handle keeps running
eagerly. Compiling is deferred to the first call, on whatever device the memory manager placed
the module; nothing here names a device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

import loom
from loom import ui
from loom.errors import LoomError
from loom.types import Model

COMFY_MODULE = "comfy_extras.nodes_torch_compile"
BACKENDS = ("inductor", "cudagraphs")


@attrs.define(eq=False)
class CompiledForward:
    """A module's forward, handed to ``torch.compile`` on its first call and reused after."""

    forward: Callable[..., Any]
    backend: str
    compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            import torch

            self.compiled = torch.compile(self.forward, backend=self.backend)
        return self.compiled(*args, **kwargs)


def compiled_clone(model: Any, backend: str, *, node: str = "TorchCompileModel") -> Any:
    """A clone of the handle ``model`` computing through a :class:`CompiledForward`."""
    module = getattr(model, "module", None)
    if module is None or not hasattr(model, "add_object_patch"):
        raise LoomError(f"{node}: input model ({type(model).__name__}) is not a model handle")
    patched = model.clone()
    original = type(module).forward.__get__(module)
    patched.add_object_patch("forward", CompiledForward(original, backend))
    return patched


@loom.node("TorchCompileModel", category="_for_testing", experimental=True, v3=True)
class TorchCompileModel:
    model: Model
    backend: str = ui.combo(list(BACKENDS))

    def run(self, ctx: loom.RunContext) -> Model:
        if self.backend not in BACKENDS:
            raise LoomError(
                f"TorchCompileModel: backend {self.backend!r} is not one of {', '.join(BACKENDS)}"
            )
        return compiled_clone(self.model, self.backend)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(TorchCompileModel, python_module=COMFY_MODULE)
