"""ComfyUI-style ``custom_nodes/`` folders: classic node packages loaded as plugins.

Each entry of a custom-nodes folder is one package: a sub-folder with an ``__init__.py``
or a top-level ``.py`` file. Names starting with ``.``, ending in ``.disabled``, and
``__pycache__`` are skipped, as ComfyUI does. A package is imported as the module
``custom_nodes.<name>`` (so relative imports inside it work), its
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` are read, and it is registered into
the :class:`~loom.plugins.PluginHost` as one plugin named ``custom_nodes.<name>`` whose
``register_nodes`` registers those classes. Its ``WEB_DIRECTORY`` (made absolute) is kept on
the plugin object for the HTTP plugin.

A package that fails to import is recorded in ``host.failures`` as a
:class:`~loom.errors.PluginLoadError` and skipped; the other packages still load.

A package without ``NODE_CLASS_MAPPINGS`` is offered to the ``custom_node_entrypoint`` hook,
so a plugin can load packages written another way (ComfyUI's V3 ``comfy_entrypoint``).
ComfyUI's own modules (``folder_paths``, ``comfy.*``, ``server``) are not part of core: a
plugin provides them, and without one, packages that import them fail to load with that
``ModuleNotFoundError`` as the reported cause.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from loom.hookspecs import hookimpl

if TYPE_CHECKING:
    from loom.plugins import PluginHost

log = logging.getLogger(__name__)

#: The parent module every custom node package is imported under.
PARENT_MODULE = "custom_nodes"


class CustomNodePackage:
    """The plugin object for one imported custom node package."""

    def __init__(
        self,
        name: str,
        module: types.ModuleType,
        path: Path,
        web_directory: Path | None,
        entrypoint_nodes: Iterable[type] = (),
    ) -> None:
        self.name = name
        self.module = module
        self.path = path
        #: Absolute path of the package's ``WEB_DIRECTORY`` (served at ``/extensions/<name>/``).
        self.web_directory = web_directory
        self.python_module = f"{PARENT_MODULE}.{name}"
        self.node_class_mappings: Mapping[str, type] = dict(
            getattr(module, "NODE_CLASS_MAPPINGS", None) or {}
        )
        self.display_name_mappings: Mapping[str, str] = dict(
            getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        )
        #: Node classes another plugin found through the package's own entry point
        #: (``custom_node_entrypoint``); each carries its own id.
        self.entrypoint_nodes: tuple[type, ...] = tuple(entrypoint_nodes)

    def __repr__(self) -> str:
        return f"CustomNodePackage({self.name!r}, {str(self.path)!r})"

    @hookimpl
    def register_nodes(self, register: Callable[..., None]) -> None:
        for class_type, node_class in self.node_class_mappings.items():
            register(
                node_class,
                class_type=class_type,
                display_name=self.display_name_mappings.get(class_type),
                python_module=self.python_module,
            )
        for node_class in self.entrypoint_nodes:
            register(node_class, python_module=self.python_module)


def package_name(path: Path) -> str:
    """The name ComfyUI gives a custom node entry: no ``.py``, no ``@version`` suffix."""
    name = path.stem if path.is_file() else path.name
    return name.split("@", 1)[0]


def discover(dirs: Iterable[Path]) -> list[Path]:
    """Package folders and module files in ``dirs``, each folder's entries sorted by name."""
    found: list[Path] = []
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            log.debug("custom nodes directory %s does not exist", directory)
            continue
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            name = entry.name
            if name.startswith(".") or name.endswith(".disabled") or name == "__pycache__":
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                found.append(entry)
            elif entry.is_file() and entry.suffix == ".py":
                found.append(entry)
    return found


def register_custom_nodes(host: PluginHost, dirs: list[Path]) -> None:
    """Import every custom node package in ``dirs`` and register each into ``host``.

    :param host: the plugin host; failures go to ``host.failures``, loaded packages appear
        in ``host.infos`` under the plugin name ``custom_nodes.<name>``.
    :param dirs: custom-nodes folders, in priority order (a name found twice loads once).
    """
    _ensure_parent_module(dirs)
    seen: set[str] = set()
    for path in discover(dirs):
        name = package_name(path)
        plugin_name = f"{PARENT_MODULE}.{name}"
        if name in host.disabled or plugin_name in host.disabled:
            log.info("custom node package %s disabled", name)
            continue
        if name in seen:
            host.fail(
                plugin_name,
                ImportError(f"a package with this name was already loaded; skipped {path}"),
            )
            continue
        seen.add(name)
        package = host.load_plugin(
            plugin_name, lambda path=path, name=name: _import_with_nodes(host, path, name)
        )
        if package is not None:
            log.info(
                "custom node package %s: %d nodes, imported in %.3f s",
                name,
                len(package.node_class_mappings) + len(package.entrypoint_nodes),
                host.infos[-1].import_seconds,
            )


def _import_with_nodes(host: PluginHost, path: Path, name: str) -> CustomNodePackage:
    package = load_package(path, name)
    if not package.node_class_mappings:
        found = host.hook.custom_node_entrypoint(module=package.module, name=name)
        if found:
            package.entrypoint_nodes = tuple(found)
    if (
        not package.node_class_mappings
        and not package.entrypoint_nodes
        and package.web_directory is None
    ):
        raise AttributeError(
            "module defines no NODE_CLASS_MAPPINGS (and no installed plugin understands "
            "another entry point it has)"
        )
    return package


def load_package(path: Path, name: str) -> CustomNodePackage:
    """Import one package folder or module file as ``custom_nodes.<name>``."""
    module_name = f"{PARENT_MODULE}.{name}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
        module_dir = path
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module_dir = path.parent
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    _forget(module_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget(module_name)
        raise
    return CustomNodePackage(name, module, path, _web_directory(module, module_dir))


def _web_directory(module: types.ModuleType, module_dir: Path) -> Path | None:
    web = getattr(module, "WEB_DIRECTORY", None)
    if not web:
        return None
    resolved = (module_dir / str(web)).resolve()
    if not resolved.is_dir():
        log.warning(
            "custom node package %s: WEB_DIRECTORY %s is not a directory", module.__name__, resolved
        )
        return None
    return resolved


def _ensure_parent_module(dirs: Iterable[Path]) -> None:
    """Make ``custom_nodes`` an importable namespace-like package spanning ``dirs``."""
    parent = sys.modules.get(PARENT_MODULE)
    if parent is None:
        parent = types.ModuleType(PARENT_MODULE, "Custom node packages loaded by Loom.")
        parent.__path__ = []  # type: ignore[attr-defined]
        sys.modules[PARENT_MODULE] = parent
    path = getattr(parent, "__path__", None)
    if isinstance(path, list):
        for directory in dirs:
            text = str(Path(directory).resolve())
            if text not in path:
                path.append(text)


def _forget(module_name: str) -> None:
    """Drop a module and its submodules from ``sys.modules`` (a fresh import follows)."""
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]


__all__ = ["CustomNodePackage", "discover", "load_package", "register_custom_nodes"]
