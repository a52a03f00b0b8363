"""Hook implementations only: this module is what the ``loom`` entry point names."""

from __future__ import annotations

from collections.abc import Callable

import loom
from loom_example_plugin.nodes import ExampleImageBrightness


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(ExampleImageBrightness)
