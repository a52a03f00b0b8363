"""ComfyUI's graph-logic nodes (``comfy_extras/nodes_logic.py``): a lazy two-way switch and
a combo whose options the frontend defines.

``ComfySwitchNode``'s inputs are lazy, so only the branch the switch selects runs. Their
socket type is ComfyUI's ``COMFY_MATCHTYPE_V3`` (one type shared by both branches and the
output, matched by the frontend; the server accepts any link on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import loom
from loom.nodes.spec import NodeOutput, OutputDef
from loom.types import Socket

ui = loom.ui

MATCH_TYPE = "COMFY_MATCHTYPE_V3"
#: a socket whose type the frontend matches across the inputs and output sharing a template
MatchTypeValue = Annotated[Any, Socket(MATCH_TYPE)]
SWITCH_TEMPLATE = {"template_id": "switch", "allowed_types": "*"}


@loom.node(
    "ComfySwitchNode",
    category="logic",
    display_name="Switch",
    experimental=True,
    outputs=[OutputDef(MATCH_TYPE, "output")],
    v3=True,
)
class ComfySwitchNode:
    # on_true when switch is true, else on_false; only that branch runs (no docstring:
    # /object_info's description stays ComfyUI's, empty)

    switch: bool = ui.boolean(None)
    on_false: MatchTypeValue = ui.input(lazy=True, template=SWITCH_TEMPLATE)
    on_true: MatchTypeValue = ui.input(lazy=True, template=SWITCH_TEMPLATE)

    def check_lazy_status(self) -> list[str]:
        if self.switch and self.on_true is None:
            return ["on_true"]
        if not self.switch and self.on_false is None:
            return ["on_false"]
        return []

    def run(self, ctx: loom.RunContext) -> NodeOutput:
        return NodeOutput(values=(self.on_true if self.switch else self.on_false,))


def _no_options() -> list[str]:
    return []


@loom.node("CustomCombo", category="utils", display_name="Custom Combo", experimental=True, v3=True)
class CustomCombo:
    # the option picked in a dropdown whose options the user types in the frontend

    choice: str = ui.combo(_no_options)

    @classmethod
    def validate_inputs(cls, choice: str) -> bool:
        # the options live only in the frontend's widget, so any chosen string is accepted
        return True

    def run(self, ctx: loom.RunContext) -> str:
        return self.choice


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in (ComfySwitchNode, CustomCombo):
        register(node_class, python_module="comfy_extras.nodes_logic")
