"""Facts about this machine and process that benchmarks report.

Peak resident memory is measured so a parent's memory never leaks in:
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong tool for a child started with
fork + exec: Linux carries the parent's high-water mark across ``exec`` into the child's
``ru_maxrss``. ``VmHWM`` in ``/proc/self/status`` belongs to the new address space only.
"""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_bytes() -> int:
    """This process's own peak RSS in bytes (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
