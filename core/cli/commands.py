"""Core's sub-commands: run, validate, convert, nodes, plugins."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from loom.cli.progress import ModelLoadLines, ProgressDisplay
from loom.cli.report import execution_error_report, output_paths, validation_report
from loom.errors import LoomError, PromptValidationError


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise click.ClickException(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def load_prompt(runtime: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The API prompt in a file (a UI workflow is converted); also the workflow if it was one."""
    from loom.workflow import convert_workflow, is_ui_workflow

    data = _read_json(path)
    if is_ui_workflow(data):
        try:
            return convert_workflow(data, runtime.registry), data
        except PromptValidationError as exc:  # unknown node types: reported as for API prompts
            click.echo(validation_report(exc.error, exc.node_errors), err=True)
            raise click.exceptions.Exit(2) from exc
        except LoomError as exc:
            raise click.ClickException(f"{path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        return data["prompt"], None  # a saved /prompt request body
    if not isinstance(data, dict):
        raise click.ClickException(
            f"{path}: expected a workflow or API prompt object, got {type(data).__name__}"
        )
    return data, None


def apply_overrides(prompt: dict[str, Any], overrides: tuple[str, ...], registry: Any) -> None:
    """``NODE_ID.INPUT=VALUE``; VALUE is JSON when it parses, else a string.

    INPUT must be one of the node's declared inputs (a typo is an error listing them, not
    a silently ignored value); a node of an unknown type is left to validation.
    """
    for override in overrides:
        target, sep, raw = override.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise click.BadParameter(
                f"{override!r}: expected NODE_ID.INPUT=VALUE", param_hint="--set"
            )
        if node_id not in prompt:
            raise click.BadParameter(
                f"{override!r}: the prompt has no node {node_id!r}", param_hint="--set"
            )
        _check_input_name(prompt[node_id], node_id, name, registry)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node_id].setdefault("inputs", {})[name] = value


def _check_input_name(node: Any, node_id: str, name: str, registry: Any) -> None:
    class_type = node.get("class_type") if isinstance(node, dict) else None
    definition = registry.get_node(class_type) if isinstance(class_type, str) else None
    if definition is None:
        return
    sections = definition.input_types(registry)
    names = [n for section in ("required", "optional") for n in sections.get(section, {})]
    if name not in names:
        raise click.BadParameter(
            f"node {node_id} ({class_type}) has no input {name!r}; its inputs: "
            f"{', '.join(names) or 'none'}",
            param_hint="--set",
        )


def _validate(runtime: Any, prompt: dict[str, Any]) -> Any:
    try:
        return runtime.executor.validate(prompt)
    except PromptValidationError as exc:
        click.echo(validation_report(exc.error, exc.node_errors, prompt), err=True)
        raise click.exceptions.Exit(2) from exc


