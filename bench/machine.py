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


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of process ``pid`` (default: this one) now, ``VmRSS``; 0 once it is
    gone or where /proc is absent."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _busy_and_total_jiffies() -> tuple[int, int]:
    """Machine-wide (busy, total) CPU time in clock ticks, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class OtherCpuUse:
    """How much of the machine's CPU other processes used while a measurement ran.

    ``with OtherCpuUse() as load: ...`` then ``load.share`` (0..1 of all cores) and
    ``load.describe()``: the machine's busy time over the interval minus what this process
    and its waited-for children used. A clean run reads near 0; a contended one shows it,
    so a reader can tell which figures to trust. Linux only (None elsewhere).
    """

    def __init__(self) -> None:
        self.share: float | None = None

    def __enter__(self) -> OtherCpuUse:
        import os

        try:
            self._start = _busy_and_total_jiffies()
        except (OSError, ValueError, IndexError):
            self._start = None
        self._own = sum(os.times()[:4])
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        if self._start is None:
            return
        busy, total = _busy_and_total_jiffies()
        ticks = os.sysconf("SC_CLK_TCK")
        busy_s = (busy - self._start[0]) / ticks
        total_s = (total - self._start[1]) / ticks
        own_s = sum(os.times()[:4]) - self._own
        if total_s > 0:
            self.share = max(0.0, busy_s - own_s) / total_s

    def describe(self) -> str:
        if self.share is None:
            return "other processes' CPU use: not measured (no /proc/stat)"
        return f"other processes used {self.share:.0%} of the machine's CPU during this run"
