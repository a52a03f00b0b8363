"""Fixtures: a registry and an executor built from the stub nodes."""

from __future__ import annotations

import pytest
from executor_stub_nodes import CALLS, StubNodes

from loom.executor.executor import Executor


@pytest.fixture
def registry(loom_registry):
    return loom_registry(builtins=False, stubs=StubNodes())


@pytest.fixture
def executor(registry):
    CALLS.clear()
    return Executor(registry=registry)


@pytest.fixture
def calls():
    return CALLS
