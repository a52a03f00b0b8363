"""Node coverage against a ComfyUI ``/object_info`` dump: which of its node types Loom lacks.

``loom nodes --compare OBJECT_INFO.json`` prints :func:`format_coverage` of
:func:`compare_object_info`. Node types are grouped by the first segment of their
ComfyUI category (``image/upscaling`` counts under ``image``).
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

    @property
    def present(self) -> int:
        return self.total - len(self.missing)


@attrs.frozen
class CoverageReport:
    """Coverage of a reference node set, per top-level category, sorted by category name."""

    categories: tuple[CategoryCoverage, ...]
    #: Node types Loom registers that the reference does not have.
    extra: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(c.total for c in self.categories)

    @property
    def missing(self) -> int:
        return sum(len(c.missing) for c in self.categories)


class ObjectInfoFormatError(ValueError):
    """The reference document is not shaped like ComfyUI's ``/object_info``."""


def top_category(entry: Any) -> str:
    category = entry.get("category") if isinstance(entry, Mapping) else None
    if not isinstance(category, str) or not category:
        return UNCATEGORISED
    return category.split("/", 1)[0]


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
    for class_type, entry in reference.items():
        grouped.setdefault(top_category(entry), []).append(class_type)
    categories = tuple(
        CategoryCoverage(
            category=name,
            total=len(members),
            missing=tuple(sorted(m for m in members if m not in have)),
        )
        for name, members in sorted(grouped.items())
    )
    return CoverageReport(categories=categories, extra=tuple(sorted(have - set(reference))))


def format_coverage(report: CoverageReport) -> str:
    """A table of counts per category, then the missing node types of each category."""
    total, missing = report.total, report.missing
    percent = 100.0 * (total - missing) / total if total else 100.0
    lines = [
        f"Loom has {total - missing} of the reference's {total} node types ({percent:.1f}%); "
        f"{missing} missing.",
        "",
        f"{'category':24} {'have':>6} {'total':>6} {'missing':>8}",
    ]
    for entry in report.categories:
        lines.append(
            f"{entry.category:24} {entry.present:6} {entry.total:6} {len(entry.missing):8}"
        )
    for entry in report.categories:
        if entry.missing:
            lines += ["", f"missing in {entry.category} ({len(entry.missing)}):"]
            lines += [f"  {class_type}" for class_type in entry.missing]
    if report.extra:
        lines += ["", f"Loom-only node types ({len(report.extra)}): {', '.join(report.extra)}"]
    return "\n".join(lines)
