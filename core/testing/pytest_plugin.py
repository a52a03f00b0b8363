"""Loom's pytest fixtures (``pytest11`` entry point ``loom``); see :mod:`loom.testing`.

Each fixture returns a factory, so a test chooses its plugins where it uses them::

    def test_my_node(loom_runtime, loom_run):
        runtime = loom_runtime("myplugin")
        record = loom_run(runtime, {"1": {"class_type": "MyNode", "inputs": {}}})
        assert record.ok, record.error
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from loom.testing.harness import (
    Builtins,
    HarnessError,
    PluginSpec,
    make_host,
    make_registry,
    make_runtime,
    make_settings,
)
from loom.testing.prompts import PromptRecord, run_prompt

if TYPE_CHECKING:
    from loom.plugins import PluginHost
    from loom.registry import Registry
    from loom.runtime import Runtime
    from loom.settings import Settings


def _or_fail(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return build(*args, **kwargs)
    except HarnessError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture
def loom_host() -> Callable[..., PluginHost]:
    """``loom_host(*plugins, builtins=True, strict=True, **named)``: a loaded plugin host
    with core's built-ins and exactly these plugins (see :func:`loom.testing.make_host`)."""

    def build(
        *plugins: PluginSpec, builtins: Builtins = True, strict: bool = True, **named: object
    ) -> PluginHost:
        return _or_fail(make_host, *plugins, builtins=builtins, strict=strict, **named)

    return build


@pytest.fixture
def loom_registry() -> Callable[..., Registry]:
    """``loom_registry(*plugins, builtins=True, strict=True, **named)``: what those plugins
    registered (see :func:`loom.testing.make_registry`)."""

    def build(
        *plugins: PluginSpec, builtins: Builtins = True, strict: bool = True, **named: object
    ) -> Registry:
        return _or_fail(make_registry, *plugins, builtins=builtins, strict=strict, **named)

    return build


@pytest.fixture
def loom_runtime(tmp_path: Path) -> Callable[..., Runtime]:
    """``loom_runtime(*plugins, settings=None, builtins=True, strict=True, **named)``: a
    runtime over those plugins whose base directory is the test's ``tmp_path``.

    ``settings`` is a :class:`~loom.settings.Settings`, or a mapping of fields that override
    the defaults (``base_directory=tmp_path``, ``load_custom_nodes=False``).
    """

    def build(
        *plugins: PluginSpec,
        settings: Settings | Mapping[str, Any] | None = None,
        builtins: Builtins = True,
        strict: bool = True,
        **named: object,
    ) -> Runtime:
        if settings is None or isinstance(settings, Mapping):
            settings = make_settings(tmp_path, **dict(settings or {}))
        return _or_fail(
            make_runtime, *plugins, settings=settings, builtins=builtins, strict=strict, **named
        )

    return build


@pytest.fixture
def loom_run() -> Callable[..., PromptRecord]:
    """``loom_run(runtime, prompt, *, prompt_id="test", client_id=None, extra_data=None)``:
    validate and execute a prompt; returns its :class:`~loom.testing.PromptRecord`."""
    return run_prompt
