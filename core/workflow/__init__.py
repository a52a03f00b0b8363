"""Headless conversion of UI-format workflows (what the ComfyUI frontend saves) to API prompts.

::

    from loom.workflow import convert_workflow, is_ui_workflow

    if is_ui_workflow(data):
        prompt = convert_workflow(data, registry)
"""

from loom.workflow.convert import convert_workflow, is_ui_workflow

__all__ = ["convert_workflow", "is_ui_workflow"]
