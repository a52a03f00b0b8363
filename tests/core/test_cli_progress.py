"""What `loom run` shows while it runs, and Ctrl-C."""

from __future__ import annotations

import io
import json
import logging
import textwrap

from loom.cli.main import main
from loom.cli.progress import ModelLoadLines, ProgressDisplay
from loom.events import ExecutionEvent


def progress(node: str, value: int, total: int) -> ExecutionEvent:
    return ExecutionEvent("progress", {"node": node, "value": value, "max": total})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_events(display: ProgressDisplay) -> None:
    display(ExecutionEvent("executing", {"node": "3"}))
    for step in range(1, 5):
        display(progress("3", step, 4))
    display(ExecutionEvent("executing", {"node": "8"}))
    display(ExecutionEvent("execution_success", {}))


def test_not_a_terminal_gets_one_line_per_node_with_its_figures():
    log = io.StringIO()
    run_events(ProgressDisplay({"3": "KSampler"}, log))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()
    line = lines[0]
    assert line.startswith("node 3 (KSampler): 100%") and "4/4" in line
    assert "[00:00<00:00" in line and ("it/s" in line or "s/it" in line)


def test_a_terminal_gets_a_live_bar_and_model_loads_as_lines_of_their_own():
    screen = Terminal()
    display = ProgressDisplay({"3": "KSampler"}, screen)
    with ModelLoadLines(display):
        display(progress("3", 1, 4))
        logging.getLogger("loom.nodes.builtin.loaders").info("loaded model tiny.safetensors")
        for step in range(2, 5):
            display(progress("3", step, 4))
        display(ExecutionEvent("execution_success", {}))
    text = screen.getvalue()
    assert "\r" in text and "node 3 (KSampler)" in text and "4/4" in text
    assert "\nloaded model tiny.safetensors\n" in text.replace("\r", "\n")
    # outside the run the logger is back to its own level and propagation
    assert logging.getLogger("loom.nodes.builtin.loaders").propagate


CTRL_C_PACK = textwrap.dedent(
    """
    import os, signal

    class PressCtrlC:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 1})}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "go"
        def go(self, value):
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C now
            return (value,)

    class Record:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}
        RETURN_TYPES = ()
        FUNCTION = "go"
        OUTPUT_NODE = True
        def go(self, value):
            open("reached.txt", "w").write("the run went on")
            return {}

    NODE_CLASS_MAPPINGS = {"PressCtrlC": PressCtrlC, "Record": Record}
    """
)


def test_ctrl_c_interrupts_cleanly_and_exits_130(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOM_BASE_DIRECTORY", raising=False)
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "ctrl_c.py").write_text(CTRL_C_PACK)
    prompt = {
        "1": {"class_type": "PressCtrlC", "inputs": {"value": 1}},
        "2": {"class_type": "Record", "inputs": {"value": ["1", 0]}},
    }
    (tmp_path / "wf.json").write_text(json.dumps(prompt))
    assert main(["run", "wf.json"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "reached.txt").exists()
