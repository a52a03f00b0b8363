"""Makes ComfyUI's module names importable, from this package's ``env/`` folder.

The modules live as plain files under ``env/`` (not a package of ours), and only this
finder imports them, under ComfyUI's names, so there is one copy of each and nothing of
ours is importable as ``nodes`` or ``server`` until the plugin is loaded. A submodule of one
of these packages that Loom does not write (``comfy.model_patcher``) imports as a stand-in
module whose names fail on use (:mod:`loom_comfy_compat.missing`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from loom_comfy_compat.missing import EnvironmentModule, module_getattr

ENV_DIR = Path(__file__).resolve().parent / "env"

#: The top-level names packs import that this plugin answers for.
TOP_LEVEL = frozenset(
    {
        "comfy",
        "comfy_api",
        "comfy_execution",
        "folder_paths",
        "latent_preview",
        "node_helpers",
        "nodes",
        "server",
    }
)


class _EnvironmentLoader(importlib.machinery.SourceFileLoader):
    def exec_module(self, module: ModuleType) -> None:
        module.__class__ = EnvironmentModule
        super().exec_module(module)


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = EnvironmentModule(spec.name, "A ComfyUI module Loom does not provide.")
        module.__getattr__ = module_getattr(spec.name)  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: ModuleType) -> None:
        return None


class EnvironmentFinder(importlib.abc.MetaPathFinder):
    """Finds ``comfy``, ``folder_paths``, ... (and their submodules) under ``env/``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        parts = fullname.split(".")
        if parts[0] not in TOP_LEVEL:
            return None
        base = ENV_DIR.joinpath(*parts)
        if (base / "__init__.py").is_file():
            init = str(base / "__init__.py")
            return importlib.util.spec_from_file_location(
                fullname,
                init,
                loader=_EnvironmentLoader(fullname, init),
                submodule_search_locations=[str(base)],
            )
        source = base.with_suffix(".py")
        if source.is_file():
            return importlib.util.spec_from_file_location(
                fullname, str(source), loader=_EnvironmentLoader(fullname, str(source))
            )
        if len(parts) > 1:
            return importlib.machinery.ModuleSpec(fullname, _StandInLoader(), is_package=True)
        return None


_FINDER = EnvironmentFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the finder and forget every environment module (tests)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if n.split(".")[0] in TOP_LEVEL]:
        del sys.modules[name]
