"""The V3 node itself (``comfy_api.latest.io``): ``Schema``, ``Hidden``, ``NodeOutput``,
``ComfyNode`` and ``ComfyExtension``, written from ComfyUI's documented behaviour.

``define_schema()`` returns a :class:`Schema`; :meth:`Schema.v1_inputs` is the
``INPUT_TYPES`` shape ``/object_info`` serves. The socket types live in :mod:`v3_io`, the
node-info records in :mod:`v3_info`, the V1 attributes every node carries in :mod:`v3_legacy`.
"""

from __future__ import annotations

import enum
import inspect
from typing import Any

import attrs

from loom import ExecutionBlocker
from loom_comfy_compat.v3_info import NodeInfoV1, NodeInfoV3, V3Data, v1_info, v3_info
from loom_comfy_compat.v3_io import Input, Output
from loom_comfy_compat.v3_legacy import V1View, classproperty


class Hidden(str, enum.Enum):
    """Hidden inputs a node asks for; their values reach it as ``cls.hidden.<name>``."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """``cls.hidden`` during ``execute``: the hidden values; names not asked for are None."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        for member in Hidden:
            setattr(self, member.name, (values or {}).get(member.name))

    def __getattr__(self, name: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, values: dict[Any, Any] | None) -> HiddenHolder:
        """From ``{Hidden.prompt: ..., "UNIQUE_ID": ...}`` (keyed by the hidden values)."""
        names = {member.value: member.name for member in Hidden}
        known = {str(getattr(key, "value", key)): value for key, value in (values or {}).items()}
        return cls({names[key]: value for key, value in known.items() if key in names})

    @classmethod
    def from_v3_data(cls, v3_data: V3Data | None) -> HiddenHolder:
        return cls.from_dict((v3_data or {}).get("hidden_inputs"))


@attrs.define
class Schema:
    """What ``define_schema`` returns: the node's id, inputs, outputs and flags."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = attrs.field(factory=list)
    outputs: list[Output] = attrs.field(factory=list)
    hidden: list[Hidden] = attrs.field(factory=list)
    description: str = ""
    search_aliases: list[str] = attrs.field(factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def finalize(self) -> Schema:
        """Output nodes get ``prompt``/``extra_pnginfo``; outputs without ids get ids."""
        self.inputs, self.outputs = list(self.inputs or []), list(self.outputs or [])
        self.hidden = list(self.hidden or [])
        wanted = [Hidden.prompt, Hidden.extra_pnginfo] if self.is_output_node else []
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        self.hidden += [h for h in wanted if h not in self.hidden]
        for index, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{index}_{output.get_io_type()}_"
        return self

    def problems(self) -> list[str]:
        """Every problem with the declaration (duplicate ids), gathered before raising.
        An input and an output may share an id, as from ComfyUI 0.7 on."""
        input_ids = [i.id for i in self.inputs]
        output_ids = [o.id for o in self.outputs]
        issues = []
        for label, ids in (("input", input_ids), ("output", output_ids)):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                issues.append(f"{label} ids must be unique, but {repeated} repeat")
        return issues

    def validate(self) -> None:
        """Raise ValueError listing every problem (:meth:`problems`), then let each input
        and output check itself (``Input.validate``), as ComfyUI does."""
        issues = self.problems()
        if issues:
            raise ValueError("\n".join(issues))
        for item in [*self.inputs, *self.outputs]:
            item.validate()

    def get_v1_info(self, cls: Any = None) -> NodeInfoV1:
        """The node in V1 form (finalize first)."""
        return v1_info(self, cls)

    def get_v3_info(self, cls: Any = None) -> NodeInfoV3:
        """The node's inputs and outputs by id (finalize first)."""
        return v3_info(self, cls)

    def v1_inputs(self) -> dict[str, dict[str, Any]]:
        """ComfyUI's INPUT_TYPES shape, as ``/object_info`` serves it for V3 nodes."""
        return v1_info(self, None).input or {}


