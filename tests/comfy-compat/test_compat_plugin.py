"""The plugin is installed and found through its entry point, and ComfyUI's module names
exist only once it is loaded: nothing of ours shadows ``nodes`` or ``server`` otherwise."""

from __future__ import annotations

import subprocess
import sys

from loom.plugins import PluginHost

PROBE = """
import importlib.util, sys
from loom.plugins import PluginHost
names = ["folder_paths", "nodes", "server", "comfy", "comfy_api", "comfy_execution",
         "node_helpers", "latent_preview"]
before = [importlib.util.find_spec(n) is not None for n in names]
PluginHost().load()
after = [importlib.util.find_spec(n) is not None for n in names]
print(before, after)
"""


def run_probe(plugins: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "LOOM_PLUGINS": plugins}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def test_plugin_is_installed() -> None:
    host = PluginHost().load()
    assert "comfy-compat" in [info.name for info in host.infos]
    assert not [f for f in host.failures if "comfy-compat" in str(f)]


def test_comfyui_module_names_exist_only_with_the_plugin_loaded() -> None:
    no, yes = str([False] * 8), str([True] * 8)
    assert run_probe("comfy-compat") == f"{no} {yes}"
    assert run_probe("http") == f"{no} {no}"
