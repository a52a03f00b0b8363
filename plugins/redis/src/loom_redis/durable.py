"""Outputs reach the disk before their prompt is acknowledged."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from loom.frontend import output_paths

log = logging.getLogger(__name__)


def output_files(outputs: dict[str, Any], output_dir: Path) -> list[Path]:
    """Files of type ``output`` a history entry's ``outputs`` name, inside ``output_dir``."""
    root = output_dir.resolve()
    paths = (path.resolve() for path in output_paths(outputs, {"output": output_dir}))
    return [path for path in paths if path.is_relative_to(root)]


def sync_outputs(outputs: dict[str, Any], output_dir: Path) -> None:
    """fsync every output file and its folder, so an acknowledged prompt's outputs survive
    a crash of the worker's machine (on shared storage: once the server sees them)."""
    folders = set()
    for path in output_files(outputs, output_dir):
        try:
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            log.warning("cannot sync output %s: %s", path, exc)
            continue
        folders.add(path.parent)
    for folder in folders:
        try:
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass  # some filesystems refuse fsync on directories
        finally:
            os.close(descriptor)
