"""``loom``: run, validate and convert workflows; inspect nodes and plugins.

Directory flags follow ComfyUI's names and meanings; each also reads a ``LOOM_*``
environment variable (see :mod:`loom.settings`). Plugins add sub-commands through the
``register_commands`` hook (``loom serve`` comes from loom-http).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from loom.errors import LoomError
from loom.memory.compute import DtypeChoice
from loom.plugins import PluginHost
from loom.settings import Settings


class LoomGroup(click.Group):
    """The root group; keeps the plugin host so commands share it.

    Its options (directories, memory, cache, plugins) may also be typed after the
    sub-command, where people put them (``loom run wf.json --output-directory out``): they
    are moved in front of it before parsing.
    """

    host: PluginHost | None = None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._group_options_first(ctx, args))

    def _group_options_first(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes_value[name] = not (param.is_flag or param.count)
        before: list[str] = []
        after: list[str] = []
        i = 0
        seen_command = False
        while i < len(args):
            arg = args[i]
            if arg == "--":
                after.extend(args[i:])
                break
            name = arg.split("=", 1)[0]
            if not seen_command and not arg.startswith("-"):
                seen_command = True
                after.append(arg)
            elif seen_command and name in takes_value and name not in ("--help", "--version"):
                needs_value = takes_value[name] and "=" not in arg
                before.extend(args[i : i + 1 + needs_value])
                i += needs_value
            elif seen_command:
                after.append(arg)
            else:
                before.append(arg)
                if (
                    name in takes_value
                    and takes_value[name]
                    and "=" not in arg
                    and i + 1 < len(args)
                ):
                    before.append(args[i + 1])
                    i += 1
            i += 1
        return before + after


@click.group(cls=LoomGroup)
@click.option(
    "--base-directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LOOM_BASE_DIRECTORY",
    help="Holds models/, input/, output/, temp/, user/, custom_nodes/ (default: current directory).",
)
@click.option(
    "--output-directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LOOM_OUTPUT_DIRECTORY",
    help="Where SaveImage and other output nodes write (default: BASE/output).",
)
@click.option(
    "--input-directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LOOM_INPUT_DIRECTORY",
    help="Where LoadImage reads and uploads go (default: BASE/input).",
)
@click.option(
    "--temp-directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LOOM_TEMP_DIRECTORY",
    help="Temp files go in DIR/temp, as in ComfyUI.",
)
@click.option(
    "--user-directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LOOM_USER_DIRECTORY",
    help="Per-user data: saved workflows and settings (default: BASE/user).",
)
@click.option(
    "--extra-model-paths-config",
    "extra_model_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An extra_model_paths.yaml (ComfyUI layout); repeatable. Env: LOOM_EXTRA_MODEL_PATHS_CONFIG.",
)
@click.option(
    "--disable-plugin", "disabled", multiple=True, help="Do not load this plugin (repeatable)."
)
@click.option(
    "--cache",
    "cache_policy",
    type=click.Choice(["classic", "lru", "ram", "none"]),
    default=None,
    help="Output caching policy between prompts (ComfyUI's --cache-* flags).",
)
@click.option(
    "--cache-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Entries the lru policy keeps (ComfyUI's --cache-lru N); default 100.",
)
@click.option(
    "--cache-ram-headroom",
    "cache_ram_headroom_gb",
    type=float,
    default=None,
    metavar="GB",
    help="Free RAM the ram policy keeps (ComfyUI's --cache-ram GB); default 4.",
)
@click.option(
    "--disable-metadata",
    is_flag=True,
    default=False,
    help="Do not write the prompt/workflow into PNGs.",
)
@click.option(
    "--cpu",
    "cpu_only",
    is_flag=True,
    default=None,
    help="Compute on the CPU even when a GPU is present.",
)
@click.option(
    "--lowvram",
    "vram_mode",
    flag_value="low",
    default=None,
    help="Keep at most half the budget per model resident.",
)
@click.option(
    "--highvram",
    "vram_mode",
    flag_value="high",
    help="Never stream weights: keep whole models on the device.",
)
@click.option(
    "--reserve-vram",
    "reserve_vram_gb",
    type=float,
    default=None,
    metavar="GB",
    help="Device memory to leave free for other programs.",
)
@click.option(
    "--vram-budget",
    "vram_budget_gb",
    type=float,
    default=None,
    metavar="GB",
    help="Use at most this much device memory (on a CPU-only machine: simulate a device of this size).",
)
@click.option(
    "--compute-dtype",
    type=click.Choice([c.value for c in DtypeChoice if c is not DtypeChoice.DEVICE_DEFAULT]),
    default=None,
    callback=lambda _ctx, _param, value: DtypeChoice.parse(value) if value else None,
    help="Compute dtype of model layers (default: bf16/fp16 on GPUs, fp32 on the CPU; "
    "auto: also bf16 on CPUs with bf16 instructions, about 2.5x faster there).",
)
@click.option(
    "--queue",
    "queue_url",
    default=None,
    metavar="URL",
    help="Share a prompt queue between processes (redis://... with loom-redis). Env: LOOM_QUEUE_URL.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="loom-core", prog_name="loom")
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: int,
    disabled: Sequence[str],
    reserve_vram_gb: float | None,
    vram_budget_gb: float | None,
    **options: object,
) -> None:
    """Loom runs ComfyUI workflows: a node-graph engine for diffusion models."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    gib = 1024**3
    settings = Settings.from_env(
        disabled_plugins=set(disabled) or None,
        reserved_bytes=int(reserve_vram_gb * gib) if reserve_vram_gb is not None else None,
        vram_budget_bytes=int(vram_budget_gb * gib) if vram_budget_gb is not None else None,
        **options,
    )
    ctx.obj = _RuntimeFactory(settings, LoomGroup.host)


