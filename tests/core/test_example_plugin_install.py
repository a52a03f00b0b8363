"""The example plugin, pip-installed for real, is found through its entry point."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "loom-example-plugin"

PROBE = textwrap.dedent("""
    import json
    from loom.plugins import PluginHost
    from loom.registry import collect

    host = PluginHost(builtins=(), allow={"example"}).load()
    registry = collect(host)
    node = registry.nodes.get("ExampleImageBrightness")
    print(json.dumps({
        "plugins": [[info.name, info.version] for info in host.infos],
        "failures": [str(failure) for failure in [*host.failures, *registry.failures]],
        "display_name": node.display_name if node else None,
        "owner": registry.owner.get(("node", "ExampleImageBrightness")),
    }))
""")


def _needs_build_tools() -> None:
    # find_spec, not import: importing setuptools here would patch distutils in this process.
    for name in ("pip", "setuptools"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")


@pytest.mark.slow
def test_example_plugin_installs_and_registers(tmp_path: Path) -> None:
    _needs_build_tools()
    # Build from a copy so the build leaves nothing (build/, *.egg-info) in the repository.
    source = tmp_path / "loom-example-plugin"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (target / "loom_example_plugin" / "plugin.py").is_file()

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("LOOM_PLUGINS", None)
    env.pop("LOOM_DISABLE_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["failures"] == []
    assert report["plugins"] == [["example", "0.1.0"]]
    assert report["display_name"] == "Image Brightness (example)"
    assert report["owner"] == "example"

    # The same through the command line, as a user would check it.
    env["LOOM_PLUGINS"] = "example"
    result = subprocess.run(
        [sys.executable, "-m", "loom.cli.main", "nodes", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)["ExampleImageBrightness"]
    assert info["python_module"] == "loom_example_plugin.nodes"
    assert info["display_name"] == "Image Brightness (example)"
