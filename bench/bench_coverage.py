"""Node coverage against ComfyUI 0.8, as a number (issue 16, "A coverage report").

Compares the node types every installed Loom plugin registers with a reference: by default
``bench/comfyui_0_8_nodes.json``, or a real ``/object_info`` dump given as the first argument
(``loom nodes --compare FILE`` prints the same comparison for either).

How ``comfyui_0_8_nodes.json`` was made (no ComfyUI 0.8 can run here, and no copy of its
tagged tree is stored in the source index): a list of facts (node id -> category,
python_module, whether ComfyUI declares it with the V3 schema ``io.Schema``, and an
``excluded`` reason for nodes outside SD1.5/SDXL/Flux image work). Read from stored
source: ``nodes.py``'s NODE_CLASS_MAPPINGS (63 classic nodes) and the
``init_builtin_extra_nodes`` module list of ComfyUI v0.7.0 (the stored snapshot
``yangchuangfu11/ComfyUI_v0.7.0``, nodes.py at 08c927b8; its fork-only ``KSamplerBoolean``
left out), and the V3 form from ``comfy_api/latest/_io.py`` at 09d11ab9 of that snapshot.
The node ids, categories and V3 status of the comfy_extras modules were written from the
author's knowledge of ComfyUI's sources, checked against every id, category and
python_module Loom registers (all 155 match) and, for the ``v3`` flag of every module Loom
implements nodes of, against the stored source: nodes_custom_sampler, nodes_primitive and
nodes_upscale_model read at v0.7.0; an ``io.Schema(node_id=...)`` definition found in the
index for a node of nodes_mask, _images, _latent, _post_processing, _compositing,
_rebatch, _canny, _string, _logic, _clip_sdxl, _flux, _sd3, _controlnet,
_differential_diffusion, _edit_model and _ip2p; none for PreviewAny or the
nodes_model_advanced nodes, which stay classic. The ``v3`` flag of modules Loom has no node
of, and entries for nodes Loom lacks, are an estimate. Not listed: API nodes (comfy_api_nodes),
dev-only test nodes, the ids of nodes_dataset, nodes_lt_audio and nodes_nop, and any module
0.8.0 added after 0.7.0. Checked again node by node when every Loom node's interface was
recorded (``bench/comfyui_0_8_io``): categories of AddNoise and SamplerEulerCFGpp
(``_for_testing``) and ConditioningTimestepsRange, the ``Epsilon Scaling`` id, the module
of ImageOnlyCheckpointSave (nodes_video_model) and the classic form of nodes_model_patch
corrected from stored source; BatchImagesNode / BatchMasksNode / BatchLatentsNode's
categories (image, mask, latent; were image/batch, ...) corrected from stored source
(bench/comfyui_0_8_io/image.json); TemporalScoreRescaling (nodes_eps) added; ``SaveLoRA``'s id
and the removal of Load3DAnimation / Preview3DAnimation (the frontend renames both on load)
from the English node data of comfyui-frontend-package 1.35.9, ComfyUI 0.8's pin. A real
0.8 ``/object_info`` dump replaces all of it: pass it as the argument.

Prints: the headline over the categories the issue names, in-scope / all covered per
category, the missing node types (in scope: not built yet) and the out-of-scope ones by
reason, and whether every Loom node that is V3 in the reference is flagged ``v3`` (served
in ComfyUI's V3 form by /object_info).

Run: ``python bench/bench_coverage.py [OBJECT_INFO.json]``.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from loom.nodes.coverage import CoverageReport, compare_object_info
from loom.testing import make_registry

DEFAULT_REFERENCE = Path(__file__).with_name("comfyui_0_8_nodes.json")
#: The categories issue 16 aims to cover completely (for SD1.5 / SDXL / Flux).
HEADLINE_CATEGORIES = ("image", "latent", "mask", "conditioning", "sampling", "loaders", "advanced")


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def report_markdown(report: CoverageReport, reference: dict[str, Any], v3_flags: dict) -> str:
    have, total = report.in_scope(HEADLINE_CATEGORIES)
    all_have, all_total = report.in_scope()
    lines = [
        f"Headline ({', '.join(HEADLINE_CATEGORIES)}; SD1.5/SDXL/Flux nodes only): "
        f"**{have} of {total} ({_percent(have, total)})**.",
        f"All categories, in scope: {all_have} of {all_total} ({_percent(all_have, all_total)}); "
        f"every node type: {report.total - report.missing} of {report.total}; "
        f"{len(report.reasons)} left out of scope.",
        "",
        "| category | in scope: have / total | all: have / total |",
        "|---|---|---|",
    ]
    for entry in report.categories:
        scope_have = entry.scope_total - len(entry.scope_missing)
        lines.append(
            f"| {entry.category} | {scope_have} / {entry.scope_total} "
            f"| {entry.present} / {entry.total} |"
        )
    lines += ["", "Missing, in scope (not built yet):", ""]
    missing = [entry for entry in report.categories if entry.scope_missing]
    for entry in missing:
        lines.append(f"- {entry.category}: " + ", ".join(f"`{n}`" for n in entry.scope_missing))
    if not missing:
        lines.append("- none")
    by_reason: dict[str, list[str]] = {}
    for class_type, reason in sorted(report.reasons.items()):
        by_reason.setdefault(reason, []).append(class_type)
    lines += ["", "Left out of scope, by reason:", ""]
    for reason, names in sorted(by_reason.items()):
        lines.append(f"- {reason} ({len(names)}): " + ", ".join(f"`{n}`" for n in names))
    v3_in_reference = {n for n, e in reference.items() if e.get("v3") and n in v3_flags}
    flagged = {n for n, flag in v3_flags.items() if flag}
    lines += [
        "",
        f"V3 form: {len(v3_in_reference)} of Loom's nodes are V3-schema nodes in the reference; "
        f"{len(flagged & v3_in_reference)} of them are flagged `v3` "
        f"(unflagged: {sorted(v3_in_reference - flagged) or 'none'}; "
        f"flagged but classic in the reference: {sorted(flagged - v3_in_reference) or 'none'}).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_REFERENCE
    reference = json.loads(path.read_text())
    plugins = sorted({entry.name for entry in metadata.entry_points(group="loom")})
    registry = make_registry(*plugins)
    report = compare_object_info(reference, registry.nodes)
    v3_flags = {name: definition.v3 for name, definition in registry.nodes.items()}
    print(f"reference: {path.name} ({len(reference)} node types); Loom plugins: {len(plugins)}")
    print()
    print(report_markdown(report, reference, v3_flags))
    if report.extra:
        print(f"\nLoom-only node types: {', '.join(report.extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
