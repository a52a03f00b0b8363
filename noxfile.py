"""Test, lint and benchmark sessions. ``nox -l`` lists them; ``nox`` runs the defaults.

Every session that imports torch installs the pinned CPU-compatible build first
(``torch==2.13.0``), so installing core or a plugin afterwards never pulls another build.
Plugins and the Loom plugins each declares are read from ``plugins/*/pyproject.toml`` by
``.ci/packages.py`` when this file loads (as ``.ci/run`` reads them), so a plugin that does
not exist yet is simply not a session. ``.ci/run`` runs the same checks as ``lint``,
``tests``, ``core``, ``package`` and ``example``, in light venvs that share one set of
third-party packages.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent


def _load_packages():
    spec = importlib.util.spec_from_file_location("loom_ci_packages", ROOT / ".ci" / "packages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


packages = _load_packages()
TORCH = packages.TORCH
#: Each plugin folder and the sibling plugins it declares, transitively (dependencies
#: first); installed editable from this repo, never from PyPI.
LOOM_DEPS: dict[str, list[str]] = packages.plugins()
PLUGINS = sorted(LOOM_DEPS)
EXAMPLE_PLUGIN = packages.EXAMPLE

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "core", "package", "example", "e2e"]


def _editable(*paths: str) -> list[str]:
    return [arg for path in paths for arg in ("-e", path)]


def _plugin_paths(plugins: list[str]) -> list[str]:
    return [f"plugins/{p}[test]" for p in plugins]


#: Test-only parity references installed without their dependencies (k-diffusion would pull
#: torchvision, which has no CPU build here, and a CUDA torch with it).
NO_DEPS_REFERENCES = ["k-diffusion==0.1.1.post1"]
#: Runtime requirements packages list under ``[tool.loom] no-deps-requirements`` (spandrel,
#: whose torchvision requirement would pull a torch build of its own).
NO_DEPS_REQUIREMENTS = packages.no_deps_requirements()


def _install(session: nox.Session, *editable: str) -> None:
    """torch first, then core with its test extra, then the given editable paths."""
    session.install(TORCH)
    session.install(*_editable(".[test]", *editable))
    session.install("--no-deps", *NO_DEPS_REFERENCES, *NO_DEPS_REQUIREMENTS)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, pinned in the root ``lint`` extra: the rules and the formatting."""
    session.install(*_extra_requirements("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _extra_requirements(extra: str) -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return packages.tomllib.load(file)["project"]["optional-dependencies"][extra]


@nox.session
def tests(session: nox.Session) -> None:
    """Everything installed, the whole tests/ tree: what .ci/run does."""
    _install(session, *_plugin_paths(PLUGINS))
    session.run("python", "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    """Core alone: tests/core must not need any plugin."""
    _install(session)
    session.run("python", "-m", "pytest", "tests/core", *session.posargs)


if PLUGINS:

    @nox.session
    @nox.parametrize("plugin", PLUGINS)
    def package(session: nox.Session, plugin: str) -> None:
        """Core + one plugin + its Loom deps: hidden cross-plugin imports fail here."""
        tests = next(
            (
                t
                for t in (f"tests/{plugin}", f"tests/{plugin.replace('-', '_')}")
                if (ROOT / t).is_dir()
            ),
            None,
        )
        if tests is None:
            session.error(f"tests/{plugin} does not exist: every plugin needs its own tests")
        _install(session, *_plugin_paths([*LOOM_DEPS.get(plugin, []), plugin]))
        session.run("python", "-m", "pytest", tests, *session.posargs)

else:

    @nox.session
    def package(session: nox.Session) -> None:
        session.skip("no plugins/*/pyproject.toml yet")


@nox.session
def example(session: nox.Session) -> None:
    """The example plugin's own tests, with core and only that plugin installed."""
    _install(session, EXAMPLE_PLUGIN + "[test]")
    session.run("python", "-m", "pytest", f"{EXAMPLE_PLUGIN}/tests", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Every plugin installed: entry-point discovery and whole CPU graphs."""
    _install(session, *_plugin_paths(PLUGINS))
    if not any((ROOT / "tests" / "e2e").glob("test_*.py")):
        session.skip("tests/e2e has no tests yet")
    session.run("python", "-m", "pytest", "tests/e2e", *session.posargs)


@nox.session
def templates(session: nox.Session) -> None:
    """Every vendored ComfyUI template on tiny models, the large ones too (about half an
    hour on a 2-core CPU; the default suite runs the small ones)."""
    _install(session, *_plugin_paths(PLUGINS))
    session.run(
        "python", "-m", "pytest", "tests/e2e/test_comfyui_templates.py", *session.posargs,
        env={"LOOM_TEST_ALL_TEMPLATES": "1"},
    )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Run every bench/bench_*.py and write their results to bench/README.md (bench/run_all.py)."""
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    if not scripts:
        session.skip("no bench/bench_*.py scripts")
    _install(session, *_plugin_paths(PLUGINS))
    session.run("python", "bench/run_all.py", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the loom package (not a default session while the tree is young)."""
    _install(session)
    session.install("mypy", "types-PyYAML", "types-psutil")
    session.run("mypy", "-p", "loom", "--ignore-missing-imports", *session.posargs)


#: Frontend versions the browser check runs against: the one ComfyUI 0.8 pins, and the newest
#: 1.58.x on PyPI (`pip index versions comfyui-frontend-package`).
FRONTENDS = ["1.35.9", "1.58.1"]
BROWSER_TESTS = ROOT / "plugins" / "http" / "browser-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(session: nox.Session, server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            session.error(f"loom serve exited with status {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/system_stats", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    session.error(
        f"loom serve did not answer {url}/api/system_stats within 60 s:\n{log.read_text()}"
    )


def _browser_tools(session: nox.Session) -> str:
    """The Chromium binary to drive (the session is skipped without it or node/npm)."""
    chromium = os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        session.skip(f"{chromium} not found: `apt-get install chromium` (or set LOOM_CHROMIUM)")
    if not shutil.which("npm") or not shutil.which("node"):
        session.skip("node/npm not found: `apt-get install nodejs npm` (node >= 20)")
    return chromium


@contextlib.contextmanager
def _loom_serve(session: nox.Session, base: str, log: Path) -> Iterator[str]:
    """`loom serve` from the session's venv on a free port; yields its URL, stops it after."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [
                str(Path(session.bin) / "loom"),
                "--base-directory",
                base,
                "serve",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(session, server, url, log)
            session.log(f"loom serve (pid {server.pid}) ready at {url}; log: {log}")
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@nox.session
@nox.parametrize("frontend", FRONTENDS)
def browser(session: nox.Session, frontend: str) -> None:
    """The ComfyUI web frontend in headless Chromium against a real `loom serve`.

    Boots the frontend, queues a model-free prompt through it and checks the output image is
    displayed (plugins/http/browser-tests/boot.mjs). Needs Debian's chromium and node/npm;
    leaves a screenshot and the server log in plugins/http/browser-tests/artifacts/.
    Not a default session.
    """
    chromium = _browser_tools(session)
    session.install(TORCH)
    session.install(*_editable(".", "plugins/http"), f"comfyui-frontend-package=={frontend}")
    session.chdir(BROWSER_TESTS)
    session.run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", external=True)

    artifacts = BROWSER_TESTS / "artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / f"frontend-{frontend}.png"
    screenshot.unlink(missing_ok=True)
    log = artifacts / f"serve-{frontend}.log"
    with (
        tempfile.TemporaryDirectory(prefix="loom-browser-") as base,
        _loom_serve(session, base, log) as url,
    ):
        session.run(
            "node",
            "boot.mjs",
            url,
            str(screenshot),
            external=True,
            env={"LOOM_CHROMIUM": chromium, "LOOM_EXPECT_FRONTEND": frontend},
        )
    session.log(f"screenshot: {screenshot}")


#: Where the widget records tests/e2e/test_frontend_widgets.py checks the converter against live.
WIDGETS_FIXTURES = ROOT / "tests" / "e2e" / "data"


@nox.session
@nox.parametrize("frontend", FRONTENDS)
def widgets(session: nox.Session, frontend: str) -> None:
    """Record every node's widgets as the real frontend saves and sends them.

    With every plugin installed, `loom serve` (model folders seeded with placeholder names)
    and plugins/http/browser-tests/widgets.mjs create one node of each type in the frontend,
    set distinct widget values, and write the saved UI workflow and `graphToPrompt`'s API
    prompt to tests/e2e/data/frontend_<version>_widgets.json. Not a default session.
    """
    chromium = _browser_tools(session)
    _install(session, *(f"plugins/{plugin}" for plugin in PLUGINS))  # no test extras needed
    session.install(f"comfyui-frontend-package=={frontend}")
    session.chdir(BROWSER_TESTS)
    session.run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", external=True)

    artifacts = BROWSER_TESTS / "artifacts"
    artifacts.mkdir(exist_ok=True)
    output = WIDGETS_FIXTURES / f"frontend_{frontend.replace('.', '_')}_widgets.json"
    log = artifacts / f"serve-widgets-{frontend}.log"
    with tempfile.TemporaryDirectory(prefix="loom-widgets-") as base:
        session.run("python", "seed_base.py", base)
        with _loom_serve(session, base, log) as url:
            session.run(
                "node",
                "widgets.mjs",
                url,
                str(output),
                external=True,
                env={"LOOM_CHROMIUM": chromium, "LOOM_EXPECT_FRONTEND": frontend},
            )
    session.log(f"widget record: {output}")
