"""Declarative nodes: declarations compile to ComfyUI's /object_info shape; bad ones fail early."""

from __future__ import annotations

import re

import pytest

import loom
from loom.errors import NodeDefinitionError
from loom.executor.executor import Executor
from loom.nodes.object_info import to_json
from loom.nodes.schema import compile_declarative
from loom.plugins import PluginHost
from loom.registry import Registry, collect
from loom.types import Image, Latent, Mask


@loom.outputs
class Split:
    image: Image = loom.output(name="IMAGE", tooltip="the picture")
    masks: Mask = loom.output(name="masks", is_list=True)


@loom.node(
    "TestSplit",
    category="testing/split",
    display_name="Split It",
    output_node=True,
    hidden={"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
)
class SplitNode:
    """Split an image into parts."""

    image: Image = loom.ui.input(tooltip="what to split")
    parts: int = loom.ui.int(2, min=1, max=8, step=1, tooltip="how many")
    strength: float = loom.ui.float(0.5, min=0.0, max=1.0, step=0.01, round=0.001)
    mode: str = loom.ui.combo(["grid", "rows"], default="rows")
    label: str = loom.ui.string("x", multiline=True, dynamic_prompts=False)
    invert: bool = loom.ui.boolean(False, label_on="yes", label_off="no")
    latent: Latent = loom.ui.input(optional=True, lazy=True)
    files: str = loom.ui.combo(lambda registry: sorted(registry.live_files), optional=True)

    def run(self, ctx: loom.RunContext) -> Split:
        return Split(image=self.image, masks=[self.parts])


def test_object_info_matches_comfyui_shape():
    registry = Registry()
    registry.live_files = ["b.png", "a.png"]
    definition = registry.add_node("test", SplitNode)
    info = to_json(definition, registry)
    assert info == {
        "input": {
            "required": {
                "image": ["IMAGE", {"tooltip": "what to split"}],
                "parts": [
                    "INT",
                    {"default": 2, "min": 1, "max": 8, "step": 1, "tooltip": "how many"},
                ],
                "strength": [
                    "FLOAT",
                    {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "round": 0.001},
                ],
                "mode": [["grid", "rows"], {"default": "rows"}],
                "label": ["STRING", {"default": "x", "multiline": True, "dynamicPrompts": False}],
                "invert": ["BOOLEAN", {"default": False, "label_on": "yes", "label_off": "no"}],
            },
            "optional": {"latent": ["LATENT", {"lazy": True}], "files": [["a.png", "b.png"]]},
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        },
        "input_order": {
            "required": ["image", "parts", "strength", "mode", "label", "invert"],
            "optional": ["latent", "files"],
            "hidden": ["prompt", "unique_id"],
        },
        "output": ["IMAGE", "MASK"],
        "output_is_list": [False, True],
        "output_name": ["IMAGE", "masks"],
        "output_tooltips": ["the picture", None],
        "name": "TestSplit",
        "display_name": "Split It",
        "description": "Split an image into parts.",
        "python_module": __name__,
        "category": "testing/split",
        "output_node": True,
    }
    registry.live_files.append("c.png")  # combos are computed per request
    assert to_json(definition, registry)["input"]["optional"]["files"] == [
        ["a.png", "b.png", "c.png"]
    ]


def test_classic_node_object_info_keeps_its_declaration():
    class Classic:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {"default": 1})}, "optional": {"y": ("FLOAT",)}}

        RETURN_TYPES = ("INT", "STRING")
        RETURN_NAMES = ("number", "text")
        OUTPUT_IS_LIST = (False, True)
        FUNCTION = "go"
        CATEGORY = "custom"
        DEPRECATED = True

        def go(self, x, y=None):
            return (x, [str(x)])

    registry = Registry()
    info = to_json(
        registry.add_node("pkg", Classic, class_type="Classic", python_module="custom_nodes.pkg"),
        registry,
    )
    assert info["input"] == {
        "required": {"x": ["INT", {"default": 1}]},
        "optional": {"y": ["FLOAT"]},
    }
    assert info["output_name"] == ["number", "text"] and info["output_is_list"] == [False, True]
    assert info["display_name"] == "Classic" and info["python_module"] == "custom_nodes.pkg"
    assert (
        info["deprecated"] is True and "experimental" not in info and "output_tooltips" not in info
    )


