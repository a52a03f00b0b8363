"""``loom demo``: ComfyUI's default txt2img workflow on a tiny SD1.5-layout model.

Needs no model files and no network. The first run builds, under the base directory,
``models/tokenizers/loom-demo/`` (a small byte-level BPE vocabulary learnt in code from a
built-in word list, CLIP's file format) and ``models/checkpoints/loom-demo-tiny.safetensors``
(random weights in the real SD1.5 key layout, its metadata naming that tokenizer). Later runs
reuse both. The bundled UI workflow then runs through the whole stack (UI conversion,
validation, executor, loader detection, sampler, VAE, SaveImage) and the PNG path is printed.
The image is noise-like: the weights are random. Real models: put a checkpoint in
``models/checkpoints/`` and the CLIP-L tokenizer files in ``models/tokenizers/clip_l/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = "loom-demo-tiny.safetensors"
DEMO_TOKENIZER = "loom-demo"
START, END = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 300
DEMO_SIZE = 256
CORPUS = """
beautiful scenery nature glass bottle landscape purple galaxy bottle text watermark a photo
of the cat dog tree river mountain sky sunset city street portrait painting drawing house
forest ocean beach snow light dark blue red green yellow white black orange flower garden
woman man girl boy old young happy detailed high quality best lowres blurry bad ugly art
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def learn_bpe(words: list[str], merges: int) -> list[tuple[str, str]]:
    """Greedy byte-pair merges over ``words`` (ties broken alphabetically: deterministic)."""
    table = bytes_to_unicode()
    counts = Counter(words)
    vocab = {}
    for word, n in counts.items():
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        vocab[tuple(symbols)] = n
    learnt: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in vocab.items():
            for pair in pairwise(symbols):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        learnt.append(best)
        merged = {}
        for symbols, n in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = n
        vocab = merged
    return learnt


def write_demo_tokenizer(folder: Path) -> int:
    """Write vocab.json and merges.txt (CLIP's layout: bytes, bytes+</w>, merges, specials)."""
    chars = list(bytes_to_unicode().values())
    merges = learn_bpe(CORPUS, NUM_MERGES)
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [START, END]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(vocab)


def ensure_demo_files(
    models_dir: Path,
    name: str = DEMO_CHECKPOINT,
    write_checkpoint: Callable[..., Path] | None = None,
) -> Path:
    """Build the demo tokenizer and checkpoint ``name`` once; return the checkpoint path.

    ``write_checkpoint(path, seed=, vocab_size=, metadata=)`` writes the tiny checkpoint
    (loom-sd15's by default; another family's demo passes its own)."""
    from loom_sd15.family import TOKENIZER_METADATA
    from loom_sd15.tiny import write_tiny_checkpoint

    tokenizer_dir = models_dir / "tokenizers" / DEMO_TOKENIZER
    checkpoint = models_dir / "checkpoints" / name
    if not (tokenizer_dir / "vocab.json").is_file() or not (tokenizer_dir / "merges.txt").is_file():
        write_demo_tokenizer(tokenizer_dir)
    if not checkpoint.is_file():
        vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
        (write_checkpoint or write_tiny_checkpoint)(
            checkpoint, seed=0, vocab_size=len(vocab), metadata={TOKENIZER_METADATA: DEMO_TOKENIZER}
        )
    return checkpoint


def bundled_workflow(name: str = "txt2img.json") -> dict[str, Any]:
    """ComfyUI's default text-to-image workflow (UI format), shipped with this plugin."""
    text = resources.files("loom_sd15").joinpath("workflows", name).read_text(encoding="utf-8")
    return json.loads(text)


def set_widget(workflow: dict[str, Any], node_type: str, index: int, value: Any) -> None:
    for node in workflow["nodes"]:
        if node["type"] == node_type:
            node["widgets_values"][index] = value


def run_demo(runtime: Any, steps: int | None = None, *, progress: bool = False) -> list[Path]:
    """Build the demo files if needed, run the bundled workflow, return the written PNGs
    (``progress``: show model loads and sampling progress on stderr, as ``loom run`` does)."""
    return run_demo_workflow(
        runtime,
        bundled_workflow(),
        ensure_demo_files,
        DEMO_CHECKPOINT,
        "loom_demo",
        steps,
        progress=progress,
    )


def run_demo_workflow(
    runtime: Any,
    workflow: dict[str, Any],
    ensure_files: Callable[[Path], Path],
    checkpoint: str,
    prefix: str,
    steps: int | None = None,
    *,
    progress: bool = False,
) -> list[Path]:
    """Run a demo's UI-format ``workflow`` on its tiny ``checkpoint`` (built by
    ``ensure_files(models_dir)`` if needed) at 256x256; return the written PNGs.
    ``progress`` shows model loads and sampling progress on stderr."""
    from loom.errors import LoomError, PromptValidationError, install_command
    from loom.frontend import (
        ModelLoadLines,
        ProgressDisplay,
        convert_workflow,
        execution_error_report,
        output_paths,
        validation_report,
    )

    registry = runtime.registry
    if "KSampler" not in registry.nodes:
        raise LoomError(
            "loom demo needs the KSampler node, which loom-samplers provides",
            hint=install_command("loom-samplers"),
        )
    ensure_files(runtime.settings.models_dir)
    set_widget(workflow, "CheckpointLoaderSimple", 0, checkpoint)
    set_widget(workflow, "SaveImage", 0, prefix)
    set_widget(workflow, "EmptyLatentImage", 0, DEMO_SIZE)  # the toy models are fast at 256
    set_widget(workflow, "EmptyLatentImage", 1, DEMO_SIZE)
    if steps is not None:
        set_widget(workflow, "KSampler", 2, steps)
    prompt = convert_workflow(workflow, registry)
    try:
        validated = runtime.executor.validate(prompt)
    except PromptValidationError as exc:
        report = validation_report(exc.error, exc.node_errors, prompt)
        raise LoomError("the demo workflow is invalid:\n" + report) from exc
    extra = {"extra_pnginfo": {"workflow": workflow}}
    display = None
    if progress:
        display = ProgressDisplay(
            {
                nid: (node.get("_meta") or {}).get("title") or node["class_type"]
                for nid, node in validated.prompt.items()
            }
        )
    with ModelLoadLines(display) if display else contextlib.nullcontext():
        result = runtime.executor.execute(
            "demo", validated.prompt, validated.outputs, extra, on_event=display
        )
    if result.error is not None:
        raise LoomError("the demo workflow failed:\n" + execution_error_report(result.error))
    settings = runtime.settings
    dirs = {"output": settings.output_dir, "temp": settings.temp_dir, "input": settings.input_dir}
    return [Path(p) for p in output_paths(result.outputs, dirs)]


@click.command("demo")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Sampling steps (default: the workflow's 20).",
)
@click.pass_obj
def demo_command(factory: Any, steps: int | None) -> int:
    """Run ComfyUI's default txt2img workflow on a tiny built-in SD1.5-layout model."""
    from loom.errors import LoomError

    runtime = factory.runtime()
    try:
        paths = run_demo(runtime, steps, progress=True)
    except LoomError as exc:
        raise click.ClickException(
            f"{exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else "")
        ) from exc
    for path in paths:
        click.echo(str(path))
    return 0
