"""Node coverage against a ComfyUI ``/object_info`` dump: which of its node types Loom lacks.

``loom nodes --compare OBJECT_INFO.json`` prints :func:`format_coverage` of
:func:`compare_object_info`. Node types are grouped by the first segment of their
ComfyUI category (``image/upscaling`` counts under ``image``).

The reference is a real ``/object_info`` dump or a node list in the same shape
(``bench/comfyui_0_8_nodes.json``: ``{node id: {"category", "python_module", "v3"}}``).
A node is out of scope when the reference marks it an API node (``"api_node": true``) or
gives an ``"excluded"`` reason (video, audio, another model family...); coverage of the
nodes in scope is :meth:`CoverageReport.in_scope`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

UNCATEGORISED = "(none)"


@attrs.frozen
class CategoryCoverage:
    """One top-level category: how many of the reference's node types Loom registers."""

    category: str
    total: int
    missing: tuple[str, ...]
    #: The reference's node types of this category that are out of scope (API, video...).
    out_of_scope: tuple[str, ...] = ()

    @property
    def present(self) -> int:
        return self.total - len(self.missing)

    @property
    def scope_total(self) -> int:
        return self.total - len(self.out_of_scope)

    @property
    def scope_missing(self) -> tuple[str, ...]:
        skipped = set(self.out_of_scope)
        return tuple(m for m in self.missing if m not in skipped)


@attrs.frozen
class CoverageReport:
    """Coverage of a reference node set, per top-level category, sorted by category name."""

    categories: tuple[CategoryCoverage, ...]
    #: Node types Loom registers that the reference does not have.
    extra: tuple[str, ...]
    #: Why each out-of-scope node type of the reference is left out.
    reasons: dict[str, str] = attrs.field(factory=dict)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.categories)

    @property
    def missing(self) -> int:
        return sum(len(c.missing) for c in self.categories)

    def in_scope(self, categories: Iterable[str] | None = None) -> tuple[int, int]:
        """(present, total) over the in-scope node types of ``categories`` (all when None)."""
        wanted = None if categories is None else set(categories)
        chosen = [c for c in self.categories if wanted is None or c.category in wanted]
        total = sum(c.scope_total for c in chosen)
        return total - sum(len(c.scope_missing) for c in chosen), total


class ObjectInfoFormatError(ValueError):
    """The reference document is not shaped like ComfyUI's ``/object_info``."""


def top_category(entry: Any) -> str:
    category = entry.get("category") if isinstance(entry, Mapping) else None
    if not isinstance(category, str) or not category:
        return UNCATEGORISED
    return category.split("/", 1)[0]


def exclusion_reason(entry: Any) -> str | None:
    """Why a reference node type is out of scope, or None when it is in scope."""
    if not isinstance(entry, Mapping):
        return None
    if entry.get("api_node") is True:
        return "API node"
    reason = entry.get("excluded")
    return reason if isinstance(reason, str) and reason else None


def compare_object_info(reference: Any, registered: Iterable[str]) -> CoverageReport:
    """Compare a ``/object_info`` document (``{class_type: node_info}``) with Loom's node ids."""
    if not isinstance(reference, Mapping) or not all(
        isinstance(entry, Mapping) for entry in reference.values()
    ):
        raise ObjectInfoFormatError(
            "expected ComfyUI's /object_info: a JSON object mapping each node type to its info"
        )
    have = set(registered)
    grouped: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for class_type, entry in reference.items():
        grouped.setdefault(top_category(entry), []).append(class_type)
        reason = exclusion_reason(entry)
        if reason is not None:
            reasons[class_type] = reason
    categories = tuple(
        CategoryCoverage(
            category=name,
            total=len(members),
            missing=tuple(sorted(m for m in members if m not in have)),
            out_of_scope=tuple(sorted(m for m in members if m in reasons)),
        )
        for name, members in sorted(grouped.items())
    )
    return CoverageReport(
        categories=categories, extra=tuple(sorted(have - set(reference))), reasons=reasons
    )


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 100.0


def format_coverage(report: CoverageReport) -> str:
    """A table of counts per category, then the missing node types of each category.

    When the reference marks node types out of scope, the table gains in-scope columns,
    the summary an in-scope line, and each missing node type its reason (or "not built
    yet").
    """
    total, missing = report.total, report.missing
    scoped = bool(report.reasons)
    lines = [
        f"Loom has {total - missing} of the reference's {total} node types "
        f"({_percent(total - missing, total):.1f}%); {missing} missing.",
    ]
    header = f"{'category':24} {'have':>6} {'total':>6} {'missing':>8}"
    if scoped:
        have, in_scope = report.in_scope()
        lines.append(
            f"In scope ({len(report.reasons)} left out: API, video, audio, 3D, other model "
            f"families...): {have} of {in_scope} ({_percent(have, in_scope):.1f}%)."
        )
        header += f" {'scope have':>10} {'scope total':>11}"
    lines += ["", header]
    for entry in report.categories:
        row = f"{entry.category:24} {entry.present:6} {entry.total:6} {len(entry.missing):8}"
        if scoped:
            scope_have = entry.scope_total - len(entry.scope_missing)
            row += f" {scope_have:10} {entry.scope_total:11}"
        lines.append(row)
    for entry in report.categories:
        if entry.missing:
            lines += ["", f"missing in {entry.category} ({len(entry.missing)}):"]
            for class_type in entry.missing:
                reason = report.reasons.get(class_type, "not built yet") if scoped else None
                lines.append(f"  {class_type}" + (f"  ({reason})" if reason else ""))
    if report.extra:
        lines += ["", f"Loom-only node types ({len(report.extra)}): {', '.join(report.extra)}"]
    return "\n".join(lines)
