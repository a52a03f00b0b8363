"""loom-http is an installed plugin: its entry point loads, it adds ``loom serve``, and
importing it stays cheap (no aiohttp, no torch until the server starts)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import click


def test_plugin_is_installed(loom_host):
    names = {ep.name: ep.value for ep in entry_points(group="loom")}
    assert names.get("http") == "loom_http.plugin"
    host = loom_host("http")
    assert ("http", "loom_http.plugin") in {(info.name, info.module) for info in host.infos}


def test_register_commands_adds_serve():
    from loom_http import plugin

    group = click.Group()
    plugin.register_commands(cli=group)
    assert "serve" in group.commands
    params = {p.name for p in group.commands["serve"].params}
    assert {
        "listen",
        "port",
        "cors_origin",
        "max_upload_size_mb",
        "auth_token",
        "front_end_root",
        "preview_method",
    } <= params


def test_importing_the_plugin_and_help_are_cheap():
    code = (
        "import sys; import loom_http.plugin; from loom.cli.main import main; "
        "main(['serve', '--help']); "
        "print('HEAVY', [m for m in ('aiohttp', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "--auth-token" in out.stdout
