"""The V1 view of a V3 node: the class attributes V1 code reads (``INPUT_TYPES()``,
``RETURN_TYPES``, ``CATEGORY``, ``OUTPUT_NODE``...), derived from ``define_schema()``.

ComfyUI gives every ``io.ComfyNode`` these so code written for V1 nodes (a pack copying
another node's inputs, a tool walking ``NODE_CLASS_MAPPINGS``) can read a V3 node. Each is a
class property computed from the schema when read; ``GET_SCHEMA()`` also checks the schema
(``Schema.validate``) and leaves it on ``cls.SCHEMA``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from loom_comfy_compat.v3_info import v1_info, v3_info


class classproperty:
    """A read-only property read on the class (``Node.RETURN_TYPES``)."""

    def __init__(self, getter: Callable[[Any], Any]) -> None:
        self.getter = getter
        self.__doc__ = getter.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self.getter(owner if owner is not None else type(instance))


def _schema_flag(field: str, doc: str) -> classproperty:
    def read(cls: Any) -> Any:
        return getattr(cls.GET_SCHEMA(), field)

    read.__doc__ = doc
    return classproperty(read)


def _output_list(pick: Callable[[Any], Any], doc: str) -> classproperty:
    def read(cls: Any) -> list[Any]:
        return [pick(output) for output in cls.GET_SCHEMA().outputs]

    read.__doc__ = doc
    return classproperty(read)


class V1View:
    """Mixed into ``io.ComfyNode``: the V1 attributes, read from the node's schema."""

    #: The last schema ``GET_SCHEMA`` produced.
    SCHEMA: Any = None

    DESCRIPTION = _schema_flag("description", "The schema's description.")
    CATEGORY = _schema_flag("category", "The schema's category.")
    EXPERIMENTAL = _schema_flag("is_experimental", "Whether the node is experimental.")
    DEPRECATED = _schema_flag("is_deprecated", "Whether the node is deprecated.")
    API_NODE = _schema_flag("is_api_node", "Whether the node is an API node.")
    OUTPUT_NODE = _schema_flag("is_output_node", "Whether the node is an output node.")
    INPUT_IS_LIST = _schema_flag("is_input_list", "Whether inputs arrive as whole lists.")
    NOT_IDEMPOTENT = _schema_flag("not_idempotent", "Whether outputs may not be reused.")
    RETURN_TYPES = _output_list(lambda o: o.get_io_type(), "Each output's io_type.")
    RETURN_NAMES = _output_list(
        lambda o: o.display_name or o.get_io_type(), "Each output's name (its type if unnamed)."
    )
    OUTPUT_IS_LIST = _output_list(lambda o: bool(o.is_output_list), "Each output's list flag.")
    OUTPUT_TOOLTIPS = _output_list(lambda o: o.tooltip or None, "Each output's tooltip or None.")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Any:
        """``define_schema()``, finalized (hidden inputs added, outputs given ids)."""
        schema = cls.define_schema()  # type: ignore[attr-defined]
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Any:
        """The finalized schema, checked (``Schema.validate`` raises ValueError)."""
        cls.VALIDATE_CLASS()  # type: ignore[attr-defined]
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:
        """The node's inputs in V1 form (``required`` / ``optional`` / ``hidden``)."""
        return v1_info(cls.FINALIZE_SCHEMA(), cls).input or {}

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:
        """``NodeInfoV1`` as a dict: what ``/object_info`` is built from."""
        return dataclasses.asdict(v1_info(cls.GET_SCHEMA(), cls))

    @classmethod
    def GET_NODE_INFO_V3(cls) -> dict[str, Any]:
        """``NodeInfoV3`` as a dict."""
        return dataclasses.asdict(v3_info(cls.GET_SCHEMA(), cls))


__all__ = ["V1View", "classproperty"]
