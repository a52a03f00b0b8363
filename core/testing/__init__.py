"""Test helpers for Loom and its plugins, shipped with loom-core.

Installed as a pytest plugin (``pytest11`` entry point ``loom``, module
:mod:`loom.testing.pytest_plugin`), so a plugin's tests get these fixtures with nothing to
import; ``-p no:loom`` turns them off:

``loom_host(*plugins, builtins=True, strict=True, **named)``
    a loaded :class:`~loom.plugins.PluginHost` holding core's built-ins and exactly these
    plugins (no entry-point scan): entry-point names (``"sd15"``), module paths, modules,
    or plugin objects (``stubs=StubNodes()`` names one).
``loom_registry(...)``
    the same plugins' :class:`~loom.registry.Registry`.
``loom_runtime(..., settings=None)``
    a :class:`~loom.runtime.Runtime` whose base directory is the test's ``tmp_path``
    (``settings={"cpu_only": True}`` overrides fields, or pass a ``Settings``).
``loom_run(runtime, prompt)``
    runs a prompt and returns a :class:`PromptRecord` (history entry, events, values).

:func:`txt2img_prompt` builds ComfyUI's default txt2img graph (checkpoint, empty latent,
two text encodings, KSampler, VAEDecode, image output) for a family's workflow tests.

The functions behind them (:func:`make_host`, :func:`make_registry`, :func:`make_runtime`,
:func:`run_prompt`) serve session-scoped fixtures and scripts. Importing this package loads
nothing beyond ``import loom``: each helper imports what it uses when called.
"""

from loom.testing.harness import (
    HarnessError,
    make_context,
    make_host,
    make_registry,
    make_runtime,
    make_settings,
)
from loom.testing.prompts import PromptRecord, run_prompt
from loom.testing.workflows import DEFAULT_IDS, Txt2ImgIds, txt2img_prompt

__all__ = [
    "DEFAULT_IDS",
    "HarnessError",
    "PromptRecord",
    "Txt2ImgIds",
    "make_context",
    "make_host",
    "make_registry",
    "make_runtime",
    "make_settings",
    "run_prompt",
    "txt2img_prompt",
]
