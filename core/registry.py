"""Everything plugins registered, collected once and attributed to the plugin that did it.

:func:`collect` calls each registration hook through pluggy once per plugin
(:meth:`loom.plugins.PluginHost.call_each`) with a ``register`` callback bound to that
plugin's name, so duplicates are reported naming both plugins and ``loom plugins`` can list
what each plugin added.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom.errors import DuplicateRegistrationError, LoomError, NodeDefinitionError, PluginLoadError
from loom.nodes.compat import compile_classic, is_classic
from loom.nodes.schema import compile_declarative, is_declarative
from loom.nodes.spec import NodeDef
from loom.samplers import RegisteredSampler, SamplerInfo

if TYPE_CHECKING:
    from loom.folders import FolderKind
    from loom.plugins import PluginHost
    from loom.samplers import Sampler, Scheduler

log = logging.getLogger(__name__)


class Registry:
    """Node types, model folder kinds, families, samplers, schedulers and adapters, by plugin.

    What plugins registered, and nothing else: settings and model folders come from the
    runtime (:class:`loom.runtime.Runtime`) or a node's run context.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeDef] = {}
        self.folder_kinds: dict[str, FolderKind] = {}
        self.families: dict[str, Any] = {}
        self.samplers: dict[str, RegisteredSampler] = {}
        self.schedulers: dict[str, Scheduler] = {}
        self.weight_adapters: dict[str, Any] = {}
        self.owner: dict[tuple[str, str], str] = {}
        self.by_plugin: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.failures: list[LoomError] = []
        #: Set by :func:`collect`: the ``compile_node`` hook, for node styles core does not know.
        self.compile_other: Callable[..., NodeDef | None] | None = None
        #: Set by :func:`collect`: the ``node_problems`` hook, asked by validation.
        self.node_problems: Callable[..., list[list[str] | None]] | None = None

    # -- adding ---------------------------------------------------------------------

    def _claim(self, kind: str, key: str, plugin: str) -> None:
        previous = self.owner.get((kind, key))
        if previous is not None:
            raise DuplicateRegistrationError(
                f"{kind} {key!r} registered by plugin {plugin!r} is already registered by plugin {previous!r}"
            )
        self.owner[(kind, key)] = plugin
        self.by_plugin[plugin][kind].append(key)

    def add_node(
        self,
        plugin: str,
        node_class: type,
        class_type: str | None = None,
        display_name: str | None = None,
        python_module: str | None = None,
    ) -> NodeDef:
        if is_declarative(node_class):
            definition = compile_declarative(node_class, python_module=python_module)
            if class_type is not None and class_type != definition.class_type:
                raise NodeDefinitionError(
                    f"{node_class.__name__} declares {definition.class_type!r} but was registered as {class_type!r}"
                )
            if display_name is not None:
                import attrs

                definition = attrs.evolve(definition, display_name=display_name)
        else:
            # Plugins are asked first: a style may also look classic (ComfyUI's V3 nodes
            # carry INPUT_TYPES / RETURN_TYPES views of their schema for V1 code).
            definition = None
            if self.compile_other is not None:
                definition = self.compile_other(
                    node_class=node_class,
                    class_type=class_type,
                    display_name=display_name,
                    python_module=python_module,
                )
            if definition is None and is_classic(node_class):
                if class_type is None:
                    raise NodeDefinitionError(
                        f"classic node class {node_class.__name__} needs class_type="
                    )
                definition = compile_classic(
                    node_class, class_type, display_name=display_name, python_module=python_module
                )
            if definition is None:
                raise NodeDefinitionError(
                    f"{node_class!r} is neither an @loom.node class nor a classic ComfyUI node "
                    "class, and no installed plugin compiles its style"
                )
        self._claim("node", definition.class_type, plugin)
        self.nodes[definition.class_type] = definition
        return definition

    def add_folder_kind(self, plugin: str, kind: FolderKind) -> None:
        existing = self.folder_kinds.get(kind.key)
        self.folder_kinds[kind.key] = existing.merged(kind) if existing else kind
        self.by_plugin[plugin]["model_folder"].append(kind.key)

    def add_sampler(
        self, plugin: str, name: str, sampler: Sampler, info: SamplerInfo | None = None
    ) -> None:
        entry = RegisteredSampler(name, sampler, info if info is not None else SamplerInfo())
        self._add_named(self.samplers, "sampler", plugin, name, entry)

    def _add_named(
        self, table: dict[str, Any], kind: str, plugin: str, name: str, value: Any
    ) -> None:
        self._claim(kind, name, plugin)
        table[name] = value

    # -- reading --------------------------------------------------------------------

    def get_node(self, class_type: str) -> NodeDef | None:
        return self.nodes.get(class_type)

    def sampler_names(self) -> list[str]:
        return list(self.samplers)

    def scheduler_names(self) -> list[str]:
        return list(self.schedulers)


def _bound(plugin: str, add: Callable[..., Any], registry: Registry) -> Callable[..., None]:
    def register(*args: Any, **kwargs: Any) -> None:
        try:
            add(plugin, *args, **kwargs)
        except LoomError as exc:
            registry.failures.append(exc)
            log.error("plugin %s: %s", plugin, exc)

    return register


def collect(host: PluginHost, registry: Registry | None = None) -> Registry:
    """Call every registration hook once and gather the results into a :class:`Registry`."""
    registry = registry or Registry()
    registry.compile_other = host.hook.compile_node
    registry.node_problems = host.hook.node_problems
    hooks: list[tuple[str, Callable[..., Any]]] = [
        ("register_model_folders", registry.add_folder_kind),
        ("register_nodes", registry.add_node),
        (
            "register_model_families",
            lambda p, family: registry._add_named(
                registry.families, "model_family", p, family.name, family
            ),
        ),
        ("register_samplers", registry.add_sampler),
        (
            "register_schedulers",
            lambda p, name, fn: registry._add_named(registry.schedulers, "scheduler", p, name, fn),
        ),
        (
            "register_weight_adapters",
            lambda p, adapter: registry._add_named(
                registry.weight_adapters, "weight_adapter", p, adapter.name, adapter
            ),
        ),
    ]
    for hook_name, add in hooks:

        def failed(plugin: str, exc: Exception, hook_name: str = hook_name) -> None:
            error = PluginLoadError(plugin, exc)
            registry.failures.append(error)
            log.error("%s (in %s)", error, hook_name)
            log.debug("plugin %s failed in %s:", plugin, hook_name, exc_info=exc)

        host.call_each(
            hook_name,
            lambda plugin, add=add: {"register": _bound(plugin, add, registry)},
            failed,
        )
    return registry
