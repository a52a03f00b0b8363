"""Run a benchmark's child process under a memory guard.

A child whose RSS passes the limit is killed, so a runaway measurement becomes a line in
the bench's table instead of an out-of-memory event on a shared machine.
"""

from __future__ import annotations

import os
import subprocess

import attrs
from machine import rss_bytes


@attrs.frozen
class GuardedRun:
    """What a guarded child left: exit status, output, and the RSS it was killed at (0: not
    killed)."""

    returncode: int
    stdout: str
    stderr: str
    killed_at_bytes: int


def run_guarded(
    argv: list[str], max_rss_gib: float, env: dict[str, str] | None = None, poll_s: float = 0.5
) -> GuardedRun:
    """Run ``argv`` with ``env`` added to this environment, polling its RSS every ``poll_s``
    seconds and killing it once past ``max_rss_gib`` GiB."""
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    killed_at = 0
    while True:
        try:
            stdout, stderr = child.communicate(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            rss = rss_bytes(child.pid)
            if rss > max_rss_gib * 2**30 and not killed_at:
                killed_at = rss
                child.kill()
    return GuardedRun(child.returncode, stdout, stderr, killed_at)
