"""The one internal description of a node type, shared by declarative and classic nodes.

Both kinds compile into a :class:`NodeDef`. Its inputs are kept in ComfyUI's
``INPUT_TYPES()`` shape (``{"required": {name: [TYPE, {options}]}, ...}``) because that is
what validation checks against and what ``/object_info`` serves; it is produced per call so
combo lists computed at request time (model filenames) stay live.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from loom.executor.context import RunContext
    from loom.folders import ModelFolders
    from loom.registry import Registry
    from loom.settings import Settings

InputTypes = dict[str, dict[str, Any]]
"""``{"required": {name: spec}, "optional": {...}, "hidden": {...}}``; spec = ``[TYPE, {opts}]``."""

SECTIONS = ("required", "optional", "hidden")


@attrs.frozen
class OutputDef:
    """One output socket."""

    type: str
    name: str
    is_list: bool = False
    tooltip: str | None = None
    #: for a ``COMFY_MATCHTYPE_V3`` output: the id of the MatchType template it shares
    #: with inputs (``/object_info``'s ``output_matchtypes``); None: the node's only one
    template_id: str | None = None


@attrs.frozen
class NodeOutput:
    """What running a node produced: one value per output, UI data, or a subgraph.

    ``values`` has one entry per declared output. ``ui`` (e.g. ``{"images": [...]}``) is sent
    as the ``executed`` event and stored in history. ``expand`` is an API-format graph that
    runs in the node's place; ``values`` may then hold links (``[node_id, slot]``) into it.
    """

    values: tuple[Any, ...] = ()
    ui: Mapping[str, Any] | None = None
    expand: Mapping[str, Any] | None = None


#: Parameter names live combo sources, ``validate_inputs`` and ``fingerprint`` may take.
ENVIRONMENT_NAMES = frozenset({"registry", "folders", "settings"})


@attrs.frozen
class NodeEnvironment:
    """What a node's live combo sources, ``validate_inputs`` and ``fingerprint`` may ask for.

    They name what they need as parameters (:data:`ENVIRONMENT_NAMES`): ``registry``
    (node types, sampler names), ``folders`` (:class:`~loom.folders.ModelFolders`, model
    files) and ``settings`` (:class:`~loom.settings.Settings`, input/output directories).
    The runtime builds one (:attr:`loom.runtime.Runtime.environment`); without a runtime,
    whatever is missing is None.
    """

    registry: Registry | None = None
    folders: ModelFolders | None = None
    settings: Settings | None = None

    @classmethod
    def of(cls, source: NodeEnvironment | Registry | None) -> NodeEnvironment:
        """``source`` itself, or an environment holding only the registry ``source``."""
        return source if isinstance(source, NodeEnvironment) else cls(registry=source)

    def arguments(self) -> dict[str, Any]:
        """The values by parameter name, for ``call_with_accepted``."""
        return {"registry": self.registry, "folders": self.folders, "settings": self.settings}


class NodeImpl(Protocol):
    """How the executor talks to one node type, whichever way it was written."""

    def input_types(self, env: NodeEnvironment | Registry | None) -> InputTypes:
        """The node's inputs in ComfyUI's INPUT_TYPES shape, with live combo lists
        (``env``: see :meth:`NodeEnvironment.of`)."""

    def create(self) -> Any:
        """A per-node-id object kept in the objects cache (classic nodes keep state on it)."""

    def fingerprint(
        self, obj: Any, constants: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> Any:
        """IS_CHANGED: a value that changes when the output would; None when not defined."""

    def validate(
        self, obj: Any, inputs: dict[str, Any], env: NodeEnvironment = NodeEnvironment()
    ) -> bool | str:
        """VALIDATE_INPUTS: True, or a message describing what is wrong."""

    def check_lazy_status(self, obj: Any, inputs: dict[str, Any]) -> list[str]:
        """Names of lazy inputs still needed before the node can run."""

    def execute(self, obj: Any, inputs: dict[str, Any], ctx: RunContext) -> NodeOutput:
        """Run the node once on one set of inputs."""


@attrs.frozen
class NodeDef:
    """A registered node type. ``impl`` runs it; the rest is its declaration."""

    class_type: str
    impl: NodeImpl = attrs.field(eq=False, repr=False)
    outputs: tuple[OutputDef, ...] = ()
    display_name: str | None = None
    category: str = "sd"
    description: str = ""
    python_module: str = "nodes"
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False
    api_node: bool | None = None
    has_output_tooltips: bool = False
    #: ComfyUI 0.8 declares this node with the V3 schema (``io.Schema``): /object_info
    #: renders it in that form (:mod:`loom.nodes.v3_form`).
    v3: bool = False
    has_fingerprint: bool = False
    has_validate: bool = False
    has_lazy_check: bool = False
    #: Input names VALIDATE_INPUTS takes: those skip the standard checks (``input_types`` skips link types).
    validate_args: frozenset[str] = frozenset()
    source_class: type | None = attrs.field(default=None, eq=False, repr=False)

    def input_types(self, env: NodeEnvironment | Registry | None = None) -> InputTypes:
        """INPUT_TYPES with live combos computed from ``env`` (a bare registry: no folders)."""
        return self.impl.input_types(env)


OptionsSource = Callable[..., list[Any]]
"""A combo list computed when asked; it names what it needs from :class:`NodeEnvironment`
(``def loras(folders): ...``) and returns the values."""
