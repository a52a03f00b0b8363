"""The rejection of a prompt (or UI workflow) naming node types no plugin registered, with
hints: which of Loom's plugins provides a type, ``did you mean`` for a typo, or the custom
node pack a UI workflow says a node came from."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from loom.errors import PromptValidationError
from loom.executor.value_checks import error

if TYPE_CHECKING:
    from loom.registry import Registry


def unknown_node_types_error(
    class_types: Mapping[str, Any],
    registry: Registry,
    packs: Mapping[str, str] | None = None,
) -> PromptValidationError | None:
    """Every node (id -> class_type) whose type no plugin registered, as one rejection.

    One unknown type gets ComfyUI's exact wording; several are listed together. Where one of
    Loom's own plugins provides a type, ``extra_info.hint`` says which and how to get it;
    ``packs`` (class_type -> custom node pack, which a UI workflow records per node) names
    the pack to install. Used for API prompts and for UI workflows before conversion, so
    both read the same.
    """
    from loom.node_catalogue import provider_hint

    unknown = {
        node_id: class_type
        for node_id, class_type in class_types.items()
        if not isinstance(class_type, str) or registry.get_node(class_type) is None
    }
    if not unknown:
        return None
    types = list(dict.fromkeys(str(t) for t in unknown.values()))
    if len(types) == 1:
        message = f"Cannot execute because node {types[0]} does not exist."
    else:
        message = f"Cannot execute because nodes {', '.join(types)} do not exist."
    details = ", ".join(f"Node ID '#{node_id}'" for node_id in unknown)
    extra: dict[str, Any] = {}
    hints = [h for h in (provider_hint(types), _spelling_hint(types, registry, packs or {})) if h]
    if hints:
        extra["hint"] = "; ".join(hints)
    return PromptValidationError(error("invalid_prompt", message, details, **extra), {})


def _spelling_hint(
    types: Iterable[str], registry: Registry, packs: Mapping[str, str]
) -> str | None:
    """The pack a UI workflow says a type came from; else ``did you mean`` for a type that
    differs from a registered one by a typo or case; the others are likely a custom node
    pack's, which says where packs go."""
    from loom.node_catalogue import providers

    by_folded = {name.casefold(): name for name in registry.nodes}
    known = providers()
    guesses = []
    strangers = []
    for class_type in types:
        if class_type in known:  # a known plugin's node: provider_hint says what to do
            continue
        if class_type in packs:
            guesses.append(
                f"{class_type}: from the custom node pack {packs[class_type]}; "
                "put it in custom_nodes/"
            )
            continue
        close = difflib.get_close_matches(class_type.casefold(), by_folded, n=1, cutoff=0.8)
        if close:
            guesses.append(f"{class_type}: did you mean {by_folded[close[0]]}?")
        else:
            strangers.append(class_type)
    if strangers:
        guesses.append(
            f"{', '.join(strangers)}: not a node of Loom's plugins; if a ComfyUI custom node "
            "pack provides it, put the pack in custom_nodes/ (`loom plugins` lists the loaded ones)"
        )
    return "; ".join(guesses) or None
