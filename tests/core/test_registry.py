"""The registry: adding nodes and named things, attribution, collisions."""

from __future__ import annotations

from typing import Any

import pytest

import loom
from loom.errors import DuplicateRegistrationError, NodeDefinitionError
from loom.registry import Registry, collect
from loom.testing import make_host


@loom.node("RegistryTestNode", category="test", display_name="Declared Name")
class RegistryTestNode:
    """A declarative test node."""

    value: int = loom.ui.int(1)

    def run(self, ctx: loom.RunContext) -> int:
        return self.value


class ClassicNode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        return (value,)


def test_add_declarative_node() -> None:
    registry = Registry()
    definition = registry.add_node("p", RegistryTestNode)
    assert registry.get_node("RegistryTestNode") is definition
    assert definition.display_name == "Declared Name"
    assert definition.python_module == __name__
    assert registry.by_plugin["p"]["node"] == ["RegistryTestNode"]


def test_declarative_display_name_and_module_override() -> None:
    registry = Registry()
    definition = registry.add_node(
        "p", RegistryTestNode, display_name="Other Name", python_module="custom_nodes.x"
    )
    assert definition.display_name == "Other Name"
    assert definition.python_module == "custom_nodes.x"


def test_declarative_class_type_mismatch() -> None:
    with pytest.raises(NodeDefinitionError, match="RegistryTestNode"):
        Registry().add_node("p", RegistryTestNode, class_type="SomethingElse")


def test_add_classic_node() -> None:
    registry = Registry()
    definition = registry.add_node(
        "p",
        ClassicNode,
        class_type="Classic",
        display_name="Classic!",
        python_module="custom_nodes.pack",
    )
    assert definition.class_type == "Classic"
    assert definition.display_name == "Classic!"
    assert definition.python_module == "custom_nodes.pack"


def test_classic_node_needs_class_type() -> None:
    with pytest.raises(NodeDefinitionError, match="class_type"):
        Registry().add_node("p", ClassicNode)


def test_neither_kind_of_node() -> None:
    with pytest.raises(NodeDefinitionError, match="neither"):
        Registry().add_node("p", dict)


def test_same_plugin_twice_is_a_duplicate() -> None:
    registry = Registry()
    registry.add_node("p", ClassicNode, class_type="Classic")
    with pytest.raises(DuplicateRegistrationError, match="'p'"):
        registry.add_node("p", ClassicNode, class_type="Classic")


def test_kinds_have_separate_namespaces() -> None:
    registry = Registry()
    registry._add_named(registry.samplers, "sampler", "a", "karras", object())
    registry._add_named(registry.schedulers, "scheduler", "a", "karras", object())
    assert registry.sampler_names() == ["karras"] and registry.scheduler_names() == ["karras"]


def test_collect_into_existing_registry() -> None:
    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(RegistryTestNode)

    host = make_host(builtins=False, p=Plugin())
    registry = Registry()
    assert collect(host, registry) is registry
    assert "RegistryTestNode" in registry.nodes


def test_hookimpl_with_wrong_argument_name_fails_at_registration() -> None:
    class Plugin:
        @loom.hookimpl
        def register_nodes(self, reg):  # the spec's argument is `register`
            reg(RegistryTestNode)

    host = make_host(builtins=False, strict=False, typo=Plugin())
    [failure] = host.failures
    assert failure.plugin == "typo"
    assert "reg" in str(failure)
    assert collect(host).nodes == {}
