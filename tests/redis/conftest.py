"""Fixtures for the loom-redis tests: a fakeredis server for the scripts' unit tests and a
real ``redis-server`` (Debian's; ``.ci/run`` installs it) on a free loopback port with an
append-only file, for everything that crosses processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from redis_cluster import REDIS_SERVER, RedisServer  # noqa: E402


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def fake_client() -> redis.Redis:
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7,)))
