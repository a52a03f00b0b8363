"""Test, lint and benchmark sessions. ``nox -l`` lists them; ``nox`` runs the defaults.

Every session that imports torch installs the pinned CPU-compatible build first
(``torch==2.13.0``), so installing core or a plugin afterwards never pulls another build.
Plugins are discovered from ``plugins/*/pyproject.toml`` when this file loads, so a plugin
that does not exist yet is simply not a session.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"

PLUGINS = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))
#: Sibling plugins a plugin declares; installed editable from this repo, never from PyPI.
LOOM_DEPS: dict[str, list[str]] = {"sdxl": ["sd15"]}
EXAMPLE_PLUGIN = "examples/loom-example-plugin"

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


def _install(session: nox.Session, *editable: str) -> None:
    """torch first, then core with its test extra, then the given editable paths."""
    session.install(TORCH)
    session.install(*_editable(".[test]", *editable))
    session.install("--no-deps", *NO_DEPS_REFERENCES)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    # Not yet `ruff format --check .`: the tree has not been formatted in one go, and
    # formatting other people's files in passing would bury real changes in diffs.


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
        if not (ROOT / "tests" / plugin).is_dir():
            session.error(f"tests/{plugin} does not exist: every plugin needs its own tests")
        _install(session, *_plugin_paths([*LOOM_DEPS.get(plugin, []), plugin]))
        session.run("python", "-m", "pytest", f"tests/{plugin}", *session.posargs)

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
