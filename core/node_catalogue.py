"""Which of Loom's own plugin packages provides a node type: the hint for an unknown type.

A workflow saved elsewhere often uses nodes of a plugin the user has not installed (or has
disabled). ``node_catalogue.json`` lists, for each of Loom's first-party plugin
distributions, the node types it registers; ``tests/e2e/test_node_catalogue.py`` checks it
against the installed plugins, so it cannot drift. Only distributions that exist are listed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from loom.errors import install_command

CATALOGUE_FILE = Path(__file__).with_name("node_catalogue.json")


@functools.cache
def providers() -> dict[str, str]:
    """``class_type`` -> the distribution that provides it."""
    catalogue = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    return {node: dist for dist, nodes in catalogue.items() for node in nodes}


def provider_hint(class_types: Iterable[str]) -> str | None:
    """What to do about these unknown node types, where a known plugin provides them."""
    by_dist: dict[str, list[str]] = {}
    for class_type in class_types:
        dist = providers().get(class_type)
        if dist is not None:
            by_dist.setdefault(dist, []).append(class_type)
    if not by_dist:
        return None
    parts = []
    for dist, nodes in by_dist.items():
        if _installed(dist):
            parts.append(
                f"{', '.join(nodes)}: provided by {dist}, which is installed but not loaded "
                "(disabled, not in LOOM_PLUGINS, or failed to load: see `loom plugins`)"
            )
        else:
            parts.append(f"{', '.join(nodes)}: provided by {dist} ({install_command(dist)})")
    return "; ".join(parts)


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True
