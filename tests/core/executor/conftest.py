"""Fixtures: a registry and an executor built from the stub nodes."""

from __future__ import annotations

import pytest
from executor_stub_nodes import CALLS, StubNodes

from loom.executor.executor import Executor
from loom.plugins import PluginHost
from loom.registry import collect


@pytest.fixture
def registry():
    host = PluginHost(entry_points=False, builtins=())
    host.register(StubNodes(), "stubs")
    host.load()
    found = collect(host)
    assert not found.failures
    return found


@pytest.fixture
def executor(registry):
    CALLS.clear()
    return Executor(registry=registry)


@pytest.fixture
def calls():
    return CALLS