@contextlib.contextmanager
def interrupt_on_sigint(executor: Any) -> Iterator[None]:
    """Ctrl-C asks the running prompt to stop at its next node or step (a clean interrupt,
    exit 130); a second Ctrl-C stops at once. Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        click.echo("\ninterrupting (Ctrl-C again to stop at once)", err=True)
        executor.interrupt()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NODE_ID.INPUT=VALUE",
    help="Override an input (repeatable).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def run(factory: Any, workflow: Path, overrides: tuple[str, ...], quiet: bool) -> int:
    """Run WORKFLOW (API prompt or UI workflow JSON) and print the files it wrote."""
    runtime = factory.runtime()
    prompt, ui_workflow = load_prompt(runtime, workflow)
    apply_overrides(prompt, overrides, runtime.registry)
    validated = _validate(runtime, prompt)
    for node_id, entry in validated.node_errors.items():
        click.echo(
            f"warning: skipping output(s) {', '.join(entry['dependent_outputs'])}: node {node_id} is invalid",
            err=True,
        )
    extra = {"extra_pnginfo": {"workflow": ui_workflow}} if ui_workflow is not None else {}
    display = None
    if not quiet:
        display = ProgressDisplay(
            {
                nid: (n.get("_meta") or {}).get("title") or n["class_type"]
                for nid, n in validated.prompt.items()
            }
        )
    with (
        ModelLoadLines(display) if display else contextlib.nullcontext(),
        interrupt_on_sigint(runtime.executor),
    ):
        result = runtime.executor.execute(
            "cli", validated.prompt, validated.outputs, extra, on_event=display
        )
    if result.interrupted:
        click.echo("interrupted", err=True)
        return 130
    if result.error is not None:
        click.echo(execution_error_report(result.error), err=True)
        return 1
    settings = runtime.settings
    dirs = {"output": settings.output_dir, "temp": settings.temp_dir, "input": settings.input_dir}
    for path in output_paths(result.outputs, dirs):
        click.echo(str(path))
    return 0


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def validate(factory: Any, workflow: Path) -> int:
    """Check WORKFLOW without running it; exit 2 and list every problem if invalid."""
    runtime = factory.runtime()
    prompt, _ = load_prompt(runtime, workflow)
    validated = _validate(runtime, prompt)
    if validated.node_errors:
        click.echo(
            validation_report(
                {"message": "some outputs are invalid and would be skipped"},
                validated.node_errors,
                prompt,
            ),
            err=True,
        )
    click.echo(
        f"ok: {len(validated.outputs)} output node(s) would run: {', '.join(validated.outputs)}"
    )
    return 0


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--indent", default=2, show_default=True, help="JSON indentation; 0 prints one line.")
@click.pass_obj
def convert(factory: Any, workflow: Path, indent: int) -> None:
    """Print the API prompt a UI-format WORKFLOW converts to."""
    from loom.workflow import convert_workflow, is_ui_workflow

    runtime = factory.runtime()
    data = _read_json(workflow)
    if not is_ui_workflow(data):
        raise click.ClickException(
            f"{workflow} is not a UI-format workflow (no 'nodes' and 'links')"
        )
    try:
        prompt = convert_workflow(data, runtime.registry)
    except LoomError as exc:
        raise click.ClickException(f"{workflow}: {exc}") from exc
    click.echo(json.dumps(prompt, indent=indent or None))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the /object_info document.")
@click.option(
    "--compare",
    "reference",
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        "A ComfyUI /object_info JSON dump (or bench/comfyui_0_8_nodes.json): list which "
        "of its node types Loom lacks."
    ),
)
@click.pass_obj
def nodes(factory: Any, as_json: bool, reference: Path | None) -> None:
    """List the node types every loaded plugin registers."""
    from loom.nodes.object_info import object_info

    runtime = factory.runtime()
    registry = runtime.registry
    if reference is not None:
        click.echo(_coverage_text(_read_json(reference), registry.nodes, reference))
        return
    if as_json:
        click.echo(json.dumps(object_info(registry, runtime.environment)))
        return
    for class_type, definition in sorted(registry.nodes.items()):
        owner = registry.owner.get(("node", class_type), "?")
        click.echo(f"{class_type:40} {definition.category:30} [{owner}]")


def _coverage_text(reference: Any, registered: Any, path: Path) -> str:
    from loom.nodes.coverage import ObjectInfoFormatError, compare_object_info, format_coverage

    try:
        return format_coverage(compare_object_info(reference, registered))
    except ObjectInfoFormatError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


@click.command()
@click.pass_obj
def plugins(factory: Any) -> None:
    """List loaded plugins, their versions and what each registers; and failures."""
    runtime = factory.runtime()
    registry = runtime.registry
    for info in runtime.host.infos:
        kind = "built-in" if info.builtin else (info.version or "")
        added = registry.by_plugin.get(info.name, {})
        summary = (
            ", ".join(f"{len(v)} {k}{'s' if len(v) != 1 else ''}" for k, v in added.items())
            or "nothing"
        )
        click.echo(f"{info.name:24} {kind:12} {info.import_seconds * 1000:7.1f} ms  {summary}")
        for notes in runtime.host.hook.plugin_notes(plugin_name=info.name):
            for note in notes or ():
                click.echo(f"{'':24} {note}")
    for failure in [*runtime.host.failures, *registry.failures]:
        click.echo(f"FAILED  {failure}", err=True)


def add_core_commands(group: click.Group) -> None:
    for command in (run, validate, convert, nodes, plugins):
        if command.name not in group.commands:
            group.add_command(command)
