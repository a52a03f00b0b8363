"""loom-redis is an installed plugin: it claims only queue URLs it understands, reads its
options from the URL, adds ``loom worker`` / ``loom queue``, and explains a missing queue."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import click
import pytest

from loom.errors import LoomError
from loom.plugins import PluginHost
from loom.settings import Settings


def test_plugin_is_installed():
    names = {ep.name: ep.value for ep in entry_points(group="loom")}
    assert names.get("redis") == "loom_redis.plugin"
    host = PluginHost(allow={"redis"}).load()
    assert "redis" in {info.name for info in host.infos}
    assert not [f for f in host.failures if f.plugin == "redis"]


def test_make_prompt_queue_claims_redis_urls_only(tmp_path):
    from loom_redis import RedisQueue, plugin

    assert plugin.make_prompt_queue(settings=Settings(base_directory=tmp_path)) is None
    other = Settings(base_directory=tmp_path, queue_url="amqp://broker/")
    assert plugin.make_prompt_queue(settings=other) is None
    url = "redis://127.0.0.1:1/2?lease_s=5&max_deliveries=4&prefix=farm&socket_timeout=7"
    queue = plugin.make_prompt_queue(settings=Settings(base_directory=tmp_path, queue_url=url))
    assert isinstance(queue, RedisQueue) and not queue.runs_in_process
    assert (queue.options.lease_s, queue.options.max_deliveries) == (5.0, 4)
    assert queue.keys.stream == "farm:stream"
    kwargs = queue.client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (1, 2, 7.0)
    assert queue.output_dir == tmp_path / "output"


def test_a_bad_queue_option_names_itself():
    from loom_redis.options import split_url

    with pytest.raises(LoomError, match="lease_s='soon' is not a valid float"):
        split_url("redis://localhost/0?lease_s=soon")


def test_queue_url_comes_from_the_environment():
    settings = Settings.from_env({"LOOM_QUEUE_URL": "redis://db:6379/0"})
    assert settings.queue_url == "redis://db:6379/0"


def test_register_commands_adds_worker_and_queue_status():
    from loom_redis import plugin

    group = click.Group()
    plugin.register_commands(cli=group)
    assert "worker" in group.commands and "status" in group.commands["queue"].commands


def test_worker_without_a_queue_says_what_it_needs(tmp_path):
    code = "from loom.cli.main import main; raise SystemExit(main(['worker']))"
    env = {"PATH": "/usr/bin:/bin", "LOOM_PLUGINS": "redis", "LOOM_BASE_DIRECTORY": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 2
    assert "needs a shared queue: --queue redis://" in out.stderr
    assert "Traceback" not in out.stderr


def test_worker_with_an_unreachable_redis_names_the_url(tmp_path):
    from redis_cluster import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    code = f"from loom.cli.main import main; raise SystemExit(main(['worker', '--queue', {url!r}]))"
    env = {"PATH": "/usr/bin:/bin", "LOOM_PLUGINS": "redis", "LOOM_BASE_DIRECTORY": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1
    assert f"cannot reach the queue at {url}" in out.stderr and "Traceback" not in out.stderr
