"""Model-free nodes for the cluster tests, loaded as a ``custom_nodes`` package by the server
and every worker (the test copies this file into their shared base directory).

``ChaosWork`` writes ``output/chaos/<tag>.txt`` (atomically, so a rerun replaces it) and
logs each run in ``output/chaos/runs/<tag>.<pid>``; with ``hold`` it first writes
``output/chaos/running/<tag>`` (its pid) and waits, interruptible, for
``output/chaos/release/<tag>``. ``ChaosPoison`` kills its own process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import loom


def _folder(ctx: loom.RunContext, name: str) -> Path:
    folder = ctx.runtime.settings.output_dir / "chaos" / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@loom.node("ChaosWork", category="testing", output_node=True)
class ChaosWork:
    """Writes one small output file named by ``tag``; optionally holds until released."""

    tag: str = loom.ui.string("")
    hold: bool = loom.ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        (_folder(ctx, "runs") / f"{self.tag}.{os.getpid()}").write_text(ctx.prompt_id)
        if self.hold:
            (_folder(ctx, "running") / self.tag).write_text(str(os.getpid()))
            release = _folder(ctx, "release") / self.tag
            deadline = time.monotonic() + 120
            step = 0
            while not release.exists():  # a stand-in for a long sampling loop
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.tag} was never released")
                step += 1
                ctx.progress(step % 100, 100)  # checks for interruption
                time.sleep(0.005)
        folder = _folder(ctx, "")
        partial = folder / f".{self.tag}.{os.getpid()}.tmp"
        partial.write_text(self.tag)
        os.replace(partial, folder / f"{self.tag}.txt")
        return loom.NodeOutput(
            ui={"images": [{"filename": f"{self.tag}.txt", "subfolder": "chaos", "type": "output"}]}
        )


@loom.node("ChaosPoison", category="testing", output_node=True)
class ChaosPoison:
    """Kills the process running it (a prompt that crashes every worker it reaches)."""

    tag: str = loom.ui.string("")

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        (_folder(ctx, "runs") / f"{self.tag}.{os.getpid()}").write_text(ctx.prompt_id)
        os.kill(os.getpid(), signal.SIGKILL)
        return loom.NodeOutput()


NODE_CLASS_MAPPINGS = {"ChaosWork": ChaosWork, "ChaosPoison": ChaosPoison}
