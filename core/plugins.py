"""Finding and loading plugins.

One :class:`pluggy.PluginManager` per :class:`PluginHost`. Built-in plugins (modules inside
``loom``) are registered exactly like external ones, which come from the ``loom`` entry-point
group. A plugin that fails to import or register is logged as a
:class:`~loom.errors.PluginLoadError` and skipped; the others keep working.

Environment:
    ``LOOM_PLUGINS``: comma-separated allow-list of plugin names (built-ins always load).
    ``LOOM_DISABLE_PLUGINS``: comma-separated names never to load.
    ``LOOM_TRACE_HOOKS=1``: log every hook call at DEBUG (``hook <name> -> [plugins]``).

Every hook is called through pluggy's hook callers, so tracing, ``tryfirst``/``trylast`` and
wrappers apply to all of them. Hooks whose caller needs to know which plugin answered
(registration hooks bind ``register`` to the plugin; event observers are isolated from each
other's exceptions) go through :meth:`PluginHost.call_each`: one pluggy call per plugin.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from types import ModuleType
from typing import Any

import attrs
import pluggy

from loom import hookspecs
from loom.errors import PluginLoadError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "loom"

#: Core's own plugins, registered like external ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "loom.folders",
    "loom.nodes.builtin.primitives",
    "loom.nodes.builtin.image",
    "loom.nodes.builtin.image_io",
    "loom.nodes.builtin.latent",
    "loom.nodes.builtin.mask",
    "loom.nodes.builtin.conditioning",
    "loom.nodes.builtin.hooks",
    "loom.nodes.builtin.hook_scheduling",
    "loom.nodes.builtin.hooks_model_as_lora",
    "loom.nodes.builtin.compositing",
    "loom.nodes.builtin.image_ops",
    "loom.nodes.builtin.latent_ops",
    "loom.nodes.builtin.strings",
    "loom.nodes.builtin.rebatch",
    "loom.nodes.builtin.animation",
    "loom.nodes.builtin.loaders",
    "loom.nodes.builtin.diffusers_loader",
    "loom.nodes.builtin.models",
    "loom.nodes.builtin.model_merging",
    "loom.nodes.builtin.model_save",
    "loom.nodes.builtin.model_sampling_nodes",
    "loom.nodes.builtin.torch_compile",
    "loom.nodes.builtin.sampling",
    "loom.nodes.builtin.logic",
    "loom.nodes.builtin.latent_files",
    "loom.nodes.builtin.canny",
    "loom.nodes.builtin.image_extras",
    "loom.nodes.builtin.latent_extras",
    "loom.nodes.builtin.morphology",
    "loom.nodes.builtin.porter_duff",
    "loom.nodes.builtin.latent_operations",
    "loom.nodes.builtin.cond_nodes",
    "loom.nodes.builtin.batch_nodes",
    "loom.nodes.builtin.resize_image_mask",
    "loom.nodes.builtin.webcam",
    "loom.nodes.builtin.svg",
)


@attrs.frozen
class PluginInfo:
    """What ``loom plugins`` shows about one loaded plugin."""

    name: str
    module: str
    version: str | None
    builtin: bool
    import_seconds: float


def _names_from_env(var: str) -> frozenset[str]:
    raw = os.environ.get(var, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


class PluginHost:
    """Owns the plugin manager and records what loaded, what failed and what was disabled."""

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        allow: Iterable[str] | None = None,
        entry_points: bool = True,
        builtins: Sequence[str] = BUILTIN_PLUGINS,
    ) -> None:
        self.pm = pluggy.PluginManager("loom")
        self.pm.add_hookspecs(hookspecs)
        self.disabled = frozenset(disabled) | _names_from_env("LOOM_DISABLE_PLUGINS")
        env_allow = _names_from_env("LOOM_PLUGINS")
        self.allow = frozenset(allow) if allow is not None else (env_allow or None)
        self._use_entry_points = entry_points
        self._builtins = tuple(builtins)
        self.infos: list[PluginInfo] = []
        self.failures: list[PluginLoadError] = []
        self._loaded = False
        self._single_callers: dict[tuple[str, tuple[Any, ...], Any], pluggy.HookCaller] = {}
        if os.environ.get("LOOM_TRACE_HOOKS"):
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)

    @property
    def hook(self) -> Any:
        """pluggy's hook relay: ``host.hook.adapter_key_map(model=..., kind=...)``."""
        return self.pm.hook

    def call_each(
        self,
        hook_name: str,
        kwargs_for: Callable[[str], Mapping[str, Any]],
        on_error: Callable[[str, Exception], None],
    ) -> list[tuple[str, list[Any]]]:
        """Call hook ``hook_name`` through pluggy once per implementing plugin.

        Each call sees that plugin's implementation alone (plus every ``wrapper=True``
        implementation, which so wraps each plugin's call) and gets ``kwargs_for(plugin)``,
        which is how registration hooks bind ``register`` to the calling plugin. Plugins are
        called in order: ``tryfirst`` implementations, then registration order (built-ins,
        then entry points by name), then ``trylast``. A call that raises is passed to
        ``on_error(plugin, exc)`` and the next plugin is still called.

        :return: ``(plugin name, that call's result list)`` for each call that returned.
        """
        caller = getattr(self.pm.hook, hook_name)
        plain = [i for i in caller.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        plain.sort(key=lambda impl: 0 if impl.tryfirst else 2 if impl.trylast else 1)
        results = []
        for impl in plain:
            single = self._single_caller(hook_name, impl, plain)
            try:
                results.append((impl.plugin_name, single(**kwargs_for(impl.plugin_name))))
            except Exception as exc:  # one plugin's bug must not stop the others
                on_error(impl.plugin_name, exc)
        return results

    def _single_caller(self, hook_name: str, impl: Any, plain: list[Any]) -> pluggy.HookCaller:
        # Cached per set of implementations (the HookImpl objects themselves, so a plugin
        # registered again under the same name is a new key): events call this every step.
        key = (hook_name, tuple(plain), impl)
        caller = self._single_callers.get(key)
        if caller is None:
            others = [other.plugin for other in plain if other is not impl]
            caller = self._single_callers[key] = self.pm.subset_hook_caller(hook_name, others)
        return caller

    def load(self) -> PluginHost:
        """Load built-ins and entry-point plugins once; later calls do nothing."""
        if self._loaded:
            return self
        self._loaded = True
        for module_name in self._builtins:
            self._load_one(
                module_name.rsplit(".", 1)[-1],
                lambda m=module_name: _import(m),
                version=None,
                builtin=True,
            )
        if self._use_entry_points:
            for ep in _entry_points():
                if ep.name in self.disabled:
                    log.info("plugin %s disabled", ep.name)
                    continue
                if self.allow is not None and ep.name not in self.allow:
                    log.debug("plugin %s not in the allow-list", ep.name)
                    continue
                version = ep.dist.version if ep.dist is not None else None
                self._load_one(ep.name, ep.load, version=version, builtin=False)
        self._drop_invalid_hookimpls()
        return self

    def _drop_invalid_hookimpls(self) -> None:
        """``check_pending``, but a plugin implementing an unknown hook is reported and
        unregistered instead of stopping every other plugin from loading."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
                self.fail(name, exc)
                self.unregister(name)

    def register(self, plugin: object, name: str, *, version: str | None = None) -> None:
        """Register an already-imported plugin object (tests, embedding applications).

        After :meth:`load`, a plugin implementing a hook that does not exist is reported and
        dropped here, as :meth:`load` does for the plugins it finds.
        """
        self._load_one(name, lambda: plugin, version=version, builtin=False)
        if self._loaded:
            self._drop_invalid_hookimpls()

    def load_plugin(self, name: str, loader: Callable[[], object]) -> object | None:
        """Import (``loader()``, timed as the plugin's import) and register one more plugin.

        Returns the plugin, or None when it failed (recorded in :attr:`failures`).
        """
        return self._load_one(name, loader, version=None, builtin=False)

    def _load_one(
        self, name: str, loader: Any, *, version: str | None, builtin: bool
    ) -> object | None:
        if builtin and name in self.disabled:
            log.info("built-in plugin %s disabled", name)
            return None
        if self.pm.has_plugin(name):
            self.fail(name, ValueError("a plugin with this name is already loaded"))
            return None
        started = time.perf_counter()
        try:
            plugin = loader()
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            self.fail(name, exc)
            return None
        seconds = time.perf_counter() - started
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos.append(PluginInfo(name, module, version, builtin, seconds))
        log.debug("plugin %s %s loaded in %.3f s", name, version or "", seconds)
        return plugin

    def fail(self, name: str, cause: BaseException) -> None:
        """Record that plugin ``name`` could not load (``loom plugins`` lists it) and log it."""
        error = PluginLoadError(name, cause)
        self.failures.append(error)
        log.error("%s", error)  # one readable line; the traceback is for -vv
        log.debug("plugin %s failed here:", name, exc_info=cause)

    def unregister(self, name: str) -> None:
        self._single_callers.clear()
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.infos = [info for info in self.infos if info.name != name]


def _import(module_name: str) -> ModuleType:
    return importlib.import_module(module_name)


def _entry_points() -> list[metadata.EntryPoint]:
    # Sorted so load order (and so registration order) does not depend on the filesystem.
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _trace_before(hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
    log.debug("hook %s -> %s", hook_name, [impl.plugin_name for impl in impls])


def _trace_after(outcome: Any, hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
    log.debug(
        "hook %s returned %r",
        hook_name,
        outcome.get_result() if outcome.exception is None else outcome.exception,
    )