class _RuntimeFactory:
    """Builds the runtime on first use, so `loom --help` never loads models or nodes."""

    def __init__(self, settings: Settings, host: PluginHost | None) -> None:
        self.settings = settings
        self.host = host
        self._runtime = None

    def runtime(self):
        if self._runtime is None:
            from loom.runtime import Runtime

            if self.settings.tune_host_allocator:
                # The command line owns its process, so it may change malloc's policy (an
                # application embedding Runtime decides for itself). Before any worker thread
                # exists: glibc applies the arena limit to new arenas only.
                from loom.memory.allocator import configure_host_allocator

                configure_host_allocator()

            self._runtime = Runtime(self.settings, host=self.host)
        return self._runtime


def _preparse_disabled(argv: Sequence[str]) -> set[str]:
    disabled = set()
    for i, arg in enumerate(argv):
        if arg == "--disable-plugin" and i + 1 < len(argv):
            disabled.add(argv[i + 1])
        elif arg.startswith("--disable-plugin="):
            disabled.add(arg.split("=", 1)[1])
    return disabled


def add_plugin_commands(host: PluginHost, group: click.Group) -> None:
    """Let every plugin add its sub-commands (``register_commands``), one call per plugin:
    one plugin's broken command must not hide the others'."""

    def failed(plugin: str, exc: Exception) -> None:
        click.echo(
            f"warning: plugin {plugin} failed to add its commands: {type(exc).__name__}: {exc}",
            err=True,
        )

    host.call_each("register_commands", lambda _plugin: {"cli": group}, failed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loom`` script."""
    from loom.cli import commands

    args = list(sys.argv[1:] if argv is None else argv)
    host = PluginHost(disabled=_preparse_disabled(args))
    host.load()
    LoomGroup.host = host
    commands.add_core_commands(cli)
    add_plugin_commands(host, cli)
    try:
        result = cli.main(args=args, prog_name="loom", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (
        LoomError
    ) as exc:  # e.g. an unreadable extra_model_paths.yaml: a message, not a traceback
        click.ClickException(str(exc)).show()
        return 1
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("interrupted", err=True)
            return 130
        click.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
