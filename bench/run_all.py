"""Run every ``bench/bench_*.py`` and write their tables, with machine details, to bench/README.md.

``python bench/run_all.py [NAME ...]`` runs only the named scripts (``executor`` for
``bench_executor.py``) and keeps the other sections of the README as they were;
``python bench/run_all.py NAME -- ARG ...`` passes the arguments to that script (e.g.
``sdxl -- --size full --pixels 512``), and the section records the command line.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
from machine import OtherCpuUse, cpu_model

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
SKIPPED = 77  # a script's exit status for "cannot run on this machine"
HEADER = """# Benchmarks

Written by `nox -s bench` (`python bench/run_all.py`). Every script compares against its
reference or anchor in the same run where one is available here; absolute times on a shared
2-core machine are noisy, so read ratios and growth, not single numbers.
"""


def machine() -> str:
    cpu = cpu_model()
    try:
        import torch

        torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)"
        gpu = f"- gpu: {torch.cuda.get_device_name()}\n" if torch.cuda.is_available() else ""
    except ImportError:
        torch_version, gpu = "not installed", ""
    return (
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- cpu: {cpu}, {os.cpu_count()} logical cores\n"
        f"- memory: {psutil.virtual_memory().total / 1024**3:.1f} GiB\n"
        f"- python: {platform.python_version()}, torch: {torch_version}, os: {platform.platform()}\n"
        f"{gpu}"
    )


def sections(text: str) -> dict[str, str]:
    """Each script's section, between its ``<!-- begin NAME -->`` / ``<!-- end NAME -->`` marks
    (scripts print headings of their own, so headings cannot delimit sections)."""
    found = {}
    for match in re.finditer(
        r"^<!-- begin (bench_\w+) -->\n(.*?)^<!-- end \1 -->$", text, re.S | re.M
    ):
        found[match.group(1)] = match.group(2)
    return found


def main(argv: list[str]) -> int:
    script_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    wanted = {f"bench_{name.removeprefix('bench_').removesuffix('.py')}" for name in argv}
    scripts = [p for p in sorted(BENCH.glob("bench_*.py")) if not wanted or p.stem in wanted]
    existing = sections(README.read_text()) if README.exists() else {}
    failed = 0
    for script in scripts:
        print(f"==> {script.name}", flush=True)
        started = time.perf_counter()
        with OtherCpuUse() as contention:
            result = subprocess.run(
                [sys.executable, str(script), *script_args], capture_output=True, text=True
            )
        seconds = time.perf_counter() - started
        if result.returncode == SKIPPED:  # e.g. needs a GPU: keep the section last recorded
            print(f"skipped: {result.stderr.strip()}")
            continue
        print(result.stdout)
        if result.returncode != 0:
            failed += 1
            print(result.stderr, file=sys.stderr)
        doc = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import ast,sys;print(ast.get_docstring(ast.parse(open({str(script)!r}).read())) or '')",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        status = (
            ""
            if result.returncode == 0
            else f"\n**exit status {result.returncode}**: {result.stderr.strip().splitlines()[-1:]}\n"
        )
        output = re.sub(r"^## ", "### ", result.stdout.strip(), flags=re.M)  # one level below ours
        existing[script.stem] = (
            f"{doc}\n\n{machine()}- command: `python bench/{script.name} {' '.join(script_args)}`\n"
            f"- wall time of the script: {seconds:.0f} s\n"
            f"- {contention.describe()}\n\n{output}\n{status}"
        )
    body = HEADER + "".join(
        f"\n<!-- begin {name} -->\n## {name}\n{text.removeprefix(f'## {name}').lstrip(chr(10))}<!-- end {name} -->\n"
        for name, text in sorted(existing.items())
    )
    README.write_text(body)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
