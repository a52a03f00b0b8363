"""core/node_catalogue.json (the hint for unknown node types) matches the installed plugins."""

from __future__ import annotations

import json
from importlib import metadata

from loom.node_catalogue import CATALOGUE_FILE, provider_hint
from loom.plugins import PluginHost
from loom.registry import collect


def installed_catalogue() -> dict[str, list[str]]:
    """``{distribution: sorted node types}`` of every installed first-party plugin."""
    registry = collect(PluginHost(disabled=(), allow=None).load())
    dists = {ep.name: ep.dist.name for ep in metadata.entry_points(group="loom") if ep.dist}
    catalogue = {}
    for plugin, kinds in registry.by_plugin.items():
        dist = dists.get(plugin)
        if dist and dist.startswith("loom-") and kinds.get("node"):
            catalogue[dist] = sorted(kinds["node"])
    return dict(sorted(catalogue.items()))


def test_catalogue_lists_what_the_first_party_plugins_register():
    expected = installed_catalogue()
    shipped = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    assert shipped == expected, (
        f"{CATALOGUE_FILE} is stale; write this into it:\n{json.dumps(expected, indent=1)}"
    )


def test_hint_names_the_package_to_install_or_enable():
    assert provider_hint(["NoSuchNode"]) is None
    hint = provider_hint(["LoraLoader", "NoSuchNode"])
    assert hint is not None and hint.startswith("LoraLoader: provided by loom-lora")