@pytest.mark.parametrize(
    "source, message",
    [
        (
            "class Bad:\n    x: object\n    def run(self, ctx) -> None: ...",
            "cannot tell the socket type",
        ),
        ("class Bad:\n    x: int = 1", "has no run(self, ctx) method"),
        ("class Bad:\n    x: int = 1\n    def run(self, ctx): ...", "needs a return annotation"),
    ],
)
def test_bad_declarations_fail_at_registration(source, message):
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(NodeDefinitionError, match=re.escape(message)):
        compile_declarative(loom.node("Bad")(namespace["Bad"]))


def test_classic_class_with_bad_function_fails_at_registration():
    class NoFunction:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ()
        FUNCTION = "missing"

    with pytest.raises(NodeDefinitionError, match="FUNCTION must name a method"):
        Registry().add_node("p", NoFunction, class_type="NoFunction")


@loom.node("Pick", category="testing", output_node=True)
class Pick:
    """Lazy: only the chosen branch is computed."""

    first: bool = loom.ui.boolean(True)
    a: int = loom.ui.int(0, lazy=True)
    b: int = loom.ui.int(0, lazy=True)

    def check_lazy_status(self) -> list[str]:
        wanted = "a" if self.first else "b"
        return [wanted] if getattr(self, wanted) is None else []

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput(ui={"picked": [self.a if self.first else self.b]})


COUNT_RUNS: list[int] = []


@loom.node("Count", category="testing")
class Count:
    """Counts how often it ran."""

    value: int = loom.ui.int(0, min=-10, max=10)

    def run(self, ctx: loom.RunContext) -> int:
        COUNT_RUNS.append(self.value)
        return self.value


def test_declarative_nodes_run_through_the_executor_with_lazy_inputs():
    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(Pick)
            register(Count)

    host = PluginHost(entry_points=False, builtins=())
    host.register(Plugin(), "p")
    host.load()
    executor = Executor(registry=collect(host))
    COUNT_RUNS.clear()
    prompt = {
        "1": {"class_type": "Count", "inputs": {"value": 1}},
        "2": {"class_type": "Count", "inputs": {"value": 2}},
        "3": {"class_type": "Pick", "inputs": {"first": False, "a": ["1", 0], "b": ["2", 0]}},
    }
    result = executor.run_prompt(prompt)
    assert result.outputs["3"] == {"picked": [2]}
    assert COUNT_RUNS == [2]


@loom.node("TestFolderCombo", category="testing", output_node=True)
class FolderCombo:
    """Combo and validation that ask the node environment for folders and settings."""

    name: str = loom.ui.combo(lambda folders: folders.filenames("checkpoints") if folders else [])

    @classmethod
    def validate_inputs(cls, name: str, folders, settings) -> bool | str:
        return (
            True if folders.find("checkpoints", name) else f"{name} is not in {settings.models_dir}"
        )

    def run(self, ctx: loom.RunContext) -> None:
        return None


def test_live_combos_and_validation_get_folders_and_settings_from_the_runtime(tmp_path):
    from loom.errors import PromptValidationError
    from loom.nodes.object_info import object_info
    from loom.runtime import Runtime
    from loom.settings import Settings

    class Plugin:
        @loom.hookimpl
        def register_nodes(self, register):
            register(FolderCombo)

    host = PluginHost(entry_points=False, builtins=("loom.folders",))
    host.register(Plugin(), "p")
    runtime = Runtime(Settings(base_directory=tmp_path, load_custom_nodes=False), host)
    assert not hasattr(runtime.registry, "folders") and not hasattr(runtime.registry, "settings")
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "x.safetensors").write_bytes(b"")
    document = object_info(runtime.registry, runtime.environment)
    assert document["TestFolderCombo"]["input"]["required"]["name"] == [["x.safetensors"]]
    # Without the runtime's environment the combo has no folders to list.
    assert object_info(runtime.registry)["TestFolderCombo"]["input"]["required"]["name"] == [[]]

    prompt = {"1": {"class_type": "TestFolderCombo", "inputs": {"name": "y.safetensors"}}}
    with pytest.raises(PromptValidationError) as info:
        runtime.executor.validate(prompt)
    assert f"y.safetensors is not in {tmp_path / 'models'}" in str(info.value.node_errors)
    prompt["1"]["inputs"]["name"] = "x.safetensors"
    assert runtime.executor.validate(prompt).outputs == ["1"]


def test_a_combo_source_naming_something_else_fails_at_registration():
    @loom.node("TestBadCombo", category="testing")
    class BadCombo:
        name: str = loom.ui.combo(lambda runtime: [])

        def run(self, ctx: loom.RunContext) -> None:
            return None

    with pytest.raises(
        NodeDefinitionError,
        match="a combo source may only take folders, registry, settings as parameters, not runtime",
    ):
        compile_declarative(BadCombo)
