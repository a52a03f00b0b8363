"""Fixtures for the loom-http tests: a runtime on ``tmp_path`` with core's built-in nodes
plus the test nodes of :mod:`http_helpers`, and the application under the aiohttp test client.

Async test modules set ``pytestmark = pytest.mark.asyncio`` (pytest-asyncio, pytest-aiohttp's
backend, in strict mode), so the repository-wide ini options stay untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_helpers import make_runtime  # noqa: E402

from loom.runtime import Runtime  # noqa: E402


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return make_runtime(tmp_path)


@pytest.fixture
def make_client(aiohttp_client: Any, runtime: Runtime) -> Callable[..., Any]:
    """``await make_client(**server_options)`` -> aiohttp test client for a fresh app."""
    from loom_http.app import make_app
    from loom_http.state import ServerOptions

    async def build(rt: Runtime | None = None, **options: Any) -> Any:
        return await aiohttp_client(make_app(rt or runtime, ServerOptions(**options)))

    return build


@pytest_asyncio.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client()