class NodeOutput:
    """What ``execute`` returns: output values, and optionally ``ui``, ``expand``, or
    ``block_execution`` (a message: every consumer is blocked, as ExecutionBlocker)."""

    def __init__(
        self,
        *args: Any,
        ui: Any = None,
        expand: dict[str, Any] | None = None,
        block_execution: str | None = None,
    ) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args or None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeOutput:
        result = data.get("result", ())
        if isinstance(result, ExecutionBlocker):
            return cls(block_execution=result.message)
        return cls(*(result or ()), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


def normalised(result: Any, where: str, enable_expand: bool) -> NodeOutput:
    """What ``execute`` returned (None, a tuple, a dict, an ExecutionBlocker or a
    NodeOutput) as a NodeOutput; ``expand`` needs the schema's ``enable_expand``."""
    if result is None:
        result = NodeOutput()
    elif isinstance(result, tuple):
        result = NodeOutput(*result)
    elif isinstance(result, dict):
        result = NodeOutput.from_dict(result)
    elif isinstance(result, ExecutionBlocker):
        result = NodeOutput(block_execution=result.message)
    elif not isinstance(result, NodeOutput):
        raise TypeError(f"{where}: execute() returned {type(result).__name__}")
    if result.expand is not None and not enable_expand:
        raise TypeError(
            f"{where}: NodeOutput has expand= but the schema does not set enable_expand=True"
        )
    return result


def overrides(cls: type, name: str) -> bool:
    """Whether ``cls`` (or a pack's base class) defines ``name`` rather than ComfyNode."""
    for klass in cls.__mro__:
        if klass is ComfyNode:
            return False
        if name in vars(klass):
            return True
    return False


class ComfyNode(V1View):
    """Base class of V3 nodes: override ``define_schema`` and ``execute`` (classmethods).

    The class is never instantiated to run; the V1 attributes (``INPUT_TYPES()``,
    ``RETURN_TYPES``, ``FUNCTION``...) come from :class:`~loom_comfy_compat.v3_legacy.V1View`.
    """

    #: Set for the duration of each ``execute`` call (on a per-call subclass).
    hidden: HiddenHolder = HiddenHolder()
    RELATIVE_PYTHON_MODULE: str | None = None

    def __init__(self) -> None:
        type(self).VALIDATE_CLASS()

    @classmethod
    def GET_BASE_CLASS(cls) -> type:
        return ComfyNode

    @classmethod
    def VALIDATE_CLASS(cls) -> None:
        """Raise if the class lacks its own ``define_schema`` or ``execute``."""
        for name in ("define_schema", "execute"):
            if not overrides(cls, name):
                raise TypeError(f"V3 node class {cls.__name__} defines no {name}()")

    @classmethod
    def PREPARE_CLASS_CLONE(cls, v3_data: V3Data | None = None) -> type:
        """A subclass carrying ``hidden`` for one call, as the executor makes."""
        holder = HiddenHolder.from_v3_data(v3_data)
        return type(cls.__name__, (cls,), {"hidden": holder})

    @classproperty
    def FUNCTION(cls) -> str:
        """The method V1 code calls: ``EXECUTE_NORMALIZED`` (``_ASYNC`` for async execute)."""
        if inspect.iscoroutinefunction(cls.execute):
            return "EXECUTE_NORMALIZED_ASYNC"
        return "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> NodeOutput:
        """``execute``, its result as a NodeOutput."""
        return cls._normalised(cls.execute(*args, **kwargs))

    @classmethod
    async def EXECUTE_NORMALIZED_ASYNC(cls, *args: Any, **kwargs: Any) -> NodeOutput:
        """``await execute``, its result as a NodeOutput."""
        return cls._normalised(await cls.execute(*args, **kwargs))

    @classmethod
    def _normalised(cls, result: Any) -> NodeOutput:
        schema = cls.SCHEMA if cls.SCHEMA is not None else cls.GET_SCHEMA()
        return normalised(result, f"V3 node {cls.__name__}", schema.enable_expand)

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} defines no define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} defines no execute()")

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        """By default every input not evaluated yet (None) is needed."""
        return [name for name, value in kwargs.items() if value is None]


class ComfyExtension:
    """What ``async def comfy_entrypoint()`` returns: the package's node list."""

    async def on_load(self) -> None:
        """Called once before ``get_node_list``."""

    async def get_node_list(self) -> list[type[ComfyNode]]:
        raise NotImplementedError(f"{type(self).__name__} defines no get_node_list()")


__all__ = [
    "ComfyExtension",
    "ComfyNode",
    "Hidden",
    "HiddenHolder",
    "NodeInfoV1",
    "NodeInfoV3",
    "NodeOutput",
    "Schema",
    "V3Data",
]
