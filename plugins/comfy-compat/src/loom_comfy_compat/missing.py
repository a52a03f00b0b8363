"""Stand-ins for ComfyUI names Loom does not provide.

Importing such a name succeeds (most packs import far more than they use), and the pack is
recorded as "loaded with missing names"; *using* it (calling, instantiating, reading an
attribute) raises :class:`MissingComfyName`, which names the pack, the ComfyUI name and
that Loom does not provide it. Assigning to an environment module's attribute (patching
ComfyUI's internals) raises :class:`UnsupportedPatch` at once, so such a pack fails to load
with that reason instead of half-working.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

from loom.errors import LoomError
from loom_comfy_compat.environment import ENV, calling_pack


class MissingComfyName(LoomError, AttributeError):
    """A pack used a ComfyUI name that loom-comfy-compat does not provide."""

    def __init__(self, name: str, pack: str | None) -> None:
        who = f"custom node pack {pack!r}" if pack else "this code"
        LoomError.__init__(
            self,
            f"{who} uses ComfyUI's {name}, which Loom does not provide",
            hint="loom-comfy-compat implements the ComfyUI names listed in its README; "
            "packs that need others do not work on Loom yet",
        )


class UnsupportedPatch(LoomError):
    """A pack assigned to an attribute of a ComfyUI module (patching ComfyUI internals)."""


class _MissingMeta(type):
    """Metaclass of stand-ins: they may be imported and subclassed, never used."""

    def _fail(cls) -> NoReturn:
        raise MissingComfyName(cls.__loom_missing__, cls.__loom_pack__ or calling_pack())

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        cls._fail()

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        cls._fail()

    def __repr__(cls) -> str:
        return f"<ComfyUI name {cls.__loom_missing__} (not provided by Loom)>"


def missing(module: str, name: str) -> type:
    """A stand-in for ``module.name``, recording the importing pack."""
    full = f"{module}.{name}"
    pack = ENV.record_missing(full)
    return _MissingMeta(name, (), {"__loom_missing__": full, "__loom_pack__": pack})


def module_getattr(module_name: str) -> Any:
    """A module-level ``__getattr__`` that hands out stand-ins for unknown public names."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        return missing(module_name, name)

    return __getattr__


def refuse_patch(target: str, name: str, depth: int = 2) -> None:
    """Raise :class:`UnsupportedPatch` if the code ``depth`` frames up belongs to a pack."""
    caller = sys._getframe(depth).f_globals.get("__name__", "")
    if caller.startswith("custom_nodes."):
        pack = caller.split(".")[1]
        raise UnsupportedPatch(
            f"custom node pack {pack!r} patches ComfyUI's {target}.{name}; "
            "Loom runs its own engine, so the patch would not take effect",
            hint="such packs are not supported by loom-comfy-compat",
        )


class PatchGuard(type):
    """Metaclass of ComfyUI classes Loom provides: packs may not reassign their attributes."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if "_loom_guarded" in vars(cls):
            refuse_patch(f"{cls.__module__}.{cls.__qualname__}", name)
        super().__setattr__(name, value)


class EnvironmentModule(types.ModuleType):
    """The module type of every environment module: refuses patches from packs."""

    def __setattr__(self, name: str, value: Any) -> None:
        refuse_patch(self.__name__, name)
        super().__setattr__(name, value)
