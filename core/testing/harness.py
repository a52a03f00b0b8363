"""Plugin hosts, registries and runtimes made of chosen plugins, for tests.

Nothing here scans the ``loom`` entry-point group for plugins to load: a host holds core's
built-ins (or the ones named) and exactly the plugins given, in that order, as
:class:`~loom.plugins.PluginHost` would have registered them. Loom modules are imported
inside the functions, so importing this module (pytest does, through the ``pytest11`` entry
point) costs nothing beyond ``import loom``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.executor.context import RunContext
    from loom.plugins import PluginHost
    from loom.registry import Registry
    from loom.runtime import Runtime
    from loom.settings import Settings

#: A plugin to load: an entry-point name (``"sd15"``), a module path
#: (``"loom_sd15.plugin"``), a module, or any object holding ``@loom.hookimpl`` functions.
PluginSpec = str | ModuleType | object
#: Which built-ins to load: all of core's (True), none (False), or these module names.
Builtins = bool | Sequence[str]

ENTRY_POINT_GROUP = "loom"
#: Variables a host reads at construction; a test's host must not depend on the caller's shell.
_SELECTION_VARS = ("LOOM_PLUGINS", "LOOM_DISABLE_PLUGINS")


class HarnessError(Exception):
    """A plugin given to a testing helper could not be found, imported or registered."""


def make_host(
    *plugins: PluginSpec, builtins: Builtins = True, strict: bool = True, **named: object
) -> PluginHost:
    """A loaded :class:`~loom.plugins.PluginHost` holding the built-ins and these plugins.

    :param plugins: entry-point names, module paths, modules or plugin objects; each gets the
        name its entry point has, else its module's or class's name.
    :param builtins: core's built-in plugins (True), none (False), or these module names.
    :param strict: raise :class:`HarnessError` when any plugin failed to import or register
        (a misspelled hook, a wrong argument name); with False the failures stay in
        ``host.failures`` for the test to inspect.
    :param named: plugin objects registered under the keyword's name (``stubs=StubNodes()``).
    """
    from loom.plugins import BUILTIN_PLUGINS, PluginHost

    chosen = BUILTIN_PLUGINS if builtins is True else () if builtins is False else builtins
    with _without_selection_env():
        host = PluginHost(entry_points=False, builtins=tuple(chosen), disabled=(), allow=None)
    host.load()
    for name, plugin, version in [*map(_resolve, plugins), *_named(named)]:
        host.register(plugin, name, version=version)
    if strict and host.failures:
        raise HarnessError(
            "plugins failed to load: " + "; ".join(str(failure) for failure in host.failures)
        )
    return host


def make_registry(
    *plugins: PluginSpec, builtins: Builtins = True, strict: bool = True, **named: object
) -> Registry:
    """What :func:`loom.registry.collect` gathers from :func:`make_host`'s host.

    With ``strict``, a registration that failed (a duplicate id, a bad node declaration)
    raises :class:`HarnessError` naming it.
    """
    from loom.registry import collect

    registry = collect(make_host(*plugins, builtins=builtins, strict=strict, **named))
    if strict and registry.failures:
        raise HarnessError(
            "registration failed: " + "; ".join(str(failure) for failure in registry.failures)
        )
    return registry


def make_settings(base_directory: Path, **overrides: Any) -> Settings:
    """Settings rooted at ``base_directory`` that skip ``custom_nodes/`` unless asked."""
    from loom.settings import Settings

    return Settings(**{"base_directory": base_directory, "load_custom_nodes": False, **overrides})


def make_runtime(
    *plugins: PluginSpec,
    settings: Settings,
    builtins: Builtins = True,
    strict: bool = True,
    **named: object,
) -> Runtime:
    """A :class:`~loom.runtime.Runtime` over :func:`make_host`'s host and ``settings``."""
    from loom.runtime import Runtime

    return Runtime(settings, make_host(*plugins, builtins=builtins, strict=strict, **named))


@contextmanager
def _without_selection_env() -> Iterator[None]:
    saved = {var: os.environ.pop(var) for var in _SELECTION_VARS if var in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _named(named: Mapping[str, object]) -> list[tuple[str, object, str | None]]:
    return [
        (name, _import(plugin) if isinstance(plugin, str) else plugin, None)
        for name, plugin in named.items()
    ]


def _resolve(spec: PluginSpec) -> tuple[str, object, str | None]:
    """``(name, plugin, version)`` for one positional plugin spec."""
    if isinstance(spec, str):
        entries = _entry_points()
        if spec in entries:
            return _from_entry_point(entries[spec])
        if "." not in spec and ":" not in spec and importlib.util.find_spec(spec) is None:
            raise HarnessError(
                f"no plugin named {spec!r} in the {ENTRY_POINT_GROUP!r} entry-point group "
                f"(installed: {', '.join(sorted(entries)) or 'none'}) and no module of that "
                "name; is its package installed?"
            )
        spec = _import(spec)
    if isinstance(spec, ModuleType):
        for entry in _entry_points().values():
            if entry.value == spec.__name__:
                return entry.name, spec, _version(entry)
        return spec.__name__, spec, None
    name = getattr(spec, "__name__", None) or type(spec).__name__
    return name, spec, None


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _from_entry_point(entry: metadata.EntryPoint) -> tuple[str, object, str | None]:
    try:
        plugin = entry.load()
    except Exception as exc:
        raise HarnessError(
            f"plugin {entry.name!r} ({entry.value}) failed to import: {exc}"
        ) from exc
    return entry.name, plugin, _version(entry)


def _version(entry: metadata.EntryPoint) -> str | None:
    dist = getattr(entry, "dist", None)
    return dist.version if dist is not None else None


def _import(path: str) -> Any:
    """``"package.module"``, or ``"package.module:attribute"`` for an object in it."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except Exception as exc:
        raise HarnessError(f"plugin {path!r} failed to import: {exc}") from exc


def make_context(runtime: Runtime | None = None, *, node_id: str = "1") -> RunContext:
    """The :class:`~loom.RunContext` a node's ``run`` gets from the executor, for calling one
    node directly in a test (prompt id ``"test"``, an empty prompt, a fresh interrupt flag)."""
    from loom.executor import context

    return context.RunContext(node_id, "test", {}, {}, runtime, context.InterruptFlag())
