"""Runtime settings: directories, plugins, caching. Built from flags or environment.

Directory meanings follow ComfyUI's flags: ``--base-directory`` (default: the current
directory) holds ``models/``, ``input/``, ``output/``, ``temp/``, ``user/`` and
``custom_nodes/``; each can be moved on its own. Every setting also reads an environment
variable, so a ComfyUI user's layout works unchanged:

=============================  ==========================================
``LOOM_BASE_DIRECTORY``        base directory
``LOOM_OUTPUT_DIRECTORY``      output directory
``LOOM_INPUT_DIRECTORY``       input directory
``LOOM_TEMP_DIRECTORY``        parent of the ``temp`` directory (as ComfyUI)
``LOOM_USER_DIRECTORY``        user directory
``LOOM_EXTRA_MODEL_PATHS_CONFIG``  extra_model_paths.yaml files, ``os.pathsep``-separated
``LOOM_DISABLE_PLUGINS``       plugin names never to load (comma-separated)
``LOOM_QUEUE_URL``             a shared prompt queue (``redis://...`` with loom-redis)
=============================  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from loom.memory.compute import DtypeChoice

CACHE_POLICIES = ("classic", "lru", "ram", "none")


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


@attrs.frozen
class Settings:
    """Where things live and how the engine behaves; immutable once the runtime starts."""

    base_directory: Path = attrs.field(
        factory=Path.cwd, converter=lambda p: Path(p).expanduser().resolve()
    )
    output_directory: Path | None = attrs.field(default=None, converter=_path)
    input_directory: Path | None = attrs.field(default=None, converter=_path)
    temp_directory: Path | None = attrs.field(default=None, converter=_path)
    user_directory: Path | None = attrs.field(default=None, converter=_path)
    extra_model_paths: tuple[Path, ...] = attrs.field(
        default=(), converter=lambda paths: tuple(Path(p).expanduser().resolve() for p in paths)
    )
    disabled_plugins: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    cache_policy: str = attrs.field(
        default="classic", validator=attrs.validators.in_(CACHE_POLICIES)
    )
    cache_size: int = 100
    cache_ram_headroom_gb: float = 4.0
    disable_metadata: bool = False
    load_custom_nodes: bool = True
    # memory (loom.memory.MemoryManager.from_settings): --cpu, a VRAM budget (on a CPU-only
    # machine it simulates a device of that size), bytes kept free, low/normal/high VRAM
    # mode, and the compute dtype (text such as "bf16" is parsed once, here).
    cpu_only: bool = False
    vram_budget_bytes: int | None = None
    reserved_bytes: int = 0
    vram_mode: str = attrs.field(
        default="normal", validator=attrs.validators.in_(("low", "normal", "high"))
    )
    compute_dtype: DtypeChoice = attrs.field(
        default=DtypeChoice.DEVICE_DEFAULT, converter=DtypeChoice.parse
    )
    #: Raise glibc's mmap/trim thresholds at start-up so activation buffers are not returned
    #: to the OS and faulted back on every op (see loom.memory.allocator; LOOM_MALLOC=0 too).
    #: Read by the ``loom`` command line (run, serve, worker); ``Runtime()`` never applies it.
    tune_host_allocator: bool = True
    #: A shared prompt queue's URL for the ``make_prompt_queue`` plugin that understands it
    #: (``redis://host:6379/0`` with loom-redis); None: core's in-process queue.
    queue_url: str | None = None

    @property
    def models_dir(self) -> Path:
        return self.base_directory / "models"

    @property
    def output_dir(self) -> Path:
        return self.output_directory or self.base_directory / "output"

    @property
    def input_dir(self) -> Path:
        return self.input_directory or self.base_directory / "input"

    @property
    def temp_dir(self) -> Path:
        # ComfyUI: --temp-directory D puts temp files in D/temp.
        return (self.temp_directory or self.base_directory) / "temp"

    @property
    def user_dir(self) -> Path:
        return self.user_directory or self.base_directory / "user"

    @property
    def custom_nodes_dir(self) -> Path:
        return self.base_directory / "custom_nodes"

    def directory(self, kind: str) -> Path:
        """``input`` / ``output`` / ``temp`` directory by name (as /view's ``type``)."""
        try:
            return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}[kind]
        except KeyError:
            raise ValueError(f"unknown directory type {kind!r}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``LOOM_*`` variables; keyword arguments that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        names = {
            "base_directory": "LOOM_BASE_DIRECTORY",
            "output_directory": "LOOM_OUTPUT_DIRECTORY",
            "input_directory": "LOOM_INPUT_DIRECTORY",
            "temp_directory": "LOOM_TEMP_DIRECTORY",
            "user_directory": "LOOM_USER_DIRECTORY",
            "queue_url": "LOOM_QUEUE_URL",
        }
        for field, var in names.items():
            if env.get(var):
                values[field] = env[var]
        if env.get("LOOM_EXTRA_MODEL_PATHS_CONFIG"):
            values["extra_model_paths"] = [
                p for p in env["LOOM_EXTRA_MODEL_PATHS_CONFIG"].split(os.pathsep) if p
            ]
        if env.get("LOOM_DISABLE_PLUGINS"):
            values["disabled_plugins"] = {
                p.strip() for p in env["LOOM_DISABLE_PLUGINS"].split(",") if p.strip()
            }
        for key, value in overrides.items():
            if value is None or (
                isinstance(value, Sequence) and not isinstance(value, str) and not value
            ):
                continue
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]
