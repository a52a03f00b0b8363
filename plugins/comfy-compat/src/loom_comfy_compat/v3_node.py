"""The V3 node itself (``comfy_api.latest.io``): ``Schema``, ``Hidden``, ``NodeOutput``,
``ComfyNode`` and ``ComfyExtension``, written from ComfyUI's documented behaviour.

``define_schema()`` returns a :class:`Schema`; :meth:`Schema.v1_inputs` is the
``INPUT_TYPES`` shape ``/object_info`` serves. The socket types live in :mod:`v3_io`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from loom import ExecutionBlocker
from loom_comfy_compat.v3_io import Input, Output


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

    def v1_inputs(self) -> dict[str, dict[str, Any]]:
        """ComfyUI's INPUT_TYPES shape, as ``/object_info`` serves it for V3 nodes."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for item in self.inputs:
            section = "optional" if item.optional else "required"
            sections.setdefault(section, {})[item.id] = (item.get_io_type(), item.options())
        for hidden in self.hidden:
            sections.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return sections


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


class ComfyNode:
    """Base class of V3 nodes: override ``define_schema`` and ``execute`` (classmethods)."""

    #: Set for the duration of each ``execute`` call (on a per-call subclass).
    hidden: HiddenHolder = HiddenHolder()
    RELATIVE_PYTHON_MODULE: str | None = None

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
    "NodeOutput",
    "Schema",
]
