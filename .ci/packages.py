"""Loom's packages and what each needs installed, read from the pyproject files.

Shared by ``.ci/run`` and ``noxfile.py`` so both find every plugin (``plugins/*/``, new ones
included) and its Loom dependencies the same way. Standard library only: it runs before
any virtual environment exists.

    python3 .ci/packages.py plugins        # one line per plugin: FOLDER [LOOM_DEP_FOLDER ...]
    python3 .ci/packages.py requirements   # third-party requirements, one per line
    python3 .ci/packages.py distributions  # every Loom distribution name
    python3 .ci/packages.py no-deps        # requirements to install with `pip install --no-deps`
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = "examples/loom-example-plugin"
#: Installed first and pinned, so no later install swaps in another torch build.
TORCH = "torch==2.13.0"
#: Optional-dependency groups whose requirements CI installs besides the dependencies.
EXTRAS = ("test", "lint")


def _pyproject(folder: Path) -> dict:
    with (folder / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _project(folder: Path) -> dict:
    return _pyproject(folder)["project"]


def _name(requirement: str) -> str:
    """The normalised distribution name a requirement string starts with."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def package_folders(root: Path = ROOT) -> dict[str, str]:
    """Every Loom distribution (normalised name) and its folder relative to ``root``."""
    folders = {"": root, EXAMPLE: root / EXAMPLE}
    folders |= {
        path.parent.relative_to(root).as_posix(): path.parent
        for path in sorted(root.glob("plugins/*/pyproject.toml"))
    }
    return {_name(_project(path)["name"]): folder or "." for folder, path in folders.items()}


def _installed_with_tests(project: dict) -> list[str]:
    """A package's dependencies and its ``test`` extra (CI installs ``package[test]``)."""
    return [
        *project.get("dependencies", []),
        *project.get("optional-dependencies", {}).get("test", []),
    ]


def plugins(root: Path = ROOT) -> dict[str, list[str]]:
    """Each plugin folder name and the plugin folder names it needs, dependencies first.

    A Loom plugin named in a plugin's ``test`` extra counts (loom-redis's tests drive
    ``loom serve`` from loom-http), as CI installs every package with that extra.
    """
    folders = package_folders(root)
    names = {folder: name for name, folder in folders.items() if folder.startswith("plugins/")}
    direct = {
        folder.removeprefix("plugins/"): [
            folders[dep].removeprefix("plugins/")
            for dep in map(_name, _installed_with_tests(_project(root / folder)))
            if dep in folders and folders[dep].startswith("plugins/")
        ]
        for folder in names
    }
    ordered: dict[str, list[str]] = {}
    for plugin in sorted(direct):
        needed: list[str] = []
        stack = [(plugin, iter(direct[plugin]))]
        seen = {plugin}
        while stack:
            current, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                if current != plugin:
                    needed.append(current)
            elif dep not in seen:
                seen.add(dep)
                stack.append((dep, iter(direct.get(dep, []))))
        ordered[plugin] = needed
    return ordered


def no_deps_requirements(root: Path = ROOT) -> list[str]:
    """Requirements a package lists under ``[tool.loom] no-deps-requirements``: installed with
    ``pip install --no-deps``, because their declared dependencies must not come along
    (spandrel's torchvision would pull a torch build of its own)."""
    found: list[str] = []
    for folder in package_folders(root).values():
        tool = _pyproject(root / folder).get("tool", {}).get("loom", {})
        for requirement in tool.get("no-deps-requirements", []):
            if requirement not in found:
                found.append(requirement)
    return found


def requirements(root: Path = ROOT) -> list[str]:
    """Third-party requirements (dependencies and :data:`EXTRAS`) of every Loom package,
    without torch and without the :func:`no_deps_requirements` (never a plain requirement)."""
    folders = package_folders(root)
    no_deps = {_name(r) for r in no_deps_requirements(root)}
    found: list[str] = []
    for folder in folders.values():
        project = _project(root / folder)
        extras = project.get("optional-dependencies", {})
        for requirement in [
            *project.get("dependencies", []),
            *(r for extra in EXTRAS for r in extras.get(extra, [])),
        ]:
            name = _name(requirement)
            if name not in folders and name != "torch" and name not in no_deps:
                if requirement not in found:
                    found.append(requirement)
    return found


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "plugins":
        for plugin, deps in plugins().items():
            print(" ".join([plugin, *deps]))
    elif command == "requirements":
        print("\n".join(requirements()))
    elif command == "distributions":
        print("\n".join(package_folders()))
    elif command == "no-deps":
        print("\n".join(no_deps_requirements()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
